"""Matrix interleaving (Mint): a task-specific affine map of the activations.

Paper: "Mint: Matrix-Interleaving for Multi-Task Learning", anonymous ICLR
2020 submission (OpenReview).
Definition 1 / Eq. 1: `a = M_k y + beta_k`; Eq. 4: `M_k = T_M z_k`,
`beta_k = T_beta z_k` for a task identifier `z_k`; Eq. 5 (goal-conditioned):
`M(g) = T_phi(g)`, `beta(g) = T_psi(g)` produced by two small networks.

NOTE 1: the paper does not say how M and beta are initialised. Here every
  task matrix starts as the identity and every bias as zero, so a network
  with Mint layers starts out as the plain shared network (joint training)
  and the per-task maps are learned as departures from it.
NOTE 2: the paper stores T_M as an (n, n, K) tensor. The table here is laid
  out (K, n, n) (and T_beta as (K, n)) so that selecting a task is a gather
  of one contiguous matrix; the values are the same up to the transpose.
NOTE 3: integer task ids are a shortcut for Eq. 4 with one-hot `z_k`: ids
  gather rows of the table, float descriptors `z` give `sum_k z_k T_M[k]`.
  Both are accepted by the same layer. Every slice of T_M is identity at
  init (NOTE 1), so a one-hot `z` gives `M = I`, and a general `z` gives
  `M = (sum_k z_k) I` at init.
NOTE 4: the paper gives no architecture or initialisation for the networks
  T_phi, T_psi of Eq. 5 ("two simple neural networks"). Here each is an MLP
  of `goal_network["hidden_units"]` (default one hidden layer of 64, ReLU)
  ending in a Dense layer with n*n outputs (T_phi, reshaped to n x n) or n
  outputs (T_psi). The output kernels are zero and the output biases are
  the flattened identity (T_phi) and zero (T_psi), so `M(g) = I` and
  `beta(g) = 0` for every goal at init (as in NOTE 1). The two networks do
  not share hidden layers, following the paper's "two" networks.
NOTE 5: the paper applies Mint to vectors y in R^n. Inputs of higher rank
  (batch, ..., n) get the same per-example matrix at every position.
NOTE 6: out-of-range integer ids raise ValueError where their values are
  concrete (eager calls, `predict` on torch); under `jax.jit` and XLA they
  cannot be checked and follow the backend's gather semantics (see
  layers/layers_backend.py, NOTE 2): validate ids in the input pipeline.
NOTE 7 (linear goal networks, speed): with `goal_network={"hidden_units":
  []}`, M(g) = M_0 + sum_d g_d M_d, so M(g) y = M_0 y + sum_d g_d (M_d y)
  is computed from the output layer's weights without a (batch, n, n)
  tensor of per-example matrices. Same values; measured here (JAX jit,
  value and gradient, batch 288, n = 200, 4-float goals): 6.4 ms against
  313 ms per layer.
"""

import keras
from keras import ops

from layers.task_inputs import check_task_inputs, positive_int

_GOAL_NETWORK_DEFAULTS = {
    "hidden_units": [64],
    "activation": "relu",
    "kernel_initializer": "glorot_uniform",
}


def _identity_slices(shape, dtype=None):
    """Initializer for a (rows, n, n) table: every (n, n) slice is I."""
    if len(shape) != 3 or shape[-1] != shape[-2]:
        raise ValueError(
            f"Identity slices need a shape (rows, n, n); got {tuple(shape)}."
        )
    # A product allocates memory for every row; `broadcast_to` and even
    # `ops.repeat` return expanded views on torch (rows sharing memory,
    # which in-place variable updates reject).
    return ops.ones((shape[0], 1, 1), dtype=dtype) * ops.eye(shape[-1], dtype=dtype)


def check_features_shape(layer, inputs_shape):
    """Raises ValueError unless inputs are (batch, ..., n) with a known n.

    Shared by MintLayer and FiLMLayer; once built, n must equal
    `layer.units`.
    """
    name = type(layer).__name__
    if len(inputs_shape) < 2 or inputs_shape[-1] is None:
        raise ValueError(
            f"{name} expects inputs of shape (batch, ..., n) with rank >= 2 "
            f"and a known n; got shape {tuple(inputs_shape)}."
        )
    if layer.built and inputs_shape[-1] != layer.units:
        raise ValueError(
            f"{name} was built for inputs (batch, ..., {layer.units}); got "
            f"shape {tuple(inputs_shape)}."
        )


