"""The two compositional grid worlds of modular hypernetworks (imitation).

Paper: S. Schug, S. Kobayashi, Y. Akram, M. Wolczyk, A. Proca, J. von
Oswald, R. Pascanu, J. Sacramento, A. Steger. "Discovering modular solutions
that generalize compositionally", ICLR 2024 (arXiv:2312.15001), Section 5.2
and Appendix C (../shared/papers/modular-hypernetworks-compositional-
generalization.txt). Authors' code: github.com/smonsays/modular-hyperteacher
(`metax/data/envs/preference.py`, `metax/data/envs/grid.py`,
`metax/data/imitation.py`, configs `configs/preference_grid.py` and
`configs/compositional_grid.py`, whose values are the defaults here).

Both worlds are few-shot imitation problems: a task is a composition of
modules, each example of a task is one state of an expert demonstration,
and a meta-learner must infer the task from a support set of demonstrations
and predict the expert on a query set. Tasks are split once (from `seed`)
into training tasks and held-out (OOD) compositions; every module stays in
training, so OOD tasks are new combinations of known parts.

`PreferencesGridWorld` (compositional preferences, Q-value regression)
----------------------------------------------------------------------
A fixed 7 x 7 room layout (walls on the border and two inner walls, 19 free
cells) holds `num_objects` = 4 objects, each of one of `num_colours` = 8
colours (drawn uniformly, with replacement), and the agent, all on distinct
free cells drawn per demonstration. A task chooses 1..K (K = `max_active`
= 3) of `num_preferences` = 8 preference vectors `B_p` (rows of a seeded
standard-normal matrix B of shape (8, 8), one value per colour) with weights
`w` (k-hot, or with `continuous_combinations=True` as in the authors'
config: `w_p = 0.5 + 0.5 * x_p / (1 + sum_q x_q)`, `x ~ Exp(1)`, on the
chosen p). Collecting an object of colour c gives reward

    r(c) = sum_p w_p B[p, c]          (colour_rewards = w @ B)

Actions (authors' order): 0 stay, 1 up, 2 right, 3 down, 4 left. A move
into a wall keeps the agent in place; entering (or staying on) a cell with
a still-available object collects it. The state is (agent cell, which
objects are still available): 19 * 2**4 = 304 states. Optimal Q-values come
from H = `horizon` = 8 finite-horizon Bellman backups with discount
gamma = 0.9, vectorised over all states, actions and demonstrations:

    Q_0 = 0,   Q_h(s, a) = r(s, a) + gamma * max_a' Q_{h-1}(s', a'),
    target = Q_H.

A demonstration follows the greedy policy argmax_a Q_H for H steps; it ends
(mask 0 afterwards) once "stay" is chosen (the state that chose it still
counts). Each example is (observation, Q_H(state)); `loss = "mse"` (masked).
The 8 + 28 + 56 = 92 combinations of 1..3 preferences are split 75/25
(69 training, 23 OOD). Latents: the preference weights w (8-dim).

`GoalsGridWorld` (compositional goals, behaviour cloning)
---------------------------------------------------------
An 11 x 11 grid; a goal = (quadrant of the goal cell in 4, interaction in 2,
maze in 5, object in 5): 4 * 2 * 5 * 5 = 200 goals, 150 training, 50 OOD.
Mazes come from the classic random-maze algorithm (walls grown by random
walks of step 2 from random even lattice points; complexity 0.75, density
0.75) seeded with `seed + maze_index`, as in the authors' code. Per
demonstration the goal object sits on a free cell of the goal quadrant, the
agent starts on a cell at BFS distance >= grid_size from it, and
`num_distractors` = 4 objects of other kinds lie on other free cells.
Actions: 0 up, 1 right, 2 down, 3 left, 4 + i interaction i. The expert
walks a shortest path (BFS distances per maze, all cell pairs, computed
once at set-up) and performs the task's interaction on the goal cell:
d moves + 1 interaction = d + 1 valid steps, then padding (mask 0).
`loss = "sparse_categorical_crossentropy"` (int labels, masked). Latents:
concatenated one-hots of (quadrant, interaction, maze, object), 16-dim.

Observations (both worlds, as in the authors' `observe`), flattened
(the authors' MLPs flatten first): a one-hot grid (rows, cols, channels),

    preferences: channels [colour 0..C-1 (1 where an available object of
                 that colour lies), agent, wall]         -> 7*7*10 = 490
    goals:       channels [object 0..O-1, wall, agent]    -> 11*11*7 = 847

Support / query sets (as in the authors' `ImitationMetaDataloader`): each
shot is one fresh demonstration of the task (new random placement), all of
its steps are examples, padded to a fixed length with a mask; so
`support_shots` / `query_shots` count demonstrations and
n_support = support_shots * demo_length.

NOTE 1 (hold-out split): the split is drawn with numpy from `seed` (the
  authors permute with jax), and redrawn until every module value (each
  preference vector; each quadrant, interaction, maze and object) occurs in
  a training task. The authors only assert this for the goals world.
NOTE 2 (goals, placement): distractors lie on free cells other than the
  goal cell and the agent's start (the authors' may overlap them), and the
  agent starts only on cells from which the goal is reachable (the
  authors' `distance >= grid_size` also admits unreachable cells, which
  their path code cannot handle; the maze generator keeps free space
  connected, so this only guards other seeds/sizes). Goal cells are the
  free quadrant cells that have at least one such start cell.
NOTE 3 (goals, padding): demonstrations are padded to `demo_length` = the
  longest valid demonstration any maze allows (max BFS distance + 1), not
  to grid_size**2 - 1 = 120 steps; the masked mean loss is the same.
NOTE 4 (goals, ties): among equally short paths the expert takes the first
  reducing move in the order up, right, down, left (the authors: scipy's
  predecessor matrix).
NOTE 5 (goals, latents): concatenated one-hots (4 + 2 + 5 + 5 = 16)
  instead of the authors' (4, 5) array of zero-padded one-hots.
"""

