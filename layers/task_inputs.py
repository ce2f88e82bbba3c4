"""The one validator of task inputs shared by every task-conditioned layer.

Every layer of the project is called as

    layer(inputs, task, **options)

where `inputs` is a float tensor whose first axis is the batch and `task`
holds, per example, either an integer task id (shape `(batch,)`, any integer
dtype) or a float task descriptor (shape `(batch,) + descriptor_shape`: a
one-hot or soft task vector, a goal, an embedding). Layers that accept only
one of the two say so in their docstrings; `check_task_inputs` gives the
same clear `ValueError` for every kind of bad input on every backend:

* a task of the wrong kind (float where ids are needed, or the reverse),
* a wrong rank or descriptor size,
* a task batch that differs from the inputs' batch (no broadcasting of a
  single task: give one entry per example, e.g. `np.full(batch, task_id)`),
* ids out of `[0, num_tasks)` where their values are concrete
  (`layers.layers_backend.check_index_range`).

Integer ids of any dtype (uint8, int64, ...) come back as int32.
"""

import keras
from keras import ops

from layers.layers_backend import check_index_range


def is_integer(tensor):
    """Whether a tensor (or array) holds integers (signed or unsigned)."""
    return "int" in keras.backend.standardize_dtype(tensor.dtype)


def positive_int(value, name, minimum=1, allow_none=False):
    """`int(value)` after checking it is an integer >= `minimum`.

    >>> positive_int(3, "num_tasks")
    3
    >>> positive_int(0, "num_tasks")
    Traceback (most recent call last):
    ...
    ValueError: `num_tasks` must be an integer >= 1; got 0.
    """
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or int(value) != value
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` must be {'None or ' if allow_none else ''}an integer "
            f">= {minimum}; got {value!r}."
        )
    return int(value)


def describe(layer):
    """How error messages name a layer: its class and its name."""
    return f"{type(layer).__name__} '{layer.name}'"


def _accepted(num_tasks, descriptor_shape, descriptor_name):
    """What a layer accepts as its task, for error messages."""
    kinds = []
    if num_tasks is not None:
        kinds.append("integer task ids of shape (batch,)")
    if descriptor_shape is not None:
        sizes = ", ".join("?" if d is None else str(d) for d in descriptor_shape)
        kinds.append(f"a float {descriptor_name} of shape (batch, {sizes})")
    return " or ".join(kinds)


def check_task_inputs(
    layer,
    inputs,
    task,
    num_tasks=None,
    descriptor_shape=None,
    descriptor_name="task descriptor",
):
    """Validates `task` against `inputs`; returns `(task, is_ids)`.

    Args:
        layer: the calling layer (named in error messages).
        inputs: the layer's main input; its first axis is the batch.
        task: integer ids `(batch,)` or a float descriptor
            `(batch,) + descriptor_shape`.
        num_tasks: the number of tasks; None if the layer takes no ids.
        descriptor_shape: the shape of one float descriptor (a tuple whose
            entries may be None for "any size"); None if the layer takes
            no descriptors.
        descriptor_name: how messages name a float descriptor ("goal",
            "task embedding", ...).

    Returns:
        `(task, is_ids)`: int32 ids and True, or the float descriptor
        unchanged and False.

    Example:

    >>> layer = keras.layers.Identity(name="demo")
    >>> ids, is_ids = check_task_inputs(layer, np.ones((2, 3)),
    ...                                 np.array([0, 1], "uint8"), num_tasks=2)
    >>> is_ids, keras.backend.standardize_dtype(ids.dtype)
    (True, 'int32')
    >>> check_task_inputs(layer, np.ones((2, 3)), np.array([0, 1, 1]),
    ...                   num_tasks=2)
    Traceback (most recent call last):
    ...
    ValueError: Identity 'demo': got 3 task entries for a batch of 2 inputs; give one task per example (e.g. np.full(batch, task_id)).
    """
    if task is None:
        raise ValueError(
            f"{describe(layer)} needs a task: call it as layer(inputs, task)."
        )
    if not isinstance(task, keras.KerasTensor):
        task = ops.convert_to_tensor(task)
    task_shape = tuple(task.shape)
    inputs_batch = inputs.shape[0] if len(inputs.shape) else None
    if len(task_shape) and inputs_batch is not None and task_shape[0] is not None:
        if task_shape[0] != inputs_batch:
            raise ValueError(
                f"{describe(layer)}: got {task_shape[0]} task entries for a "
                f"batch of {inputs_batch} inputs; give one task per example "
                "(e.g. np.full(batch, task_id))."
            )
    if is_integer(task):
        if num_tasks is None or len(task_shape) != 1:
            raise ValueError(
                f"{describe(layer)} takes "
                f"{_accepted(num_tasks, descriptor_shape, descriptor_name)}; "
                f"got integer values of shape {task_shape}."
            )
        check_index_range(task, num_tasks)
        return ops.cast(task, "int32"), True
    expected = (None,) + tuple(descriptor_shape or ())
    if (
        descriptor_shape is None
        or len(task_shape) != len(expected)
        or any(e is not None and a is not None and a != e
               for a, e in zip(task_shape[1:], expected[1:], strict=True))
    ):
        dtype = keras.backend.standardize_dtype(task.dtype)
        raise ValueError(
            f"{describe(layer)} takes "
            f"{_accepted(num_tasks, descriptor_shape, descriptor_name)}; "
            f"got {dtype} values of shape {task_shape}."
        )
    return task, False
