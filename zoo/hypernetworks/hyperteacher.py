"""`Hyperteacher`: the modular teacher task generator of Schug et al.

Paper: S. Schug, S. Kobayashi, Y. Akram, M. Wolczyk, A. Proca, J. von
Oswald, R. Pascanu, J. Sacramento, A. Steger. "Discovering modular solutions
that generalize compositionally", ICLR 2024 (Section 4.1, Appendix C.2;
../shared/papers/modular-hypernetworks-compositional-generalization.txt).
Official code: github.com/smonsays/modular-hyperteacher
(`metax/data/dataset/teacher.py::HyperTeacher`, `configs/common.py`,
`configs/hyperteacher.py`).

The teacher is a ReLU MLP without biases, `input_dim -> hidden_dim x
num_hidden_layers -> output_dim`, in the NTK parameterisation (every layer
computes `h W / sqrt(fan_in)`). The input and output kernels are fixed
(drawn once from the seed); the kernels of the `L = num_hidden_layers - 1`
hidden-to-hidden layers (with one hidden layer: the input kernel, `L = 1`)
are generated per task by a linear hypernetwork from the task's module
indicators:

    a_l in {0, 1}^M  (l = 1..L): which of the M modules layer l uses,
                                  1 <= |a_l| <= K = max_active
    a = [a_1, ..., a_L]            (L*M,)   the task latent (`latents`)
    [vec W_1, ..., vec W_L] = a Theta      Theta (L*M, L*fan_in*hidden_dim)

so each row of `Theta` is a module (NOTE 1). The task set is the Cartesian
product over the L layers of the non-empty subsets of at most K of the M
modules: `(sum_{k<=K} C(M, k))^L` tasks (100 for M = 4, K = 2, L = 2).

Targets (per task, per output unit o):

    f_o(x)   = teacher output for the task
    mu, sd   = mean / std of f_o over 1000 fixed inputs x ~ U(-1, 1)^16
    targets  = softmax(((f(x) - mu) / sd) / temperature)   temperature 0.1

a probability vector per example; the learner's loss is the KL divergence
(`loss = "kl"`) and its accuracy the argmax agreement with the targets.

Task supports (`support`) split the task set into training tasks
(`train_tasks`, drawn by `sample("train")` and `sample("test")`) and
held-out tasks (`ood_tasks`, `sample("ood")`), never overlapping:

* "compositional": a random 75/25 split (`ood_fraction`); every module (every
  row of `Theta`) is used by some training task (NOTE 3).
* "non_compositional": every task that uses the last module of the last
  generated layer is held out (NOTE 4).
* "connected": per layer the one-hots and the pairs (i, i+1), (i, i+2) mod M;
  training tasks are all layer-wise combinations of those. Needs
  `max_active == 2` and an even `num_modules >= 6` (the paper uses M = 8).
* "disconnected": every layer one-hot, or every layer a pair, with all
  modules (of all layers) inside the same half of the modules: the module
  co-occurrence graph has the two halves as components (NOTE 5).
  For "connected" and "disconnected" the held-out tasks are those in neither
  support, so both share the same OOD set (as the paper and code do).

NOTE 1 (official code vs paper text): the paper describes one hypernetwork
  per generated layer. The official teacher (`chunking=False`, the default
  of the released configs) is ONE linear map from the concatenated
  indicators of all generated layers to the kernels of all generated layers,
  so a module of layer l also contributes to the other generated layers.
  Default follows the code; `layerwise_generators=True` zeroes the
  cross-layer blocks of `Theta` (one hypernetwork per layer, paper text).
NOTE 2 (official code vs paper text): the paper (C.1.1, C.2.1) speaks of
  normalised k-hot embeddings; the official hyperteacher feeds the raw 0/1
  indicators to its generator (the normalisation happens only in the
  theory setting). Default follows the code (`normalize_embeddings=False`);
  `True` divides each layer's indicators by their Euclidean norm before the
  generator. `latents` are always the raw 0/1 indicators.
NOTE 3 (paper vs official code, compositional split): the official code
  takes a random permutation of all tasks and holds out the last
  `int(N * ood_fraction)` without checking coverage; the paper (C.2.3) says
  it makes sure every module is in some training task. Here the permutation
  is redrawn (up to 1000 times) until every module is covered, else a
  ValueError.
NOTE 4 (official code): "non_compositional" holds out the tasks that use
  the last module of the LAST generated layer (`task_experts[:, -1, -1]`),
  i.e. the last entry of the flattened latent / the last row of `Theta`;
  the other layers' last modules stay in training.
NOTE 5 (official code): "disconnected" excludes tasks that mix a one-hot
  layer with a pair layer, and "connected"/"disconnected" require
  `max_active == 2` and an even `num_modules` > 4, as the official asserts.
NOTE 6 (official code, initialisation): every teacher weight (fixed kernels
  and generator `Theta`) is drawn from a normal truncated at +-2 standard
  deviations with stddev 1 (`scale = 1`, Haiku's `TruncatedNormal`, not
  rescaled to unit variance); the NTK factor 1/sqrt(fan_in) is applied in
  the forward pass. No biases (the official classification teacher has
  none). Random numbers come from numpy, so the draws differ from the
  official JAX ones.
NOTE 7 (addition): the per-task standard deviation is clamped at 1e-6 so a
  constant output unit cannot give NaN targets.
NOTE 8 (simplification): the official `continuous_combinations` option
  (random weights on the active modules) and the extra "ood_k" evaluation
  sets of k-hot tasks are not implemented (both are off / auxiliary in the
  paper's hyperteacher runs).
"""

