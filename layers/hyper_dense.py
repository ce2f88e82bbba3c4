"""Hypernetwork-generated dense layers (modular hypernetworks).

Paper: S. Schug, S. Kobayashi, Y. Akram, M. Wolczyk, A. Proca, J. von
Oswald, R. Pascanu, J. Sacramento, A. Steger. "Discovering modular solutions
that generalize compositionally", ICLR 2024 (arXiv:2312.15001), Appendix D.3
(linear hypernetwork) and D.4 (nonlinear hypernetwork). Official code:
github.com/smonsays/modular-hyperteacher (`metax/models/bank.py`,
`metax/models/hnet.py`, `metax/models/linear.py`).

A task embedding `e` (a fast parameter in meta-learning) is normalised and
mapped by a task-shared generator to the flattened kernel of a dense layer
of the base network:

    u = sqrt(d) * e / max(||e||, eps)            (d = embedding_dim)
    linear generator:     vec(W) = u Theta                 Theta (d, in*out)
    nonlinear generator:  vec(W) = MLP(u) Theta_out
        MLP = LayerNorm -> depth x [Dense(hidden), LayerNorm, ELU]
    y = x W / sqrt(in) + b     (NTK parameterisation, `ntk=True`)

Three public layers:

* `HyperGenerator`: embedding -> flat parameter vector; optionally chunked
  (chunks generated from the embedding concatenated with a learned chunk
  embedding, von Oswald et al. 2020, "Continual learning with
  hypernetworks"), so that one generator can produce the kernels of a
  whole network.
* `HyperDense`: a dense layer with its own generator and (optionally) its
  own per-task embedding table; or, with `generator=None`, a dense layer
  that applies a kernel generated elsewhere (`generated_kernel=`).
* `HyperMLP`: a base MLP whose kernels all come from ONE shared chunked
  `HyperGenerator` (a container, so that the sharing survives `.keras`
  save/load).

HyperDense and HyperMLP follow the project's calling convention,
`layer(inputs, task)`: `task` holds integer task ids (batch,) of any integer
dtype (rows of the layer's embedding table, `num_tasks`) or float task
embeddings (batch, embedding_dim), one per example, validated by
`layers.task_inputs.check_task_inputs`. `HyperDense(generator=None)` is
called `layer(inputs, generated_kernel=kernels)` instead.

NOTE 1 (paper text vs official code, embedding normalisation): the paper
  (D.3) says the embedding is normalised "to the unit norm"; the official
  code (`Embedding` in bank.py) rescales it to norm sqrt(d) ("elementwise
  norm of 1"), which is what makes the generated weights unit-variance at
  initialisation as D.3 states. Default `embedding_normalization="rms"`
  (norm sqrt(d), official); `"unit"` gives the paper's text; `None`
  switches normalisation off.
NOTE 2 (official code): the normalisation factor is wrapped in
  `stop_gradient` by default in the official code
  (`embedding_norm_stop_grad=True`), so the gradient w.r.t. `e` is the
  scaled gradient w.r.t. `u`, not its projection onto the sphere.
  `normalization_stop_gradient=True` (default) follows the code; `False`
  differentiates through the norm.
NOTE 3 (addition): the official code divides by ||e|| without an epsilon
  (a zero embedding gives NaN). Here the norm is clamped,
  `max(||e||, normalization_epsilon)` (default 1e-6, computed as
  `rsqrt(max(sum e^2, eps^2))` so that the gradient at e = 0 is finite):
  a zero embedding gives u = 0, hence a zero generated kernel for the
  linear generator.
NOTE 4 (paper vs official code, biases): the paper (D.3) says biases are
  not generated and are fast parameters. The official code generates the
  base network's biases with the hypernetwork too (the target-network
  parameter tree it chunks includes `b`) and adds one plain fast bias to
  the network output only (`fast_bias=True`). Default here follows the
  paper (`generate_bias=False`, a plain bias per layer); `HyperDense(
  generate_bias=True)` generates the bias as well (official variant; it is
  added to the plain bias when `use_bias=True`).
NOTE 5 (official code, NTK): `ReparametrizedLinear` multiplies the kernel
  by 1/sqrt(in) in the forward pass; the bias is not scaled. `ntk=True`
  (default, as in the paper) does exactly this. With `ntk=False` the
  kernel is used as is and the default generator output initialiser is
  divided by sqrt(in) instead (standard LeCun-style parameterisation; an
  addition, not in the paper).
NOTE 6 (official code, initialisation): generator kernels follow Haiku's
  `hk.Linear` default, a normal truncated at 2 standard deviations with
  stddev 1/sqrt(fan_in) (NOT rescaled like Keras' VarianceScaling), biases
  zero, LayerNorm scale 1 / offset 0 / epsilon 1e-5 (Haiku's, not Keras'
  1e-3); the output layer of the generator has no bias. Task embeddings:
  uniform with unit variance, U(-sqrt 3, sqrt 3) (paper D.3; the code's
  VarianceScaling(1, fan_in) over an (num_chunks, d) table gives
  U(-sqrt(3/num_chunks), ...) , i.e. the same when not chunked).
NOTE 7 (official code, nonlinear generator layout): D.4 and `DeepBank`:
  LayerNorm on the input, then `depth` x [Dense(hidden), LayerNorm, ELU],
  then a bias-free linear head (default depth 4, hidden 32).
NOTE 8 (official code vs von Oswald chunking): the official code "chunks"
  across layers of equal shape: every chunk (= one layer) has its OWN fast
  embedding and the generator is shared. `HyperGenerator` accepts either
  one embedding per example (batch, d), broadcast to all chunks, or one per
  chunk (batch, num_chunks, d) (official style); learned chunk embeddings
  (`chunk_embedding_dim > 0`, von Oswald style) are concatenated to it.
NOTE 9 (efficiency): every example gets its own kernel (mixed-task
  batches), generated per example and applied with einsum('bi,bio->bo').
  For the unchunked linear generator the per-example kernels are never
  materialised: y = (x outer u) Theta, computed as
  einsum('bi,bd,dio->bo') (`HyperDense.call`). Measured on the 2-core CPU
  (batch 256, in = out = 128, d = 16, forward + backward, under load):
  JAX-jit 23 ms vs 125 ms materialised, TF eager 27 vs 70 ms, torch with
  1 thread 19 vs 56 ms (with 2 contended threads torch was noisy, 240 vs
  140 ms). Table lookups are gathered before generation (cost per example,
  not per task).
NOTE 10 (addition): `HyperMLP(ntk=False)` uses one generator for layers of
  different fan-in; its default output initialiser is divided by the
  sqrt of the largest fan-in (exact per-layer scaling only with ntk=True).
NOTE 11 (addition, efficiency for meta-learning): inputs may be grouped,
  `(batch, group, in)` with one task entry per batch row, e.g. a meta-batch
  of T tasks with n shots each and one (fast) embedding per task. The
  kernel is then generated once per row, (batch, in, units), and applied to
  the whole group with einsum('bni,bio->bno'): generation costs
  batch * d * in * units instead of batch * group * d * in * units for
  per-example embeddings. The authors' code vmaps over tasks for the same
  effect.
"""

