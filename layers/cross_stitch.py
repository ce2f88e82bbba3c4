"""CrossStitch: learned linear mixing of the task columns of a network.

Paper: Misra, Shrivastava, Gupta, Hebert, "Cross-stitch Networks for
Multi-task Learning", CVPR 2016. Two networks, one per task, exchange
activations after a layer through a cross-stitch unit,

    [x~_A]   [a_AA  a_AB] [x_A]
    [x~_B] = [a_BA  a_BB] [x_B],

with the a's learned. Here generalised to T task columns, one scalar per
(task, task) pair:

    out[:, t] = sum_s stitch_weights[t, s] * inputs[:, s],

with `stitch_weights` (T, T) initialised to `self_weight` on the diagonal
and `(1 - self_weight) / (T - 1)` off it, so that every row sums to 1 (a
convex combination at init; Misra's (a_S, a_D) = (0.9, 0.1) for 2 tasks
is `self_weight=0.9`). A baseline of "Mint: Matrix-Interleaving for
Multi-Task Learning" (ICLR 2020 submission), whose columns are the
task-dense layers of layers/task_dense.py (called with `task=None`).

NOTE 1: one unit (one (T, T) matrix) per layer, a scalar per pair of tasks
  shared by every channel and position. Misra et al. also discuss
  finer-grained units (e.g. per channel); they are not implemented.
NOTE 2: the weights are free after init: no constraint keeps the rows
  convex or positive during training. Misra et al. train the units with a
  larger learning rate than the rest of the network; here they share the
  optimizer's learning rate.
NOTE 3: the inputs are (batch, T, ...) of any rank >= 3 (dense columns
  (batch, T, units), feature maps (batch, T, h, w, c)); the columns are
  mixed along axis 1 and every other axis is left as it is.
NOTE 4: T >= 2 (mixing needs two columns: with T = 1 the off-diagonal
  initial value is undefined and the unit would be a scale).
"""

import keras
import numpy as np
from keras import ops

from layers.task_inputs import describe, positive_int


@keras.saving.register_keras_serializable(package="modular_zoo")
class CrossStitch(keras.layers.Layer):
    """A cross-stitch unit: `out[:, t] = sum_s stitch_weights[t, s] * inputs[:, s]`.

    Mixes the task columns of inputs (batch, num_tasks, ...) with a learned
    (num_tasks, num_tasks) matrix, one scalar per pair of tasks (NOTE 1),
    initialised to `self_weight` on the diagonal and `(1 - self_weight) /
    (num_tasks - 1)` off it (rows sum to 1; unconstrained afterwards,
    NOTE 2). `self_weight=1` starts as the identity.

    Args:
        num_tasks: Integer >= 2, T, the number of task columns (NOTE 4).
        self_weight: Float in (0, 1], the initial weight of a column's own
            task. Defaults to 0.9 (Misra et al.).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, num_tasks, ...)`, rank >= 3
            (NOTE 3).

    Input shape:
        `(batch, num_tasks, ...)`.

    Output shape:
        `(batch, num_tasks, ...)`, the shape of `inputs`.

    Example:

    >>> stitch = CrossStitch(num_tasks=2)  # [[0.9, 0.1], [0.1, 0.9]]
    >>> columns = np.array([[[1.0, 1.0], [0.0, 2.0]]], "float32")  # (1, 2, 2)
    >>> mixed = ops.convert_to_numpy(stitch(columns)).astype("float64")
    >>> np.round(mixed, 3).tolist()
    [[[0.9, 1.1], [0.1, 1.9]]]
    >>> stitch(np.ones((1, 3, 2), "float32"))
    Traceback (most recent call last):
    ...
    ValueError: ...mixes 2 task columns: inputs need shape (batch, 2, ...) with rank >= 3; got shape (1, 3, 2)...
    """

    def __init__(self, num_tasks, self_weight=0.9, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = positive_int(num_tasks, "num_tasks", minimum=2)
        if (
            isinstance(self_weight, bool)
            or not isinstance(self_weight, (int, float, np.floating))
            or not 0.0 < self_weight <= 1.0
        ):
            raise ValueError(
                f"`self_weight` must be a float in (0, 1]; got {self_weight!r}."
            )
        self.self_weight = float(self_weight)
        self.supports_masking = True

    def initial_stitch_weights(self):
        """The initial (num_tasks, num_tasks) matrix, as NumPy float32."""
        other_weight = (1.0 - self.self_weight) / (self.num_tasks - 1)
        weights = np.full((self.num_tasks, self.num_tasks), other_weight)
        np.fill_diagonal(weights, self.self_weight)
        return weights.astype("float32")

    def _check_inputs_shape(self, inputs_shape):
        inputs_shape = tuple(inputs_shape)
        if len(inputs_shape) < 3 or inputs_shape[1] not in (None, self.num_tasks):
            raise ValueError(
                f"{describe(self)} mixes {self.num_tasks} task columns: inputs "
                f"need shape (batch, {self.num_tasks}, ...) with rank >= 3; "
                f"got shape {inputs_shape}."
            )

    def build(self, inputs_shape):
        self._check_inputs_shape(inputs_shape)
        self.stitch_weights = self.add_weight(
            name="stitch_weights",
            shape=(self.num_tasks, self.num_tasks),
            initializer=self._stitch_initializer,
        )

    def _stitch_initializer(self, shape, dtype=None):
        return ops.convert_to_tensor(self.initial_stitch_weights(), dtype=dtype)

    def call(self, inputs):
        self._check_inputs_shape(inputs.shape)
        # NOTE 3: mix along axis 1, every other axis as it is.
        return ops.einsum("ts,bs...->bt...", self.stitch_weights, inputs)

    def compute_output_shape(self, inputs_shape):
        self._check_inputs_shape(inputs_shape)
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_tasks=self.num_tasks, self_weight=self.self_weight)
        return config
