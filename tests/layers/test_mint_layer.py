"""Tests of MintLayer (paper Eqs. 1, 4, 5 and Theorem 1)."""

import contextlib
import time

import keras
import numpy as np
import pytest
from keras import ops

from layers.film_layer import FiLMLayer
from layers.mint_layer import MintLayer
from tests import harness
from tests.harness import assert_same_across_backends, run_layer_checks
from training import StepModel, value_and_grad

UNITS, NUM_TASKS, GOAL_DIM, BATCH = 5, 3, 4, 6
GOAL_NETWORK = {"hidden_units": [7, 3], "activation": "tanh"}


def random_inputs(rng, rank=3):
    shape = (BATCH, 2, UNITS) if rank == 3 else (BATCH, UNITS)
    return rng.normal(size=shape).astype("float32")


def mixed_ids():
    return np.array([0, 2, 1, 2, 0, 1], dtype="int32")


def randomise(layer, rng):
    """Sets every weight of a built layer to random values; returns them."""
    values = [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    layer.set_weights(values)
    return values


def mint_reference(inputs, matrices, biases):
    """NumPy Eq. 1, one example at a time: a = M_b y + beta_b."""
    outputs = np.empty_like(inputs)
    for b in range(inputs.shape[0]):
        flat = inputs[b].reshape(-1, inputs.shape[-1])
        outputs[b] = (flat @ matrices[b].T + biases[b]).reshape(inputs[b].shape)
    return outputs


def mlp_reference(goals, weights, num_hidden, activation):
    hidden = goals
    for index in range(num_hidden):
        hidden = activation(hidden @ weights[2 * index] + weights[2 * index + 1])
    return hidden @ weights[2 * num_hidden] + weights[2 * num_hidden + 1]


# -- (1) Equations against NumPy on random weights. -------------------------
@pytest.mark.parametrize("training", [True, False])
def test_ids_match_numpy_mixed_batch(training):
    rng = np.random.default_rng(1)
    inputs, ids = random_inputs(rng), mixed_ids()
    layer = MintLayer(num_tasks=NUM_TASKS)
    layer.build(inputs.shape)
    table_matrices, table_biases = randomise(layer, rng)
    outputs = layer(inputs, ids, training=training)
    expected = mint_reference(inputs, table_matrices[ids], table_biases[ids])
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs), expected, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("training", [True, False])
def test_descriptors_match_numpy_eq4(training):
    rng = np.random.default_rng(2)
    inputs = random_inputs(rng, rank=2)
    descriptors = rng.normal(size=(BATCH, NUM_TASKS)).astype("float32")
    layer = MintLayer(task_dim=NUM_TASKS)
    layer.build(inputs.shape)
    table_matrices, table_biases = randomise(layer, rng)
    outputs = layer(inputs, descriptors, training=training)
    # Eq. 4: M = T_M z, beta = T_beta z (sum over the task axis).
    matrices = np.tensordot(descriptors, table_matrices, axes=(1, 0))
    expected = mint_reference(inputs, matrices, descriptors @ table_biases)
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs), expected, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("training", [True, False])
def test_goal_networks_match_numpy_eq5(training):
    rng = np.random.default_rng(3)
    inputs = random_inputs(rng)
    goals = rng.normal(size=(BATCH, GOAL_DIM)).astype("float32")
    layer = MintLayer(task_dim=GOAL_DIM, goal_network=GOAL_NETWORK)
    layer.build(inputs.shape)
    weights = randomise(layer, rng)
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    matrix_weights = [
        w for w, n in zip(weights, names, strict=True) if n.startswith("matrix")
    ]
    bias_weights = [
        w for w, n in zip(weights, names, strict=True) if n.startswith("bias")
    ]
    assert len(matrix_weights) == len(bias_weights) == 6
    matrices = mlp_reference(goals, matrix_weights, 2, np.tanh)
    biases = mlp_reference(goals, bias_weights, 2, np.tanh)
    expected = mint_reference(
        inputs, matrices.reshape(BATCH, UNITS, UNITS), biases
    )
    outputs = layer(inputs, goals, training=training)
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs), expected, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("rank", [2, 3])
def test_linear_goal_networks_match_numpy_eq5(rank):
    # NOTE 7: no hidden layer takes the path that never forms M(g).
    rng = np.random.default_rng(5)
    inputs = random_inputs(rng, rank)
    goals = rng.normal(size=(BATCH, GOAL_DIM)).astype("float32")
    layer = MintLayer(task_dim=GOAL_DIM, goal_network={"hidden_units": []})
    layer.build(inputs.shape)
    weights = randomise(layer, rng)
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    matrix_weights = [w for w, n in zip(weights, names, strict=True)
                      if n.startswith("matrix")]
    bias_weights = [w for w, n in zip(weights, names, strict=True)
                    if n.startswith("bias")]
    assert len(matrix_weights) == len(bias_weights) == 2
    matrices = mlp_reference(goals, matrix_weights, 0, None)
    biases = mlp_reference(goals, bias_weights, 0, None)
    expected = mint_reference(inputs, matrices.reshape(BATCH, UNITS, UNITS), biases)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(inputs, goals)), expected,
                               rtol=1e-4, atol=1e-4)


