"""Tests of CrossStitch (Misra et al.'s unit, generalised to T task columns)."""

import keras
import numpy as np
import pytest
from keras import ops

from layers.cross_stitch import CrossStitch
from tests.harness import assert_same_across_backends, run_layer_checks
from training import value_and_grad

NUM_TASKS, BATCH = 3, 6


class CrossStitchWithTask(CrossStitch):
    """CrossStitch behind the harness's (features, task) call: the harness
    always passes a task, which this subclass drops."""

    def call(self, inputs, task):
        return super().call(inputs)


def stitch_reference(inputs, stitch_weights):
    """NumPy cross-stitch: out[b, t] = sum_s w[t, s] inputs[b, s]."""
    outputs = np.zeros_like(inputs)
    for b in range(inputs.shape[0]):
        for t in range(inputs.shape[1]):
            for s in range(inputs.shape[1]):
                outputs[b, t] += stitch_weights[t, s] * inputs[b, s]
    return outputs


@pytest.mark.parametrize("trailing", [(4,), (2, 3), (2, 2, 3)])
def test_matches_numpy(trailing):
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(BATCH, NUM_TASKS) + trailing).astype("float32")
    layer = CrossStitch(NUM_TASKS)
    layer.build(inputs.shape)
    stitch_weights = rng.normal(size=(NUM_TASKS, NUM_TASKS)).astype("float32")
    layer.set_weights([stitch_weights])
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(inputs)),
        stitch_reference(inputs, stitch_weights),
        rtol=1e-5, atol=1e-5,
    )


@pytest.mark.parametrize(
    "num_tasks, self_weight", [(2, 0.9), (3, 0.9), (5, 0.6), (20, 0.5)]
)
def test_initial_weights_rows_sum_to_one(num_tasks, self_weight):
    layer = CrossStitch(num_tasks, self_weight=self_weight)
    layer.build((2, num_tasks, 4))
    stitch_weights = ops.convert_to_numpy(layer.stitch_weights)
    other_weight = (1 - self_weight) / (num_tasks - 1)
    expected = np.where(np.eye(num_tasks, dtype=bool), self_weight, other_weight)
    np.testing.assert_allclose(stitch_weights, expected, rtol=1e-6)
    np.testing.assert_allclose(stitch_weights.sum(axis=1), 1.0, rtol=1e-6)


def test_misra_two_task_initialisation():
    layer = CrossStitch(2)
    layer.build((2, 2, 4))
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.stitch_weights), [[0.9, 0.1], [0.1, 0.9]],
        rtol=1e-6)


def test_self_weight_one_is_the_identity():
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(BATCH, NUM_TASKS, 2, 3)).astype("float32")
    layer = CrossStitch(NUM_TASKS, self_weight=1.0)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(inputs)), inputs)


