"""The four meta-learners of the paper as `MetaNetwork`s.

Paper: Schug et al., "Discovering modular solutions that generalize
compositionally", ICLR 2024, Appendix D; official code
github.com/smonsays/modular-hyperteacher (`metax/module/hnet.py`,
`anil.py`, `init.py`; `run_fewshot.py` builds them). Each network takes a
meta-batch `(T, n, in)` and, in `adapted_call`, fast parameters with a
leading task axis (`training.meta_learning`, NOTE 1 there).

* `HypernetworkLearner`: the base MLP's weights AND biases are generated
  from one task embedding per layer by a linear (`generator="linear"`,
  "linear hypernetwork") or MLP (`"mlp"`, "nonlinear hypernetwork")
  generator (`layers.HyperDense`); NTK parameterisation, ReLU. Fast: the
  embeddings (from a learned initialisation, renormalised to norm sqrt(d)
  inside HyperDense) and an output bias; meta: the generators.
* `ANILLearner`: a plain ReLU MLP body (meta) and a linear head (fast, from
  a learned initialisation). The body's features do not depend on fast
  parameters, so they are computed once per set (`task_features`), not
  once per inner step.
* `MAMLLearner`: a plain ReLU MLP whose every weight is fast, from a
  learned initialisation.

NOTE 1 (official code, hypernetwork banks): the authors use three banks
  (input, hidden, output); the two hidden layers share one bank with one
  embedding each. Here every layer has its own generator (the paper's
  per-layer hypernetwork): the same compute per step, 1.5x the hidden
  banks' meta parameters.
NOTE 2 (official code, output bias): the hypernetworks' fast output bias
  starts at zero for every task and is not meta-learned (`fast_bias`); it
  is a non-trainable fast variable here, so the same.
NOTE 3 (official code vs paper, biases): the official code generates each
  base layer's bias together with its weights (`generate_bias=True` of
  `HyperDense`); the paper's D.3 makes them plain fast parameters. The
  official variant is the default (`generate_bias=True`).
NOTE 4 (official code, ANIL inner mini-batches): the authors' ANIL draws an
  inner mini-batch of 64 support points with replacement at each of its 100
  inner steps on the hyperteacher. Here every inner step uses the whole
  support set (deterministic; the features are computed once).
NOTE 5 (initialisation, as Haiku's `hk.Linear`): kernels truncated normal
  with stddev 1/sqrt(fan_in), biases zero; embeddings uniform with unit
  variance.
"""

import math

import keras
from keras import ops

from layers import HyperDense
from layers.task_inputs import positive_int
from training.meta_learning import MetaNetwork

GENERATORS = ("linear", "mlp")


def _haiku_linear_init(fan_in):
    # NOTE 5: Haiku's TruncatedNormal(1 / sqrt(fan_in)) (not rescaled).
    return keras.initializers.TruncatedNormal(stddev=1.0 / math.sqrt(fan_in))


def _layer_sizes(hidden_units, num_hidden_layers, output_dim):
    hidden_units = positive_int(hidden_units, "hidden_units")
    num_hidden_layers = positive_int(num_hidden_layers, "num_hidden_layers")
    return [hidden_units] * num_hidden_layers + [
        positive_int(output_dim, "output_dim")
    ]


def _check_features(network, features, expected):
    if len(features.shape) != 3 or features.shape[-1] != expected:
        raise ValueError(
            f"{type(network).__name__}: expected a meta-batch of shape "
            f"(tasks, examples, {expected}), got {tuple(features.shape)}."
        )