def test_identity_at_init_in_every_mode():
    rng = np.random.default_rng(4)
    inputs = random_inputs(rng)
    one_hot = np.eye(NUM_TASKS, dtype="float32")[mixed_ids()]
    goals = rng.normal(size=(BATCH, GOAL_DIM)).astype("float32")
    cases = [
        (MintLayer(num_tasks=NUM_TASKS), mixed_ids()),
        (MintLayer(task_dim=NUM_TASKS), one_hot),
        (MintLayer(num_tasks=NUM_TASKS, task_dim=NUM_TASKS), one_hot),
        (MintLayer(task_dim=GOAL_DIM, goal_network=GOAL_NETWORK), goals),
    ]
    for layer, task in cases:
        outputs = ops.convert_to_numpy(layer(inputs, task))
        np.testing.assert_allclose(outputs, inputs, atol=1e-6)
    # A general descriptor gives M = (sum_k z_k) I at init (NOTE 3).
    descriptors = rng.uniform(size=(BATCH, NUM_TASKS)).astype("float32")
    outputs = ops.convert_to_numpy(MintLayer(task_dim=NUM_TASKS)(inputs, descriptors))
    np.testing.assert_allclose(
        outputs, inputs * descriptors.sum(-1)[:, None, None], rtol=1e-5
    )


# -- (2) The shared layer checks. -------------------------------------------
@pytest.mark.parametrize("mode", ["ids", "descriptors", "goals"])
def test_layer_checks(mode, tmp_path):
    rng = np.random.default_rng(5)
    inputs = random_inputs(rng)
    if mode == "ids":
        kwargs = {"num_tasks": NUM_TASKS, "bias_regularizer": "l2"}
        task, num_weights = mixed_ids().astype("uint8"), 2
    elif mode == "descriptors":
        kwargs = {"task_dim": NUM_TASKS, "matrix_initializer": "orthogonal"}
        task = rng.normal(size=(BATCH, NUM_TASKS)).astype("float32")
        num_weights = 2
    else:
        kwargs = {"task_dim": GOAL_DIM, "goal_network": GOAL_NETWORK}
        task = rng.normal(size=(BATCH, GOAL_DIM)).astype("float32")
        num_weights = 12  # two MLPs of 3 Dense layers (kernel, bias)
    run_layer_checks(
        MintLayer, kwargs, inputs, task, tmp_path,
        expected_output_shape=(BATCH, 2, UNITS),
        expected_num_trainable_weights=num_weights,
    )


@pytest.mark.slow
def test_layer_checks_with_torch_compile(tmp_path, monkeypatch):
    """The harness's compiled-prediction check through torch.compile.

    The default run compares `predict()` with the eager call on torch
    (torch.compile costs 3-26 s per layer on a CPU: see
    `TORCH_COMPILE_PREDICT` in tests/harness.py); this slow
    check compiles.
    """
    if keras.backend.backend() != "torch":
        pytest.skip("JAX and TensorFlow compile in the default harness run")
    monkeypatch.setattr(harness, "TORCH_COMPILE_PREDICT", True)
    rng = np.random.default_rng(5)
    run_layer_checks(
        MintLayer, {"num_tasks": NUM_TASKS}, random_inputs(rng), mixed_ids(),
        tmp_path, expected_output_shape=(BATCH, 2, UNITS),
        expected_num_trainable_weights=2,
    )


