"""Multi-task classifiers: Mint and the baselines of the Mint paper, Sec. 6.1.

Paper: "Mint: Matrix-Interleaving for Multi-Task Learning" (ICLR 2020
submission), Section 6.1, Table 1 and Appendix B. One network class,
`MultiTaskClassifier`, with the model chosen by one argument. Every model
maps `(images, task_ids)` to the logits of each example's own task:

    trunk:   h = flatten(pool(relu(BN(conv(...)))))       (shared; per task
                                                           for "independent")
    "mint":  a_l = M_k relu(W_l a_{l-1} + b_l) + beta_k,   logits = W_o a_L + b_o
    "film":  a_l = gamma_k * relu(W_l a_{l-1} + b_l) + beta_k, shared head
    "1-fc":  shared dense layers, a task-specific last layer (W_o^k, b_o^k)
    "all-fc": every dense layer task-specific (W_l^k, b_l^k)
    "cross-stitch": one dense column per task, mixed after each hidden
             layer by cross-stitch units a_l^t = sum_s alpha_ts a_l^s
    "independent": one whole network (trunk and dense layers) per task

with k the example's task. Baselines after Rosenbaum et al. 2017 (1-fc,
all-fc), Misra et al. 2016 (cross-stitch) and Perez et al. 2018 (FiLM). A
batch may mix tasks.

NOTE 1 (trunk): Appendix B applies "max pooling and batch normalization
  after every convolutional layer" without an order; here each block is
  conv 3x3 (same padding) -> batch norm -> ReLU -> max-pool 2x2.
NOTE 2 (heads): Mint and FiLM end in one shared output layer: the per-task
  map after the last hidden layer already makes the logits task-specific
  (W_o M_k is any matrix of W_o's rank), so a per-task head would only add
  parameters. The 1-fc, all-fc, cross-stitch and independent baselines have
  a task-specific output layer, as their names say.
NOTE 3 (cost of the per-task parts): task-specific dense layers gather each
  example's own kernel (`TaskDense` with ids), so all-fc and independent
  cost one network per example in their dense layers. Cross-stitch needs
  every task's column for every example (T times the dense cost, inherent
  to the method). Independent trunks run every task's trunk on the whole
  batch (T times the trunk cost per example) and each example keeps its
  task's features; batch norm statistics of task t's trunk are therefore
  taken over the whole batch, not only over task t's examples. The T trunks
  are T ordinary Conv2D stacks in a loop, not one grouped convolution
  (`Conv2D(groups=T)` over the input tiled T times): measured on this CPU
  (T=20, batch 64, 16x16x32 per task, 3x3, forward), grouped vs loop was
  512 vs 84 ms on JAX (XLA), 108 vs 49 ms on TensorFlow (XLA) and 135 vs
  133 ms on torch; a 10-step benchmark of the grouped version on JAX had
  not finished after 10 minutes.
NOTE 4 (routing): routing networks (Rosenbaum et al. 2019, the paper's best
  baseline after Mint) are not implemented.
NOTE 5 (no trunk): with `conv_filters=()` the inputs are flattened and fed
  to the dense layers (the offline digits benchmark); "all-fc" and
  "independent" are then the same network.
"""

import math

import keras
from keras import ops

from layers.cross_stitch import CrossStitch
from layers.film_layer import FiLMLayer
from layers.mint_layer import MintLayer
from layers.task_dense import TaskDense
from layers.task_inputs import check_task_inputs, positive_int
from training import StepModel
from zoo.mint import MODELS


def _int_sequence(values, name):
    if not isinstance(values, (tuple, list)):
        raise ValueError(f"`{name}` must be a list of positive integers; got {values!r}.")
    return tuple(positive_int(value, name) for value in values)


def _own_column(columns, task_one_hot):
    """(batch, T, features) -> (batch, features): each example's own column."""
    return ops.einsum("bt,btf->bf", task_one_hot, columns)


