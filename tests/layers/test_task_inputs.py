"""Tests of the shared task-input validator and the id range check."""

import keras
import numpy as np
import pytest
from keras import ops

from layers.layers_backend import check_index_range
from layers.mint_layer import MintLayer
from layers.task_inputs import check_task_inputs, is_integer, positive_int

LAYER = keras.layers.Identity(name="probe")


def _np(x):
    return ops.convert_to_numpy(x)


# -- check_index_range (moved from tests/training/test_backend.py). -----------
def test_check_index_range_raises_with_the_offending_ids():
    check_index_range(ops.convert_to_tensor(np.array([0, 2], "int32")), 3)
    with pytest.raises(ValueError, match=r"out of range: got \[5\].*\[0, 3\)"):
        check_index_range(ops.convert_to_tensor(np.array([0, 5], "int32")), 3)
    with pytest.raises(ValueError, match=r"out of range: got \[-1\]"):
        check_index_range(ops.convert_to_tensor(np.array([-1], "int32")), 3)
    with pytest.raises(ValueError, match="out of range"):  # NumPy input too
        check_index_range(np.array([4]), 3)
    with pytest.raises(ValueError, match=r"skill out of range: got \[7\]"):
        check_index_range([0, 7], 3, what="skill")


def test_check_index_range_skips_symbolic_ids():
    check_index_range(keras.KerasTensor((None,), dtype="int32"), 3)


# -- is_integer, positive_int. -------------------------------------------------
@pytest.mark.parametrize(
    "dtype, expected",
    [("uint8", True), ("int8", True), ("int64", True), ("float32", False),
     ("bool", False)],
)
def test_is_integer(dtype, expected):
    assert is_integer(np.zeros(2, dtype)) is expected
    assert is_integer(ops.convert_to_tensor(np.zeros(2, dtype))) is expected


def test_positive_int():
    assert positive_int(3, "n") == 3
    assert positive_int(3.0, "n") == 3 and isinstance(positive_int(3.0, "n"), int)
    assert positive_int(0, "n", minimum=0) == 0
    assert positive_int(None, "n", allow_none=True) is None
    for bad in (0, -1, 2.5, True, "3", None):
        with pytest.raises(ValueError, match=r"`n` must be an integer >= 1"):
            positive_int(bad, "n")
    with pytest.raises(ValueError, match=r"`n` must be None or an integer >= 1"):
        positive_int(0, "n", allow_none=True)


# -- check_task_inputs. --------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_integer_ids_of_any_dtype_come_back_int32(dtype):
    ids, is_ids = check_task_inputs(
        LAYER, np.zeros((3, 2)), np.array([0, 2, 1], dtype), num_tasks=3
    )
    assert is_ids is True
    assert keras.backend.standardize_dtype(ids.dtype) == "int32"
    np.testing.assert_array_equal(_np(ids), [0, 2, 1])


def test_descriptors_come_back_unchanged():
    descriptors = np.arange(6, dtype="float32").reshape(2, 3)
    task, is_ids = check_task_inputs(
        LAYER, np.zeros((2, 4)), descriptors, num_tasks=3, descriptor_shape=(3,)
    )
    assert is_ids is False
    np.testing.assert_array_equal(_np(task), descriptors)
    # A None entry accepts any size, and several axes are allowed.
    check_task_inputs(LAYER, np.zeros((2, 4)), np.zeros((2, 5, 7), "float32"),
                      descriptor_shape=(None, 7))


def test_symbolic_inputs_with_unknown_batch_pass():
    features = keras.KerasTensor((None, 4))
    ids = keras.KerasTensor((None,), dtype="int32")
    task, is_ids = check_task_inputs(LAYER, features, ids, num_tasks=3)
    assert is_ids and tuple(task.shape) == (None,)


def test_missing_task_raises():
    with pytest.raises(ValueError, match=r"Identity 'probe' needs a task"):
        check_task_inputs(LAYER, np.zeros((2, 4)), None, num_tasks=3)


@pytest.mark.parametrize("task_batch", [1, 3])
def test_task_batch_must_equal_inputs_batch(task_batch):
    message = (
        rf"Identity 'probe': got {task_batch} task entries for a batch of 2 "
        r"inputs; give one task per example \(e.g. np.full\(batch, task_id\)\)"
    )
    with pytest.raises(ValueError, match=message):
        check_task_inputs(LAYER, np.zeros((2, 4)),
                          np.zeros(task_batch, "int32"), num_tasks=3)
    with pytest.raises(ValueError, match=message):
        check_task_inputs(LAYER, np.zeros((2, 4)),
                          np.zeros((task_batch, 3), "float32"),
                          descriptor_shape=(3,))


