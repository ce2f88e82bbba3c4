"""The only backend-specific module of the project.

Everything else (layers, models, train steps) is written with `keras.ops` and
the functions exported here:

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
    variable values are read at the start and the changed ones assigned at
    the end (NOTE 7).
  - PyTorch: the same as TensorFlow, run eagerly under `torch.no_grad()`;
    `value_and_grad` switches gradient recording on only where it is needed.
* `fori_loop(num_steps, body, init)`: a loop that compiles (scan on JAX,
  while on TensorFlow) and can be differentiated (meta-learning's inner
  loop).
* `stateless_scope`, `stateless_apply` and `step_variables`: the pieces
  `StepModel`'s stateless building blocks are made of.

NOTE 1 (torch): Keras's torch optimizers update the tensors they are given in
  place with `torch._foreach_*` kernels, also inside `stateless_apply`. The
  wrapper `stateless_apply` below hands them copies, so a step really is a
  function of values on every backend, except for values the top-level
  adapter donated (NOTE 6).
NOTE 2 (torch): `create_graph=True` is used only when `value_and_grad` is
  called inside another `value_and_grad`; a plain training step records no
  graph of its gradients, and its value, aux and gradients are detached.
NOTE 3 (TensorFlow): `tf.IndexedSlices` gradients (from gathers) are made
  dense so that a step can do arithmetic on every gradient with `keras.ops`.
NOTE 4 (TensorFlow): Keras's TF optimizers refuse `stateless_apply`; see
  `stateless_apply` below.
NOTE 5 (TensorFlow): an unbuilt model is built at the first trace of the step.
NOTE 6 (torch and TensorFlow, speed): donation. When the step promises not
  to read `state.trainable` or `state.optimizer` after its one optimizer
  update (the default step does; a subclass says so with
  `StepModel.donate_state = True`), the top-level adapter donates those
  values, as `jax.jit(donate_argnums=...)` does. torch: they are the
  variables' own tensors, which the optimizer then updates in place: no
  copy before the update, no assignment after it. TensorFlow: the
  optimizer's values are its variables (read where used, e.g. a loss
  scale) and the update returns the variables themselves: no read of every
  optimizer variable before the update and no read-back of every variable
  after it. Anything else (nested or explicit calls, values the adapter did
  not read) gets copies as in NOTE 1 and NOTE 4; a second update of a
  donated value raises. JAX: Keras's jit owns the buffers; only the error
  is the same. The copies and write-backs were ~20% of a torch 3x256 MLP
  step on this 2-core CPU.
NOTE 7 (speed): the variable lists of a step are read once per step
  (`step_variables`; Keras recomputes `model.trainable_variables` by walking
  the layers on every access); on torch `stateless_scope` maps variables to
  values without Keras's per-value conversion; a value that is still its
  variable's value is not written back (torch: the tensor read;
  TensorFlow: the latest read of, or load into, the variable).
"""

import os
import threading
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import keras
from keras import tree

from training.state import StepState

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

# Per-thread state of the adapter and of nested `value_and_grad` calls.
_local = threading.local()


def _depth():
    return getattr(_local, "depth", 0)


def _split_output(output, has_aux):
    """`(value, aux)` from what a differentiated function returned."""
    if has_aux:
        if not (isinstance(output, (tuple, list)) and len(output) == 2):
            what = type(output).__name__
            if isinstance(output, (tuple, list)):
                what = f"a {what} of length {len(output)}"
            raise ValueError(
                "With has_aux=True the function must return a pair "
                f"(value, aux); it returned {what}."
            )
        value, aux = output
    else:
        value, aux = output, None
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) != 0:
        hint = (
            " (pass has_aux=True to return (value, aux))"
            if isinstance(value, (tuple, list)) and not has_aux
            else ""
        )
        raise ValueError(
            "value_and_grad differentiates a scalar: the function's value "
            f"must be a tensor of shape (); got {type(value).__name__} "
            f"with shape {None if shape is None else tuple(shape)}{hint}."
        )
    return value, aux


