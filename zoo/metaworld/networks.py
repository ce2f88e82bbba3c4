"""Actor and critic networks of multi-task SAC on Meta-World MT10 / MT50.

Papers: Yang, Xu, Wu, Wang, "Multi-Task Reinforcement Learning with Soft
Modularization", NeurIPS 2020 (papers/soft-modularization-multitask-rl.txt,
Section 5: the baselines MT-SAC, MT-MH-SAC, Mix-Expert, Hard Routing) and
"Mint: Matrix-Interleaving for Multi-Task Learning", ICLR 2020 submission
(papers/mint-matrix-interleaving.txt, Section 6 and Appendix B: Mint, SAC
(concat all fc), FiLM, independent networks). One family, chosen by name:
every network maps features x and integer task ids k to an output o, the
actor with x = s and o = [mean, log_std] (2 |A| units, split in two), the
critic with x = [s, a] and o = Q (1 unit). With hidden layers h_0 = x,
h_l = relu(W_l h_{l-1} + b_l), l = 1..L, and z_k the one-hot of task k:

    "mt-sac":        o = W_o h_L + b_o                   (s carries z_k, NOTE 1)
    "mt-mh-sac":     o = W_o^k h_L + b_o^k                (one head per task)
    "independent":   h_l = relu(W_l^k h_{l-1} + b_l^k),  o = W_o^k h_L + b_o^k
    "concat-all-fc": h_l = relu(W_l [h_{l-1}, z_k] + b_l), o = W_o [h_L, z_k] + b_o
    "mint":          h_l = M_l^k relu(W_l h_{l-1} + b_l) + beta_l^k,  o = W_o h_L + b_o
    "film":          h_l = gamma_l^k * relu(W_l h_{l-1} + b_l) + beta_l^k, o = W_o h_L + b_o
    "moe":           o = sum_e g_e(k) o_e(x),  g(k) = softmax(W_g z_k + b_g),
                     o_e an MT-SAC network (expert e of E)
    "hard-routing":  h_l = relu(W_l^(r_l(k)) h_{l-1} + b_l^(r_l(k))), o = W_o h_L + b_o,
                     r_l(k) in [0, n) a fixed module of layer l for task k
    "soft-modular":  o = W_o SoftModularBlock(x, k) + b_o   ("official"), or
                     o = SoftModularBlock(x, k) with output width |o| ("paper")

NOTE 1 (task inputs): the observations s are Meta-World's with
  `use_one_hot=True` (39 floats then the one-hot z_k), and the task ids k
  come separately, as `training.sac.MultiTaskSAC` passes them. "mt-sac" is
  a plain MLP on s: it sees the task only through the one-hot inside s (the
  paper's "one-hot task ID with the state as inputs"), and ignores the ids.
  Every other network takes the task from the ids (the one-hots that
  "concat-all-fc" and "moe" use are `one_hot(k)`), so it is task-conditioned
  even without the one-hot in s; with it, s still enters unchanged (the
  official Soft-Module code also feeds the observation with the id to f(s)).
NOTE 2 (heads): "mt-mh-sac" is a shared 3 x 400 trunk with one output
  layer per task, as the official Soft-Module code's MT-MH-SAC (shared
  hidden [400, 400] + [400], a `BootstrappedNet` output of |o| x T units of
  which each example keeps its task's |o|); `TaskDense` with ids gathers
  each example's head. "mint" and "film" end in one shared output layer
  (the per-task map before it already makes the output task-specific, as in
  zoo/mint/networks.py NOTE 2); "independent" has per-task heads.
NOTE 3 (initialisation): the output layer of every network (the experts'
  output layers for "moe") starts at U(-3e-3, 3e-3) for kernel and bias, the
  official Soft-Module/torchrl `uniform_init` of every network's `last`
  layer (MT-SAC, MT-MH-SAC and Soft Modularization alike): the policy starts
  with mean ~0 and log_std ~0 and the Q-values near 0. Hidden layers use the
  Keras defaults (glorot-uniform kernels, zero biases), not torchrl's
  `basic_init`; the Soft Modularization block keeps its own official
  initialisation (layers/soft_modular_block.py NOTE 9). The MoE gate starts
  at zero (every task mixes the experts equally).
NOTE 4 (Mint sizes): Mint's RL networks are 3 layers interleaved with Mint
  of 160 (MT10) and 150 (MT50) units (Appendix B). The paper's baselines
  were 6-layer MLPs of the same width ("about the same number of
  parameters"); the presets here give the baselines the Soft Modularization
  paper's 3 x 400 instead (`hidden_units=` restores Mint's choice).
NOTE 5 (soft-modular variants): `block` ("shallow": 2 layers of 2 modules of
  256; "deep": 4 x 4 x 128) and `variant` ("official", "paper") go to
  `SoftModularBlock.from_preset_name`, with any of its sizes as options. The
  official network ends in a separate output layer `last` after the block's
  ReLU output (NOTE 3 init); in the paper the last module layer of width |o|
  is the output (Eq. 9), so the "paper" variant builds the block with
  `output_units=|o|` and adds no output layer (a second linear map after
  Eq. 9 would add nothing). `hidden_units` has no meaning there and must be
  left at None.
NOTE 6 (experts in one einsum): the E experts of "moe" are the columns of
  `TaskDense` layers in column mode (kernels (E, in, out)): the first layer
  maps x (batch, in) to (batch, E, units), each later layer maps column e
  through expert e's layer, and the gate mixes the E outputs in one einsum.
  The paper's Mix-Expert has 4 experts "with the same architecture as
  MT-SAC" and a learned gating network; its input is not given, the gate
  here reads the task one-hot (one linear layer and a softmax).
NOTE 7 (hard routing): the paper's Hard Routing baseline follows Rosenbaum
  et al. (Routing Networks): 4 module layers of 4 modules, one module per
  layer chosen for the task by a controller (a tabular, learned router).
  Here the route is FIXED: `routes` (L, T), module `routes[l][k]` of layer l
  for task k, drawn once uniformly from `routing_seed` unless given, and
  stored in the config (clones and saved models keep it). Learning the
  router (reinforcement-learned tabular controller, WPL) is not
  implemented. Each layer is a `TaskDense` over its n modules called with
  the module ids `routes[l][k]` (a gather of one module per example); the
  output layer is shared. Module width is not given in the paper; the
  presets use 400.
NOTE 8 (per-task layers: select, not gather): a `TaskDense` called with ids
  gathers one (in, out) kernel per example (layers/task_dense.py NOTE 1):
  at batch 1280 and 400 x 400 that is 0.8 GB of float32 kernels per layer,
  and the backward pass scatter-adds as many. The hidden layers of
  "independent" and "hard-routing" therefore run by default in TaskDense's
  column mode, every task's (or module's) layer on the whole batch, and
  each example keeps its own column (`task_layer_mode="select"`): K times
  the multiply-adds, no gathered kernels. Measured on this 2-core CPU (JAX,
  jitted gradient of one 400 x 400 layer, batch 1280): gather 500 ms
  whatever K; select 20 ms (K = 4, hard routing), 60 ms (K = 10), 350 ms
  (K = 50). `task_layer_mode="gather"` (ids mode) gives the same values.
  The per-task heads of "mt-mh-sac" are small (400 x |o|) and gather.
"""

