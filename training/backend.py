"""The only backend-specific module of the project.

Everything else (layers, models, train steps) is written with `keras.ops` and
the two functions exported here:

* `value_and_grad(fn, has_aux=False)`: differentiate a function of a
  (nested) structure of tensors. JAX: `jax.value_and_grad`; TensorFlow:
  `tf.GradientTape`; PyTorch: `torch.autograd.grad`. Calls nest (the
  gradient of a function that itself takes gradients, as in second-order
  MAML) and compose with `keras.ops.stop_gradient` (first-order variants).
* `run_train_step(model, *args)` / `run_test_step(model, *args)`: adapt ONE
  stateless step function `model.compute_train_step(state, data)` to the
  shape of Keras's `train_step` on the active backend:

  - JAX: `train_step(state, data) -> (logs, state)`; Keras's JAX trainer
    jit-compiles it and keeps the state on device between steps.
  - TensorFlow: `train_step(data) -> logs` inside Keras's `tf.function`;
    variable values are read at the start and assigned at the end.
  - PyTorch: the same as TensorFlow, run eagerly under `torch.no_grad()`;
    `value_and_grad` switches gradient recording on only where it is needed.

NOTE 1 (torch): Keras's torch optimizers update variables in place with
  `torch._foreach_*` kernels, also inside `stateless_apply`. The wrapper
  `stateless_apply` below hands them copies, so a step really is a function
  of values on every backend.
NOTE 2 (torch): `create_graph=True` is used only when `value_and_grad` is
  called inside another `value_and_grad`; a plain training step records no
  graph of its gradients.
NOTE 3 (TensorFlow): `tf.IndexedSlices` gradients (from gathers) are made
  dense so that a step can do arithmetic on every gradient with `keras.ops`.
NOTE 4 (TensorFlow): Keras's TF optimizers refuse `stateless_apply`; see
  `stateless_apply` below.
NOTE 5 (TensorFlow): an unbuilt model is built at the first trace of the step.
"""

import threading

import keras
import numpy as np
from keras import tree

BACKEND = keras.backend.backend()

if BACKEND == "jax":
    import jax
elif BACKEND == "tensorflow":
    import tensorflow as tf
elif BACKEND == "torch":
    import torch
else:  # pragma: no cover - numpy/openvino have no gradients
    raise ImportError(
        f"The training core needs a backend with gradients (jax, tensorflow "
        f"or torch); KERAS_BACKEND is {BACKEND!r}. Install one with "
        f"`pip install modular-zoo[jax]` (or [tensorflow], [torch])."
    )

_nesting = threading.local()


def _depth():
    return getattr(_nesting, "depth", 0)


def _split_output(output, has_aux):
    if not has_aux:
        return output, None
    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise ValueError(
            "With has_aux=True the function must return a pair "
            f"(value, aux); it returned {type(output).__name__}."
        )
    return output[0], output[1]


def value_and_grad(fn, has_aux=False):
    """Returns a function computing `fn(params, ...)` and its gradient.

    The gradient is taken with respect to the first argument, `params`, a
    tensor or any nested structure (list, tuple, dict) of float tensors. The
    returned function has the signature of `fn` and returns
    `(value, grads)`, or `((value, aux), grads)` when `has_aux=True`, where
    `grads` has the structure of `params`. `value` must be a scalar.
    Parameters that do not influence `value` get zero gradients.

    Example (second-order gradient of a one-step inner SGD loop):

    >>> def inner_loss(w, x):
    ...     return keras.ops.sum((w * x) ** 2)
    >>> def outer_loss(w, x):
    ...     _, g = value_and_grad(inner_loss)(w, x)
    ...     fast_w = w - 0.1 * g
    ...     return inner_loss(fast_w, x)
    >>> loss, dw = value_and_grad(outer_loss)(keras.ops.ones(3), keras.ops.ones(3))
    """

    if BACKEND == "jax":
        return jax.value_and_grad(fn, has_aux=has_aux)

    def wrapped(params, *args, **kwargs):
        depth = _depth()
        _nesting.depth = depth + 1
        try:
            if BACKEND == "tensorflow":
                value, aux, grads = _tf_value_and_grad(
                    fn, has_aux, params, args, kwargs
                )
            else:
                value, aux, grads = _torch_value_and_grad(
                    fn, has_aux, params, args, kwargs, nested=depth > 0
                )
        finally:
            _nesting.depth = depth
        if BACKEND == "torch" and depth == 0:
            # Nothing outside differentiates these: free their graphs.
            value, aux = tree.map_structure(
                lambda t: t.detach() if isinstance(t, torch.Tensor) else t,
                (value, aux),
            )
        return ((value, aux), grads) if has_aux else (value, grads)

    return wrapped