def test_a_batch_of_equal_columns_is_unchanged_at_init():
    """Rows sum to 1: equal columns stay equal (a convex combination)."""
    rng = np.random.default_rng(3)
    column = rng.normal(size=(BATCH, 1, 4)).astype("float32")
    inputs = np.repeat(column, NUM_TASKS, axis=1)
    outputs = ops.convert_to_numpy(CrossStitch(NUM_TASKS, 0.7)(inputs))
    np.testing.assert_allclose(outputs, inputs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trailing", [(4,), (2, 3)])
def test_layer_checks(trailing, tmp_path):
    rng = np.random.default_rng(4)
    inputs = rng.normal(size=(BATCH, NUM_TASKS) + trailing).astype("float32")
    task = np.array([0, 2, 1, 2, 0, 1], dtype="int32")  # dropped by the subclass
    run_layer_checks(
        CrossStitchWithTask, {"num_tasks": NUM_TASKS, "self_weight": 0.8},
        inputs, task, tmp_path,
        expected_output_shape=(BATCH, NUM_TASKS) + trailing,
        expected_num_trainable_weights=1,
    )


def test_gradient_matches_numpy():
    """d/dw[t, s] sum(out * p) = sum over batch and features of p[:, t] x[:, s]."""
    rng = np.random.default_rng(5)
    inputs = rng.normal(size=(BATCH, NUM_TASKS, 2, 3)).astype("float32")
    projection = rng.normal(size=inputs.shape).astype("float32")
    layer = CrossStitch(NUM_TASKS)
    layer.build(inputs.shape)

    def loss_fn(trainable_values):
        outputs, _ = layer.stateless_call(trainable_values, [], inputs)
        return ops.sum(ops.multiply(outputs, projection))

    _, (grad,) = value_and_grad(loss_fn)(
        [v.value for v in layer.trainable_variables])
    np.testing.assert_allclose(
        ops.convert_to_numpy(grad),
        np.einsum("btxy,bsxy->ts", projection, inputs),
        rtol=1e-4, atol=1e-4,
    )


def test_symbolic_shapes():
    features = keras.Input((NUM_TASKS, 5, 2))
    assert tuple(CrossStitch(NUM_TASKS)(features).shape) == (
        None, NUM_TASKS, 5, 2)


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize(
    "inputs_shape", [(BATCH, NUM_TASKS), (BATCH, 2, 4), (BATCH, 4, 2, 2)]
)
def test_bad_shapes_raise(inputs_shape):
    with pytest.raises(
        ValueError,
        match=r"CrossStitch 'stitch' mixes 3 task columns: inputs need shape "
        rf"\(batch, 3, ...\) with rank >= 3; got shape "
        rf"{re_shape(inputs_shape)}",
    ):
        CrossStitch(NUM_TASKS, name="stitch")(np.zeros(inputs_shape, "float32"))


def test_columns_must_not_change_after_build():
    layer = CrossStitch(NUM_TASKS, name="stitch")
    layer(np.zeros((2, NUM_TASKS, 4), "float32"))
    # Trailing axes may change (the weights do not depend on them) ...
    assert tuple(layer(np.zeros((2, NUM_TASKS, 2, 2), "float32")).shape) == (
        2, NUM_TASKS, 2, 2)
    # ... the number of columns may not.
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 4\)"):
        layer(np.zeros((2, 2, 4), "float32"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_tasks": 1}, r"`num_tasks` must be an integer >= 2; got 1"),
        ({"num_tasks": True}, r"`num_tasks` must be an integer >= 2"),
        ({"num_tasks": 2.5}, r"`num_tasks` must be an integer >= 2"),
        ({"num_tasks": 2, "self_weight": 0.0}, r"must be a float in \(0, 1\]"),
        ({"num_tasks": 2, "self_weight": 1.5}, r"got 1.5"),
        ({"num_tasks": 2, "self_weight": -0.1}, r"got -0.1"),
        ({"num_tasks": 2, "self_weight": float("nan")}, r"got nan"),
        ({"num_tasks": 2, "self_weight": True}, r"got True"),
        ({"num_tasks": 2, "self_weight": "0.9"}, r"got '0.9'"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CrossStitch(**kwargs)


def test_config_round_trip_keeps_arguments():
    layer = CrossStitch(4, self_weight=0.75, name="stitch")
    config = layer.get_config()
    assert (config["num_tasks"], config["self_weight"]) == (4, 0.75)
    rebuilt = CrossStitch.from_config(config)
    rebuilt.build((1, 4, 2))
    np.testing.assert_allclose(
        ops.convert_to_numpy(rebuilt.stitch_weights).diagonal(), 0.75)


CROSS_BACKEND_SNIPPET = """
import json
import keras
import numpy as np
from layers.cross_stitch import CrossStitch

rng = np.random.default_rng(9)
results = []
for shape in [(6, 3, 4), (6, 3, 2, 2, 3)]:
    inputs = rng.normal(size=shape).astype("float32")
    layer = CrossStitch(3)
    layer.build(inputs.shape)
    layer.set_weights([rng.normal(size=(3, 3)).astype("float32")])
    results.append(keras.ops.convert_to_numpy(layer(inputs)).tolist())
print(json.dumps(results))
"""


def test_same_outputs_on_every_backend():
    here = assert_same_across_backends(CROSS_BACKEND_SNIPPET)
    assert [np.asarray(r).shape for r in here] == [(6, 3, 4), (6, 3, 2, 2, 3)]
