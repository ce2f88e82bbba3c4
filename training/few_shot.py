"""Few-shot adaptation of a Polytropon skill model to new tasks.

Paper: Ponti et al., "Combining Parameter-efficient Modules for Task-level
Generalisation" (Polytropon), Section 2.5 and Appendix A.2
(papers/polytropon-combining-modular-skills.txt): "For each held-out task,
a newly added row in Z (initialised with a vector of 0.5) and Phi
(initialised from pre-training) are fine-tuned, but not theta0"; 1000 steps
of effective batch 8, warm-up over 10% of the steps, weight decay 1e-2.

Every skill layer (`layers.SkillLoRADense`, `SkillLoRAEinsumDense`,
`SkillConv2D`: a `layers.skill_allocation._SkillAllocation`) owns
allocation logits Z (num_tasks, S) and skills Phi. A new task t* gets

    Z_{t*} = 0,   p_{t*,s} = sigmoid(0) = 1/2,   w_{t*,s} = p_s / sum_s' p_s' = 1/S

(without the relaxation noise; with it, z ~ RelaxedBernoulli(1/2)), so
at the start the new task uses the uniform average of the skills,
A^mix = (1/S) sum_s A_s and B^mix = (1/S) sum_s B_s. Adaptation minimises

    min_{Z_{t*}, Phi}  E_{(x, y) ~ D_{t*}}  L(f(x; theta_0, Phi, Z_{t*}), y)

with theta_0 (every weight that is neither an allocation nor a skill)
frozen, by AdamW on the schedule eta_k = eta * min(k / w, (K - k) / (K - w))
(K steps, w = round(0.1 K)):

    Phi <- Phi - eta_k   (m_hat / (sqrt(v_hat) + eps) + lambda Phi)   lambda = 1e-2
    Z   <- Z   - eta^Z_k  m_hat / (sqrt(v_hat) + eps)                 no decay

A row of Z whose gradient is zero at every step (a task with no example in
the data, e.g. every old task) has m = v = 0 and stays exactly where it
is; a decay term would shrink it, hence none on the allocation.

Modes (`FEW_SHOT_MODES`; theta_0 is frozen in every one):

* "skills" (the paper): the allocation (all rows; only the new rows get
  gradients) and the skills Phi;
* "allocation": only the allocation; the new task is a new combination of
  the learned skills;
* "average": only the skills; the allocation is frozen at the new rows'
  start (p = 1/2) and the relaxation noise is switched off, so the new task
  mixes the skills with w_s = 1/S throughout (the paper's "fixed average of
  skills" variant).

    new_ids = add_new_tasks(model, 1, mode="skills")
    few_shot_adapt(model, x, y, steps=1000, batch_size=8)  # the same mode

Written for any Keras model that contains skill layers (found with
`skill_allocation_layers`), e.g. `zoo.SkillBartSeq2SeqLM`; it knows no
model family.

NOTE 1 (one task at a time): the paper adapts each held-out task on its own,
  from the multitask weights. `add_new_tasks(model, n)` with n > 1 adapts n
  tasks together: their rows are separate, the skills are shared between
  them. To follow the paper, adapt a fresh copy of the model per task
  (e.g. reload the saved skills).
NOTE 2 (old tasks): old rows of Z get zero gradients and, without weight
  decay, never move (tested); but in "skills" and "average" the skills they
  use move, so the old tasks' outputs change (as in the paper, which
  evaluates each adapted copy on its new task only). A new task's row,
  once it has Adam momentum, keeps moving on steps whose batch holds none of
  its examples (n > 1 tasks mixed in one run).
NOTE 3 (other allocations): "moe" grows like "learned" (logits 0, top-k of
  a uniform softmax keeps every skill: w = 1/S in "average"). "hyper" task
  embeddings are the allocation: new rows N(0, 1/S) (1/S in "average", so
  the generated adapter is the skills' average); `few_shot_optimizer`
  routes them with the logits (allocation rate, no weight decay), while
  `dual_speed_optimizer`'s default pattern in multitask training leaves
  them with the skills; the paper gives no few-shot rate for HYPER: set
  `allocation_learning_rate` for it. "fixed" (EXPERT) takes the new rows
  from `expert_rows` ("skills" mode; rows of ones in "average"); "shared"
  has one skill and no allocation. Neither has a learnable allocation, so
  "allocation" mode refuses them. "private" (Z = I) cannot take a new task
  without a new skill and is refused.
NOTE 4 (the state left behind, nothing is restored): `add_new_tasks` grows
  the model for good and sets trainability: the skill layers and the layers
  that contain them get `trainable=True` with their own non-skill weights
  frozen (a skill layer's base W0, b0 included, even with
  `trainable_base=True`), every other layer `trainable=False` (so e.g.
  BatchNormalization runs in inference mode); the allocation and the skills
  are trainable as the mode says. "average" leaves `gumbel_noise=False` on
  every skill layer; no mode switches it back on. The mode is recorded on
  the skill layers (`_few_shot_mode`); `freeze_for_few_shot` changes it.
  `few_shot_adapt` leaves the model compiled with the few-shot optimizer and
  loss (a KerasHub task keeps its sampler) and its metrics.
NOTE 5 (data): `few_shot_adapt` repeats the examples in shuffled passes to
  exactly steps * batch_size rows and fits one epoch over them: the rows
  are materialised (the few-shot sets are small; for large inputs call
  `model.fit` on a repeated `tf.data` pipeline with the same optimizer).
  A KerasHub task's raw inputs go through `model.preprocess_samples` once,
  before repeating, and `fit` runs with `model.preprocessor` set to None
  (put back when `fit` ends, also on error): `fit`'s own tokenising
  tf.data pipeline took a 3-step run of the tiny test BART from 22 s to
  60 s (JAX, CPU). A preprocessor with random augmentation would draw
  once per example.
"""