def rows_for_task(table, task, is_ids, dtype):
    """Per-example rows of a per-task table (K, ...) -> (batch, ...).

    Integer ids gather rows; a float descriptor z (batch, K) mixes them,
    `sum_k z_k table[k]` (NOTE 3; FiLMLayer NOTE 1).
    """
    if is_ids:
        return ops.take(table, task, axis=0)
    return ops.tensordot(ops.cast(task, dtype), table, axes=1)


def serialize_arguments(layer, names):
    """{name: serialized getattr(layer, name)} for initializers/regularizers."""
    return {
        name: keras.saving.serialize_keras_object(getattr(layer, name))
        for name in names
    }


def _normalise_goal_network(goal_network):
    if goal_network is None:
        return None
    if not isinstance(goal_network, dict):
        raise ValueError(
            "goal_network must be None or a dict with keys "
            f"{sorted(_GOAL_NETWORK_DEFAULTS)}; got {goal_network!r}."
        )
    unknown = set(goal_network) - set(_GOAL_NETWORK_DEFAULTS)
    if unknown:
        raise ValueError(
            f"Unknown goal_network keys {sorted(unknown)}; expected a subset "
            f"of {sorted(_GOAL_NETWORK_DEFAULTS)}."
        )
    config = dict(_GOAL_NETWORK_DEFAULTS, **goal_network)
    hidden_units = [
        positive_int(units, "goal_network hidden_units")
        for units in config["hidden_units"]
    ]
    activation = keras.activations.get(config["activation"])
    initializer = keras.initializers.get(config["kernel_initializer"])
    return {
        "hidden_units": hidden_units,
        "activation": keras.activations.serialize(activation),
        "kernel_initializer": keras.initializers.serialize(initializer),
    }