import keras
import numpy as np
from keras import ops

from layers.film_layer import FiLMLayer
from layers.mint_layer import MintLayer
from layers.soft_modular_block import SOFT_MODULAR_CONFIGS, SoftModularBlock
from layers.task_dense import TaskDense
from layers.task_inputs import check_task_inputs, positive_int

from zoo.metaworld import NETWORKS  # the names, defined without keras

DEFAULT_HIDDEN_UNITS = (400, 400, 400)

# The options of each network beyond `hidden_units`, with their defaults.
_SOFT_MODULAR_SIZES = (
    "num_layers",
    "num_modules",
    "module_units",
    "routing_units",
    "routing_layers",
    "observation_embedding_units",
    "observation_embedding_layers",
)
NETWORK_OPTIONS = {
    "moe": {"num_experts": 4},
    "independent": {"task_layer_mode": "select"},
    "hard-routing": {"num_modules": 4, "routes": None, "routing_seed": 0,
                     "task_layer_mode": "select"},
    "soft-modular": {
        "block": "shallow",
        "variant": "official",
        **{name: None for name in _SOFT_MODULAR_SIZES},
    },
}


def _presets():
    presets = {}
    for benchmark, mint_units, soft_block in (
        ("mt10", 160, "shallow"),
        ("mt50", 150, "deep"),
    ):
        for network in NETWORKS:
            preset = {"network": network, "hidden_units": DEFAULT_HIDDEN_UNITS}
            if network == "mint":  # NOTE 4
                preset["hidden_units"] = (mint_units,) * 3
            elif network == "moe":
                preset["num_experts"] = 4
            elif network == "hard-routing":  # NOTE 7: 4 layers of 4 modules
                preset.update(hidden_units=(400,) * 4, num_modules=4)
            elif network == "soft-modular":
                preset = {"network": network, "block": soft_block,
                          "variant": "official"}
            presets[f"{benchmark}/{network}"] = preset
        for block in SOFT_MODULAR_CONFIGS:  # both blocks on both benchmarks
            presets[f"{benchmark}/soft-modular-{block}"] = {
                "network": "soft-modular", "block": block, "variant": "official"}
    return presets