# -- (3) Gradients reach exactly the intended variables. --------------------
def gradients(layer, inputs, task, rng):
    projection = rng.normal(size=inputs.shape).astype("float32")

    def loss_fn(trainable_values):
        outputs, _ = layer.stateless_call(trainable_values, [], inputs, task)
        return ops.sum(ops.multiply(outputs, ops.convert_to_tensor(projection)))

    _, grads = value_and_grad(loss_fn)([v.value for v in layer.trainable_variables])
    return [ops.convert_to_numpy(g) for g in grads]


def test_gradients_reach_only_the_tasks_in_the_batch():
    rng = np.random.default_rng(6)
    inputs = random_inputs(rng)
    ids = np.array([0, 2, 2, 0, 0, 2], dtype="int32")  # task 1 absent
    layer = MintLayer(num_tasks=NUM_TASKS)
    layer.build(inputs.shape)
    randomise(layer, rng)
    assert [v.path.split("/")[-1] for v in layer.trainable_variables] == [
        "task_matrices", "task_biases"]
    for grad in gradients(layer, inputs, ids, rng):
        assert np.all(grad[1] == 0)
        assert np.all(np.abs(grad[[0, 2]]).reshape(2, -1).max(-1) > 0)
        # Every matrix entry of a present task is used.
        assert np.count_nonzero(grad[[0, 2]]) == grad[[0, 2]].size


def test_gradients_reach_every_goal_network_variable():
    rng = np.random.default_rng(7)
    inputs = random_inputs(rng)
    goals = rng.normal(size=(BATCH, GOAL_DIM)).astype("float32")
    layer = MintLayer(task_dim=GOAL_DIM, goal_network=GOAL_NETWORK)
    layer.build(inputs.shape)
    assert len(layer.trainable_variables) == 12
    names = [v.path.split("/", 1)[1] for v in layer.trainable_variables]
    # At init (zero output kernels, NOTE 4) only the output layers learn.
    for name, grad in zip(names, gradients(layer, inputs, goals, rng),
                          strict=True):
        is_output = "output" in name
        assert (np.abs(grad).max() > 0) == is_output, name
    randomise(layer, rng)
    for name, grad in zip(names, gradients(layer, inputs, goals, rng),
                          strict=True):
        assert np.abs(grad).max() > 0, name


# -- (4) Bad inputs. ---------------------------------------------------------
def test_out_of_range_ids_raise():
    inputs = np.zeros((3, UNITS), "float32")
    layer = MintLayer(num_tasks=NUM_TASKS)
    with pytest.raises(ValueError, match=r"task id out of range.*\[0, 3\)"):
        layer(inputs, np.array([0, 3, 1]))
    with pytest.raises(ValueError, match="out of range"):
        layer(inputs, np.array([-1, 0, 1]))


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "int16", "uint16", "int32", "int64"]
)
def test_any_integer_id_dtype_is_accepted(dtype):
    rng = np.random.default_rng(10)
    inputs = random_inputs(rng)
    layer = MintLayer(num_tasks=NUM_TASKS)
    layer.build(inputs.shape)
    randomise(layer, rng)
    expected = ops.convert_to_numpy(layer(inputs, mixed_ids()))
    outputs = layer(inputs, mixed_ids().astype(dtype))
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs), expected)


@pytest.mark.parametrize("task_batch", [1, 3, 5])
def test_task_batch_must_equal_inputs_batch(task_batch):
    """A task batch of 1 is broadcast on JAX and torch without the check."""
    inputs = np.zeros((4, UNITS), "float32")
    for layer, task in [
        (MintLayer(num_tasks=3, name="mint"), np.zeros(task_batch, "int32")),
        (MintLayer(task_dim=3, name="mint"), np.zeros((task_batch, 3), "float32")),
        (
            MintLayer(task_dim=2, goal_network={}, name="mint"),
            np.zeros((task_batch, 2), "float32"),
        ),
    ]:
        with pytest.raises(
            ValueError,
            match=rf"MintLayer 'mint': got {task_batch} task entries for a "
            r"batch of 4 inputs; give one task per example",
        ):
            layer(inputs, task)


