"""Few-shot adaptation of a Polytropon skill model to new tasks.

Paper: Ponti et al., "Combining Parameter-efficient Modules for Task-level
Generalisation" (Polytropon), Section 2.5 and Appendix A.2. After multitask
training, each held-out task t* gets a new row of every allocation matrix,

    Z_{t*} = 0   (logits, so p = sigmoid(0) = 0.5 for every skill),

and the new row and the skills Phi are fine-tuned on the task's few
examples while the base theta_0 stays frozen: AdamW, 1000 steps of batch 8,
warm-up over 10% of the steps then linear decay, weight decay 1e-2 on the
skills (none on the allocation, which learns at its own, higher rate).

Modes (`FEW_SHOT_MODES`):

* "skills" (the paper): the new allocation rows and the skills train;
* "allocation": only the allocation trains, the skills stay as learned
  (the new task is a new combination of old skills);
* "average": the allocation stays fixed at p = 0.5 for every skill with the
  relaxation noise off, so every skill gets w_s = 1/S (the uniform average
  of the skills); the skills train.

Written for any Keras model that contains skill layers
(`layers.SkillLoRADense`, `SkillLoRAEinsumDense`, `SkillConv2D`, e.g.
`zoo.SkillBartSeq2SeqLM`); it knows no model family.

    new_ids = add_new_tasks(model, 1, mode="skills")
    few_shot_adapt(model, x, y, steps=1000, batch_size=8)

NOTE 1 (per-task adaptation): the paper adapts one held-out task at a time,
  each from the multitask weights. `add_new_tasks(model, n)` with n > 1
  adapts n tasks together (their rows are separate; the skills are
  shared); copy the model per task to follow the paper.
NOTE 2 (old rows): the old tasks' allocation rows are in the same variable
  as the new rows. They get zero gradients (no example of theirs is in the
  batch), and Adam with zero gradients and no weight decay leaves them
  exactly where they are (a test checks it); the skills they use do move
  in the "skills" and "average" modes, so the old tasks' outputs change.
NOTE 3 (state left behind): `add_new_tasks` changes the model for good: the
  base is frozen (variables and non-skill layers), the trainability of the
  allocation and skills is the mode's, and in "average" the skill layers'
  `gumbel_noise` is off. `few_shot_adapt` recompiles the model with the
  few-shot optimizer (KerasHub's sampler is kept).
"""

import inspect

import keras
import numpy as np

from layers.skill_allocation import _SkillAllocation
from training.optimizers import dual_speed_optimizer

FEW_SHOT_MODES = ("skills", "allocation", "average")
ALLOCATION_VARIABLES = ("skill_logits", "task_embeddings")
SKILL_VARIABLES = ("lora_a", "lora_b", "sft_deltas")
AVERAGE_ALLOCATIONS = ("learned", "moe", "hyper", "shared")