import inspect

import keras
import numpy as np

from layers.skill_allocation import _SkillAllocation
from training.optimizers import dual_speed_optimizer

FEW_SHOT_MODES = ("skills", "allocation", "average")
ALLOCATION_VARIABLE_NAMES = ("skill_logits", "task_embeddings")
SKILL_VARIABLE_NAMES = ("lora_a", "lora_b", "sft_deltas")
LEARNABLE_ALLOCATIONS = ("learned", "moe", "hyper")
FEW_SHOT_ALLOCATION_PATTERN = "(.*/)?(skill_logits|task_embeddings)"
_FIT_ARGUMENTS_SET_HERE = ("epochs", "steps_per_epoch", "shuffle",
                           "validation_split", "initial_epoch")


# ---------------------------------------------------------------------------
# Finding and freezing.
# ---------------------------------------------------------------------------
def skill_allocation_layers(model):
    """Every skill layer inside `model` (itself included), in layer order.

    A skill layer is a `layers.skill_allocation._SkillAllocation`:
    `SkillLoRADense`, `SkillLoRAEinsumDense`, `SkillConv2D`.

    >>> import keras
    >>> from layers import SkillLoRADense
    >>> features = keras.Input((4,))
    >>> task_ids = keras.Input((), dtype="int32")
    >>> skills = SkillLoRADense(2, num_tasks=2, num_skills=2, rank=1)
    >>> model = keras.Model([features, task_ids], skills(features, task_ids))
    >>> skill_allocation_layers(model) == [skills]
    True
    """
    return [layer for layer in model._flatten_layers(include_self=True)
            if isinstance(layer, _SkillAllocation)]


def _own_variables(layer):
    """The variables a layer created itself, not those of its sublayers."""
    inner = {id(v) for sub in layer._flatten_layers(include_self=False)
             for v in sub.weights}
    return [v for v in layer.weights if id(v) not in inner]


def _check_mode(mode):
    if mode not in FEW_SHOT_MODES:
        raise ValueError(f"mode must be one of {FEW_SHOT_MODES}; got {mode!r}.")