def _tf_value_and_grad(fn, has_aux, params, args, kwargs):
    flat = [tf.convert_to_tensor(p) for p in tree.flatten(params)]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(flat)
        output = fn(tree.pack_sequence_as(params, flat), *args, **kwargs)
        value, aux = _split_output(output, has_aux)
    grads = tape.gradient(
        value, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    grads = [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
        for g in grads
    ]
    return value, aux, tree.pack_sequence_as(params, grads)


def _torch_value_and_grad(fn, has_aux, params, args, kwargs, nested):
    flat = []
    for p in tree.flatten(params):
        p = p.value if isinstance(p, keras.Variable) else p
        p = torch.as_tensor(p)
        # A tensor already in a graph (an outer parameter, or a fast weight
        # computed from one) keeps its history so the outer level can
        # differentiate through this gradient.
        flat.append(p if p.requires_grad else p.detach().requires_grad_(True))
    with torch.enable_grad():
        output = fn(tree.pack_sequence_as(params, flat), *args, **kwargs)
        value, aux = _split_output(output, has_aux)
        if value.requires_grad:
            grads = torch.autograd.grad(
                value,
                flat,
                create_graph=nested,
                allow_unused=True,
                materialize_grads=True,
            )
        else:
            grads = [torch.zeros_like(p) for p in flat]
    return value, aux, tree.pack_sequence_as(params, list(grads))


# TensorFlow: id(tensor) -> the variable whose current value that tensor is,
# so that writing a value back to the variable it was read from is skipped.
_tf_reads = threading.local()


def read_values(variables):
    """Current values of Keras variables as native tensors."""
    if BACKEND != "tensorflow":
        return [v.value for v in variables]
    values = [tf.convert_to_tensor(v.value) for v in variables]
    reads = getattr(_tf_reads, "map", None)
    if reads is not None:
        reads.update({id(t): v for t, v in zip(values, variables)})
    return values


def stateless_apply(
    optimizer, variables, optimizer_values, grads, trainable_values
):
    """`optimizer.stateless_apply` that never mutates its inputs (NOTE 1).

    `variables` are the Keras variables the optimizer was built with (the
    model's trainable variables), in the order of `trainable_values`.
    Returns `(new_trainable_values, new_optimizer_values)`.
    """
    if BACKEND == "torch":
        optimizer_values = [torch.clone(v) for v in optimizer_values]
        trainable_values = [torch.clone(v) for v in trainable_values]
    if BACKEND != "tensorflow":
        return optimizer.stateless_apply(
            optimizer_values, grads, trainable_values
        )
    # NOTE 4 (TensorFlow): Keras's TF optimizers refuse `stateless_apply`
    # (tf.distribute needs tf.Variables). Inside the step's tf.function we
    # load the values into the variables, apply, and read the results back;
    # automatic control dependencies order the reads after the updates.
    _assign(variables, trainable_values)
    _assign(optimizer.variables, optimizer_values)
    optimizer.apply(grads, variables)
    return read_values(variables), read_values(optimizer.variables)


def _assign(variables, values):
    reads = getattr(_tf_reads, "map", None) or {}
    for variable, value in zip(variables, values):
        if value is variable.value or reads.get(id(value)) is variable:
            continue
        variable.assign(value)


def _current_state(model, training):
    from training.step_model import StepState

    optimizer_variables = (
        model.optimizer.variables if training and model.optimizer else []
    )
    return StepState(
        trainable=read_values(model.trainable_variables),
        non_trainable=read_values(model.non_trainable_variables),
        optimizer=read_values(optimizer_variables),
        metrics=read_values(model.metrics_variables),
    )


def _write_state(model, state, training):
    _assign(model.trainable_variables, state.trainable)
    _assign(model.non_trainable_variables, state.non_trainable)
    if training and model.optimizer:
        _assign(model.optimizer.variables, state.optimizer)
    _assign(model.metrics_variables, state.metrics)


def _run_eager_or_graph(model, data, training):
    step = model.compute_train_step if training else model.compute_test_step
    if BACKEND == "torch":
        with torch.no_grad():
            state = _current_state(model, training)
            logs, state = step(state, data)
            _write_state(model, state, training)
        return logs
    # NOTE 5 (TensorFlow): without a tf.distribute strategy Keras defers
    # building to the first trace of the step, where its own train_step
    # builds by calling the model; a stateless step must build first.
    optimizer = model.optimizer if training else None
    if not model.built or (optimizer is not None and not optimizer.built):
        model._symbolic_build(data_batch=data)
    _tf_reads.map = {}
    try:
        state = _current_state(model, training)
        logs, state = step(state, data)
        _write_state(model, state, training)
    finally:
        _tf_reads.map = None
    return logs


def run_train_step(model, *args):
    """Keras `train_step` for the active backend, from `compute_train_step`."""
    from training.step_model import StepState

    if BACKEND == "jax":
        state, data = args
        logs, state = model.compute_train_step(StepState(*state), data)
        return logs, tuple(state)
    return _run_eager_or_graph(model, args[0], training=True)


def run_test_step(model, *args):
    """Keras `test_step` for the active backend, from `compute_test_step`."""
    from training.step_model import StepState

    if BACKEND == "jax":
        state, data = args
        trainable, non_trainable, metrics = state
        logs, state = model.compute_test_step(
            StepState(trainable, non_trainable, [], metrics), data
        )
        return logs, (state.trainable, state.non_trainable, state.metrics)
    return _run_eager_or_graph(model, args[0], training=False)


def check_index_range(indices, upper, what="task id"):
    """Raises ValueError if integer `indices` fall outside [0, upper).

    Checked wherever it costs no host synchronisation of an accelerator:
    concrete values on JAX and eager TensorFlow, CPU tensors on torch. On a
    torch accelerator the check is a device-side assert (`torch._assert_async`:
    the error surfaces at the next synchronisation). Under `jax.jit` and
    `tf.function` there is nothing concrete to check: out-of-range ids then
    follow the backend's gather semantics (JAX clamps or fills, TF-XLA clamps)
    and give wrong outputs silently, so validate ids in the input pipeline.
    """
    if isinstance(indices, keras.KerasTensor):
        return
    if isinstance(indices, (np.ndarray, list, tuple, int)):
        values = np.asarray(indices)
    elif BACKEND == "torch":
        if indices.device.type != "cpu":
            torch._assert_async(
                ((indices >= 0) & (indices < upper)).all(),
                f"{what} out of range [0, {upper})",
            )
            return
        values = indices.numpy()
    elif BACKEND == "jax":
        if isinstance(indices, jax.core.Tracer):
            return
        values = jax.device_get(indices)
    else:
        if not tf.executing_eagerly() or not hasattr(indices, "numpy"):
            return
        values = indices.numpy()
    if values.size and (values.min() < 0 or values.max() >= upper):
        bad = values[(values < 0) | (values >= upper)]
        raise ValueError(
            f"{what} out of range: got {bad.tolist()[:8]}, expected integers "
            f"in [0, {upper})."
        )
