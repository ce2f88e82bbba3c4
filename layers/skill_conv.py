"""Polytropon skills on a 2-D convolution: `SkillConv2D`.

Paper: E. M. Ponti et al., "Combining Parameter-efficient Modules for
Task-level Generalisation" (Polytropon), EACL 2023, Section 3 (BabyAI):
skills on every component with weights, convolutions included, as sparse
fine-tuning deltas (SFT, 90% sparse, 9 skills). The allocation (modes,
logits, Gumbel-sigmoid, metrics, few-shot `add_tasks`, task ids and
`task_context`) is the one of `SkillLoRADense`, shared through
layers/skill_allocation.py; the NOTE numbers 5-11 cited there are those of
layers/skill_lora_dense.py.

NOTE 1 (kernel): with w (num_tasks, num_splits, num_skills) the allocation
  weights, M_s the fixed random masks and D_s the deltas (both of the
  kernel's shape (kh, kw, in_channels, filters)),
      W_t[..., c, :] = W0[..., c, :] + sum_s w[t, q(c), s] M_s[..., c, :] D_s[..., c, :]
  where q(c) is the split of input channel c: `num_splits` cuts the input
  channels into contiguous chunks with their own allocation, as splits cut
  the input features of the Dense form. The masks are drawn with NumPy
  from `mask_seed` (identical on every backend), exactly round((1 -
  sft_sparsity) * kh * kw * in_channels * filters) ones per skill.
NOTE 2 (noise): in training, "learned" with `gumbel_noise` draws the
  relaxed-Bernoulli noise once per TASK per call (one (num_splits,
  num_skills) sample per task, shared by that task's examples in the
  batch), not per example as the Dense form does (skill_lora_dense NOTE 6).
  Each example sees the same distribution; examples of one task in one
  batch are correlated. Per-example noise would give every example its own
  kernel: the per-example convolution (vmap over kernels) that the issue
  measured 13x slower than plain weights, or one convolution per skill
  ((1 + num_skills) x the output channels, benchmarks/skill_conv_speed.py).
NOTE 3 (mixed batches, measured with benchmarks/skill_conv_speed.py): a
  BabyAI-size conv (batch 256, 7 x 7, 128 -> 128 channels, 3 x 3 "same",
  4 tasks drawn per example, 9 skills), forward + backward to the weights
  and the input, median of 7 interleaved per-repetition ratios to a plain
  `Conv2D` on the 2-core CPU (shared with other jobs, torch 1 thread):
  - "grouped", one conv per task present on that task's examples, outputs
    put back in batch order: torch eager 1.17 (forward alone 1.15); JAX
    run op by op 1.12 of the plain conv run op by op (forward 1.21).
  - "stacked", one conv with num_tasks * filters output channels, each
    example keeping its task's slice: JAX jit 4.48 (forward 4.85), torch
    eager 4.23 (forward 4.04): the cost grows with num_tasks.
  - per-example weights by linearity, (1 + num_skills) * filters output
    channels (NOTE 2): JAX jit 12.2, torch 12.5.
  Grouping has shapes that depend on the ids' values, so the default
  "auto" groups where the ids are concrete (eager torch, JAX and
  TensorFlow outside jit; ids on a torch accelerator are not read, which
  would synchronise) and stacks where they are traced (jax.jit,
  tf.function, torch.compile: `fit`/`predict` on JAX and TensorFlow).
  keras.ops has no static-shape grouped convolution, so a jitted step
  pays about num_tasks times the convolution, an eager torch step ~1.2x.
  With 2 torch threads on the loaded 2 cores "grouped" measured 5.3x and
  "stacked" 3.0x (each small conv waits for a descheduled second thread);
  torch.set_num_threads(1) there, as the tests do.
NOTE 4 (init): the deltas start at zero (`skill_initializer="zeros"`), so
  the layer starts as its base convolution, as the Dense form does. The
  paper's BabyAI runs initialised both the base and the skills from a
  Kaiming uniform and trained both: `trainable_base=True,
  skill_initializer="he_uniform"`.
"""

import numbers

import keras
import numpy as np
from keras import ops

from layers.layers_backend import _concrete_values
from layers.skill_allocation import (
    _SkillAllocation,
    check_sft_sparsity,
    draw_sft_masks,
)
from layers.task_inputs import positive_int

TASK_BATCHING = ("auto", "grouped", "stacked")
_DATA_FORMATS = ("channels_last", "channels_first")


