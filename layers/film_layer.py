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
NOTE 4: out-of-range integer ids raise ValueError where their values are
  concrete; under `jax.jit` and XLA they follow the backend's gather
  semantics (layers/layers_backend.py, NOTE 2), as in MintLayer.
"""

import keras
from keras import ops

from layers.mint_layer import (
    check_features_shape,
    rows_for_task,
    serialize_arguments,
)
from layers.task_inputs import check_task_inputs, positive_int


@keras.saving.register_keras_serializable(package="modular_zoo")
class FiLMLayer(keras.layers.Layer):
    """FiLM: a task-specific feature-wise scale and shift.

    `a = gamma_k * y + beta_k` (elementwise over the last axis n), i.e.
    MintLayer with a diagonal matrix `M_k = diag(gamma_k)`. Either

    * integer task ids k (batch,): rows of tables `G` (K, n) and `B` (K, n),
      `gamma = G[k]`, `beta = B[k]`;
    * or a float task descriptor z (batch, K): `gamma = z G`, `beta = z B`
      (NOTE 1).

    At init `gamma = 1` and `beta = 0` for every task (NOTE 2). Examples of
    different tasks may be mixed in a batch; inputs of rank > 2 get the same
    gamma, beta at every position (NOTE 3). Out-of-range ids raise
    ValueError where they are concrete; under jit they are not checked
    (NOTE 4).

    Args:
        num_tasks: Positive integer or None, K, the number of tasks (rows of
            the tables).
        task_dim: Positive integer or None, the size of float task
            descriptors; the same K as `num_tasks` (give either, or both
            equal).
        gamma_initializer: Initializer of the scale table. Defaults to
            `"ones"`.
        beta_initializer: Initializer of the shift table. Defaults to
            `"zeros"`.
        gamma_regularizer: Regularizer of the scale table.
        beta_regularizer: Regularizer of the shift table.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, ..., n)`, rank >= 2.
        task: Integer task ids of shape `(batch,)` in `[0, K)` (any integer
            dtype), or a float descriptor of shape `(batch, K)`. One entry
            per example: a task batch must equal the inputs' batch.

    Input shape:
        `(batch, ..., n)` and the task shape above.

    Output shape:
        `(batch, ..., n)`, the shape of `inputs`.

    Example:

    >>> layer = FiLMLayer(num_tasks=3)
    >>> y = np.arange(8, dtype="float32").reshape(2, 4)
    >>> outputs = layer(y, np.array([0, 2], dtype="int64"))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(outputs), y))  # gamma = 1
    True
    >>> layer(y, np.array([0, 3]))
    Traceback (most recent call last):
    ...
    ValueError: ...task id out of range: got [3], expected integers in [0, 3)...
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
        self.num_tasks = positive_int(num_tasks, "num_tasks", allow_none=True)
        self.task_dim = positive_int(task_dim, "task_dim", allow_none=True)
        if self.num_tasks is None and self.task_dim is None:
            raise ValueError(
                "FiLMLayer needs num_tasks (task ids) or task_dim (descriptors)."
            )
        if (
            self.num_tasks is not None
            and self.task_dim is not None
            and self.num_tasks != self.task_dim
        ):
            raise ValueError(
                "Descriptors z are combined linearly with the per-task tables, "
                f"so task_dim must equal num_tasks; got num_tasks={num_tasks}, "
                f"task_dim={task_dim}."
            )
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.supports_masking = True

    @property
    def table_rows(self):
        """K, the number of rows of the per-task tables."""
        return self.num_tasks if self.num_tasks is not None else self.task_dim

    def build(self, inputs_shape, task_shape=None):
        check_features_shape(self, inputs_shape)
        self.units = int(inputs_shape[-1])
        # NOTE 2: gamma = 1, beta = 0 by default.
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

    def call(self, inputs, task):
        check_features_shape(self, inputs.shape)
        # NOTE 4: ids are range-checked here where they are concrete.
        task, is_ids = check_task_inputs(
            self, inputs, task, num_tasks=self.table_rows,
            descriptor_shape=(self.table_rows,),
        )
        # NOTE 1: ids select rows; a descriptor is a linear generator.
        gammas = rows_for_task(self.task_gammas, task, is_ids, self.compute_dtype)
        betas = rows_for_task(self.task_betas, task, is_ids, self.compute_dtype)
        # NOTE 3: the same gamma, beta at every position.
        for _ in range(len(inputs.shape) - 2):
            gammas = ops.expand_dims(gammas, 1)
            betas = ops.expand_dims(betas, 1)
        return ops.add(ops.multiply(gammas, inputs), betas)

    def compute_output_shape(self, inputs_shape, task_shape=None):
        check_features_shape(self, inputs_shape)
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tasks=self.num_tasks,
            task_dim=self.task_dim,
            **serialize_arguments(
                self,
                ("gamma_initializer", "beta_initializer",
                 "gamma_regularizer", "beta_regularizer"),
            ),
        )
        return config
