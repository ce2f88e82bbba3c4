"""The BabyAI bot's demonstrations (zoo/babyai/demos.py): successful
episodes whose recorded actions replay to success, reproducible seeds that
depend on (seed, level, split) only, the .npz cache, and clear errors."""

import os

import numpy as np
import pytest

from zoo.babyai.demos import (
    collect_demonstrations,
    episode_seeds,
    load_or_collect,
    successful_steps,
)
from zoo.babyai.envs import NUM_ACTIONS, MultiLevelEnv

LEVELS = ["GoToObj", "GoToRedBallGrey"]


@pytest.fixture(scope="module")
def demos():
    return collect_demonstrations(LEVELS, episodes_per_level=3)


def test_bot_episodes_are_successful_and_consistent(demos):
    assert demos["episode_success"].all() and len(demos["episode_success"]) == 6
    assert len(demos["actions"]) == demos["episode_lengths"].sum()
    assert demos["actions"].min() >= 0 and demos["actions"].max() < NUM_ACTIONS
    assert demos["image"].shape[1:] == (7, 7, 3) and demos["image"].dtype == np.uint8
    np.testing.assert_array_equal(demos["episode_task_ids"], [0, 0, 0, 1, 1, 1])
    # Steps are grouped by episode, and each step has its episode's level.
    np.testing.assert_array_equal(np.bincount(demos["episode_ids"]),
                                  demos["episode_lengths"])
    np.testing.assert_array_equal(demos["task_ids"],
                                  demos["episode_task_ids"][demos["episode_ids"]])
    assert len(successful_steps(demos)["actions"]) == len(demos["actions"])


def test_recorded_actions_replay_to_success(demos):
    # The recorded (observation, action) pairs are the episode: the same
    # reset seed and the recorded actions alone solve it, at the last step.
    for episode, task_id in enumerate(demos["episode_task_ids"]):
        level = LEVELS[task_id]
        index = episode % 3
        seed = int(episode_seeds(0, level, 3)[index])
        rows = np.flatnonzero(demos["episode_ids"] == episode)
        env = MultiLevelEnv((level,))
        observation, _ = env.reset(seed=seed)
        for step, row in enumerate(rows):
            np.testing.assert_array_equal(observation["image"], demos["image"][row])
            np.testing.assert_array_equal(observation["mission"], demos["mission"][row])
            observation, _, terminated, truncated, info = env.step(
                int(demos["actions"][row]))
            assert (terminated or truncated) == (step == len(rows) - 1)
        assert info["success"]
        env.close()


def test_episodes_depend_on_seed_level_and_split_only(demos):
    # GoToObj's episodes are the same when asked for alone, after another
    # level, or as the first 2 of 3; the validation split differs.
    alone = collect_demonstrations(["GoToObj"], episodes_per_level=2)
    reversed_levels = collect_demonstrations(LEVELS[::-1], episodes_per_level=3)
    first_two = demos["episode_ids"] < 2
    np.testing.assert_array_equal(alone["actions"], demos["actions"][first_two])
    np.testing.assert_array_equal(alone["image"], demos["image"][first_two])
    np.testing.assert_array_equal(reversed_levels["image"][reversed_levels["task_ids"] == 1],
                                  demos["image"][demos["task_ids"] == 0])
    validation = collect_demonstrations(["GoToObj"], episodes_per_level=2,
                                        split="validation")
    assert not np.array_equal(validation["image"][:2], alone["image"][:2])
    other_seed = collect_demonstrations(["GoToObj"], episodes_per_level=2, seed=1)
    assert not np.array_equal(other_seed["image"][:2], alone["image"][:2])


def test_cache_is_read_back_and_recollected_for_other_arguments(tmp_path):
    path = str(tmp_path / "demos" / "train.npz")
    first, cached = load_or_collect(path, ["GoToObj"], 2)
    assert not cached and os.path.exists(path)
    second, cached = load_or_collect(path, ["GoToObj"], 2)
    assert cached
    for key, value in first.items():
        np.testing.assert_array_equal(second[key], value)
    # Other arguments: collected again and the file replaced.
    third, cached = load_or_collect(path, ["GoToObj"], 3)
    assert not cached and len(third["episode_success"]) == 3
    assert load_or_collect(path, ["GoToObj"], 3)[1]


@pytest.mark.parametrize("call, message", [
    (lambda: episode_seeds(0, "GoToObj", 2, split="test"), "split must be one of"),
    (lambda: episode_seeds(0, "GoToMoon", 2), "Unknown BabyAI level"),
    (lambda: collect_demonstrations(["GoToMoon"], 2), "GoToMoon"),
    (lambda: collect_demonstrations(["GoToObj"], 0), "episodes_per_level"),
    (lambda: collect_demonstrations(["GoToObj"], 2, seed=-1), "seed"),
])
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