def skill_allocation_layers(model):
    """Every skill layer (a `_SkillAllocation`) inside `model`, in order."""
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
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def add_new_tasks(model, num_new_tasks=1, mode="skills", expert_rows=None):
    """Appends new tasks to every skill layer and freezes what `mode` keeps.

    Each skill layer gets `num_new_tasks` new allocation rows: logits 0
    (p = 0.5) for "learned" and "moe", fresh embeddings for "hyper" (set to
    1/S in "average"), `expert_rows` for "fixed", nothing for "shared". The
    model's own `add_tasks` is used when it has one (so that, e.g.,
    `SkillBartSeq2SeqLM` drops its compiled generate function).

    Then every weight that is not an allocation or a skill (the base
    theta_0) is frozen, and (module docstring):

        "skills":     allocation and skills trainable
        "allocation": allocation trainable, skills frozen
        "average":    allocation frozen, relaxation noise off, skills trainable

    Args:
        model: A Keras model containing skill layers.
        num_new_tasks: Positive integer, tasks to add.
        mode: One of `FEW_SHOT_MODES`.
        expert_rows: (num_new_tasks, num_skills) 0/1 array, for
            allocation="fixed" only.

    Returns:
        The new task ids, an int32 NumPy array.

    Raises:
        ValueError: an unknown mode, `num_new_tasks` < 1, no skill layer,
            a "private" allocation (Z = I cannot take a new task without a
            new skill: build a model with a fresh "shared" skill for it),
            "average" with a "fixed" or "private" allocation, or a frozen
            layer around the skill layers.

    Example:

    >>> import keras, numpy as np
    >>> from layers import SkillLoRADense
    >>> task_ids = keras.Input((), dtype="int32")
    >>> features = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8)(features)  # the base: frozen
    >>> outputs = SkillLoRADense(3, num_tasks=2, num_skills=4, rank=2)(
    ...     hidden, task_ids)
    >>> model = keras.Model([features, task_ids], outputs)
    >>> add_new_tasks(model, 1, mode="allocation")
    array([2], dtype=int32)
    >>> [v.name for v in model.trainable_variables]
    ['skill_logits']
    """
    _check_mode(mode)
    num_new_tasks = _positive_int(num_new_tasks, "num_new_tasks")
    skill_layers = skill_allocation_layers(model)
    if not skill_layers:
        raise ValueError(
            f"{type(model).__name__} has no skill layer (SkillLoRADense, "
            "SkillLoRAEinsumDense, SkillConv2D): nothing to add tasks to.")
    allocations = {layer.allocation for layer in skill_layers}
    if "private" in allocations:
        raise ValueError(
            "allocation='private' (Z = I) cannot add a task without a new "
            "skill: for a private baseline, adapt a model whose skill layers "
            "are allocation='shared' with one freshly initialised skill, on "
            "the same frozen base.")
    if mode == "average" and not allocations <= set(AVERAGE_ALLOCATIONS):
        raise ValueError(
            f"mode='average' needs allocations in {AVERAGE_ALLOCATIONS} (a "
            f"uniform mix of the skills); got {sorted(allocations)}.")
    if not all(layer.built for layer in skill_layers):
        raise ValueError("Build the model (call it once) before adding tasks.")

    if hasattr(model, "add_tasks"):
        new_ids = model.add_tasks(num_new_tasks, expert_rows)
    else:
        for layer in skill_layers:
            new_ids = layer.add_tasks(num_new_tasks, expert_rows)
    new_ids = np.asarray(new_ids, "int32")

    train_allocation = mode in ("skills", "allocation")
    train_skills = mode in ("skills", "average")
    skill_ids = {id(layer) for layer in skill_layers}
    containers = {  # layers with skill layers inside them
        id(outer) for outer in model._flatten_layers(include_self=True)
        if not isinstance(outer, _SkillAllocation)
        and any(id(inner) in skill_ids for inner in outer._flatten_layers())}
    for layer in model._flatten_layers(include_self=True):
        if isinstance(layer, _SkillAllocation):
            for sublayer in layer._flatten_layers(include_self=False):
                sublayer.trainable = False  # e.g. a wrapped EinsumDense
            for variable in _own_variables(layer):
                if variable.name in ALLOCATION_VARIABLES:
                    variable.trainable = train_allocation
                elif variable.name in SKILL_VARIABLES:
                    variable.trainable = train_skills
                else:
                    variable.trainable = False  # the base W0, b0; SFT masks
            if mode == "average":
                layer.gumbel_noise = False
                if layer.allocation == "hyper":
                    _set_rows(layer.task_embeddings, new_ids,
                              1.0 / layer.num_skills)
        elif id(layer) in containers:
            for variable in _own_variables(layer):
                variable.trainable = False
        else:
            layer.trainable = False  # a base layer: frozen with its sublayers

    wanted = [v for layer in skill_layers for v in _own_variables(layer) if v.trainable]
    trainable = {id(v) for v in model.trainable_variables}
    if any(id(v) not in trainable for v in wanted):
        raise ValueError(
            "A layer that contains the skill layers is frozen (trainable="
            "False), so the skills cannot train; unfreeze it (its own "
            "weights stay frozen) before adding tasks.")
    return new_ids


def _set_rows(variable, rows, value):
    table = np.array(keras.ops.convert_to_numpy(variable))
    table[rows] = value
    variable.assign(table)


def few_shot_optimizer(total_steps=1000, learning_rate=1e-3, allocation_learning_rate=0.1,
                       warmup_fraction=0.1, weight_decay=1e-2, clipnorm=0.1):
    """The paper's few-shot optimisation: `training.optimizers.dual_speed_optimizer`
    with a 10% warm-up and weight decay 1e-2 on the skills (Appendix A.2);
    the allocation logits at `allocation_learning_rate` without decay.

    >>> type(few_shot_optimizer(total_steps=100)).__name__
    'MultiOptimizer'
    """
    total_steps = _positive_int(total_steps, "total_steps")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1]; got {warmup_fraction}.")
    return dual_speed_optimizer(
        total_steps, learning_rate=learning_rate,
        allocation_learning_rate=allocation_learning_rate,
        weight_decay=weight_decay, warmup_fraction=warmup_fraction, clipnorm=clipnorm)


def _is_structure(data):
    """A dict, or a list/tuple of arrays (several inputs), not a list of rows."""
    if isinstance(data, dict):
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and (
        hasattr(data[0], "shape") or isinstance(data[0], (list, tuple, dict)))