@pytest.mark.parametrize(
    "kwargs, inputs_shape, task, message",
    [
        ({"num_tasks": 3}, (4,), np.zeros(4, "int32"), r"rank >= 2"),
        (
            {"num_tasks": 3}, (4, UNITS), np.zeros((4, 1), "int32"),
            r"got integer values of shape \(4, 1\)",
        ),
        (
            {"num_tasks": 3}, (4, UNITS), np.zeros((4, 2), "float32"),
            r"float task descriptor of shape \(batch, 3\); got float32 "
            r"values of shape \(4, 2\)",
        ),
        (
            {"task_dim": 3}, (4, UNITS), np.zeros((4,), "float32"),
            r"\(batch, 3\); got float32 values of shape \(4,\)",
        ),
        (
            {"task_dim": 2, "goal_network": {}}, (4, UNITS),
            np.zeros((4, 3), "float32"),
            r"takes a float goal of shape \(batch, 2\); got float32 values "
            r"of shape \(4, 3\)",
        ),
        (
            {"task_dim": 2, "goal_network": {}}, (4, UNITS),
            np.zeros((4,), "int32"),
            r"takes a float goal of shape \(batch, 2\); got integer values",
        ),
    ],
)
def test_bad_shapes_raise(kwargs, inputs_shape, task, message):
    layer = MintLayer(**kwargs)
    with pytest.raises(ValueError, match=message):
        layer(np.zeros(inputs_shape, "float32"), task)