import itertools

import numpy as np

from zoo.hypernetworks.hyperteacher import SPLITS, check_choice, check_int
from zoo.hypernetworks.task_batch import TaskBatch


#: The authors' 7 x 7 preference room ("w" wall, " " free).
PREFERENCES_LAYOUT = (
    "wwwwwww\n"
    "w  w  w\n"
    "w  w  w\n"
    "ww   ww\n"
    "w  w  w\n"
    "w  w  w\n"
    "wwwwwww"
)

#: (row, col) offsets of the four moves up, right, down, left.
MOVE_OFFSETS = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])


def _check_fraction(value, name):
    if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1); got {value!r}.")
    return float(value)


def _check_sample_args(split, num_tasks, support_shots, query_shots, rng):
    check_choice(split, "split", SPLITS)
    check_int(num_tasks, "num_tasks")
    check_int(support_shots, "support_shots")
    check_int(query_shots, "query_shots")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"`rng` must be a np.random.Generator; got {type(rng).__name__}."
        )


def _choose_in_rows(rng, allowed):
    """One index per row of the boolean `allowed` (rows, n), uniformly among
    its True entries (every row must have one)."""
    keys = np.where(allowed, rng.random(allowed.shape), -1.0)
    return np.argmax(keys, axis=-1)


def _choose_distinct_in_rows(rng, allowed, count):
    """`count` distinct indices per row, uniformly among the True entries."""
    keys = np.where(allowed, rng.random(allowed.shape), 2.0)
    return np.argsort(keys, axis=-1)[:, :count]


def _split_tasks(tasks, ood_fraction, seed, covers_all_values):
    """Random (training, held-out) split of the rows of `tasks`, redrawn
    until `covers_all_values(training_tasks)`; deterministic from `seed`."""
    num_ood = int(len(tasks) * ood_fraction)
    if num_ood < 1 or num_ood >= len(tasks):
        raise ValueError(
            f"`ood_fraction`={ood_fraction} holds out {num_ood} of {len(tasks)} "
            "tasks; it must hold out at least one and keep at least one."
        )
    rng = np.random.default_rng(seed)
    for _ in range(1000):  # NOTE 1
        order = rng.permutation(len(tasks))
        train, ood = tasks[order[:-num_ood]], tasks[order[-num_ood:]]
        if covers_all_values(train):
            return train, ood
    raise ValueError(
        f"No split with `ood_fraction`={ood_fraction} keeps every module value "
        "in the training tasks; lower `ood_fraction`."
    )


def _parse_layout(layout):
    rows = layout.strip("\n").split("\n")
    if len({len(row) for row in rows}) != 1 or set("".join(rows)) - {"w", " "}:
        raise ValueError(
            "`layout` must be equal-length lines of 'w' (wall) and ' ' (free); "
            f"got {layout!r}."
        )
    return np.array([[char == "w" for char in row] for row in rows])


