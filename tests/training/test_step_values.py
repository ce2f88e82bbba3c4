"""A step is a function of values: no building block mutates its inputs.

The top-level adapter may let the optimizer update the variables in place
(backend NOTE 6, "donation"), but only for a step that promises not to reuse
its state; explicit calls, nested calls and other steps must get copies.
Each test below fails if donation (or TensorFlow's load-apply-read-back of
NOTE 4) leaks into a place that must keep its inputs.
"""

import keras
import numpy as np
import pytest

from training import StepModel, StepState


def _model(cls=StepModel, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    model = cls(inputs, keras.layers.Dense(2)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _numpy(values):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in values]


def _assert_equal(values, expected, what):
    assert len(values) == len(expected), what
    for got, want in zip(_numpy(values), expected, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=what)


def test_explicit_apply_gradients_keeps_its_inputs_and_the_variables():
    model = _model()
    # The variables' own tensors (on torch the parameters themselves): the
    # worst case, where an in-place update would change the model.
    state = StepState(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    before_trainable = _numpy(state.trainable)
    before_optimizer = _numpy(state.optimizer)
    grads = [keras.ops.ones(v.shape) for v in model.trainable_variables]

    trainable, optimizer = model.apply_gradients(state, grads)

    _assert_equal(state.trainable, before_trainable, "input trainable values")
    _assert_equal(state.optimizer, before_optimizer, "input optimizer values")
    _assert_equal(model.trainable_variables, before_trainable, "model variables")
    _assert_equal(model.optimizer.variables, before_optimizer,
                  "optimizer variables")
    # ... and the update happened, on the returned values.
    for new, old in zip(_numpy(trainable), before_trainable, strict=True):
        assert not np.allclose(new, old)
    assert len(optimizer) == len(before_optimizer)


class _LookaheadModel(StepModel):
    """Tries an update, logs how far it moved, and keeps the old state."""

    def compute_train_step(self, state, data):
        grads = [keras.ops.ones_like(t) for t in state.trainable]
        trial, _ = self.apply_gradients(state, grads)
        moved = sum(keras.ops.sum(keras.ops.abs(new - old))
                    for new, old in zip(trial, state.trainable, strict=True))
        return {"moved": moved}, state


def test_an_update_inside_a_step_that_is_discarded_changes_nothing():
    model = _model(_LookaheadModel)
    weights = model.get_weights()
    optimizer_values = _numpy(model.optimizer.variables)
    x = np.zeros((4, 3), "float32")
    history = model.fit(x, np.zeros((4, 2), "float32"), epochs=2, verbose=0)
    # The step read state.trainable after the update: it saw the old values.
    assert min(history.history["moved"]) > 0.1
    _assert_equal(model.trainable_variables + model.non_trainable_variables,
                  weights, "model weights after a discarded update")
    _assert_equal(model.optimizer.variables, optimizer_values,
                  "optimizer variables after a discarded update")


class _TwoUpdatesModel(StepModel):
    """Breaks the donation promise: two updates from one donated state."""

    donate_state = True

    def compute_train_step(self, state, data):
        grads = [keras.ops.ones_like(t) for t in state.trainable]
        self.apply_gradients(state, grads)
        trainable, optimizer = self.apply_gradients(state, grads)
        return {}, state._replace(trainable=trainable, optimizer=optimizer)


def test_a_second_update_of_a_donated_state_raises():
    model = _model(_TwoUpdatesModel)
    x = np.zeros((4, 3), "float32")
    with pytest.raises(ValueError, match="second optimizer update"):
        model.fit(x, np.zeros((4, 2), "float32"), epochs=1, verbose=0)


def test_a_donating_custom_step_equals_the_copying_one():
    class Copying(StepModel):
        def compute_train_step(self, state, data):
            return super().compute_train_step(state, data)

    class Donating(Copying):
        donate_state = True

    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    results = []
    for cls in (Copying, Donating):
        model = _model(cls, seed=5)
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False,
                            verbose=0).history
        results.append((history["loss"], model.get_weights()))
    (loss_a, weights_a), (loss_b, weights_b) = results
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for a, b in zip(weights_a, weights_b, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
