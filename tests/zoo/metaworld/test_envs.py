"""The real Meta-World MT10 vector environment (Meta-World 3, offline):
spaces, truncation, evaluation, random and fixed goals."""

import numpy as np
import pytest

from training.off_policy import OffPolicyLoop
from training.replay_buffer import TaskReplayBuffer
from zoo.metaworld.envs import evaluate_success, make_env, task_names


@pytest.fixture(scope="module")
def mt10():
    return make_env("mt10", seed=0)


def test_mt10_spaces_one_hot_and_names(mt10):
    assert mt10.num_envs == 10
    assert mt10.single_observation_space.shape == (49,)
    assert mt10.single_action_space.shape == (4,)
    observations, _ = mt10.reset(seed=0)
    assert observations.dtype == np.float32
    np.testing.assert_array_equal(observations[:, 39:], np.eye(10))  # env i is task i
    names = task_names(mt10)
    assert len(names) == 10 and names[0] == "Reach"


def test_truncation_at_500_steps_stores_the_final_observation(mt10):
    """The loop's warm-up crosses the 500-step time limit: the stored next
    state of step 500 is info['final_obs'], not the next episode's first
    observation (which is the stored observation of step 501)."""
    buffer = TaskReplayBuffer(10, 600, 49, 4)
    loop = OffPolicyLoop(mt10, buffer, batch_per_task=4, warmup_steps=502, seed=0)
    loop.warm_up(model=None)
    last_next = buffer.next_observations[:, 499]
    first_of_next_episode = buffer.observations[:, 500]
    assert not np.allclose(last_next[:, :36], first_of_next_episode[:, :36])
    # Within an episode the next state is the following observation.
    np.testing.assert_array_equal(buffer.next_observations[:, 498], buffer.observations[:, 499])
    assert loop.progress()["episode_return"] > 0  # V2 rewards are positive


def test_success_evaluation_of_a_still_policy(mt10):
    def still(observations, task_ids):
        return np.zeros((len(task_ids), 4), np.float32)

    rate, per_task = evaluate_success(still, mt10, episodes_per_task=1)
    assert len(per_task) == 10 and all(r in (0.0, 1.0) for r in per_task)
    assert rate == pytest.approx(np.mean(per_task))


def test_unknown_benchmark_raises():
    with pytest.raises(ValueError, match="Unknown benchmark 'mt11'; expected one of mt10, mt50"):
        make_env("mt11")
    with pytest.raises(ValueError, match="goals must be one of 'random', 'fixed'; got 'few'"):
        make_env("mt10", goals="few")


def goals_over_resets(env, resets=4):
    """(resets, num_envs, 6): the object and goal positions after each reset."""
    positions = []
    for index in range(resets):
        observations, _ = env.reset(seed=index)
        positions.append(np.concatenate([observations[:, 4:7], observations[:, 36:39]], -1))
    return np.stack(positions)


def test_fixed_goals_stay_and_random_goals_change(mt10):
    """goals="fixed" (MT10-Fixed): every reset of a task has the same goal;
    "random" (MT10-Conditioned): a new one of 50 at every reset. Built
    after the random one, the fixed benchmark also shows that the global
    `num_goals` does not leak (envs.py NOTE 2)."""
    fixed = make_env("mt10", seed=0, goals="fixed")
    positions = goals_over_resets(fixed)
    np.testing.assert_allclose(positions, positions[:1].repeat(len(positions), 0), atol=1e-6)
    random = goals_over_resets(mt10)
    goal_changed = np.abs(random[1:, :, 3:] - random[:1, :, 3:]).max(-1) > 1e-4
    assert goal_changed.mean() > 0.9  # (resets - 1, tasks): 1 in 50 may repeat
    fixed.close()