class PreferencesGridWorld:
    """Compositional preferences: regress the optimal Q-values of a task.

    See the module docstring for the rules. `train_tasks` / `ood_tasks` are
    k-hot preference indicators (float32, (num_tasks, num_preferences)).

    Args:
        num_preferences: number of preference vectors (modules), default 8.
        num_colours: number of object colours (values per preference), 8.
        num_objects: objects placed per demonstration, default 4.
        max_active: K, at most this many preferences per task, default 3.
        continuous_combinations: random weights in [0.5, 1] on the chosen
            preferences (authors' config, default) instead of weights 1.
        discount: gamma, default 0.9.
        horizon: H, Bellman backups and demonstration length, default 8.
        ood_fraction: share of combinations held out, default 0.25.
        layout: the room, lines of "w" (wall) and " " (free); cells outside
            the grid count as walls. Default the authors' 7 x 7 room.
        seed: seeds the preference vectors and the hold-out split.

    Example:
    >>> world = PreferencesGridWorld(seed=0)
    >>> world.train_tasks.shape, world.ood_tasks.shape, world.input_shape
    ((69, 8), (23, 8), (490,))
    >>> batch = world.sample("ood", 2, 3, 1, np.random.default_rng(0))
    >>> batch.support_inputs.shape, batch.support_targets.shape
    ((2, 24, 490), (2, 24, 5))
    >>> batch.query_mask.shape, batch.latents.shape, world.loss
    ((2, 8), (2, 8), 'mse')
    """

    num_actions = 5
    loss = "mse"

    def __init__(
        self,
        num_preferences=8,
        num_colours=8,
        num_objects=4,
        max_active=3,
        continuous_combinations=True,
        discount=0.9,
        horizon=8,
        ood_fraction=0.25,
        layout=PREFERENCES_LAYOUT,
        seed=0,
    ):
        self.num_preferences = check_int(num_preferences, "num_preferences", 2)
        self.num_colours = check_int(num_colours, "num_colours")
        self.max_active = check_int(
            max_active, "max_active", 1, self.num_preferences
        )
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"`discount` must be in [0, 1]; got {discount!r}.")
        self.discount = float(discount)
        self.horizon = check_int(horizon, "horizon")
        self.ood_fraction = _check_fraction(ood_fraction, "ood_fraction")
        self.continuous_combinations = bool(continuous_combinations)
        self.seed = seed

        self.walls = _parse_layout(layout)
        self.free_cells = np.argwhere(~self.walls)  # (F, 2) row, col
        num_free = len(self.free_cells)
        self.num_objects = check_int(
            num_objects, "num_objects", 1, min(num_free - 1, 10)
        )
        # _move_cells[f, a]: free-cell index after action a from free cell f
        # (a = 0 stays; a move into a wall or off the grid stays too).
        num_rows, num_cols = self.walls.shape
        cell_index = np.full(self.walls.shape, -1)
        cell_index[tuple(self.free_cells.T)] = np.arange(num_free)
        rows = self.free_cells[:, :1] + MOVE_OFFSETS[:, 0]
        cols = self.free_cells[:, 1:] + MOVE_OFFSETS[:, 1]
        inside = (rows >= 0) & (rows < num_rows) & (cols >= 0) & (cols < num_cols)
        target = cell_index[rows.clip(0, num_rows - 1), cols.clip(0, num_cols - 1)]
        stay = np.arange(num_free)[:, None]
        self._move_cells = np.concatenate(
            [stay, np.where(inside & (target >= 0), target, stay)], axis=1
        )

        rng = np.random.default_rng(seed)
        self.preference_basis = rng.standard_normal(
            (self.num_preferences, self.num_colours)
        )
        combinations = [
            indices
            for count in range(1, self.max_active + 1)
            for indices in itertools.combinations(range(self.num_preferences), count)
        ]
        all_tasks = np.zeros((len(combinations), self.num_preferences), np.float32)
        for row, indices in enumerate(combinations):
            all_tasks[row, list(indices)] = 1.0
        self.train_tasks, self.ood_tasks = _split_tasks(
            all_tasks, self.ood_fraction, seed + 1, lambda train: train.any(0).all()
        )

    @property
    def input_shape(self):
        return (self.walls.size * (self.num_colours + 2),)

    @property
    def output_dim(self):
        return self.num_actions

    @property
    def latent_dim(self):
        return self.num_preferences

    def colour_rewards(self, preference_weights):
        """Reward per colour, `w @ B`: (n, num_preferences) -> (n, num_colours)."""
        return np.asarray(preference_weights, np.float64) @ self.preference_basis

    def preference_weights(self, tasks, rng):
        """The weights of k-hot `tasks` (n, P): the k-hot itself, or, with
        `continuous_combinations`, random weights in [0.5, 1] on its ones."""
        tasks = np.asarray(tasks, np.float64)
        if not self.continuous_combinations:
            return tasks
        draws = rng.exponential(size=tasks.shape) * tasks
        draws = draws / (draws.sum(-1, keepdims=True) + 1.0)
        return (0.5 * draws + 0.5) * tasks

    def q_values(self, object_cells, object_colours, colour_rewards, horizon=None):
        """Finite-horizon optimal Q-values of every state of `n` placements.

        Args:
            object_cells: int (n, num_objects), distinct indices into
                `free_cells`.
            object_colours: int (n, num_objects).
            colour_rewards: float (n, num_colours), see `colour_rewards`.
            horizon: backups to run, default `self.horizon`.

        Returns:
            float32 (n, num_free_cells, 2**num_objects, 5): Q[e, cell, bits,
            action], bit o of `bits` set while object o is available.

        Example:
        >>> world = PreferencesGridWorld(layout="   ", num_objects=1, num_colours=1)
        >>> q = world.q_values([[2]], [[0]], [[1.0]])  # object 2 cells right
        >>> np.round(q[0, 0, 1].astype(float), 3).tolist()  # stay up right down left
        [0.81, 0.81, 0.9, 0.81, 0.81]
        """
        horizon = self.horizon if horizon is None else check_int(horizon, "horizon")
        reward, next_state = self._transitions(
            object_cells, object_colours, colour_rewards
        )
        # Action-major layout (A, n*F*B): the max over actions is an
        # elementwise maximum of contiguous rows (max(-1) over 5 is slow).
        values = np.zeros(next_state.shape[1], np.float32)
        q = np.zeros(reward.shape, np.float32)
        for _ in range(horizon):  # Q_h = r + gamma * max_a' Q_{h-1}(s', a')
            q = reward + np.float32(self.discount) * np.take(values, next_state)
            values = np.max(q, axis=0)
        num_envs = len(np.asarray(object_cells))
        q = q.reshape(self.num_actions, num_envs, len(self.free_cells), -1)
        return np.moveaxis(q, 0, -1)

    def _transitions(self, object_cells, object_colours, colour_rewards):
        """Rewards (float32) and flat next-state indices (intp) of every
        (action, state), both (A, n * F * 2**O), states ordered (n, F, B)."""
        object_cells = np.asarray(object_cells)
        object_colours = np.asarray(object_colours)
        colour_rewards = np.asarray(colour_rewards, np.float32)
        num_envs, num_free = len(object_cells), len(self.free_cells)
        if object_cells.shape != (num_envs, self.num_objects) or (
            object_colours.shape != object_cells.shape
        ):
            raise ValueError(
                f"`object_cells` and `object_colours` must have shape (n, "
                f"{self.num_objects}); got {object_cells.shape}, "
                f"{object_colours.shape}."
            )
        if colour_rewards.shape != (num_envs, self.num_colours):
            raise ValueError(
                f"`colour_rewards` must have shape ({num_envs}, {self.num_colours}); "
                f"got {colour_rewards.shape}."
            )
        if np.any(np.diff(np.sort(object_cells, axis=1), axis=1) == 0):
            raise ValueError("`object_cells` must be distinct within each row.")
        rows = np.arange(num_envs)[:, None]
        num_bits = 2**self.num_objects
        # per (env, cell): the bit and the reward of the object lying there
        cell_bit = np.zeros((num_envs, num_free), np.intp)
        cell_bit[rows, object_cells] = 1 << np.arange(self.num_objects)
        cell_reward = np.zeros((num_envs, num_free), np.float32)
        cell_reward[rows, object_cells] = colour_rewards[rows, object_colours]

        # (A, n, F, 1): what lies on the cell each action leads to
        landing_cell = self._move_cells.T[:, None, :, None]
        landing_bit = np.moveaxis(cell_bit[:, self._move_cells.T], 1, 0)[..., None]
        landing_reward = np.moveaxis(
            cell_reward[:, self._move_cells.T], 1, 0
        )[..., None]
        bits = np.arange(num_bits)  # (B,)
        collected = (bits & landing_bit) != 0  # (A, n, F, B)
        reward = collected * landing_reward
        next_state = (
            (rows[None, :, :, None] * num_free + landing_cell) * num_bits
            + (bits & ~landing_bit)
        )
        shape = (self.num_actions, -1)
        return reward.reshape(shape), next_state.reshape(shape)

    def demonstrate(self, object_cells, object_colours, agent_cells, colour_rewards):
        """Greedy optimal demonstrations of `horizon` steps.

        Args: as `q_values`, plus `agent_cells` int (n,) (free-cell indices).

        Returns:
            observations float32 (n, horizon, *input_shape), q_values
            float32 (n, horizon, 5) (Q_H of each visited state), mask
            float32 (n, horizon) (1 up to and including the step that
            chose "stay").
        """
        object_cells = np.asarray(object_cells)
        object_colours = np.asarray(object_colours)
        agent_cells = np.asarray(agent_cells)
        q = self.q_values(object_cells, object_colours, colour_rewards)
        num_envs = len(object_cells)
        envs = np.arange(num_envs)
        bits = np.full(num_envs, 2**self.num_objects - 1)
        done = np.zeros(num_envs, bool)
        visited_cells, visited_bits, targets, mask = [], [], [], []
        for _ in range(self.horizon):
            visited_cells.append(agent_cells)
            visited_bits.append(bits)
            mask.append(~done)
            state_q = q[envs, agent_cells, bits]
            targets.append(state_q)
            action = np.argmax(state_q, axis=-1)
            next_cells = self._move_cells[agent_cells, action]
            landing = object_cells == next_cells[:, None]
            available = (bits[:, None] >> np.arange(self.num_objects)) & 1
            collected_bits = (landing * available) @ (1 << np.arange(self.num_objects))
            # after "stay" the episode is over: the state no longer changes
            agent_cells = np.where(done, agent_cells, next_cells)
            bits = np.where(done, bits, bits & ~collected_bits)
            done = done | (action == 0)
        observations = self.observe(
            np.stack(visited_cells, 1), np.stack(visited_bits, 1),
            object_cells, object_colours,
        )
        return (
            observations,
            np.stack(targets, 1).astype(np.float32),
            np.stack(mask, 1).astype(np.float32),
        )

    def observe(self, agent_cells, available_bits, object_cells, object_colours):
        """Flattened one-hot grids, float32 (n, steps, *input_shape), of
        agent cells / availability bits (n, steps) and objects (n, O)."""
        num_envs, num_steps = agent_cells.shape
        grid = np.zeros(
            (num_envs, num_steps, *self.walls.shape, self.num_colours + 2), np.float32
        )
        env = np.arange(num_envs)[:, None, None]
        step = np.arange(num_steps)[None, :, None]
        object_rc = self.free_cells[object_cells]  # (n, O, 2)
        available = (available_bits[..., None] >> np.arange(self.num_objects)) & 1
        grid[env, step, object_rc[:, None, :, 0], object_rc[:, None, :, 1],
             object_colours[:, None, :]] = available
        agent_rc = self.free_cells[agent_cells]
        grid[env[..., 0], step[..., 0], agent_rc[..., 0], agent_rc[..., 1], -2] = 1.0
        grid[..., -1] = self.walls
        return grid.reshape(num_envs, num_steps, -1)

    def sample(self, split, num_tasks, support_shots, query_shots, rng):
        """A meta-batch of tasks; each shot is one demonstration of `horizon`
        steps with a fresh random placement of the objects and the agent.

        Args:
            split: "train" or "test" (training combinations) or "ood".
            num_tasks: tasks in the batch (drawn with replacement).
            support_shots, query_shots: demonstrations per set (authors: 16).
            rng: a np.random.Generator.

        Returns:
            TaskBatch: inputs (T, shots * horizon, input_dim), Q-value
            targets (T, shots * horizon, 5), masks, latents = weights (T, P).
        """
        _check_sample_args(split, num_tasks, support_shots, query_shots, rng)
        pool = self.ood_tasks if split == "ood" else self.train_tasks
        tasks = pool[rng.integers(len(pool), size=num_tasks)]
        weights = self.preference_weights(tasks, rng)
        shots = support_shots + query_shots
        num_envs = num_tasks * shots
        cells = _choose_distinct_in_rows(
            rng, np.ones((num_envs, len(self.free_cells)), bool), self.num_objects + 1
        )
        colours = rng.integers(self.num_colours, size=(num_envs, self.num_objects))
        rewards = np.repeat(self.colour_rewards(weights), shots, axis=0)
        observations, q_targets, mask = self.demonstrate(
            cells[:, :-1], colours, cells[:, -1], rewards
        )
        return _split_shots(
            observations, q_targets, mask, num_tasks, support_shots,
            weights.astype(np.float32),
        )


