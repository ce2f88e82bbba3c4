"""MINT's goal-conditioned pushing environment (zoo/metaworld/goal_push.py):
goals set by task id and seen in the observation, task ids in the infos,
replay filed per goal, evaluation on given goals, bad arguments."""

import numpy as np
import pytest

from training.off_policy import OffPolicyLoop
from training.replay_buffer import TaskReplayBuffer
from zoo.metaworld import FakeMultiTaskVectorEnv
from zoo.metaworld.goal_push import (
    GOAL_RANGE,
    MIN_DISTANCE,
    PUCK_RANGE,
    draw_goals,
    evaluate_goals,
    goal_table,
    make_push_env,
)

NUM_ENVS, NUM_GOALS, LENGTH = 3, 12, 5


@pytest.fixture(scope="module")
def push():
    env = make_push_env(NUM_ENVS, NUM_GOALS, seed=0, episode_length=LENGTH)
    yield env
    env.close()


def assert_goals_in_observations(observations, task_ids, table):
    """The goal of each episode is where the observation says: the goal
    slice (36:38) is the table's goal; at reset the puck (4:6) is too."""
    np.testing.assert_allclose(observations[:, 36:38], table[task_ids, 2:], atol=1e-6)


def test_spaces_table_and_ranges(push):
    assert push.single_observation_space.shape == (39,)
    assert push.single_observation_space.dtype == np.float32
    assert push.single_action_space.shape == (4,)
    table = goal_table(push)
    assert table.shape == (NUM_GOALS, 4) and table.dtype == np.float32
    # NOTE 1: push-v3's own reset ranges.
    space = push.envs[0].unwrapped._random_reset_space
    np.testing.assert_allclose(np.concatenate([PUCK_RANGE[0], GOAL_RANGE[0]]), space.low)
    np.testing.assert_allclose(np.concatenate([PUCK_RANGE[1], GOAL_RANGE[1]]), space.high)
    assert np.all(np.linalg.norm(table[:, :2] - table[:, 2:], axis=1) >= MIN_DISTANCE)
    # The table depends on goal_seed only (NOTE 4).
    np.testing.assert_array_equal(draw_goals(NUM_GOALS, 0)[:, [0, 1, 3, 4]]
                                  .astype(np.float32), table)
    assert not np.allclose(draw_goals(NUM_GOALS, 1), draw_goals(NUM_GOALS, 0))


def test_task_ids_at_reset_and_every_step_set_the_observed_goal(push):
    table = goal_table(push)
    observations, infos = push.reset(seed=0)
    assert observations.dtype == np.float32
    task_ids = infos["task_id"]
    assert task_ids.shape == (NUM_ENVS,) and set(task_ids) <= set(range(NUM_GOALS))
    assert_goals_in_observations(observations, task_ids, table)
    np.testing.assert_allclose(observations[:, 4:6], table[task_ids, :2], atol=1e-6)
    seen = set(task_ids.tolist())
    for step in range(1, 3 * LENGTH + 1):
        observations, _, terminations, truncations, infos = push.step(
            np.zeros((NUM_ENVS, 4), np.float32))
        assert not terminations.any()
        assert truncations.all() == (step % LENGTH == 0)
        if truncations.all():  # the last observation: the ended episodes' goals
            final = np.stack(infos["final_obs"])
            assert_goals_in_observations(final, task_ids, table)
        else:
            np.testing.assert_array_equal(infos["task_id"], task_ids)
        task_ids = infos["task_id"]  # after a reset: the new episodes' goals
        assert_goals_in_observations(observations, task_ids, table)
        seen.update(task_ids.tolist())
    assert len(seen) > NUM_ENVS  # new goals were drawn


def test_same_seed_same_goals(push):
    _, first = push.reset(seed=5)
    _, again = push.reset(seed=5)
    np.testing.assert_array_equal(first["task_id"], again["task_id"])


def test_off_policy_loop_files_transitions_under_their_goal(push):
    """training/env_loop.py NOTE 2: every stored transition, across
    autoresets, sits in the region of the goal its observations show."""
    table = goal_table(push)
    buffer = TaskReplayBuffer(NUM_GOALS, 50, 39, 4)
    loop = OffPolicyLoop(push, buffer, batch_per_task=2, warmup_steps=3 * LENGTH,
                         seed=0, tasks_per_batch=2)
    loop.warm_up(model=None)
    assert buffer.total_size == NUM_ENVS * loop.env_steps
    for goal in np.flatnonzero(buffer.sizes):
        size = buffer.sizes[goal]
        for stored in (buffer.observations, buffer.next_observations):
            np.testing.assert_allclose(stored[goal, :size, 36:38],
                                       np.broadcast_to(table[goal, 2:], (size, 2)), atol=1e-6)
    assert (buffer.sizes > 0).sum() > NUM_ENVS


def test_evaluation_runs_the_given_goals(push):
    """A still arm never reaches the puck: no success, and the final
    distance is the goal's initial puck-goal distance."""
    table = goal_table(push)
    goals = [7, 2, 2, 11, 0]  # uneven over 3 environments, a repeat

    def still(observations, task_ids):
        return np.zeros((len(task_ids), 4), np.float32)

    result = evaluate_goals(still, push, goals, seed=3)
    assert [goal for goal, _, _ in result["per_goal"]] == goals
    initial = np.linalg.norm(table[goals, :2] - table[goals, 2:], axis=1)
    np.testing.assert_allclose([d for _, _, d in result["per_goal"]], initial, atol=1e-4)
    assert result["success_rate"] == 0.0
    assert result["final_distance"] == pytest.approx(initial.mean(), abs=1e-4)
    assert push.get_attr("goal_schedule") == ([], [], [])  # cleared


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_envs=0), "num_envs must be a positive integer"),
    (dict(num_goals=2.5), "num_goals must be a positive integer"),
    (dict(goal_seed=-1), "goal_seed must be an integer >= 0"),
    (dict(seed=-2), "seed must be an integer >= 0"),
    (dict(episode_length=501), "episode_length must be at most 500"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_push_env(**kwargs)


def test_bad_goals_and_environments_raise(push):
    with pytest.raises(ValueError, match="needs an environment of make_push_env"):
        goal_table(FakeMultiTaskVectorEnv(3, 4, 2))
    with pytest.raises(ValueError, match=r"goals in \[0, 12\); got \[3, 12\]"):
        evaluate_goals(lambda o, k: np.zeros((len(k), 4)), push, [3, 12])
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_goals(lambda o, k: np.zeros((len(k), 4)), push, [])
