"""Soft modularization: a base network of modules reconfigured per task.

Paper: Ruihan Yang, Huazhe Xu, Yi Wu, Xiaolong Wang, "Multi-Task
Reinforcement Learning with Soft Modularization", NeurIPS 2020
(papers/soft-modularization-multitask-rl.txt, Section 4.1, Eqs. 5-9).
Official code: github.com/RchalYang/Soft-Module,
`torchrl/networks/nets.py: ModularGatedCascadeCondNet` with the configs
`meta_config/mt{10,50}/modular_{2_2_2_256,4_4_2_128}_*.json`.

Both are offered, selected by `variant`: "official" (default) reproduces
the official network, "paper" the equations as printed. With L module
layers, n modules per layer, module width d and state/task embedding width
D, the shared parts are:

* f(s) = W_f2 ReLU(W_f1 s + b_f1) + b_f2, the 2-layer observation MLP
  (width D, no activation on its output; official `hidden_shapes=[400,400]`
  with `last_activation_func=null_activation`);
* h(z) = W_h z + b_h, one fully connected layer on the one-hot task z
  (width D; official `em_hidden_shapes=[400]`). Integer ids gather the rows
  of W_h, which equals the product with the one-hot vector exactly.

Index convention (paper Eq. 7 and the official `.view(..., n, n)`): a
routing matrix has shape (batch, n, n) and entry [b, i, j] is the weight of
source module j of layer l in the input of target module i of layer l+1;
the softmax runs over the LAST axis (sources j), so every row sums to 1. A
flat routing vector of length n*n is reshaped row-major: flat index i*n+j.

The six ways the official code differs from the paper (NOTE 1-6), and
further choices (NOTE 7-12):

NOTE 1 (official difference 1): the product f(s) * h(z) passes through
  `routing_layers` extra fully connected layers of width `routing_units`
  (official `num_gating_layers=2`, `gating_hidden=256`): ReLU, Dense, ReLU,
  Dense (no activation after the last). The routing layers then work at
  width `routing_units` instead of D. The paper feeds f(s) * h(z) directly
  (Eqs. 5-6); `routing_units` and `routing_layers` are unused there.
NOTE 2 (official difference 2): the modules of the first layer read
  ReLU(f(s)) in the official code, f(s) in the paper (Eq. 8 with g^1 = f).
  The routing network reads the non-activated f(s) in both.
NOTE 3 (official difference 3): official routing layer l >= 2 reads the
  concatenation of ALL previous routing matrices (softmax outputs,
  flattened, in layer order): cond = W_c [p_hat^1, ..., p_hat^(l-1)];
  logits = W_d ReLU(cond * e). The paper (Eq. 5) reads only the previous
  layer: p^(l+1) = W_d^l ReLU(W_u^l p^l * f(s) * h(z)).
NOTE 4 (official difference 4): official modules apply ReLU AFTER the
  routing-weighted sum: g_i^(l+1) = ReLU(sum_j p_hat_ij^l (W_j^l g_j^l +
  b_j^l)). The paper (Eq. 8) applies it before: g_i^(l+1) = sum_j p_hat_ij^l
  ReLU(W_j^l g_j^l).
NOTE 5 (official difference 5): the official routing network has one more
  output, a vector of n logits (softmax over modules) that mixes the last
  module layer: output = ReLU(sum_j q_j (W_j^L g_j^L + b_j^L)); it is
  computed like NOTE 3 from all L-1 routing matrices. In the paper the last
  module layer has output width o and is summed unweighted (Eq. 9):
  output = sum_j W_j^L g_j^L, with no activation. So with the same
  `num_layers` the official block has L module layers of width d followed
  by the mixing vector (the policy's output layer `last` is outside this
  block), and the paper block has L-1 routed layers of width d and a last
  module layer of width o = `output_units` (default d) that is the block
  output. `return_routing=True` returns the L-1 matrices and, for
  "official", the final (batch, n) vector after them.
NOTE 6 (official difference 6): the task loss weights of the official SAC
  (T * softmax(-log_alpha), detached; paper Eq. 10 uses alpha) belong to
  the training loss, not to this layer; they are not implemented here.
NOTE 7: paper Eq. 5 feeds p^l, the logits before the softmax of Eq. 7, to
  W_u^l, although the text calls it "the probability vector". The "paper"
  variant follows the equation literally (logits); the official code's
  default (`pre_softmax=False`) feeds softmax outputs (NOTE 3).
NOTE 8: the paper's equations have no biases; every fully connected layer
  and module here has one, as in the official code (nn.Linear). In the
  "paper" variant the last module layer's n biases would only add up (Eq. 9
  sums the modules), so it has one bias of width o.
NOTE 9: initialisation follows the official code for both variants (the
  paper gives none). Official `basic_init` draws weights from
  U(+-1/sqrt(weight.size(0))); for a torch Linear weight (out, in) that is
  the number of OUTPUT units, reproduced by `OutputUnitsUniform`; biases are
  0.1. The routing output layers use `uniform_init`, U(+-3e-3) for weights
  AND biases (torchrl `_uniform_init(param=3e-3)`; the project notes say
  1e-3, the code says 3e-3).
NOTE 10: the paper uses the same layer index l for W_d^l in Eq. 5 (output
  p^(l+1)) and W_d^(l=1) in Eq. 6 (output p^1); they are read as separate
  weights, one W_d per routing output.
NOTE 11: the official code's unused configuration options (`add_bn`
  batch-norm modules, `pre_softmax=True`, `cond_ob=False`) are not offered;
  all released configs use add_bn=False, pre_softmax=False, cond_ob=True.
NOTE 12: the modules of one layer are computed together with one einsum
  over a kernel of shape (n, d_in, d_out) (official: a Python loop over
  modules). The routing matrices are not detached, as in the official code.
NOTE 13: every random initializer draws from a SEEDED stateless generator,
  and each weight gets its own seed (the initializer's seed plus the number
  of weights created before it). An unseeded draw advances Keras's global
  seed generator, a variable that does not exist while Keras builds a
  subclassed model symbolically on TensorFlow (the first call then failed
  with "'NoneType' object has no attribute 'assign'"); and one seed shared
  by several weights of one shape would start them equal (the routing
  output layers of a deep block did), where the official torch code draws
  every nn.Linear independently.
"""