@keras.saving.register_keras_serializable(package="modular_zoo")
class MultiTaskClassifier(StepModel):
    """Mint or one of its baselines on a shared trunk, trained with `fit`.

    The model is chosen by `model` (module docstring: the equations of each);
    the trunk is `len(conv_filters)` blocks of conv 3x3 -> batch norm ->
    ReLU -> max-pool (NOTE 1), followed by `len(dense_units)` hidden dense
    layers with ReLU and an output layer of `num_classes` logits.

    Args:
        num_tasks: Positive integer, T, the number of tasks.
        num_classes: Positive integer, the number of classes of every task.
        model: One of `MODELS`: "mint", "film", "1-fc", "all-fc",
            "cross-stitch", "independent". Defaults to "mint".
        conv_filters: Sequence of positive integers, the filters of each
            convolution block; empty for vector inputs (NOTE 5).
        dense_units: Sequence of positive integers, the hidden dense layers.
        kernel_size: Positive integer, the convolutions' kernel size.
        batch_norm: Boolean, batch norm in each convolution block.
        cross_stitch_self_weight: Float in (0, 1], the initial weight of a
            task's own column in the cross-stitch units.
        **kwargs: Base `keras.Model` keyword arguments, such as `name`.

    Call arguments:
        inputs: A tuple `(images, task_ids)`: images `(batch, H, W, C)`
            float (or `(batch, ...)` features without a conv trunk) and
            integer task ids `(batch,)` in `[0, num_tasks)`.
        training: Python boolean, for batch norm.

    Output shape:
        `(batch, num_classes)`: the logits of each example's own task.

    Example:

    >>> model = MultiTaskClassifier(num_tasks=3, num_classes=2, model="mint",
    ...                             dense_units=(8,))
    >>> model.compile(optimizer="adam", metrics=["accuracy"],
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> features = np.random.rand(12, 5).astype("float32")
    >>> task_ids, targets = np.arange(12) % 3, np.arange(12) % 2
    >>> history = model.fit((features, task_ids), targets, verbose=0)
    >>> model.predict((features, task_ids), verbose=0).shape
    (12, 2)
    """

    def __init__(
        self,
        num_tasks,
        num_classes,
        model="mint",
        conv_filters=(),
        dense_units=(128, 128),
        kernel_size=3,
        batch_norm=True,
        cross_stitch_self_weight=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if model not in MODELS:
            raise ValueError(
                f"Unknown model {model!r}; expected one of {', '.join(MODELS)}."
            )
        self.num_tasks = positive_int(num_tasks, "num_tasks")
        self.num_classes = positive_int(num_classes, "num_classes")
        self.model = model
        self.conv_filters = _int_sequence(conv_filters, "conv_filters")
        self.dense_units = _int_sequence(dense_units, "dense_units")
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        self.batch_norm = bool(batch_norm)
        if (isinstance(cross_stitch_self_weight, bool)
                or not isinstance(cross_stitch_self_weight, (int, float))
                or not 0 < cross_stitch_self_weight <= 1):
            raise ValueError(
                "`cross_stitch_self_weight` must be a number in (0, 1]; got "
                f"{cross_stitch_self_weight!r}.")
        self.cross_stitch_self_weight = float(cross_stitch_self_weight)
        if model == "cross-stitch" and self.num_tasks < 2:
            raise ValueError("model='cross-stitch' needs num_tasks >= 2.")

        if model == "independent":  # NOTE 3: one trunk per task
            self.conv_blocks = [self._make_conv_blocks(f"task_{task}_")
                                for task in range(self.num_tasks)]
        else:
            self.conv_blocks = [self._make_conv_blocks("")]

        task_specific = model in ("all-fc", "independent", "cross-stitch")
        self.hidden_layers, self.task_maps = [], []
        for i, units in enumerate(self.dense_units):
            if task_specific:
                self.hidden_layers.append(TaskDense(
                    units, self.num_tasks, activation="relu", name=f"dense_{i}"))
            else:
                self.hidden_layers.append(keras.layers.Dense(
                    units, activation="relu", name=f"dense_{i}"))
            if model == "mint":
                self.task_maps.append(MintLayer(num_tasks=self.num_tasks, name=f"mint_{i}"))
            elif model == "film":
                self.task_maps.append(FiLMLayer(num_tasks=self.num_tasks, name=f"film_{i}"))
            elif model == "cross-stitch":
                self.task_maps.append(CrossStitch(
                    self.num_tasks, self_weight=self.cross_stitch_self_weight,
                    name=f"cross_stitch_{i}"))
        if model in ("mint", "film"):  # NOTE 2
            self.output_layer = keras.layers.Dense(self.num_classes, name="logits")
        else:
            self.output_layer = TaskDense(self.num_classes, self.num_tasks, name="logits")
        # The shape of one example's images, recorded at the first call; it
        # is the build config that `.keras` files and presets store.
        self.example_shape = None

    def build(self, inputs_shape):
        """Creates every weight by one call on zeros of the given shapes."""
        if not (isinstance(inputs_shape, (tuple, list)) and len(inputs_shape) == 2
                and isinstance(inputs_shape[0], (tuple, list))):
            raise ValueError(self._inputs_message(f"shape {inputs_shape}"))
        images_shape = tuple(inputs_shape[0])
        self.call((ops.zeros((1,) + images_shape[1:]), ops.zeros((1,), "int32")))

    def build_for(self, example_shape):
        """Builds for images of shape `(batch,) + example_shape`."""
        example_shape = tuple(int(d) for d in example_shape)
        self.build(((None,) + example_shape, (None,)))
        self.example_shape = example_shape

    def get_build_config(self):
        return {"example_shape": list(self.example_shape or ())}

    def build_from_config(self, config):
        if config.get("example_shape"):
            self.build_for(config["example_shape"])

    def _make_conv_blocks(self, prefix):
        """Conv -> batch norm -> ReLU -> max-pool blocks (NOTE 1)."""
        blocks = []
        for i, filters in enumerate(self.conv_filters):
            name = f"{prefix}conv_{i}"
            block = [keras.layers.Conv2D(filters, self.kernel_size, padding="same",
                                         name=name)]
            if self.batch_norm:
                block.append(keras.layers.BatchNormalization(name=f"{name}_bn"))
            block.append(keras.layers.Activation("relu", name=f"{name}_relu"))
            block.append(keras.layers.MaxPooling2D(2, name=f"{name}_pool"))
            blocks.append(block)
        return blocks

    def _trunk_features(self, blocks, images, training):
        hidden = images
        for block in blocks:
            for layer in block:
                hidden = layer(hidden, training=training)
        return ops.reshape(hidden, (-1, math.prod(hidden.shape[1:])))

    def _trunk(self, images, training):
        """Shared features (batch, F), or (batch, T, F): every task's trunk."""
        if self.model == "independent" and self.conv_filters:
            # NOTE 3: every task's trunk on the whole batch.
            return ops.stack([self._trunk_features(blocks, images, training)
                              for blocks in self.conv_blocks], axis=1)
        return self._trunk_features(self.conv_blocks[0], images, training)

    def _inputs_message(self, got):
        return (f"{type(self).__name__} expects inputs (images, task_ids): a "
                f"tuple of images (batch, ...) and task ids (batch,); got {got}.")

    def call(self, inputs, training=None):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(self._inputs_message(type(inputs).__name__))
        images, task_ids = inputs
        if self.conv_filters and len(images.shape) != 4:
            raise ValueError(
                f"{type(self).__name__} with a convolutional trunk expects "
                f"images of shape (batch, height, width, channels); got shape "
                f"{tuple(images.shape)}."
            )
        task_ids, _ = check_task_inputs(self, images, task_ids, num_tasks=self.num_tasks)
        if self.example_shape is None and None not in images.shape[1:]:
            self.example_shape = tuple(images.shape[1:])
        task_one_hot = ops.one_hot(task_ids, self.num_tasks, dtype=self.compute_dtype)
        hidden = self._trunk(ops.cast(images, self.compute_dtype), training)
        if len(hidden.shape) == 3:  # independent trunk: keep the task's own
            hidden = _own_column(hidden, task_one_hot)
        if self.model == "cross-stitch":
            # One column per task for every example; units mix the columns.
            for layer, stitch in zip(self.hidden_layers, self.task_maps):
                hidden = stitch(layer(hidden))
            return _own_column(self.output_layer(hidden), task_one_hot)
        for i, layer in enumerate(self.hidden_layers):
            if isinstance(layer, TaskDense):
                hidden = layer(hidden, task_ids)
            else:
                hidden = layer(hidden)
            if self.task_maps:
                hidden = self.task_maps[i](hidden, task_ids)
        if isinstance(self.output_layer, TaskDense):
            return self.output_layer(hidden, task_ids)
        return self.output_layer(hidden)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tasks=self.num_tasks,
            num_classes=self.num_classes,
            model=self.model,
            conv_filters=list(self.conv_filters),
            dense_units=list(self.dense_units),
            kernel_size=self.kernel_size,
            batch_norm=self.batch_norm,
            cross_stitch_self_weight=self.cross_stitch_self_weight,
        )
        return config
