"""Tests of FiLMLayer (gamma_k * y + beta_k, Mint's diagonal baseline)."""

import contextlib
import io
import json

import keras
import numpy as np
import pytest
from keras import ops

from layers.film_layer import FiLMLayer
from tests.harness import other_backends, run_in_backends, run_layer_checks
from training import value_and_grad

UNITS, NUM_TASKS, BATCH = 5, 3, 6


def random_inputs(rng, rank=3):
    shape = (BATCH, 2, UNITS) if rank == 3 else (BATCH, UNITS)
    return rng.normal(size=shape).astype("float32")


def randomise(layer, rng):
    values = [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    layer.set_weights(values)
    return values


def film_reference(inputs, gammas, betas):
    """NumPy FiLM, one example at a time."""
    return np.stack(
        [gammas[b] * inputs[b] + betas[b] for b in range(inputs.shape[0])]
    )


@pytest.mark.parametrize("training", [True, False])
def test_ids_match_numpy_mixed_batch(training):
    rng = np.random.default_rng(1)
    inputs = random_inputs(rng)
    ids = np.array([0, 2, 1, 2, 0, 1], dtype="int32")
    layer = FiLMLayer(num_tasks=NUM_TASKS)
    layer.build(inputs.shape)
    gammas, betas = randomise(layer, rng)
    outputs = layer(inputs, ids, training=training)
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs),
        film_reference(inputs, gammas[ids], betas[ids]),
        rtol=1e-5, atol=1e-6,
    )


@pytest.mark.parametrize("training", [True, False])
def test_descriptors_match_numpy(training):
    rng = np.random.default_rng(2)
    inputs = random_inputs(rng, rank=2)
    descriptors = rng.normal(size=(BATCH, NUM_TASKS)).astype("float32")
    layer = FiLMLayer(task_dim=NUM_TASKS)
    layer.build(inputs.shape)
    gammas, betas = randomise(layer, rng)
    outputs = layer(inputs, descriptors, training=training)
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs),
        film_reference(inputs, descriptors @ gammas, descriptors @ betas),
        rtol=1e-4, atol=1e-5,
    )


def test_identity_at_init():
    rng = np.random.default_rng(3)
    inputs = random_inputs(rng)
    ids = np.array([0, 2, 1, 2, 0, 1], dtype="int32")
    one_hot = np.eye(NUM_TASKS, dtype="float32")[ids]
    for layer, task in [
        (FiLMLayer(num_tasks=NUM_TASKS), ids),
        (FiLMLayer(task_dim=NUM_TASKS), one_hot),
    ]:
        np.testing.assert_allclose(
            ops.convert_to_numpy(layer(inputs, task)), inputs, atol=1e-6
        )


@pytest.mark.parametrize("mode", ["ids", "descriptors"])
def test_layer_checks(mode, tmp_path):
    rng = np.random.default_rng(4)
    inputs = random_inputs(rng)
    if mode == "ids":
        kwargs = {"num_tasks": NUM_TASKS, "gamma_regularizer": "l2"}
        task = np.array([0, 2, 1, 2, 0, 1], dtype="int32")
        task_input = keras.Input((), dtype="int32")
    else:
        kwargs = {"task_dim": NUM_TASKS, "beta_initializer": "random_normal"}
        task = rng.normal(size=(BATCH, NUM_TASKS)).astype("float32")
        task_input = keras.Input((NUM_TASKS,))
    run_layer_checks(FiLMLayer, kwargs, inputs, task, tmp_path)
    # The harness saves the init; save random weights as well.
    features_input = keras.Input(inputs.shape[1:])
    layer = FiLMLayer(**kwargs)
    model = keras.Model(
        [features_input, task_input], layer(features_input, task_input)
    )
    randomise(layer, rng)
    expected = model.predict([inputs, task], verbose=0)
    path = str(tmp_path / "random.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict([inputs, task], verbose=0), expected, rtol=1e-5, atol=1e-6
    )


def test_gradients_reach_only_the_tasks_in_the_batch():
    rng = np.random.default_rng(5)
    inputs = random_inputs(rng)
    ids = np.array([1, 1, 0, 0, 1, 0], dtype="int32")  # task 2 absent
    projection = ops.convert_to_tensor(rng.normal(size=inputs.shape).astype("float32"))
    layer = FiLMLayer(num_tasks=NUM_TASKS)
    layer.build(inputs.shape)
    randomise(layer, rng)

    def loss_fn(trainable_values):
        outputs, _ = layer.stateless_call(trainable_values, [], inputs, ids)
        return ops.sum(ops.multiply(outputs, projection))

    _, grads = value_and_grad(loss_fn)([v.value for v in layer.trainable_variables])
    assert len(grads) == 2
    for grad in grads:
        grad = ops.convert_to_numpy(grad)
        assert np.all(grad[2] == 0)
        assert np.count_nonzero(grad[:2]) == grad[:2].size


def test_out_of_range_ids_raise():
    layer = FiLMLayer(num_tasks=NUM_TASKS)
    with pytest.raises(ValueError, match=r"task id out of range.*\[0, 3\)"):
        layer(np.zeros((2, UNITS), "float32"), np.array([0, 5]))


@pytest.mark.parametrize(
    "kwargs, inputs_shape, task, message",
    [
        ({"num_tasks": 3}, (4,), np.zeros(4, "int32"), r"rank >= 2"),
        ({"num_tasks": 3}, (4, UNITS), np.zeros((4, 1), "int32"), r"shape \(batch,\)"),
        ({"task_dim": 3}, (4, UNITS), np.zeros((4, 2), "float32"), r"\(batch, 3\)"),
    ],
)
def test_bad_shapes_raise(kwargs, inputs_shape, task, message):
    with pytest.raises(ValueError, match=message):
        FiLMLayer(**kwargs)(np.zeros(inputs_shape, "float32"), task)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs num_tasks"),
        ({"num_tasks": 3, "task_dim": 4}, "task_dim must equal num_tasks"),
        ({"task_dim": -1}, "positive integer"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FiLMLayer(**kwargs)


CROSS_BACKEND_SNIPPET = """
import json
import keras
import numpy as np
from layers.film_layer import FiLMLayer

rng = np.random.default_rng(9)
inputs = rng.normal(size=(6, 2, 5)).astype("float32")
ids = np.array([0, 2, 1, 2, 0, 1], dtype="int32")
descriptors = rng.normal(size=(6, 3)).astype("float32")
results = []
for kwargs, task in [(dict(num_tasks=3), ids), (dict(task_dim=3), descriptors)]:
    layer = FiLMLayer(**kwargs)
    layer.build(inputs.shape)
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    results.append(keras.ops.convert_to_numpy(layer(inputs, task)).tolist())
print(json.dumps(results))
"""


def test_same_outputs_on_every_backend():
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(CROSS_BACKEND_SNIPPET, namespace)
    here = json.loads(printed.getvalue().strip().splitlines()[-1])
    assert not np.allclose(here[0], here[1])
    others = run_in_backends(CROSS_BACKEND_SNIPPET, other_backends())
    for backend, results in others.items():
        for mode, (expected, actual) in enumerate(zip(here, results)):
            np.testing.assert_allclose(
                actual, expected, rtol=1e-5, atol=1e-5,
                err_msg=f"{backend}, mode {mode}",
            )
