"""Tests of the compositional grid worlds (zoo/hypernetworks/grid_worlds.py)."""

import itertools

import numpy as np
import pytest

from zoo.hypernetworks.grid_worlds import GoalsGridWorld
from zoo.hypernetworks.grid_worlds import PreferencesGridWorld
from zoo.hypernetworks.grid_worlds import bfs_distances

OPEN_3X3 = "   \n   \n   "  # 3 x 3, no walls; free cell index = 3 * row + col
STAY, UP, RIGHT, DOWN, LEFT = range(5)


@pytest.fixture(scope="module")
def preferences():
    return PreferencesGridWorld(seed=3)


@pytest.fixture(scope="module")
def goals():
    return GoalsGridWorld(seed=3)


def tiny_world(**kwargs):
    return PreferencesGridWorld(layout=OPEN_3X3, num_objects=1, num_colours=1, **kwargs)


# --------------------------------------------------------------------------
# PreferencesGridWorld


def test_preferences_q_values_by_hand():
    # One object of reward 1 at (0, 2); gamma = 0.9, horizon 8.
    q = tiny_world().q_values([[2]], [[0]], [[1.0]])
    available, collected = 1, 0
    # Agent at (0, 0). right: (0, 1) then collect: 0 + 0.9 * 1 = 0.9.
    # down: (1, 0) is 3 steps away -> 0.9 * 0.9 ** 2 = 0.729.
    # stay, up, left (blocked, stays): 0.9 * V(0, 0) = 0.9 * 0.9 = 0.81.
    np.testing.assert_allclose(
        q[0, 0, available], [0.81, 0.81, 0.9, 0.729, 0.81], atol=1e-6
    )
    # Agent at (0, 1). right collects now: 1. stay / up (blocked): 0.9 * 1.
    # left: (0, 0) -> 0.9 * 0.9; down: (1, 1) is 2 steps away -> 0.9 * 0.9.
    np.testing.assert_allclose(
        q[0, 1, available], [0.9, 0.9, 1.0, 0.81, 0.81], atol=1e-6
    )
    # Agent at (2, 0), 4 steps away: up to (1, 0) / right to (2, 1), each 3
    # steps away: 0.9 * 0.9 ** 2 = 0.729; stay, down, left (blocked):
    # 0.9 * V(2, 0) = 0.9 * 0.729 = 0.6561.
    np.testing.assert_allclose(
        q[0, 6, available], [0.6561, 0.729, 0.729, 0.6561, 0.6561], atol=1e-6
    )
    # Nothing left to collect: every Q-value is 0.
    np.testing.assert_array_equal(q[0, :, collected], 0.0)


def test_preferences_horizon_by_hand():
    # From (2, 0) the object at (0, 2) takes 4 steps: invisible with 3
    # backups; with 4, up / right give 0.9 ** 3 = 0.729 and the others
    # would need 5 steps -> 0.
    world = tiny_world()
    q3 = world.q_values([[2]], [[0]], [[1.0]], horizon=3)
    q4 = world.q_values([[2]], [[0]], [[1.0]], horizon=4)
    np.testing.assert_array_equal(q3[0, 6, 1], 0.0)
    np.testing.assert_allclose(q4[0, 6, 1], [0, 0.729, 0.729, 0, 0], atol=1e-6)


def test_preferences_negative_reward_and_two_objects_by_hand():
    # A negative object is avoided: at (0, 1), right collects -1; staying
    # keeps 0.
    q = tiny_world().q_values([[2]], [[0]], [[-1.0]])
    np.testing.assert_allclose(q[0, 1, 1], [0, 0, -1, 0, 0], atol=1e-6)
    # Row "    ": objects at cells 1 (colour 0, reward 1) and 3 (colour 1,
    # reward 2); agent at 0. right: 1 + 0.9 * (0 + 0.9 * 2) = 2.62; with
    # only object 3 left (bits 0b10): right: 0 + 0.9 * (0 + 0.9 * 2) = 1.62.
    world = PreferencesGridWorld(layout="    ", num_objects=2, num_colours=2)
    q = world.q_values([[1, 3]], [[0, 1]], [[1.0, 2.0]])
    assert q[0, 0, 0b11, RIGHT] == pytest.approx(2.62, abs=1e-5)
    assert q[0, 0, 0b10, RIGHT] == pytest.approx(1.62, abs=1e-5)
    assert q[0, 0, 0b01, RIGHT] == pytest.approx(1.0, abs=1e-5)