def value_and_grad(fn, has_aux=False):
    """Returns a function computing `fn(params, ...)` and its gradient.

    The gradient is taken with respect to the first argument, `params`, a
    tensor or any nested structure (list, tuple, dict) of float tensors.
    Parameters that do not influence the value get zero gradients. Calls
    nest: a function that itself calls `value_and_grad` can be
    differentiated (second order), and `keras.ops.stop_gradient` cuts a
    path (first-order variants). On torch a call that is not inside another
    one records no graph of its gradient (NOTE 2).

    Args:
        fn: Callable `fn(params, *args, **kwargs)` returning a scalar tensor,
            or a pair `(scalar, aux)` when `has_aux=True`; `aux` is any
            structure returned as it is (not differentiated).
        has_aux: Boolean, whether `fn` returns `(value, aux)`.

    Returns:
        A function with the signature of `fn` returning `(value, grads)`,
        or `((value, aux), grads)` when `has_aux=True`; `grads` has the
        structure of `params`. It raises a `ValueError` if the value is not
        a scalar or, with `has_aux=True`, if `fn` does not return a pair.

    Example:

    Second-order gradient of a one-step inner SGD loop, as in MAML:
    with `inner(w) = sum((w * x) ** 2)` and `w' = w - 0.1 * inner'(w)`,
    `outer(w) = inner(w') = sum((0.8 w) ** 2)` at `x = 1`, so
    `d outer / dw = 2 * 0.64 * w`.

    >>> def inner_loss(w, x):
    ...     return ops.sum((w * x) ** 2)
    >>> def outer_loss(w, x):
    ...     _, g = value_and_grad(inner_loss)(w, x)
    ...     return inner_loss(w - 0.1 * g, x)
    >>> loss, dw = value_and_grad(outer_loss)(ops.ones(3), ops.ones(3))
    >>> print(np.round(ops.convert_to_numpy(dw), 4))
    [1.28 1.28 1.28]

    With `has_aux=True` the function returns `(value, aux)`:

    >>> def loss_with_prediction(w):
    ...     prediction = 2.0 * w
    ...     return ops.sum(prediction), prediction
    >>> (loss, prediction), dw = value_and_grad(
    ...     loss_with_prediction, has_aux=True)(ops.ones(2))
    >>> float(loss), ops.convert_to_numpy(dw).tolist()
    (4.0, [2.0, 2.0])
    """

    if BACKEND == "jax":

        def checked(*args, **kwargs):
            output = fn(*args, **kwargs)
            _split_output(output, has_aux)  # the same errors on every backend
            return output

        return jax.value_and_grad(checked, has_aux=has_aux)

    def wrapped(params, *args, **kwargs):
        depth = _depth()
        _local.depth = depth + 1
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
            _local.depth = depth
        if BACKEND == "torch" and depth == 0:
            # NOTE 2: nothing outside differentiates these: free their graphs.
            value, aux = _detach(value), _detach(aux)
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
    grads = [  # NOTE 3
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
        for g in grads
    ]
    return value, aux, tree.pack_sequence_as(params, grads)


