"""SkillBartSeq2SeqLM: Polytropon skills on KerasHub BART (tiny presets)."""

import collections
import json
import os

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from tests.zoo.polytropon.tiny_bart import (  # noqa: F401 (fixtures)
    SEQUENCE_LENGTH,
    hf_cache_with,
    hf_reference_inputs,
    tiny_hf_bart,
    tiny_preset,
)
from zoo.polytropon.bart import (
    ATTENTIONS,
    MODEL_INPUTS,
    PROJECTIONS,
    SKILLS_CONFIG_FILE,
    SKILLS_WEIGHTS_FILE,
    SkillBartSeq2SeqLM,
)

NUM_TASKS = 3
ENCODER_TEXT = ["the cat sat", "a dog ran", "the cat sat"]
DECODER_TEXT = ["on a mat", "far away", "on a mat"]
MIXED_TASKS = np.array([0, 1, 2], "int32")  # rows 0 and 2: same text


def load(preset, **kwargs):
    options = dict(num_tasks=NUM_TASKS, num_skills=2, rank=2,
                   encoder_sequence_length=SEQUENCE_LENGTH,
                   decoder_sequence_length=SEQUENCE_LENGTH)
    options.update(kwargs)
    return SkillBartSeq2SeqLM.from_preset(preset, **options)


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def randomize_skills(model, seed=1):
    """Nonzero B and spread-out allocation logits, so that the tasks differ
    (with this seed greedy decoding differs between tasks too). All drawn
    with NumPy, A included: every backend gets the same skills."""
    rng = np.random.default_rng(seed)
    for layer in model.skill_layers:
        for variable, std in ((layer.lora_a, 0.5), (layer.lora_b, 2.0),
                              (layer.skill_logits, 3.0)):
            variable.assign(
                rng.normal(0.0, std, variable.shape).astype("float32"))


def token_inputs(model, task_ids=MIXED_TASKS):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(model.preprocessor({
        "encoder_text": ENCODER_TEXT, "decoder_text": DECODER_TEXT,
        "task_ids": np.asarray(task_ids, "int32")}))
    return x


def prompts(model, task_ids=MIXED_TASKS):
    return model.preprocessor.generate_preprocess(
        {"encoder_text": ENCODER_TEXT, "task_ids": np.asarray(task_ids, "int32")})


def with_task_ids(inputs, task_ids):
    return {**inputs, "task_ids": np.asarray(task_ids, "int32")}


def generated(model, inputs):
    return to_numpy(model.generate(inputs, stop_token_ids=None)[
        "decoder_token_ids"])


def count_generate_traces(model):
    """Counts the runs of `generate_step` (its traces under jit)."""
    traces = []
    generate_step = model.generate_step

    def counting_generate_step(*args, **kwargs):
        traces.append(1)
        return generate_step(*args, **kwargs)

    model.generate_step = counting_generate_step
    return traces


# -- Initialisation and training. ---------------------------------------------
def test_starts_exactly_as_the_stock_model_with_only_skills_trainable(
        tiny_preset):
    stock = keras_hub.models.BartSeq2SeqLM.from_preset(tiny_preset)
    model = load(tiny_preset)
    x = token_inputs(model)
    stock_logits = to_numpy(stock({k: x[k] for k in MODEL_INPUTS}))
    np.testing.assert_array_equal(to_numpy(model(x)), stock_logits)

    names = [layer.name for layer in model.skill_layers]
    assert names == [f"{a}_{i}_{p}" for a in ATTENTIONS for p in PROJECTIONS
                     for i in range(2)]
    assert model.backbone.trainable and not model.backbone.trainable_weights
    assert {v.path for v in model.trainable_weights} == {
        f"{name}/{variable}" for name in names
        for variable in ("skill_logits", "lora_a", "lora_b")}
    assert len(model.allocation_variables) == len(names)
    assert len(model.skill_variables) == 2 * len(names)