import math

import keras
from keras import ops

from layers.task_inputs import check_task_inputs, describe, positive_int

_GENERATORS = ("linear", "mlp")
_NORMALIZATIONS = ("rms", "unit", None)
_NORMALIZATION_ARGS = (
    "embedding_normalization",
    "normalization_epsilon",
    "normalization_stop_gradient",
)
_SQRT3 = math.sqrt(3.0)

# Constructor arguments that HyperDense and HyperMLP share, with their
# defaults. `_TaskEmbedding.__init__` takes them from the keyword arguments
# and validates them; `_TaskEmbedding.get_config` serialises them (with
# embedding_dim, num_tasks, generator and activation), so that neither layer
# repeats the list.
_SHARED_DEFAULTS = {
    "hidden_units": 32,
    "depth": 4,
    "ntk": True,
    "use_bias": True,
    "embedding_normalization": "rms",
    "normalization_epsilon": 1e-6,
    "normalization_stop_gradient": True,
    "embedding_initializer": None,
    "generator_initializer": None,
    "bias_initializer": "zeros",
    "bias_regularizer": None,
    "embedding_regularizer": None,
    "generator_regularizer": None,
}


def _unit_variance_uniform():
    # NOTE 6: task/chunk embeddings start uniform with unit variance.
    return keras.initializers.RandomUniform(-_SQRT3, _SQRT3)


def _check_generator(layer, generator, choices):
    if generator not in choices:
        raise ValueError(
            f"{describe(layer)}: `generator` must be one of {choices}; got "
            f"{generator!r}."
        )


def _set_normalization(layer, mode, epsilon, stop_gradient):
    """Validates and sets the three normalisation arguments (NOTE 1-3)."""
    if mode not in _NORMALIZATIONS:
        raise ValueError(
            f"{describe(layer)}: `embedding_normalization` must be one of "
            f"{_NORMALIZATIONS}; got {mode!r}."
        )
    layer.embedding_normalization = mode
    layer.normalization_epsilon = float(epsilon)
    layer.normalization_stop_gradient = bool(stop_gradient)


def _normalization_config(layer):
    return {name: getattr(layer, name) for name in _NORMALIZATION_ARGS}


def _check_chunking(layer, chunk_size, chunk_embedding_dim, per_chunk=False):
    """Validated `(chunk_size, chunk_embedding_dim)`."""
    chunk_size = positive_int(chunk_size, "chunk_size", allow_none=True)
    chunk_embedding_dim = positive_int(
        chunk_embedding_dim, "chunk_embedding_dim", minimum=0
    )
    if chunk_size is None and chunk_embedding_dim:
        raise ValueError(
            f"{describe(layer)}: `chunk_embedding_dim` needs `chunk_size` "
            "(learned chunk embeddings exist only when the parameters are "
            f"generated in chunks); got chunk_embedding_dim="
            f"{chunk_embedding_dim} with chunk_size=None."
        )
    if chunk_size is None and per_chunk:
        raise ValueError(
            f"{describe(layer)}: `embedding_per_chunk=True` needs "
            "`chunk_size` (one task embedding per generated chunk)."
        )
    return chunk_size, chunk_embedding_dim


