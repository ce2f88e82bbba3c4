"""A tiny BART preset for the tests (no network): KerasHub and Hugging Face.

`tiny_vocabulary()` is a byte-level BPE vocabulary of 57 tokens (the BART
special tokens, the 26 lowercase letters and the same letters after a
space, "Ġ"), enough to tokenize lowercase words. `save_tiny_preset(dir)`
writes a KerasHub preset (a `BartSeq2SeqLM` with 2 layers, hidden size 16,
sequence lengths 8) with `save_to_preset`; `save_tiny_hf_bart(dir)` writes
the same architecture in the Hugging Face format with `transformers`
(config.json, model.safetensors, vocab.json, merges.txt), which KerasHub
converts on load. The fixtures `tiny_preset` and `tiny_hf_bart` build them
once per test module.
"""

import json
import os
import string

import pytest

LETTERS = string.ascii_lowercase
SEQUENCE_LENGTH = 8
ARCHITECTURE = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "max_sequence_length": 32,
}
KERNEL_STD = ARCHITECTURE["hidden_dim"] ** -0.5


def tiny_vocabulary():
    """(vocabulary dict, merges list) of the tiny byte-level BPE."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "Ġ"]
    tokens += list(LETTERS) + ["Ġ" + letter for letter in LETTERS]
    vocabulary = {token: index for index, token in enumerate(tokens)}
    merges = [f"Ġ {letter}" for letter in LETTERS]
    return vocabulary, merges


def tiny_bart_lm(dropout=0.0, seed=0):
    """A stock `keras_hub.models.BartSeq2SeqLM` with the tiny tokenizer.

    Its kernels are drawn N(0, 1/hidden_dim) and its embeddings N(0, 1) from
    NumPy (the same on every backend), biases 0 and layer norms identity:
    BART's own initialisation (std 0.02) makes a tiny model whose outputs
    hardly depend on its inputs, which would hide what the tests look for.
    """
    import keras_hub
    import numpy as np

    vocabulary, merges = tiny_vocabulary()
    tokenizer = keras_hub.models.BartTokenizer(
        vocabulary=vocabulary, merges=merges)
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(
        tokenizer=tokenizer,
        encoder_sequence_length=SEQUENCE_LENGTH,
        decoder_sequence_length=SEQUENCE_LENGTH)
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=len(vocabulary), dropout=dropout, **ARCHITECTURE)
    rng = np.random.default_rng(seed)
    for variable in backbone.weights:
        if variable.name in ("gamma", "beta", "bias"):
            continue  # the builder's ones and zeros
        std = 1.0 if variable.name == "embeddings" else KERNEL_STD
        variable.assign(rng.normal(0.0, std, variable.shape).astype(
            variable.dtype))
    return keras_hub.models.BartSeq2SeqLM(
        backbone=backbone, preprocessor=preprocessor)


def save_tiny_preset(directory):
    """Writes the tiny KerasHub preset to `directory`; returns its path."""
    tiny_bart_lm().save_to_preset(str(directory))
    return str(directory)


def hf_reference_inputs():
    """Token inputs on which the Hugging Face model is checked (batch 3,
    the tests' sequence lengths, so that JAX reuses its compiled ops)."""
    import numpy as np

    def padded(rows):
        ids = np.ones((len(rows), SEQUENCE_LENGTH), "int32")  # <pad> = 1
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
        return ids, ids != 1

    encoder_ids, encoder_mask = padded(
        [[0, 24, 12, 9, 33, 2], [0, 8, 19, 11, 2], [0, 5, 34, 2]])
    decoder_ids, decoder_mask = padded(
        [[2, 0, 24, 12, 2], [2, 0, 50, 2], [2, 0, 7, 8, 9, 2]])
    return {"encoder_token_ids": encoder_ids,
            "encoder_padding_mask": encoder_mask,
            "decoder_token_ids": decoder_ids,
            "decoder_padding_mask": decoder_mask}


def save_tiny_hf_bart(directory):
    """Writes a tiny Hugging Face BART (random weights) to `directory`.

    `BartForConditionalGeneration.save_pretrained` writes config.json and
    model.safetensors; the tokenizer files are those of a Hugging Face BART
    repository (vocab.json, merges.txt with its "#version" header).

    Returns:
        The directory and the transformers model's logits on
        `hf_reference_inputs()` (NumPy, (3, 8, vocabulary)).
    """
    import torch
    import transformers

    vocabulary, merges = tiny_vocabulary()
    config = transformers.BartConfig(
        vocab_size=len(vocabulary),
        d_model=ARCHITECTURE["hidden_dim"],
        encoder_layers=ARCHITECTURE["num_layers"],
        decoder_layers=ARCHITECTURE["num_layers"],
        encoder_attention_heads=ARCHITECTURE["num_heads"],
        decoder_attention_heads=ARCHITECTURE["num_heads"],
        encoder_ffn_dim=ARCHITECTURE["intermediate_dim"],
        decoder_ffn_dim=ARCHITECTURE["intermediate_dim"],
        max_position_embeddings=ARCHITECTURE["max_sequence_length"],
        init_std=KERNEL_STD,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        bos_token_id=0, pad_token_id=1, eos_token_id=2,
        decoder_start_token_id=2, forced_bos_token_id=0)
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(config).eval()
    model.save_pretrained(str(directory))
    with open(os.path.join(directory, "vocab.json"), "w") as file:
        json.dump(vocabulary, file)
    with open(os.path.join(directory, "merges.txt"), "w") as file:
        file.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    inputs = {k: torch.tensor(v.astype("int64"))
              for k, v in hf_reference_inputs().items()}
    with torch.no_grad():
        logits = model(
            input_ids=inputs["encoder_token_ids"],
            attention_mask=inputs["encoder_padding_mask"],
            decoder_input_ids=inputs["decoder_token_ids"],
            decoder_attention_mask=inputs["decoder_padding_mask"]).logits
    return str(directory), logits.numpy()


def hf_cache_with(repo_id, source, cache_dir):
    """A Hugging Face hub cache in `cache_dir` holding `source` as `repo_id`.

    The layout of `huggingface_hub` (models--owner--name/snapshots/<commit>
    and refs/main), so that `hf_hub_download(repo_id, file)` finds the files
    offline (HF_HUB_OFFLINE=1).
    """
    import shutil

    commit = "0" * 40
    repo = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, os.path.join(repo, "snapshots", commit))
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as file:
        file.write(commit)
    return str(cache_dir)


# -- Fixtures (module scope: each preset is built once per test module). ------
@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    """Path of the tiny KerasHub BART preset."""
    return save_tiny_preset(tmp_path_factory.mktemp("tiny_bart"))


@pytest.fixture(scope="module")
def tiny_hf_bart(tmp_path_factory):
    """(directory, reference logits) of the tiny Hugging Face BART."""
    return save_tiny_hf_bart(tmp_path_factory.mktemp("tiny_hf_bart"))