import itertools

import numpy as np

from zoo.hypernetworks.task_batch import TaskBatch

SUPPORTS = ("compositional", "non_compositional", "connected", "disconnected")
SPLITS = ("train", "test", "ood")


# ---------------------------------------------------------------------------
# Shared helpers (also used by `teacher_student.py`).


def check_int(value, name, minimum=1, maximum=None):
    """`int(value)` after checking `minimum <= value (<= maximum)`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer, float))
        or int(value) != value
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}{upper}; got {value!r}."
        )
    return int(value)


def check_choice(value, name, choices):
    """`value` after checking it is one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")
    return value


def as_generator(rng):
    """A `np.random.Generator` from a Generator or an integer seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(
        f"`rng` must be a np.random.Generator or an integer seed; got {rng!r}."
    )


def truncated_normal(rng, shape, stddev):
    """Normal(0, stddev) truncated at +-2 stddev (not rescaled, as Haiku's
    `TruncatedNormal`), by resampling the out-of-range draws."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return stddev * values


def subset_indicators(num_modules, sizes):
    """0/1 rows for all subsets of `range(num_modules)` with a size in
    `sizes`, by size then lexicographically: (num_subsets, num_modules)."""
    rows = []
    for size in sizes:
        for subset in itertools.combinations(range(num_modules), size):
            row = np.zeros(num_modules, np.float32)
            row[list(subset)] = 1.0
            rows.append(row)
    return np.stack(rows)


def module_components(tasks, num_modules):
    """Connected components of the module co-occurrence graph.

    Nodes are the `tasks.shape[1]` modules (entries of the flattened
    indicators), joined when some task uses both. Returns a list of sorted
    tuples of node ids (modules no task uses are singletons).
    """
    tasks = np.asarray(tasks) > 0
    num_nodes = tasks.shape[1]
    parent = list(range(num_nodes))

    def root(node):
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for task in tasks:
        used = np.flatnonzero(task)
        for node in used[1:]:
            parent[root(node)] = root(used[0])
    components = {}
    for node in range(num_nodes):
        components.setdefault(root(node), []).append(node)
    return sorted(tuple(nodes) for nodes in components.values())


def rows_in(rows, reference):
    """Boolean (len(rows),): whether each row of `rows` is a row of
    `reference` (exact match)."""
    if len(reference) == 0:
        return np.zeros(len(rows), bool)
    return (rows[:, None, :] == reference[None, :, :]).all(-1).any(-1)


# ---------------------------------------------------------------------------