import math

import keras
from keras import ops

from layers.task_inputs import check_task_inputs, describe, positive_int

SOFT_MODULAR_CONFIGS = {
    # Paper Section 5.2 "Ours (Shallow)" and "Ours (Deep)"; official configs
    # modular_2_2_2_256_* and modular_4_4_2_128_*.
    "shallow": dict(num_layers=2, num_modules=2, module_units=256),
    "deep": dict(num_layers=4, num_modules=4, module_units=128),
}

VARIANTS = ("official", "paper")


@keras.saving.register_keras_serializable(package="modular_zoo")
class OutputUnitsUniform(keras.initializers.RandomUniform):
    """Uniform initializer U(-1/sqrt(units), 1/sqrt(units)), units = shape[-1].

    The official Soft-Module `basic_init` (torchrl `_fanin_init`) divides by
    `weight.size(0)` of a torch Linear weight, which is its number of output
    units; Keras kernels are laid out (..., in, out), so that is `shape[-1]`
    here, also for module kernels of shape (n, in, out) (NOTE 9).

    A `keras.initializers.RandomUniform(-1, 1)` scaled by the bound: it
    handles `seed` as Keras's own random initializers do (NOTE 13): an
    integer seed, or None for a seed drawn once at construction
    (reproducible under `keras.utils.set_random_seed`), gives a stateless
    draw that returns the same values at every call with the same shape;
    a `keras.random.SeedGenerator` gives new values at every call.

    Args:
        seed: Integer, `keras.random.SeedGenerator` or None, the seed of the
            draws.

    Example:

    >>> init = OutputUnitsUniform(seed=1)
    >>> values = ops.convert_to_numpy(init((100, 4)))
    >>> bool(np.abs(values).max() <= 0.5)
    True
    >>> bool(np.all(values == ops.convert_to_numpy(init((100, 4)))))
    True
    >>> OutputUnitsUniform.from_config(init.get_config()).get_config()
    {'seed': 1}
    """

    def __init__(self, seed=None):
        super().__init__(minval=-1.0, maxval=1.0, seed=seed)

    def __call__(self, shape, dtype=None):
        bound = 1.0 / math.sqrt(shape[-1])
        return super().__call__(shape, dtype=dtype) * bound

    def get_config(self):
        return {"seed": super().get_config()["seed"]}


