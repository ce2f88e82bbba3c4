"""Polytropon skills on KerasHub BART: `SkillBartSeq2SeqLM`.

Paper: E. M. Ponti, A. Sordoni, Y. Bengio, S. Reddy, "Combining Parameter-
efficient Modules for Task-level Generalisation" (Polytropon), EACL 2023
(papers/polytropon-combining-modular-skills.txt), Section 5 (CrossFit with
BART). A frozen pretrained BART whose attention projections carry LoRA
skills; every adapted projection has its own task-skill allocation matrix.

NOTE 1 (where the skills act): the q, k, v and output projections
  (`EinsumDense`) of the encoder self-attention, the decoder self-attention
  and the decoder cross-attention of every layer, as in the reference code
  (`targets` chooses a subset). Each becomes a `layers.SkillLoRAEinsumDense`
  around the frozen projection, named e.g. "decoder_cross_attention_1_value"
  (its variables "decoder_cross_attention_1_value/skill_logits", ".../lora_a",
  ".../lora_b": regexes of `keras.optimizers.MultiOptimizer` can give the
  allocation logits their own learning rate).
NOTE 2 (the backbone stays stock): KerasHub's `generate()` calls the
  backbone's sublayers itself (`call_encoder`, `call_decoder_with_cache`),
  so the skills cannot be a new functional input of the backbone. Instead
  the attention layers' projection attributes point to their skill layers
  only inside `model.task_scope(task_ids)`, which also sets the task ids
  (`layers.task_context`) for the skill layers; `call`, `call_encoder`,
  `call_decoder_with_cache` and `generate` open it. Outside the scope the
  backbone is the stock frozen BART: `model.backbone` saves, loads and runs
  exactly as KerasHub's, and base presets load through KerasHub's own path.
  The skill layers are owned by `model.skills` (a `BartSkills` layer),
  not by the backbone. The scope is re-entrant and counts its depth (the
  attributes are restored when the outermost scope closes); while it is
  open, another thread calling the same backbone directly also sees the
  skills.
NOTE 3 (task ids in generate): the ids are a tensor input of the compiled
  generate function (`inputs["task_ids"]`), never a constant captured from
  a context, so a second `generate` with other ids reuses the trace. They
  travel in the sampler's cache, which KerasHub's beam sampler repeats
  `num_beams` times along the batch and gathers per beam like the key/value
  caches: every beam keeps its example's task. Before the compiled function
  the ids are checked (present, one per example, in [0, num_tasks)) and
  cast to int32, so that int64 ids do not retrace.
NOTE 4 (initialisation): LoRA's B starts at 0, so a new skilled model
  gives exactly the logits of the stock `BartSeq2SeqLM` on the same preset.
NOTE 5 (freezing): every layer of the backbone is frozen (`trainable =
  False`, which recurses) while `backbone.trainable` itself stays True, so
  that a preset saved from the skilled model keeps KerasHub's config (a
  frozen flag would travel into config.json). The skill layers live
  outside the backbone and stay trainable; `model.backbone.trainable =
  True` unfreezes the whole base.
NOTE 6 (saving): the skills are the task weights of KerasHub's `Task`
  (weights outside the backbone), so `save_to_preset` writes them to
  task.weights.h5 beside the untouched base (model.weights.h5) and
  `from_preset` of that directory restores the skilled model.
  `save_skills(directory)` writes the skills alone (skills.weights.h5 and
  skills.json, the skill configuration and the base architecture it was
  trained on); `from_preset(base, skills=directory)` or `load_skills`
  re-attaches them to a freshly loaded base.
NOTE 7 (Hugging Face BART): `from_preset` accepts a local directory in the
  Hugging Face format (config.json, model.safetensors, vocab.json,
  merges.txt) and `hf://owner/name` (downloaded to, or with
  HF_HUB_OFFLINE=1 read from, the Hugging Face cache). KerasHub's BART
  converter reads `num_hidden_layers`, which transformers >= 5 no longer
  writes into config.json (it is an alias of `encoder_layers`); the loader
  fills it in from `encoder_layers` when the encoder and decoder have the
  same depth, width and heads (KerasHub's BART has one of each).
NOTE 8 (sequence lengths): KerasHub's `Seq2SeqLMPreprocessor` does not save
  its sequence lengths (a reloaded preset pads to 1024); `from_preset`
  takes `encoder_sequence_length` and `decoder_sequence_length`, and
  `SkillBartSeq2SeqLMPreprocessor` saves them in its config.
"""

import contextlib
import inspect
import json
import os
import threading

import keras
import keras_hub
import numpy as np
from keras import ops
# KerasHub internals (keras-hub 0.32): the preset loader behind every
# `from_preset` (used here to complete a transformers-5 BART config, NOTE 7)
# and the decorator that KerasHub's own preprocessors use to accept raw
# Python/NumPy inputs and return backend tensors.
from keras_hub.src.utils.preset_utils import (
    TASK_CONFIG_FILE,
    check_config_class,
    check_file_exists,
    get_preset_loader,
    load_json,
)
from keras_hub.src.utils.tensor_utils import any_equal, preprocessing_function

from layers.layers_backend import check_index_range
from layers.skill_allocation import current_task_ids, task_context
from layers.skill_lora_dense import SkillLoRAEinsumDense

