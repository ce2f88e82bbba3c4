"""Tests of FiLMLayer (gamma_k * y + beta_k, Mint's diagonal baseline)."""

import numpy as np
import pytest
from keras import ops

from layers.film_layer import FiLMLayer
from tests.harness import assert_same_across_backends, run_layer_checks
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
        task = np.array([0, 2, 1, 2, 0, 1], dtype="int64")
    else:
        kwargs = {"task_dim": NUM_TASKS, "beta_initializer": "random_normal"}
        task = rng.normal(size=(BATCH, NUM_TASKS)).astype("float32")
    run_layer_checks(
        FiLMLayer, kwargs, inputs, task, tmp_path,
        expected_output_shape=(BATCH, 2, UNITS),
        expected_num_trainable_weights=2,
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


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int64"])
def test_any_integer_id_dtype_is_accepted(dtype):
    rng = np.random.default_rng(6)
    inputs = random_inputs(rng)
    ids = np.array([0, 2, 1, 2, 0, 1])
    layer = FiLMLayer(num_tasks=NUM_TASKS)
    layer.build(inputs.shape)
    randomise(layer, rng)
    expected = ops.convert_to_numpy(layer(inputs, ids.astype("int32")))
    outputs = layer(inputs, ids.astype(dtype))
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs), expected)


@pytest.mark.parametrize("task_batch", [1, 3])
def test_task_batch_must_equal_inputs_batch(task_batch):
    """A task batch of 1 is broadcast on JAX and torch without the check."""
    inputs = np.zeros((4, UNITS), "float32")
    for task in (np.zeros(task_batch, "int32"),
                 np.zeros((task_batch, NUM_TASKS), "float32")):
        with pytest.raises(
            ValueError,
            match=rf"FiLMLayer 'film': got {task_batch} task entries for a "
            r"batch of 4 inputs; give one task per example",
        ):
            FiLMLayer(num_tasks=NUM_TASKS, name="film")(inputs, task)


@pytest.mark.parametrize(
    "kwargs, inputs_shape, task, message",
    [
        ({"num_tasks": 3}, (4,), np.zeros(4, "int32"), r"rank >= 2"),
        (
            {"num_tasks": 3}, (4, UNITS), np.zeros((4, 1), "int32"),
            r"got integer values of shape \(4, 1\)",
        ),
        (
            {"task_dim": 3}, (4, UNITS), np.zeros((4, 2), "float32"),
            r"float task descriptor of shape \(batch, 3\); got float32 "
            r"values of shape \(4, 2\)",
        ),
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
        ({"task_dim": -1}, "`task_dim` must be None or an integer >= 1"),
        ({"num_tasks": True}, "`num_tasks` must be None or an integer >= 1"),
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
    here = assert_same_across_backends(CROSS_BACKEND_SNIPPET)
    assert len(here) == 2
    assert not np.allclose(here[0], here[1])