class Hyperteacher:
    """The hyperteacher task generator (see the module docstring).

    Args:
        input_dim: input size; inputs are drawn from U(-1, 1).
        output_dim: number of classes (teacher outputs).
        hidden_dim: teacher width.
        num_hidden_layers: teacher hidden layers; the hidden-to-hidden
            kernels are generated (with 1 hidden layer, the input kernel).
        num_modules: M, modules per generated layer.
        max_active: K, at most this many modules per layer per task.
        support: "compositional", "non_compositional", "connected" or
            "disconnected".
        ood_fraction: fraction of tasks held out by "compositional".
        temperature: softmax temperature of the targets.
        normalize_outputs: z-score each output unit per task (official).
        normalization_samples: inputs used to estimate mean / std.
        layerwise_generators: one generator per layer (NOTE 1).
        normalize_embeddings: feed unit-norm per-layer indicators to the
            generator (NOTE 2).
        seed: fixes the teacher weights, the split and the normalisation
            inputs (the teacher does not depend on `support`).

    Example:

    >>> teacher = Hyperteacher(seed=0)
    >>> teacher.train_tasks.shape, teacher.ood_tasks.shape
    ((75, 8), (25, 8))
    >>> batch = teacher.sample("ood", 3, 5, 7, np.random.default_rng(1))
    >>> batch.support_inputs.shape, batch.query_targets.shape
    ((3, 5, 16), (3, 7, 8))
    >>> bool(np.allclose(batch.query_targets.sum(-1), 1.0, atol=1e-5))
    True
    """

    loss = "kl"

    def __init__(
        self,
        input_dim=16,
        output_dim=8,
        hidden_dim=32,
        num_hidden_layers=3,
        num_modules=4,
        max_active=2,
        support="compositional",
        ood_fraction=0.25,
        temperature=0.1,
        normalize_outputs=True,
        normalization_samples=1000,
        layerwise_generators=False,
        normalize_embeddings=False,
        seed=0,
    ):
        self.input_dim = check_int(input_dim, "input_dim")
        self.output_dim = check_int(output_dim, "output_dim")
        self.hidden_dim = check_int(hidden_dim, "hidden_dim")
        self.num_hidden_layers = check_int(num_hidden_layers, "num_hidden_layers")
        self.num_modules = check_int(num_modules, "num_modules")
        self.max_active = check_int(
            max_active, "max_active", minimum=1, maximum=self.num_modules
        )
        self.support = check_choice(support, "support", SUPPORTS)
        if not 0.0 < float(ood_fraction) < 1.0:
            raise ValueError(
                f"`ood_fraction` must be in (0, 1); got {ood_fraction!r}."
            )
        self.ood_fraction = float(ood_fraction)
        if not float(temperature) > 0.0:
            raise ValueError(f"`temperature` must be > 0; got {temperature!r}.")
        self.temperature = float(temperature)
        self.normalize_outputs = bool(normalize_outputs)
        self.normalization_samples = check_int(
            normalization_samples, "normalization_samples", minimum=2
        )
        self.layerwise_generators = bool(layerwise_generators)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.seed = check_int(seed, "seed", minimum=0)
        if self.support in ("connected", "disconnected") and (
            self.max_active != 2 or self.num_modules < 6 or self.num_modules % 2
        ):
            # NOTE 5
            raise ValueError(
                f"support={self.support!r} needs `max_active` == 2 and an even "
                f"`num_modules` >= 6 (the paper uses 8); got max_active="
                f"{self.max_active}, num_modules={self.num_modules}."
            )

        self.input_shape = (self.input_dim,)
        # With one hidden layer the input kernel is generated, else the
        # hidden-to-hidden kernels are.
        self.num_generated_layers = max(self.num_hidden_layers - 1, 1)
        self.latent_dim = self.num_generated_layers * self.num_modules

        split_seed, weight_seed, normalization_seed = np.random.SeedSequence(
            self.seed
        ).spawn(3)
        self._build_teacher(np.random.default_rng(weight_seed))
        self.normalization_inputs = np.random.default_rng(
            normalization_seed
        ).uniform(-1.0, 1.0, (self.normalization_samples, self.input_dim))
        self.all_tasks = self._enumerate_tasks()
        train_mask, ood_mask = self._split(np.random.default_rng(split_seed))
        self.train_indices = np.flatnonzero(train_mask)
        self.ood_indices = np.flatnonzero(ood_mask)
        self.train_tasks = self.all_tasks[self.train_indices]
        self.ood_tasks = self.all_tasks[self.ood_indices]
        # Per-task output mean / std, filled lazily for the sampled tasks.
        self._output_mean = np.zeros((len(self.all_tasks), self.output_dim))
        self._output_std = np.ones((len(self.all_tasks), self.output_dim))
        self._has_stats = np.zeros(len(self.all_tasks), bool)
        if len(self.train_tasks) == 0 or len(self.ood_tasks) == 0:
            raise ValueError(
                f"support={self.support!r} leaves {len(self.train_tasks)} "
                f"training and {len(self.ood_tasks)} OOD tasks; both must be "
                "non-empty (raise num_modules or max_active)."
            )

    # -- construction --------------------------------------------------------

    def _build_teacher(self, rng):
        """Fixed kernels and the generator `Theta` (NOTE 6)."""
        hidden = self.hidden_dim
        generated_fan_in = self.input_dim if self.num_hidden_layers == 1 else hidden
        self.generated_kernel_shape = (generated_fan_in, hidden)
        if self.num_hidden_layers > 1:
            self.input_kernel = truncated_normal(rng, (self.input_dim, hidden), 1.0)
        else:
            self.input_kernel = None
        self.output_kernel = truncated_normal(rng, (hidden, self.output_dim), 1.0)
        layer_size = generated_fan_in * hidden
        generator = truncated_normal(
            rng, (self.latent_dim, self.num_generated_layers * layer_size), 1.0
        )
        if self.layerwise_generators:  # NOTE 1
            rows = np.arange(self.latent_dim) // self.num_modules
            columns = np.arange(generator.shape[1]) // layer_size
            generator = generator * (rows[:, None] == columns[None, :])
        self.generator = generator

    def _enumerate_tasks(self):
        """All tasks: (N, L*M) 0/1 indicators, layer-major."""
        per_layer = subset_indicators(
            self.num_modules, range(1, self.max_active + 1)
        )
        index = np.stack(
            np.meshgrid(
                *[np.arange(len(per_layer))] * self.num_generated_layers,
                indexing="ij",
            ),
            -1,
        ).reshape(-1, self.num_generated_layers)
        return per_layer[index].reshape(len(index), self.latent_dim)

    def _split(self, rng):
        """Boolean masks (train, ood) over `all_tasks`."""
        tasks = self.all_tasks
        num_tasks = len(tasks)
        layered = tasks.reshape(num_tasks, self.num_generated_layers, -1)
        if self.support == "compositional":
            num_ood = int(num_tasks * self.ood_fraction)
            if num_ood < 1:
                raise ValueError(
                    f"`ood_fraction`={self.ood_fraction} holds out no task of "
                    f"{num_tasks}; raise it."
                )
            for _ in range(1000):  # NOTE 3
                order = rng.permutation(num_tasks)
                ood_mask = np.zeros(num_tasks, bool)
                ood_mask[order[num_tasks - num_ood:]] = True
                if tasks[~ood_mask].max(0).min() > 0:
                    return ~ood_mask, ood_mask
            raise ValueError(
                f"no random split with `ood_fraction`={self.ood_fraction} keeps "
                "every module in a training task; lower `ood_fraction`."
            )
        if self.support == "non_compositional":  # NOTE 4
            ood_mask = tasks[:, -1] > 0
            return ~ood_mask, ood_mask
        # connected / disconnected (max_active == 2): NOTE 5
        modules = np.arange(self.num_modules)
        allowed = subset_indicators(self.num_modules, [1])
        for shift in (1, 2):
            pairs = np.zeros((self.num_modules, self.num_modules), np.float32)
            pairs[modules, modules] = 1.0
            pairs[modules, (modules + shift) % self.num_modules] = 1.0
            allowed = np.concatenate([allowed, pairs])
        connected = rows_in(layered.reshape(-1, self.num_modules), allowed)
        connected = connected.reshape(num_tasks, -1).all(-1)
        sizes = layered.sum(-1)
        same_size = (sizes == 1).all(-1) | (sizes == 2).all(-1)
        half = self.num_modules // 2
        in_first_half = (layered[..., half:] == 0).all((1, 2))
        in_second_half = (layered[..., :half] == 0).all((1, 2))
        disconnected = same_size & (in_first_half | in_second_half)
        train_mask = connected if self.support == "connected" else disconnected
        return train_mask, ~(connected | disconnected)

    # -- the teacher ---------------------------------------------------------

    def generated_kernels(self, latents):
        """Generated kernels (T, L, fan_in, hidden_dim) for task indicators
        `latents` (T, L*M)."""
        latents = np.asarray(latents, np.float64)
        embeddings = latents
        if self.normalize_embeddings:  # NOTE 2
            layered = latents.reshape(len(latents), self.num_generated_layers, -1)
            norms = np.linalg.norm(layered, axis=-1, keepdims=True)
            embeddings = (layered / np.maximum(norms, 1e-12)).reshape(latents.shape)
        flat = embeddings @ self.generator
        return flat.reshape(
            (len(latents), self.num_generated_layers) + self.generated_kernel_shape
        )

    def teacher_outputs(self, latents, inputs):
        """Raw teacher outputs (T, n, output_dim) for task indicators
        `latents` (T, L*M) and `inputs` (T, n, input_dim) or (n, input_dim)
        (the same inputs for every task)."""
        kernels = self.generated_kernels(latents)
        hidden = np.asarray(inputs, np.float64)
        if hidden.ndim == 2:
            hidden = np.broadcast_to(hidden, (len(kernels),) + hidden.shape)
        if self.input_kernel is not None:
            hidden = np.maximum(hidden @ self.input_kernel / np.sqrt(self.input_dim), 0)
        for layer in range(self.num_generated_layers):
            fan_in = hidden.shape[-1]
            hidden = np.maximum(hidden @ kernels[:, layer] / np.sqrt(fan_in), 0)
        return hidden @ self.output_kernel / np.sqrt(self.hidden_dim)

    def output_statistics(self, latents):
        """Mean and std (T, 1, output_dim) of each output unit over the
        fixed normalisation inputs, per task (std clamped, NOTE 7)."""
        reference = self.teacher_outputs(latents, self.normalization_inputs)
        mean = reference.mean(1, keepdims=True)
        std = np.maximum(reference.std(1, keepdims=True), 1e-6)
        return mean, std

    def _task_statistics(self, task_indices):
        """`output_statistics` of rows of `all_tasks`, cached."""
        missing = np.unique(task_indices[~self._has_stats[task_indices]])
        if len(missing):
            mean, std = self.output_statistics(self.all_tasks[missing])
            self._output_mean[missing] = mean[:, 0]
            self._output_std[missing] = std[:, 0]
            self._has_stats[missing] = True
        return (
            self._output_mean[task_indices][:, None],
            self._output_std[task_indices][:, None],
        )

    def teacher_logits(self, latents, inputs, statistics=None):
        """Per-task z-scored outputs (before the temperature); `statistics`
        is a precomputed `output_statistics(latents)`."""
        outputs = self.teacher_outputs(latents, inputs)
        if self.normalize_outputs:
            mean, std = (
                self.output_statistics(latents) if statistics is None else statistics
            )
            outputs = (outputs - mean) / std
        return outputs

    def targets(self, latents, inputs, statistics=None):
        """Soft targets softmax(logits / temperature): (T, n, output_dim)."""
        scaled = self.teacher_logits(latents, inputs, statistics) / self.temperature
        scaled = scaled - scaled.max(-1, keepdims=True)
        probabilities = np.exp(scaled)
        return probabilities / probabilities.sum(-1, keepdims=True)

    # -- sampling ------------------------------------------------------------

    def sample(self, split, num_tasks, support_shots, query_shots, rng):
        """A meta-batch of `num_tasks` tasks drawn uniformly (with
        replacement) from the training tasks ("train", "test") or the
        held-out tasks ("ood").

        Args:
            split: "train", "test" or "ood".
            num_tasks, support_shots, query_shots: positive integers.
            rng: a `np.random.Generator` (or an integer seed).

        Returns:
            `TaskBatch` with inputs (T, n, input_dim), soft targets
            (T, n, output_dim) float32, no masks, and `latents` (T, L*M) the
            0/1 module indicators.
        """
        check_choice(split, "split", SPLITS)
        num_tasks = check_int(num_tasks, "num_tasks")
        support_shots = check_int(support_shots, "support_shots")
        query_shots = check_int(query_shots, "query_shots")
        rng = as_generator(rng)
        pool = self.ood_indices if split == "ood" else self.train_indices
        task_indices = pool[rng.integers(len(pool), size=num_tasks)]
        latents = self.all_tasks[task_indices]
        inputs = rng.uniform(
            -1.0, 1.0, (num_tasks, support_shots + query_shots, self.input_dim)
        )
        statistics = self._task_statistics(task_indices) if self.normalize_outputs else None
        targets = self.targets(latents, inputs, statistics)
        inputs = inputs.astype(np.float32)
        targets = targets.astype(np.float32)
        return TaskBatch(
            support_inputs=inputs[:, :support_shots],
            support_targets=targets[:, :support_shots],
            query_inputs=inputs[:, support_shots:],
            query_targets=targets[:, support_shots:],
            latents=latents.astype(np.float32),
        )
