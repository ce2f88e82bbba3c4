"""FiLM: task-conditioned feature-wise scale and shift (Mint's diagonal case).

Paper: Perez, Strub, de Vries, Dumoulin, Courville, "FiLM: Visual Reasoning
with a General Conditioning Layer", AAAI 2018: `FiLM(y) = gamma * y + beta`
with gamma, beta functions of the conditioning input. Used as the baseline
of "Mint: Matrix-Interleaving for Multi-Task Learning" (ICLR 2020
submission), whose Theorem 1 shows that this diagonal map, unlike Mint's
full matrix, cannot express arbitrary per-task affine maps behind a fixed
invertible weight matrix.

NOTE 1: conditioning here is a task, as in the Mint paper's baseline, not
  FiLM's learned generator network of a question embedding: integer ids
  select rows of per-task tables gamma (K, n) and beta (K, n); a float
  descriptor z (batch, K) gives `gamma = z G`, `beta = z B` (a linear
  generator without bias, the diagonal counterpart of Mint's Eq. 4).
NOTE 2: gamma starts at 1 and beta at 0 (the layer starts as the identity,
  like MintLayer), rather than FiLM's generator predicting gamma from a
  random init; a one-hot z gives gamma = 1, a general z gives
  gamma = sum_k z_k at init.
NOTE 3: inputs of rank > 2 (batch, ..., n) are scaled feature-wise (last
  axis) with the same gamma, beta at every position, as FiLM does over the
  spatial positions of a feature map.
"""

import keras
from keras import ops

from training.backend import check_index_range


def _is_integer(tensor):
    return "int" in keras.backend.standardize_dtype(tensor.dtype)


