"""Actor and critic networks of multi-task SAC on Meta-World MT10 / MT50.

Papers: Yang, Xu, Wu, Wang, "Multi-Task Reinforcement Learning with Soft
Modularization", NeurIPS 2020 (papers/soft-modularization-multitask-rl.txt,
Section 5: the baselines MT-SAC, MT-MH-SAC, Mix-Expert, Hard Routing) and
"Mint: Matrix-Interleaving for Multi-Task Learning", ICLR 2020 submission
(papers/mint-matrix-interleaving.txt, Section 6 and Appendix B: Mint, SAC
(concat all fc), FiLM, independent networks, and Section 6.3's
goal-conditioned pushing). One family, chosen by name: every network maps
features x and integer task ids k to an output o, the actor with x = s and
o = [mean, log_std] (2 |A| units, split in two), the critic with x = [s, a]
and o = Q (1 unit). With hidden layers h_0 = x, h_l = relu(W_l h_{l-1} +
b_l), l = 1..L, z_k the one-hot of task k and, for the goal-conditioned
networks (NOTE 9), g_k = goal_table[k] the goal descriptor of task k:

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
    "mint-goal":     h_l = M_l(g_k) relu(W_l h_{l-1} + b_l) + beta_l(g_k),
                     o = W_o h_L + b_o  (paper Eq. 5)
    "sac-goal":      h_0 = [x, g_k], then as "mt-sac"
    "concat-all-fc" with a `goal_table`: g_k in place of z_k at every layer

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
  which each example keeps its task's |o|): every head runs on the batch
  and each example keeps its own (NOTE 8's "select"; gathering one head
  per example cost ~32 ms of a 220 ms torch update at batch 1280, measured
  with torch.profiler; no difference on JAX). "mint" and "film" end in one shared output layer
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
NOTE 9 (goal-conditioned networks, Section 6.3): a goal is one task of the
  pushing experiment (zoo/metaworld/goal_push.py), so these networks keep
  the interface of the others, `(observations, task_ids)`, and
  `training.sac.MultiTaskSAC` is unchanged: each maps task ids to goal
  descriptors through `goal_table` (num_tasks, goal_dim), a constant given
  at construction (not a weight: never trained, not in `get_weights`) and
  stored in the config, so clones and saved models keep it. "mint-goal" is
  Mint with M(g) and beta(g) from `MintLayer`'s goal networks (paper
  Eq. 5) after every hidden layer. "sac-goal" is the paper's plain SAC
  with the goal: g_k concatenated to the input. push-v3's observation
  already holds the goal position (floats 36:39) and the puck's current
  position; g_k adds the puck's initial position. "concat-all-fc" with a
  `goal_table` concatenates g_k (instead of the one-hot) to the input of
  every layer. The paper's goal-conditioned FiLM baseline is not built:
  `FiLMLayer` has no goal network (its float descriptors are a bias-free
  linear map of size num_tasks, whose gamma = sum_k g_k at init, so the
  network would not start as the plain one).
NOTE 10 (Mint's goal networks): the paper gives T_phi, T_psi no
  architecture ("two simple neural networks"). At 200 units every output
  of T_phi is 200 x 200 = 40,000 numbers, so each hidden unit of T_phi
  costs 40,200 parameters (MintLayer's default of one hidden layer of 64:
  2.6M per layer). "mint-goal" defaults to linear goal networks
  (`goal_network={"hidden_units": []}`: M(g) = M_0 + sum_i g_i M_i,
  201,000 parameters per layer of 200), the smallest choice and the only
  one that lets 6-layer baselines have "about the same number of
  parameters" at a sensible width (NOTE 11). M(g) = I and beta(g) = 0 at
  init (MintLayer NOTE 4), so the network starts as the plain MLP.
NOTE 11 (pushing sizes): Appendix B: Mint is 3 layers of 200; the other
  methods are 6-layer MLPs "such that they maintain about the same number
  of total parameters as Mint", and "the number of hidden units per layer
  is 200 ... for all methods". Both cannot hold: a 6 x 200 baseline has
  ~210K parameters against Mint's ~690K (3 x 200 with linear goal
  networks). The presets keep the equal count: "push/sac-goal" and
  "push/concat-all-fc" are 6 x 360 (~670K and ~680K for push-v3's 39-float
  observations, 4-float actions and goals; within 4% of "push/mint-goal").
  `hidden_units=(200,) * 6` gives the paper's stated width.
"""

import keras
import numpy as np
from keras import ops

