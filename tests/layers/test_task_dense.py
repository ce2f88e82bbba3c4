"""Tests of TaskDense (one dense layer per task: ids and every task's column)."""

import keras
import numpy as np
import pytest
from keras import ops

from layers.task_dense import TaskDense
from tests.harness import assert_same_across_backends, run_layer_checks
from training import value_and_grad

IN, UNITS, NUM_TASKS, BATCH = 5, 4, 3, 6
IDS = np.array([0, 2, 1, 2, 0, 1], dtype="int32")


class ColumnTaskDense(TaskDense):
    """TaskDense called with task=None behind the harness's (features, task)
    call: the harness always passes a task, which this subclass drops."""

    def build(self, inputs_shape, task_shape=None):
        super().build(inputs_shape)

    def call(self, inputs, task):
        return super().call(inputs)

    def compute_output_shape(self, inputs_shape, task_shape=None):
        return super().compute_output_shape(inputs_shape)


def randomise(layer, rng):
    values = [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    layer.set_weights(values)
    return values


def dense_reference(inputs, kernel, bias, activation=np.tanh):
    """NumPy dense layer of one task on one example."""
    return activation(inputs @ kernel + bias)


@pytest.mark.parametrize("training", [True, False])
def test_ids_match_numpy_mixed_batch(training):
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(BATCH, IN)).astype("float32")
    layer = TaskDense(UNITS, NUM_TASKS, activation="tanh")
    layer.build(inputs.shape, IDS.shape)
    kernels, biases = randomise(layer, rng)
    outputs = layer(inputs, IDS, training=training)
    expected = np.stack([
        dense_reference(inputs[b], kernels[k], biases[k])
        for b, k in enumerate(IDS)
    ])
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("rank", [2, 3])
def test_columns_match_numpy(rank):
    """task=None: (batch, in) through every task's layer, (batch, T, in)
    column t through task t's layer."""
    rng = np.random.default_rng(2)
    shape = (BATCH, IN) if rank == 2 else (BATCH, NUM_TASKS, IN)
    inputs = rng.normal(size=shape).astype("float32")
    layer = TaskDense(UNITS, NUM_TASKS, activation="tanh")
    layer.build(inputs.shape)
    kernels, biases = randomise(layer, rng)
    outputs = ops.convert_to_numpy(layer(inputs))
    expected = np.empty((BATCH, NUM_TASKS, UNITS), "float32")
    for b in range(BATCH):
        for t in range(NUM_TASKS):
            column = inputs[b] if rank == 2 else inputs[b, t]
            expected[b, t] = dense_reference(column, kernels[t], biases[t])
    assert outputs.shape == (BATCH, NUM_TASKS, UNITS)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)


def test_without_bias_matches_numpy():
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(BATCH, IN)).astype("float32")
    layer = TaskDense(UNITS, NUM_TASKS, use_bias=False)
    layer.build(inputs.shape, IDS.shape)
    assert [w.path.split("/")[-1] for w in layer.weights] == ["task_kernels"]
    (kernels,) = randomise(layer, rng)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(inputs, IDS)),
        np.einsum("bi,bio->bo", inputs, kernels[IDS]),
        rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(inputs)),
        np.einsum("bi,tio->bto", inputs, kernels),
        rtol=1e-5, atol=1e-6,
    )


def test_each_task_kernel_is_initialised_like_a_dense_kernel():
    """glorot_uniform per (in, units) slice, a different draw per task."""
    in_dim, units, num_tasks = 16, 8, 20
    layer = TaskDense(units, num_tasks)
    layer.build((2, in_dim))
    kernels = ops.convert_to_numpy(layer.task_kernels)
    limit = np.sqrt(6.0 / (in_dim + units))
    # The rank-3 reading of Keras would give limit / sqrt(num_tasks).
    assert np.abs(kernels).max() <= limit
    assert np.abs(kernels).max() > 0.9 * limit
    np.testing.assert_allclose(kernels.std(), limit / np.sqrt(3), rtol=0.1)
    assert len({kernel.tobytes() for kernel in kernels}) == num_tasks
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.task_biases), 0)