def _detach(x):
    """`x` with every torch tensor detached (plain containers walked here:
    `keras.tree` costs more than the rest of a small eager step's core)."""
    if isinstance(x, torch.Tensor):
        return x.detach() if x.requires_grad else x
    if x is None or isinstance(x, (int, float, str, bool)):
        return x
    if type(x) is list:
        return [_detach(v) for v in x]
    if type(x) is tuple:
        return tuple(_detach(v) for v in x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a NamedTuple
        return type(x)(*(_detach(v) for v in x))
    if type(x) is dict:
        return {k: _detach(v) for k, v in x.items()}
    return tree.map_structure(_detach, x)


def _flatten(params):
    """`(flat, pack)`; a flat list or tuple of tensors skips `keras.tree`."""
    if type(params) in (list, tuple) and all(
        isinstance(p, (torch.Tensor, keras.Variable)) for p in params
    ):
        return list(params), (list if type(params) is list else tuple)
    return tree.flatten(params), lambda f: tree.pack_sequence_as(params, f)


def _torch_value_and_grad(fn, has_aux, params, args, kwargs, nested):
    flat_params, pack = _flatten(params)
    flat = []
    for p in flat_params:
        p = p.value if isinstance(p, keras.Variable) else p
        if not isinstance(p, torch.Tensor):
            p = torch.as_tensor(p)
        # Inside another `value_and_grad`, a tensor already in a graph (an
        # outer parameter, a fast weight computed from one) keeps its
        # history so that the outer level can differentiate through this
        # gradient. At the top level nothing differentiates through it
        # (NOTE 2), so every input is a fresh leaf: a view of a variable
        # taken under `no_grad` (which claims to require grad but is cut
        # from its base) would otherwise get zero gradients.
        if nested and p.requires_grad:
            flat.append(p)
        else:
            flat.append(p.detach().requires_grad_(True))
    with torch.enable_grad():
        output = fn(pack(flat), *args, **kwargs)
        value, aux = _split_output(output, has_aux)
        if value.requires_grad:
            grads = torch.autograd.grad(
                value,
                flat,
                create_graph=nested,  # NOTE 2
                allow_unused=True,
                materialize_grads=True,
            )
        else:
            grads = [torch.zeros_like(p) for p in flat]
    return value, aux, pack(list(grads))


def fori_loop(num_steps, body, init):
    """`body(step, carry) -> carry` applied `num_steps` times, compiled.

    A differentiable loop (second-order meta-learning differentiates
    through it). JAX: `jax.lax.fori_loop` with static bounds (a `scan`,
    reverse-differentiable). TensorFlow: `tf.while_loop` with
    `maximum_iterations`, which XLA needs to differentiate a loop. torch: a
    Python loop (eager). `step` is an int32 scalar tensor on JAX and
    TensorFlow, a Python int on torch.

    Args:
        num_steps: Python int >= 0.
        body: Callable `(step, carry) -> carry`, the carry a structure of
            tensors of fixed shapes.
        init: The initial carry.

    Returns:
        The final carry.

    Example:

    >>> ops.convert_to_numpy(fori_loop(3, lambda step, x: 2.0 * x,
    ...                                ops.ones(()))).item()
    8.0
    """
    if BACKEND == "jax":
        return jax.lax.fori_loop(0, num_steps, body, init)
    if BACKEND == "tensorflow":
        return tf.while_loop(
            lambda step, carry: step < num_steps,
            lambda step, carry: (step + 1, body(step, carry)),
            (tf.constant(0, "int32"), init),
            maximum_iterations=num_steps,
        )[1]
    carry = init
    for step in range(num_steps):
        carry = body(step, carry)
    return carry


# -- Stateless building blocks. -------------------------------------------


class StepVariables(NamedTuple):
    """The Keras variables that the four lists of a `StepState` follow."""

    trainable: list
    non_trainable: list
    optimizer: list
    metrics: list


def _read_variables(model, training):
    optimizer = getattr(model, "optimizer", None) if training else None
    return StepVariables(
        trainable=model.trainable_variables,
        non_trainable=model.non_trainable_variables,
        optimizer=list(optimizer.variables) if optimizer else [],
        metrics=model.metrics_variables,
    )


def step_variables(model):
    """The variable lists of `model`, read once per adapter step (NOTE 7).

    Args:
        model: A `keras.Model`.

    Returns:
        A `StepVariables`: inside `run_train_step`/`run_test_step` of
        `model` the lists the adapter read at the start of the step
        (`optimizer` is empty in a test step); elsewhere the lists read
        from the model now.
    """
    cached = getattr(_local, "step", None)
    if cached is not None and cached[0] is model:
        return cached[1]
    return _read_variables(model, training=True)


def _paired(variables, values):
    """`(variables, values)` as lists of equal length, or a ValueError."""
    variables, values = list(variables), list(values)
    if len(variables) != len(values):
        raise ValueError(
            f"Expected {len(variables)} values for the variables, "
            f"got {len(values)}."
        )
    return variables, values


if BACKEND == "torch":

    def stateless_scope(variables, values, collect_losses=False):
        """A `keras.StatelessScope` mapping `variables` to `values`.

        NOTE 7: Keras's constructor converts every value
        (`convert_to_tensor`, dtype and shape checks), which is most of the
        cost of a scope in torch's eager step. Torch tensors of the
        variable's dtype and shape (what a `StepState` holds) are mapped as
        they are; anything else takes Keras's conversion.

        Args:
            variables: Keras variables.
            values: Their values, one per variable.
            collect_losses: Boolean, whether the scope collects the losses
                added by `add_loss` (read them with `layer.losses` inside).

        Returns:
            The scope, to be entered with `with`.
        """
        variables, values = _paired(variables, values)
        fast, slow = {}, []
        for variable, value in zip(variables, values):
            if (
                isinstance(value, torch.Tensor)
                and value.dtype == _torch_dtype(variable)
                and value.shape == variable.shape
            ):
                fast[id(variable)] = value
            else:
                slow.append((variable, value))
        scope = keras.StatelessScope(
            state_mapping=slow, collect_losses=collect_losses
        )
        # Keras internal: `state_mapping` is the dict (id(variable) ->
        # value) that the constructor fills after converting each value.
        scope.state_mapping.update(fast)
        return scope

    _TORCH_DTYPES = {}

    def _torch_dtype(variable):
        # Keras internal: `_dtype` is the variable's own dtype; the public
        # `Variable.dtype` also resolves autocasting on every access.
        # Keras's dtype names are torch's attribute names ("float32",
        # "bfloat16", "int64", "bool"...); an unknown one takes the slow path.
        name = variable._dtype
        dtype = _TORCH_DTYPES.get(name)
        if dtype is None:
            dtype = _TORCH_DTYPES[name] = getattr(torch, name, name)
        return dtype

else:

    def stateless_scope(variables, values, collect_losses=False):
        """A `keras.StatelessScope` mapping `variables` to `values`.

        On JAX and TensorFlow the scope is built once per trace, so Keras's
        own constructor (which converts and checks every value) is used.

        Args:
            variables: Keras variables.
            values: Their values, one per variable (a variable given as
                its own value is left unmapped).
            collect_losses: Boolean, whether the scope collects the losses
                added by `add_loss`.

        Returns:
            The scope, to be entered with `with`.
        """
        variables, values = _paired(variables, values)
        # A variable given as its own value is read where it is used
        # (backend NOTE 6 on TensorFlow), not when the scope is built.
        return keras.StatelessScope(
            state_mapping=[
                (k, v) for k, v in zip(variables, values) if v is not k
            ],
            collect_losses=collect_losses,
        )


def scope_values(scope, variables, defaults):
    """The values of `variables` in `scope` after it ran.

    Args:
        scope: A `keras.StatelessScope` that has been exited.
        variables: Keras variables.
        defaults: Values for the variables the scope neither mapped nor
            assigned.

    Returns:
        A list of values, one per variable.
    """
    new_values = []
    for variable, default in zip(variables, defaults):
        value = scope.get_current_value(variable)
        new_values.append(default if value is None else value)
    return new_values


def _take_donated(values):
    """NOTE 6: which of `values` the adapter donated; marks them used up."""
    donated = getattr(_local, "donated", None)
    if not donated:
        return [False] * len(values)
    taken = []
    for v in values:
        key = id(v)
        if key not in donated:
            taken.append(False)
            continue
        if donated[key] is None:
            raise ValueError(
                "A value of the step's state reached a second optimizer "
                "update after the first one updated it in place: a step "
                "that donates its state (the default step, or a model "
                "with `donate_state = True`) makes one `apply_gradients` "
                "call and reads neither `state.trainable` nor "
                "`state.optimizer` after it. Set `donate_state = False` "
                "to keep the inputs."
            )
        donated[key] = None  # used up
        taken.append(True)
    return taken


def _torch_private(values):
    """NOTE 1 / NOTE 6: copies of `values`, except the donated ones."""
    return [
        v if donated else torch.clone(v)
        for v, donated in zip(values, _take_donated(values))
    ]


def stateless_apply(
    optimizer, variables, optimizer_values, grads, trainable_values
):
    """`optimizer.stateless_apply` that never mutates its inputs (NOTE 1).

    Args:
        optimizer: A built `keras.optimizers.Optimizer`.
        variables: The Keras variables the optimizer was built with (the
            model's trainable variables), in the order of
            `trainable_values`.
        optimizer_values: Values of `optimizer.variables`.
        grads: Gradients, one per trainable value.
        trainable_values: Values of `variables`.

    Returns:
        `(new_trainable_values, new_optimizer_values)`.
    """
    if BACKEND == "jax":
        # Keras's jit owns the buffers; the bookkeeping only gives a misused
        # donation the same error as on the other backends.
        _take_donated(list(trainable_values) + list(optimizer_values))
        return optimizer.stateless_apply(
            optimizer_values, grads, trainable_values
        )
    optimizer_variables = optimizer.variables
    if BACKEND == "torch":
        optimizer_values = _torch_private(optimizer_values)
        trainable_values = _torch_private(trainable_values)
        with stateless_scope(
            list(variables) + list(optimizer_variables),
            list(trainable_values) + list(optimizer_values),
        ) as scope:
            optimizer.apply(grads)
        return (
            scope_values(scope, variables, trainable_values),
            scope_values(scope, optimizer_variables, optimizer_values),
        )
    # NOTE 4 (TensorFlow): Keras's TF optimizers refuse `stateless_apply`
    # (tf.distribute needs tf.Variables). Inside the step's tf.function we
    # load the values into the variables, apply, and read the results back;
    # automatic control dependencies order the reads after the updates.
    # Outside a step (an explicit call) the variables get their values back.
    outside = getattr(_local, "current", None) is None
    all_variables = list(variables) + list(optimizer_variables)
    if outside:
        _local.current = {}
        saved = read_values(all_variables)
    try:
        donated = _take_donated(
            list(trainable_values) + list(optimizer_values)
        )
        _assign(variables, trainable_values)
        _assign(optimizer_variables, optimizer_values)
        optimizer.apply(grads, variables)
        for variable in all_variables:  # earlier reads are stale now
            _local.current.pop(id(variable), None)
        if donated and all(donated):
            # NOTE 6: the step reads none of these again before the adapter
            # writes them back, which the variables themselves make a
            # no-op: no read-back of every variable.
            return list(variables), list(optimizer_variables)
        new_values = read_values(variables), read_values(optimizer_variables)
        if outside:
            _assign(all_variables, saved)
        return new_values
    finally:
        if outside:
            _local.current = None


# -- The adapters Keras calls. --------------------------------------------


def read_values(variables):
    """Current values of Keras variables as native tensors.

    On TensorFlow inside a step, each read is remembered as its variable's
    current value until the variable changes, so that writing it back is
    skipped (NOTE 7).

    Args:
        variables: Keras variables.

    Returns:
        A list of native tensors.
    """
    if BACKEND != "tensorflow":
        return [v.value for v in variables]
    values = [tf.convert_to_tensor(v.value) for v in variables]
    current = getattr(_local, "current", None)
    if current is not None:
        current.update((id(v), t) for v, t in zip(variables, values))
    return values


def _is_current(variable, value):
    """Whether `value` is what `variable` holds now (TensorFlow, NOTE 7)."""
    if value is variable:
        return True
    current = getattr(_local, "current", None)
    return current is not None and current.get(id(variable)) is value


def _assign(variables, values):
    current = getattr(_local, "current", None)
    for variable, value in zip(variables, values, strict=True):
        if not _is_current(variable, value):
            variable.assign(value)
            if current is not None:
                current[id(variable)] = value


def _write_back(variables, old_values, new_values):
    """Assigns the values that changed (NOTE 7).

    torch: a value is unchanged when it is the tensor read (nothing but a
    donated update changes a variable during a step). TensorFlow: when it is
    the variable's current value (nested `stateless_apply` calls load other
    values into the variables).
    """
    for variable, old, new in zip(
        variables, old_values, new_values, strict=True
    ):
        if BACKEND == "tensorflow":
            if _is_current(variable, new):
                continue
        elif new is old or new is variable:
            continue
        variable.assign(new)


@contextmanager
def _in_step(model, variables, donated_state=None):
    """The step's variable lists (NOTE 7) and the values it donates (NOTE 6)
    for the duration of one adapter step."""
    _local.step = (model, variables)
    if donated_state is not None:
        _local.donated = dict.fromkeys(
            map(id, donated_state.trainable + donated_state.optimizer), True
        )
    try:
        yield
    finally:
        _local.step = _local.donated = None


def _run_eager_or_graph(model, data, training):
    step = model.compute_train_step if training else model.compute_test_step
    if BACKEND == "tensorflow":
        # NOTE 5 (TensorFlow): without a tf.distribute strategy Keras defers
        # building to the first trace of the step, where its own train_step
        # builds by calling the model; a stateless step must build first.
        # Keras internal: `_symbolic_build` is what Keras's trainers call to
        # build a model and its optimizer and metrics from a batch.
        optimizer = model.optimizer if training else None
        if not model.built or (optimizer is not None and not optimizer.built):
            model._symbolic_build(data_batch=data)
    variables = _read_variables(model, training)
    donate = training and model._donates_state()  # NOTE 6
    _local.current = {} if BACKEND == "tensorflow" else None
    try:
        with torch.no_grad() if BACKEND == "torch" else nullcontext():
            if BACKEND == "tensorflow" and donate:
                # NOTE 6: the optimizer's values are its variables, read
                # where used (a loss scale) instead of all at the start.
                state = StepState(
                    read_values(variables.trainable),
                    read_values(variables.non_trainable),
                    list(variables.optimizer),
                    read_values(variables.metrics),
                )
            else:
                state = StepState(*(read_values(v) for v in variables))
            with _in_step(model, variables, state if donate else None):
                logs, new_state = step(state, data)
            for lists in zip(variables, state, new_state, strict=True):
                _write_back(*lists)
    finally:
        _local.current = None
    return logs


def run_train_step(model, *args):
    """Keras `train_step` for the active backend, from `compute_train_step`."""
    if BACKEND == "jax":
        state = StepState(*args[0])
        donated = state if model._donates_state() else None
        with _in_step(model, _read_variables(model, True), donated):
            logs, state = model.compute_train_step(state, args[1])
        return logs, tuple(state)
    return _run_eager_or_graph(model, args[0], training=True)


def run_test_step(model, *args):
    """Keras `test_step` for the active backend, from `compute_test_step`."""
    if BACKEND == "jax":
        state, data = args
        trainable, non_trainable, metrics = state
        with _in_step(model, _read_variables(model, training=False)):
            logs, state = model.compute_test_step(
                StepState(trainable, non_trainable, [], metrics), data
            )
        return logs, (state.trainable, state.non_trainable, state.metrics)
    return _run_eager_or_graph(model, args[0], training=False)


def keep_tensorflow_off_accelerators():
    """Hides the GPUs from TensorFlow when it only feeds `tf.data` pipelines
    (JAX and torch backends), so that it does not reserve the accelerator
    memory the model needs. A no-op on the TensorFlow backend, and once
    TensorFlow has initialised its devices."""
    if keras.backend.backend() == "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow has started already: leave it.
        pass


def live_values(model):
    """`(trainable, non_trainable)` values of `model` as the step sees them
    now, for acting between steps inside `fit`.

    On JAX, Keras's trainer keeps the state of an epoch in
    `model._jax_state` (keras 3.15 internal, reference-facts "Keras JAX
    trainer") and writes it back to the variables only at the end of the
    epoch; reading it costs nothing, where `jax_state_sync()` would write
    every variable back and make the next step re-read them. TensorFlow and
    torch update the variables in place.
    """
    state = getattr(model, "_jax_state", None)
    if keras.backend.backend() == "jax" and state:
        return (list(state["trainable_variables"]),
                list(state["non_trainable_variables"]))
    return ([v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables])


def compile_function(fn):
    """`fn` compiled for repeated calls outside a train step (acting in an
    environment between updates): `jax.jit` on JAX, `tf.function` with XLA
    on TensorFlow; torch runs it eagerly as it is.

    `fn` must be a function of tensors (nested lists allowed) written with
    `keras.ops`, reading no variable outside a `stateless_scope` of its
    arguments: a compiled function captures a variable's value at tracing.
    Eager calls of a small Keras actor cost ~7 ms per call here (one Python
    dispatch per op and per layer), the compiled call a fraction of that.
    """
    if BACKEND == "jax":
        return jax.jit(fn)
    if BACKEND == "tensorflow":
        return tf.function(fn, jit_compile=True, reduce_retracing=True)
    return fn


def set_cpu_threads(threads=None):
    """Sets the number of intra-op CPU threads of the backend and returns it.

    `threads=None` chooses: one thread for torch on a machine without a GPU
    and with at most 4 cores (reference-facts "Speed anchors": on a 2-core
    CPU under load, eager torch ran 7-8x slower with 2 intra-op threads than
    with one); otherwise the backend's own default (returns None).
    TensorFlow accepts the setting only before it initialises; JAX's CPU
    thread pool is fixed when it starts (XLA_FLAGS), so both are left
    alone when that has happened.
    """
    if threads is None:
        if BACKEND != "torch" or torch.cuda.is_available() or (os.cpu_count() or 1) > 4:
            return None
        threads = 1
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1; got {threads}.")
    if BACKEND == "torch":
        torch.set_num_threads(threads)
    elif BACKEND == "tensorflow":
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow has started already.
            return None
    else:
        return None
    return threads