def test_wrong_feature_size_after_build_raises():
    layer = MintLayer(num_tasks=2)
    layer(np.zeros((2, UNITS), "float32"), np.array([0, 1]))
    with pytest.raises(ValueError, match=rf"built for inputs \(batch, ..., {UNITS}\)"):
        layer(np.zeros((2, UNITS + 1), "float32"), np.array([0, 1]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs num_tasks"),
        ({"num_tasks": 3, "task_dim": 4}, "task_dim must equal num_tasks"),
        ({"goal_network": {}}, "needs task_dim"),
        (
            {"num_tasks": 3, "task_dim": 2, "goal_network": {}},
            "num_tasks has no meaning",
        ),
        ({"task_dim": 2, "goal_network": {"units": [3]}}, "Unknown goal_network keys"),
        ({"task_dim": 2, "goal_network": [3]}, "must be None or a dict"),
        (
            {"task_dim": 2, "goal_network": {"hidden_units": [4, 0]}},
            "`goal_network hidden_units` must be an integer >= 1",
        ),
        ({"num_tasks": 0}, "`num_tasks` must be None or an integer >= 1"),
        ({"task_dim": 2.5}, "`task_dim` must be None or an integer >= 1"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MintLayer(**kwargs)


# -- Theorem 1: Mint fits any per-task affine map behind a frozen W; FiLM not.
class FrozenSharedLayerModel(StepModel):
    """x -> W (C(x, task)) + b with a frozen shared Dense W (Theorem 1)."""

    def __init__(self, conditioning, units, **kwargs):
        super().__init__(**kwargs)
        self.conditioning = conditioning
        self.shared = keras.layers.Dense(units, trainable=False, name="shared")

    def call(self, inputs):
        features, task = inputs
        return self.shared(self.conditioning(features, task))


@contextlib.contextmanager
def single_torch_thread():
    """Eager torch on a loaded 2-core machine: 1 thread is ~10x faster here."""
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_affine_tasks(conditioning, data, frozen_weights):
    features, ids, targets = data
    model = FrozenSharedLayerModel(
        conditioning=conditioning, units=features.shape[-1]
    )
    model((features[:2], ids[:2]))
    model.shared.set_weights(frozen_weights)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(
        (features, ids), targets, batch_size=64, epochs=15, verbose=0,
        shuffle=True,
    )
    shared_after = model.shared.get_weights()
    for before, after in zip(frozen_weights, shared_after, strict=True):
        np.testing.assert_array_equal(before, after)
    predictions = model.predict((features, ids), batch_size=1024, verbose=0)
    return np.mean((predictions - targets) ** 2) / np.var(targets)


def test_theorem1_mint_fits_per_task_affine_maps_film_cannot():
    rng = np.random.default_rng(8)
    num_tasks, dim, per_task = 4, 6, 256
    # A random invertible (well-conditioned) frozen W and bias b.
    orthogonal, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    kernel = (orthogonal * rng.uniform(0.5, 1.5, size=dim)).astype("float32")
    frozen = [kernel, rng.normal(size=dim).astype("float32")]
    maps = rng.normal(size=(num_tasks, dim, dim)) / np.sqrt(dim)
    offsets = rng.normal(size=(num_tasks, dim))
    ids = np.repeat(np.arange(num_tasks), per_task).astype("int32")
    features = rng.normal(size=(num_tasks * per_task, dim)).astype("float32")
    targets = (np.einsum("bij,bj->bi", maps[ids], features) + offsets[ids]).astype(
        "float32")
    data = (features, ids, targets)
    start = time.perf_counter()
    with single_torch_thread():
        mint_error = fit_affine_tasks(MintLayer(num_tasks=num_tasks), data, frozen)
        film_error = fit_affine_tasks(FiLMLayer(num_tasks=num_tasks), data, frozen)
    elapsed = time.perf_counter() - start
    print(f"relative MSE: Mint {mint_error:.2e}, FiLM {film_error:.2e}, "
          f"{elapsed:.1f} s")
    assert mint_error < 1e-3
    assert film_error > 0.1
    assert film_error > 10 * mint_error


# -- (5) Same weights, same outputs and errors on the other backends. -------
CROSS_BACKEND_SNIPPET = """
import json
import re
import keras
import numpy as np
from layers.mint_layer import MintLayer

rng = np.random.default_rng(9)
inputs = rng.normal(size=(6, 2, 5)).astype("float32")
ids = np.array([0, 2, 1, 2, 0, 1], dtype="int32")
descriptors = rng.normal(size=(6, 3)).astype("float32")
goals = rng.normal(size=(6, 4)).astype("float32")
results = []
for kwargs, task in [
    (dict(num_tasks=3), ids),
    (dict(task_dim=3), descriptors),
    (dict(task_dim=4,
          goal_network=dict(hidden_units=[7, 3], activation="tanh")), goals),
]:
    layer = MintLayer(**kwargs)
    layer.build(inputs.shape)
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    results.append(keras.ops.convert_to_numpy(layer(inputs, task)).tolist())
# The validator's message (without keras's per-backend call summary).
errors = []
for task in (ids[:1], ids[:4], descriptors[:1], ids + 1):
    try:
        MintLayer(num_tasks=3, name="mint")(inputs, task)
        errors.append(None)
    except ValueError as error:
        text = re.sub(r"\\x1b\\[[0-9;]*m", "", str(error))
        errors.append([line for line in text.splitlines()
                       if "MintLayer 'mint'" in line or "out of range" in line])
print(json.dumps({{"outputs": results, "errors": errors}}))
"""


def test_same_outputs_and_errors_on_every_backend():
    here = assert_same_across_backends(
        CROSS_BACKEND_SNIPPET, atol=1e-4, rtol=1e-4
    )
    # The snippet really computes something that differs between modes.
    assert not np.allclose(here["outputs"][0], here["outputs"][1])
    assert here["errors"] == [
        ["MintLayer 'mint': got 1 task entries for a batch of 6 inputs; give "
         "one task per example (e.g. np.full(batch, task_id))."],
        ["MintLayer 'mint': got 4 task entries for a batch of 6 inputs; give "
         "one task per example (e.g. np.full(batch, task_id))."],
        ["MintLayer 'mint': got 1 task entries for a batch of 6 inputs; give "
         "one task per example (e.g. np.full(batch, task_id))."],
        ["task id out of range: got [3, 3], expected integers in [0, 3)."],
    ]
