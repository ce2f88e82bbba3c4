"""TaskDense: one dense layer per task (the task-specific multi-task baselines).

Paper: "Mint: Matrix-Interleaving for Multi-Task Learning" (ICLR 2020
submission), Section 6.1, compares Mint with networks whose layers are
task-specific: task-specific-1-fc (a shared network with a task-specific
last layer) and task-specific-all-fc (every fully connected layer
task-specific), after Rosenbaum, Klinger, Riemer, "Routing Networks:
Adaptive Selection of Non-linear Functions for Multi-Task Learning" (2017),
independent networks (one network per task) and cross-stitch networks
(Misra et al. 2016, one column per task, see layers/cross_stitch.py). Every
one of them is built from this layer, task k's dense layer

    y = activation(x W_k + b_k),   W_k: (in, units), b_k: (units,),

held as tables `task_kernels` (K, in, units) and `task_biases` (K, units).
It is called in one of two modes:

* task ids k (batch,): each example goes through its own task's layer,
  `y_b = activation(x_b W_{k_b} + b_{k_b})` (1-fc heads, all-fc and
  independent dense layers; a batch may mix tasks);
* task=None, "every task's column": inputs (batch, in) go through every
  task's layer, `y_{b,t} = activation(x_b W_t + b_t)`, and inputs
  (batch, K, in) go column by column, `y_{b,t} = activation(x_{b,t} W_t +
  b_t)` (the columns of cross-stitch networks); the output is (batch, K,
  units) either way.

NOTE 1: ids mode gathers one kernel per example and contracts it,
  `einsum("bi,bio->bo", x, take(W, k))`, rather than computing every task's
  output and selecting the example's own, `take_along_axis(einsum("bi,tio->
  bto", x, W), k)`. Measured on CPU (JAX 0.10.2, 2 cores, jitted forward and
  backward of a sum, batch 128, in = units = 128, 20 tasks, median of 15
  runs of 200 steps): 1.67 ms per step gathering vs 2.53 ms selecting (best
  runs 0.89 vs 1.76 ms). The gather materialises (batch, in, units)
  kernels but does 1/K of the multiply-adds.
NOTE 2: each task's kernel slice (in, units) is initialised like a Dense
  kernel: a VarianceScaling initializer (glorot_uniform, he_normal, ...)
  takes its fans from the last two axes (`input_axes=[1]`,
  `output_axes=[2]`, unless it sets its own), where Keras would read a
  rank-3 shape as a convolution kernel and shrink the scale by K. Other
  initializers draw the whole (K, in, units) tensor at once (every task
  different); an Orthogonal initializer therefore makes the (K * in, units)
  matrix orthogonal, not each task's slice.
NOTE 3: ranks: ids mode takes inputs (batch, in) only, column mode
  (batch, in) or (batch, K, in); inputs of higher rank (spatial positions,
  sequences) raise a ValueError (flatten them first).
NOTE 4: out-of-range integer ids raise ValueError where their values are
  concrete; under `jax.jit` and XLA they follow the backend's gather
  semantics (layers/layers_backend.py, NOTE 2), as in MintLayer.
"""

import copy

import keras
from keras import ops

from layers.mint_layer import serialize_arguments
from layers.task_inputs import check_task_inputs, describe, positive_int


def per_task_initializer(initializer):
    """`initializer` with VarianceScaling fans taken per task (NOTE 2).

    A (K, in, units) kernel table then gets each slice drawn with the scale
    of an (in, units) Dense kernel.

    >>> table = per_task_initializer(keras.initializers.GlorotUniform(seed=1))(
    ...     (20, 8, 4))
    >>> limit = np.sqrt(6 / (8 + 4))
    >>> values = ops.convert_to_numpy(table)
    >>> bool(np.abs(values).max() <= limit < 1.2 * np.abs(values).max())
    True
    """
    if (
        isinstance(initializer, keras.initializers.VarianceScaling)
        and initializer.input_axes is None
        and initializer.output_axes is None
    ):
        initializer = copy.copy(initializer)
        initializer.input_axes, initializer.output_axes = [1], [2]
    return initializer


