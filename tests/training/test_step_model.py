"""`StepModel`: one step written once, checked against NumPy and Keras."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.harness import REPO_ROOT, current_backend, other_backends, run_in_backends
from training import StepModel, StepState, value_and_grad
from zoo.models import TaskConditionedMLP

def _problem():
    """A fixed regression batch and MLP weights (seeded here, per test)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype("float32")
    y = rng.normal(size=(6, 2)).astype("float32")
    weights = [rng.normal(size=(3, 5)).astype("float32") * 0.5,
               rng.normal(size=5).astype("float32") * 0.1,
               rng.normal(size=(5, 2)).astype("float32") * 0.5,
               rng.normal(size=2).astype("float32") * 0.1]
    return x, y, weights


def _mlp(weights, cls=StepModel):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(2, name="out")(hidden)
    model = cls(inputs, outputs)
    model.set_weights(weights)
    return model


def _numpy_mse_grads(x, y, weights):
    """Gradients of mean((tanh(X W1 + b1) W2 + b2 - Y)^2), by hand."""
    w1, b1, w2, b2 = weights
    hidden = np.tanh(x @ w1 + b1)
    prediction = hidden @ w2 + b2
    d_prediction = 2 * (prediction - y) / prediction.size
    d_hidden_pre = (d_prediction @ w2.T) * (1 - hidden**2)
    return [x.T @ d_hidden_pre, d_hidden_pre.sum(0),
            hidden.T @ d_prediction, d_prediction.sum(0)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_step_matches_numpy_reference(optimizer):
    x, y, weights = _problem()
    model = _mlp(weights)
    lr = 0.1
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(lr)
    else:
        opt = keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)

    grads = _numpy_mse_grads(x, y, weights)
    expected = []
    for weight, grad in zip(weights, grads, strict=True):
        if optimizer == "sgd":
            expected.append(weight - lr * grad)
        else:  # Keras's Adam, first step: m = 0.1 g, v = 0.001 g^2
            alpha = lr * np.sqrt(1 - 0.999) / (1 - 0.9)
            m, v = 0.1 * grad, 0.001 * grad**2
            expected.append(weight - alpha * m / (np.sqrt(v) + 1e-7))
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_fit_converges_and_matches_keras_train_step():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(128, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")

    def train(cls):
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        model = cls(inputs, keras.layers.Dense(1)(hidden))
        model.set_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse",
                      metrics=["mae"])
        history = model.fit(x, y, batch_size=32, epochs=15, shuffle=False,
                            verbose=0).history
        return history, model.get_weights()

    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    probe = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(8)(inputs)))
    initial_weights = probe.get_weights()

    (ours, our_weights), (reference, weights) = train(StepModel), train(keras.Model)
    assert ours["loss"][-1] < 0.05 * ours["loss"][0]
    assert sorted(ours) == sorted(reference)
    for key in reference:
        np.testing.assert_allclose(ours[key], reference[key], rtol=1e-5, atol=1e-6)
    for got, want in zip(our_weights, weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_evaluate_matches_keras_test_step():
    x, y, weights = _problem()
    model, reference = _mlp(weights), _mlp(weights, keras.Model)
    for m in (model, reference):
        m.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    ours = model.evaluate(x, y, verbose=0, return_dict=True)
    theirs = reference.evaluate(x, y, verbose=0, return_dict=True)
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6)


def test_multi_optimizer_routes_each_variable_to_its_learning_rate():
    x, y, weights = _problem()
    model = _mlp(weights)
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            keras.optimizers.SGD(0.01), {"hidden/.*": keras.optimizers.SGD(1.0)}
        )
    )
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    grads = _numpy_mse_grads(x, y, weights)
    rates = [1.0, 1.0, 0.01, 0.01]
    for got, weight, grad, lr in zip(model.get_weights(), weights, grads, rates,
                                     strict=True):
        np.testing.assert_allclose(got, weight - lr * grad, atol=1e-5, rtol=1e-5)


class _TwoLossModel(StepModel):
    """A custom step: two losses, each on its own variables (as in SAC)."""

    def compute_train_step(self, state, data):
        x, y = data
        n_first = 2  # hidden kernel and bias

        def first_loss(first):
            prediction, _ = self.stateless_call(
                first + state.trainable[n_first:], state.non_trainable, x)
            return keras.ops.mean((prediction - y) ** 2)

        def second_loss(second):
            prediction, _ = self.stateless_call(
                state.trainable[:n_first] + second, state.non_trainable, x)
            return keras.ops.mean(keras.ops.abs(prediction - y))

        loss_a, grads_a = value_and_grad(first_loss)(state.trainable[:n_first])
        loss_b, grads_b = value_and_grad(second_loss)(state.trainable[n_first:])
        trainable, optimizer = self.apply_gradients(state, grads_a + grads_b)
        return {"mse": loss_a, "mae": loss_b}, StepState(
            trainable, state.non_trainable, optimizer, state.metrics)