# Paper sizes: "mt10/<network>" and "mt50/<network>" for every network
# (NOTES 4, 5, 7), plus "mt{10,50}/soft-modular-{shallow,deep}".
PRESETS = _presets()


def _unknown_network(name):
    return ValueError(
        f"Unknown network {name!r}; expected one of {', '.join(NETWORKS)} "
        f"(or a preset: {', '.join(PRESETS)})."
    )


def _output_initializer():
    """U(-3e-3, 3e-3), torchrl's `uniform_init` of the last layer (NOTE 3)."""
    return keras.initializers.RandomUniform(-3e-3, 3e-3)


def _resolve_options(network, hidden_units, options):
    """(hidden_units, options with defaults) after checking both."""
    if network not in NETWORKS:
        raise _unknown_network(network)
    accepted = NETWORK_OPTIONS.get(network, {})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        names = list(accepted) if network == "soft-modular" else ["hidden_units", *accepted]
        raise ValueError(
            f"Network {network!r} takes no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(names)}."
        )
    resolved = {**accepted, **options}
    if network == "soft-modular":
        if hidden_units is not None:
            raise ValueError(
                "Network 'soft-modular' takes its sizes from `block` and the "
                "SoftModularBlock options, not `hidden_units` (NOTE 5)."
            )
        if resolved["block"] not in SOFT_MODULAR_CONFIGS:
            raise ValueError(
                f"`block` must be one of {sorted(SOFT_MODULAR_CONFIGS)}; got "
                f"{resolved['block']!r}."
            )
        return None, resolved
    if hidden_units is None:
        hidden_units = DEFAULT_HIDDEN_UNITS
    if isinstance(hidden_units, (int, str)) or not len(hidden_units):
        raise ValueError(
            "`hidden_units` must be a non-empty list of positive integers; "
            f"got {hidden_units!r}."
        )
    hidden_units = tuple(positive_int(u, "hidden_units") for u in hidden_units)
    if network == "moe":
        resolved["num_experts"] = positive_int(resolved["num_experts"], "num_experts")
    if network == "hard-routing":
        resolved["num_modules"] = positive_int(resolved["num_modules"], "num_modules")
    if resolved.get("task_layer_mode", "select") not in ("select", "gather"):
        raise ValueError(
            "`task_layer_mode` must be 'select' or 'gather' (NOTE 8); got "
            f"{resolved['task_layer_mode']!r}.")
    return hidden_units, resolved


