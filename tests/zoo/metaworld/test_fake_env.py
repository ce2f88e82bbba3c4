"""`FakeMultiTaskVectorEnv`: the spaces and autoreset of a Meta-World
vector environment, and clear errors for bad configuration or actions."""

import numpy as np
import pytest

from zoo.metaworld import FakeMultiTaskVectorEnv


def test_spaces_truncation_and_final_observation():
    env = FakeMultiTaskVectorEnv(3, 4, 2, episode_length=2)
    observations, infos = env.reset(seed=0)
    assert observations.shape == (3, 4) and observations.dtype == np.float32
    assert infos == {} and env.single_action_space.shape == (2,)
    _, _, _, truncations, infos = env.step(np.zeros((3, 2)))
    assert not truncations.any() and "final_obs" not in infos
    _, rewards, terminations, truncations, infos = env.step(env.targets)
    assert truncations.all() and not terminations.any()
    assert infos["_final_obs"].all() and infos["success"].all()
    np.testing.assert_allclose(rewards, 0.0)


def test_switching_tasks_report_task_ids():
    env = FakeMultiTaskVectorEnv(7, 4, 2, episode_length=1, num_envs=2, seed=1)
    _, infos = env.reset(seed=1)
    seen = set(infos["task_id"].tolist())
    for _ in range(30):
        seen.update(env.step(np.zeros((2, 2)))[4]["task_id"].tolist())
    assert seen <= set(range(7)) and len(seen) > 2


@pytest.mark.parametrize("kwargs", [dict(num_tasks=0), dict(action_dim=1.5),
                                    dict(episode_length=-1), dict(num_envs=0)])
def test_bad_configuration_raises(kwargs):
    with pytest.raises(ValueError, match="must be a positive int"):
        FakeMultiTaskVectorEnv(**kwargs)


def test_bad_action_shape_raises():
    env = FakeMultiTaskVectorEnv(3, 4, 2)
    env.reset()
    with pytest.raises(ValueError, match=r"Actions must have shape \(3, 2\)"):
        env.step(np.zeros((3, 3)))