@keras.saving.register_keras_serializable(package="modular_zoo")
class TaskDense(keras.layers.Layer):
    """One dense layer per task: `y = activation(x W_k + b_k)`.

    With integer task ids k (batch,), each example goes through its own
    task's layer (a batch may mix tasks). With `task=None`, every task's
    layer is applied: to the same inputs (batch, in), or column t of
    inputs (batch, num_tasks, in) through task t's layer; the output is
    (batch, num_tasks, units) either way. Kernels (num_tasks, in, units)
    are initialised per task like a Dense kernel (NOTE 2). Out-of-range ids
    raise ValueError where they are concrete; under jit they are not checked
    (NOTE 4).

    Args:
        units: Positive integer, the output size of each task's layer.
        num_tasks: Positive integer, K, the number of tasks.
        activation: Activation function (name or callable). Defaults to
            None (linear).
        use_bias: Boolean, whether each task's layer has a bias. Defaults to
            True.
        kernel_initializer: Initializer of each task's kernel (NOTE 2).
            Defaults to `"glorot_uniform"`.
        bias_initializer: Initializer of the bias table. Defaults to
            `"zeros"`.
        kernel_regularizer: Regularizer of the kernel table.
        bias_regularizer: Regularizer of the bias table.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor: `(batch, in)` with task ids; `(batch, in)` or
            `(batch, num_tasks, in)` with `task=None` (NOTE 3).
        task: Integer task ids of shape `(batch,)` in `[0, num_tasks)` (any
            integer dtype; float descriptors are not accepted), or None for
            every task's column.

    Input shape:
        `(batch, in)` with task ids `(batch,)`; `(batch, in)` or
        `(batch, num_tasks, in)` with `task=None`.

    Output shape:
        `(batch, units)` with task ids, `(batch, num_tasks, units)` with
        `task=None`.

    Example:

    >>> layer = TaskDense(4, num_tasks=3)
    >>> x = np.arange(10, dtype="float32").reshape(2, 5)
    >>> ids = np.array([0, 2])
    >>> tuple(layer(x, ids).shape), tuple(layer(x).shape)
    ((2, 4), (2, 3, 4))
    >>> every_task = ops.convert_to_numpy(layer(x))  # (batch, task, units)
    >>> bool(np.allclose(every_task[[0, 1], ids],
    ...                  ops.convert_to_numpy(layer(x, ids)), atol=1e-5))
    True
    >>> tuple(layer(np.ones((2, 3, 5), "float32")).shape)  # one column per task
    (2, 3, 4)
    >>> layer(x, np.ones((2, 3), "float32"))
    Traceback (most recent call last):
    ...
    ValueError: ...takes integer task ids of shape (batch,); got float32 values of shape (2, 3)...
    """

    def __init__(
        self,
        units,
        num_tasks,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")
        self.num_tasks = positive_int(num_tasks, "num_tasks")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.input_dim = None

    def _check_inputs_shape(self, inputs_shape, columns):
        """Raises ValueError unless the inputs fit the mode (NOTE 3).

        `columns` is True for `task=None` (every task's column).
        """
        inputs_shape = tuple(inputs_shape)
        if columns:
            expected = (
                "inputs (batch, in) or (batch, num_tasks, in) when called "
                "with task=None"
            )
            ranks = (2, 3)
        else:
            expected = (
                "inputs (batch, in) when called with task ids (inputs "
                "(batch, num_tasks, in) are for task=None)"
            )
            ranks = (2,)
        if len(inputs_shape) not in ranks or inputs_shape[-1] is None:
            raise ValueError(
                f"{describe(self)} takes {expected}, with a known `in`; got "
                f"shape {inputs_shape}."
            )
        if (
            len(inputs_shape) == 3
            and inputs_shape[1] is not None
            and inputs_shape[1] != self.num_tasks
        ):
            raise ValueError(
                f"{describe(self)} has {self.num_tasks} tasks: inputs "
                f"(batch, num_tasks, in) need {self.num_tasks} columns; got "
                f"shape {inputs_shape}."
            )
        if self.input_dim is not None and inputs_shape[-1] != self.input_dim:
            raise ValueError(
                f"{describe(self)} was built for inputs with in = "
                f"{self.input_dim}; got shape {inputs_shape}."
            )

    def build(self, inputs_shape, task_shape=None):
        self._check_inputs_shape(inputs_shape, columns=task_shape is None)
        self.input_dim = int(inputs_shape[-1])
        self.task_kernels = self.add_weight(
            name="task_kernels",
            shape=(self.num_tasks, self.input_dim, self.units),
            initializer=per_task_initializer(self.kernel_initializer),  # NOTE 2
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.task_biases = self.add_weight(
                name="task_biases",
                shape=(self.num_tasks, self.units),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.task_biases = None

    def call(self, inputs, task=None):
        columns = task is None
        self._check_inputs_shape(inputs.shape, columns)
        if columns:
            if len(inputs.shape) == 2:  # every task's layer on the same x
                outputs = ops.einsum("bi,tio->bto", inputs, self.task_kernels)
            else:  # column t through task t's layer
                outputs = ops.einsum("bti,tio->bto", inputs, self.task_kernels)
            if self.use_bias:
                outputs = ops.add(outputs, self.task_biases)
        else:
            # NOTE 4: ids are range-checked here where they are concrete.
            task, _ = check_task_inputs(
                self, inputs, task, num_tasks=self.num_tasks
            )
            # NOTE 1: one gathered kernel per example.
            kernels = ops.take(self.task_kernels, task, axis=0)
            outputs = ops.einsum("bi,bio->bo", inputs, kernels)
            if self.use_bias:
                outputs = ops.add(
                    outputs, ops.take(self.task_biases, task, axis=0)
                )
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, inputs_shape, task_shape=None):
        columns = task_shape is None
        self._check_inputs_shape(inputs_shape, columns)
        if columns:
            return (inputs_shape[0], self.num_tasks, self.units)
        return (inputs_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            num_tasks=self.num_tasks,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            **serialize_arguments(
                self,
                ("kernel_initializer", "bias_initializer",
                 "kernel_regularizer", "bias_regularizer"),
            ),
        )
        return config
