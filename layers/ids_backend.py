"""The layers' only backend-specific code: checking concrete task ids.

Layers are written with `keras.ops` and import under every Keras backend
(numpy and openvino included, for inference). Checking that task ids lie in
range needs their concrete values, which each backend exposes differently;
this module holds that one check and nothing else.

NOTE 1: the check runs only where it costs no accelerator synchronisation:
  NumPy values, concrete JAX arrays, eager TensorFlow tensors and CPU torch
  tensors. On a torch accelerator it is a device-side assert
  (`torch._assert_async`: the error surfaces at the next synchronisation).
NOTE 2: under `jax.jit`, `tf.function` and `torch.compile` no concrete value
  exists; out-of-range ids then follow the backend's gather semantics (JAX
  clamps or fills, TF-XLA clamps) and give wrong outputs without an error.
  Validate ids in the input pipeline for compiled code.
"""

import keras
import numpy as np


def _concrete_values(indices):
    """NumPy values of `indices`, or None where none can be read for free."""
    if isinstance(indices, keras.KerasTensor):
        return None
    if isinstance(indices, (np.ndarray, np.generic, list, tuple, int)):
        return np.asarray(indices)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if isinstance(indices, jax.core.Tracer):
            return None
        return np.asarray(jax.device_get(indices))
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly() or not hasattr(indices, "numpy"):
            return None
        return indices.numpy()
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
        if indices.device.type != "cpu":
            return indices  # checked on the device, see check_index_range
        return indices.detach().numpy()
    return np.asarray(keras.ops.convert_to_numpy(indices))


def check_index_range(indices, upper, what="task id"):
    """Raises ValueError if integer `indices` fall outside [0, upper).

    Args:
        indices: integer ids, any shape: a NumPy array, a list or a tensor
            of the active backend.
        upper: the exclusive upper bound (e.g. `num_tasks`).
        what: how the error message names one index.

    Ids without a concrete value (symbolic or traced under jit) are not
    checked (NOTE 2).

    Example:

    >>> check_index_range(np.array([0, 2]), 3)
    >>> check_index_range(np.array([0, 3]), 3)
    Traceback (most recent call last):
    ...
    ValueError: task id out of range: got [3], expected integers in [0, 3).
    """
    values = _concrete_values(indices)
    if values is None:
        return
    if not isinstance(values, np.ndarray):  # a torch accelerator tensor
        import torch

        torch._assert_async(
            ((values >= 0) & (values < upper)).all(),
            f"{what} out of range [0, {upper})",
        )
        return
    if values.size and (values.min() < 0 or values.max() >= upper):
        bad = values[(values < 0) | (values >= upper)]
        raise ValueError(
            f"{what} out of range: got {bad.tolist()[:8]}, expected integers "
            f"in [0, {upper})."
        )
