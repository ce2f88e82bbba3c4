"""`StepModel`: write a training step once, as a function of values.

A subclass overrides `compute_train_step(state, data)` (and optionally
`compute_test_step`), a pure function

    (StepState of tensors, batch) -> (logs dict, new StepState)

written with `keras.ops`, `self.stateless_call`, `training.value_and_grad`
and `self.apply_gradients`. `training.backend` turns it into Keras's
`train_step`/`test_step` on JAX, TensorFlow and PyTorch, so `fit`,
`evaluate`, callbacks, `compile(jit_compile=...)`, `steps_per_execution`
and distribution keep working. The default step is ordinary supervised
learning and reproduces Keras's built-in `train_step`.

Several optimizers: pass a `keras.optimizers.MultiOptimizer` to `compile`
(variable-path regexes -> optimizers, e.g. actor / critic / temperature, or
a fast learning rate for allocation logits and a slow one for skills);
`apply_gradients` routes each gradient to its optimizer.
"""

from typing import NamedTuple

import keras
from keras import ops
from keras import tree

from training import backend

# NOTE 1: Keras turns `SomeModel(inputs, outputs)` into a functional model by
# rewriting the bases of SomeModel and of all its ancestors in place
# (`inject_functional_model_class`), which would turn StepModel itself into a
# functional class and break every later subclassed model. Like `keras.Model`,
# StepModel instead instantiates a functional subclass: `FunctionalStepModel`
# for StepModel, a cached `(Subclass, Functional)` class for a subclass.
from keras.src.models.functional import Functional as _Functional  # noqa: E402
from keras.src.models.model import functional_init_arguments  # noqa: E402


class StepState(NamedTuple):
    """Values (native tensors) of everything a step may read or update.

    The lists follow `model.trainable_variables`,
    `model.non_trainable_variables`, `model.optimizer.variables` (empty in a
    test step) and `model.metrics_variables`.
    """

    trainable: list
    non_trainable: list
    optimizer: list
    metrics: list


_FUNCTIONAL_VARIANTS = {}


def _batch_size(x):
    return ops.shape(next(t for t in tree.flatten(x) if t is not None))[0]


@keras.saving.register_keras_serializable(package="modular_zoo")
class StepModel(keras.Model):
    """A `keras.Model` whose train and test steps are written once.

    Example: a supervised step with an L2 penalty on the gradient norm,
    identical on every backend.

    ```python
    class GradPenaltyModel(StepModel):
        def compute_train_step(self, state, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

            def loss_fn(trainable):
                loss, aux = self.stateless_loss(state, trainable, x, y,
                                                sample_weight, training=True)
                return loss, aux

            (loss, (y_pred, non_trainable)), grads = value_and_grad(
                loss_fn, has_aux=True)(state.trainable)
            trainable, optimizer = self.apply_gradients(state, grads)
            logs, metrics = self.stateless_update_metrics(
                state.metrics, loss, x, y, y_pred, sample_weight)
            return logs, StepState(trainable, non_trainable, optimizer, metrics)
    ```
    """

    def __new__(cls, *args, **kwargs):
        if functional_init_arguments(args, kwargs) and not issubclass(
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

    # -- Steps written once; override these. --------------------------------
    def compute_train_step(self, state, data):
        """One supervised step: forward, loss, gradients, update, metrics."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

        def loss_fn(trainable):
            loss, unscaled_loss, y_pred, non_trainable = self.stateless_loss(
                state, trainable, x, y, sample_weight, training=True
            )
            return loss, (unscaled_loss, y_pred, non_trainable)

        (_, (loss, y_pred, non_trainable)), grads = backend.value_and_grad(
            loss_fn, has_aux=True
        )(state.trainable)
        trainable, optimizer = self.apply_gradients(state, grads)
        logs, metrics = self.stateless_update_metrics(
            state.metrics, loss, x, y, y_pred, sample_weight
        )
        return logs, StepState(trainable, non_trainable, optimizer, metrics)

    def compute_test_step(self, state, data):
        """One evaluation step: forward, loss and metrics, no update."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, loss, y_pred, non_trainable = self.stateless_loss(
            state, state.trainable, x, y, sample_weight, training=False
        )
        logs, metrics = self.stateless_update_metrics(
            state.metrics, loss, x, y, y_pred, sample_weight
        )
        return logs, state._replace(non_trainable=non_trainable, metrics=metrics)

    # -- Stateless building blocks for steps. -------------------------------
    def stateless_loss(self, state, trainable, x, y, sample_weight, training):
        """Forward pass and compiled loss as a function of values.

        Returns `(loss, unscaled_loss, y_pred, non_trainable)`: `loss` is
        scaled by the optimizer's loss scale (mixed precision) when training,
        `unscaled_loss` is what metrics report.
        """
        kwargs = {"training": training} if self._call_has_training_arg else {}
        y_pred, non_trainable, losses = self.stateless_call(
            trainable, state.non_trainable, x, return_losses=True, **kwargs
        )
        if losses:
            self._losses_override = losses
        try:
            unscaled_loss, _ = self.stateless_compute_loss(
                trainable,
                non_trainable,
                state.metrics,
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=training,
            )
        finally:
            if losses:
                self._losses_override = []
        loss = unscaled_loss
        if training and self.optimizer is not None:
            mapping = list(zip(self.optimizer.variables, state.optimizer))
            with keras.StatelessScope(state_mapping=mapping):
                loss = self.optimizer.scale_loss(loss)
        return loss, unscaled_loss, y_pred, non_trainable

    def apply_gradients(self, state, grads, trainable=None):
        """`(new_trainable, new_optimizer_values)` after one optimizer update.

        `grads` follows `state.trainable` (use zeros for variables a loss
        does not touch). With a `MultiOptimizer`, each variable is updated by
        the optimizer its path maps to.
        """
        trainable = state.trainable if trainable is None else trainable
        return backend.stateless_apply(
            self.optimizer,
            self.trainable_variables,
            state.optimizer,
            grads,
            trainable,
        )

    def stateless_update_metrics(
        self, metrics, loss, x, y, y_pred, sample_weight=None
    ):
        """Update the loss tracker and compiled metrics; returns logs, values."""
        mapping = list(zip(self.metrics_variables, metrics))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
            logs = self.compute_metrics(x, y, y_pred, sample_weight)
        new_metrics = []
        for variable, value in mapping:
            new_value = scope.get_current_value(variable)
            new_metrics.append(value if new_value is None else new_value)
        return logs, new_metrics


@keras.saving.register_keras_serializable(package="modular_zoo")
class FunctionalStepModel(StepModel, _Functional):
    """`StepModel(inputs, outputs)`: a functional model with the core's steps."""