def _positive_int(value, name):
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or value < 1):
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _skill_layers_of(model):
    skill_layers = skill_allocation_layers(model)
    if not skill_layers:
        raise ValueError(
            f"{type(model).__name__} has no skill layer (SkillLoRADense, "
            "SkillLoRAEinsumDense, SkillConv2D): nothing to adapt.")
    if not all(layer.built for layer in skill_layers):
        raise ValueError(
            "The model's skill layers are not built: call the model once (or "
            "build it) before few-shot adaptation.")
    return skill_layers


def freeze_for_few_shot(model, mode="skills"):
    """Sets what trains in few-shot adaptation (`add_new_tasks` calls it).

    theta_0 (every weight that is neither an allocation nor a skill) is
    frozen; the allocation (`skill_logits`, `task_embeddings`) trains in
    "skills" and "allocation", the skills (`lora_a`, `lora_b`,
    `sft_deltas`) in "skills" and "average"; "average" switches the
    relaxation noise off. Nothing else changes (NOTE 4); the mode is
    recorded on the skill layers, so `few_shot_adapt(mode=...)` can check it.

    Args:
        model: A built Keras model containing skill layers.
        mode: One of `FEW_SHOT_MODES`.

    Returns:
        The model's trainable variables after freezing.

    Raises:
        ValueError: an unknown mode, no (built) skill layer, or nothing left
            to train ("allocation" with only "shared"/"fixed"/"private"
            allocations).

    Example:

    >>> import keras
    >>> from layers import SkillLoRADense
    >>> task_ids = keras.Input((), dtype="int32")
    >>> features = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8)(features)
    >>> model = keras.Model([features, task_ids], SkillLoRADense(
    ...     3, num_tasks=2, num_skills=4, rank=2)(hidden, task_ids))
    >>> [v.name for v in freeze_for_few_shot(model, "average")]
    ['lora_a', 'lora_b']
    """
    _check_mode(mode)
    skill_layers = _skill_layers_of(model)
    train_allocation = mode in ("skills", "allocation")
    train_skills = mode in ("skills", "average")
    skill_ids = {id(layer) for layer in skill_layers}
    containers = {  # layers with a skill layer inside (the model included)
        id(outer) for outer in model._flatten_layers(include_self=True)
        if id(outer) not in skill_ids
        and any(id(inner) in skill_ids for inner in outer._flatten_layers())}

    # Everything trainable first, then frozen where it must be: the result
    # does not depend on the order in which the layers are visited or on
    # their earlier state.
    model.trainable = True
    for layer in model._flatten_layers(include_self=True):
        if id(layer) in skill_ids:
            for sublayer in layer._flatten_layers(include_self=False):
                sublayer.trainable = False  # e.g. the wrapped EinsumDense
            for variable in _own_variables(layer):
                if variable.name in ALLOCATION_VARIABLE_NAMES:
                    variable.trainable = train_allocation
                elif variable.name in SKILL_VARIABLE_NAMES:
                    variable.trainable = train_skills
                else:
                    variable.trainable = False  # W0, b0 (NOTE 4), SFT masks
            if mode == "average":
                layer.gumbel_noise = False
            layer._few_shot_mode = mode
        elif id(layer) in containers:
            for variable in _own_variables(layer):
                variable.trainable = False
        else:
            layer.trainable = False  # theta_0, with its sublayers
    trainable = model.trainable_variables
    if not trainable:
        allocations = sorted({layer.allocation for layer in skill_layers})
        raise ValueError(
            f"mode={mode!r} leaves nothing to train with allocation "
            f"{allocations}: only {LEARNABLE_ALLOCATIONS} have a learnable "
            "allocation; use mode='skills' to fine-tune the skills.")
    return trainable