@pytest.mark.parametrize(
    "mode, inputs_shape, expected_output_shape",
    [
        ("ids", (BATCH, IN), (BATCH, UNITS)),
        ("columns", (BATCH, IN), (BATCH, NUM_TASKS, UNITS)),
        ("columns", (BATCH, NUM_TASKS, IN), (BATCH, NUM_TASKS, UNITS)),
    ],
)
def test_layer_checks(mode, inputs_shape, expected_output_shape, tmp_path):
    rng = np.random.default_rng(4)
    inputs = rng.normal(size=inputs_shape).astype("float32")
    if mode == "ids":
        layer_cls = TaskDense
        kwargs = {"units": UNITS, "num_tasks": NUM_TASKS, "activation": "relu",
                  "kernel_regularizer": "l2"}
    else:
        layer_cls = ColumnTaskDense
        kwargs = {"units": UNITS, "num_tasks": NUM_TASKS,
                  "bias_initializer": "random_normal"}
    run_layer_checks(
        layer_cls, kwargs, inputs, IDS.astype("int64"), tmp_path,
        expected_output_shape=expected_output_shape,
        expected_num_trainable_weights=2,
    )


def test_gradients_reach_only_the_tasks_in_the_batch():
    rng = np.random.default_rng(5)
    inputs = rng.normal(size=(BATCH, IN)).astype("float32")
    ids = np.array([1, 1, 0, 0, 1, 0], dtype="int32")  # task 2 absent
    projection = ops.convert_to_tensor(
        rng.normal(size=(BATCH, UNITS)).astype("float32"))
    layer = TaskDense(UNITS, NUM_TASKS)
    layer.build(inputs.shape, ids.shape)
    randomise(layer, rng)

    def loss_fn(trainable_values):
        outputs, _ = layer.stateless_call(trainable_values, [], inputs, ids)
        return ops.sum(ops.multiply(outputs, projection))

    _, grads = value_and_grad(loss_fn)([v.value for v in layer.trainable_variables])
    assert len(grads) == 2
    kernel_grad, bias_grad = (ops.convert_to_numpy(g) for g in grads)
    projection = ops.convert_to_numpy(projection)
    for task in range(NUM_TASKS):  # d/dW_k = sum over task k's examples x p^T
        mine = ids == task
        np.testing.assert_allclose(
            kernel_grad[task], inputs[mine].T @ projection[mine],
            rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            bias_grad[task], projection[mine].sum(0), rtol=1e-5, atol=1e-5)
    assert np.all(kernel_grad[2] == 0) and np.all(bias_grad[2] == 0)
    assert np.count_nonzero(kernel_grad[:2]) == kernel_grad[:2].size


def test_out_of_range_ids_raise():
    layer = TaskDense(UNITS, NUM_TASKS)
    with pytest.raises(ValueError, match=r"task id out of range.*\[0, 3\)"):
        layer(np.zeros((2, IN), "float32"), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"task id out of range: got \[-1\]"):
        layer(np.zeros((2, IN), "float32"), np.array([-1, 0]))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int64"])
def test_any_integer_id_dtype_is_accepted(dtype):
    rng = np.random.default_rng(6)
    inputs = rng.normal(size=(BATCH, IN)).astype("float32")
    layer = TaskDense(UNITS, NUM_TASKS)
    layer.build(inputs.shape, IDS.shape)
    randomise(layer, rng)
    expected = ops.convert_to_numpy(layer(inputs, IDS))
    outputs = layer(inputs, IDS.astype(dtype))
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs), expected)


def test_float_descriptors_raise():
    with pytest.raises(
        ValueError,
        match=r"TaskDense 'heads' takes integer task ids of shape \(batch,\); "
        r"got float32 values of shape \(4, 3\)",
    ):
        TaskDense(UNITS, NUM_TASKS, name="heads")(
            np.zeros((4, IN), "float32"), np.eye(3, dtype="float32")[[0, 1, 2, 0]])


