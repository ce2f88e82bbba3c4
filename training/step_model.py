"""`StepModel`: write a training step once, as a function of values.

A subclass overrides `compute_train_step(state, data)` (and optionally
`compute_test_step`), a pure function

    (StepState of tensors, batch) -> (logs dict, new StepState)

written with `keras.ops`, `self.stateless_call`, `training.value_and_grad`
and `self.apply_gradients`. `training.backend` turns it into Keras's
`train_step`/`test_step` on JAX, TensorFlow and PyTorch, so `fit`,
`evaluate`, callbacks, `compile(jit_compile=...)`, `steps_per_execution`
and distribution keep working. The default step is ordinary supervised
learning and reproduces Keras's built-in `train_step` (losses from
`add_loss` and regularisers, non-trainable updates such as BatchNorm's
moving statistics, sample weights, loss scaling, per-output loss metrics).

Several optimizers: pass a `keras.optimizers.MultiOptimizer` to `compile`
(variable-path regexes -> optimizers, e.g. actor / critic / temperature, or
a fast learning rate for allocation logits and a slow one for skills);
`apply_gradients` routes each gradient to its optimizer.

NOTE 1: Keras turns `SomeModel(inputs, outputs)` into a functional model by
  rewriting the bases of SomeModel and of all its ancestors in place
  (`inject_functional_model_class`), which would turn StepModel itself into
  a functional class and break every later subclassed model. Like
  `keras.Model`, StepModel instead instantiates a functional subclass:
  `FunctionalStepModel` for StepModel, a cached `(Subclass, Functional)`
  class for a subclass.
NOTE 2 (speed): `stateless_call` is Keras's, run inside the cheaper scope of
  `training.backend.stateless_scope` with the variable lists read once per
  step (backend NOTE 7); the call itself is what Keras's
  `Layer.stateless_call` runs inside its scope (keras 3.15).
NOTE 3: `stateless_loss` runs the forward pass and the compiled loss in ONE
  stateless scope that collects losses, so `Layer.losses` inside
  `compute_loss` sees the `add_loss`/activity-regulariser losses of this
  forward pass and the regularisers see the state's weights (Keras's JAX
  trainer needs `_losses_override` for that), and the per-output loss
  metrics that `compute_loss` updates are returned with the state.
"""

from typing import NamedTuple

import keras
from keras import tree

from training import backend
from training.state import StepState

# NOTE 1. Keras internals: the functional model class and the test Keras's
# own `Model.__new__` uses to recognise `Model(inputs, outputs)`.
from keras.src.models.functional import Functional as _Functional  # noqa: E402
from keras.src.models.model import functional_init_arguments  # noqa: E402


_FUNCTIONAL_VARIANTS = {}


def _is_functional_call(args, kwargs):
    """`Model(inputs, outputs)` with symbolic inputs (NOTE 1); a subclass
    whose own constructor takes two positional values is not one."""
    if not functional_init_arguments(args, kwargs):
        return False
    inputs = args[0] if args else kwargs.get("inputs")
    return any(isinstance(t, keras.KerasTensor) for t in tree.flatten(inputs))


def _batch_size(x):
    return keras.ops.shape(next(t for t in tree.flatten(x) if t is not None))[0]


class LossAux(NamedTuple):
    """What `StepModel.stateless_loss` returns besides the (scaled) loss."""

    unscaled_loss: object
    y_pred: object
    non_trainable: list
    metrics: list