# ---------------------------------------------------------------------------
# Adding tasks.
# ---------------------------------------------------------------------------
def _check_expert_rows(skill_layers, num_new_tasks, mode, expert_rows):
    """The rows passed to `add_tasks` (validated before anything grows)."""
    fixed = [layer for layer in skill_layers if layer.allocation == "fixed"]
    if not fixed:
        if expert_rows is not None:
            raise ValueError(
                "expert_rows is only used with allocation='fixed' (EXPERT); "
                "this model's allocation is "
                f"{sorted({layer.allocation for layer in skill_layers})}.")
        return None
    skills = {layer.num_skills for layer in fixed}
    if len(skills) != 1:
        raise ValueError(
            "The 'fixed' skill layers have different numbers of skills "
            f"{sorted(skills)}: add their tasks layer by layer with "
            "`layer.add_tasks(n, expert_rows)`.")
    (num_skills,) = skills
    if mode == "average":
        if expert_rows is not None:
            raise ValueError(
                "mode='average' gives the new tasks the uniform mix of the "
                "skills (rows of ones): leave expert_rows None, or use "
                "mode='skills' with your expert_rows.")
        return np.ones((num_new_tasks, num_skills), "float32")
    if expert_rows is None:
        raise ValueError(
            "allocation='fixed' (EXPERT) needs expert_rows, a 0/1 array "
            f"({num_new_tasks}, {num_skills}): the new tasks' skills.")
    rows = np.asarray(expert_rows, "float32")
    if rows.shape != (num_new_tasks, num_skills) or not np.all(
            (rows == 0) | (rows == 1)):
        raise ValueError(
            f"expert_rows must be a 0/1 array of shape ({num_new_tasks}, "
            f"{num_skills}); got shape {rows.shape}.")
    return rows


def add_new_tasks(model, num_new_tasks=1, mode="skills", expert_rows=None):
    """Appends new tasks to every skill layer and freezes what `mode` keeps.

    Each skill layer gets `num_new_tasks` new rows: logits 0 (p = 1/2, so
    w = 1/S: the uniform mix of the skills) for "learned" and "moe",
    N(0, 1/S) task embeddings for "hyper" (exactly 1/S in "average"),
    `expert_rows` for "fixed" (ones in "average"), nothing for "shared"
    (NOTE 3). The model's own `add_tasks(n, expert_rows)` is used when it
    has one (so that `zoo.SkillBartSeq2SeqLM` drops its compiled generate
    function), else each layer's. Then `freeze_for_few_shot(model, mode)`:

        "skills":     allocation and skills train      (the paper)
        "allocation": only the allocation trains
        "average":    only the skills train; allocation frozen, noise off

    and theta_0 is frozen in every mode. The model stays changed (NOTE 4).

    Args:
        model: A built Keras model containing skill layers.
        num_new_tasks: Positive integer, tasks to add.
        mode: One of `FEW_SHOT_MODES`.
        expert_rows: (num_new_tasks, num_skills) 0/1 array, only for
            allocation="fixed" in mode "skills".

    Returns:
        The new task ids, an int32 NumPy array.

    Raises:
        ValueError: an unknown mode, `num_new_tasks` < 1, no built skill
            layer, a "private" allocation, bad `expert_rows`, or
            "allocation" mode without a learnable allocation. Everything
            is checked before the model changes.

    Example:

    >>> import keras, numpy as np
    >>> from layers import SkillLoRADense
    >>> task_ids = keras.Input((), dtype="int32")
    >>> features = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8)(features)  # theta_0: frozen
    >>> skills = SkillLoRADense(3, num_tasks=2, num_skills=4, rank=2)
    >>> model = keras.Model([features, task_ids], skills(hidden, task_ids))
    >>> add_new_tasks(model, 1, mode="allocation")
    array([2], dtype=int32)
    >>> skills.allocation_probabilities()[2, 0].tolist()  # p = 1/2
    [0.5, 0.5, 0.5, 0.5]
    >>> [v.name for v in model.trainable_variables]
    ['skill_logits']
    """
    _check_mode(mode)
    num_new_tasks = _positive_int(num_new_tasks, "num_new_tasks")
    skill_layers = _skill_layers_of(model)
    allocations = {layer.allocation for layer in skill_layers}
    if "private" in allocations:
        raise ValueError(
            "allocation='private' (Z = I, one skill per task) cannot add a "
            "task without a new skill. For the PRIVATE few-shot baseline, "
            "build the same base with allocation='shared' (one fresh skill) "
            "and adapt that.")
    if mode == "allocation" and not allocations & set(LEARNABLE_ALLOCATIONS):
        raise ValueError(
            f"mode='allocation' needs a learnable allocation "
            f"{LEARNABLE_ALLOCATIONS}; got {sorted(allocations)}: use "
            "mode='skills'.")
    rows = _check_expert_rows(skill_layers, num_new_tasks, mode, expert_rows)

    for layer in skill_layers:
        # A frozen allocation variable makes `add_tasks` look for it in the
        # wrong list (layers/skill_allocation.py `_replace_variable`);
        # `freeze_for_few_shot` below sets the final flags anyway.
        for variable in _own_variables(layer):
            if variable.name in ALLOCATION_VARIABLE_NAMES:
                variable.trainable = True
    if hasattr(model, "add_tasks"):  # NOTE 1: n new tasks share the skills
        new_ids = model.add_tasks(num_new_tasks, rows)
    else:
        for layer in skill_layers:
            new_ids = layer.add_tasks(
                num_new_tasks, rows if layer.allocation == "fixed" else None)
    new_ids = np.asarray(new_ids, "int32")
    if mode == "average":
        for layer in skill_layers:
            if layer.allocation == "hyper":  # NOTE 3: the skills' average
                _set_rows(layer.task_embeddings, new_ids, 1.0 / layer.num_skills)
    freeze_for_few_shot(model, mode)
    return new_ids


