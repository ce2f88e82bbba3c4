"""The layers' only backend-specific code: id checks and one layout choice.

Layers are written with `keras.ops` and import under every Keras backend
(numpy and openvino included, for inference). Two things need to know the
backend, and live here so that no layer branches on it:

* checking that task ids lie in range needs their concrete values, which
  each backend exposes differently (`check_index_range`, NOTES 1-2);
* a measured layout preference of SkillLoRADense's low-rank matmuls
  (`prefers_rank_first_matmuls`, NOTE 3).

NOTE 1: the check runs only where it costs no accelerator synchronisation:
  NumPy values, concrete JAX arrays, eager TensorFlow tensors and CPU torch
  tensors. On a torch accelerator it is a device-side assert
  (`torch._assert_async`: the error surfaces at the next synchronisation).
NOTE 2: under `jax.jit`, `tf.function` and `torch.compile` no concrete value
  exists; out-of-range ids then follow the backend's gather semantics (JAX
  clamps or fills, TF-XLA clamps) and give wrong outputs without an error.
  Validate ids in the input pipeline for compiled code.
NOTE 3: eager torch runs the LoRA path of SkillLoRADense about 2x faster
  with the rank axis first and hand-written matmul gradients, while XLA
  (JAX, TF) ran that layout 4-11% slower than plain einsums
  (layers/skill_lora_dense.py NOTE 12, benchmarks/README.md). Both layouts
  compute the same values and are tested on every backend.
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


def prefers_rank_first_matmuls():
    """Whether SkillLoRADense should use its rank-first matmuls (NOTE 3).

    Returns:
        True on the torch backend, False elsewhere.
    """
    return keras.backend.backend() == "torch"