def test_training_changes_the_skills_and_not_the_base(tiny_preset):
    # Without the relaxation noise: its 24 random draws double the JAX
    # compile time of the train step (the noise is checked below, eagerly).
    model = load(tiny_preset, gumbel_noise=False)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    base = [to_numpy(v) for v in model.backbone.weights]
    logits_before = [to_numpy(v) for v in model.allocation_variables]
    raw = {"encoder_text": ENCODER_TEXT, "decoder_text": DECODER_TEXT,
           "task_ids": [0, 1, 2]}
    # What `fit` on raw strings runs per batch (`fit` itself would build a
    # tf.data pipeline, 20 s here): the preprocessor carries the ids.
    x, y, sample_weight = model.preprocessor(raw)
    np.testing.assert_array_equal(to_numpy(x["task_ids"]), [0, 1, 2])
    model.preprocessor = None
    model.fit(x, y, sample_weight=sample_weight, batch_size=3, epochs=3,
              verbose=0)
    model.evaluate(x, y, sample_weight=sample_weight, verbose=0)

    for before, variable in zip(base, model.backbone.weights):
        np.testing.assert_array_equal(to_numpy(variable), before)
    for layer in model.skill_layers:  # every projection got its gradient
        assert np.abs(to_numpy(layer.lora_b)).min() > 0
    for before, variable in zip(logits_before, model.allocation_variables):
        assert not np.array_equal(to_numpy(variable), before)
    task_0 = to_numpy(model(with_task_ids(x, [0, 0, 0])))
    task_1 = to_numpy(model(with_task_ids(x, [1, 1, 1])))
    assert np.abs(task_0 - task_1).max() > 1e-5


def test_training_mode_draws_the_relaxation_noise(tiny_preset):
    model = load(tiny_preset)
    randomize_skills(model)
    x = token_inputs(model)
    inference = to_numpy(model(x))
    np.testing.assert_array_equal(to_numpy(model(x, training=False)),
                                  inference)
    noisy = [to_numpy(model(x, training=True)) for _ in range(2)]
    assert np.abs(noisy[0] - noisy[1]).max() > 1e-4
    assert np.abs(noisy[0] - inference).max() > 1e-4


def test_cached_decoding_gives_the_full_forward_logits_of_each_task(
        tiny_preset):
    model = load(tiny_preset)
    randomize_skills(model)
    x = token_inputs(model)
    logits = to_numpy(model(x))

    calls = collections.Counter()
    for layer in model.skill_layers:
        def counting_call(*args, _layer=layer, _call=layer.call, **kwargs):
            calls[_layer.name] += 1
            return _call(*args, **kwargs)
        object.__setattr__(layer, "call", counting_call)
    hidden_states, *_ = model._build_cache(
        x["encoder_token_ids"], x["encoder_padding_mask"],
        x["decoder_token_ids"], task_ids=x["task_ids"])
    cached = to_numpy(model.backbone.token_embedding(hidden_states,
                                                     reverse=True))
    np.testing.assert_allclose(cached, logits, atol=1e-4)
    assert set(calls) == {layer.name for layer in model.skill_layers}

    # Outside a task scope the backbone is the stock BART.
    base = model.backbone({k: x[k] for k in MODEL_INPUTS})
    base_logits = to_numpy(model.backbone.token_embedding(
        base["decoder_sequence_output"], reverse=True))
    assert np.abs(base_logits - logits).max() > 1e-3
    assert np.abs(logits[0] - logits[2]).max() > 1e-3  # same text, tasks 0, 2


# -- Generation. ----------------------------------------------------------------
def greedy_reference(model, inputs):
    """Greedy decoding by full forward passes, one token at a time."""
    tokens = to_numpy(inputs["decoder_token_ids"]).copy()
    mask = to_numpy(inputs["decoder_padding_mask"]).astype(bool)
    for index in range(int(mask.sum(1).min()), tokens.shape[1]):
        logits = to_numpy(model({
            **inputs, "decoder_token_ids": tokens,
            "decoder_padding_mask": np.ones_like(mask)}))
        tokens[:, index] = np.where(mask[:, index], tokens[:, index],
                                    logits[:, index - 1].argmax(-1))
    return tokens


def test_greedy_generate_follows_each_task_and_reuses_its_trace(tiny_preset):
    model = load(tiny_preset)
    randomize_skills(model)
    inputs = prompts(model)
    model.preprocessor = None  # token ids in and out
    model.compile(sampler="greedy")
    traces = count_generate_traces(model)

    first = generated(model, inputs)
    np.testing.assert_array_equal(first, greedy_reference(model, inputs))
    assert not np.array_equal(first[0], first[2])  # same text, tasks 0, 2
    generate_function = model.generate_function

    # Other ids: the same compiled function (no retrace under jit); text 0
    # with task 2 now gives what text 2 with task 2 gave.
    second = generated(model, with_task_ids(inputs, [2, 0, 1]))
    np.testing.assert_array_equal(second[0], first[2])
    assert not np.array_equal(second, first)
    assert model.generate_function is generate_function
    if keras.backend.backend() != "torch":  # torch generates eagerly
        assert len(traces) == 1


