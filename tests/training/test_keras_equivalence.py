"""`StepModel.fit` equals `keras.Model.fit` beyond the plain MLP.

Each case trains the same network, from the same initial weights on the same
data, once as a `keras.Model` (Keras's own `train_step`) and once as a
`StepModel` (the stateless step of `training/`), and compares the `fit`
histories, every model weight (non-trainable ones included) and every
optimizer variable (slots, iteration counter, dynamic loss scale). The cases
are the parts of Keras's step a stateless re-implementation can get wrong:

* `add_loss`: a loss added in `call`, an activity regulariser and a kernel
  regulariser must reach the gradient (Keras collects them through
  `Layer.losses`; a stateless step must collect them from its own scope).
* `batch_norm`: BatchNormalization's moving statistics (non-trainable) are
  updated in the forward pass and must be written back identically.
* `sample_weight`: per-sample weights reach the loss and the metrics.
* `loss_scale` / `mixed_float16`: the optimizer's loss scale multiplies the
  loss before the gradient and divides the gradient after it, and the
  dynamic scale (an optimizer variable) halves on overflow: SGD (not Adam,
  which is invariant to a constant gradient scale) so that a missing scale
  or unscale shows, and an initial scale of 2**40 so that the first steps
  overflow in float16 and are skipped.
* `multi_output`: two outputs, two losses: the per-output loss metrics
  Keras updates inside `compute_loss`.
"""

import keras
import numpy as np
import pytest

from training import StepModel


@keras.saving.register_keras_serializable(package="test_keras_equivalence")
class AddLossLayer(keras.layers.Layer):
    """Identity that adds 0.01 * mean(x^2) to the model's losses."""

    def call(self, inputs):
        self.add_loss(0.01 * keras.ops.mean(inputs**2))
        return inputs


def _build(case, cls):
    """The network of `case` as a `cls` (keras.Model or StepModel)."""
    inputs = keras.Input((4,))
    if case == "batch_norm":
        hidden = keras.layers.Dense(8)(inputs)
        hidden = keras.layers.BatchNormalization(momentum=0.5)(hidden)
        hidden = keras.layers.Activation("relu")(hidden)
    elif case == "add_loss":
        hidden = keras.layers.Dense(
            8,
            activation="tanh",
            kernel_regularizer=keras.regularizers.L2(0.01),
            activity_regularizer=keras.regularizers.L1(0.01),
        )(inputs)
        hidden = AddLossLayer()(hidden)
    else:
        hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    if case == "multi_output":
        outputs = [keras.layers.Dense(2, name="first")(hidden),
                   keras.layers.Dense(1, name="second")(hidden)]
    else:
        outputs = keras.layers.Dense(2, name="out")(hidden)
    return cls(inputs, outputs)


def _optimizer(case):
    if case == "loss_scale":
        return keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.05), initial_scale=2.0**12
        )
    if case == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.05), initial_scale=2.0**40
        )
    return keras.optimizers.Adam(0.01)


def _train(case, cls, initial_weights, x, y, sample_weight):
    model = _build(case, cls)
    model.set_weights(initial_weights)
    if case == "multi_output":
        loss, metrics = ["mse", "mae"], [["mae"], ["mse"]]
    else:
        loss, metrics = "mse", ["mae"]
    model.compile(optimizer=_optimizer(case), loss=loss, metrics=metrics)
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=8,
                        epochs=3, shuffle=False, verbose=0).history
    optimizer_values = [keras.ops.convert_to_numpy(v)
                        for v in model.optimizer.variables]
    return history, model.get_weights(), optimizer_values


CASES = ["add_loss", "batch_norm", "sample_weight", "loss_scale",
         "mixed_float16", "multi_output"]


@pytest.mark.parametrize("case", CASES)
def test_fit_matches_keras_model(case):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    if case == "multi_output":
        y = (y, rng.normal(size=(32, 1)).astype("float32"))
    sample_weight = None
    if case == "sample_weight":
        sample_weight = rng.uniform(0.0, 2.0, size=32).astype("float32")
    if case == "mixed_float16":
        keras.config.set_dtype_policy("mixed_float16")  # reset by conftest
    keras.utils.set_random_seed(7)
    initial_weights = _build(case, keras.Model).get_weights()

    ours = _train(case, StepModel, initial_weights, x, y, sample_weight)
    reference = _train(case, keras.Model, initial_weights, x, y, sample_weight)

    (history, weights, optimizer_values) = ours
    (ref_history, ref_weights, ref_optimizer_values) = reference
    assert sorted(history) == sorted(ref_history)
    tolerance = dict(rtol=1e-3, atol=1e-3) if case == "mixed_float16" else (
        dict(rtol=1e-5, atol=1e-6))
    for key in ref_history:
        np.testing.assert_allclose(history[key], ref_history[key],
                                   err_msg=key, **tolerance)
    assert len(weights) == len(ref_weights)
    for got, want in zip(weights, ref_weights, strict=True):
        np.testing.assert_allclose(got, want, **tolerance)
    assert len(optimizer_values) == len(ref_optimizer_values)
    for got, want in zip(optimizer_values, ref_optimizer_values, strict=True):
        np.testing.assert_allclose(got, want, **tolerance)
    # The cases exercise what they are named for.
    if case == "batch_norm":
        moving = [w for w, v in zip(weights, _build(case, keras.Model).weights,
                                    strict=True) if "moving" in v.path]
        assert len(moving) == 2 and not np.allclose(moving[0], 0.0)
    if case == "mixed_float16":  # the first steps overflowed and were skipped
        scale = [v for v, var in zip(optimizer_values,
                                     _optimizer_variables(case), strict=True)
                 if "dynamic_scale" in var]
        assert scale and scale[0] < 2.0**40


def _optimizer_variables(case):
    model = _build(case, keras.Model)
    optimizer = _optimizer(case)
    optimizer.build(model.trainable_variables)
    return [v.path for v in optimizer.variables]