def _pair(value, name, minimum=1):
    """A (height, width) tuple of integers >= minimum from an int or a pair."""
    values = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        values = tuple(values)
    except TypeError:
        values = None
    if (values is None or len(values) != 2
            or not all(isinstance(v, numbers.Integral)
                       and not isinstance(v, bool) and v >= minimum
                       for v in values)):
        raise ValueError(
            f"`{name}` must be an integer >= {minimum} or a pair of them; "
            f"got {value!r}.")
    return tuple(int(v) for v in values)


def _conv_length(length, kernel, stride, dilation, padding):
    if length is None:
        return None
    if padding == "same":
        return (length + stride - 1) // stride
    return (length - dilation * (kernel - 1) - 1) // stride + 1


@keras.saving.register_keras_serializable(package="modular_zoo")
class SkillConv2D(_SkillAllocation):
    """A 2-D convolution plus Polytropon sparse skills, one kernel per task.

    For an example of task t, with allocation weights w (NOTE 1; the modes
    and the Gumbel-sigmoid are those of `SkillLoRADense`):

        W_t = W0 + sum_s w[t, s] * (M_s * D_s)
        y   = act(conv2d(x, W_t) + b0)

    where W0, b0 are the base kernel and bias (frozen unless
    `trainable_base`), D_s the trainable skill deltas and M_s fixed random
    0/1 masks with a fraction `sft_sparsity` of zeros (so D_s is sparse in
    effect; its masked entries get no gradient from the output). With
    "learned" allocation w[t] = z_t / (sum_s z_ts + 1e-12), z_t =
    sigmoid(Z_t) at inference and the Gumbel-sigmoid sample in training
    (drawn per task per call, NOTE 2); "private" (Z = I), "shared"
    (Z = 1), "fixed" (an expert 0/1 matrix, row-normalised), "moe" (top-k
    softmax) and "hyper" (task embeddings) as in `SkillLoRADense`.
    `sft_sparsity=0` gives dense skills. A batch mixing tasks runs one
    convolution per task present ("grouped") where the task ids are
    concrete, and one convolution with num_tasks * filters output channels
    whose per-example slice is kept ("stacked") under jit (NOTE 3).

    Args:
        filters: Positive integer, number of output channels.
        kernel_size: Integer or pair, the (height, width) of the window.
        num_tasks: Positive integer, number of tasks.
        num_skills: Positive integer, size of the skill inventory.
        strides: Integer or pair, the strides (default 1).
        padding: "valid" (default) or "same", as in `keras.layers.Conv2D`.
        data_format: "channels_last" (batch, height, width, channels) or
            "channels_first" (batch, channels, height, width); default
            `keras.config.image_data_format()`.
        dilation_rate: Integer or pair; rates > 1 need strides 1.
        activation: Activation applied to the output (default None).
        use_bias: Boolean, whether the base has a bias b0.
        trainable_base: Boolean, train W0 and b0 too (default False:
            frozen, as in `SkillLoRADense`; the paper's BabyAI runs trained
            them, NOTE 4).
        kernel_initializer: Initializer for W0 (unless copied with
            `from_conv`).
        bias_initializer: Initializer for b0.
        num_splits: Positive integer dividing the input channels, the
            number of channel chunks with their own allocation (NOTE 1).
        allocation: "learned" (default), "private", "shared", "fixed",
            "moe" or "hyper".
        temperature: Float > 0, the Gumbel-sigmoid temperature.
        gumbel_noise: Boolean, whether training adds the relaxation noise.
        top_k: Positive integer, skills kept per split by "moe".
        expert_matrix: 0/1 array (num_tasks, num_skills), the allocation of
            "fixed" (and only of "fixed").
        sft_sparsity: Float in [0, 1), the fraction of zeros in each mask
            (default 0.9, the paper's).
        mask_seed: Integer, seed of the NumPy-drawn masks.
        seed: Integer or None, seed of the relaxation noise and of the
            "hyper" embeddings.
        logits_initializer: Initializer for the allocation logits (default
            U(-1e-3, 1e-3)).
        skill_initializer: Initializer for the deltas (default "zeros": the
            layer starts as its base, NOTE 4).
        skill_regularizer: Regularizer for the deltas.
        task_batching: How a batch that mixes tasks is convolved (NOTE 3):
            "auto" (default: "grouped" where the task ids have concrete
            values, "stacked" otherwise), "grouped" (one convolution per
            task present; an error where the ids are traced, e.g. under
            jit) or "stacked" (one convolution with num_tasks * filters
            output channels; works everywhere).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of rank 4 (see `data_format`).
        task: Integer task ids (batch,) in [0, num_tasks), any integer
            dtype; None takes the ids of the innermost `task_context`.
        training: Boolean or None; True draws the Gumbel-sigmoid noise
            ("learned" with `gumbel_noise=True`).

    Input shape:
        `(batch, height, width, in_channels)` (channels_last) or
        `(batch, in_channels, height, width)` (channels_first).

    Output shape:
        `(batch, new_height, new_width, filters)` or `(batch, filters,
        new_height, new_width)`, as `keras.layers.Conv2D`.

    Example:

    >>> layer = SkillConv2D(8, 3, num_tasks=4, num_skills=9, padding="same")
    >>> x = np.random.rand(6, 7, 7, 5).astype("float32")
    >>> task = np.array([0, 3, 1, 0, 2, 3])
    >>> y = layer(x, task)
    >>> tuple(y.shape)
    (6, 7, 7, 8)
    >>> tuple(layer.sft_deltas.shape)  # (skills, kh, kw, in, filters)
    (9, 3, 3, 5, 8)
    >>> base = ops.conv(x, layer.kernel, padding="same") + layer.bias
    >>> bool(np.allclose(ops.convert_to_numpy(y), ops.convert_to_numpy(base),
    ...                  atol=1e-5))  # deltas start at zero
    True
    >>> round(float(ops.convert_to_numpy(ops.mean(layer.sft_masks))), 6)
    0.1
    """

    def __init__(
        self,
        filters,
        kernel_size,
        num_tasks,
        num_skills,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        trainable_base=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        num_splits=1,
        allocation="learned",
        temperature=1.0,
        gumbel_noise=True,
        top_k=2,
        expert_matrix=None,
        sft_sparsity=0.9,
        mask_seed=0,
        seed=None,
        logits_initializer=None,
        skill_initializer="zeros",
        skill_regularizer=None,
        task_batching="auto",
        **kwargs,
    ):
        super().__init__(num_tasks, num_skills, num_splits=num_splits,
                         allocation=allocation, **kwargs)
        self.filters = positive_int(filters, "filters")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "strides > 1 cannot be combined with dilation_rate > 1; got "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}.")
        padding = padding.lower() if isinstance(padding, str) else padding
        if padding not in ("valid", "same"):
            raise ValueError(
                f"padding must be 'valid' or 'same'; got {padding!r}.")
        self.padding = padding
        data_format = data_format or keras.config.image_data_format()
        if data_format not in _DATA_FORMATS:
            raise ValueError(
                f"data_format must be one of {_DATA_FORMATS}; got "
                f"{data_format!r}.")
        self.data_format = data_format
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.trainable_base = bool(trainable_base)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._check_allocation_arguments(
            temperature, gumbel_noise, top_k, expert_matrix, seed,
            logits_initializer)
        self.sft_sparsity = check_sft_sparsity(sft_sparsity)
        self.mask_seed = int(mask_seed)
        self.skill_initializer = keras.initializers.get(skill_initializer)
        self.skill_regularizer = keras.regularizers.get(skill_regularizer)
        if task_batching not in TASK_BATCHING:
            raise ValueError(
                f"task_batching must be one of {TASK_BATCHING}; got "
                f"{task_batching!r}.")
        self.task_batching = task_batching

    # -- shapes --------------------------------------------------------------
    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _spatial(self, shape):
        return (tuple(shape[1:3]) if self.data_format == "channels_last"
                else tuple(shape[2:4]))

    def _check_inputs(self, shape):
        shape = tuple(shape)
        layout = ("(batch, height, width, channels)"
                  if self.data_format == "channels_last"
                  else "(batch, channels, height, width)")
        if len(shape) != 4:
            raise ValueError(
                f"SkillConv2D expects inputs of rank 4, {layout}; got shape "
                f"{shape}.")
        channels = shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"SkillConv2D needs a known number of input channels; got "
                f"shape {shape} ({self.data_format}).")
        if self.built and channels != self.in_channels:
            raise ValueError(
                f"SkillConv2D was built for {self.in_channels} input channels; "
                f"got shape {shape} ({self.data_format}).")
        for length, kernel, dilation in zip(
                self._spatial(shape), self.kernel_size, self.dilation_rate,
                strict=True):
            if (length is not None and self.padding == "valid"
                    and length < dilation * (kernel - 1) + 1):
                raise ValueError(
                    f"SkillConv2D: inputs of shape {shape} are smaller than "
                    f"the kernel {self.kernel_size} (dilation "
                    f"{self.dilation_rate}) with padding='valid'.")
        return channels

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        self._check_inputs(input_shape)
        spatial = tuple(
            _conv_length(n, k, s, d, self.padding)
            for n, k, s, d in zip(self._spatial(input_shape), self.kernel_size,
                                  self.strides, self.dilation_rate,
                                  strict=True))
        if self.data_format == "channels_last":
            return (input_shape[0],) + spatial + (self.filters,)
        return (input_shape[0], self.filters) + spatial

    # -- weights ---------------------------------------------------------------
    def build(self, input_shape):
        channels = self._check_inputs(input_shape)
        if channels % self.num_splits:
            raise ValueError(
                f"num_splits={self.num_splits} must divide the input "
                f"channels ({channels}).")
        self.in_channels = int(channels)
        kernel_shape = self.kernel_size + (self.in_channels, self.filters)
        self.kernel = self.add_weight(
            name="kernel", shape=kernel_shape,
            initializer=self.kernel_initializer, trainable=self.trainable_base)
        self.bias = (self.add_weight(
            name="bias", shape=(self.filters,), initializer=self.bias_initializer,
            trainable=self.trainable_base) if self.use_bias else None)
        self._build_allocation()
        skills_shape = (self.num_skills,) + kernel_shape
        self.sft_deltas = self.add_weight(
            name="sft_deltas", shape=skills_shape,
            initializer=self.skill_initializer,
            regularizer=self.skill_regularizer)
        self.sft_masks = self.add_weight(
            name="sft_masks", shape=skills_shape,
            initializer=keras.initializers.Constant(draw_sft_masks(
                self.num_skills, kernel_shape, self.sft_sparsity,
                self.mask_seed)),
            trainable=False)

    # -- forward ---------------------------------------------------------------
    def compute_output_spec(self, inputs, task=None, training=None):
        # The symbolic call (functional models) checks the inputs and the
        # task like `call` does, so errors come where a model is built.
        output_shape = self.compute_output_shape(inputs.shape)
        self._task_ids(inputs, task)
        return keras.KerasTensor(output_shape, dtype=self.compute_dtype)

    def task_kernels(self, training=False):
        """Every task's kernel W_t (num_tasks, kh, kw, in, filters) (NOTE 1).

        In the compute dtype; `training=True` draws the relaxation noise
        (one sample per task, NOTE 2).
        """
        weights = self.allocation_weights(
            ops.arange(self.num_tasks, dtype="int32"), training=training)
        weights = ops.cast(weights, self.compute_dtype)  # (T, splits, S)
        deltas = self.sft_masks * self.sft_deltas  # (S, kh, kw, in, filters)
        splits = self.num_splits
        # The input channels in `splits` chunks: one matmul per split.
        deltas = ops.reshape(deltas, (
            self.num_skills, self.kernel_size[0] * self.kernel_size[1],
            splits, self.in_channels // splits, self.filters))
        mixed = ops.einsum("tqs,sxqcf->txqcf", weights, deltas)
        mixed = ops.reshape(mixed, (self.num_tasks,) + tuple(self.kernel.shape))
        return ops.expand_dims(self.kernel, 0) + mixed

    def _conv(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=self.strides,
                        padding=self.padding, data_format=self.data_format,
                        dilation_rate=self.dilation_rate)

    def _grouped(self, inputs, kernels, ids):
        """One convolution per task present in the batch (concrete ids)."""
        present = np.unique(ids)
        if len(present) == 1:
            return self._conv(inputs, kernels[int(present[0])])
        order = np.argsort(ids, kind="stable")
        bounds = np.cumsum([np.count_nonzero(ids == t) for t in present])
        parts, start = [], 0
        for task, end in zip(present, bounds, strict=True):
            rows = ops.take(inputs, order[start:end], axis=0)
            parts.append(self._conv(rows, kernels[int(task)]))
            start = end
        outputs = ops.concatenate(parts, axis=0)
        return ops.take(outputs, np.argsort(order), axis=0)

    def _stacked(self, inputs, kernels, task_ids):
        """One convolution with num_tasks * filters output channels; each
        example keeps its task's slice (static shapes: jit-friendly)."""
        tasks, filters = self.num_tasks, self.filters
        if tasks == 1:
            return self._conv(inputs, kernels[0])
        stacked = ops.reshape(
            ops.transpose(kernels, (1, 2, 3, 0, 4)),
            self.kernel_size + (self.in_channels, tasks * filters))
        outputs = self._conv(inputs, stacked)
        one_hot = ops.one_hot(task_ids, tasks, dtype=outputs.dtype)
        shape = ops.shape(outputs)
        if self.data_format == "channels_last":
            outputs = ops.reshape(
                outputs, (shape[0], shape[1], shape[2], tasks, filters))
            return ops.einsum("bhwtf,bt->bhwf", outputs, one_hot)
        outputs = ops.reshape(
            outputs, (shape[0], tasks, filters, shape[2], shape[3]))
        return ops.einsum("btfhw,bt->bfhw", outputs, one_hot)

    def call(self, inputs, task=None, training=None):
        self._check_inputs(inputs.shape)
        task_ids = self._task_ids(inputs, task)
        kernels = self.task_kernels(training=bool(training))
        ids = None
        if self.task_batching != "stacked":
            ids = _concrete_values(task_ids)
            if not isinstance(ids, np.ndarray):  # traced, or on an accelerator
                ids = None
            if ids is None and self.task_batching == "grouped":
                raise ValueError(
                    "SkillConv2D(task_batching='grouped') needs task ids with "
                    "concrete values (an eager call on CPU ids); they are "
                    "traced here (jit, tf.function or torch.compile). Use "
                    "task_batching='auto' or 'stacked'.")
        if ids is not None:
            outputs = self._grouped(inputs, kernels, ids)
        else:
            outputs = self._stacked(inputs, kernels, task_ids)
        if self.use_bias:
            bias_shape = ((1, 1, 1, self.filters)
                          if self.data_format == "channels_last"
                          else (1, self.filters, 1, 1))
            outputs = outputs + ops.reshape(self.bias, bias_shape)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    # -- export ------------------------------------------------------------------
    def merged_kernel(self, task_id):
        """W0 + the task's delta at inference allocation, float32,
        shape (kh, kw, in_channels, filters)."""
        task_id = self._check_task_id(task_id)
        weights = ops.cast(self.allocation_weights(
            ops.convert_to_tensor([task_id], "int32"))[0], "float32")
        channel_weights = ops.repeat(
            weights, self.in_channels // self.num_splits, axis=0)  # (in, S)
        deltas = (ops.cast(self.sft_masks, "float32")
                  * ops.cast(self.sft_deltas, "float32"))
        return ops.cast(self.kernel, "float32") + ops.einsum(
            "cs,shwcf->hwcf", channel_weights, deltas)

    def to_conv(self, task_id):
        """A plain `keras.layers.Conv2D` equal to this layer at inference
        for `task_id`."""
        conv = keras.layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides,
            padding=self.padding, data_format=self.data_format,
            dilation_rate=self.dilation_rate, activation=self.activation,
            use_bias=self.use_bias, dtype=self.dtype_policy)
        shape = ((None, None, None, self.in_channels)
                 if self.data_format == "channels_last"
                 else (None, self.in_channels, None, None))
        conv.build(shape)
        conv.kernel.assign(self.merged_kernel(task_id))
        if self.use_bias:
            conv.bias.assign(self.bias)
        return conv

    @classmethod
    def from_conv(cls, conv, num_tasks, num_skills, **kwargs):
        """A SkillConv2D whose base is a copy of a built `Conv2D`
        (groups 1, no LoRA enabled)."""
        if not isinstance(conv, keras.layers.Conv2D) or not conv.built:
            raise ValueError("from_conv needs a built keras.layers.Conv2D.")
        if conv.groups != 1 or getattr(conv, "lora_enabled", False):
            raise ValueError(
                "from_conv supports Conv2D layers with groups=1 and without "
                "LoRA.")
        layer = cls(
            conv.filters, conv.kernel_size, num_tasks, num_skills,
            strides=conv.strides, padding=conv.padding,
            data_format=conv.data_format, dilation_rate=conv.dilation_rate,
            activation=conv.activation, use_bias=conv.use_bias, **kwargs)
        in_channels = conv.kernel.shape[-2]
        layer.build((None, None, None, in_channels)
                    if layer.data_format == "channels_last"
                    else (None, in_channels, None, None))
        layer.kernel.assign(conv.kernel)
        if conv.use_bias:
            layer.bias.assign(conv.bias)
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(self._allocation_config())
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "trainable_base": self.trainable_base,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer),
            "sft_sparsity": self.sft_sparsity,
            "mask_seed": self.mask_seed,
            "skill_initializer": keras.initializers.serialize(
                self.skill_initializer),
            "skill_regularizer": keras.regularizers.serialize(
                self.skill_regularizer),
            "task_batching": self.task_batching,
        })
        return config