ATTENTIONS = (
    "encoder_self_attention",
    "decoder_self_attention",
    "decoder_cross_attention",
)
PROJECTIONS = ("query", "key", "value", "output")
DEFAULT_TARGETS = tuple(f"{a}.{p}" for a in ATTENTIONS for p in PROJECTIONS)
MODEL_INPUTS = (
    "encoder_token_ids",
    "encoder_padding_mask",
    "decoder_token_ids",
    "decoder_padding_mask",
)
ALLOCATION_VARIABLE_NAMES = ("skill_logits", "task_embeddings")
SKILL_VARIABLE_NAMES = ("lora_a", "lora_b", "sft_deltas")
SKILLS_CONFIG_FILE = "skills.json"
SKILLS_WEIGHTS_FILE = "skills.weights.h5"
SKILLS_FORMAT = "modular_zoo.polytropon.skills"
SKILLS_FORMAT_VERSION = 1

# The attribute of each projection in keras MultiHeadAttention (and
# KerasHub's CachedMultiHeadAttention, which calls the same attributes).
_PROJECTION_ATTRIBUTES = {
    "query": "_query_dense",
    "key": "_key_dense",
    "value": "_value_dense",
    "output": "_output_dense",
}
# Skill options that change what the saved skills compute: `load_skills`
# and `from_preset(..., skills=...)` refuse to attach skills whose options
# differ. The others (temperature, gumbel_noise, seed, initializers,
# regularizers) only shape training.
_STRUCTURAL_OPTIONS = (
    "targets", "num_tasks", "num_skills", "rank", "num_splits", "allocation",
    "adapter", "lora_alpha", "top_k", "expert_matrix", "sft_sparsity",
    "mask_seed",
)
# Keys of a skill layer's config that describe the layer, not the skills.
_LAYER_KEYS = ("name", "trainable", "dtype", "einsum_dense")
# The base architecture recorded with saved skills.
_BASE_KEYS = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim",
              "intermediate_dim")


def _skill_option_names():
    """The keyword arguments of SkillLoRAEinsumDense's skills (its
    constructor's and those of its skill base classes), so that new layer
    options pass through without changes here."""
    names = []
    for klass in SkillLoRAEinsumDense.__mro__:
        if klass is keras.layers.Layer:
            break
        if "__init__" not in vars(klass):
            continue
        for parameter in inspect.signature(klass.__init__).parameters.values():
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            if parameter.name not in ("self", "einsum_dense") + tuple(names):
                names.append(parameter.name)
    return tuple(names)


SKILL_OPTIONS = _skill_option_names()


def normalize_targets(targets):
    """The adapted projections as "attention.projection" names.

    Args:
        targets: A string or an iterable of strings, each either
            "attention.projection" (e.g. "decoder_cross_attention.value"),
            an attention (its four projections) or a projection (in all
            three attentions). Attentions: "encoder_self_attention",
            "decoder_self_attention", "decoder_cross_attention";
            projections: "query", "key", "value", "output".

    Returns:
        A tuple of "attention.projection" names in canonical order.

    Example:

    >>> normalize_targets(("query", "decoder_cross_attention.value"))
    ('encoder_self_attention.query', 'decoder_self_attention.query', \
'decoder_cross_attention.query', 'decoder_cross_attention.value')
    """
    if isinstance(targets, str):
        targets = (targets,)
    chosen = set()
    for target in targets:
        if not isinstance(target, str):
            raise ValueError(f"targets must be strings; got {target!r}.")
        if target in ATTENTIONS:
            chosen.update(f"{target}.{p}" for p in PROJECTIONS)
        elif target in PROJECTIONS:
            chosen.update(f"{a}.{target}" for a in ATTENTIONS)
        elif target in DEFAULT_TARGETS:
            chosen.add(target)
        else:
            raise ValueError(
                f"Unknown target {target!r}: use 'attention.projection', an "
                f"attention or a projection, with attentions {ATTENTIONS} and "
                f"projections {PROJECTIONS}.")
    if not chosen:
        raise ValueError("targets must name at least one projection.")
    return tuple(t for t in DEFAULT_TARGETS if t in chosen)


def _attention_layers(backbone, attention):
    """The attention layers of one kind, one per transformer layer."""
    if attention == "encoder_self_attention":
        return [layer._self_attention_layer
                for layer in backbone.encoder_transformer_layers]
    if attention == "decoder_self_attention":
        return [layer._self_attention_layer
                for layer in backbone.decoder_transformer_layers]
    return [layer._cross_attention_layer
            for layer in backbone.decoder_transformer_layers]


