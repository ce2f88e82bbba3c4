"""Task-skill allocation shared by the Polytropon skill layers (private).

`SkillLoRADense` / `SkillLoRAEinsumDense` (layers/skill_lora_dense.py) and
`SkillConv2D` (layers/skill_conv.py) differ in how a task's skills change
their base layer, not in how a task chooses its skills. This module holds
what they share, written once:

* `_SkillAllocation`, the base layer: the allocation modes ("learned",
  "private", "shared", "fixed", "moe", "hyper"), their arguments and
  checks, the allocation logits or task embeddings, the mixing weights
  (Gumbel-sigmoid in training, sigmoid at inference, row-normalised per
  split), the allocation probabilities and metrics, few-shot `add_tasks`,
  and the task ids of a call (explicit or from `task_context`);
* `draw_sft_masks`, the random fixed masks of sparse (SFT) skills;
* `task_context`, `current_task_ids`, `skill_allocation_metrics` (public,
  re-exported by `layers` and by layers/skill_lora_dense.py).

The NOTE numbers cited here are those of layers/skill_lora_dense.py, which
documents the method (NOTE 5 inference, 6 noise, 7 metrics, 8 Task-MoE,
9 HyperFormer, 10 SFT masks, 11 few-shot).
"""

import contextlib
import math
import numbers
import threading

import keras
import numpy as np
from keras import ops

from layers.task_inputs import check_task_inputs, describe, positive_int

ALLOCATIONS = ("learned", "private", "shared", "fixed", "moe", "hyper")
_EPS = 1e-12  # row normalisation, as in the reference code
_UNIFORM_EPS = float(np.finfo(np.float32).eps)

# ---------------------------------------------------------------------------
# Task context (ids for layers called without them).
# ---------------------------------------------------------------------------
_context = threading.local()


@contextlib.contextmanager
def task_context(task):
    """Sets the task ids used by skill layers called with `task=None`.

    Contexts nest (the innermost wins) and are thread-local. This is the
    route for code that calls the adapted sublayers itself, such as
    KerasHub's `generate()`.

    Args:
        task: Integer task ids of shape (batch,).

    Example:

    >>> from layers import SkillLoRADense
    >>> layer = SkillLoRADense(4, num_tasks=2, num_skills=2, rank=1)
    >>> x = np.ones((2, 3), "float32")
    >>> with task_context(np.array([0, 1])):
    ...     y = layer(x)
    >>> bool(np.allclose(ops.convert_to_numpy(y),
    ...                  ops.convert_to_numpy(layer(x, np.array([0, 1])))))
    True
    """
    stack = getattr(_context, "stack", None)
    if stack is None:
        stack = _context.stack = []
    stack.append(task)
    try:
        yield task
    finally:
        stack.pop()


def current_task_ids():
    """The ids of the innermost `task_context`, or None.

    >>> current_task_ids() is None
    True
    """
    stack = getattr(_context, "stack", None)
    return stack[-1] if stack else None