@keras.saving.register_keras_serializable(package="modular_zoo")
class HypernetworkLearner(MetaNetwork):
    """Base MLP generated per task by a linear or nonlinear hypernetwork.

    For task t with fast embeddings e_t^l (one per layer l) and fast output
    bias c_t:

        [W_t^l, b_t^l] = g_l(sqrt(d) e_t^l / ||e_t^l||)   (HyperDense)
        h^l = relu(h^{l-1} W_t^l / sqrt(in_l) + b_t^l);  y = h^L + c_t

    Args:
        output_dim: Positive integer, outputs of the base network.
        hidden_units: Positive integer, width of the base MLP.
        num_hidden_layers: Positive integer, hidden layers of the base MLP
            (3 on the hyperteacher: 4 generated layers).
        embedding_dim: Positive integer, size of each task embedding (the
            number of "templates"; 16 on the hyperteacher).
        generator: `"linear"` (linear hypernetwork) or `"mlp"` (nonlinear:
            LayerNorm, `generator_depth` x [Dense(generator_units),
            LayerNorm, ELU], linear head).
        generator_units: Positive integer, width of the mlp generator.
        generator_depth: Positive integer, blocks of the mlp generator.
        generate_bias: Boolean, generate each layer's bias with its kernel
            (official code, NOTE 3) instead of a plain meta-learned bias.
        **kwargs: Base layer arguments (`name`).

    Example:

    >>> net = HypernetworkLearner(output_dim=3, hidden_units=8,
    ...                           embedding_dim=4)
    >>> x = np.ones((2, 5, 6), "float32")  # 2 tasks x 5 examples
    >>> tuple(net(x).shape)
    (2, 5, 3)
    >>> [tuple(v.shape) for v in net.fast_variables]
    [(4, 4), (3,)]
    """

    def __init__(
        self,
        output_dim,
        hidden_units=64,
        num_hidden_layers=3,
        embedding_dim=16,
        generator="linear",
        generator_units=32,
        generator_depth=4,
        generate_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if generator not in GENERATORS:
            raise ValueError(
                f"`generator` must be one of {GENERATORS}; got {generator!r}."
            )
        self.output_dim = positive_int(output_dim, "output_dim")
        self.hidden_units = positive_int(hidden_units, "hidden_units")
        self.num_hidden_layers = positive_int(
            num_hidden_layers, "num_hidden_layers"
        )
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim")
        self.generator = generator
        self.generator_units = positive_int(generator_units, "generator_units")
        self.generator_depth = positive_int(generator_depth, "generator_depth")
        self.generate_bias = bool(generate_bias)
        sizes = _layer_sizes(hidden_units, num_hidden_layers, output_dim)
        self.generated_layers = [
            HyperDense(
                units,
                embedding_dim=self.embedding_dim,
                generator=generator,
                generate_bias=self.generate_bias,
                use_bias=not self.generate_bias,
                hidden_units=self.generator_units,
                depth=self.generator_depth,
                name=f"generated_{index}",
            )
            for index, units in enumerate(sizes)
        ]

    def build(self, inputs_shape):
        self.input_dim = int(inputs_shape[-1])
        fan_in = self.input_dim
        for layer in self.generated_layers:
            layer.build((None, None, fan_in))
            fan_in = layer.units
        self.embedding_init = self.add_weight(
            name="embedding_init",
            shape=(len(self.generated_layers), self.embedding_dim),
            initializer=keras.initializers.RandomUniform(
                -math.sqrt(3.0), math.sqrt(3.0)
            ),  # NOTE 5
        )
        self.output_bias_init = self.add_weight(  # NOTE 2
            name="output_bias_init",
            shape=(self.output_dim,),
            initializer="zeros",
            trainable=False,
        )

    @property
    def fast_variables(self):
        return [self.embedding_init, self.output_bias_init]

    def adapted_call(self, features, fast_params, training=False):
        _check_features(self, features, self.input_dim)
        embeddings, output_bias = fast_params
        hidden = features
        last = len(self.generated_layers) - 1
        for index, layer in enumerate(self.generated_layers):
            hidden = layer(hidden, embeddings[:, index])
            if index < last:
                hidden = ops.relu(hidden)
        return hidden + ops.expand_dims(output_bias, 1)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            hidden_units=self.hidden_units,
            num_hidden_layers=self.num_hidden_layers,
            embedding_dim=self.embedding_dim,
            generator=self.generator,
            generator_units=self.generator_units,
            generator_depth=self.generator_depth,
            generate_bias=self.generate_bias,
        )
        return config