@keras.saving.register_keras_serializable(package="modular_zoo")
class MintLayer(keras.layers.Layer):
    """Mint: a task-specific matrix and bias applied to activations.

    `a = M_k y + beta_k` (paper Eq. 1) for the task k of each example, with
    `M_k` an (n, n) matrix and `beta_k` an n-vector, n the inputs' last
    dimension. Three ways to obtain `(M_k, beta_k)`:

    * integer task ids k (batch,): rows of per-task tables `T_M` (K, n, n)
      and `T_beta` (K, n) (NOTE 2, NOTE 3);
    * a float task descriptor z (batch, K): `M = sum_k z_k T_M[k]`,
      `beta = sum_k z_k T_beta[k]` (paper Eq. 4);
    * with `goal_network`, a float goal g (batch, task_dim):
      `M(g) = reshape(T_phi(g), (n, n))`, `beta(g) = T_psi(g)`, where T_phi
      and T_psi are MLPs (paper Eq. 5, NOTE 4).

    At init `M = I` and `beta = 0` in every mode (NOTE 1), so the layer is
    the identity. Examples of different tasks may be mixed in a batch.
    Inputs of rank > 2 get the same map at every position (NOTE 5).
    Out-of-range ids raise ValueError where they are concrete; under jit
    they are not checked (NOTE 6).

    Args:
        num_tasks: Positive integer or None, K, the number of tasks (rows of
            the tables). Enables integer ids.
        task_dim: Positive integer or None, the size of a float task
            descriptor. Without `goal_network` it is the same K as
            `num_tasks` (give either, or both equal); with `goal_network`
            it is the goal size.
        goal_network: None (tables) or a dict configuring T_phi and T_psi:
            `hidden_units` (list of positive integers, default `[64]`),
            `activation` (default `"relu"`) and `kernel_initializer` of the
            hidden layers (default `"glorot_uniform"`).
        matrix_initializer: Initializer of the (K, n, n) table, or None (the
            default) for identity slices. Tables only.
        bias_initializer: Initializer of the (K, n) bias table. Defaults to
            `"zeros"`. Tables only.
        matrix_regularizer: Regularizer of the matrix table, or of T_phi's
            output kernel with `goal_network`.
        bias_regularizer: Regularizer of the bias table, or of T_psi's
            output kernel with `goal_network`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, ..., n)`, rank >= 2.
        task: Integer task ids of shape `(batch,)` in `[0, K)` (any integer
            dtype), or a float descriptor of shape `(batch, K)`; with
            `goal_network`, a float goal of shape `(batch, task_dim)`. One
            entry per example: a task batch must equal the inputs' batch.

    Input shape:
        `(batch, ..., n)` and the task shape above.

    Output shape:
        `(batch, ..., n)`, the shape of `inputs`.

    Example:

    >>> layer = MintLayer(num_tasks=3)
    >>> y = np.arange(8, dtype="float32").reshape(2, 4)
    >>> outputs = layer(y, np.array([0, 2], dtype="uint8"))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(outputs), y))  # M = I
    True
    >>> goal_layer = MintLayer(task_dim=2, goal_network={"hidden_units": [16]})
    >>> tuple(goal_layer(y, np.ones((2, 2), dtype="float32")).shape)
    (2, 4)
    >>> layer(y, np.array([1]))
    Traceback (most recent call last):
    ...
    ValueError: ...got 1 task entries for a batch of 2 inputs; give one task per example...
    """

    def __init__(
        self,
        num_tasks=None,
        task_dim=None,
        goal_network=None,
        matrix_initializer=None,
        bias_initializer="zeros",
        matrix_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = positive_int(num_tasks, "num_tasks", allow_none=True)
        self.task_dim = positive_int(task_dim, "task_dim", allow_none=True)
        self.goal_network = _normalise_goal_network(goal_network)
        if self.goal_network is not None:
            if self.task_dim is None:
                raise ValueError(
                    "A goal-conditioned MintLayer (goal_network given) needs "
                    "task_dim, the size of the goal vector."
                )
            if self.num_tasks is not None:
                raise ValueError(
                    "num_tasks has no meaning with goal_network: the layer "
                    "takes float goals (batch, task_dim), not task ids."
                )
        elif self.num_tasks is None and self.task_dim is None:
            raise ValueError(
                "MintLayer needs num_tasks (task ids), task_dim (descriptors) "
                "or task_dim with goal_network (goal-conditioned)."
            )
        elif (
            self.num_tasks is not None
            and self.task_dim is not None
            and self.num_tasks != self.task_dim
        ):
            raise ValueError(
                "Without goal_network, descriptors z are combined linearly "
                "with the per-task tables (paper Eq. 4), so task_dim must "
                f"equal num_tasks; got num_tasks={self.num_tasks}, "
                f"task_dim={self.task_dim}."
            )
        self.matrix_initializer = (
            None
            if matrix_initializer is None
            else keras.initializers.get(matrix_initializer)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.matrix_regularizer = keras.regularizers.get(matrix_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.supports_masking = True

    @property
    def table_rows(self):
        """K, the number of rows of the per-task tables (None for goals)."""
        if self.goal_network is not None:
            return None
        return self.num_tasks if self.num_tasks is not None else self.task_dim

    # -- Weights. -----------------------------------------------------------
    def build(self, inputs_shape, task_shape=None):
        check_features_shape(self, inputs_shape)
        self.units = int(inputs_shape[-1])
        if self.goal_network is None:
            self._build_tables()
        else:
            self._build_goal_networks()

    def _build_tables(self):
        # NOTE 2: (K, n, n) and (K, n) tables; NOTE 1: identity slices.
        rows, units = self.table_rows, self.units
        self.task_matrices = self.add_weight(
            name="task_matrices",
            shape=(rows, units, units),
            initializer=self.matrix_initializer or _identity_slices,
            regularizer=self.matrix_regularizer,
        )
        self.task_biases = self.add_weight(
            name="task_biases",
            shape=(rows, units),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
        )

    def _make_mlp(self, prefix, output_units, output_bias, regularizer):
        config = self.goal_network
        hidden = []
        for index, units in enumerate(config["hidden_units"]):
            hidden.append(
                keras.layers.Dense(
                    units,
                    activation=config["activation"],
                    kernel_initializer=config["kernel_initializer"],
                    dtype=self.dtype_policy,
                    name=f"{prefix}_hidden_{index}",
                )
            )
        # NOTE 4: zero output kernel, bias = flattened identity / zero.
        output = keras.layers.Dense(
            output_units,
            kernel_initializer="zeros",
            bias_initializer=output_bias,
            kernel_regularizer=regularizer,
            dtype=self.dtype_policy,
            name=f"{prefix}_output",
        )
        input_dim = self.task_dim
        for layer in hidden:
            layer.build((None, input_dim))
            input_dim = layer.units
        output.build((None, input_dim))
        return hidden, output

    def _build_goal_networks(self):
        units = self.units

        def flat_identity(shape, dtype=None):
            return ops.reshape(ops.eye(units, dtype=dtype), shape)

        # NOTE 4: two separate networks T_phi (matrix) and T_psi (bias).
        self.matrix_hidden, self.matrix_output = self._make_mlp(
            "matrix_network", units * units, flat_identity,
            self.matrix_regularizer,
        )
        self.bias_hidden, self.bias_output = self._make_mlp(
            "bias_network", units, "zeros", self.bias_regularizer
        )

    # -- Forward pass. ------------------------------------------------------
    def _affine_maps(self, task, is_ids):
        """(M, beta) per example: shapes (batch, n, n) and (batch, n)."""
        if self.goal_network is None:
            # NOTE 3: ids gather table rows (Eq. 4 with a one-hot z_k);
            # descriptors give Eq. 4, M = T_M z, beta = T_beta z.
            return (
                rows_for_task(self.task_matrices, task, is_ids,
                              self.compute_dtype),
                rows_for_task(self.task_biases, task, is_ids,
                              self.compute_dtype),
            )
        # Eq. 5: M(g) = T_phi(g), beta(g) = T_psi(g).
        goal = ops.cast(task, self.compute_dtype)
        hidden = goal
        for layer in self.matrix_hidden:
            hidden = layer(hidden)
        matrices = ops.reshape(
            self.matrix_output(hidden), (-1, self.units, self.units)
        )
        hidden = goal
        for layer in self.bias_hidden:
            hidden = layer(hidden)
        return matrices, self.bias_output(hidden)

    def _linear_goal_call(self, inputs, goal):
        """M(g) y + beta(g) for a linear T_phi without forming M(g) (NOTE 7)."""
        goal = ops.cast(goal, self.compute_dtype)
        units, dtype = self.units, self.compute_dtype
        kernel = ops.reshape(ops.cast(self.matrix_output.kernel, dtype),
                             (-1, units, units))   # (d, i, j): M_d
        bias = ops.reshape(ops.cast(self.matrix_output.bias, dtype), (units, units))
        outputs = ops.einsum("b...j,ij->b...i", inputs, bias)
        per_goal_dim = ops.einsum("b...j,dij->b...di", inputs, kernel)
        weights = goal
        for _ in range(len(inputs.shape) - 2):
            weights = ops.expand_dims(weights, 1)
        outputs = outputs + ops.einsum("b...di,b...d->b...i", per_goal_dim, weights)
        hidden = goal
        for layer in self.bias_hidden:
            hidden = layer(hidden)
        biases = self.bias_output(hidden)
        for _ in range(len(inputs.shape) - 2):
            biases = ops.expand_dims(biases, 1)
        return outputs + biases

    def call(self, inputs, task):
        check_features_shape(self, inputs.shape)
        # NOTE 6: ids are range-checked here where they are concrete.
        task, is_ids = check_task_inputs(
            self,
            inputs,
            task,
            num_tasks=self.table_rows,
            descriptor_shape=(self.task_dim or self.num_tasks,),
            descriptor_name=(
                "task descriptor" if self.goal_network is None else "goal"
            ),
        )
        if self.goal_network is not None and not self.matrix_hidden:
            return self._linear_goal_call(inputs, task)  # NOTE 7
        matrices, biases = self._affine_maps(task, is_ids)
        # a_i = sum_j M_ij y_j, the same M at every position (NOTE 5).
        outputs = ops.einsum("b...j,bij->b...i", inputs, matrices)
        for _ in range(len(inputs.shape) - 2):
            biases = ops.expand_dims(biases, 1)
        return outputs + biases

    def compute_output_shape(self, inputs_shape, task_shape=None):
        check_features_shape(self, inputs_shape)
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tasks=self.num_tasks,
            task_dim=self.task_dim,
            goal_network=self.goal_network,
            **serialize_arguments(
                self,
                ("matrix_initializer", "bias_initializer",
                 "matrix_regularizer", "bias_regularizer"),
            ),
        )
        return config