@keras.saving.register_keras_serializable(package="modular_zoo")
class FiLMLayer(keras.layers.Layer):
    """FiLM: a task-specific feature-wise scale and shift.

    `a = gamma_k * y + beta_k` (elementwise over the last axis n), i.e.
    MintLayer with a diagonal matrix `M_k = diag(gamma_k)`. Either

    * integer task ids `k` (batch,): rows of tables gamma (K, n), beta (K, n);
    * or float descriptors `z` (batch, K): `gamma = z G`, `beta = z B`.

    At init gamma = 1 and beta = 0 for every task (NOTE 2). Examples of
    different tasks may be mixed in a batch.

    Args:
        num_tasks: K, the number of tasks (rows of the tables).
        task_dim: size of float task descriptors; the same K as num_tasks
            (give either, or both equal).
        gamma_initializer: initializer of the scale table ("ones").
        beta_initializer: initializer of the shift table ("zeros").
        gamma_regularizer: regularizer of the scale table.
        beta_regularizer: regularizer of the shift table.
        **kwargs: base `Layer` arguments (name, dtype, ...).

    Call arguments:
        inputs: float tensor (batch, ..., n), rank >= 2.
        task: int task ids (batch,) in [0, K), or float descriptors (batch, K).

    Returns:
        A tensor of the shape of `inputs`.

    Out-of-range ids raise ValueError when they are concrete (eager calls,
    `model.predict` on torch). Under `jax.jit` / `tf.function` they are not
    checked and follow the backend's gather semantics (clamped or filled
    values, wrong outputs): validate ids in the input pipeline.

    Example:

    >>> import numpy as np
    >>> layer = FiLMLayer(num_tasks=3)
    >>> y = np.random.rand(4, 8).astype("float32")
    >>> outputs = layer(y, np.array([0, 2, 1, 0]))
    >>> np.allclose(keras.ops.convert_to_numpy(outputs), y)  # gamma = 1, beta = 0
    True
    """

    def __init__(
        self,
        num_tasks=None,
        task_dim=None,
        gamma_initializer="ones",
        beta_initializer="zeros",
        gamma_regularizer=None,
        beta_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg_name, value in (("num_tasks", num_tasks), ("task_dim", task_dim)):
            if value is not None and (int(value) != value or value <= 0):
                raise ValueError(
                    f"{arg_name} must be a positive integer; got {value!r}."
                )
        if num_tasks is None and task_dim is None:
            raise ValueError(
                "FiLMLayer needs num_tasks (task ids) or task_dim (descriptors)."
            )
        if num_tasks is not None and task_dim is not None and num_tasks != task_dim:
            raise ValueError(
                "Descriptors z are combined linearly with the per-task tables, "
                f"so task_dim must equal num_tasks; got num_tasks={num_tasks}, "
                f"task_dim={task_dim}."
            )
        self.num_tasks = None if num_tasks is None else int(num_tasks)
        self.task_dim = None if task_dim is None else int(task_dim)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.supports_masking = True

    @property
    def table_rows(self):
        """K, the number of rows of the per-task tables."""
        return self.num_tasks if self.num_tasks is not None else self.task_dim

    def _check_inputs_shape(self, inputs_shape):
        if len(inputs_shape) < 2 or inputs_shape[-1] is None:
            raise ValueError(
                "FiLMLayer expects inputs of shape (batch, ..., n) with rank "
                f">= 2 and a known n; got shape {tuple(inputs_shape)}."
            )
        if self.built and inputs_shape[-1] != self.units:
            raise ValueError(
                f"FiLMLayer was built for inputs (batch, ..., {self.units}); "
                f"got shape {tuple(inputs_shape)}."
            )

    def _check_task(self, task_shape, integer):
        task_shape = tuple(task_shape)
        if integer:
            if len(task_shape) != 1:
                raise ValueError(
                    "Integer task ids must have shape (batch,); got shape "
                    f"{task_shape}."
                )
        elif len(task_shape) != 2 or (
            task_shape[-1] is not None and task_shape[-1] != self.table_rows
        ):
            raise ValueError(
                "Float task descriptors must have shape "
                f"(batch, {self.table_rows}); got shape {task_shape}."
            )

    def build(self, inputs_shape, task_shape=None):
        self._check_inputs_shape(inputs_shape)
        self.units = int(inputs_shape[-1])
        self.task_gammas = self.add_weight(
            name="task_gammas",
            shape=(self.table_rows, self.units),
            initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer,
        )
        self.task_betas = self.add_weight(
            name="task_betas",
            shape=(self.table_rows, self.units),
            initializer=self.beta_initializer,
            regularizer=self.beta_regularizer,
        )

    def task_transform(self, task):
        """(gamma, beta) per example, both of shape (batch, n)."""
        integer = _is_integer(task)
        self._check_task(task.shape, integer)
        if integer:
            ids = ops.cast(task, "int32")
            check_index_range(ids, self.table_rows)
            return (
                ops.take(self.task_gammas, ids, axis=0),
                ops.take(self.task_betas, ids, axis=0),
            )
        # NOTE 1: a linear generator of the descriptor.
        descriptor = ops.cast(task, self.compute_dtype)
        return (
            ops.matmul(descriptor, self.task_gammas),
            ops.matmul(descriptor, self.task_betas),
        )

    def call(self, inputs, task):
        self._check_inputs_shape(inputs.shape)
        gammas, betas = self.task_transform(task)
        # NOTE 3: the same gamma, beta at every position.
        for _ in range(len(inputs.shape) - 2):
            gammas = ops.expand_dims(gammas, 1)
            betas = ops.expand_dims(betas, 1)
        return ops.add(ops.multiply(gammas, inputs), betas)

    def compute_output_shape(self, inputs_shape, task_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "task_dim": self.task_dim,
                "gamma_initializer": keras.initializers.serialize(
                    self.gamma_initializer
                ),
                "beta_initializer": keras.initializers.serialize(
                    self.beta_initializer
                ),
                "gamma_regularizer": keras.regularizers.serialize(
                    self.gamma_regularizer
                ),
                "beta_regularizer": keras.regularizers.serialize(
                    self.beta_regularizer
                ),
            }
        )
        return config