def test_custom_step_with_two_losses_updates_each_part_from_its_own_loss():
    x, y, weights = _problem()
    w1, b1, w2, b2 = weights
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    model = _TwoLossModel(inputs, keras.layers.Dense(2)(hidden))
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    mse_grads = _numpy_mse_grads(x, y, weights)
    hidden = np.tanh(x @ w1 + b1)
    d_prediction = np.sign(hidden @ w2 + b2 - y) / y.size
    mae_grads = [hidden.T @ d_prediction, d_prediction.sum(0)]
    expected = [w1 - 0.1 * mse_grads[0], b1 - 0.1 * mse_grads[1],
                w2 - 0.1 * mae_grads[0], b2 - 0.1 * mae_grads[1]]
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert set(logs.history) == {"mse", "mae"}


_LOAD_SNIPPET = """
import json, numpy as np, keras
from zoo.models import TaskConditionedMLP
x = np.array({x}, "float32"); t = np.array({t}, "int32")
weights_model = TaskConditionedMLP(num_tasks=3, output_dim=2)
weights_model((x, t))
weights_model.load_weights({weights_path!r})
keras_model = keras.saving.load_model({keras_path!r})
print(json.dumps([weights_model.predict((x, t), verbose=0).tolist(),
                  keras_model.predict((x, t), verbose=0).tolist()]))
"""


def test_saved_weights_load_under_the_other_backends(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 4)).astype("float32")
    t = np.array([0, 1, 2, 1, 0], "int32")
    model = TaskConditionedMLP(num_tasks=3, output_dim=2)
    model.compile(optimizer="adam", loss="mse")
    model.fit((x, t), rng.normal(size=(5, 2)).astype("float32"), epochs=2, verbose=0)
    expected = model.predict((x, t), verbose=0)
    weights_path = str(tmp_path / "model.weights.h5")
    keras_path = str(tmp_path / "model.keras")
    model.save_weights(weights_path)
    model.save(keras_path)
    results = run_in_backends(_LOAD_SNIPPET, other_backends(), x=x.tolist(),
                              t=t.tolist(), weights_path=weights_path,
                              keras_path=keras_path)
    assert set(results) == set(other_backends())
    for backend, (from_weights, from_keras) in results.items():
        np.testing.assert_allclose(from_weights, expected, atol=1e-5, err_msg=backend)
        np.testing.assert_allclose(from_keras, expected, atol=1e-5, err_msg=backend)


_DATA_PARALLEL_SNIPPET = """
import json, numpy as np, keras, jax
from zoo.models import TaskConditionedMLP
assert len(jax.devices()) == 2, jax.devices()
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32"); t = rng.integers(0, 3, 64).astype("int32")
y = rng.normal(size=(64, 2)).astype("float32")
def train(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = TaskConditionedMLP(num_tasks=3, output_dim=2)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit((x, t), y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return history.history["loss"], [w.tolist() for w in model.get_weights()]
single = train(None)
parallel = train(keras.distribution.DataParallel(devices=jax.devices()))
print(json.dumps([single, parallel]))
"""


@pytest.mark.skipif(current_backend() != "jax",
                    reason="JAX DataParallel; checked in the suite's JAX run")
def test_data_parallel_on_two_virtual_devices_matches_one_device():
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPO_ROOT,
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", _DATA_PARALLEL_SNIPPET], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (single_loss, single_weights), (parallel_loss, parallel_weights) = json.loads(
        proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(parallel_loss, single_loss, rtol=1e-5)
    for a, b in zip(parallel_weights, single_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_two_positional_values_of_a_subclass_are_not_functional_arguments():
    """StepModel NOTE 1: only symbolic (inputs, outputs) make a functional
    model; a subclass whose constructor takes two plain values is built as
    itself."""

    class TwoSizes(StepModel):
        def __init__(self, width, depth, **kwargs):
            super().__init__(**kwargs)
            self.width, self.depth = width, depth
            self.dense = keras.layers.Dense(width)

        def call(self, inputs):
            return self.dense(inputs)

    model = TwoSizes(3, 2)
    assert type(model) is TwoSizes and (model.width, model.depth) == (3, 2)
    inputs = keras.Input((4,))
    functional = StepModel(inputs, keras.layers.Dense(2)(inputs))
    assert isinstance(functional, keras.src.models.functional.Functional)