# ---------------------------------------------------------------------------
# Allocation metrics (paper Eqs. 5-7).
# ---------------------------------------------------------------------------
def skill_allocation_metrics(probs):
    """Discreteness, sparsity and usage of an allocation probability matrix.

    Args:
        probs: Array of shape (rows, num_skills) with probabilities in
            [0, 1]; rows are tasks, or (task, split) pairs.

    Returns:
        A dict with "discreteness" (1 - mean binary entropy in bits: 1 for a
        binary matrix, 0 for all 0.5, NOTE 7), "sparsity" (mean of the
        rounded probabilities) and "usage" (entropy of the normalised column
        sums divided by log num_skills).

    Example:

    >>> skill_allocation_metrics(np.eye(2))
    {'discreteness': 1.0, 'sparsity': 0.5, 'usage': 1.0}
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (rows, num_skills); got {p.shape}.")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("probs must lie in [0, 1].")
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -(np.where(p > 0, p * np.log2(p), 0.0)
                 + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
    columns = p.sum(axis=0)
    num_skills = p.shape[1]
    if num_skills == 1:
        usage = 1.0  # NOTE 7
    elif columns.sum() == 0:
        usage = 0.0
    else:
        dist = columns / columns.sum()
        nonzero = dist[dist > 0]
        usage = float(-(nonzero * np.log(nonzero)).sum() / math.log(num_skills))
    return {
        "discreteness": float(1.0 - bits.mean()),
        "sparsity": float(np.round(p).mean()),
        "usage": usage,
    }


# ---------------------------------------------------------------------------
# Sparse (SFT) skills.
# ---------------------------------------------------------------------------
def check_sft_sparsity(sparsity):
    """`float(sparsity)` after checking it lies in [0, 1).

    >>> check_sft_sparsity(0.9)
    0.9
    >>> check_sft_sparsity(1.0)
    Traceback (most recent call last):
    ...
    ValueError: sft_sparsity must be in [0, 1); got 1.0.
    """
    if (isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real)
            or not 0.0 <= sparsity < 1.0):
        raise ValueError(f"sft_sparsity must be in [0, 1); got {sparsity!r}.")
    return float(sparsity)


def draw_sft_masks(num_skills, shape, sparsity, seed):
    """Random fixed 0/1 masks of sparse skills (NOTE 10), float32 NumPy.

    Drawn with NumPy so that they agree on every backend: one permutation
    per skill of the flattened `shape`, exactly round((1 - sparsity) *
    prod(shape)) ones per skill.

    Args:
        num_skills: Number of masks.
        shape: Shape of one mask (the shape of a skill delta).
        sparsity: Fraction of zeros in [0, 1).
        seed: Integer seed of `np.random.default_rng`.

    Returns:
        A float32 array (num_skills, *shape).

    Example:

    >>> masks = draw_sft_masks(2, (4, 5), 0.9, seed=0)
    >>> masks.shape, masks.reshape(2, -1).sum(1).tolist()
    ((2, 4, 5), [2.0, 2.0])
    """
    size = int(np.prod(shape))
    active = int(round((1.0 - sparsity) * size))
    rng = np.random.default_rng(seed)
    masks = np.zeros((num_skills, size), dtype="float32")
    for skill in range(num_skills):  # build time only
        masks[skill, rng.permutation(size)[:active]] = 1.0
    return masks.reshape((num_skills,) + tuple(shape))


# ---------------------------------------------------------------------------
# The allocation base layer.
# ---------------------------------------------------------------------------
class _SkillAllocation(keras.layers.Layer):
    """Task-skill allocation (paper Eqs. 2-3) of a Polytropon skill layer.

    Subclasses create their skills in `build` (calling
    `_build_allocation()` there), mix them with the weights of
    `allocation_weights(task_ids, training)` (batch, num_splits,
    num_skills), and add their own keys to `_allocation_config()` in
    `get_config`. `_name_prefix` (a class attribute, read on the exact
    class only) names instances "skill_lora_dense", "skill_lora_dense_1",
    ... where Keras's snake case would not read well.
    """

    _name_prefix = None

    def __init__(
        self,
        num_tasks,
        num_skills,
        num_splits=1,
        allocation="learned",
        temperature=1.0,
        gumbel_noise=True,
        top_k=2,
        expert_matrix=None,
        seed=None,
        logits_initializer=None,
        **kwargs,
    ):
        prefix = type(self).__dict__.get("_name_prefix")
        if kwargs.get("name") is None and prefix:  # not "skill_lo_ra_dense"
            uid = keras.backend.get_uid(prefix)
            kwargs["name"] = prefix if uid == 1 else f"{prefix}_{uid - 1}"
        super().__init__(**kwargs)
        self.num_tasks = positive_int(num_tasks, "num_tasks")
        self.num_skills = positive_int(num_skills, "num_skills")
        self.num_splits = positive_int(num_splits, "num_splits")
        if allocation not in ALLOCATIONS:
            raise ValueError(
                f"allocation must be one of {ALLOCATIONS}; got {allocation!r}.")
        self.allocation = allocation

    def _check_allocation_arguments(self, temperature, gumbel_noise, top_k,
                                    expert_matrix, seed, logits_initializer):
        """The allocation arguments' checks; subclasses call it in __init__
        after their own argument checks (so errors keep their order)."""
        num_tasks, num_skills = self.num_tasks, self.num_skills
        allocation = self.allocation
        if allocation == "private" and num_skills != num_tasks:
            raise ValueError(
                "allocation='private' (Z = I) needs num_skills == num_tasks; "
                f"got num_skills={num_skills}, num_tasks={num_tasks}.")
        if allocation == "shared" and num_skills != 1:
            raise ValueError(
                f"allocation='shared' (Z = 1) needs num_skills=1; got {num_skills}.")
        if allocation == "fixed":
            if expert_matrix is None:
                raise ValueError(
                    "allocation='fixed' needs expert_matrix, a (num_tasks, "
                    "num_skills) 0/1 array.")
            matrix = np.asarray(expert_matrix, dtype="float32")
            if matrix.shape != (num_tasks, num_skills):
                raise ValueError(
                    f"expert_matrix must have shape (num_tasks, num_skills) = "
                    f"({num_tasks}, {num_skills}); got {matrix.shape}.")
            if not np.all((matrix == 0) | (matrix == 1)):
                raise ValueError("expert_matrix must contain only 0 and 1.")
            self.expert_matrix = matrix
        elif expert_matrix is not None:
            raise ValueError("expert_matrix is only used with allocation='fixed'.")
        else:
            self.expert_matrix = None
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}.")
        self.temperature = float(temperature)
        self.gumbel_noise = bool(gumbel_noise)
        self.top_k = positive_int(top_k, "top_k")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.logits_initializer = keras.initializers.get(
            logits_initializer
            or keras.initializers.RandomUniform(-1e-3, 1e-3))

    def _allocation_config(self):
        return {
            "num_tasks": self.num_tasks,
            "num_skills": self.num_skills,
            "num_splits": self.num_splits,
            "allocation": self.allocation,
            "temperature": self.temperature,
            "gumbel_noise": self.gumbel_noise,
            "top_k": self.top_k,
            "expert_matrix": (None if self.expert_matrix is None
                              else self.expert_matrix.astype(int).tolist()),
            "seed": self.seed,
            "logits_initializer": keras.initializers.serialize(
                self.logits_initializer),
        }

    # -- weights -----------------------------------------------------------
    def _build_allocation(self):
        """The allocation logits ("learned", "moe") or task embeddings
        ("hyper"), (num_tasks, num_splits * num_skills); the other modes
        have no weights."""
        rows = self.num_splits * self.num_skills
        if self.allocation in ("learned", "moe"):
            self.skill_logits = self.add_weight(
                name="skill_logits", shape=(self.num_tasks, rows),
                initializer=self.logits_initializer, autocast=False)
        elif self.allocation == "hyper":
            self.task_embeddings = self.add_weight(
                name="task_embeddings", shape=(self.num_tasks, rows),
                initializer=self._embedding_initializer(), autocast=False)

    def _embedding_initializer(self):
        return keras.initializers.RandomNormal(
            stddev=1.0 / math.sqrt(self.num_skills), seed=self.seed)

    # -- allocation --------------------------------------------------------
    def _uniform_noise(self, shape):
        """U(0, 1) clipped as torch's clamp_probs (NOTE 6)."""
        return keras.random.uniform(
            shape, minval=_UNIFORM_EPS, maxval=1.0 - _UNIFORM_EPS,
            dtype="float32", seed=self.seed_generator)

    def _gumbel_sigmoid(self, logits):
        """The relaxed Bernoulli sample (paper Eq. 2), before normalisation.

        z = sigmoid((logits + log u - log(1 - u)) / temperature), u drawn
        per element by `_uniform_noise` (NOTE 6).
        """
        u = self._uniform_noise(ops.shape(logits))
        return ops.sigmoid((logits + ops.log(u) - ops.log1p(-u)) / self.temperature)

    def _rows(self, table, task_ids):
        # One-hot times the table, not a gather: on TensorFlow a gather's
        # gradient is IndexedSlices with one slice per example, and Keras's
        # Adam squares the slices before summing duplicates (measured: the
        # first step moved the logits 0.224 instead of lr = 0.1).
        one_hot = ops.one_hot(ops.cast(task_ids, "int32"), ops.shape(table)[0],
                              dtype=table.dtype)
        rows = ops.matmul(one_hot, table)
        return ops.reshape(rows, (-1, self.num_splits, self.num_skills))

    def allocation_weights(self, task_ids, training=False):
        """Mixing weights w (batch, num_splits, num_skills), float32.

        One row per entry of `task_ids`; in training with "learned" and
        `gumbel_noise` each row draws its own noise.
        """
        task_ids = ops.cast(task_ids, "int32")
        shape = (-1, self.num_splits, self.num_skills)
        if self.allocation == "learned":
            logits = self._rows(self.skill_logits, task_ids)
            if training and self.gumbel_noise:
                probs = self._gumbel_sigmoid(logits)  # NOTE 6
            else:
                probs = ops.sigmoid(logits)  # NOTE 5
            return probs / (ops.sum(probs, axis=-1, keepdims=True) + _EPS)
        if self.allocation == "hyper":
            return self._rows(self.task_embeddings, task_ids)  # NOTE 9
        if self.allocation == "moe":
            return self._moe_probs(self._rows(self.skill_logits, task_ids))
        if self.allocation == "private":
            one_hot = ops.one_hot(task_ids, self.num_skills, dtype="float32")
            return ops.broadcast_to(
                one_hot[:, None, :],
                (ops.shape(task_ids)[0], self.num_splits, self.num_skills))
        if self.allocation == "shared":
            return ops.ones(
                (ops.shape(task_ids)[0], self.num_splits, 1), dtype="float32")
        matrix = ops.convert_to_tensor(self.expert_matrix, dtype="float32")
        rows = ops.take(matrix, task_ids, axis=0)
        rows = rows / (ops.sum(rows, axis=-1, keepdims=True) + _EPS)
        rows = ops.broadcast_to(
            rows[:, None, :],
            (ops.shape(task_ids)[0], self.num_splits, self.num_skills))
        return ops.reshape(rows, shape)

    def _moe_probs(self, logits):
        probs = ops.softmax(logits, axis=-1)
        if self.top_k >= self.num_skills:
            return probs
        top_values, _ = ops.top_k(probs, self.top_k)  # NOTE 8
        keep = ops.cast(probs >= top_values[..., -1:], probs.dtype)
        kept = probs * keep
        return kept / ops.sum(kept, axis=-1, keepdims=True)

    def allocation_probabilities(self):
        """Inference allocation probabilities as NumPy (num_tasks, splits, skills).

        "learned": sigmoid(logits); "private": I; "shared": 1; "fixed": the
        expert matrix; "moe": top-k softmax. "hyper" has no probabilities.
        """
        if self.allocation == "hyper":
            raise ValueError(
                "allocation='hyper' uses continuous task embeddings, not "
                "allocation probabilities.")
        if not self.built:
            raise ValueError("Build the layer before reading its allocation.")
        shape = (self.num_tasks, self.num_splits, self.num_skills)
        if self.allocation == "learned":
            probs = ops.sigmoid(ops.reshape(self.skill_logits, shape))
        elif self.allocation == "moe":
            probs = self._moe_probs(ops.reshape(self.skill_logits, shape))
        elif self.allocation == "private":
            probs = np.broadcast_to(
                np.eye(self.num_tasks, dtype="float32")[:, None], shape)
        elif self.allocation == "shared":
            probs = np.ones(shape, "float32")
        else:
            probs = np.broadcast_to(self.expert_matrix[:, None], shape)
        return np.array(ops.convert_to_numpy(probs))

    def allocation_metrics(self):
        """Paper Eqs. 5-7 on `allocation_probabilities()` (NOTE 7)."""
        probs = self.allocation_probabilities()
        return skill_allocation_metrics(probs.reshape(-1, self.num_skills))

    # -- few-shot adaptation ----------------------------------------------
    def add_tasks(self, n, expert_rows=None):
        """Appends `n` tasks, keeping the existing rows (NOTE 11).

        New "learned"/"moe" rows have logits 0 (p = 0.5), new "hyper" rows
        N(0, 1/num_skills) embeddings. `expert_rows` (n, num_skills) 0/1 is
        required for "fixed" and refused by the other modes; "private"
        cannot grow. Returns the ids of the new tasks.
        """
        n = positive_int(n, "n")  # NOTE 11
        old_count = self.num_tasks
        if self.allocation == "private":
            raise ValueError(
                "allocation='private' cannot add tasks: Z = I would need new "
                "skills. Build a new layer with more skills instead.")
        if self.allocation == "fixed":
            if expert_rows is None:
                raise ValueError("allocation='fixed' needs expert_rows (n, num_skills).")
            rows = np.asarray(expert_rows, dtype="float32")
            if rows.shape != (n, self.num_skills) or not np.all(
                    (rows == 0) | (rows == 1)):
                raise ValueError(
                    f"expert_rows must be a 0/1 array of shape ({n}, "
                    f"{self.num_skills}); got shape {rows.shape}.")
            self.expert_matrix = np.concatenate([self.expert_matrix, rows])
        elif expert_rows is not None:
            raise ValueError("expert_rows is only used with allocation='fixed'.")
        if self.built and self.allocation in ("learned", "moe", "hyper"):
            name = "task_embeddings" if self.allocation == "hyper" else "skill_logits"
            old = getattr(self, name)
            new_shape = (n, self.num_splits * self.num_skills)
            if self.allocation == "hyper":
                extra = self._embedding_initializer()(new_shape)
            else:
                extra = ops.zeros(new_shape)
            value = ops.concatenate([ops.convert_to_tensor(old.value), extra], 0)
            self._replace_variable(name, old, value)
        self.num_tasks = old_count + n
        return list(range(old_count, self.num_tasks))

    def _replace_variable(self, name, old, value):
        # Keras has no public API to change a built layer's variable shape.
        # This uses three Keras internals (pinned: keras < 3.16 in
        # pyproject.toml): `_trainable_variables` / `_non_trainable_variables`
        # (the ordered variable lists that saving follows), `_untrack_variable`
        # and `_tracker`, which locks a built layer against new state;
        # unlocking it is the only way to `add_weight` the grown variable.
        # The store is the list the variable was created in: a variable
        # frozen later (`variable.trainable = False`, as few-shot adaptation
        # does) stays in `_trainable_variables`.
        in_trainable_store = any(v is old for v in self._trainable_variables)
        store = (self._trainable_variables if in_trainable_store
                 else self._non_trainable_variables)
        index = next(i for i, v in enumerate(store) if v is old)
        locked = self._tracker.locked
        self._tracker.unlock()
        try:
            self._untrack_variable(old)
            object.__delattr__(self, name)
            new = self.add_weight(
                name=name, shape=tuple(value.shape), initializer="zeros",
                trainable=in_trainable_store, autocast=False)
            setattr(self, name, new)
        finally:
            if locked:
                self._tracker.lock()
        new.assign(value)
        new.trainable = old.trainable
        # Keep the variable's position so saved weights load in order.
        position = next(i for i, v in enumerate(store) if v is new)
        store.insert(index, store.pop(position))

    # -- task ids ------------------------------------------------------------
    def _task_ids(self, inputs, task):
        """int32 ids (batch,) from `task` or the innermost `task_context`."""
        if task is None:
            task = current_task_ids()
            if task is None:
                raise ValueError(
                    f"{describe(self)} needs a task: call "
                    "it as layer(inputs, task) or inside task_context(task).")
        task, _ = check_task_inputs(self, inputs, task, num_tasks=self.num_tasks)
        return task

    def _check_task_id(self, task_id):
        if not self.built:
            raise ValueError("Build the layer before merging its kernel.")
        task_id = int(task_id)
        if not 0 <= task_id < self.num_tasks:
            raise ValueError(
                f"task id out of range: got {task_id}, expected an integer in "
                f"[0, {self.num_tasks}).")
        return task_id