from layers.film_layer import FiLMLayer
from layers.mint_layer import MintLayer
from layers.soft_modular_block import SOFT_MODULAR_CONFIGS, SoftModularBlock
from layers.task_dense import TaskDense
from layers.task_inputs import check_task_inputs, positive_int

from zoo.metaworld import GOAL_NETWORKS, NETWORKS  # names, without keras

DEFAULT_HIDDEN_UNITS = (400, 400, 400)
# Every name the networks accept: the MT10 / MT50 family and the
# goal-conditioned networks of the pushing experiment (NOTE 9).
ALL_NETWORKS = NETWORKS + tuple(n for n in GOAL_NETWORKS if n not in NETWORKS)
# The networks that need a goal table, and those that may take one.
_NEEDS_GOALS = ("mint-goal", "sac-goal")

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
    "mt-mh-sac": {"task_layer_mode": "select"},
    "independent": {"task_layer_mode": "select"},
    "hard-routing": {"num_modules": 4, "routes": None, "routing_seed": 0,
                     "task_layer_mode": "select"},
    "soft-modular": {
        "block": "shallow",
        "variant": "official",
        **{name: None for name in _SOFT_MODULAR_SIZES},
    },
    # NOTE 9: the goal descriptor of every task id; NOTE 10: linear T_phi, T_psi.
    "mint-goal": {"goal_table": None, "goal_network": {"hidden_units": []}},
    "sac-goal": {"goal_table": None},
    "concat-all-fc": {"goal_table": None},
}
# Pushing sizes (NOTE 11): Mint 3 x 200, the baselines 6 layers of an equal
# parameter count.
PUSH_MINT_UNITS = (200,) * 3
PUSH_BASELINE_UNITS = (360,) * 6


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
    for network in GOAL_NETWORKS:  # NOTE 11; the goal table comes at build
        presets[f"push/{network}"] = {
            "network": network,
            "hidden_units": PUSH_MINT_UNITS if network == "mint-goal"
            else PUSH_BASELINE_UNITS}
    presets["push/mint-goal"]["goal_network"] = {"hidden_units": []}  # NOTE 10
    return presets


# Paper sizes: "mt10/<network>" and "mt50/<network>" for every network
# (NOTES 4, 5, 7), plus "mt{10,50}/soft-modular-{shallow,deep}", and
# "push/<network>" for the goal-conditioned networks (NOTE 11).
PRESETS = _presets()


def _unknown_network(name):
    return ValueError(
        f"Unknown network {name!r}; expected one of {', '.join(ALL_NETWORKS)} "
        f"(or a preset: {', '.join(PRESETS)})."
    )


def _output_initializer():
    """U(-3e-3, 3e-3), torchrl's `uniform_init` of the last layer (NOTE 3)."""
    return keras.initializers.RandomUniform(-3e-3, 3e-3)


def _resolve_options(network, hidden_units, options):
    """(hidden_units, options with defaults) after checking both."""
    if network not in ALL_NETWORKS:
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
    if network in _NEEDS_GOALS and resolved["goal_table"] is None:
        raise ValueError(
            f"Network {network!r} needs `goal_table`, the goal descriptor of "
            "every task id, of shape (num_tasks, goal_dim) (NOTE 9).")
    if "goal_network" in resolved:
        goal_network = resolved["goal_network"]
        if not isinstance(goal_network, dict):
            raise ValueError(
                "`goal_network` must be a dict of MintLayer goal-network "
                f"options (NOTE 10); got {goal_network!r}.")
        goal_network = dict(goal_network)
        if "hidden_units" in goal_network:
            goal_network["hidden_units"] = list(goal_network["hidden_units"])
        resolved["goal_network"] = goal_network
    return hidden_units, resolved