def _layer_norm(x, scale, offset, epsilon):
    """LayerNorm over the last axis, statistics in float32 (as Haiku)."""
    dtype = x.dtype
    x = ops.cast(x, "float32")
    mean = ops.mean(x, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
    x = (x - mean) * ops.rsqrt(variance + epsilon)
    x = ops.cast(x, dtype)
    return x * ops.cast(scale, dtype) + ops.cast(offset, dtype)


@keras.saving.register_keras_serializable(package="modular_zoo")
class HyperGenerator(keras.layers.Layer):
    """Generates a flat parameter vector from a task embedding.

    With `u` the normalised embedding (NOTE 1-3),
    `u = sqrt(d) e / max(||e||, eps)` ("rms"), `e / max(||e||, eps)`
    ("unit") or `e` (None):

        linear:  params = u Theta
        mlp:     params = ELU(LN(Dense(... ELU(LN(Dense(LN(u)))) ...))) Theta

    (NOTE 6-7 for the layout and initialisation). Chunked (`chunk_size`
    set): the output is produced in
    `num_chunks = ceil(output_size / chunk_size)` chunks,
    `chunk_k = g([u_k, c_k])`, with `c_k` a learned chunk embedding of size
    `chunk_embedding_dim` (0: none) and `u_k` either the example's
    embedding (input (batch, d)) or the chunk's own embedding (input
    (batch, num_chunks, d), official-code style, NOTE 8); the chunks are
    concatenated and truncated to `output_size`.

    Args:
        output_size: Positive integer, number of generated parameters.
        embedding_dim: Positive integer, size d of the task embedding.
        generator: String, `"linear"` (default) or `"mlp"`.
        hidden_units: Positive integer, width of the mlp generator
            (default 32).
        depth: Non-negative integer, number of [Dense, LayerNorm, ELU]
            blocks of the mlp generator (default 4).
        chunk_size: Positive integer or None, generate in chunks of this
            size (None: one chunk).
        chunk_embedding_dim: Non-negative integer, size of the learned chunk
            embeddings (needs `chunk_size`; 0: none).
        embedding_normalization: `"rms"` (norm sqrt(d), official code;
            default), `"unit"` (norm 1, paper text) or None (NOTE 1).
        normalization_epsilon: Float, lower bound on ||e|| (NOTE 3).
        normalization_stop_gradient: Boolean, stop the gradient through
            the normalisation factor (official code, NOTE 2).
        layer_norm_epsilon: Float, LayerNorm epsilon (Haiku's 1e-5).
        output_initializer: Initializer of the output kernel Theta; None:
            truncated normal with stddev `output_init_scale / sqrt(fan_in)`.
        output_init_scale: Float, multiplier of the default output stddev.
        chunk_embedding_initializer: Initializer of the chunk embeddings
            (default U(-sqrt 3, sqrt 3)).
        kernel_regularizer: Regularizer of every generator kernel.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        embedding: Float tensor, the task embeddings `e`.

    Input shape:
        `(batch, embedding_dim)`, or `(batch, num_chunks, embedding_dim)`
        when chunked (one embedding per chunk).

    Output shape:
        `(batch, output_size)`.

    Example:

    >>> generator = HyperGenerator(output_size=12, embedding_dim=2)
    >>> tuple(generator(np.ones((3, 2), "float32")).shape)
    (3, 12)
    >>> u = generator.normalize(np.array([[3.0, 4.0]], "float32"))  # rms
    >>> np.round(ops.convert_to_numpy(u), 4)  # sqrt(2) * (0.6, 0.8)
    array([[0.8485, 1.1314]], dtype=float32)
    """

    def __init__(
        self,
        output_size,
        embedding_dim,
        generator="linear",
        hidden_units=32,
        depth=4,
        chunk_size=None,
        chunk_embedding_dim=0,
        embedding_normalization="rms",
        normalization_epsilon=1e-6,
        normalization_stop_gradient=True,
        layer_norm_epsilon=1e-5,
        output_initializer=None,
        output_init_scale=1.0,
        chunk_embedding_initializer=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_generator(self, generator, _GENERATORS)
        _set_normalization(
            self,
            embedding_normalization,
            normalization_epsilon,
            normalization_stop_gradient,
        )
        self.output_size = positive_int(output_size, "output_size")
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim")
        self.generator = generator
        self.hidden_units = positive_int(hidden_units, "hidden_units")
        self.depth = positive_int(depth, "depth", minimum=0)
        self.chunk_size, self.chunk_embedding_dim = _check_chunking(
            self, chunk_size, chunk_embedding_dim
        )
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.output_initializer = (
            None
            if output_initializer is None
            else keras.initializers.get(output_initializer)
        )
        self.output_init_scale = float(output_init_scale)
        self.chunk_embedding_initializer = keras.initializers.get(
            chunk_embedding_initializer or _unit_variance_uniform()
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        if self.chunk_size is None:
            self.num_chunks = None
            self._generated_size = self.output_size
        else:
            self.num_chunks = -(-self.output_size // self.chunk_size)
            self._generated_size = self.chunk_size

    def _truncated_normal(self, fan_in, scale=1.0):
        # NOTE 6: Haiku's TruncatedNormal(stddev) does not rescale stddev.
        return keras.initializers.TruncatedNormal(
            stddev=scale / math.sqrt(fan_in)
        )

    def build(self, embedding_shape):
        expected_rank = (2, 3) if self.chunk_size else (2,)
        if len(embedding_shape) not in expected_rank or (
            embedding_shape[-1] is not None
            and embedding_shape[-1] != self.embedding_dim
        ):
            raise ValueError(
                f"{describe(self)}: expected an embedding of shape (batch, "
                f"{self.embedding_dim})"
                + (
                    f" or (batch, {self.num_chunks}, {self.embedding_dim})"
                    if self.chunk_size
                    else ""
                )
                + f", got {tuple(embedding_shape)}."
            )
        if len(embedding_shape) == 3 and embedding_shape[1] not in (
            None,
            self.num_chunks,
        ):
            raise ValueError(
                f"{describe(self)}: per-chunk embeddings must have shape "
                f"(batch, {self.num_chunks}, {self.embedding_dim}), got "
                f"{tuple(embedding_shape)}."
            )
        if self.chunk_embedding_dim:
            self.chunk_embeddings = self.add_weight(
                name="chunk_embeddings",
                shape=(self.num_chunks, self.chunk_embedding_dim),
                initializer=self.chunk_embedding_initializer,
            )
        width = self.embedding_dim + self.chunk_embedding_dim
        self.hidden_kernels, self.hidden_biases = [], []
        self.layer_norm_scales, self.layer_norm_offsets = [], []
        if self.generator == "mlp":
            # NOTE 7: LayerNorm on the input, then depth x [Dense, LN, ELU].
            for index in range(self.depth + 1):
                size = width if index == 0 else self.hidden_units
                self.layer_norm_scales.append(self.add_weight(
                    name=f"layer_norm_scale_{index}", shape=(size,),
                    initializer="ones",
                ))
                self.layer_norm_offsets.append(self.add_weight(
                    name=f"layer_norm_offset_{index}", shape=(size,),
                    initializer="zeros",
                ))
                if index == self.depth:
                    break
                self.hidden_kernels.append(self.add_weight(
                    name=f"hidden_kernel_{index}",
                    shape=(size, self.hidden_units),
                    initializer=self._truncated_normal(size),
                    regularizer=self.kernel_regularizer,
                ))
                self.hidden_biases.append(self.add_weight(
                    name=f"hidden_bias_{index}", shape=(self.hidden_units,),
                    initializer="zeros",
                ))
            head_fan_in = self.hidden_units
        else:
            head_fan_in = width
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(head_fan_in, self._generated_size),
            initializer=self.output_initializer
            or self._truncated_normal(head_fan_in, self.output_init_scale),
            regularizer=self.kernel_regularizer,
        )

    def normalize(self, embedding):
        """The normalised embedding u (NOTE 1-3); identity if disabled."""
        # NOTE 1: "rms" rescales to norm sqrt(d) (official), "unit" to 1.
        embedding = ops.convert_to_tensor(embedding)
        if self.embedding_normalization is None:
            return embedding
        squared_norm = ops.sum(
            ops.square(ops.cast(embedding, "float32")), axis=-1, keepdims=True
        )
        # NOTE 3: clamp the norm; rsqrt of the clamped square keeps the
        # gradient finite at e = 0.
        inverse_norm = ops.rsqrt(
            ops.maximum(squared_norm, self.normalization_epsilon**2)
        )
        if self.embedding_normalization == "rms":
            inverse_norm = inverse_norm * math.sqrt(self.embedding_dim)
        if self.normalization_stop_gradient:
            inverse_norm = ops.stop_gradient(inverse_norm)  # NOTE 2
        return embedding * ops.cast(inverse_norm, embedding.dtype)

    def call(self, embedding):
        generator_input = self.normalize(embedding)
        if self.chunk_size is not None:
            # NOTE 8: one embedding per example, or one per chunk.
            if len(generator_input.shape) == 2:
                generator_input = ops.repeat(
                    ops.expand_dims(generator_input, 1), self.num_chunks, 1
                )
            if self.chunk_embedding_dim:
                chunk_embeddings = ops.broadcast_to(
                    ops.expand_dims(self.chunk_embeddings, 0),
                    (ops.shape(generator_input)[0],)
                    + tuple(self.chunk_embeddings.shape),
                )
                generator_input = ops.concatenate(
                    [generator_input,
                     ops.cast(chunk_embeddings, generator_input.dtype)],
                    axis=-1,
                )
        hidden = generator_input
        if self.generator == "mlp":
            hidden = _layer_norm(
                hidden, self.layer_norm_scales[0], self.layer_norm_offsets[0],
                self.layer_norm_epsilon,
            )
            for index in range(self.depth):
                hidden = ops.matmul(hidden, self.hidden_kernels[index])
                hidden = hidden + self.hidden_biases[index]
                hidden = _layer_norm(
                    hidden, self.layer_norm_scales[index + 1],
                    self.layer_norm_offsets[index + 1],
                    self.layer_norm_epsilon,
                )
                hidden = ops.elu(hidden)
        params = ops.matmul(hidden, self.output_kernel)
        if self.chunk_size is not None:
            params = ops.reshape(
                params, (-1, self.num_chunks * self.chunk_size)
            )[:, : self.output_size]
        return params

    def compute_output_shape(self, embedding_shape):
        # (batch, d) and per-chunk (batch, num_chunks, d) alike.
        return (embedding_shape[0], self.output_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_size=self.output_size,
            embedding_dim=self.embedding_dim,
            generator=self.generator,
            hidden_units=self.hidden_units,
            depth=self.depth,
            chunk_size=self.chunk_size,
            chunk_embedding_dim=self.chunk_embedding_dim,
            layer_norm_epsilon=self.layer_norm_epsilon,
            output_initializer=keras.initializers.serialize(self.output_initializer),
            output_init_scale=self.output_init_scale,
            chunk_embedding_initializer=keras.initializers.serialize(
                self.chunk_embedding_initializer
            ),
            kernel_regularizer=keras.regularizers.serialize(
                self.kernel_regularizer
            ),
            **_normalization_config(self),
        )
        return config


class _TaskEmbedding:
    """What HyperDense and HyperMLP share: arguments, generator, task lookup.

    `__init__` takes `embedding_dim`, `num_tasks`, `generator`, `activation`
    and the arguments of `_SHARED_DEFAULTS` (from the keyword arguments),
    validates and sets them, and passes the rest to `keras.layers.Layer`;
    `get_config` serialises them all.
    """

    _generator_choices = _GENERATORS

    def __init__(self, *, embedding_dim, num_tasks, generator, activation,
                 **kwargs):
        shared = {
            name: kwargs.pop(name, default)
            for name, default in _SHARED_DEFAULTS.items()
        }
        super().__init__(**kwargs)
        _check_generator(self, generator, self._generator_choices)
        self.generator = generator
        self.embedding_dim = positive_int(
            embedding_dim, "embedding_dim", allow_none=True
        )
        self.num_tasks = positive_int(num_tasks, "num_tasks", allow_none=True)
        if generator is not None and self.embedding_dim is None:
            raise ValueError(
                f"{describe(self)}: a generator needs `embedding_dim`, the "
                "size of the task embedding."
            )
        if generator is None and self.num_tasks is not None:
            raise ValueError(
                f"{describe(self)}: `num_tasks` (an embedding table) needs a "
                "generator; with generator=None pass the kernel as "
                "`generated_kernel` to call()."
            )
        self.activation = keras.activations.get(activation)
        self.hidden_units = positive_int(shared["hidden_units"], "hidden_units")
        self.depth = positive_int(shared["depth"], "depth", minimum=0)
        self.ntk = bool(shared["ntk"])
        self.use_bias = bool(shared["use_bias"])
        _set_normalization(
            self, *(shared[name] for name in _NORMALIZATION_ARGS)
        )
        self.embedding_initializer = keras.initializers.get(
            shared["embedding_initializer"] or _unit_variance_uniform()
        )
        self.generator_initializer = (
            None
            if shared["generator_initializer"] is None
            else keras.initializers.get(shared["generator_initializer"])
        )
        self.bias_initializer = keras.initializers.get(
            shared["bias_initializer"]
        )
        self.bias_regularizer = keras.regularizers.get(
            shared["bias_regularizer"]
        )
        self.embedding_regularizer = keras.regularizers.get(
            shared["embedding_regularizer"]
        )
        self.generator_regularizer = keras.regularizers.get(
            shared["generator_regularizer"]
        )

    def _make_generator(self, output_size, fan_in, name, chunk_size=None,
                        chunk_embedding_dim=0):
        return HyperGenerator(
            output_size=output_size,
            embedding_dim=self.embedding_dim,
            generator=self.generator,
            hidden_units=self.hidden_units,
            depth=self.depth,
            chunk_size=chunk_size,
            chunk_embedding_dim=chunk_embedding_dim,
            output_initializer=self.generator_initializer,
            # NOTE 5 (and NOTE 10): without NTK scaling, shrink the default
            # generated kernel by 1/sqrt(fan_in) instead.
            output_init_scale=1.0 if self.ntk else 1.0 / math.sqrt(fan_in),
            kernel_regularizer=self.generator_regularizer,
            dtype=self.dtype_policy,
            name=name,
            **_normalization_config(self),
        )

    def _add_embedding_table(self, shape):
        if self.num_tasks is None:
            self.task_embeddings = None
            return
        self.task_embeddings = self.add_weight(
            name="task_embeddings",
            shape=(self.num_tasks,) + shape,
            initializer=self.embedding_initializer,
            regularizer=self.embedding_regularizer,
        )

    def _check_input_shape(self, input_shape):
        """`in` of inputs (batch, in) or (batch, group, in), at build."""
        if len(input_shape) not in (2, 3) or input_shape[-1] is None:
            raise ValueError(
                f"{describe(self)}: expected inputs of shape (batch, in) "
                f"or (batch, group, in) with a known `in`, got "
                f"{tuple(input_shape)}."
            )
        return int(input_shape[-1])

    def _check_inputs(self, inputs, input_dim):
        """Whether the inputs are grouped, (batch, group, in) (NOTE 11)."""
        if len(inputs.shape) not in (2, 3) or inputs.shape[-1] != input_dim:
            raise ValueError(
                f"{describe(self)}: expected inputs of shape (batch, "
                f"{input_dim}) or (batch, group, {input_dim}), got "
                f"{tuple(inputs.shape)}."
            )
        return len(inputs.shape) == 3

    def _task_embedding(self, inputs, task, embedding_shape,
                        descriptor_shape=None, descriptor_name=None):
        """Table rows for task ids, or the float embeddings (reshaped)."""
        descriptor_shape = descriptor_shape or embedding_shape
        task, is_ids = check_task_inputs(
            self,
            inputs,
            task,
            num_tasks=self.num_tasks,
            descriptor_shape=descriptor_shape,
            descriptor_name=descriptor_name or "task embedding",
        )
        if is_ids:  # any integer dtype, now int32
            return ops.take(self.task_embeddings, task, axis=0)
        if descriptor_shape != embedding_shape:
            task = ops.reshape(task, (-1,) + embedding_shape)
        return task

    def get_config(self):
        config = super().get_config()
        config.update(
            embedding_dim=self.embedding_dim,
            num_tasks=self.num_tasks,
            generator=self.generator,
            activation=keras.activations.serialize(self.activation),
            hidden_units=self.hidden_units,
            depth=self.depth,
            ntk=self.ntk,
            use_bias=self.use_bias,
            embedding_initializer=keras.initializers.serialize(
                self.embedding_initializer
            ),
            generator_initializer=keras.initializers.serialize(
                self.generator_initializer
            ),
            bias_initializer=keras.initializers.serialize(
                self.bias_initializer
            ),
            bias_regularizer=keras.regularizers.serialize(
                self.bias_regularizer
            ),
            embedding_regularizer=keras.regularizers.serialize(
                self.embedding_regularizer
            ),
            generator_regularizer=keras.regularizers.serialize(
                self.generator_regularizer
            ),
            **_normalization_config(self),
        )
        return config


@keras.saving.register_keras_serializable(package="modular_zoo")
class HyperDense(_TaskEmbedding, keras.layers.Layer):
    """Dense layer whose kernel is generated from a task embedding.

    For example b with task embedding e_b (a table row or an explicit
    float input) and u_b its normalised version (NOTE 1-3):

        W_b = reshape(g(u_b), (in, units))   g: linear (u Theta) or MLP
        y_b = x_b W_b / sqrt(in) + bias      (ntk=True; NOTE 5)
        y_b = x_b W_b + bias                 (ntk=False)

    then `activation`. The bias is a plain per-layer weight, not generated
    (paper D.3; NOTE 4 for the official variant `generate_bias=True`).
    Examples of different tasks may be mixed in a batch (NOTE 9).

    Args:
        units: Positive integer, dimensionality of the output space.
        embedding_dim: Positive integer, size d of the task embedding
            (required with a generator, unused with `generator=None`).
        num_tasks: Positive integer or None, rows of the task embedding
            table; None: no table, the task is given as float embeddings.
        generator: `"linear"` (default), `"mlp"`, or None: no generator,
            the kernel is passed to `call` as `generated_kernel` (used by
            `HyperMLP` and for sharing one generator between layers).
        generate_bias: Boolean, also generate a bias (official-code
            variant, NOTE 4).
        activation: Activation function applied to the output (default
            None).
        hidden_units: Positive integer, width of the mlp generator (32).
        depth: Non-negative integer, number of [Dense, LayerNorm, ELU]
            blocks of the mlp generator (4).
        ntk: Boolean, NTK parameterisation (default True, as in the paper;
            NOTE 5).
        use_bias: Boolean, add a plain (fast) bias (default True).
        embedding_normalization: `"rms"` (default), `"unit"` or None; see
            `HyperGenerator` (NOTE 1).
        normalization_epsilon: Float, lower bound on ||e|| (1e-6, NOTE 3).
        normalization_stop_gradient: Boolean, stop the gradient through
            the normalisation factor (default True, NOTE 2).
        embedding_initializer: Initializer of the task embedding table
            (default U(-sqrt 3, sqrt 3), unit variance; NOTE 6).
        generator_initializer: Initializer of the generator's output kernel
            (default truncated normal, stddev 1/sqrt(fan_in), further
            divided by sqrt(in) when `ntk=False`).
        bias_initializer: Initializer of the plain bias (default "zeros").
        bias_regularizer: Regularizer of the plain bias.
        embedding_regularizer: Regularizer of the task embedding table.
        generator_regularizer: Regularizer of the generator's kernels.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, in)`, or `(batch, group,
            in)`: a group of examples per task entry (NOTE 11).
        task: Integer task ids of shape `(batch,)` (any integer dtype;
            needs `num_tasks`) or float task embeddings of shape
            `(batch, embedding_dim)`: one per example (a task batch of 1
            is not broadcast). None with `generator=None`. Ids outside
            `[0, num_tasks)` raise ValueError where they are concrete;
            under jit they are not checked and follow the backend's gather
            semantics (clamped or filled: wrong outputs, no error).
        generated_kernel: Only with `generator=None`: a float tensor of
            shape `(batch, in * units)` (plus `units` generated bias values
            last if `generate_bias`), or `(batch, in, units)`.

    Input shape:
        `(batch, in)` or `(batch, group, in)`.

    Output shape:
        `(batch, units)` or `(batch, group, units)`.

    Example:

    >>> layer = HyperDense(8, embedding_dim=4, num_tasks=3)
    >>> x = np.ones((4, 16), "float32")
    >>> tuple(layer(x, np.array([0, 1, 2, 0], "uint8")).shape)
    (4, 8)
    >>> tuple(layer(x, np.ones((4, 4), "float32")).shape)  # explicit e
    (4, 8)
    >>> tasks_of_shots = np.ones((2, 5, 16), "float32")  # 2 tasks x 5 shots
    >>> tuple(layer(tasks_of_shots, np.array([0, 2])).shape)  # NOTE 11
    (2, 5, 8)
    >>> shared = HyperDense(8, generator=None)  # kernels generated elsewhere
    >>> kernels = np.ones((4, 16, 8), "float32")
    >>> ops.convert_to_numpy(shared(x, generated_kernel=kernels))[0, :3]
    array([4., 4., 4.], dtype=float32)
    """

    _generator_choices = _GENERATORS + (None,)

    def __init__(
        self,
        units,
        embedding_dim=None,
        num_tasks=None,
        generator="linear",
        generate_bias=False,
        activation=None,
        **kwargs,
    ):
        super().__init__(
            embedding_dim=embedding_dim,
            num_tasks=num_tasks,
            generator=generator,
            activation=activation,
            **kwargs,
        )
        self.units = positive_int(units, "units")
        self.generate_bias = bool(generate_bias)
        self.input_dim = None
        self.kernel_generator = None

    @property
    def generated_size(self):
        """Number of generated parameters (kernel, then bias if generated)."""
        if self.input_dim is None:
            raise ValueError(f"{describe(self)} is not built yet.")
        return self.input_dim * self.units + (
            self.units if self.generate_bias else 0
        )

    def build(self, input_shape):
        self.input_dim = self._check_input_shape(input_shape)
        if self.generator is not None:
            self.kernel_generator = self._make_generator(
                self.generated_size, self.input_dim, name="kernel_generator"
            )
            self.kernel_generator.build((None, self.embedding_dim))
            self._add_embedding_table((self.embedding_dim,))
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )

    def _split_generated(self, generated):
        """(batch, generated_size) -> kernel (batch, in, units), bias."""
        kernel_size = self.input_dim * self.units
        kernel = ops.reshape(
            generated[:, :kernel_size], (-1, self.input_dim, self.units)
        )
        generated_bias = (
            generated[:, kernel_size:] if self.generate_bias else None
        )
        return kernel, generated_bias

    def _given_kernel(self, inputs, task, generated_kernel):
        """generator=None: the checked kernel (batch, in, units) and bias."""
        if task is not None:
            raise ValueError(
                f"{describe(self)} has generator=None and takes no task: "
                "pass the kernel as `generated_kernel`."
            )
        if generated_kernel is None:
            raise ValueError(
                f"{describe(self)} has generator=None: pass the kernel as "
                f"`generated_kernel` (batch, {self.generated_size})."
            )
        shape = tuple(generated_kernel.shape)
        if shape[1:] == (self.input_dim, self.units) and not (
            self.generate_bias
        ):
            kernel, generated_bias = generated_kernel, None
        elif shape[1:] == (self.generated_size,):
            kernel, generated_bias = self._split_generated(generated_kernel)
        else:
            raise ValueError(
                f"{describe(self)}: `generated_kernel` must have shape "
                f"(batch, {self.generated_size})"
                + (
                    ""
                    if self.generate_bias
                    else f" or (batch, {self.input_dim}, {self.units})"
                )
                + f", got {shape}."
            )
        batch = inputs.shape[0]
        if None not in (batch, shape[0]) and batch != shape[0]:
            raise ValueError(
                f"{describe(self)}: got {shape[0]} generated kernels for a "
                f"batch of {batch} inputs; give one per example."
            )
        return kernel, generated_bias

    def call(self, inputs, task=None, generated_kernel=None):
        grouped = self._check_inputs(inputs, self.input_dim)
        # NOTE 11: one kernel per batch row, applied to the row's group.
        apply = "bni,bio->bno" if grouped else "bi,bio->bo"
        if self.generator is None:
            kernel, generated_bias = self._given_kernel(
                inputs, task, generated_kernel
            )
            outputs = ops.einsum(apply, inputs, kernel)
        else:
            if generated_kernel is not None:
                raise ValueError(
                    f"{describe(self)} generates its kernel (generator="
                    f"{self.generator!r}): call it as layer(inputs, task), "
                    "without `generated_kernel`."
                )
            embedding = self._task_embedding(
                inputs, task, (self.embedding_dim,)
            )
            embedding = ops.cast(embedding, inputs.dtype)
            generator = self.kernel_generator
            if self.generator == "linear" and not self.generate_bias:
                theta = ops.reshape(
                    generator.output_kernel,
                    (self.embedding_dim, self.input_dim, self.units),
                )
                normalized = generator.normalize(embedding)
                if grouped:  # NOTE 11: materialise one kernel per row
                    kernel = ops.einsum("bd,dio->bio", normalized, theta)
                    outputs = ops.einsum(apply, inputs, kernel)
                else:  # NOTE 9: y = (x outer u) Theta, no kernel
                    outputs = ops.einsum(
                        "bi,bd,dio->bo", inputs, normalized, theta
                    )
                generated_bias = None
            else:
                kernel, generated_bias = self._split_generated(
                    generator(embedding)
                )
                outputs = ops.einsum(apply, inputs, kernel)
        if grouped and generated_bias is not None:
            generated_bias = ops.expand_dims(generated_bias, 1)
        if self.ntk:
            outputs = outputs * (1.0 / math.sqrt(self.input_dim))  # NOTE 5
        if generated_bias is not None:
            outputs = outputs + generated_bias  # NOTE 4
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(
        self, inputs_shape, task_shape=None, generated_kernel_shape=None
    ):
        return tuple(inputs_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, generate_bias=self.generate_bias)
        return config


@keras.saving.register_keras_serializable(package="modular_zoo")
class HyperMLP(_TaskEmbedding, keras.layers.Layer):
    """An MLP whose kernels all come from one shared `HyperGenerator`.

    The kernels of all layers, flattened and concatenated in order, are
    generated by ONE generator (chunked when `chunk_size` is set) from the
    normalised task embedding u (NOTE 1-3):

        theta = g(u)  (flat, sum_l in_l * out_l)
        h_0 = x;  h_l = act(h_{l-1} W_l / sqrt(in_l) + b_l);  no act last

    Each layer is a `HyperDense(generator=None)` with its own plain (fast)
    bias. With `embedding_per_chunk=True` every chunk has its own task
    embedding (official code's chunking, NOTE 8): the table is
    (num_tasks, num_chunks, d) and explicit embeddings are
    (batch, num_chunks * d) (flattened, chunk-major).

    Args:
        layer_sizes: List of positive integers, output sizes of the layers.
        embedding_dim: Positive integer, size d of the task embedding.
        num_tasks: Positive integer or None, rows of the task embedding
            table (None: the task is given as float embeddings).
        generator: `"mlp"` (default) or `"linear"`, the shared generator
            (see `HyperGenerator`).
        chunk_size: Positive integer or None, generate the kernels in
            chunks of this size (None: one chunk).
        chunk_embedding_dim: Non-negative integer, size of the learned
            chunk embeddings (needs `chunk_size`).
        embedding_per_chunk: Boolean, one task embedding per chunk
            (official code; needs `chunk_size`).
        activation: Hidden activation (default "relu", as the base MLP of
            the official code); none after the last layer.
        hidden_units, depth, ntk, use_bias, embedding_normalization,
            normalization_epsilon, normalization_stop_gradient,
            embedding_initializer, generator_initializer, bias_initializer,
            bias_regularizer, embedding_regularizer, generator_regularizer:
            As in `HyperDense` (NOTE 10 for `ntk=False`).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, in)`, or `(batch, group,
            in)`: a group of examples per task entry (NOTE 11).
        task: Integer task ids of shape `(batch,)` (any integer dtype;
            needs `num_tasks`) or float task embeddings of shape
            `(batch, embedding_dim)` (`(batch, num_chunks * embedding_dim)`
            with `embedding_per_chunk`): one per example. Out-of-range ids:
            as in `HyperDense`.

    Input shape:
        `(batch, in)` or `(batch, group, in)`.

    Output shape:
        `(batch, layer_sizes[-1])` or `(batch, group, layer_sizes[-1])`.

    Example:

    >>> mlp = HyperMLP([8, 8, 2], embedding_dim=4, num_tasks=3,
    ...                chunk_size=32, chunk_embedding_dim=4)
    >>> x = np.ones((5, 4), "float32")
    >>> tuple(mlp(x, np.array([0, 1, 2, 0, 1])).shape)
    (5, 2)
    >>> mlp.shared_generator.num_chunks  # (4*8 + 8*8 + 8*2) / 32 chunks
    4
    """

    def __init__(
        self,
        layer_sizes,
        embedding_dim,
        num_tasks=None,
        generator="mlp",
        chunk_size=None,
        chunk_embedding_dim=0,
        embedding_per_chunk=False,
        activation="relu",
        **kwargs,
    ):
        super().__init__(
            embedding_dim=embedding_dim,
            num_tasks=num_tasks,
            generator=generator,
            activation=activation,
            **kwargs,
        )
        try:
            sizes = list(layer_sizes)
        except TypeError:
            sizes = []
        if not sizes:
            raise ValueError(
                f"{describe(self)}: `layer_sizes` must be a non-empty list "
                f"of positive integers; got {layer_sizes!r}."
            )
        self.layer_sizes = [
            positive_int(size, f"layer_sizes[{index}]")
            for index, size in enumerate(sizes)
        ]
        self.chunk_size, self.chunk_embedding_dim = _check_chunking(
            self, chunk_size, chunk_embedding_dim, embedding_per_chunk
        )
        self.embedding_per_chunk = bool(embedding_per_chunk)
        self.dense_layers = [
            HyperDense(
                size,
                generator=None,
                ntk=self.ntk,
                use_bias=self.use_bias,
                bias_initializer=self.bias_initializer,
                bias_regularizer=self.bias_regularizer,
                dtype=self.dtype_policy,
                name=f"dense_{index}",
            )
            for index, size in enumerate(self.layer_sizes)
        ]
        self.shared_generator = None

    def build(self, input_shape):
        size_in = self._check_input_shape(input_shape)
        self.kernel_sizes = []
        for layer in self.dense_layers:
            layer.build((None, size_in))
            self.kernel_sizes.append(layer.generated_size)
            size_in = layer.units
        self.shared_generator = self._make_generator(
            sum(self.kernel_sizes),
            max(layer.input_dim for layer in self.dense_layers),  # NOTE 10
            name="shared_generator",
            chunk_size=self.chunk_size,
            chunk_embedding_dim=self.chunk_embedding_dim,
        )
        self._embedding_shape = (
            (self.shared_generator.num_chunks, self.embedding_dim)
            if self.embedding_per_chunk
            else (self.embedding_dim,)
        )
        self.shared_generator.build((None,) + self._embedding_shape)
        self._add_embedding_table(self._embedding_shape)

    def call(self, inputs, task):
        self._check_inputs(inputs, self.dense_layers[0].input_dim)
        if self.embedding_per_chunk:  # NOTE 8: flat per-chunk embeddings
            num_chunks = self.shared_generator.num_chunks
            embedding = self._task_embedding(
                inputs,
                task,
                self._embedding_shape,
                descriptor_shape=(num_chunks * self.embedding_dim,),
                descriptor_name=(
                    f"task embedding ({num_chunks} chunks x "
                    f"{self.embedding_dim}, chunk-major)"
                ),
            )
        else:
            embedding = self._task_embedding(
                inputs, task, self._embedding_shape
            )
        generated = self.shared_generator(ops.cast(embedding, inputs.dtype))
        hidden = inputs
        offset = 0
        for index, layer in enumerate(self.dense_layers):
            size = self.kernel_sizes[index]
            hidden = layer(
                hidden, generated_kernel=generated[:, offset : offset + size]
            )
            offset += size
            if index < len(self.dense_layers) - 1:
                hidden = self.activation(hidden)
        return hidden

    def compute_output_shape(self, inputs_shape, task_shape=None):
        return tuple(inputs_shape[:-1]) + (self.layer_sizes[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            layer_sizes=list(self.layer_sizes),
            chunk_size=self.chunk_size,
            chunk_embedding_dim=self.chunk_embedding_dim,
            embedding_per_chunk=self.embedding_per_chunk,
        )
        return config
