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
"""

import math

import keras
from keras import ops

from training.backend import check_index_range

_GENERATORS = ("linear", "mlp")
_NORMALIZATIONS = ("rms", "unit", None)
_SQRT3 = math.sqrt(3.0)


def _unit_variance_uniform():
    # NOTE 6: task/chunk embeddings start uniform with unit variance.
    return keras.initializers.RandomUniform(-_SQRT3, _SQRT3)


def _is_integer(tensor):
    return "int" in keras.backend.standardize_dtype(tensor.dtype)


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

    With `u = scale(e) * e` the normalised embedding (NOTE 1-3):

        linear:  params = u Theta
        mlp:     params = [ELU(LN(Dense(...LN(u)...)))] Theta_out

    Chunked (`chunk_size` set): the output is produced in
    `num_chunks = ceil(output_size / chunk_size)` chunks,
    `chunk_k = g([u_k, c_k])`, with `c_k` a learned chunk embedding of size
    `chunk_embedding_dim` (0: none) and `u_k` either the example's
    embedding (input (batch, d)) or the chunk's own embedding (input
    (batch, num_chunks, d), official-code style, NOTE 8); the chunks are
    concatenated and truncated to `output_size`.

    Args:
        output_size: number of generated parameters.
        embedding_dim: size d of the task embedding.
        generator: `"linear"` or `"mlp"`.
        hidden_units: width of the mlp generator (default 32).
        depth: number of [Dense, LayerNorm, ELU] blocks (default 4).
        chunk_size: generate in chunks of this size (None: one chunk).
        chunk_embedding_dim: size of the learned chunk embeddings.
        embedding_normalization: `"rms"` (norm sqrt(d), official),
            `"unit"` (norm 1, paper text) or None.
        normalization_epsilon: lower bound on ||e|| (NOTE 3).
        normalization_stop_gradient: stop the gradient through the
            normalisation factor (official code, NOTE 2).
        layer_norm_epsilon: LayerNorm epsilon (Haiku's 1e-5).
        output_initializer: initialiser of the output kernel Theta; None:
            truncated normal with stddev `output_init_scale / sqrt(fan_in)`.
        output_init_scale: multiplier of the default output stddev.
        chunk_embedding_initializer: initialiser of the chunk embeddings.
        kernel_regularizer: regulariser of every generator kernel.

    Input shape: (batch, d), or (batch, num_chunks, d) when chunked.
    Output shape: (batch, output_size).

    Example:

    >>> import numpy as np
    >>> generator = HyperGenerator(output_size=12, embedding_dim=4)
    >>> tuple(generator(np.ones((2, 4), "float32")).shape)
    (2, 12)
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
        if generator not in _GENERATORS:
            raise ValueError(
                f"generator must be one of {_GENERATORS}, got {generator!r}."
            )
        if embedding_normalization not in _NORMALIZATIONS:
            raise ValueError(
                "embedding_normalization must be one of "
                f"{_NORMALIZATIONS}, got {embedding_normalization!r}."
            )
        if chunk_size is None and chunk_embedding_dim:
            raise ValueError("chunk_embedding_dim needs chunk_size to be set.")
        self.output_size = int(output_size)
        self.embedding_dim = int(embedding_dim)
        self.generator = generator
        self.hidden_units = int(hidden_units)
        self.depth = int(depth)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.chunk_embedding_dim = int(chunk_embedding_dim)
        self.embedding_normalization = embedding_normalization
        self.normalization_epsilon = float(normalization_epsilon)
        self.normalization_stop_gradient = bool(normalization_stop_gradient)
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
                f"{self.name}: expected an embedding of shape (batch, "
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
                f"{self.name}: per-chunk embeddings must have shape (batch, "
                f"{self.num_chunks}, {self.embedding_dim}), got "
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
            embedding_normalization=self.embedding_normalization,
            normalization_epsilon=self.normalization_epsilon,
            normalization_stop_gradient=self.normalization_stop_gradient,
            layer_norm_epsilon=self.layer_norm_epsilon,
            output_initializer=(
                None
                if self.output_initializer is None
                else keras.initializers.serialize(self.output_initializer)
            ),
            output_init_scale=self.output_init_scale,
            chunk_embedding_initializer=keras.initializers.serialize(
                self.chunk_embedding_initializer
            ),
            kernel_regularizer=keras.regularizers.serialize(
                self.kernel_regularizer
            ),
        )
        return config


class _TaskEmbedding:
    """Shared task-conditioning logic of HyperDense and HyperMLP."""

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

    def _task_embedding(self, task, shape):
        """Task ids (batch,) -> table rows; float (batch,)+shape -> as is."""
        if _is_integer(task):
            if self.task_embeddings is None:
                raise ValueError(
                    f"{self.name}: integer task ids need an embedding table "
                    "(set num_tasks); otherwise pass float embeddings of "
                    f"shape (batch,) + {shape}."
                )
            if len(task.shape) != 1:
                raise ValueError(
                    f"{self.name}: task ids must have shape (batch,), got "
                    f"{tuple(task.shape)}."
                )
            check_index_range(task, self.num_tasks)
            return ops.take(self.task_embeddings, task, axis=0)
        if tuple(task.shape[1:]) != shape or len(task.shape) != 1 + len(shape):
            raise ValueError(
                f"{self.name}: a float task embedding must have shape "
                f"(batch,) + {shape}, got {tuple(task.shape)}."
            )
        return task


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

    Args:
        units: output size.
        embedding_dim: size d of the task embedding (not needed when
            `generator=None`).
        num_tasks: rows of the task embedding table (None: no table, the
            task must be given as float embeddings).
        generator: `"linear"`, `"mlp"`, or None: no generator, the kernel
            is passed to `call` as `generated_kernel` (used by `HyperMLP`
            and for sharing one generator between layers).
        hidden_units, depth: size of the mlp generator (32, 4).
        ntk: NTK parameterisation (default True, as in the paper).
        use_bias: add a plain (fast) bias.
        generate_bias: also generate a bias (official-code variant).
        activation: activation applied to the output.
        embedding_normalization, normalization_epsilon,
        normalization_stop_gradient: see `HyperGenerator`.
        embedding_initializer: initialiser of the task embedding table
            (default U(-sqrt 3, sqrt 3), unit variance).
        generator_initializer: initialiser of the generator's output kernel
            (default truncated normal, stddev 1/sqrt(fan_in), further
            divided by sqrt(in) when `ntk=False`).
        bias_initializer, bias_regularizer, embedding_regularizer,
        generator_regularizer: as named.

    Call arguments:
        inputs: (batch, in).
        task: int32 task ids (batch,) (needs `num_tasks`) or float
            embeddings (batch, embedding_dim). Ids outside [0, num_tasks)
            raise ValueError eagerly; under jit they are not checked and
            follow the backend's gather semantics (clamped or filled: wrong
            outputs, no error).
        generated_kernel: only with `generator=None`: (batch, in * units)
            (plus `units` generated bias values last if `generate_bias`),
            or (batch, in, units).

    Output shape: (batch, units).

    Example:

    >>> import numpy as np
    >>> layer = HyperDense(8, embedding_dim=4, num_tasks=3)
    >>> x = np.random.rand(5, 16).astype("float32")
    >>> tuple(layer(x, np.array([0, 1, 2, 0, 1])).shape)
    (5, 8)
    >>> tuple(layer(x, np.random.rand(5, 4).astype("float32")).shape)  # explicit e
    (5, 8)
    """

    def __init__(
        self,
        units,
        embedding_dim=None,
        num_tasks=None,
        generator="linear",
        hidden_units=32,
        depth=4,
        ntk=True,
        use_bias=True,
        generate_bias=False,
        activation=None,
        embedding_normalization="rms",
        normalization_epsilon=1e-6,
        normalization_stop_gradient=True,
        embedding_initializer=None,
        generator_initializer=None,
        bias_initializer="zeros",
        bias_regularizer=None,
        embedding_regularizer=None,
        generator_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if generator is not None and generator not in _GENERATORS:
            raise ValueError(
                f"generator must be one of {_GENERATORS} or None, got "
                f"{generator!r}."
            )
        if generator is not None and embedding_dim is None:
            raise ValueError("HyperDense needs embedding_dim with a generator.")
        if generator is None and num_tasks is not None:
            raise ValueError(
                "num_tasks (an embedding table) needs a generator; with "
                "generator=None pass generated_kernel to call()."
            )
        self.units = int(units)
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.num_tasks = None if num_tasks is None else int(num_tasks)
        self.generator = generator
        self.hidden_units = int(hidden_units)
        self.depth = int(depth)
        self.ntk = bool(ntk)
        self.use_bias = bool(use_bias)
        self.generate_bias = bool(generate_bias)
        self.activation = keras.activations.get(activation)
        self.embedding_normalization = embedding_normalization
        self.normalization_epsilon = float(normalization_epsilon)
        self.normalization_stop_gradient = bool(normalization_stop_gradient)
        self.embedding_initializer = keras.initializers.get(
            embedding_initializer or _unit_variance_uniform()
        )
        self.generator_initializer = (
            None
            if generator_initializer is None
            else keras.initializers.get(generator_initializer)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.embedding_regularizer = keras.regularizers.get(
            embedding_regularizer
        )
        self.generator_regularizer = keras.regularizers.get(
            generator_regularizer
        )
        self.input_dim = None
        self.kernel_generator = None

    @property
    def generated_size(self):
        """Number of generated parameters (kernel, then bias if generated)."""
        if self.input_dim is None:
            raise ValueError(f"{self.name} is not built yet.")
        return self.input_dim * self.units + (
            self.units if self.generate_bias else 0
        )

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected inputs of shape (batch, in) with a "
                f"known `in`, got {tuple(input_shape)}."
            )
        self.input_dim = int(input_shape[-1])
        if self.generator is not None:
            self.kernel_generator = HyperGenerator(
                output_size=self.generated_size,
                embedding_dim=self.embedding_dim,
                generator=self.generator,
                hidden_units=self.hidden_units,
                depth=self.depth,
                embedding_normalization=self.embedding_normalization,
                normalization_epsilon=self.normalization_epsilon,
                normalization_stop_gradient=self.normalization_stop_gradient,
                output_initializer=self.generator_initializer,
                # NOTE 5: without NTK scaling, shrink the generated kernel.
                output_init_scale=(
                    1.0 if self.ntk else 1.0 / math.sqrt(self.input_dim)
                ),
                kernel_regularizer=self.generator_regularizer,
                dtype=self.dtype_policy,
                name="kernel_generator",
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

    def call(self, inputs, task=None, generated_kernel=None):
        if len(inputs.shape) != 2 or inputs.shape[-1] != self.input_dim:
            raise ValueError(
                f"{self.name}: expected inputs of shape (batch, "
                f"{self.input_dim}), got {tuple(inputs.shape)}."
            )
        if self.generator is None:
            if generated_kernel is None or task is not None:
                raise ValueError(
                    f"{self.name} has generator=None: pass generated_kernel "
                    "(and no task)."
                )
            if len(generated_kernel.shape) == 3:
                if tuple(generated_kernel.shape[1:]) != (
                    self.input_dim, self.units
                ) or self.generate_bias:
                    raise ValueError(
                        f"{self.name}: generated_kernel must have shape "
                        f"(batch, {self.input_dim}, {self.units}) or (batch, "
                        f"{self.generated_size}), got "
                        f"{tuple(generated_kernel.shape)}."
                    )
                kernel, generated_bias = generated_kernel, None
            else:
                if len(generated_kernel.shape) != 2 or (
                    generated_kernel.shape[-1] != self.generated_size
                ):
                    raise ValueError(
                        f"{self.name}: generated_kernel must have shape "
                        f"(batch, {self.generated_size}), got "
                        f"{tuple(generated_kernel.shape)}."
                    )
                kernel, generated_bias = self._split_generated(
                    generated_kernel
                )
            outputs = ops.einsum("bi,bio->bo", inputs, kernel)
        else:
            if task is None or generated_kernel is not None:
                raise ValueError(
                    f"{self.name}: call as layer(inputs, task); "
                    "generated_kernel is only for generator=None."
                )
            embedding = self._task_embedding(task, (self.embedding_dim,))
            generator = self.kernel_generator
            if self.generator == "linear" and not self.generate_bias:
                # NOTE 9: y = (x outer u) Theta, no per-example kernel.
                normalized = generator.normalize(
                    ops.cast(embedding, inputs.dtype)
                )
                theta = ops.reshape(
                    generator.output_kernel,
                    (self.embedding_dim, self.input_dim, self.units),
                )
                outputs = ops.einsum("bi,bd,dio->bo", inputs, normalized, theta)
                generated_bias = None
            else:
                kernel, generated_bias = self._split_generated(
                    generator(ops.cast(embedding, inputs.dtype))
                )
                outputs = ops.einsum("bi,bio->bo", inputs, kernel)
        if self.ntk:
            outputs = outputs * (1.0 / math.sqrt(self.input_dim))  # NOTE 5
        if generated_bias is not None:
            outputs = outputs + generated_bias  # NOTE 4
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            embedding_dim=self.embedding_dim,
            num_tasks=self.num_tasks,
            generator=self.generator,
            hidden_units=self.hidden_units,
            depth=self.depth,
            ntk=self.ntk,
            use_bias=self.use_bias,
            generate_bias=self.generate_bias,
            activation=keras.activations.serialize(self.activation),
            embedding_normalization=self.embedding_normalization,
            normalization_epsilon=self.normalization_epsilon,
            normalization_stop_gradient=self.normalization_stop_gradient,
            embedding_initializer=keras.initializers.serialize(
                self.embedding_initializer
            ),
            generator_initializer=(
                None
                if self.generator_initializer is None
                else keras.initializers.serialize(self.generator_initializer)
            ),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            embedding_regularizer=keras.regularizers.serialize(
                self.embedding_regularizer
            ),
            generator_regularizer=keras.regularizers.serialize(
                self.generator_regularizer
            ),
        )
        return config


@keras.saving.register_keras_serializable(package="modular_zoo")
class HyperMLP(_TaskEmbedding, keras.layers.Layer):
    """An MLP whose kernels all come from one shared `HyperGenerator`.

    The kernels of all layers, flattened and concatenated in order,
    are generated by ONE generator (chunked when `chunk_size` is set):

        theta = g(e)  (flat, sum_l in_l * out_l)
        h_0 = x;  h_l = act(h_{l-1} W_l / sqrt(in_l) + b_l);  no act last

    Each layer is a `HyperDense(generator=None)` with its own plain (fast)
    bias. With `embedding_per_chunk=True` every chunk has its own task
    embedding (official code's chunking, NOTE 8): the table is
    (num_tasks, num_chunks, d) and explicit embeddings are
    (batch, num_chunks * d) (flattened, chunk-major).

    Args:
        layer_sizes: output sizes of the layers.
        embedding_dim: size d of the task embedding.
        num_tasks: rows of the task embedding table (None: float input).
        generator, hidden_units, depth: the generator (see HyperGenerator).
        chunk_size, chunk_embedding_dim: chunking of the shared generator.
        embedding_per_chunk: one task embedding per chunk (official code).
        activation: hidden activation (default relu, as the base MLP of
            the official code).
        ntk, use_bias: as in HyperDense.
        embedding_normalization, normalization_epsilon,
        normalization_stop_gradient, embedding_initializer,
        generator_initializer, bias_initializer, embedding_regularizer,
        generator_regularizer, bias_regularizer: as in HyperDense.

    Call arguments: `inputs` (batch, in); `task` int ids (batch,) or
    float embeddings (batch, d) ((batch, num_chunks * d) with
    `embedding_per_chunk`). Out-of-range ids: as in HyperDense.

    Output shape: (batch, layer_sizes[-1]).

    Example:

    >>> import numpy as np
    >>> mlp = HyperMLP([32, 32, 8], embedding_dim=4, num_tasks=3,
    ...                generator="mlp", chunk_size=256, chunk_embedding_dim=4)
    >>> x = np.random.rand(5, 16).astype("float32")
    >>> tuple(mlp(x, np.array([0, 1, 2, 0, 1])).shape)
    (5, 8)
    """

    def __init__(
        self,
        layer_sizes,
        embedding_dim,
        num_tasks=None,
        generator="mlp",
        hidden_units=32,
        depth=4,
        chunk_size=None,
        chunk_embedding_dim=0,
        embedding_per_chunk=False,
        activation="relu",
        ntk=True,
        use_bias=True,
        embedding_normalization="rms",
        normalization_epsilon=1e-6,
        normalization_stop_gradient=True,
        embedding_initializer=None,
        generator_initializer=None,
        bias_initializer="zeros",
        bias_regularizer=None,
        embedding_regularizer=None,
        generator_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if embedding_per_chunk and chunk_size is None:
            raise ValueError("embedding_per_chunk needs chunk_size.")
        self.layer_sizes = [int(size) for size in layer_sizes]
        self.embedding_dim = int(embedding_dim)
        self.num_tasks = None if num_tasks is None else int(num_tasks)
        self.generator = generator
        self.hidden_units = int(hidden_units)
        self.depth = int(depth)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.chunk_embedding_dim = int(chunk_embedding_dim)
        self.embedding_per_chunk = bool(embedding_per_chunk)
        self.activation = keras.activations.get(activation)
        self.ntk = bool(ntk)
        self.use_bias = bool(use_bias)
        self.embedding_normalization = embedding_normalization
        self.normalization_epsilon = float(normalization_epsilon)
        self.normalization_stop_gradient = bool(normalization_stop_gradient)
        self.embedding_initializer = keras.initializers.get(
            embedding_initializer or _unit_variance_uniform()
        )
        self.generator_initializer = (
            None
            if generator_initializer is None
            else keras.initializers.get(generator_initializer)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.embedding_regularizer = keras.regularizers.get(
            embedding_regularizer
        )
        self.generator_regularizer = keras.regularizers.get(
            generator_regularizer
        )
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
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected inputs of shape (batch, in) with a "
                f"known `in`, got {tuple(input_shape)}."
            )
        self.kernel_sizes = []
        size_in = int(input_shape[-1])
        for layer in self.dense_layers:
            layer.build((None, size_in))
            self.kernel_sizes.append(layer.generated_size)
            size_in = layer.units
        self.shared_generator = HyperGenerator(
            output_size=sum(self.kernel_sizes),
            embedding_dim=self.embedding_dim,
            generator=self.generator,
            hidden_units=self.hidden_units,
            depth=self.depth,
            chunk_size=self.chunk_size,
            chunk_embedding_dim=self.chunk_embedding_dim,
            embedding_normalization=self.embedding_normalization,
            normalization_epsilon=self.normalization_epsilon,
            normalization_stop_gradient=self.normalization_stop_gradient,
            output_initializer=self.generator_initializer,
            output_init_scale=(  # NOTE 10
                1.0 if self.ntk else 1.0 / math.sqrt(max(
                    layer.input_dim for layer in self.dense_layers
                ))
            ),
            kernel_regularizer=self.generator_regularizer,
            dtype=self.dtype_policy,
            name="shared_generator",
        )
        self._embedding_shape = (
            (self.shared_generator.num_chunks, self.embedding_dim)
            if self.embedding_per_chunk
            else (self.embedding_dim,)
        )
        self.shared_generator.build((None,) + self._embedding_shape)
        self._add_embedding_table(self._embedding_shape)

    def call(self, inputs, task):
        if len(inputs.shape) != 2 or (
            inputs.shape[-1] != self.dense_layers[0].input_dim
        ):
            raise ValueError(
                f"{self.name}: expected inputs of shape (batch, "
                f"{self.dense_layers[0].input_dim}), got "
                f"{tuple(inputs.shape)}."
            )
        if self.embedding_per_chunk and not _is_integer(task):
            flat_size = self.shared_generator.num_chunks * self.embedding_dim
            if len(task.shape) != 2 or task.shape[-1] != flat_size:
                raise ValueError(
                    f"{self.name}: a float task embedding must have shape "
                    f"(batch, {flat_size}) (num_chunks * embedding_dim), got "
                    f"{tuple(task.shape)}."
                )
            task = ops.reshape(task, (-1,) + self._embedding_shape)
        embedding = self._task_embedding(task, self._embedding_shape)
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

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.layer_sizes[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            layer_sizes=list(self.layer_sizes),
            embedding_dim=self.embedding_dim,
            num_tasks=self.num_tasks,
            generator=self.generator,
            hidden_units=self.hidden_units,
            depth=self.depth,
            chunk_size=self.chunk_size,
            chunk_embedding_dim=self.chunk_embedding_dim,
            embedding_per_chunk=self.embedding_per_chunk,
            activation=keras.activations.serialize(self.activation),
            ntk=self.ntk,
            use_bias=self.use_bias,
            embedding_normalization=self.embedding_normalization,
            normalization_epsilon=self.normalization_epsilon,
            normalization_stop_gradient=self.normalization_stop_gradient,
            embedding_initializer=keras.initializers.serialize(
                self.embedding_initializer
            ),
            generator_initializer=(
                None
                if self.generator_initializer is None
                else keras.initializers.serialize(self.generator_initializer)
            ),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            embedding_regularizer=keras.regularizers.serialize(
                self.embedding_regularizer
            ),
            generator_regularizer=keras.regularizers.serialize(
                self.generator_regularizer
            ),
        )
        return config