@keras.saving.register_keras_serializable(package="modular_zoo")
class ANILLearner(MetaNetwork):
    """ANIL: a meta-learned ReLU MLP body and a fast linear head.

        f = body(x)  (computed once per set);  y_t = f W_t + b_t

    Args:
        output_dim: Positive integer.
        hidden_units: Positive integer, width of the body (512 in the
            paper).
        num_hidden_layers: Positive integer, layers of the body (3).
        **kwargs: Base layer arguments.

    Example:

    >>> net = ANILLearner(output_dim=3, hidden_units=8)
    >>> tuple(net(np.ones((2, 5, 6), "float32")).shape)
    (2, 5, 3)
    >>> [tuple(v.shape) for v in net.fast_variables]  # the head only
    [(8, 3), (3,)]
    """

    def __init__(self, output_dim, hidden_units=512, num_hidden_layers=3,
                 **kwargs):
        super().__init__(**kwargs)
        self.output_dim = positive_int(output_dim, "output_dim")
        self.hidden_units = positive_int(hidden_units, "hidden_units")
        self.num_hidden_layers = positive_int(
            num_hidden_layers, "num_hidden_layers"
        )
        self.body_layers = [
            keras.layers.Dense(
                self.hidden_units, activation="relu", name=f"body_{index}"
            )
            for index in range(self.num_hidden_layers)
        ]

    def build(self, inputs_shape):
        self.input_dim = int(inputs_shape[-1])
        fan_in = self.input_dim
        for layer in self.body_layers:
            layer.kernel_initializer = _haiku_linear_init(fan_in)  # NOTE 5
            layer.build((None, None, fan_in))
            fan_in = layer.units
        self.head_kernel_init = self.add_weight(
            name="head_kernel_init",
            shape=(fan_in, self.output_dim),
            initializer=_haiku_linear_init(fan_in),
        )
        self.head_bias_init = self.add_weight(
            name="head_bias_init", shape=(self.output_dim,),
            initializer="zeros",
        )

    @property
    def fast_variables(self):
        return [self.head_kernel_init, self.head_bias_init]

    def task_features(self, inputs, training=False):
        _check_features(self, inputs, self.input_dim)
        features = inputs
        for layer in self.body_layers:
            features = layer(features)
        return features

    def adapted_call(self, features, fast_params, training=False):
        kernel, bias = fast_params
        return ops.einsum("tnf,tfo->tno", features, kernel) + ops.expand_dims(
            bias, 1
        )

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim,
                      hidden_units=self.hidden_units,
                      num_hidden_layers=self.num_hidden_layers)
        return config


@keras.saving.register_keras_serializable(package="modular_zoo")
class MAMLLearner(MetaNetwork):
    """MAML: a ReLU MLP whose every weight adapts from a learned init.

        h^l = relu(h^{l-1} W_t^l + b_t^l), no relu on the last layer.

    Args:
        output_dim: Positive integer.
        hidden_units: Positive integer, width (384 in the paper).
        num_hidden_layers: Positive integer (3).
        **kwargs: Base layer arguments.

    Example:

    >>> net = MAMLLearner(output_dim=3, hidden_units=8, num_hidden_layers=1)
    >>> tuple(net(np.ones((2, 5, 6), "float32")).shape)
    (2, 5, 3)
    >>> [tuple(v.shape) for v in net.fast_variables]
    [(6, 8), (8,), (8, 3), (3,)]
    """

    def __init__(self, output_dim, hidden_units=384, num_hidden_layers=3,
                 **kwargs):
        super().__init__(**kwargs)
        self.output_dim = positive_int(output_dim, "output_dim")
        self.hidden_units = positive_int(hidden_units, "hidden_units")
        self.num_hidden_layers = positive_int(
            num_hidden_layers, "num_hidden_layers"
        )

    def build(self, inputs_shape):
        self.input_dim = int(inputs_shape[-1])
        sizes = _layer_sizes(self.hidden_units, self.num_hidden_layers,
                             self.output_dim)
        self.kernel_inits, self.bias_inits = [], []
        fan_in = self.input_dim
        for index, units in enumerate(sizes):
            self.kernel_inits.append(self.add_weight(
                name=f"kernel_init_{index}", shape=(fan_in, units),
                initializer=_haiku_linear_init(fan_in),  # NOTE 5
            ))
            self.bias_inits.append(self.add_weight(
                name=f"bias_init_{index}", shape=(units,),
                initializer="zeros",
            ))
            fan_in = units

    @property
    def fast_variables(self):
        return [v for pair in zip(self.kernel_inits, self.bias_inits)
                for v in pair]

    def adapted_call(self, features, fast_params, training=False):
        _check_features(self, features, self.input_dim)
        hidden = features
        last = len(fast_params) // 2 - 1
        for index in range(last + 1):
            kernel, bias = fast_params[2 * index], fast_params[2 * index + 1]
            hidden = ops.einsum("tni,tio->tno", hidden, kernel)
            hidden = hidden + ops.expand_dims(bias, 1)
            if index < last:
                hidden = ops.relu(hidden)
        return hidden

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim,
                      hidden_units=self.hidden_units,
                      num_hidden_layers=self.num_hidden_layers)
        return config