def test_preferences_demonstration_and_mask_by_hand():
    world = tiny_world()
    observations, targets, mask = world.demonstrate([[2]], [[0]], [0], [[1.0]])
    # Greedy: right (0.9 > 0.81), right (collects), then all Q are 0 and
    # argmax picks "stay", which ends the episode after that step.
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(targets[0, 0], [0.81, 0.81, 0.9, 0.729, 0.81], atol=1e-6)
    np.testing.assert_allclose(targets[0, 1], [0.9, 0.9, 1.0, 0.81, 0.81], atol=1e-6)
    np.testing.assert_array_equal(targets[0, 2:], 0.0)
    grids = observations[0].reshape(8, 3, 3, 3)  # channels: colour, agent, wall
    agent = grids[..., 1].reshape(8, 9).argmax(-1)
    np.testing.assert_array_equal(agent, [0, 1, 2, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(grids[:, 0, 2, 0], [1, 1, 0, 0, 0, 0, 0, 0])
    assert grids[..., 0].sum() == 2 and grids[..., 2].sum() == 0


def reference_step(world, cell, bits, action, object_cells, object_rewards):
    """Straightforward per-state dynamics, written independently."""
    row, col = world.free_cells[cell]
    delta = {STAY: (0, 0), UP: (-1, 0), RIGHT: (0, 1), DOWN: (1, 0), LEFT: (0, -1)}
    new_row, new_col = row + delta[action][0], col + delta[action][1]
    rows, cols = world.walls.shape
    inside = 0 <= new_row < rows and 0 <= new_col < cols
    if inside and not world.walls[new_row, new_col]:
        row, col = new_row, new_col
    new_cell = [tuple(c) for c in world.free_cells].index((row, col))
    reward = 0.0
    for index, object_cell in enumerate(object_cells):
        if object_cell == new_cell and bits >> index & 1:
            reward += object_rewards[index]
            bits &= ~(1 << index)
    return new_cell, bits, reward


def test_preferences_bellman_consistency(preferences):
    world = preferences
    rng = np.random.default_rng(0)
    task = world.train_tasks[rng.integers(len(world.train_tasks))][None]
    rewards = world.colour_rewards(world.preference_weights(task, rng))
    cells = rng.permutation(len(world.free_cells))[: world.num_objects][None]
    colours = rng.integers(world.num_colours, size=(1, world.num_objects))
    q8 = world.q_values(cells, colours, rewards)
    q7 = world.q_values(cells, colours, rewards, horizon=7)
    object_rewards = rewards[0, colours[0]]
    for cell in range(len(world.free_cells)):
        for bits in range(2**world.num_objects):
            for action in range(5):
                new_cell, new_bits, reward = reference_step(
                    world, cell, bits, action, cells[0], object_rewards
                )
                expected = reward + 0.9 * q7[0, new_cell, new_bits].max()
                assert q8[0, cell, bits, action] == pytest.approx(expected, abs=1e-5)
    assert np.abs(q8).max() > 0.1  # the task has non-zero rewards


def test_preferences_holdout(preferences):
    train, ood = preferences.train_tasks, preferences.ood_tasks
    assert len(train) + len(ood) == 8 + 28 + 56
    assert len(ood) == int(0.25 * 92)
    all_tasks = {tuple(t) for t in np.concatenate([train, ood])}
    assert len(all_tasks) == 92  # no duplicates, nothing lost
    assert not {tuple(t) for t in train} & {tuple(t) for t in ood}
    assert set(np.concatenate([train, ood]).sum(1)) == {1, 2, 3}
    assert train.any(0).all()  # every preference vector is seen in training


def test_preferences_sample(preferences):
    world = preferences
    batch = world.sample("ood", 4, 3, 2, np.random.default_rng(1))
    assert batch.support_inputs.shape == (4, 3 * 8, 490)
    assert batch.query_targets.shape == (4, 2 * 8, 5)
    assert batch.support_inputs.dtype == batch.support_targets.dtype == np.float32
    for mask in (batch.support_mask, batch.query_mask):
        demos = mask.reshape(4, -1, 8)
        assert np.all(demos[..., 0] == 1)  # the first state always counts
        assert np.all(np.diff(demos, axis=-1) <= 0)  # ones, then zeros
    # latents: weights in [0.5, 1] on an OOD combination, zero elsewhere
    active = batch.latents > 0
    ood = {tuple(t) for t in world.ood_tasks}
    assert all(tuple(row) in ood for row in active.astype(np.float32))
    assert np.all((batch.latents[active] >= 0.5) & (batch.latents[active] <= 1))
    # inputs: one agent, walls as in the layout
    grids = batch.support_inputs.reshape(4, 24, 7, 7, 10)
    np.testing.assert_array_equal(grids[..., -2].sum((-1, -2)), 1)
    np.testing.assert_array_equal(
        grids[..., -1], np.broadcast_to(world.walls, (4, 24, 7, 7))
    )
    # k-hot latents without continuous combinations
    discrete = PreferencesGridWorld(continuous_combinations=False, seed=3)
    batch = discrete.sample("train", 3, 1, 1, np.random.default_rng(1))
    train = {tuple(t) for t in discrete.train_tasks}
    assert all(tuple(row) in train for row in batch.latents)


def test_preferences_targets_are_q_of_visited_states(preferences):
    world = preferences
    rng = np.random.default_rng(5)
    cells = rng.permutation(len(world.free_cells))[: world.num_objects + 1][None]
    colours = rng.integers(world.num_colours, size=(1, world.num_objects))
    rewards = world.colour_rewards(world.train_tasks[:1])
    _, targets, mask = world.demonstrate(cells[:, :-1], colours, cells[:, -1], rewards)
    q = world.q_values(cells[:, :-1], colours, rewards)
    all_available = 2**world.num_objects - 1
    np.testing.assert_allclose(targets[0, 0], q[0, cells[0, -1], all_available])
    # a valid step followed by another valid step did not choose "stay"
    steps = mask[0].astype(bool)
    assert np.all(targets[0, :-1][steps[1:]].argmax(-1) != STAY)


def test_preferences_determinism():
    first, second = PreferencesGridWorld(seed=7), PreferencesGridWorld(seed=7)
    np.testing.assert_array_equal(first.preference_basis, second.preference_basis)
    np.testing.assert_array_equal(first.ood_tasks, second.ood_tasks)
    one = first.sample("train", 2, 2, 2, np.random.default_rng(9))
    two = second.sample("train", 2, 2, 2, np.random.default_rng(9))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    other = PreferencesGridWorld(seed=8)
    assert not np.array_equal(first.ood_tasks, other.ood_tasks)


def test_preferences_bad_input(preferences):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="`split`"):
        preferences.sample("valid", 2, 1, 1, rng)
    with pytest.raises(ValueError, match="`support_shots`"):
        preferences.sample("train", 2, 0, 1, rng)
    with pytest.raises(ValueError, match="`query_shots`"):
        preferences.sample("train", 2, 1, -1, rng)
    with pytest.raises(ValueError, match="`num_tasks`"):
        preferences.sample("train", 0, 1, 1, rng)
    with pytest.raises(ValueError, match="`rng`"):
        preferences.sample("train", 1, 1, 1, 0)
    with pytest.raises(ValueError, match="`max_active`"):
        PreferencesGridWorld(max_active=9)
    with pytest.raises(ValueError, match="`max_active`"):
        PreferencesGridWorld(max_active=0)
    with pytest.raises(ValueError, match="`layout`"):
        PreferencesGridWorld(layout="w x\nwww")
    with pytest.raises(ValueError, match="`ood_fraction`"):
        PreferencesGridWorld(ood_fraction=1.5)
    with pytest.raises(ValueError, match="distinct"):
        world = PreferencesGridWorld(layout="    ", num_objects=2, num_colours=1)
        world.q_values([[1, 1]], [[0, 0]], [[1.0]])


# --------------------------------------------------------------------------
# GoalsGridWorld


def test_bfs_distances_by_hand():
    walls = np.array(
        [[0, 0, 0],
         [0, 1, 0],
         [0, 1, 0]], bool
    )
    distances = bfs_distances(walls)
    # (0, 0) -> (2, 2): right, right, down, down = 4; (2, 0) -> (2, 2):
    # up, up, right, right, down, down = 6 (the wall column blocks).
    assert distances[0, 8] == 4 and distances[6, 8] == 6 and distances[6, 6] == 0
    assert np.all(distances[4] == -1) and np.all(distances[:, 7] == -1)
    split = bfs_distances(np.array([[0, 1, 0]], bool))  # two separate cells
    assert split[0, 2] == -1 and split[0, 0] == 0


def test_goals_mazes_connected_and_deterministic(goals):
    assert goals.mazes.shape == (5, 11, 11)
    for maze, distances in zip(goals.mazes, goals.distances):
        free = np.flatnonzero(~maze)
        assert np.all(distances[np.ix_(free, free)] >= 0)  # free space connected
    again = GoalsGridWorld(seed=3)
    np.testing.assert_array_equal(goals.mazes, again.mazes)
    np.testing.assert_array_equal(goals.ood_tasks, again.ood_tasks)
    assert not np.array_equal(goals.mazes, GoalsGridWorld(seed=4).mazes)


def test_goals_holdout(goals):
    train, ood = goals.train_tasks, goals.ood_tasks
    assert len(train) == 150 and len(ood) == 50
    factor_values = itertools.product(range(4), range(2), range(5), range(5))
    everything = {tuple(t) for t in factor_values}
    assert {tuple(t) for t in train} | {tuple(t) for t in ood} == everything
    assert not {tuple(t) for t in train} & {tuple(t) for t in ood}
    for factor, size in enumerate((4, 2, 5, 5)):
        assert set(train[:, factor]) == set(range(size))


def decode_demos(world, batch, split_inputs, split_targets, split_mask):
    """Per demonstration: (task factors, agent cells, goal cell, actions, mask)."""
    size, channels = world.grid_size, world.num_objects + 2
    length = world.demo_length
    num_tasks = batch.num_tasks
    offsets = np.cumsum((0,) + world.factor_sizes)
    factors = np.stack(
        [batch.latents[:, a:b].argmax(-1) for a, b in zip(offsets[:-1], offsets[1:])], 1
    )
    grids = split_inputs.reshape(num_tasks, -1, length, size * size, channels)
    targets = split_targets.reshape(num_tasks, -1, length)
    mask = split_mask.reshape(num_tasks, -1, length)
    for task in range(num_tasks):
        for demo in range(grids.shape[1]):
            grid = grids[task, demo]
            agent = grid[..., -1].argmax(-1)
            goal = grid[0, :, factors[task, 3]].argmax()
            yield (factors[task], grid, agent, goal, targets[task, demo],
                   mask[task, demo])


def test_goals_expert_follows_shortest_paths(goals):
    world, size = goals, goals.grid_size
    batch = world.sample("train", 6, 2, 1, np.random.default_rng(2))
    assert batch.support_inputs.shape == (6, 2 * world.demo_length, 847)
    assert batch.support_targets.dtype == np.int32
    demos = list(decode_demos(world, batch, batch.support_inputs,
                              batch.support_targets, batch.support_mask))
    demos += list(decode_demos(world, batch, batch.query_inputs,
                               batch.query_targets, batch.query_mask))
    assert len(demos) == 18
    for factors, grid, agent, goal, actions, mask in demos:
        quadrant, interaction, maze, _ = factors
        distance = world.distances[maze]
        walls = world.mazes[maze].ravel()
        np.testing.assert_array_equal(grid[0, :, -2], walls)
        row, col = divmod(goal, size)
        assert (row >= 6) * 2 + (col >= 6) == quadrant  # goal in its quadrant
        # goal object and distractors, all on distinct cells
        assert grid[0, :, :-2].sum() == 1 + world.num_distractors
        start_distance = distance[agent[0], goal]
        assert start_distance >= size
        valid = int(mask.sum())
        assert valid == start_distance + 1  # d moves + 1 interaction
        np.testing.assert_array_equal(mask[:valid], 1)
        for step in range(valid):
            cell, action = agent[step], actions[step]
            if step < valid - 1:
                assert action < 4
                next_cell = agent[step + 1]
                r, c = divmod(cell, size)
                dr, dc = [(-1, 0), (0, 1), (1, 0), (0, -1)][action]
                assert next_cell == (r + dr) * size + (c + dc)  # the move happened
                assert not walls[next_cell]
                assert distance[next_cell, goal] == distance[cell, goal] - 1
            else:
                assert cell == goal and action == 4 + interaction


def test_goals_masks_and_sample_shapes(goals):
    batch = goals.sample("ood", 3, 1, 2, np.random.default_rng(4))
    length = goals.demo_length
    assert batch.query_inputs.shape == (3, 2 * length, 847)
    assert batch.support_mask.shape == (3, length)
    assert batch.latents.shape == (3, 16) and goals.latent_dim == 16
    for mask in (batch.support_mask, batch.query_mask):
        demos = mask.reshape(3, -1, length)
        assert np.all(np.diff(demos, axis=-1) <= 0) and np.all(demos[..., 0] == 1)
        assert np.all(demos.sum(-1) >= goals.grid_size + 1)
    ood = {tuple(t) for t in goals.ood_tasks}
    offsets = np.cumsum((0, 4, 2, 5, 5))
    factors = np.stack(
        [batch.latents[:, a:b].argmax(-1) for a, b in zip(offsets[:-1], offsets[1:])], 1
    )
    assert all(tuple(f) in ood for f in factors)
    np.testing.assert_array_equal(batch.latents.sum(-1), 4)


def test_goals_determinism_and_bad_input(goals):
    one = goals.sample("test", 2, 1, 1, np.random.default_rng(11))
    two = goals.sample("test", 2, 1, 1, np.random.default_rng(11))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="`split`"):
        goals.sample("val", 1, 1, 1, rng)
    with pytest.raises(ValueError, match="`support_shots`"):
        goals.sample("train", 1, 0, 1, rng)
    with pytest.raises(ValueError, match="`grid_size`"):
        GoalsGridWorld(grid_size=10)
    with pytest.raises(ValueError, match="`ood_fraction`"):
        GoalsGridWorld(ood_fraction=0.0)