_INT_ARGS = (
    "num_layers",
    "num_modules",
    "module_units",
    "num_tasks",
    "routing_units",
    "routing_layers",
    "observation_embedding_units",
    "observation_embedding_layers",
    "output_units",
)


@keras.saving.register_keras_serializable(package="modular_zoo")
class SoftModularBlock(keras.layers.Layer):
    """Soft modularization block: routed modules plus their routing network.

    With the notation of the module docstring (f the observation MLP, h the
    task embedding, W_j^l and b_j^l the kernel and bias of module j of layer
    l, p_hat^l the (n, n) routing matrix [target, source] of layer l), the
    "official" variant (default; NOTES 1-5) computes

        e       = T(f(s) * h(z))   (routing trunk: ReLU, Dense, ..., Dense)
        p_hat^1 = softmax(W_d^1 ReLU(e))
        p_hat^l = softmax(W_d^l ReLU((W_c^l [p_hat^1..p_hat^(l-1)]) * e))
        q       = softmax(W_q ReLU((W_c^L [p_hat^1..p_hat^(L-1)]) * e))  (n)
        m_j^1   = W_j^1 ReLU(f(s)) + b_j^1
        m_i^l   = W_i^l ReLU(sum_j p_hat_ij^(l-1) m_j^(l-1)) + b_i^l
        output  = ReLU(sum_j q_j m_j^L)

    and the "paper" variant the equations as printed (biases omitted,
    NOTE 8):

        e       = f(s) * h(z)                                   (D)
        p^1     = W_d^1 ReLU(e)                                 (Eq. 6)
        p^(l+1) = W_d^(l+1) ReLU(W_u^l p^l * e)                 (Eq. 5)
        p_hat^l = softmax over sources j of p^l as (n, n)       (Eq. 7)
        g_j^1   = f(s);  g_i^(l+1) = sum_j p_hat_ij^l ReLU(W_j^l g_j^l)  (Eq. 8)
        output  = sum_j W_j^L g_j^L                             (Eq. 9)

    The softmax runs over the sources (the last axis): every row of a
    routing matrix sums to 1. Nothing is stochastic: `training` changes
    nothing.

    Args:
        num_layers: Integer >= 2, L, the number of module layers.
        num_modules: Positive integer, n, the modules per layer.
        module_units: Positive integer, d, the output width of every module.
        num_tasks: Positive integer or None, the number of tasks T. Required
            for integer task ids; float descriptors must then have T entries
            (one-hot). If None, only float descriptors are accepted, of the
            width seen at the first call.
        routing_units: Positive integer, the width of the routing layers
            ("official" only, NOTE 1).
        routing_layers: Integer >= 0, the number of extra routing embedding
            layers after f(s) * h(z) ("official" only, NOTE 1; 0 disables
            them).
        observation_embedding_units: Positive integer, D, the width of f(s)
            and h(z).
        observation_embedding_layers: Positive integer, the depth of the
            observation MLP f.
        variant: String, "official" (default) or "paper".
        output_units: Positive integer or None, o, the width of the last
            module layer of the "paper" variant (Eq. 9); None means
            `module_units`. Must be None for "official" (its output width
            is d).
        kernel_initializer: Initializer for every kernel except the routing
            outputs (default: official `basic_init`, `OutputUnitsUniform`;
            NOTES 9, 13).
        bias_initializer: Initializer for every bias except the routing
            outputs (default: the constant 0.1, NOTE 9).
        routing_output_initializer: Initializer for the kernels and biases
            of the layers that output routing logits (default U(+-3e-3),
            NOTE 9).
        kernel_regularizer: Regularizer for all kernels.
        bias_regularizer: Regularizer for all biases.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape (batch, input_dim), the state s.
        task: Integer task ids of shape (batch,) (any integer dtype) in
            [0, num_tasks), or a float task descriptor (one-hot) of shape
            (batch, task_dim), one per example. Out-of-range ids raise a
            ValueError where their values are concrete; inside `jax.jit` /
            `tf.function` they follow the backend's gather semantics
            (`layers/layers_backend.py`, NOTE 2).
        return_routing: Boolean, whether to also return the list of routing
            probabilities: L-1 tensors (batch, n, n) [target, source], and
            for "official" the final (batch, n) mixing vector after them.

    Input shape:
        `inputs`: (batch, input_dim); `task`: (batch,) or (batch, task_dim).

    Output shape:
        (batch, module_units), or (batch, output_units) for "paper". With
        `return_routing=True`, the pair (outputs, routing) with routing
        [(batch, n, n)] * (L - 1), plus (batch, n) for "official".

    Example:

    >>> block = SoftModularBlock.from_preset_name("shallow", num_tasks=10)
    >>> states = np.zeros((4, 39), "float32")
    >>> task = np.array([0, 3, 3, 9])
    >>> features, routing = block(states, task, return_routing=True)
    >>> tuple(features.shape), [tuple(r.shape) for r in routing]
    ((4, 256), [(4, 2, 2), (4, 2)])
    >>> block.compute_output_shape((4, 39), (4,))
    (4, 256)
    """

    def __init__(
        self,
        num_layers,
        num_modules,
        module_units,
        num_tasks=None,
        routing_units=256,
        routing_layers=2,
        observation_embedding_units=400,
        observation_embedding_layers=2,
        variant="official",
        output_units=None,
        kernel_initializer=None,
        bias_initializer=None,
        routing_output_initializer=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = positive_int(num_layers, "num_layers", minimum=2)
        self.num_modules = positive_int(num_modules, "num_modules")
        self.module_units = positive_int(module_units, "module_units")
        self.num_tasks = positive_int(num_tasks, "num_tasks", allow_none=True)
        self.routing_units = positive_int(routing_units, "routing_units")
        self.routing_layers = positive_int(
            routing_layers, "routing_layers", minimum=0
        )
        self.observation_embedding_units = positive_int(
            observation_embedding_units, "observation_embedding_units"
        )
        self.observation_embedding_layers = positive_int(
            observation_embedding_layers, "observation_embedding_layers"
        )
        if variant not in VARIANTS:
            raise ValueError(
                f"`variant` must be one of {VARIANTS}; got {variant!r}."
            )
        if output_units is not None and variant != "paper":
            raise ValueError(
                "`output_units` sets the width of the paper's last module "
                "layer (Eq. 9) and applies only to variant='paper'; the "
                "official block outputs `module_units` features."
            )
        self.variant = variant
        self.output_units = positive_int(
            output_units, "output_units", allow_none=True
        )
        # NOTES 9, 13: official initialisation by default, seeded draws.
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or OutputUnitsUniform()
        )
        self.bias_initializer = keras.initializers.get(
            bias_initializer or keras.initializers.Constant(0.1)
        )
        self.routing_output_initializer = keras.initializers.get(
            routing_output_initializer
            or keras.initializers.RandomUniform(-3e-3, 3e-3)
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    @classmethod
    def from_preset_name(cls, name, **overrides):
        """A block with a named configuration of `SOFT_MODULAR_CONFIGS`.

        "shallow": L=2, n=2, d=256 (MT10 in the paper); "deep": L=4, n=4,
        d=128 (MT50).

        Args:
            name: String, "shallow" or "deep".
            **overrides: Constructor arguments that replace or add to the
                configuration, e.g. `from_preset_name("deep", num_tasks=50)`.

        Returns:
            A `SoftModularBlock`.
        """
        if name not in SOFT_MODULAR_CONFIGS:
            raise ValueError(
                f"Unknown configuration {name!r}; expected one of "
                f"{sorted(SOFT_MODULAR_CONFIGS)}."
            )
        return cls(**{**SOFT_MODULAR_CONFIGS[name], **overrides})

    # ------------------------------------------------------------------ build

    def _add_seeded_weight(self, name, shape, initializer, regularizer):
        """`add_weight` with a seed of its own for a seeded initializer.

        NOTE 13: Keras's random initializers draw statelessly from their
        (integer) seed; a copy seeded with `seed + len(self.weights)` gives
        every weight different values, the same at every build.
        """
        seed = getattr(initializer, "seed", None)
        if isinstance(seed, int) and not isinstance(seed, bool):
            config = initializer.get_config()
            config["seed"] = seed + len(self.weights) + 1
            initializer = initializer.__class__.from_config(config)
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            regularizer=regularizer,
        )

    def _dense_weights(self, name, input_dim, units, routing_output=False):
        kernel = self._add_seeded_weight(
            f"{name}_kernel",
            (input_dim, units),
            self.routing_output_initializer
            if routing_output
            else self.kernel_initializer,
            self.kernel_regularizer,
        )
        bias = self._add_seeded_weight(
            f"{name}_bias",
            (units,),
            self.routing_output_initializer
            if routing_output
            else self.bias_initializer,
            self.bias_regularizer,
        )
        return kernel, bias

    def _check_inputs_shape(self, inputs_shape):
        if len(inputs_shape) != 2 or inputs_shape[-1] is None:
            raise ValueError(
                f"{describe(self)} expects `inputs` of "
                "shape (batch, input_dim) with a known input_dim; got shape "
                f"{tuple(inputs_shape)}."
            )
        expected = getattr(self, "_input_dim", None)
        if expected is not None and inputs_shape[-1] != expected:
            raise ValueError(
                f"{describe(self)} was built for `inputs` "
                f"of shape (batch, {expected}); got shape "
                f"{tuple(inputs_shape)}."
            )

    def _task_dim_for_build(self, task_shape):
        """The width of the task input of h(z)."""
        if self.num_tasks is not None:
            return self.num_tasks  # ids or one-hot descriptors of width T
        if len(task_shape) != 2 or task_shape[-1] is None:
            raise ValueError(
                f"{describe(self)} has num_tasks=None and "
                "takes only float task descriptors of shape (batch, task_dim) "
                f"with a known task_dim; got task of shape "
                f"{tuple(task_shape)}. Pass num_tasks=... for integer ids."
            )
        return task_shape[-1]

    def build(self, inputs_shape, task_shape):
        self._check_inputs_shape(inputs_shape)
        self._input_dim = inputs_shape[-1]
        self._task_dim = self._task_dim_for_build(task_shape)
        n = self.num_modules
        d = self.module_units
        embed = self.observation_embedding_units

        # f(s): observation MLP.
        self.observation_weights = []
        input_dim = self._input_dim
        for index in range(self.observation_embedding_layers):
            self.observation_weights.append(
                self._dense_weights(f"observation_{index}", input_dim, embed)
            )
            input_dim = embed
        # h(z): one fully connected layer on the one-hot task.
        self.task_kernel, self.task_bias = self._dense_weights(
            "task_embedding", self._task_dim, embed
        )

        # Routing network.
        self.routing_trunk_weights = []
        self.routing_condition_weights = []
        self.routing_output_weights = []
        if self.variant == "official":
            # NOTE 1: extra embedding layers after f(s) * h(z).
            input_dim = embed
            for index in range(self.routing_layers):
                self.routing_trunk_weights.append(
                    self._dense_weights(
                        f"routing_trunk_{index}", input_dim, self.routing_units
                    )
                )
                input_dim = self.routing_units
            routing_width = input_dim
            # NOTE 3: condition layer l reads all l previous matrices.
            for index in range(self.num_layers - 1):
                if index > 0:
                    self.routing_condition_weights.append(
                        self._dense_weights(
                            f"routing_condition_{index}",
                            index * n * n,
                            routing_width,
                        )
                    )
                self.routing_output_weights.append(
                    self._dense_weights(
                        f"routing_output_{index}",
                        routing_width,
                        n * n,
                        routing_output=True,
                    )
                )
            # NOTE 5: final mixing vector over the last layer's n modules.
            self.routing_condition_weights.append(
                self._dense_weights(
                    f"routing_condition_{self.num_layers - 1}",
                    (self.num_layers - 1) * n * n,
                    routing_width,
                )
            )
            self.routing_output_weights.append(
                self._dense_weights(
                    f"routing_output_{self.num_layers - 1}",
                    routing_width,
                    n,
                    routing_output=True,
                )
            )
        else:
            # Eq. 6 (W_d^1) and Eq. 5 (W_u^l, W_d^l) for l = 1..L-2.
            for index in range(self.num_layers - 1):
                if index > 0:
                    self.routing_condition_weights.append(
                        self._dense_weights(
                            f"routing_condition_{index}", n * n, embed
                        )
                    )
                self.routing_output_weights.append(
                    self._dense_weights(
                        f"routing_output_{index}",
                        embed,
                        n * n,
                        routing_output=True,
                    )
                )

        # Base network: module kernels (n, d_in, d_out), biases (n, d_out).
        self.module_weights = []
        input_dim = embed
        for index in range(self.num_layers):
            last_paper_layer = (
                self.variant == "paper" and index == self.num_layers - 1
            )
            units = (self.output_units or d) if last_paper_layer else d
            kernel = self._add_seeded_weight(
                f"module_{index}_kernel",
                (n, input_dim, units),
                self.kernel_initializer,
                self.kernel_regularizer,
            )
            # NOTE 8: one bias for the summed last layer of the paper.
            bias = self._add_seeded_weight(
                f"module_{index}_bias",
                (units,) if last_paper_layer else (n, units),
                self.bias_initializer,
                self.bias_regularizer,
            )
            self.module_weights.append((kernel, bias))
            input_dim = units

    # ------------------------------------------------------------------- call

    def _validate(self, inputs, task):
        """Checks `inputs` and `task` (shared validator); returns the task."""
        self._check_inputs_shape(inputs.shape)
        task, _ = check_task_inputs(
            self,
            inputs,
            task,
            num_tasks=self.num_tasks,
            descriptor_shape=(self._task_dim,),
        )
        return task

    def _task_embedding(self, task):
        """h(z) = W_h z + b_h; integer ids gather rows of W_h."""
        if len(task.shape) == 1:  # int32 ids, checked by the validator
            rows = ops.take(self.task_kernel, task, axis=0)
            return ops.cast(rows, self.compute_dtype) + self.task_bias
        task = ops.cast(task, self.compute_dtype)
        return ops.matmul(task, self.task_kernel) + self.task_bias

    def _observation_embedding(self, inputs):
        """f(s): Dense, ReLU, ..., Dense (no activation on the output)."""
        hidden = inputs
        for index, (kernel, bias) in enumerate(self.observation_weights):
            if index > 0:
                hidden = ops.relu(hidden)
            hidden = ops.matmul(hidden, kernel) + bias
        return hidden

    def _as_matrix(self, flat_logits):
        # Row-major: flat index i * n + j -> [target i, source j].
        n = self.num_modules
        return ops.reshape(flat_logits, (-1, n, n))

    def _official_routing(self, routing_embedding):
        """Official routing network (NOTES 1, 3, 5)."""
        n = self.num_modules
        # NOTE 1: routing trunk after f(s) * h(z).
        if self.routing_trunk_weights:
            routing_embedding = ops.relu(routing_embedding)
            for index, (kernel, bias) in enumerate(self.routing_trunk_weights):
                if index > 0:
                    routing_embedding = ops.relu(routing_embedding)
                routing_embedding = ops.matmul(routing_embedding, kernel) + bias
        kernel, bias = self.routing_output_weights[0]
        logits = ops.matmul(ops.relu(routing_embedding), kernel) + bias
        routing_probs = [ops.softmax(self._as_matrix(logits), axis=-1)]
        flat_probs = [ops.reshape(routing_probs[0], (-1, n * n))]
        for (cond_kernel, cond_bias), (out_kernel, out_bias) in zip(
            self.routing_condition_weights, self.routing_output_weights[1:]
        ):
            # NOTE 3: every previous routing matrix conditions this one.
            condition = ops.concatenate(flat_probs, axis=-1)
            condition = ops.matmul(condition, cond_kernel) + cond_bias
            hidden = ops.relu(condition * routing_embedding)
            logits = ops.matmul(hidden, out_kernel) + out_bias
            if len(routing_probs) < self.num_layers - 1:
                probs = ops.softmax(self._as_matrix(logits), axis=-1)
                routing_probs.append(probs)
                flat_probs.append(ops.reshape(probs, (-1, n * n)))
            else:
                # NOTE 5: the final (batch, n) mixing vector.
                final_mix = ops.softmax(logits, axis=-1)
        return routing_probs, final_mix

    def _paper_routing(self, routing_embedding):
        """Paper Eqs. 5-7: each layer reads the previous logits p^l."""
        kernel, bias = self.routing_output_weights[0]
        logits = ops.matmul(ops.relu(routing_embedding), kernel) + bias  # Eq. 6
        routing_probs = [ops.softmax(self._as_matrix(logits), axis=-1)]
        for (up_kernel, up_bias), (down_kernel, down_bias) in zip(
            self.routing_condition_weights, self.routing_output_weights[1:]
        ):
            # NOTE 7: W_u^l reads the logits p^l (Eq. 5), not p_hat^l.
            up = ops.matmul(logits, up_kernel) + up_bias
            hidden = ops.relu(up * routing_embedding)
            logits = ops.matmul(hidden, down_kernel) + down_bias  # Eq. 5
            routing_probs.append(
                ops.softmax(self._as_matrix(logits), axis=-1)  # Eq. 7
            )
        return routing_probs

    def call(self, inputs, task, return_routing=False):
        task = self._validate(inputs, task)
        observation_embedding = self._observation_embedding(inputs)
        # f(s) * h(z), the routing input in both variants.
        routing_embedding = observation_embedding * self._task_embedding(task)

        if self.variant == "official":
            routing_probs, final_mix = self._official_routing(
                routing_embedding
            )
            kernel, bias = self.module_weights[0]
            # NOTE 2: the first modules read ReLU(f(s)).
            module_outputs = (
                ops.einsum(
                    "bi,nio->bno", ops.relu(observation_embedding), kernel
                )
                + bias
            )
            for layer_probs, (kernel, bias) in zip(
                routing_probs, self.module_weights[1:]
            ):
                # NOTE 4: ReLU after the routing-weighted sum.
                module_inputs = ops.relu(
                    ops.einsum("bij,bjd->bid", layer_probs, module_outputs)
                )
                # NOTE 12: all n modules of the layer in one einsum.
                module_outputs = (
                    ops.einsum("bni,nio->bno", module_inputs, kernel) + bias
                )
            # NOTE 5: mix the last layer with the final routing vector.
            outputs = ops.relu(
                ops.einsum("bj,bjd->bd", final_mix, module_outputs)
            )
            routing = routing_probs + [final_mix]
        else:
            routing_probs = self._paper_routing(routing_embedding)
            kernel, bias = self.module_weights[0]
            # Eq. 8 with g_j^1 = f(s) for every j (NOTE 2: not activated).
            module_outputs = ops.relu(
                ops.einsum("bi,nio->bno", observation_embedding, kernel) + bias
            )
            for index, layer_probs in enumerate(routing_probs):
                # Eq. 8: g_i^(l+1) = sum_j p_hat_ij ReLU(W_j g_j).
                module_inputs = ops.einsum(
                    "bij,bjd->bid", layer_probs, module_outputs
                )
                kernel, bias = self.module_weights[index + 1]
                if index + 1 < self.num_layers - 1:
                    module_outputs = ops.relu(
                        ops.einsum("bni,nio->bno", module_inputs, kernel)
                        + bias
                    )
                else:
                    # Eq. 9: sum_j W_j^L g_j^L, no activation (NOTE 8).
                    outputs = (
                        ops.einsum("bni,nio->bo", module_inputs, kernel) + bias
                    )
            routing = routing_probs
        if return_routing:
            return outputs, routing
        return outputs

    def compute_output_shape(
        self, inputs_shape, task_shape=None, return_routing=False
    ):
        """Output shape, and the routing shapes if `return_routing`.

        Args:
            inputs_shape: Tuple, the shape of `inputs`, (batch, input_dim).
            task_shape: Tuple or None, the shape of `task` (unused).
            return_routing: Boolean, as in `call`.

        Returns:
            (batch, units), or the pair ((batch, units), routing shapes).
        """
        self._check_inputs_shape(inputs_shape)
        batch = inputs_shape[0]
        units = self.module_units
        if self.variant == "paper":
            units = self.output_units or units
        outputs_shape = (batch, units)
        if not return_routing:
            return outputs_shape
        n = self.num_modules
        routing = [(batch, n, n)] * (self.num_layers - 1)
        if self.variant == "official":
            routing.append((batch, n))
        return outputs_shape, routing

    def compute_output_spec(self, inputs, task, return_routing=False):
        # Keras's default passes only the `*_shape` arguments to
        # `compute_output_shape`; `return_routing` changes the structure.
        self._validate(inputs, task)
        return keras.tree.map_shape_structure(
            lambda shape: keras.KerasTensor(shape, dtype=self.compute_dtype),
            self.compute_output_shape(
                inputs.shape, task.shape, return_routing=return_routing
            ),
        )

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _INT_ARGS})
        config["variant"] = self.variant
        for name in (
            "kernel_initializer",
            "bias_initializer",
            "routing_output_initializer",
        ):
            config[name] = keras.initializers.serialize(getattr(self, name))
        for name in ("kernel_regularizer", "bias_regularizer"):
            config[name] = keras.regularizers.serialize(getattr(self, name))
        return config