def _routes(routes, routing_seed, num_layers, num_tasks, num_modules):
    """The fixed route table (num_layers, num_tasks) as lists (NOTE 7)."""
    if routes is None:
        rng = np.random.default_rng(routing_seed)
        routes = rng.integers(0, num_modules, size=(num_layers, num_tasks))
    table = np.asarray(routes)
    if (table.shape != (num_layers, num_tasks)
            or not np.issubdtype(table.dtype, np.integer)
            or table.min() < 0 or table.max() >= num_modules):
        raise ValueError(
            f"`routes` must be integers in [0, {num_modules}) of shape "
            f"(len(hidden_units), num_tasks) = ({num_layers}, {num_tasks}); "
            f"got {routes!r}."
        )
    return table.astype(int).tolist()


class _MultiTaskNetwork(keras.Model):
    """The trunk shared by `MultiTaskActor` and `MultiTaskCritic`: features
    (batch, in) and task ids (batch,) -> (batch, output_units)."""

    _BASE_KWARGS = ("name", "trainable", "dtype")

    def __init__(self, network, num_tasks, output_units, hidden_units=None,
                 **network_options):
        base = {k: network_options.pop(k) for k in self._BASE_KWARGS
                if k in network_options}
        super().__init__(**base)
        self.network = network
        self.num_tasks = positive_int(num_tasks, "num_tasks")
        self.output_units = positive_int(output_units, "output_units")
        self.hidden_units, self.network_options = _resolve_options(
            network, hidden_units, network_options)
        self.observation_dim = None
        if network == "hard-routing":
            options = self.network_options
            options["routes"] = _routes(
                options["routes"], options["routing_seed"],
                len(self.hidden_units), self.num_tasks, options["num_modules"])
            self._route_table = np.asarray(options["routes"], "int32")
        self._make_layers()

    # -- Layers. ---------------------------------------------------------------
    def _make_layers(self):
        network, T, o = self.network, self.num_tasks, self.output_units
        self.hidden_layers, self.task_maps = [], []
        self.output_layer = None
        if network == "soft-modular":
            options = dict(self.network_options)
            block = options.pop("block")
            overrides = {k: v for k, v in options.items() if v is not None}
            if overrides["variant"] == "paper":  # NOTE 5: Eq. 9 is the output
                overrides["output_units"] = o
            self.block = SoftModularBlock.from_preset_name(
                block, num_tasks=T, **overrides)
            if overrides["variant"] == "official":
                self.output_layer = keras.layers.Dense(
                    o, kernel_initializer=_output_initializer(),
                    bias_initializer=_output_initializer(), name="output")
            return
        output_init = dict(kernel_initializer=_output_initializer(),
                           bias_initializer=_output_initializer())
        for i, units in enumerate(self.hidden_units):
            name = f"dense_{i}"
            if network == "independent":
                layer = TaskDense(units, T, activation="relu", name=name)
            elif network == "moe":  # NOTE 6: E experts as columns
                layer = TaskDense(units, self.network_options["num_experts"],
                                  activation="relu", name=f"experts_{i}")
            elif network == "hard-routing":  # NOTE 7: n modules
                layer = TaskDense(units, self.network_options["num_modules"],
                                  activation="relu", name=f"modules_{i}")
            else:
                layer = keras.layers.Dense(units, activation="relu", name=name)
            self.hidden_layers.append(layer)
            if network == "mint":
                self.task_maps.append(MintLayer(num_tasks=T, name=f"mint_{i}"))
            elif network == "film":
                self.task_maps.append(FiLMLayer(num_tasks=T, name=f"film_{i}"))
        if network in ("mt-mh-sac", "independent"):  # NOTE 2: per-task heads
            self.output_layer = TaskDense(o, T, name="output", **output_init)
        elif network == "moe":
            self.output_layer = TaskDense(
                o, self.network_options["num_experts"], name="experts_output",
                **output_init)
            self.gate = keras.layers.Dense(  # NOTE 3: starts uniform
                self.network_options["num_experts"], kernel_initializer="zeros",
                name="gate")
        else:
            self.output_layer = keras.layers.Dense(o, name="output", **output_init)

    # -- Forward pass. ---------------------------------------------------------
    def _check(self, features, task_ids, what):
        if len(features.shape) != 2 or features.shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects {what} of shape "
                f"(batch, dim); got shape {tuple(features.shape)}.")
        task_ids, _ = check_task_inputs(self, features, task_ids,
                                        num_tasks=self.num_tasks)
        return ops.cast(features, self.compute_dtype), task_ids

    def _check_observation_dim(self, observations):
        dim = int(observations.shape[-1])
        if self.observation_dim is not None and dim != self.observation_dim:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' was built for "
                f"observations of size {self.observation_dim}; got shape "
                f"{tuple(observations.shape)}.")

    def _forward(self, x, task_ids):
        """The network of the module docstring on features x (batch, in)."""
        network = self.network
        if network == "soft-modular":
            hidden = self.block(x, task_ids)
            if self.output_layer is None:  # "paper": Eq. 9 output (NOTE 5)
                return hidden
            return self.output_layer(hidden)
        one_hot = None
        if network in ("concat-all-fc", "moe"):
            one_hot = ops.one_hot(task_ids, self.num_tasks, dtype=self.compute_dtype)
        if network == "moe":
            hidden = x
            for layer in self.hidden_layers:  # (batch, in) -> (batch, E, units)
                hidden = layer(hidden)
            expert_outputs = self.output_layer(hidden)  # (batch, E, o)
            gate = ops.softmax(self.gate(one_hot), axis=-1)
            return ops.einsum("be,beo->bo", gate, expert_outputs)
        if network == "hard-routing":  # NOTE 7: module id per layer and example
            module_ids = ops.take(ops.convert_to_tensor(self._route_table),
                                  task_ids, axis=1)
        hidden = x  # "mt-sac": the task only through the one-hot in x (NOTE 1)
        for i, layer in enumerate(self.hidden_layers):
            if network == "concat-all-fc":
                hidden = ops.concatenate([hidden, one_hot], axis=-1)
            if network == "independent":
                hidden = self._per_task(layer, hidden, task_ids)
            elif network == "hard-routing":
                hidden = self._per_task(layer, hidden, module_ids[i])
            else:
                hidden = layer(hidden)
            if self.task_maps:  # Mint / FiLM after the activation
                hidden = self.task_maps[i](hidden, task_ids)
        if network == "concat-all-fc":
            hidden = ops.concatenate([hidden, one_hot], axis=-1)
        if network == "independent":
            return self._per_task(self.output_layer, hidden, task_ids)
        if network == "mt-mh-sac":  # NOTE 2: each example's own head
            return self.output_layer(hidden, task_ids)
        return self.output_layer(hidden)

    def _per_task(self, layer, hidden, ids):
        """Each example through layer `ids` of a TaskDense (NOTE 8)."""
        if self.network_options["task_layer_mode"] == "gather":
            return layer(hidden, ids)
        columns = layer(hidden)  # (batch, K, units): every task's layer
        own = ops.one_hot(ids, layer.num_tasks, dtype=self.compute_dtype)
        return ops.einsum("bk,bku->bu", own, columns)

    # -- Build and config. -------------------------------------------------------
    def build(self, inputs_shape):
        """Creates every weight by one call on zeros of the given shapes."""
        if not isinstance(inputs_shape, (tuple, list)) or not inputs_shape or not all(
                isinstance(shape, (tuple, list)) for shape in inputs_shape):
            raise ValueError(f"{type(self).__name__} expects a tuple of input "
                             f"shapes; got {inputs_shape!r}.")
        action_dim = int(inputs_shape[1][-1]) if len(inputs_shape) == 3 else None
        self.build_for(int(inputs_shape[0][-1]), action_dim)

    def build_for(self, observation_dim, action_dim=None):
        """Builds for observations of `observation_dim` floats (and, for the
        critic, actions of `action_dim`)."""
        observations = ops.zeros((1, int(observation_dim)))
        task_ids = ops.zeros((1,), "int32")
        if isinstance(self, MultiTaskCritic):
            action_dim = action_dim or self.action_dim
            if action_dim is None:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' needs its action "
                    "size to be built: pass action_dim.")
            self.call((observations, ops.zeros((1, int(action_dim))), task_ids))
        else:
            self.call((observations, task_ids))
        self.built = True

    def get_build_config(self):
        return {"observation_dim": self.observation_dim}

    def build_from_config(self, config):
        if config.get("observation_dim"):
            self.build_for(config["observation_dim"])

    def _config(self):
        config = super().get_config()
        config.update(
            network=self.network,
            num_tasks=self.num_tasks,
            hidden_units=None if self.hidden_units is None else list(self.hidden_units),
            **self.network_options,
        )
        return config