def test_beam_search_keeps_each_example_on_its_task(tiny_preset):
    model = load(tiny_preset)
    randomize_skills(model)
    inputs = prompts(model)
    model.preprocessor = None
    model.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=2))
    mixed = generated(model, inputs)
    for task in range(NUM_TASKS):
        uniform = generated(model, with_task_ids(inputs, [task] * 3))
        np.testing.assert_array_equal(mixed[task], uniform[task])


def test_sampling_generate_from_raw_text_with_task_ids(tiny_preset):
    model = load(tiny_preset)
    randomize_skills(model)
    model.compile(sampler=keras_hub.samplers.TopKSampler(k=4, seed=1))
    texts = model.generate({"encoder_text": ENCODER_TEXT, "task_ids": [0, 1, 2]},
                           max_length=SEQUENCE_LENGTH)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    # A single string with a single id is one example (KerasHub's generate
    # then returns a string); judged without the ids.
    batches, is_scalar = model._normalize_generate_inputs(
        {"encoder_text": "the cat sat", "task_ids": 1})
    assert is_scalar and batches == [{"encoder_text": ["the cat sat"],
                                      "task_ids": 1}]


# -- Saving. --------------------------------------------------------------------
def test_skills_save_apart_and_reattach_to_the_base(tiny_preset, tmp_path):
    model = load(tiny_preset)
    randomize_skills(model)
    x = token_inputs(model)
    logits = to_numpy(model(x))

    skills = tmp_path / "skills"
    model.save_skills(skills)
    assert sorted(os.listdir(skills)) == sorted(
        [SKILLS_CONFIG_FILE, SKILLS_WEIGHTS_FILE])
    with open(skills / SKILLS_CONFIG_FILE) as file:
        saved = json.load(file)
    assert saved["skills"]["num_tasks"] == NUM_TASKS
    assert saved["skills"]["targets"] == list(model.targets)
    assert saved["base"]["hidden_dim"] == 16

    attached = SkillBartSeq2SeqLM.from_preset(
        tiny_preset, skills=skills, encoder_sequence_length=SEQUENCE_LENGTH)
    np.testing.assert_array_equal(to_numpy(attached(x)), logits)
    fresh = load(tiny_preset)
    fresh.load_skills(skills)
    np.testing.assert_array_equal(to_numpy(fresh(x)), logits)

    # The whole skilled model as one preset; its base stays a stock preset.
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    restored = SkillBartSeq2SeqLM.from_preset(preset)
    np.testing.assert_array_equal(to_numpy(restored(x)), logits)
    assert restored.preprocessor.encoder_sequence_length == SEQUENCE_LENGTH
    base = keras_hub.models.BartBackbone.from_preset(preset)
    stock = keras_hub.models.BartBackbone.from_preset(tiny_preset)
    assert base.trainable
    for saved_weight, stock_weight in zip(base.weights, stock.weights):
        np.testing.assert_array_equal(to_numpy(saved_weight),
                                      to_numpy(stock_weight))

    with pytest.raises(ValueError, match="num_skills=2"):
        SkillBartSeq2SeqLM.from_preset(preset, num_skills=4)
    with pytest.raises(ValueError, match="rank=2"):
        SkillBartSeq2SeqLM.from_preset(tiny_preset, skills=skills, rank=4)
    with pytest.raises(ValueError, match="num_skills=2"):
        load(tiny_preset, num_skills=3).load_skills(skills)