def test_task_batch_must_equal_inputs_batch():
    with pytest.raises(
        ValueError,
        match=r"TaskDense 'heads': got 1 task entries for a batch of 4 inputs",
    ):
        TaskDense(UNITS, NUM_TASKS, name="heads")(
            np.zeros((4, IN), "float32"), np.zeros(1, "int32"))


@pytest.mark.parametrize(
    "inputs_shape, task, message",
    [
        ((4,), None, r"TaskDense 'heads' takes inputs \(batch, in\) or "
         r"\(batch, num_tasks, in\) when called with task=None, with a known "
         r"`in`; got shape \(4,\)"),
        ((4, NUM_TASKS, 2, IN), None, r"got shape \(4, 3, 2, 5\)"),
        ((4, NUM_TASKS, IN), np.zeros(4, "int32"),
         r"inputs \(batch, in\) when called with task ids \(inputs "
         r"\(batch, num_tasks, in\) are for task=None\)"),
        ((4, 2, IN), None, r"TaskDense 'heads' has 3 tasks: inputs \(batch, "
         r"num_tasks, in\) need 3 columns; got shape \(4, 2, 5\)"),
        ((4, IN), np.zeros((4, 1), "int32"),
         r"got integer values of shape \(4, 1\)"),
    ],
)
def test_bad_shapes_raise(inputs_shape, task, message):
    layer = TaskDense(UNITS, NUM_TASKS, name="heads")
    with pytest.raises(ValueError, match=message):
        layer(np.zeros(inputs_shape, "float32"), task)


def test_in_must_not_change_after_build():
    layer = TaskDense(UNITS, NUM_TASKS, name="heads")
    layer(np.zeros((2, IN), "float32"), np.array([0, 1]))
    for task in (np.array([0, 1]), None):
        with pytest.raises(
            ValueError,
            match=r"TaskDense 'heads' was built for inputs with in = 5; got "
            r"shape \(2, 7\)",
        ):
            layer(np.zeros((2, 7), "float32"), task)


def test_symbolic_shapes():
    layer = TaskDense(UNITS, NUM_TASKS)
    features = keras.Input((NUM_TASKS, IN))
    assert tuple(layer(features).shape) == (None, NUM_TASKS, UNITS)
    ids = keras.Input((), dtype="int32")
    assert tuple(layer(keras.Input((IN,)), ids).shape) == (None, UNITS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": 0, "num_tasks": 3}, "`units` must be an integer >= 1"),
        ({"units": 2, "num_tasks": -1}, "`num_tasks` must be an integer >= 1"),
        ({"units": 2, "num_tasks": True}, "`num_tasks` must be an integer >= 1"),
        ({"units": 2.5, "num_tasks": 3}, "`units` must be an integer >= 1"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskDense(**kwargs)


CROSS_BACKEND_SNIPPET = """
import json
import keras
import numpy as np
from layers.task_dense import TaskDense

rng = np.random.default_rng(9)
inputs = rng.normal(size=(6, 5)).astype("float32")
columns = rng.normal(size=(6, 3, 5)).astype("float32")
ids = np.array([0, 2, 1, 2, 0, 1], dtype="int32")
layer = TaskDense(4, num_tasks=3, activation="tanh")
layer.build(inputs.shape)
layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
results = [keras.ops.convert_to_numpy(outputs).tolist()
           for outputs in (layer(inputs, ids), layer(inputs), layer(columns))]
print(json.dumps(results))
"""


def test_same_outputs_on_every_backend():
    here = assert_same_across_backends(CROSS_BACKEND_SNIPPET)
    ids_outputs, every_task, own_columns = (np.asarray(r) for r in here)
    # ids select each example's own column of the every-task outputs.
    np.testing.assert_allclose(
        ids_outputs, every_task[np.arange(6), IDS], rtol=1e-5, atol=1e-6)
    assert not np.allclose(every_task, own_columns)