@keras.saving.register_keras_serializable(package="modular_zoo")
class MultiTaskActor(_MultiTaskNetwork):
    """Multi-task SAC policy network: `(observations, task_ids) -> (mean,
    log_std)`, one network of `NETWORKS` (module docstring).

    One output layer of `2 * action_dim` units is split into the mean and
    the log standard deviation of the pre-tanh Gaussian (clamping to
    [-20, 2] and squashing happen in `training.sac`).

    Args:
        network: One of `NETWORKS`.
        num_tasks: Positive integer, T.
        action_dim: Positive integer, |A|.
        hidden_units: Sequence of positive integers, the hidden layers
            (module layers for "hard-routing"); None means (400, 400, 400).
            Must be None for "soft-modular" (NOTE 5).
        **network_options: The network's options (`NETWORK_OPTIONS`):
            "moe": `num_experts` (4); "hard-routing": `num_modules` (4),
            `routes` (None: drawn from `routing_seed`, 0; NOTE 7);
            "independent" and "hard-routing": `task_layer_mode` ("select"
            or "gather", NOTE 8);
            "soft-modular": `block` ("shallow" or "deep"), `variant`
            ("official" or "paper") and SoftModularBlock sizes
            (`num_layers`, `num_modules`, `module_units`, `routing_units`,
            `routing_layers`, `observation_embedding_units`,
            `observation_embedding_layers`); and base `keras.Model`
            keyword arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A tuple `(observations, task_ids)`: observations (batch, obs)
            float (with the task one-hot, NOTE 1) and integer task ids
            (batch,) in [0, num_tasks).

    Output shape:
        A pair `(mean, log_std)`, each (batch, action_dim).

    Example:

    >>> actor = MultiTaskActor("mt-mh-sac", num_tasks=3, action_dim=2,
    ...                        hidden_units=(8, 8))
    >>> observations = np.zeros((4, 7), "float32")  # 4 state floats + one-hot
    >>> mean, log_std = actor((observations, np.array([0, 2, 2, 1])))
    >>> tuple(mean.shape), tuple(log_std.shape)
    ((4, 2), (4, 2))
    """

    def __init__(self, network, num_tasks, action_dim, hidden_units=None,
                 **network_options):
        self.action_dim = positive_int(action_dim, "action_dim")
        super().__init__(network, num_tasks, 2 * self.action_dim,
                         hidden_units=hidden_units, **network_options)

    def call(self, inputs, training=None):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs (observations, task_ids); "
                f"got {type(inputs).__name__}.")
        observations, task_ids = inputs
        observations, task_ids = self._check(observations, task_ids, "observations")
        self._check_observation_dim(observations)
        self.observation_dim = int(observations.shape[-1])
        outputs = self._forward(observations, task_ids)
        return outputs[:, : self.action_dim], outputs[:, self.action_dim:]

    def get_config(self):
        return dict(self._config(), action_dim=self.action_dim)