def _to_json(value):
    """A skill option as JSON (initializers and regularizers serialized)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return keras.saving.serialize_keras_object(value)


# ---------------------------------------------------------------------------
# The skill layers and their attachment to the backbone.
# ---------------------------------------------------------------------------
class _AttachedSkills:
    """Points the targeted projection attributes to their skill layers.

    Re-entrant: the first entry swaps the attributes in, the last exit
    restores the originals (NOTE 2). A class rather than a generator so
    that TensorFlow's autograph, which traces `generate_step`, leaves it
    alone.
    """

    def __init__(self, routes):
        self._routes = routes  # (attention layer, attribute, skill layer)
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = []

    def __enter__(self):
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._saved = []
                for attention, attribute, skill_layer in self._routes:
                    # The instance dict shadows torch's module registry too.
                    state = vars(attention)
                    self._saved.append(state.get(attribute, _MISSING))
                    state[attribute] = skill_layer
        return self

    def __exit__(self, *exc_info):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for (attention, attribute, _), original in zip(
                        self._routes, self._saved):
                    state = vars(attention)
                    if original is _MISSING:
                        del state[attribute]
                    else:
                        state[attribute] = original
                self._saved = []
        return False


_MISSING = object()


class _TaskScope:
    """`SkillBartSeq2SeqLM.task_scope`: skills attached, task ids set."""

    def __init__(self, attached, task_ids):
        self._attached = attached
        self._task_ids = task_ids
        self._stack = None

    def __enter__(self):
        stack = contextlib.ExitStack()
        stack.enter_context(self._attached)
        if self._task_ids is not None:
            stack.enter_context(task_context(self._task_ids))
        self._stack = stack
        return self

    def __exit__(self, *exc_info):
        stack, self._stack = self._stack, None
        return stack.__exit__(*exc_info)


class BartSkills(keras.layers.Layer):
    """The skill layers of a BART backbone, and the backbone run with them.

    Creates one `SkillLoRAEinsumDense` around each targeted attention
    projection of `backbone` (NOTE 1) and owns them; the backbone keeps its
    original projections (NOTE 2). Calling the layer runs the backbone with
    the skills of `task_ids`.

    Args:
        backbone: A built `keras_hub.models.BartBackbone`.
        targets: The adapted projections (see `normalize_targets`).
        num_tasks: Positive integer, rows of each allocation matrix.
        num_skills: Positive integer, skills per adapted projection.
        rank: Positive integer, the LoRA rank (None with `adapter="sft"`).
        seed: Integer or None; skill layer i gets `seed + i`, so that the
            relaxation noise (and "hyper" embeddings) differ between layers.
        **options: The other arguments of `SkillLoRAEinsumDense`
            (`allocation`, `adapter`, `temperature`, ...); base layer
            arguments (`name`) go to this layer.

    Call arguments:
        inputs: The backbone's inputs (a dict of the four `MODEL_INPUTS`).
        task_ids: Integer ids (batch,).
        training: Boolean or None.

    Returns:
        The backbone's outputs ("encoder_sequence_output",
        "decoder_sequence_output").
    """

    def __init__(self, backbone, targets, num_tasks, num_skills, rank,
                 seed=None, **options):
        skill_options = {k: options.pop(k) for k in list(options)
                         if k in SKILL_OPTIONS}
        super().__init__(**options)
        self.backbone = backbone
        self.targets = normalize_targets(targets)
        routes, skill_layers = [], []
        for target in self.targets:
            attention, projection = target.split(".")
            attribute = _PROJECTION_ATTRIBUTES[projection]
            for index, attention_layer in enumerate(
                    _attention_layers(backbone, attention)):
                projection_layer = getattr(attention_layer, attribute)
                layer_seed = None if seed is None else seed + len(skill_layers)
                skill_layer = SkillLoRAEinsumDense(
                    projection_layer, num_tasks, num_skills, rank,
                    seed=layer_seed, name=f"{attention}_{index}_{projection}",
                    dtype=projection_layer.dtype_policy, **skill_options)
                kernel_shape = tuple(projection_layer.kernel.shape)
                in_axes = skill_layer._num_in_axes
                skill_layer.build((None, None) + kernel_shape[:in_axes])
                routes.append((attention_layer, attribute, skill_layer))
                skill_layers.append(skill_layer)
        self.skill_layers = skill_layers
        self.attached = _AttachedSkills(routes)
        self.built = True

    def task_scope(self, task_ids=None):
        """See `SkillBartSeq2SeqLM.task_scope`."""
        if task_ids is None and current_task_ids() is None:
            raise ValueError(
                "The skills need task ids: pass `task_ids` (integer ids, one "
                "per example) or open a `task_context(task_ids)` first.")
        return _TaskScope(self.attached, task_ids)

    def call(self, inputs, task_ids, training=None):
        task_ids = ops.cast(task_ids, "int32")
        with self.task_scope(task_ids):
            return self.backbone(
                {name: inputs[name] for name in MODEL_INPUTS},
                training=training)

    def compute_output_spec(self, inputs, task_ids, training=None):
        return self.backbone.compute_output_spec(
            {name: inputs[name] for name in MODEL_INPUTS})

    def skill_config(self):
        """The skills' options: targets, then the skill layers' arguments."""
        config = dict(self.skill_layers[0].get_config())
        for key in _LAYER_KEYS:
            config.pop(key, None)
        return {"targets": list(self.targets), **config}


# ---------------------------------------------------------------------------
# Preprocessor.
# ---------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="modular_zoo")
class SkillBartSeq2SeqLMPreprocessor(keras_hub.models.BartSeq2SeqLMPreprocessor):
    """`BartSeq2SeqLMPreprocessor` that carries task ids.

    Takes `{"encoder_text", "decoder_text", "task_ids"}` (training) or
    `{"encoder_text", "task_ids"}` with an optional "decoder_text" prompt
    (`generate_preprocess`) and returns the stock token inputs plus
    "task_ids" unchanged (integer ids, one per example). Unlike the stock
    preprocessor it saves its sequence lengths (NOTE 8).

    Args:
        tokenizer: A `keras_hub.models.BartTokenizer`.
        encoder_sequence_length: Padded length of encoder inputs.
        decoder_sequence_length: Padded length of decoder inputs.
        **kwargs: Base layer arguments.

    Example:

    ```python
    preprocessor = SkillBartSeq2SeqLMPreprocessor.from_preset(
        "bart_base_en", encoder_sequence_length=64,
        decoder_sequence_length=32)
    x, y, sample_weight = preprocessor({
        "encoder_text": ["the quick brown fox", "a whale"],
        "decoder_text": ["the fast fox", "a big whale"],
        "task_ids": [0, 3],
    })
    ```
    """

    @staticmethod
    def _split_task_ids(x, method):
        if not isinstance(x, dict) or "task_ids" not in x:
            kind = (f"keys {sorted(x)}" if isinstance(x, dict)
                    else type(x).__name__)
            raise ValueError(
                f"SkillBartSeq2SeqLMPreprocessor.{method} needs task ids: "
                "pass a dict with 'encoder_text', "
                f"{'an optional ' if method == 'generate_preprocess' else ''}"
                f"'decoder_text' and 'task_ids' (one integer id per example); "
                f"got {kind}.")
        text = {k: v for k, v in x.items() if k != "task_ids"}
        needed = ("encoder_text",) if method == "generate_preprocess" else (
            "encoder_text", "decoder_text")
        missing = [k for k in needed if k not in text]
        if missing:
            raise ValueError(
                f"SkillBartSeq2SeqLMPreprocessor.{method} takes raw text; "
                f"{missing} missing from keys {sorted(x)}. For inputs that "
                "are already token ids, set `model.preprocessor = None`.")
        return text, x["task_ids"]

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None, *,
             encoder_sequence_length=None, decoder_sequence_length=None,
             sequence_length=None):
        text, task_ids = self._split_task_ids(x, "call")
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            super().call(
                text, y, sample_weight,
                encoder_sequence_length=encoder_sequence_length,
                decoder_sequence_length=decoder_sequence_length,
                sequence_length=sequence_length))
        x["task_ids"] = task_ids
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    @preprocessing_function
    def generate_preprocess(self, x, *, encoder_sequence_length=None,
                            decoder_sequence_length=None,
                            sequence_length=None):
        text, task_ids = self._split_task_ids(x, "generate_preprocess")
        if "decoder_text" not in text:
            text = text["encoder_text"]  # the stock empty decoder prompt
        outputs = super().generate_preprocess(
            text, encoder_sequence_length=encoder_sequence_length,
            decoder_sequence_length=decoder_sequence_length,
            sequence_length=sequence_length)
        outputs["task_ids"] = task_ids
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder_sequence_length": self.encoder_sequence_length,
            "decoder_sequence_length": self.decoder_sequence_length,
        })
        return config


# ---------------------------------------------------------------------------
# Presets.
# ---------------------------------------------------------------------------
def _complete_hf_bart_config(config, preset):
    """Adds `num_hidden_layers` to a transformers >= 5 BART config (NOTE 7)."""
    if config.get("model_type") != "bart" or "num_hidden_layers" in config:
        return
    pairs = (("encoder_layers", "decoder_layers"),
             ("encoder_attention_heads", "decoder_attention_heads"),
             ("encoder_ffn_dim", "decoder_ffn_dim"))
    for encoder_key, decoder_key in pairs:
        if config.get(encoder_key) != config.get(decoder_key):
            raise ValueError(
                f"{preset!r}: KerasHub's BART has one depth, width and head "
                f"count for encoder and decoder; this config has "
                f"{encoder_key}={config.get(encoder_key)} and "
                f"{decoder_key}={config.get(decoder_key)}.")
    config["num_hidden_layers"] = config["encoder_layers"]


def _preset_loader(preset):
    """KerasHub's loader for `preset`, with a clear error for bad presets."""
    if isinstance(preset, os.PathLike):
        preset = os.fspath(preset)
    if not isinstance(preset, str):
        raise ValueError(
            "preset must be a string: a KerasHub preset name (e.g. "
            "'bart_base_en'), a Kaggle or 'hf://' handle, or a local "
            f"directory; got {type(preset).__name__}.")
    if os.path.isdir(preset) and not os.path.isfile(
            os.path.join(preset, "config.json")):
        raise ValueError(
            f"{preset!r} is a directory but not a preset: it has no "
            "config.json. A preset directory is written by `save_to_preset` "
            "(KerasHub) or `save_pretrained` (Hugging Face: config.json, "
            "model.safetensors, vocab.json, merges.txt).")
    try:
        loader = get_preset_loader(preset)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"Cannot load preset {preset!r}: {error}") from error
    _complete_hf_bart_config(loader.config, preset)
    backbone_cls = loader.check_backbone_class()
    if not (isinstance(backbone_cls, type)
            and issubclass(backbone_cls, keras_hub.models.BartBackbone)):
        name = getattr(backbone_cls, "__name__", backbone_cls)
        raise ValueError(
            f"{preset!r} holds a {name}, not a BART backbone "
            "(keras_hub.models.BartBackbone).")
    return preset, loader