def _split_shots(inputs, targets, mask, num_tasks, support_shots, latents):
    """(T * shots, L, ...) demonstrations -> TaskBatch of flattened shots."""
    def per_task(array, first, last):
        array = array.reshape(num_tasks, -1, *array.shape[1:])[:, first:last]
        return array.reshape(num_tasks, -1, *array.shape[3:])

    def both(array):
        return per_task(array, 0, support_shots), per_task(array, support_shots, None)

    (support_inputs, query_inputs), (support_targets, query_targets) = (
        both(inputs), both(targets)
    )
    support_mask, query_mask = both(mask)
    return TaskBatch(
        support_inputs, support_targets, query_inputs, query_targets,
        support_mask, query_mask, latents,
    )


def generate_maze(size, seed, complexity=0.75, density=0.75):
    """A random maze (bool (size, size), True = wall) from the classic
    algorithm the authors use: on a grid padded by a wall border, random
    walks of step 2 from random even lattice points lay walls into empty
    cells only, so walls form trees hanging off the border and the free
    cells stay connected. `size` must be odd.

    >>> generate_maze(7, seed=0).shape
    (7, 7)
    """
    if size % 2 != 1:
        raise ValueError(f"`size` must be odd; got {size}.")
    rng = np.random.default_rng(seed)
    padded = size + 2
    walls = np.zeros((padded, padded), bool)
    walls[[0, -1], :] = walls[:, [0, -1]] = True
    walk_length = int(complexity * 10 * padded)
    num_walks = int(density * (padded // 2) ** 2)
    for _ in range(num_walks):
        col = 2 * int(rng.integers(0, padded // 2 + 1))
        row = 2 * int(rng.integers(0, padded // 2 + 1))
        walls[row, col] = True
        for _ in range(walk_length):
            steps = [
                (row, col + delta_col)
                for delta_col, ok in ((-2, col > 1), (2, col < padded - 2))
                if ok
            ] + [
                (row + delta_row, col)
                for delta_row, ok in ((-2, row > 1), (2, row < padded - 2))
                if ok
            ]
            next_row, next_col = steps[int(rng.integers(0, len(steps)))]
            if not walls[next_row, next_col]:
                walls[next_row, next_col] = True
                walls[(row + next_row) // 2, (col + next_col) // 2] = True
                row, col = next_row, next_col
    return walls[1:-1, 1:-1]


def bfs_distances(walls):
    """All-pairs shortest-path lengths (4-neighbour moves) of a grid.

    Args:
        walls: bool (rows, cols), True = wall.

    Returns:
        int32 (cells, cells), cells = rows * cols in row-major order;
        -1 where either cell is a wall or the pair is disconnected.

    >>> bfs_distances(np.array([[False, False, True]]))
    array([[ 0,  1, -1],
           [ 1,  0, -1],
           [-1, -1, -1]], dtype=int32)
    """
    walls = np.asarray(walls, bool)
    num_rows, num_cols = walls.shape
    free = ~walls.ravel()
    cells = np.arange(walls.size)
    row, col = np.divmod(cells, num_cols)
    adjacency = np.zeros((walls.size, walls.size), np.float32)
    for delta_row, delta_col in MOVE_OFFSETS:
        next_row, next_col = row + delta_row, col + delta_col
        inside = (next_row >= 0) & (next_row < num_rows)
        inside &= (next_col >= 0) & (next_col < num_cols)
        neighbour = next_row.clip(0, num_rows - 1) * num_cols + next_col.clip(
            0, num_cols - 1
        )
        ok = inside & free & free[neighbour]
        adjacency[cells[ok], neighbour[ok]] = 1.0
    distances = np.where(np.diag(free), 0, -1).astype(np.int32)
    reached = distances == 0
    frontier = reached.astype(np.float32)
    step = 0
    while frontier.any():  # one BFS layer for every source at once
        step += 1
        new = ((frontier @ adjacency) > 0) & ~reached
        distances[new] = step
        reached |= new
        frontier = new.astype(np.float32)
    return distances


class GoalsGridWorld:
    """Compositional goals: imitate the expert's action in maze navigation.

    See the module docstring for the rules. `train_tasks` / `ood_tasks` are
    int32 (num_tasks, 4) factor values (quadrant, interaction, maze, object).

    Args:
        grid_size: side of the (odd) grid, default 11.
        num_mazes, num_objects, num_interactions: factor sizes, 5 / 5 / 2
            (the quadrant factor has 4 values).
        num_distractors: other objects per demonstration, default 4.
        ood_fraction: share of goals held out, default 0.25.
        seed: seeds the mazes (`seed + maze`) and the hold-out split.

    Attributes (beyond the common API): `mazes` bool (M, G, G); `distances`
    int32 (M, G*G, G*G) BFS distances (-1: wall / unreachable);
    `optimal_moves` int8 (M, G*G, G*G): the expert's move from a cell
    towards a goal cell (-1 at the goal); `demo_length`.

    Example:
    >>> world = GoalsGridWorld(seed=0)
    >>> world.train_tasks.shape, world.ood_tasks.shape, world.input_shape
    ((150, 4), (50, 4), (847,))
    >>> batch = world.sample("train", 2, 1, 1, np.random.default_rng(0))
    >>> batch.support_inputs.shape == (2, world.demo_length, 847)
    True
    >>> batch.support_targets.dtype, batch.latents.shape, world.output_dim
    (dtype('int32'), (2, 16), 6)
    """

    num_quadrants = 4
    loss = "sparse_categorical_crossentropy"

    def __init__(
        self,
        grid_size=11,
        num_mazes=5,
        num_objects=5,
        num_interactions=2,
        num_distractors=4,
        ood_fraction=0.25,
        seed=0,
    ):
        self.grid_size = check_int(grid_size, "grid_size", 7)
        if grid_size % 2 != 1:
            raise ValueError(f"`grid_size` must be odd; got {grid_size}.")
        self.num_mazes = check_int(num_mazes, "num_mazes")
        self.num_objects = check_int(num_objects, "num_objects", 2)
        self.num_interactions = check_int(num_interactions, "num_interactions")
        self.num_distractors = check_int(num_distractors, "num_distractors", 0)
        self.ood_fraction = _check_fraction(ood_fraction, "ood_fraction")
        self.seed = seed
        self.factor_sizes = (
            self.num_quadrants, self.num_interactions, self.num_mazes, self.num_objects
        )

        all_tasks = np.array(
            list(itertools.product(*map(range, self.factor_sizes))), np.int32
        )
        self.train_tasks, self.ood_tasks = _split_tasks(
            all_tasks, self.ood_fraction, seed,
            lambda train: all(
                len(np.unique(train[:, factor])) == size
                for factor, size in enumerate(self.factor_sizes)
            ),
        )

        size = self.grid_size
        self.mazes = np.stack(
            [generate_maze(size, seed + maze) for maze in range(self.num_mazes)]
        )
        self.distances = np.stack([bfs_distances(maze) for maze in self.mazes])
        cells = np.arange(size * size)
        row, col = np.divmod(cells, size)
        # _move_cells[m, cell, a]: the cell after move a (walls/border: stay)
        next_row = row[:, None] + MOVE_OFFSETS[:, 0]
        next_col = col[:, None] + MOVE_OFFSETS[:, 1]
        inside = (next_row >= 0) & (next_row < size)
        inside &= (next_col >= 0) & (next_col < size)
        target = next_row.clip(0, size - 1) * size + next_col.clip(0, size - 1)
        blocked = ~inside[None] | self.mazes.reshape(self.num_mazes, -1)[:, target]
        self._move_cells = np.where(blocked, cells[None, :, None], target[None])
        # the expert's move: the first one that gets one step closer (NOTE 4)
        distance_after = self.distances[
            np.arange(self.num_mazes)[:, None, None], self._move_cells
        ]  # (M, cell, move, goal)
        closer = (distance_after == self.distances[:, :, None, :] - 1) & (
            self.distances[:, :, None, :] > 0
        )
        self.optimal_moves = np.where(
            closer.any(2), np.argmax(closer, axis=2), -1
        ).astype(np.int8)

        # valid starts: reachable and at least grid_size steps away (NOTE 2)
        self._start_ok = self.distances >= size  # (M, start, goal)
        quadrant_rows = np.where(row < (size + 1) // 2, 0, 2)
        quadrant = quadrant_rows + np.where(col < (size + 1) // 2, 0, 1)
        self._goal_ok = (
            (quadrant[None, None, :] == np.arange(4)[None, :, None])
            & self._start_ok.any(1)[:, None, :]
        )  # (M, quadrant, cell)
        if not self._goal_ok.any(-1).all():
            raise ValueError(
                f"Some maze (seed {seed}) has a quadrant without a goal cell "
                f"{size} steps from a start; choose another `seed`."
            )
        free_cells = (~self.mazes).reshape(self.num_mazes, -1).sum(-1)
        if free_cells.min() < self.num_distractors + 2:
            raise ValueError(
                f"`num_distractors`={num_distractors} does not fit the mazes."
            )
        goal_ok_any = self._goal_ok.any(1)
        self.demo_length = int(  # NOTE 3
            np.where(self._start_ok & goal_ok_any[:, None, :], self.distances, 0).max()
            + 1
        )

    @property
    def input_shape(self):
        return (self.grid_size**2 * (self.num_objects + 2),)

    @property
    def output_dim(self):
        return 4 + self.num_interactions

    @property
    def latent_dim(self):
        return sum(self.factor_sizes)

    def latents(self, tasks):
        """Concatenated one-hots of the factors of `tasks` (n, 4) (NOTE 5)."""
        tasks = np.asarray(tasks)
        return np.concatenate(
            [np.eye(size, dtype=np.float32)[tasks[:, factor]]
             for factor, size in enumerate(self.factor_sizes)],
            axis=1,
        )

    def demonstrate(self, tasks, goal_cells, agent_cells, distractor_objects,
                    distractor_cells):
        """Expert demonstrations padded to `demo_length` steps.

        Args:
            tasks: int (n, 4) factor values; goal_cells, agent_cells: int
                (n,) flat cell indices (row * grid_size + col);
                distractor_objects, distractor_cells: int (n, num_distractors).

        Returns:
            observations float32 (n, demo_length, *input_shape), actions
            int32 (n, demo_length), mask float32 (n, demo_length) (1 for
            the d moves and the final interaction).
        """
        tasks = np.asarray(tasks)
        _, interaction, maze, goal_object = tasks.T
        goal_cells, cells = np.asarray(goal_cells), np.asarray(agent_cells)
        num_demos, size = len(tasks), self.grid_size
        done = np.zeros(num_demos, bool)
        visited, actions, mask = [], [], []
        for _ in range(self.demo_length):
            visited.append(cells)
            mask.append(~done)
            at_goal = cells == goal_cells
            move = self.optimal_moves[maze, cells, goal_cells].astype(np.int64)
            actions.append(np.where(at_goal, 4 + interaction, move))
            moved = self._move_cells[maze, cells, move.clip(0)]
            cells = np.where(at_goal, cells, moved)
            done |= at_goal

        channels = self.num_objects + 2
        static = np.zeros((num_demos, size * size, channels), np.float32)
        demo = np.arange(num_demos)[:, None]
        object_cells = np.concatenate([goal_cells[:, None], distractor_cells], 1)
        objects = np.concatenate([goal_object[:, None], distractor_objects], 1)
        static[demo, object_cells, objects] = 1.0
        static[..., -2] = self.mazes.reshape(self.num_mazes, -1)[maze]
        grid = np.repeat(static[:, None], self.demo_length, axis=1)
        grid[demo, np.arange(self.demo_length)[None], np.stack(visited, 1), -1] = 1.0
        return (
            grid.reshape(num_demos, self.demo_length, -1),
            np.stack(actions, 1).astype(np.int32),
            np.stack(mask, 1).astype(np.float32),
        )

    def sample(self, split, num_tasks, support_shots, query_shots, rng):
        """A meta-batch of tasks; each shot is one expert demonstration with
        a fresh random goal cell (in the task's quadrant), start and
        distractors.

        Args:
            split: "train" or "test" (training goals) or "ood".
            num_tasks: tasks in the batch (drawn with replacement).
            support_shots, query_shots: demonstrations per set (authors: 1).
            rng: a np.random.Generator.

        Returns:
            TaskBatch: inputs (T, shots * demo_length, input_dim), int32
            expert actions (T, shots * demo_length), masks, latents (T, 16).
        """
        _check_sample_args(split, num_tasks, support_shots, query_shots, rng)
        pool = self.ood_tasks if split == "ood" else self.train_tasks
        tasks = pool[rng.integers(len(pool), size=num_tasks)]
        shots = support_shots + query_shots
        demo_tasks = np.repeat(tasks, shots, axis=0)
        quadrant, _, maze, goal_object = demo_tasks.T
        goal_cells = _choose_in_rows(rng, self._goal_ok[maze, quadrant])
        agent_cells = _choose_in_rows(rng, self._start_ok[maze, :, goal_cells])
        offsets = rng.integers(
            self.num_objects - 1, size=(len(demo_tasks), self.num_distractors)
        )
        distractor_objects = offsets + (offsets >= goal_object[:, None])
        cells = np.arange(self.grid_size**2)
        free = ~self.mazes.reshape(self.num_mazes, -1)[maze]
        free &= cells != goal_cells[:, None]
        free &= cells != agent_cells[:, None]
        distractor_cells = _choose_distinct_in_rows(rng, free, self.num_distractors)
        observations, actions, mask = self.demonstrate(
            demo_tasks, goal_cells, agent_cells, distractor_objects, distractor_cells
        )
        return _split_shots(
            observations, actions, mask, num_tasks, support_shots, self.latents(tasks)
        )