@keras.saving.register_keras_serializable(package="modular_zoo")
class MultiTaskCritic(_MultiTaskNetwork):
    """Multi-task SAC Q-network: `(observations, actions, task_ids) -> Q`,
    one network of `NETWORKS` on the features `[observations, actions]`.

    Args:
        network: One of `NETWORKS`.
        num_tasks: Positive integer, T.
        hidden_units: As in `MultiTaskActor`.
        **network_options: As in `MultiTaskActor`.

    Call arguments:
        inputs: A tuple `(observations, actions, task_ids)`: observations
            (batch, obs) and actions (batch, act) float, integer task ids
            (batch,).

    Output shape:
        (batch, 1).

    Example:

    >>> critic = MultiTaskCritic("mint", num_tasks=3, hidden_units=(8, 8))
    >>> q = critic((np.zeros((4, 7), "float32"), np.zeros((4, 2), "float32"),
    ...             np.array([0, 2, 2, 1])))
    >>> tuple(q.shape)
    (4, 1)
    """

    def __init__(self, network, num_tasks, hidden_units=None, action_dim=None,
                 **network_options):
        self.action_dim = positive_int(action_dim, "action_dim", allow_none=True)
        super().__init__(network, num_tasks, 1, hidden_units=hidden_units,
                         **network_options)

    def call(self, inputs, training=None):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs (observations, actions, "
                f"task_ids); got {type(inputs).__name__}.")
        observations, actions, task_ids = inputs
        self._check_observation_dim(observations)
        if self.action_dim is not None and actions.shape[-1] != self.action_dim:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' takes actions of size "
                f"{self.action_dim}; got shape {tuple(actions.shape)}.")
        if len(observations.shape) != 2 or len(actions.shape) != 2:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects observations "
                "(batch, obs) and actions (batch, act); got shapes "
                f"{tuple(observations.shape)} and {tuple(actions.shape)}.")
        self.observation_dim = int(observations.shape[-1])
        self.action_dim = int(actions.shape[-1])
        features = ops.concatenate(
            [ops.cast(observations, self.compute_dtype),
             ops.cast(actions, self.compute_dtype)], axis=-1)
        features, task_ids = self._check(features, task_ids, "features")
        return self._forward(features, task_ids)

    def get_config(self):
        return dict(self._config(), action_dim=self.action_dim)