def _saved_skill_task_config(preset, cls):
    """The task.json config of a preset saved by `cls`, else None."""
    if not check_file_exists(preset, TASK_CONFIG_FILE):
        return None
    task_config = load_json(preset, TASK_CONFIG_FILE)
    try:
        task_cls = check_config_class(task_config)
    except Exception:  # an unregistered class: not ours
        return None
    if isinstance(task_cls, type) and issubclass(task_cls, cls):
        return task_config["config"]
    return None


def _check_same_skills(saved, requested, where):
    """ValueError if `requested` changes a structural option of `saved`."""
    for key in _STRUCTURAL_OPTIONS:
        if key not in requested or key not in saved:
            continue
        value = requested[key]
        if key == "targets":
            value = list(normalize_targets(value))
        if _to_json(value) != _to_json(saved[key]):
            raise ValueError(
                f"{where} holds skills with {key}={saved[key]!r}; got "
                f"{key}={requested[key]!r}. Leave {key} out to use the saved "
                "skills (add tasks with `add_tasks` after loading).")


def read_skills_config(directory):
    """The skill configuration saved by `SkillBartSeq2SeqLM.save_skills`.

    Returns:
        A dict with "skills" (the model's skill arguments) and "base" (the
        architecture of the base BART they were trained on).
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, SKILLS_CONFIG_FILE)
    weights = os.path.join(directory, SKILLS_WEIGHTS_FILE)
    if not (os.path.isfile(path) and os.path.isfile(weights)):
        raise ValueError(
            f"{directory!r} holds no saved skills: expected "
            f"{SKILLS_CONFIG_FILE} and {SKILLS_WEIGHTS_FILE} (written by "
            "SkillBartSeq2SeqLM.save_skills).")
    with open(path, encoding="utf-8") as file:
        config = json.load(file)
    if config.get("format") != SKILLS_FORMAT:
        raise ValueError(f"{path!r} is not a {SKILLS_FORMAT} file.")
    if config.get("version", 0) > SKILLS_FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {config['version']}; this code "
            f"reads versions up to {SKILLS_FORMAT_VERSION}.")
    return config


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="modular_zoo")
class SkillBartSeq2SeqLM(keras_hub.models.BartSeq2SeqLM):
    """KerasHub's BART with Polytropon skills in its attention projections.

    Every adapted projection (NOTE 1) with frozen kernel W0 and bias b0
    computes, for an example of task t,

        y = x W0 + b0 + scale * (x A_mix) B_mix
        A_mix = sum_s w_s A_s,  B_mix = sum_s w_s B_s,  scale = 1 / r
        w_s = z_s / (sum_s' z_s' + 1e-12)
        z = sigmoid(Z_t)                                      (inference)
        z = sigmoid((Z_t + log u - log(1 - u)) / tau)         (training)

    with its own allocation logits Z (num_tasks, num_skills), u ~ U(0, 1)
    per example, LoRA skills A_s (d_in x r) and B_s (r x d_out), B = 0 at
    initialisation (so the model starts as the base, NOTE 4). The other
    allocations of `layers.SkillLoRAEinsumDense` ("private", "shared",
    "fixed", "moe", "hyper"), splits, sparse skills (`adapter="sft"`) and
    their options pass through. The whole base is frozen (NOTE 5).

    Inputs are the stock BART inputs plus "task_ids" (integer ids, one per
    example; a batch may mix tasks), in `fit`, `evaluate`, `predict`,
    direct calls and `generate` (greedy, sampling and beam samplers, under
    jit on every backend, NOTE 3). With the preprocessor, raw strings
    `{"encoder_text", "decoder_text", "task_ids"}` work in `fit` and
    `{"encoder_text", "task_ids"}` in `generate`.

    Args:
        backbone: A `keras_hub.models.BartBackbone` (its weights loaded).
        preprocessor: A `SkillBartSeq2SeqLMPreprocessor` or None.
        num_tasks: Positive integer, number of tasks.
        num_skills: Positive integer, skills per adapted projection.
        rank: Positive integer, LoRA rank r (None with `adapter="sft"`).
        allocation: "learned" (default), "private", "shared", "fixed",
            "moe" or "hyper".
        adapter: "lora" (default) or "sft".
        targets: The adapted projections (see `normalize_targets`); default
            q, k, v and output of all three attentions.
        temperature: Gumbel-sigmoid temperature tau (training).
        seed: Integer or None, seed of the relaxation noise (layer i uses
            seed + i).
        **kwargs: Further `SkillLoRAEinsumDense` options (`num_splits`,
            `gumbel_noise`, `lora_alpha`, `top_k`, `expert_matrix`,
            `logits_initializer`, ...) and `keras_hub.models.Task`
            arguments (`name`, `compile`).

    Example (downloads BART-base; the tests use a tiny preset):

    ```python
    model = SkillBartSeq2SeqLM.from_preset(
        "bart_base_en", num_tasks=3, num_skills=8, rank=16,
        encoder_sequence_length=128, decoder_sequence_length=64)
    model.fit({"encoder_text": ["translate: hallo", "sum: a b c"],
               "decoder_text": ["hello", "a"],
               "task_ids": [0, 1]}, batch_size=2)
    model.compile(sampler="beam")
    model.generate({"encoder_text": ["translate: hallo"], "task_ids": [0]})
    model.save_skills("skills/")
    again = SkillBartSeq2SeqLM.from_preset("bart_base_en", skills="skills/")
    ```
    """

    backbone_cls = keras_hub.models.BartBackbone
    preprocessor_cls = SkillBartSeq2SeqLMPreprocessor

    def __init__(self, backbone, preprocessor=None, num_tasks=None,
                 num_skills=8, rank=16, allocation="learned", adapter="lora",
                 targets=DEFAULT_TARGETS, temperature=1.0, seed=None,
                 **kwargs):
        if not isinstance(backbone, keras_hub.models.BartBackbone):
            raise ValueError(
                "SkillBartSeq2SeqLM needs a keras_hub.models.BartBackbone; "
                f"got {type(backbone).__name__}.")
        if num_tasks is None:
            raise ValueError(
                "SkillBartSeq2SeqLM needs `num_tasks`, the number of tasks "
                "(rows of each allocation matrix).")
        skill_options = {k: kwargs.pop(k) for k in list(kwargs)
                         if k in SKILL_OPTIONS}
        compile_model = kwargs.pop("compile", True)
        skills = BartSkills(
            backbone, targets, num_tasks, num_skills, rank, seed=seed,
            allocation=allocation, adapter=adapter, temperature=temperature,
            name="skills", **skill_options)
        for layer in backbone.layers:  # NOTE 5
            layer.trainable = False

        # The stock graph (BartSeq2SeqLM.__init__) with "task_ids" as one
        # more input, the backbone run by the skills layer.
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.skills = skills
        inputs = dict(backbone.input)
        inputs["task_ids"] = keras.Input(shape=(), dtype="int32",
                                         name="task_ids")
        hidden_states = skills(inputs, inputs["task_ids"])[
            "decoder_sequence_output"]
        outputs = backbone.token_embedding(hidden_states, reverse=True)
        keras_hub.models.Seq2SeqLM.__init__(
            self, inputs=inputs, outputs=outputs, compile=compile_model,
            **kwargs)

    # -- skills ----------------------------------------------------------------
    @property
    def skill_layers(self):
        """The `SkillLoRAEinsumDense` layers, in `targets` order."""
        return list(self.skills.skill_layers)

    @property
    def targets(self):
        """The adapted projections, "attention.projection"."""
        return self.skills.targets

    @property
    def num_tasks(self):
        return self.skills.skill_layers[0].num_tasks

    @property
    def allocation_variables(self):
        """The allocation logits Z (or "hyper" task embeddings) per layer,
        frozen or not."""
        return [v for layer in self.skill_layers for v in layer.weights
                if v.name in ALLOCATION_VARIABLE_NAMES]

    @property
    def skill_variables(self):
        """The skill parameters (LoRA A and B, or SFT deltas) per layer,
        frozen or not (few-shot adaptation may freeze either group)."""
        return [v for layer in self.skill_layers for v in layer.weights
                if v.name in SKILL_VARIABLE_NAMES]

    def skill_config(self):
        """The skill arguments of this model (JSON-compatible)."""
        return {k: _to_json(v) for k, v in self.skills.skill_config().items()}

    def task_scope(self, task_ids=None):
        """A context in which the backbone runs with the skills of `task_ids`.

        Inside it the targeted projections of `self.backbone` call their
        skill layers (NOTE 2) with `task_ids` (integer ids, one per example;
        None: the ids of an enclosing `layers.task_context`). `call`,
        `call_encoder`, `call_decoder_with_cache` and `generate` open it
        themselves; use it to call the backbone or its sublayers directly.
        """
        return self.skills.task_scope(task_ids)

    def add_tasks(self, n, expert_rows=None):
        """Appends `n` tasks to every skill layer (new rows p = 0.5).

        See `SkillLoRAEinsumDense.add_tasks` ("fixed" needs `expert_rows`,
        "private" cannot grow). Re-compile before training: the optimizer
        holds the old allocation variables. Returns the new task ids.
        """
        new_ids = None
        for layer in self.skill_layers:
            new_ids = layer.add_tasks(n, expert_rows)
        self.generate_function = None  # its traces hold the old variables
        return new_ids

    def allocation_probabilities(self):
        """{skill layer name: (num_tasks, num_splits, num_skills) array}."""
        return {layer.name: layer.allocation_probabilities()
                for layer in self.skill_layers}

    def allocation_metrics(self):
        """Discreteness, sparsity and usage (paper Eqs. 5-7).

        Returns:
            {"mean": the metrics averaged over the skill layers,
             "layers": {skill layer name: its metrics}}.
        """
        per_layer = {layer.name: layer.allocation_metrics()
                     for layer in self.skill_layers}
        names = next(iter(per_layer.values())).keys()
        mean = {name: float(np.mean([m[name] for m in per_layer.values()]))
                for name in names}
        return {"mean": mean, "layers": per_layer}

    # -- saving ----------------------------------------------------------------
    def _base_architecture(self):
        config = self.backbone.get_config()
        return {key: config[key] for key in _BASE_KEYS}

    def save_skills(self, directory):
        """Writes the skills alone: skills.weights.h5 and skills.json.

        The weights are the skill layers' (allocation logits, A, B, noise
        seed state); skills.json holds `skill_config()` and the base
        architecture. Re-attach them with `load_skills` or
        `from_preset(base, skills=directory)`.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        keras.saving.save_weights(
            self.skills, os.path.join(directory, SKILLS_WEIGHTS_FILE),
            objects_to_skip=list(self.backbone._flatten_layers()))
        config = {
            "format": SKILLS_FORMAT,
            "version": SKILLS_FORMAT_VERSION,
            "model": type(self).__name__,
            "skills": self.skill_config(),
            "base": self._base_architecture(),
        }
        with open(os.path.join(directory, SKILLS_CONFIG_FILE), "w",
                  encoding="utf-8") as file:
            json.dump(config, file, indent=2)

    def load_skills(self, directory):
        """Loads skills saved by `save_skills` into this model.

        The saved skills must have this model's structural options
        (targets, num_tasks, num_skills, rank, allocation, ...) and base
        architecture, else ValueError.
        """
        directory = os.fspath(directory)
        config = read_skills_config(directory)
        base = self._base_architecture()
        if config["base"] != base:
            raise ValueError(
                f"The skills in {directory!r} were trained on a BART with "
                f"{config['base']}; this model's base has {base}.")
        _check_same_skills(config["skills"], self.skill_config(),
                           f"{directory!r}")
        keras.saving.load_weights(
            self.skills, os.path.join(directory, SKILLS_WEIGHTS_FILE),
            objects_to_skip=list(self.backbone._flatten_layers()))

    def get_config(self):
        config = super().get_config()  # backbone, preprocessor, name
        config.update(self.skill_config())
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, *, skills=None,
                    encoder_sequence_length=None, decoder_sequence_length=None,
                    **kwargs):
        """A skilled BART from any BART preset KerasHub can load.

        Args:
            preset: A KerasHub preset name ("bart_base_en",
                "bart_large_en"), a Kaggle handle, "hf://owner/name", a
                local KerasHub preset directory, or a local Hugging Face
                BART directory (NOTE 7). A preset saved by this class's
                `save_to_preset` restores its skills too.
            load_weights: Whether to load the base weights.
            skills: A directory written by `save_skills`; its skills are
                attached (skill arguments come from its skills.json).
            encoder_sequence_length: Padded encoder length of the
                preprocessor (NOTE 8); None: the preset's or 1024.
            decoder_sequence_length: Same for the decoder.
            **kwargs: The constructor's arguments (`num_tasks`,
                `num_skills`, `rank`, `allocation`, `targets`, ...,
                `preprocessor`, `dtype`).

        Raises:
            ValueError: an unknown preset, a directory that is not a preset,
                a preset without a BART backbone, skill arguments that
                contradict the saved skills, or a missing `num_tasks`.
        """
        if "targets" in kwargs:  # fail before loading anything
            kwargs["targets"] = normalize_targets(kwargs["targets"])
        preset, loader = _preset_loader(preset)
        saved_config = _saved_skill_task_config(preset, cls)
        if saved_config is not None:
            if skills is not None:
                raise ValueError(
                    f"{preset!r} already holds skills (saved by "
                    f"{cls.__name__}.save_to_preset); load it without "
                    "`skills`, or load the base preset with them.")
            _check_same_skills(saved_config, kwargs, f"Preset {preset!r}")
        if skills is not None:
            skills_config = read_skills_config(skills)
            _check_same_skills(skills_config["skills"], kwargs,
                               f"{os.fspath(skills)!r}")
            kwargs = {**skills_config["skills"], **kwargs}
        elif saved_config is None and "num_tasks" not in kwargs:
            raise ValueError(
                f"{cls.__name__}.from_preset needs `num_tasks` (or `skills`, "
                "a directory written by save_skills).")
        if "preprocessor" not in kwargs:
            lengths = {
                "encoder_sequence_length": encoder_sequence_length,
                "decoder_sequence_length": decoder_sequence_length,
            }
            kwargs["preprocessor"] = loader.load_preprocessor(
                cls.preprocessor_cls,
                **{k: v for k, v in lengths.items() if v is not None})
        model = loader.load_task(cls, load_weights, True, **kwargs)
        if skills is not None:
            model.load_skills(skills)
        return model

    # -- forward passes --------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        if not (isinstance(inputs, dict) and "task_ids" in inputs):
            raise ValueError(
                "SkillBartSeq2SeqLM needs task ids: its inputs are a dict of "
                f"{MODEL_INPUTS + ('task_ids',)}, 'task_ids' holding one "
                "integer id per example.")
        check_index_range(inputs["task_ids"], self.num_tasks)
        if any(ops.is_tensor(v) for v in inputs.values()):
            # Keras refuses a dict that mixes tensors with NumPy arrays
            # (e.g. preprocessed tokens plus NumPy task ids).
            inputs = {k: v if ops.is_tensor(v) or isinstance(
                v, keras.KerasTensor) else ops.convert_to_tensor(v)
                for k, v in inputs.items()}
        return super().__call__(inputs, *args, **kwargs)

    def call_encoder(self, token_ids, padding_mask, task_ids=None):
        """The encoder with the skills of `task_ids` (or the scope's ids)."""
        with self.task_scope(task_ids):
            return super().call_encoder(token_ids, padding_mask)

    def call_decoder_with_cache(self, encoder_hidden_states,
                                encoder_padding_mask, decoder_token_ids,
                                self_attention_cache=None,
                                self_attention_cache_update_index=None,
                                cross_attention_cache=None,
                                cross_attention_cache_update_index=None,
                                task_ids=None):
        """The cached decoder step with the skills of `task_ids`."""
        with self.task_scope(task_ids):
            return super().call_decoder_with_cache(
                encoder_hidden_states, encoder_padding_mask,
                decoder_token_ids,
                self_attention_cache=self_attention_cache,
                self_attention_cache_update_index=(
                    self_attention_cache_update_index),
                cross_attention_cache=cross_attention_cache,
                cross_attention_cache_update_index=(
                    cross_attention_cache_update_index))

    def _build_cache(self, encoder_token_ids, encoder_padding_mask,
                     decoder_token_ids, task_ids=None):
        with self.task_scope(task_ids):
            return super()._build_cache(
                encoder_token_ids, encoder_padding_mask, decoder_token_ids)

    # -- generation --------------------------------------------------------------
    def _normalize_generate_inputs(self, inputs):
        # KerasHub sets "is the input a scalar string" from the last key of
        # the dict; judge it without the ids, then put them back.
        if not (isinstance(inputs, dict) and "task_ids" in inputs):
            return super()._normalize_generate_inputs(inputs)
        inputs = dict(inputs)
        task_ids = inputs.pop("task_ids")
        batches, input_is_scalar = super()._normalize_generate_inputs(inputs)
        batches[0]["task_ids"] = task_ids
        return batches, input_is_scalar

    def _checked_generate_inputs(self, inputs):
        """The generate inputs with int32 task ids, checked (NOTE 3)."""
        if not (isinstance(inputs, dict) and "task_ids" in inputs):
            raise ValueError(
                "SkillBartSeq2SeqLM.generate needs task ids: pass "
                "{'encoder_text': ..., 'task_ids': ...} (with the "
                "preprocessor) or the token inputs plus 'task_ids'.")
        inputs = dict(inputs)
        task_ids = ops.convert_to_tensor(inputs["task_ids"])
        if "int" not in keras.backend.standardize_dtype(task_ids.dtype):
            raise ValueError(
                "task_ids must be integers; got "
                f"{keras.backend.standardize_dtype(task_ids.dtype)}.")
        if len(task_ids.shape) == 0:
            task_ids = ops.reshape(task_ids, (1,))
        batch = ops.shape(inputs["encoder_token_ids"])[0]
        if len(task_ids.shape) != 1 or task_ids.shape[0] != batch:
            raise ValueError(
                f"generate got task_ids of shape {tuple(task_ids.shape)} for "
                f"a batch of {batch}: give one task id per example.")
        check_index_range(task_ids, self.num_tasks)
        inputs["task_ids"] = ops.cast(task_ids, "int32")
        return inputs

    def make_generate_function(self):
        if self.generate_function is not None:
            return self.generate_function
        compiled = super().make_generate_function()

        def generate_with_task_ids(inputs, stop_token_ids=None):
            return compiled(self._checked_generate_inputs(inputs),
                            stop_token_ids=stop_token_ids)

        self.generate_function = generate_with_task_ids
        return self.generate_function

    def generate_step(self, inputs, stop_token_ids=None):
        """`BartSeq2SeqLM.generate_step` with task ids in the cache.

        `inputs` holds the four token inputs and "task_ids" (int32,
        (batch,)). The ids enter the sampler's cache, so the beam sampler
        repeats and gathers them with the key/value caches (NOTE 3).
        """
        encoder_token_ids = inputs["encoder_token_ids"]
        encoder_padding_mask = inputs["encoder_padding_mask"]
        decoder_token_ids = inputs["decoder_token_ids"]
        decoder_padding_mask = inputs["decoder_padding_mask"]
        task_ids = inputs["task_ids"]

        (hidden_states, encoder_hidden_states, self_attention_cache,
         cross_attention_cache) = self._build_cache(
            encoder_token_ids, encoder_padding_mask, decoder_token_ids,
            task_ids=task_ids)
        row_lengths = ops.sum(ops.cast(decoder_padding_mask, "int32"), axis=-1)
        index = ops.min(row_lengths)

        def next(prompt, cache, index):
            cache_index = index - 1
            num_samples = ops.shape(prompt)[0]
            prompt = ops.slice(prompt, [0, cache_index], [num_samples, 1])
            (self_attention_cache, encoder_hidden_states,
             encoder_padding_mask, cross_attention_cache, task_ids) = cache
            logits, hidden_states, self_attention_cache, _ = (
                self.call_decoder_with_cache(
                    encoder_hidden_states=encoder_hidden_states,
                    encoder_padding_mask=encoder_padding_mask,
                    decoder_token_ids=prompt,
                    self_attention_cache=self_attention_cache,
                    self_attention_cache_update_index=cache_index,
                    cross_attention_cache=cross_attention_cache,
                    cross_attention_cache_update_index=None,
                    task_ids=task_ids))
            return (
                ops.squeeze(logits, axis=1),
                ops.squeeze(hidden_states, axis=1),
                (self_attention_cache, encoder_hidden_states,
                 encoder_padding_mask, cross_attention_cache, task_ids),
            )

        decoder_token_ids = self.sampler(
            next=next,
            prompt=decoder_token_ids,
            cache=(self_attention_cache, encoder_hidden_states,
                   encoder_padding_mask, cross_attention_cache, task_ids),
            index=index,
            mask=decoder_padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )

        if stop_token_ids is not None:
            end_locations = any_equal(
                decoder_token_ids, stop_token_ids,
                ops.logical_not(decoder_padding_mask))
            end_locations = ops.cast(end_locations, "int32")
            cumsum = ops.cast(ops.cumsum(end_locations, axis=-1), "int32")
            overflow = cumsum - end_locations
            decoder_padding_mask = ops.logical_not(ops.cast(overflow, "bool"))
        else:
            decoder_padding_mask = ops.ones_like(decoder_token_ids,
                                                 dtype="bool")
        return {
            "decoder_token_ids": decoder_token_ids,
            "decoder_padding_mask": decoder_padding_mask,
        }
