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
"""

import math

import keras
from keras import ops

from training.backend import check_index_range

SOFT_MODULAR_CONFIGS = {
    # Paper Section 5.2 "Ours (Shallow)" and "Ours (Deep)"; official configs
    # modular_2_2_2_256_* and modular_4_4_2_128_*.
    "shallow": dict(num_layers=2, num_modules=2, module_units=256),
    "deep": dict(num_layers=4, num_modules=4, module_units=128),
}

VARIANTS = ("official", "paper")


@keras.saving.register_keras_serializable(package="modular_zoo")
class OutputUnitsUniform(keras.initializers.Initializer):
    """U(-1/sqrt(units), 1/sqrt(units)) with `units = shape[-1]`.

    The official Soft-Module `basic_init` (torchrl `_fanin_init`) divides by
    `weight.size(0)` of a torch Linear weight, which is its number of output
    units; Keras kernels are laid out (..., in, out), so that is `shape[-1]`
    here, also for module kernels of shape (n, in, out) (NOTE 9).
    """

    def __call__(self, shape, dtype=None):
        bound = 1.0 / math.sqrt(shape[-1])
        return keras.random.uniform(
            shape, minval=-bound, maxval=bound, dtype=dtype
        )

    def get_config(self):
        return {}


def _is_integer(tensor):
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    return "int" in dtype


@keras.saving.register_keras_serializable(package="modular_zoo")
class SoftModularBlock(keras.layers.Layer):
    """Soft modularization block: routed modules plus their routing network.

    Paper equations ("paper" variant; notation of the module docstring;
    biases omitted, NOTE 8):

        e       = f(s) * h(z)                                   (D)
        p^1     = W_d^1 ReLU(e)                                 (Eq. 6)
        p^(l+1) = W_d^(l+1) ReLU(W_u^l p^l * e)                 (Eq. 5)
        p_hat^l = softmax over sources j of p^l as (n, n)       (Eq. 7)
        g_j^1   = f(s);  g_i^(l+1) = sum_j p_hat_ij^l ReLU(W_j^l g_j^l)  (Eq. 8)
        output  = sum_j W_j^L g_j^L                             (Eq. 9)

    Official variant (default; NOTES 1-5):

        e       = T(f(s) * h(z))   (routing trunk: ReLU, Dense, ..., Dense)
        p_hat^1 = softmax(W_d^1 ReLU(e))
        p_hat^l = softmax(W_d^l ReLU((W_c^l [p_hat^1..p_hat^(l-1)]) * e))
        q       = softmax(W_q ReLU((W_c^L [p_hat^1..p_hat^(L-1)]) * e))  (n)
        m^1_j   = W_j^1 ReLU(f(s));  m^(l+1)_i = W_i^(l+1) ReLU(sum_j p_hat_ij^l m^l_j)
        output  = ReLU(sum_j q_j m^L_j)

    Args:
        num_layers: L, the number of module layers (>= 2).
        num_modules: n, modules per layer.
        module_units: d, the output width of every module.
        num_tasks: number of tasks T; required for integer task ids, and
            then float descriptors must have T entries (one-hot). If None,
            only float descriptors are accepted, of any fixed width.
        routing_units: width of the routing layers ("official" only).
        routing_layers: number of extra routing embedding layers after
            f(s) * h(z) ("official" only, NOTE 1; 0 disables them).
        observation_embedding_units: D, width of f(s) and h(z).
        observation_embedding_layers: depth of the observation MLP f.
        variant: "official" (default) or "paper".
        output_units: o, width of the last module layer in the "paper"
            variant (Eq. 9); defaults to `module_units`. Must be None for
            "official" (its output width is d).
        kernel_initializer, bias_initializer: every kernel and bias except
            the routing outputs (default: official `basic_init`, NOTE 9).
        routing_output_initializer: kernels and biases of the layers that
            output routing logits (default U(+-3e-3), NOTE 9).
        kernel_regularizer, bias_regularizer: for all kernels / biases.

    Call arguments:
        state_features: (batch, state_dim) float.
        task: (batch,) integer task ids in [0, num_tasks), or a float task
            descriptor / one-hot (batch, task_dim).
        return_routing: if True, also return the list of routing
            probabilities: L-1 tensors (batch, n, n) [target, source], and
            for "official" the final (batch, n) mixing vector after them.

    Out-of-range integer ids raise ValueError in eager mode; inside
    `jax.jit` / `tf.function` they cannot be checked without a host sync and
    follow the backend's gather semantics (clamped or filled: wrong outputs,
    no error), so validate ids in the input pipeline.

    Output: (batch, module_units), or (batch, output_units) for "paper".

    Example:

    >>> import numpy as np
    >>> block = SoftModularBlock.from_preset_name("shallow", num_tasks=10)
    >>> states = np.random.rand(4, 39).astype("float32")
    >>> task_ids = np.array([0, 3, 3, 9])
    >>> features, routing = block(states, task_ids, return_routing=True)
    >>> tuple(features.shape), [tuple(r.shape) for r in routing]
    ((4, 256), [(4, 2, 2), (4, 2)])
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
        for name, value, minimum in (
            ("num_layers", num_layers, 2),
            ("num_modules", num_modules, 1),
            ("module_units", module_units, 1),
            ("routing_units", routing_units, 1),
            ("routing_layers", routing_layers, 0),
            ("observation_embedding_units", observation_embedding_units, 1),
            ("observation_embedding_layers", observation_embedding_layers, 1),
        ):
            if not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"`{name}` must be an integer >= {minimum}; got {value!r}."
                )
        if num_tasks is not None and (
            not isinstance(num_tasks, int) or num_tasks < 1
        ):
            raise ValueError(
                f"`num_tasks` must be None or a positive integer; got "
                f"{num_tasks!r}."
            )
        if variant not in VARIANTS:
            raise ValueError(
                f"`variant` must be one of {VARIANTS}; got {variant!r}."
            )
        if output_units is not None:
            if variant != "paper":
                raise ValueError(
                    "`output_units` sets the width of the paper's last module "
                    "layer (Eq. 9) and applies only to variant='paper'; the "
                    "official block outputs `module_units` features."
                )
            if not isinstance(output_units, int) or output_units < 1:
                raise ValueError(
                    f"`output_units` must be a positive integer; got "
                    f"{output_units!r}."
                )
        self.num_layers = num_layers
        self.num_modules = num_modules
        self.module_units = module_units
        self.num_tasks = num_tasks
        self.routing_units = routing_units
        self.routing_layers = routing_layers
        self.observation_embedding_units = observation_embedding_units
        self.observation_embedding_layers = observation_embedding_layers
        self.variant = variant
        self.output_units = output_units
        # NOTE 9: official initialisation by default.
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
        d=128 (MT50). Keyword `overrides` replace or add constructor
        arguments, e.g. `from_preset_name("deep", num_tasks=50)`.
        """
        if name not in SOFT_MODULAR_CONFIGS:
            raise ValueError(
                f"Unknown configuration {name!r}; expected one of "
                f"{sorted(SOFT_MODULAR_CONFIGS)}."
            )
        return cls(**{**SOFT_MODULAR_CONFIGS[name], **overrides})

    # ------------------------------------------------------------------ build

    def _dense_weights(self, name, input_dim, units, routing_output=False):
        kernel_init = (
            self.routing_output_initializer
            if routing_output
            else self.kernel_initializer
        )
        bias_init = (
            self.routing_output_initializer
            if routing_output
            else self.bias_initializer
        )
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=(input_dim, units),
            initializer=kernel_init,
            regularizer=self.kernel_regularizer,
        )
        bias = self.add_weight(
            name=f"{name}_bias",
            shape=(units,),
            initializer=bias_init,
            regularizer=self.bias_regularizer,
        )
        return kernel, bias

    def _task_input_dim(self, task_shape):
        if len(task_shape) == 1:
            if self.num_tasks is None:
                raise ValueError(
                    "Integer task ids of shape (batch,) need `num_tasks`; "
                    "pass num_tasks=... or give float task descriptors of "
                    "shape (batch, task_dim)."
                )
            return self.num_tasks
        if len(task_shape) == 2:
            task_dim = task_shape[-1]
            if task_dim is None:
                raise ValueError(
                    "The task descriptor's last dimension must be known; got "
                    f"shape {tuple(task_shape)}."
                )
            if self.num_tasks is not None and task_dim != self.num_tasks:
                raise ValueError(
                    f"Expected a task descriptor of shape (batch, "
                    f"{self.num_tasks}) (one-hot over num_tasks="
                    f"{self.num_tasks}); got shape {tuple(task_shape)}."
                )
            return task_dim
        raise ValueError(
            "Expected `task` of shape (batch,) (integer ids) or (batch, "
            f"task_dim) (float descriptor); got shape {tuple(task_shape)}."
        )

    def build(self, state_features_shape, task_shape):
        if len(state_features_shape) != 2 or state_features_shape[-1] is None:
            raise ValueError(
                "Expected `state_features` of shape (batch, state_dim) with a "
                f"known state_dim; got shape {tuple(state_features_shape)}."
            )
        self._state_dim = state_features_shape[-1]
        self._task_dim = self._task_input_dim(task_shape)
        n = self.num_modules
        d = self.module_units
        embed = self.observation_embedding_units

        # f(s): observation MLP.
        self.observation_weights = []
        input_dim = self._state_dim
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
            kernel = self.add_weight(
                name=f"module_{index}_kernel",
                shape=(n, input_dim, units),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
            )
            # NOTE 8: one bias for the summed last layer of the paper.
            bias = self.add_weight(
                name=f"module_{index}_bias",
                shape=(units,) if last_paper_layer else (n, units),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
            self.module_weights.append((kernel, bias))
            input_dim = units

    # ------------------------------------------------------------------- call

    def _check_inputs(self, state_features, task):
        if len(state_features.shape) != 2:
            raise ValueError(
                "Expected `state_features` of shape (batch, "
                f"{self._state_dim}); got shape {tuple(state_features.shape)}."
            )
        if state_features.shape[-1] != self._state_dim:
            raise ValueError(
                f"Expected `state_features` of shape (batch, "
                f"{self._state_dim}); got shape {tuple(state_features.shape)}."
            )
        if len(task.shape) == 1:
            if not _is_integer(task):
                raise ValueError(
                    "A `task` of shape (batch,) must hold integer task ids; "
                    f"got dtype {keras.backend.standardize_dtype(task.dtype)}. "
                    "Float descriptors need shape (batch, task_dim)."
                )
            if self.num_tasks is None:
                self._task_input_dim(task.shape)  # raises the clear error
        elif len(task.shape) == 2:
            if _is_integer(task):
                raise ValueError(
                    "A `task` of shape (batch, task_dim) must be a float "
                    "descriptor; integer ids need shape (batch,)."
                )
            if task.shape[-1] != self._task_dim:
                raise ValueError(
                    f"Expected a task descriptor of shape (batch, "
                    f"{self._task_dim}); got shape {tuple(task.shape)}."
                )
        else:
            self._task_input_dim(task.shape)  # raises the clear error

    def _task_embedding(self, task):
        """h(z) = W_h z + b_h; integer ids gather rows of W_h."""
        if len(task.shape) == 1:
            check_index_range(task, self.num_tasks)
            rows = ops.take(self.task_kernel, ops.cast(task, "int32"), axis=0)
            return ops.cast(rows, self.compute_dtype) + self.task_bias
        task = ops.cast(task, self.compute_dtype)
        return ops.matmul(task, self.task_kernel) + self.task_bias

    def _observation_embedding(self, state_features):
        """f(s): Dense, ReLU, ..., Dense (no activation on the output)."""
        hidden = state_features
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

    def call(self, state_features, task, return_routing=False):
        # `stateless_call` passes NumPy inputs through unconverted.
        task = ops.convert_to_tensor(task)
        self._check_inputs(state_features, task)
        observation_embedding = self._observation_embedding(state_features)
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

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_modules": self.num_modules,
                "module_units": self.module_units,
                "num_tasks": self.num_tasks,
                "routing_units": self.routing_units,
                "routing_layers": self.routing_layers,
                "observation_embedding_units": (
                    self.observation_embedding_units
                ),
                "observation_embedding_layers": (
                    self.observation_embedding_layers
                ),
                "variant": self.variant,
                "output_units": self.output_units,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "routing_output_initializer": keras.initializers.serialize(
                    self.routing_output_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
            }
        )
        return config