@pytest.mark.parametrize(
    "task, kwargs, message",
    [
        # Float where only ids are taken.
        (np.zeros((2, 3), "float32"), dict(num_tasks=3),
         r"takes integer task ids of shape \(batch,\); got float32 values of "
         r"shape \(2, 3\)"),
        # Ids where only descriptors are taken (named as the layer names them).
        (np.zeros(2, "int32"), dict(descriptor_shape=(3,), descriptor_name="goal"),
         r"takes a float goal of shape \(batch, 3\); got integer values of "
         r"shape \(2,\)"),
        # Ids of the wrong rank.
        (np.zeros((2, 1), "int32"), dict(num_tasks=3),
         r"got integer values of shape \(2, 1\)"),
        (np.array(1, "int32"), dict(num_tasks=3),
         r"got integer values of shape \(\)"),
        # Descriptors of the wrong size or rank.
        (np.zeros((2, 4), "float32"), dict(num_tasks=3, descriptor_shape=(3,)),
         r"takes integer task ids of shape \(batch,\) or a float task "
         r"descriptor of shape \(batch, 3\); got float32 values of shape "
         r"\(2, 4\)"),
        (np.zeros((2, 3, 1), "float32"), dict(descriptor_shape=(3,)),
         r"shape \(2, 3, 1\)"),
        (np.zeros(2, "bool"), dict(num_tasks=3, descriptor_shape=(3,)),
         r"got bool values of shape \(2,\)"),
    ],
)
def test_wrong_kind_rank_or_size_raises(task, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_task_inputs(LAYER, np.zeros((2, 4)), task, **kwargs)


def test_out_of_range_concrete_ids_raise():
    for ids in (np.array([0, 3]), ops.convert_to_tensor(np.array([-1, 0]))):
        with pytest.raises(ValueError, match=r"task id out of range"):
            check_task_inputs(LAYER, np.zeros((2, 4)), ids, num_tasks=3)


# -- What out-of-range ids do where they cannot be checked. --------------------
def test_out_of_range_ids_under_jit_follow_the_backends_gather():
    """Pins layers_backend NOTE 2, measured on keras 3.15 (JAX 0.10, TF 2.21).

    Compiled code has no concrete ids to check: TF-XLA wraps a negative id
    once (keras's `take`, NumPy style) and then clamps into [0, K); JAX wraps
    ids in [-K, 0) and fills the rest with NaN. Plain TF graphs (no XLA)
    raise TF's own error. Torch `predict` runs eagerly and raises ValueError
    (torch.compile raised an inductor `index out of bounds` RuntimeError).
    """
    rng = np.random.default_rng(0)
    num_tasks = 3
    features = rng.normal(size=(6, 4)).astype("float32")
    bad = np.array([0, 3, -1, 5, 2, -4], "int32")
    features_input = keras.Input((4,))
    task_input = keras.Input((), dtype="int32")
    layer = MintLayer(num_tasks=num_tasks)
    model = keras.Model([features_input, task_input],
                        layer(features_input, task_input))
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    )

    def eager(ids, rows=slice(None)):
        return _np(model([features[rows], ids[rows].astype("int32")]))

    backend = keras.backend.backend()
    if backend == "torch":
        with pytest.raises(ValueError, match=r"task id out of range: got "
                                             r"\[3, -1, 5, -4\]"):
            model.predict([features, bad], verbose=0)
        return
    model.compile(jit_compile=True)
    outputs = model.predict([features, bad], verbose=0)
    wrapped = np.where(bad < 0, bad + num_tasks, bad)
    if backend == "tensorflow":
        np.testing.assert_allclose(
            outputs, eager(np.clip(wrapped, 0, num_tasks - 1)), rtol=1e-5,
            atol=1e-5,
        )
        import tensorflow as tf

        model.compile(jit_compile=False)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"indices\[\d\] = -?\d+ is not in \[0, 3\)"):
            model.predict([features, bad], verbose=0)
    else:
        in_range = (wrapped >= 0) & (wrapped < num_tasks)
        np.testing.assert_array_equal(in_range, [1, 0, 1, 0, 1, 0])
        np.testing.assert_allclose(
            outputs[in_range], eager(wrapped, in_range), rtol=1e-5, atol=1e-5
        )
        assert np.isnan(outputs[~in_range]).all()