def build_actor_critic(preset_or_network, num_tasks, action_dim, **overrides):
    """`(actor, critic)` of one network, by preset or by network name.

    Args:
        preset_or_network: A key of `PRESETS` ("mt10/mint", ...) or a name of
            `NETWORKS` (with the network's defaults).
        num_tasks: Positive integer, T.
        action_dim: Positive integer, |A|.
        **overrides: `hidden_units` and network options replacing the
            preset's (see `MultiTaskActor`).

    Returns:
        A `MultiTaskActor` named "actor" and a `MultiTaskCritic` named
        "critic" (unbuilt: their first call builds them).

    Example:

    >>> actor, critic = build_actor_critic("mt10/soft-modular", num_tasks=10,
    ...                                    action_dim=4)
    >>> actor.network_options["block"], critic.network_options["variant"]
    ('shallow', 'official')
    >>> build_actor_critic("mlp", num_tasks=10, action_dim=4)
    Traceback (most recent call last):
    ...
    ValueError: Unknown network 'mlp'; expected one of mt-sac, mt-mh-sac, ...
    """
    if preset_or_network in PRESETS:
        config = dict(PRESETS[preset_or_network])
    elif preset_or_network in NETWORKS:
        config = {"network": preset_or_network}
    else:
        raise _unknown_network(preset_or_network)
    config.update(overrides)
    network = config.pop("network")
    if network != "soft-modular" and "hidden_units" not in config:
        config["hidden_units"] = DEFAULT_HIDDEN_UNITS
    actor = MultiTaskActor(network, num_tasks, action_dim, name="actor", **config)
    critic = MultiTaskCritic(network, num_tasks, action_dim=action_dim,
                             name="critic", **config)
    return actor, critic