@keras.saving.register_keras_serializable(package="modular_zoo")
class StepModel(keras.Model):
    """A `keras.Model` whose train and test steps are written once.

    Override `compute_train_step(state, data) -> (logs, new_state)` (and
    optionally `compute_test_step`) with `keras.ops`, `self.stateless_call`,
    `training.value_and_grad` and `self.apply_gradients`; `state` is a
    `training.StepState` of tensors. The same code then runs under Keras's
    `fit`/`evaluate` on JAX, TensorFlow and PyTorch. Without an override the
    step is Keras's own supervised step (`fit` histories and weights equal
    `keras.Model`'s).

    A step is a function of values: it never mutates `state`. On torch the
    top-level step of `fit` may let the optimizer update the variables in
    place instead of copies when the step promises not to read
    `state.trainable` or `state.optimizer` after its one `apply_gradients`
    call: the default step does, and a subclass says so with
    `donate_state = True` (backend NOTE 6).

    Args:
        *args: Positional arguments of `keras.Model`: `inputs, outputs` for
            a functional model, nothing for a subclassed one.
        **kwargs: Keyword arguments of `keras.Model`, such as `name`.

    Example:

    A regression step with an L1 loss, written once for every backend
    (zero initial weights make the losses exact):

    >>> from training import StepModel, StepState, value_and_grad
    >>> class L1Model(StepModel):
    ...     def compute_train_step(self, state, data):
    ...         x, y = data
    ...         def loss_fn(trainable):
    ...             y_pred, non_trainable = self.stateless_call(
    ...                 trainable, state.non_trainable, x, training=True)
    ...             return ops.mean(ops.abs(y_pred - y)), non_trainable
    ...         (loss, non_trainable), grads = value_and_grad(
    ...             loss_fn, has_aux=True)(state.trainable)
    ...         trainable, optimizer = self.apply_gradients(state, grads)
    ...         return {"l1": loss}, StepState(
    ...             trainable, non_trainable, optimizer, state.metrics)
    >>> inputs = keras.Input((2,))
    >>> model = L1Model(inputs, keras.layers.Dense(
    ...     1, kernel_initializer="zeros")(inputs))
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1))
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    >>> history = model.fit(x, x.sum(1, keepdims=True), epochs=3, verbose=0)
    >>> [round(float(v), 3) for v in history.history["l1"]]
    [5.0, 3.6, 2.2]
    """

    #: Whether `compute_train_step` reads neither `state.trainable` nor
    #: `state.optimizer` after its one `apply_gradients` call, so that the
    #: top-level torch step may update the variables in place (backend
    #: NOTE 6). The default step does not need it set.
    donate_state = False

    def __new__(cls, *args, **kwargs):
        if _is_functional_call(args, kwargs) and not issubclass(
            cls, _Functional
        ):  # NOTE 1
            if cls is StepModel:
                variant = FunctionalStepModel
            else:
                variant = _FUNCTIONAL_VARIANTS.get(cls)
                if variant is None:
                    variant = type(
                        cls.__name__,
                        (cls, _Functional),
                        {"__module__": cls.__module__, "__doc__": cls.__doc__},
                    )
                    _FUNCTIONAL_VARIANTS[cls] = variant
            return keras.Model.__new__(variant)
        return keras.Model.__new__(cls)

    # -- The adapters Keras calls. -----------------------------------------
    def train_step(self, *args):
        return backend.run_train_step(self, *args)

    def test_step(self, *args):
        return backend.run_test_step(self, *args)

    def _donates_state(self):
        return bool(self.donate_state) or (
            type(self).compute_train_step is StepModel.compute_train_step
        )

    # -- Steps written once; override these. --------------------------------
    def compute_train_step(self, state, data):
        """One supervised step: forward, loss, gradients, update, metrics.

        Args:
            state: `training.StepState` of the step's input values.
            data: The batch `fit` passes: `x`, `(x, y)` or
                `(x, y, sample_weight)`.

        Returns:
            `(logs, new_state)`: a dict of scalars for the callbacks and
            the `StepState` after the step.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        (_, aux), grads = backend.value_and_grad(
            self.stateless_loss, has_aux=True
        )(state.trainable, state, x, y, sample_weight)
        trainable, optimizer = self.apply_gradients(state, grads)
        logs, metrics = self.stateless_update_metrics(
            aux.metrics, aux.unscaled_loss, x, y, aux.y_pred, sample_weight
        )
        return logs, StepState(trainable, aux.non_trainable, optimizer, metrics)

    def compute_test_step(self, state, data):
        """One evaluation step: forward, loss and metrics, no update.

        Args:
            state: `training.StepState` (its `optimizer` list is empty).
            data: The batch `evaluate` passes.

        Returns:
            `(logs, new_state)`.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, aux = self.stateless_loss(
            state.trainable, state, x, y, sample_weight, training=False
        )
        logs, metrics = self.stateless_update_metrics(
            aux.metrics, aux.unscaled_loss, x, y, aux.y_pred, sample_weight
        )
        return logs, state._replace(
            non_trainable=aux.non_trainable, metrics=metrics
        )

    # -- Stateless building blocks for steps. -------------------------------
    def stateless_call(
        self,
        trainable_variables,
        non_trainable_variables,
        *args,
        return_losses=False,
        **kwargs,
    ):
        """Keras's `Layer.stateless_call`, with less overhead (NOTE 2).

        Args:
            trainable_variables: Values of `self.trainable_variables`.
            non_trainable_variables: Values of
                `self.non_trainable_variables`.
            *args: Positional arguments of `call`.
            return_losses: Boolean, whether to also return the losses added
                during the call.
            **kwargs: Keyword arguments of `call`.

        Returns:
            `(outputs, non_trainable_values)`, or
            `(outputs, non_trainable_values, losses)` when `return_losses`.
        """
        variables = backend.step_variables(self)
        trainable, non_trainable = variables.trainable, variables.non_trainable
        if (
            not self.built
            or len(trainable_variables) != len(trainable)
            or len(non_trainable_variables) != len(non_trainable)
        ):  # Keras's own checks and errors
            return super().stateless_call(
                trainable_variables,
                non_trainable_variables,
                *args,
                return_losses=return_losses,
                **kwargs,
            )
        with backend.stateless_scope(
            trainable + non_trainable,
            list(trainable_variables) + list(non_trainable_variables),
            collect_losses=return_losses,
        ) as scope:
            outputs = self._call_in_scope(*args, **kwargs)
            losses = self.losses if return_losses else None
        new_non_trainable = backend.scope_values(
            scope, non_trainable, non_trainable_variables
        )
        if return_losses:
            return outputs, new_non_trainable, losses
        return outputs, new_non_trainable

    def _call_in_scope(self, *args, **kwargs):
        # NOTE 2: the call Keras's `Layer.stateless_call` makes inside its
        # scope. Keras internals: `_remat_mode` (rematerialisation) and
        # `quantized_call` (quantized layers), as in keras 3.15.
        call = self.call
        if self.dtype_policy.quantization_mode is not None:
            call = self.quantized_call
        if getattr(self, "_remat_mode", None) is not None:
            return self.rematerialized_call(call, *args, **kwargs)(
                *args, **kwargs
            )
        return call(*args, **kwargs)

    def stateless_loss(
        self, trainable, state, x, y=None, sample_weight=None, training=True
    ):
        """Forward pass and compiled loss as a function of values (NOTE 3).

        The first argument is the one to differentiate, so the method can
        be passed to `value_and_grad(..., has_aux=True)` as it is.

        Args:
            trainable: Values of the trainable variables (differentiated).
            state: `training.StepState`; its `non_trainable`, `metrics` and
                (when training) `optimizer` values are read.
            x: Inputs of the model.
            y: Targets, or `None`.
            sample_weight: Sample weights, or `None`.
            training: Boolean, the `training` argument of the call; when
                true the loss is scaled by the optimizer's loss scale.

        Returns:
            `(loss, aux)`: `loss` is the total loss (compiled loss plus
            `add_loss` and regulariser losses), multiplied by the
            optimizer's loss scale when training with a
            `LossScaleOptimizer`; `aux` is a `LossAux` of `unscaled_loss`
            (what metrics report), `y_pred`, and the new `non_trainable`
            and `metrics` values.
        """
        variables = backend.step_variables(self)
        # Keras internal: `_call_has_training_arg`, which Keras's trainers
        # read to pass `training` only to a `call` that takes it.
        kwargs = {"training": training} if self._call_has_training_arg else {}
        with backend.stateless_scope(
            variables.trainable + variables.non_trainable + variables.metrics,
            list(trainable) + list(state.non_trainable) + list(state.metrics),
            collect_losses=True,
        ) as scope:
            y_pred = self._call_in_scope(x, **kwargs)
            # Keras internal: `_compute_loss` is the wrapper Keras's own
            # `stateless_compute_loss` calls (it drops `training` for a
            # `compute_loss` override written without it).
            unscaled_loss = self._compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=training,
            )
        non_trainable = backend.scope_values(
            scope, variables.non_trainable, state.non_trainable
        )
        metrics = backend.scope_values(scope, variables.metrics, state.metrics)
        loss = unscaled_loss
        if training and self.optimizer is not None:
            with backend.stateless_scope(variables.optimizer, state.optimizer):
                loss = self.optimizer.scale_loss(loss)
        return loss, LossAux(unscaled_loss, y_pred, non_trainable, metrics)

    def apply_gradients(self, state, grads, trainable=None):
        """One optimizer update as a function of values.

        With a `MultiOptimizer`, each variable is updated by the optimizer
        its path maps to. A `LossScaleOptimizer` unscales the gradients and
        skips the update when they are not finite.

        Args:
            state: `training.StepState`; its `optimizer` values are read.
            grads: Gradients following `state.trainable` (zeros for
                variables a loss does not touch).
            trainable: Values to update instead of `state.trainable`.

        Returns:
            `(new_trainable, new_optimizer_values)`.
        """
        trainable = state.trainable if trainable is None else trainable
        return backend.stateless_apply(
            self.optimizer,
            backend.step_variables(self).trainable,
            state.optimizer,
            grads,
            trainable,
        )

    def stateless_update_metrics(
        self, metrics, loss, x, y, y_pred, sample_weight=None
    ):
        """Updates the loss tracker and the compiled metrics.

        Args:
            metrics: Values of `self.metrics_variables`.
            loss: The (unscaled) loss of the batch.
            x: Inputs of the batch (their batch size weighs the loss).
            y: Targets.
            y_pred: Predictions.
            sample_weight: Sample weights, or `None`.

        Returns:
            `(logs, new_metrics_values)`: the metric results for the
            callbacks and the new values of `self.metrics_variables`.
        """
        variables = backend.step_variables(self).metrics
        with backend.stateless_scope(variables, metrics) as scope:
            # Keras internal: `_loss_tracker`, the `Mean` behind the "loss"
            # log, which Keras's own train steps update the same way.
            self._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
            logs = self.compute_metrics(x, y, y_pred, sample_weight)
        return logs, backend.scope_values(scope, variables, metrics)


@keras.saving.register_keras_serializable(package="modular_zoo")
class FunctionalStepModel(StepModel, _Functional):
    """`StepModel(inputs, outputs)`: a functional model with the core's steps."""