def _as_array(data):
    if hasattr(data, "shape"):
        return np.asarray(keras.ops.convert_to_numpy(data))
    return np.asarray(data)


def _rows_of(data):
    """Number of rows (examples) of an array, a list or a structure of them."""
    while _is_structure(data):
        data = next(iter(data.values())) if isinstance(data, dict) else data[0]
    return len(_as_array(data))


def _take(data, index):
    """The rows `index` of every array of `data` (NumPy)."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: _take(value, index) for key, value in data.items()}
    if _is_structure(data):
        return type(data)(_take(value, index) for value in data)
    return _as_array(data)[index]


def _repeated_order(num_rows, total, seed):
    """`total` row indices: shuffled passes over the rows, as epochs would be."""
    rng = np.random.default_rng(seed)
    passes = -(-total // num_rows)
    return np.concatenate([rng.permutation(num_rows) for _ in range(passes)])[:total]


def few_shot_adapt(model, x, y=None, *, steps=1000, batch_size=8, optimizer=None,
                   loss=None, metrics=None, callbacks=None, verbose="auto",
                   seed=0, sample_weight=None, **fit_kwargs):
    """Fine-tunes `model` on a few examples for exactly `steps` steps.

    Call `add_new_tasks` first (it decides what trains). The model is
    recompiled with `optimizer` (default: `few_shot_optimizer(steps)`, the
    paper's) and `loss` (default: the compiled loss), so that the optimizer
    sees the new allocation rows. The examples are repeated in shuffled
    passes to `steps * batch_size` rows (a few-shot set is small) and
    `model.fit` runs one epoch over them, callbacks and progress bar
    included. A model with a `preprocessor` (a KerasHub task) given raw
    inputs (e.g. {"encoder_text", "decoder_text", "task_ids"}) has them
    preprocessed once, before repeating.

    Args:
        model: The model, after `add_new_tasks`.
        x, y, sample_weight: The few-shot examples: arrays, lists or dicts
            of them (all with the same number of rows).
        steps: Positive integer, optimizer steps (paper: 1000).
        batch_size: Positive integer (paper: 8).
        optimizer: A Keras optimizer; default `few_shot_optimizer(steps)`.
        loss, metrics: As in `compile`; `loss` defaults to `model.loss`.
        callbacks, verbose, **fit_kwargs: Passed to `fit`.
        seed: Seed of the order of the examples.

    Returns:
        The `History` of `fit`.

    Example:

    >>> import keras, numpy as np
    >>> from layers import SkillLoRADense
    >>> task_ids = keras.Input((), dtype="int32")
    >>> features = keras.Input((4,))
    >>> outputs = SkillLoRADense(1, num_tasks=2, num_skills=3, rank=2)(
    ...     features, task_ids)
    >>> model = keras.Model([features, task_ids], outputs)
    >>> model.compile(loss="mse")
    >>> (new_task,) = add_new_tasks(model, 1)
    >>> x = [np.ones((16, 4), "float32"), np.full((16,), new_task)]
    >>> history = few_shot_adapt(model, x, np.ones((16, 1)), steps=5,
    ...                          batch_size=4, verbose=0)
    >>> int(model.optimizer.iterations)
    5
    """
    steps = _positive_int(steps, "steps")
    batch_size = _positive_int(batch_size, "batch_size")
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "few_shot_adapt needs a loss: compile the model first or pass "
                "`loss`.")
    compile_kwargs = {"optimizer": optimizer or few_shot_optimizer(steps), "loss": loss}
    if metrics is not None:
        compile_kwargs["metrics"] = metrics
    if "sampler" in inspect.signature(model.compile).parameters and \
            getattr(model, "sampler", None) is not None:
        compile_kwargs["sampler"] = model.sampler  # keep KerasHub's sampler

    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is not None and y is None:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(preprocessor(x))
    num_rows = _rows_of(x)
    if num_rows < 1:
        raise ValueError("few_shot_adapt needs at least one example.")
    order = _repeated_order(num_rows, steps * batch_size, seed)
    x, y, sample_weight = (_take(x, order), _take(y, order), _take(sample_weight, order))

    model.compile(**compile_kwargs)
    if preprocessor is not None:
        model.preprocessor = None  # the examples are preprocessed already
    try:
        return model.fit(x, y, sample_weight=sample_weight, batch_size=batch_size,
                         epochs=1, shuffle=False, callbacks=callbacks,
                         verbose=verbose, **fit_kwargs)
    finally:
        if preprocessor is not None:
            model.preprocessor = preprocessor