def _goal_table(goal_table, num_tasks):
    """The goal table (num_tasks, goal_dim) as lists of floats (NOTE 9)."""
    try:
        table = np.asarray(goal_table, np.float32)
    except (TypeError, ValueError):
        table = None
    if (table is None or table.ndim != 2 or table.shape[0] != num_tasks
            or table.shape[1] < 1 or not np.all(np.isfinite(table))):
        shape = "?" if table is None else table.shape
        raise ValueError(
            "`goal_table` must be finite floats of shape (num_tasks, "
            f"goal_dim) = ({num_tasks}, goal_dim); got shape {shape}.")
    return table.tolist()


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
        self._goals = None
        if self.network_options.get("goal_table") is not None:  # NOTE 9
            options = self.network_options
            options["goal_table"] = _goal_table(options["goal_table"], self.num_tasks)
            self._goals = np.asarray(options["goal_table"], "float32")
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
            elif network == "mint-goal":  # Eq. 5, NOTE 10
                mint = MintLayer(task_dim=self._goals.shape[1],
                                 goal_network=self.network_options["goal_network"],
                                 name=f"mint_{i}")
                # Built now: MintLayer makes its goal networks' Dense layers
                # in build, and `trainable = False` (MultiTaskSAC's target
                # critics, set before their first call) reaches only the
                # sublayers that exist when it is set.
                with keras.name_scope(self.name):  # paths as in a call
                    mint.build((None, units))
                self.task_maps.append(mint)
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
        goals = None
        if self._goals is not None:  # NOTE 9: g_k from the constant table
            goals = ops.take(ops.convert_to_tensor(self._goals, self.compute_dtype),
                             task_ids, axis=0)
        one_hot = None  # z_k, or g_k for "concat-all-fc" with a goal table
        if network in ("concat-all-fc", "moe"):
            one_hot = goals if goals is not None else ops.one_hot(
                task_ids, self.num_tasks, dtype=self.compute_dtype)
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
        if network == "sac-goal":  # NOTE 9: the goal beside the input
            hidden = ops.concatenate([x, goals], axis=-1)
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
                hidden = self.task_maps[i](
                    hidden, goals if network == "mint-goal" else task_ids)
        if network == "concat-all-fc":
            hidden = ops.concatenate([hidden, one_hot], axis=-1)
        if network == "independent":
            return self._per_task(self.output_layer, hidden, task_ids)
        if network == "mt-mh-sac":  # NOTE 2: each example's own head
            return self._per_task(self.output_layer, hidden, task_ids)
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
    log_std)`, one network of `ALL_NETWORKS` (module docstring).

    One output layer of `2 * action_dim` units is split into the mean and
    the log standard deviation of the pre-tanh Gaussian (clamping to
    [-20, 2] and squashing happen in `training.sac`).

    Args:
        network: One of `ALL_NETWORKS` (`NETWORKS` and the goal-conditioned
            "mint-goal", "sac-goal").
        num_tasks: Positive integer, T.
        action_dim: Positive integer, |A|.
        hidden_units: Sequence of positive integers, the hidden layers
            (module layers for "hard-routing"); None means (400, 400, 400).
            Must be None for "soft-modular" (NOTE 5).
        **network_options: The network's options (`NETWORK_OPTIONS`):
            "moe": `num_experts` (4); "hard-routing": `num_modules` (4),
            `routes` (None: drawn from `routing_seed`, 0; NOTE 7);
            "mt-mh-sac", "independent" and "hard-routing":
            `task_layer_mode` ("select" or "gather", NOTE 8);
            "soft-modular": `block` ("shallow" or "deep"), `variant`
            ("official" or "paper") and SoftModularBlock sizes
            (`num_layers`, `num_modules`, `module_units`, `routing_units`,
            `routing_layers`, `observation_embedding_units`,
            `observation_embedding_layers`);
            "mint-goal", "sac-goal" (required) and "concat-all-fc"
            (optional): `goal_table`, the goal descriptor of every task,
            (num_tasks, goal_dim) floats (NOTE 9); "mint-goal":
            `goal_network` (MintLayer's, default `{"hidden_units": []}`,
            NOTE 10); and base `keras.Model` keyword arguments (`name`,
            `dtype`, `trainable`).

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
    >>> goals = np.array([[0.0, 0.6, 0.1, 0.9], [0.1, 0.7, -0.1, 0.8]])
    >>> goal_actor = MultiTaskActor("mint-goal", num_tasks=2, action_dim=2,
    ...                             hidden_units=(8, 8), goal_table=goals)
    >>> mean, _ = goal_actor((np.zeros((3, 5), "float32"), np.array([0, 1, 1])))
    >>> tuple(mean.shape)
    (3, 2)
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
        network: One of `ALL_NETWORKS`.
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
        preset_or_network: A key of `PRESETS` ("mt10/mint", "push/mint-goal",
            ...) or a name of `ALL_NETWORKS` (with the network's defaults).
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
    >>> table = np.zeros((200, 4), "float32")  # goal_push.goal_table(env)
    >>> actor, critic = build_actor_critic("push/mint-goal", 200, 4, goal_table=table)
    >>> actor.hidden_units, actor.network_options["goal_network"]
    ((200, 200, 200), {'hidden_units': []})
    """
    if preset_or_network in PRESETS:
        config = dict(PRESETS[preset_or_network])
    elif preset_or_network in ALL_NETWORKS:
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