def _set_rows(variable, rows, value):
    table = np.array(keras.ops.convert_to_numpy(variable))
    table[rows] = value
    variable.assign(table)


# ---------------------------------------------------------------------------
# Optimisation.
# ---------------------------------------------------------------------------
def few_shot_optimizer(total_steps=1000, learning_rate=1e-3, allocation_learning_rate=0.1,
                       warmup_fraction=0.1, weight_decay=1e-2, clipnorm=0.1,
                       epsilon=1e-8):
    """The paper's few-shot optimisation (Appendix A.2), built on
    `training.optimizers.dual_speed_optimizer`.

    AdamW for the skills at `learning_rate` with weight decay
    `weight_decay`; AdamW without decay for the allocation logits at
    `allocation_learning_rate`; both on `WarmupLinearDecay`

        eta_k = eta * min(k / w, (K - k) / (K - w)),  w = round(warmup_fraction * K)

    with gradients clipped to a global norm `clipnorm` per group
    (`dual_speed_optimizer` NOTE 1). The allocation group is every
    variable named in `ALLOCATION_VARIABLE_NAMES` (`FEW_SHOT_ALLOCATION_PATTERN`):
    the logits, and "hyper" task embeddings too (NOTE 3), so weight decay
    never touches an allocation row.

    Args:
        total_steps: Positive integer K, the optimizer steps (paper: 1000).
        learning_rate: Peak rate of the skills (paper: from {1e-2, 1e-3,
            1e-4}).
        allocation_learning_rate: Peak rate of the allocation logits
            (paper: from [1e-2, 1e-1]); a positive number.
        warmup_fraction: Fraction of the steps spent warming up, in [0, 1]
            (paper: 0.1).
        weight_decay: AdamW's decoupled weight decay of the skills (paper:
            1e-2).
        clipnorm: Global gradient norm per group (reference code: 0.1).
        epsilon: Adam's epsilon (PyTorch's default 1e-8, not Keras's 1e-7:
            `training.optimizers` NOTE 3).

    Returns:
        A `keras.optimizers.MultiOptimizer`.

    Example:

    >>> optimizer = few_shot_optimizer(total_steps=100)
    >>> type(optimizer).__name__
    'MultiOptimizer'
    >>> sorted(sub.weight_decay for sub in optimizer.optimizers)
    [0.0, 0.01]
    """
    total_steps = _positive_int(total_steps, "total_steps")
    for name, rate in (("learning_rate", learning_rate),
                       ("allocation_learning_rate", allocation_learning_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{name} must be a positive number; got {rate!r}.")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1]; got {warmup_fraction!r}.")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
    return dual_speed_optimizer(
        total_steps, learning_rate=learning_rate,
        allocation_learning_rate=allocation_learning_rate,
        weight_decay=weight_decay, warmup_fraction=warmup_fraction, clipnorm=clipnorm,
        allocation_pattern=FEW_SHOT_ALLOCATION_PATTERN, epsilon=epsilon)  # NOTE 2, NOTE 3


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------
def _is_structure(data):
    """A dict, or a list/tuple of arrays (several inputs), not a list of rows."""
    if isinstance(data, dict):
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and all(
        len(getattr(item, "shape", ())) > 0 or isinstance(item, (list, tuple, dict))
        for item in data)  # not a list of scalars (one input's rows)


def _as_array(data):
    if hasattr(data, "shape") and not isinstance(data, np.ndarray):
        return np.asarray(keras.ops.convert_to_numpy(data))
    return np.asarray(data)


def _leaves(data):
    if data is None:
        return []
    if isinstance(data, dict):
        return [leaf for value in data.values() for leaf in _leaves(value)]
    if _is_structure(data):
        return [leaf for value in data for leaf in _leaves(value)]
    return [data]


def _take(data, index):
    """The rows `index` of every array of `data` (NumPy), same structure."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: _take(value, index) for key, value in data.items()}
    if _is_structure(data):
        return type(data)(_take(value, index) for value in data)
    return _as_array(data)[index]


def _count_rows(x, y, sample_weight):
    counts = {}
    for name, data in (("x", x), ("y", y), ("sample_weight", sample_weight)):
        for leaf in _leaves(data):
            array = _as_array(leaf)
            if array.ndim == 0:
                raise ValueError(
                    f"{name} holds a scalar; few_shot_adapt needs arrays or "
                    "lists with one row per example.")
            counts.setdefault(len(array), name)
    if not counts:
        raise ValueError("few_shot_adapt needs examples: x is empty.")
    if len(counts) > 1:
        raise ValueError(
            "Every array of x, y and sample_weight must have one row per "
            f"example; got row counts {sorted(counts)}.")
    (num_rows,) = counts
    if num_rows < 1:
        raise ValueError("few_shot_adapt needs at least one example; got 0.")
    return num_rows


def _repeated_order(num_rows, total, seed):
    """`total` row indices: shuffled passes over the rows, as epochs are."""
    rng = np.random.default_rng(seed)
    passes = -(-total // num_rows)
    return np.concatenate([rng.permutation(num_rows) for _ in range(passes)])[:total]


# ---------------------------------------------------------------------------
# Adaptation.
# ---------------------------------------------------------------------------
def few_shot_adapt(model, x, y=None, *, steps=1000, batch_size=8, mode=None,
                   optimizer=None, loss=None, metrics=None, callbacks=None,
                   verbose="auto", sample_weight=None, seed=0, **fit_kwargs):
    """Fine-tunes `model` on a few examples for exactly `steps` steps.

    Call `add_new_tasks(model, n, mode)` first (it adds the rows and
    decides what trains); `mode` None takes that mode ("skills" if the
    model has none), and another mode is refused, since the new rows were
    started for the first one. The trainability is set again by
    `freeze_for_few_shot(model, mode)`. The model is recompiled with
    `optimizer` (default `few_shot_optimizer(steps)`, the paper's) and
    `loss` (default the compiled `model.loss`), so the optimizer sees the
    grown allocation variables and only the trainable ones. The examples are
    repeated in shuffled passes to steps * batch_size rows (NOTE 5) and
    `model.fit` runs one epoch over them: `steps` optimizer iterations,
    callbacks and progress bar included. A KerasHub task with a
    `preprocessor` takes its raw inputs as in its `fit` (e.g.
    `{"encoder_text", "decoder_text", "task_ids"}` for
    `zoo.SkillBartSeq2SeqLM`; y then comes from the preprocessor),
    preprocessed once (NOTE 5).

    Args:
        model: The model, after `add_new_tasks`.
        x, y: The few-shot examples, as for `fit`: arrays, lists or dicts of
            them, one row per example (task ids included in x).
        steps: Positive integer, optimizer steps (paper: 1000).
        batch_size: Positive integer (paper: 8).
        mode: None (the mode of `add_new_tasks`, else "skills") or that
            mode, one of `FEW_SHOT_MODES`.
        optimizer: A Keras optimizer; default `few_shot_optimizer(steps)`.
        loss: As in `compile`; default `model.loss`.
        metrics: As in `compile` (default none; a KerasHub task adds its
            own weighted metrics).
        callbacks, verbose, **fit_kwargs: Passed to `fit` (not `epochs`,
            `steps_per_epoch`, `shuffle`, `validation_split`,
            `initial_epoch`: set here).
        sample_weight: Per-example weights, repeated with the examples.
        seed: Seed of the order of the examples.

    Returns:
        The `keras.callbacks.History` of `fit`.

    Raises:
        ValueError: an unknown or different mode, `steps` or `batch_size`
            < 1, no loss, no example, arrays with different row counts, or a
            fit argument that would change the number of steps.

    Example:

    >>> import keras, numpy as np
    >>> from layers import SkillLoRADense
    >>> task_ids = keras.Input((), dtype="int32")
    >>> features = keras.Input((4,))
    >>> outputs = SkillLoRADense(1, num_tasks=2, num_skills=3, rank=2)(
    ...     features, task_ids)
    >>> model = keras.Model([features, task_ids], outputs)
    >>> model.compile(loss="mse")
    >>> (new_task,) = add_new_tasks(model, 1, mode="average")
    >>> x = [np.ones((5, 4), "float32"), np.full((5,), new_task)]
    >>> history = few_shot_adapt(model, x, np.ones((5, 1)), steps=3,
    ...                          batch_size=2, verbose=0)  # mode "average"
    >>> int(model.optimizer.iterations), len(history.history["loss"])
    (3, 1)
    """
    if mode is not None:
        _check_mode(mode)
    steps = _positive_int(steps, "steps")
    batch_size = _positive_int(batch_size, "batch_size")
    clashing = sorted(set(fit_kwargs) & set(_FIT_ARGUMENTS_SET_HERE))
    if clashing:
        raise ValueError(
            f"few_shot_adapt sets {clashing} itself (exactly `steps` steps of "
            "`batch_size` over the repeated examples); remove them.")
    skill_layers = _skill_layers_of(model)
    recorded = sorted({getattr(layer, "_few_shot_mode", None)
                       for layer in skill_layers} - {None})
    if len(recorded) > 1:
        raise ValueError(
            f"The skill layers were set up for different modes {recorded}: "
            "call freeze_for_few_shot(model, mode) with the one you want.")
    if mode is None:
        mode = recorded[0] if recorded else "skills"
    elif recorded and recorded != [mode]:
        raise ValueError(
            f"few_shot_adapt got mode={mode!r} but the model was set up for "
            f"mode {recorded[0]!r} by add_new_tasks: pass that mode (or none), "
            "or call freeze_for_few_shot(model, mode) first to switch on "
            "purpose (the new rows keep their current values).")
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "few_shot_adapt needs a loss: compile the model first or "
                "pass `loss`.")
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is not None:  # a KerasHub task: preprocess once (NOTE 5)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            model.preprocess_samples(x, y, sample_weight))
    num_rows = _count_rows(x, y, sample_weight)

    freeze_for_few_shot(model, mode)
    compile_kwargs = {"optimizer": optimizer or few_shot_optimizer(steps),
                      "loss": loss}
    if metrics is not None:
        compile_kwargs["metrics"] = metrics
    if getattr(model, "compiled", False):
        compile_kwargs["jit_compile"] = model.jit_compile
    if getattr(model, "sampler", None) is not None and "sampler" in inspect.signature(
            model.compile).parameters:
        compile_kwargs["sampler"] = model.sampler  # KerasHub resets it otherwise
    model.compile(**compile_kwargs)

    order = _repeated_order(num_rows, steps * batch_size, seed)  # NOTE 5
    if preprocessor is not None:
        model.preprocessor = None  # the examples are preprocessed already
    try:
        return model.fit(
            _take(x, order), _take(y, order), sample_weight=_take(sample_weight, order),
            batch_size=batch_size, epochs=1, shuffle=False, callbacks=callbacks,
            verbose=verbose, **fit_kwargs)
    finally:
        if preprocessor is not None:
            model.preprocessor = preprocessor