def test_hugging_face_bart_from_a_directory_and_an_hf_handle(
        tiny_hf_bart, tmp_path, monkeypatch):
    directory, reference = tiny_hf_bart
    inputs = with_task_ids(hf_reference_inputs(), [0, 1, 0])
    unpadded = inputs["decoder_padding_mask"]  # padded rows may differ

    model = load(directory, num_tasks=2)
    logits = to_numpy(model(inputs))
    np.testing.assert_allclose(logits[unpadded], reference[unpadded],
                               atol=1e-5)
    assert to_numpy(model.preprocessor.tokenizer("the cat")).tolist() == [
        24, 12, 9, 33, 5, 24]

    # hf://owner/name reads the Hugging Face cache (offline here).
    import huggingface_hub.constants

    cache = hf_cache_with("tiny/bart", directory, tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from_hub = load("hf://tiny/bart", num_tasks=2)
    np.testing.assert_array_equal(to_numpy(from_hub(inputs)), logits)


# -- Tasks, targets and options. ---------------------------------------------------
def test_add_tasks_and_allocation_metrics(tiny_preset):
    model = load(tiny_preset)
    assert model.add_tasks(2) == [3, 4]
    assert model.num_tasks == 5 and model.get_config()["num_tasks"] == 5
    for layer in model.skill_layers:
        probabilities = layer.allocation_probabilities()
        assert probabilities.shape == (5, 1, 2)
        np.testing.assert_array_equal(probabilities[3:], 0.5)
    model(token_inputs(model, [4, 3, 0]))

    metrics = model.allocation_metrics()
    assert set(metrics["mean"]) == {"discreteness", "sparsity", "usage"}
    assert set(metrics["layers"]) == {l.name for l in model.skill_layers}
    assert abs(metrics["mean"]["discreteness"]) < 1e-3  # all p ~ 0.5


def test_variable_groups_survive_freezing_and_growing(tiny_preset):
    from training.few_shot import freeze_for_few_shot

    model = load(tiny_preset)
    counts = (len(model.allocation_variables), len(model.skill_variables))
    freeze_for_few_shot(model, "average")  # the allocation frozen
    assert (len(model.allocation_variables), len(model.skill_variables)) == counts
    assert model.add_tasks(1) == [3]
    assert all(not v.trainable and v.shape[0] == 4 for v in model.allocation_variables)
    freeze_for_few_shot(model, "allocation")  # the skills frozen
    assert (len(model.allocation_variables), len(model.skill_variables)) == counts
    assert not any(v.trainable for v in model.skill_variables)
    model(token_inputs(model, [3, 0, 1]))


def test_targets_and_skill_options_pass_through(tiny_preset):
    model = load(tiny_preset, targets=("query", "decoder_cross_attention.value"),
                 allocation="moe", top_k=1, num_splits=2, seed=3)
    assert model.targets == (
        "encoder_self_attention.query", "decoder_self_attention.query",
        "decoder_cross_attention.query", "decoder_cross_attention.value")
    assert [layer.name for layer in model.skill_layers][-2:] == [
        "decoder_cross_attention_0_value", "decoder_cross_attention_1_value"]
    assert [(l.allocation, l.top_k, l.num_splits) for l in model.skill_layers
            ] == [("moe", 1, 2)] * 8
    assert [l.seed for l in model.skill_layers] == list(range(3, 11))
    config = model.skill_config()
    assert config["allocation"] == "moe" and config["targets"] == list(
        model.targets)
    for targets in (("attention",), ()):
        with pytest.raises(ValueError, match="target"):
            load(tiny_preset, targets=targets)


# -- Errors. -----------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(tiny_preset, tmp_path):
    model = load(tiny_preset)
    x = token_inputs(model)
    with pytest.raises(ValueError, match="task ids"):
        model({k: x[k] for k in MODEL_INPUTS})
    with pytest.raises(ValueError, match="out of range"):
        model(with_task_ids(x, [0, 7, 0]))
    with pytest.raises(ValueError, match="task ids"):
        model.preprocessor({"encoder_text": ENCODER_TEXT,
                            "decoder_text": DECODER_TEXT})
    with pytest.raises(ValueError, match="task ids"):
        model.generate({"encoder_text": ENCODER_TEXT})
    with pytest.raises(ValueError, match="task ids"):
        model.generate("the cat")
    with pytest.raises(ValueError, match="out of range"):
        model.generate({"encoder_text": ENCODER_TEXT, "task_ids": [0, 9, 0]})
    with pytest.raises(ValueError, match="one task id per example"):
        model.generate({"encoder_text": ENCODER_TEXT, "task_ids": [0, 1]})
    with pytest.raises(ValueError, match="integers"):
        model.generate({"encoder_text": ENCODER_TEXT,
                        "task_ids": [0.0, 1.0, 2.0]})
    model.preprocessor = None
    with pytest.raises(ValueError, match="task ids"):
        model.generate({k: x[k] for k in MODEL_INPUTS}, stop_token_ids=None)

    with pytest.raises(ValueError, match="Unknown preset"):
        SkillBartSeq2SeqLM.from_preset("no_such_bart_preset", num_tasks=2)
    with pytest.raises(ValueError, match="not a preset"):
        SkillBartSeq2SeqLM.from_preset(str(tmp_path), num_tasks=2)
    with pytest.raises(ValueError, match="num_tasks"):
        SkillBartSeq2SeqLM.from_preset(tiny_preset)
    with pytest.raises(ValueError, match="no saved skills"):
        SkillBartSeq2SeqLM.from_preset(tiny_preset, skills=tmp_path)
