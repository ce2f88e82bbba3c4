"""BabyAI levels and the multitask environment (zoo/babyai/envs.py): every
level makes and steps, missions within the fixed vocabulary, task ids that
follow the level of each episode, success and reward at episode ends,
nothing printed, bad arguments. NumPy only (run under every backend)."""

import contextlib
import io

import gymnasium
import numpy as np
import pytest

from training.env_loop import EnvironmentLoop
from zoo.babyai.envs import (
    CPU_LEVELS,
    LEVELS,
    MAX_MISSION_TOKENS,
    MAX_STEPS,
    MISSION_WORDS,
    NUM_ACTIONS,
    UNKNOWN_ID,
    MissionTokenizer,
    MultiLevelEnv,
    gym_id,
    level_names,
    make_multitask_env,
    prepare_observations,
)

# Missions of these levels tell the level apart by their first word.
DISTINCT_LEVELS = ("GoToObj", "PutNextLocal", "PickupLoc")
FIRST_WORD = {"GoToObj": "go", "PutNextLocal": "put", "PickupLoc": "pick"}


def run_random(env, steps, seed=0):
    """Steps a vector env with random actions; yields each step's results."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield env.step(rng.integers(NUM_ACTIONS, size=env.num_envs))


def test_levels_and_ids():
    assert LEVELS == ("GoToObj", "GoToRedBallGrey", "GoToRedBall", "GoToLocal",
                      "PutNextLocal", "PickupLoc", "GoToObjMaze", "GoTo")
    assert CPU_LEVELS == LEVELS[:4]
    assert gym_id("GoToObjMaze") == "BabyAI-GoToObjMaze-v0"


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_makes_steps_and_keeps_missions_in_vocabulary(level):
    env = MultiLevelEnv((level,), seed=0)
    tokenizer = env.tokenizer
    missions = 40 if MAX_STEPS[level] < 500 else 15
    for episode in range(missions):
        observation, info = env.reset(seed=episode)
        assert env.observation_space.contains(observation)
        assert info["task_id"] == 0 and env.level == level
        mission = env.current.unwrapped.mission
        assert UNKNOWN_ID not in observation["mission"], mission
        assert tokenizer.decode(observation["mission"][None]) == [mission.lower()]
    assert env.current.unwrapped.max_steps == MAX_STEPS[level]
    assert env.action_space == gymnasium.spaces.Discrete(NUM_ACTIONS)
    for action in range(NUM_ACTIONS):
        observation, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(observation)
        assert info["task_id"] == 0 and info["success"] == (terminated and reward > 0)
        if terminated or truncated:
            break
    env.close()


def test_vocabulary_is_the_words_of_the_levels_missions():
    # The words MiniGrid's grammar can produce for these levels (envs.py
    # docstring), 26 in all, at most 9 per mission.
    grammar = {"go", "to", "pick", "up", "put", "next", "a", "the",
               "red", "green", "blue", "purple", "yellow", "grey", "ball", "box", "key",
               "in", "front", "of", "you", "behind", "on", "your", "left", "right"}
    assert set(MISSION_WORDS) == grammar and len(MISSION_WORDS) == 26
    assert MAX_MISSION_TOKENS == 9
    tokenizer = MissionTokenizer()
    assert tokenizer.vocabulary_size == 28
    assert sorted(tokenizer.word_ids.values()) == list(range(2, 28))
    longest = "put the green ball next to the grey key"
    ids = tokenizer.encode([longest, "pick up the red ball in front of you"])
    assert (ids != 0).all() and tokenizer.decode(ids)[0] == longest


def test_unknown_words_padding_and_truncation():
    tokenizer = MissionTokenizer()
    ids = tokenizer.encode(["Open THE door, then go to the key!", "", "go"])
    assert ids.dtype == np.int32 and ids.shape == (3, MAX_MISSION_TOKENS)
    assert tokenizer.decode(ids) == [
        "<unk> the <unk> <unk> go to the key", "", "go"]
    assert ids[0, 0] == UNKNOWN_ID and (ids[1] == 0).all()
    short = MissionTokenizer(max_length=3).encode(["go to the red ball"])
    assert short.tolist() == [[tokenizer.word_ids[w] for w in ("go", "to", "the")]]
    assert tokenizer.encode(np.array(["go to the box"])).shape == (1, 9)
    assert tokenizer.encode([]).shape == (0, 9)
    with pytest.raises(TypeError, match="sequence of missions"):
        tokenizer.encode("go to the box")
    with pytest.raises(TypeError, match="must be a string"):
        tokenizer.encode([3])
    with pytest.raises(ValueError, match="lower-case"):
        MissionTokenizer(words=("Go",))
    with pytest.raises(ValueError, match="max_length"):
        MissionTokenizer(max_length=0)


def test_task_ids_follow_the_level_of_each_episode():
    env = make_multitask_env(DISTINCT_LEVELS, num_envs=4, seed=0)
    assert level_names(env) == DISTINCT_LEVELS
    tokenizer = MissionTokenizer()
    observations, infos = env.reset(seed=0)
    seen = [set() for _ in range(env.num_envs)]
    finished = 0

    def check(observations, infos):
        for index, task_id in enumerate(infos["task_id"]):
            mission = tokenizer.decode(observations["mission"][index][None])[0]
            assert mission.split()[0] == FIRST_WORD[DISTINCT_LEVELS[task_id]]
            seen[index].add(int(task_id))

    check(observations, infos)
    for observations, _, terminations, truncations, infos in run_random(env, 300):
        # SAME_STEP: at an episode's end the observation and the task id
        # are the next episode's, and they agree.
        check(observations, infos)
        finished += int(np.sum(terminations | truncations))
    assert finished >= 8
    assert all(len(levels) >= 2 for levels in seen), seen
    env.close()


def test_seeded_resets_repeat_levels_and_missions():
    def trace(seed):
        env = make_multitask_env(CPU_LEVELS, num_envs=2, seed=seed)
        observations, infos = env.reset(seed=seed)
        ids, missions = [infos["task_id"].copy()], [observations["mission"].copy()]
        for observations, _, _, _, infos in run_random(env, 150):
            ids.append(infos["task_id"].copy())
            missions.append(observations["mission"].copy())
        env.close()
        return np.stack(ids), np.stack(missions)

    ids, missions = trace(3)
    same_ids, same_missions = trace(3)
    np.testing.assert_array_equal(ids, same_ids)
    np.testing.assert_array_equal(missions, same_missions)
    assert not np.array_equal(ids, trace(4)[0])
    assert set(np.unique(ids)) <= set(range(4)) and len(np.unique(ids)) >= 2


def test_success_and_reward_at_episode_end():
    env = make_multitask_env(("GoToObj",), num_envs=4, seed=0)
    env.reset(seed=1)
    lengths = np.zeros(env.num_envs, int)
    outcomes = []
    for _, rewards, terminations, truncations, infos in run_random(env, 250):
        lengths += 1
        for index in np.flatnonzero(terminations | truncations):
            final = infos["final_info"]
            success = bool(final["success"][index])
            assert success == (rewards[index] > 0)
            if success:  # MiniGrid's reward, the paper's 1 - 0.9 n / n_max
                assert rewards[index] == pytest.approx(1 - 0.9 * lengths[index] / 64)
            else:
                assert rewards[index] == 0
            assert final["task_id"][index] == 0
            outcomes.append(success)
            lengths[index] = 0
        # Within an episode, success is False.
        running = ~(terminations | truncations)
        assert not np.any(infos["success"][running])
    assert True in outcomes and False in outcomes, outcomes
    env.close()


def test_nothing_printed(capsys):
    # MiniGrid itself prints rejected samples on these levels ...
    raw = gymnasium.make(gym_id("PutNextLocal"), disable_env_checker=True)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for seed in range(30):
            raw.reset(seed=seed)
    assert "Sampling rejected" in printed.getvalue()
    raw.close()
    capsys.readouterr()
    # ... the multitask environment keeps them out of the user's output.
    env = make_multitask_env(("GoToRedBall", "PutNextLocal"), num_envs=4, seed=0)
    for seed in range(8):
        env.reset(seed=seed)
    for _ in run_random(env, 200):
        pass
    env.close()
    assert capsys.readouterr().out == ""


def test_prepare_observations_and_the_loop_hook():
    env = make_multitask_env(CPU_LEVELS, num_envs=3, seed=0)
    loop = EnvironmentLoop(env)
    loop.prepare_observations = prepare_observations
    loop.reset()
    inputs = loop._observations
    assert sorted(inputs) == ["image", "mission"]
    assert inputs["image"].dtype == np.int32 and inputs["image"].shape == (3, 7, 7, 3)
    assert inputs["mission"].dtype == np.int32
    assert inputs["mission"].shape == (3, MAX_MISSION_TOKENS)
    np.testing.assert_array_equal(loop.task_ids, env.get_attr("task_id"))
    # A single final observation, batched by one (OnPolicyLoop's _final_dict).
    single = {key: np.asarray(value)[None] for key, value in env.envs[0].reset()[0].items()}
    assert prepare_observations(single)["mission"].shape == (1, MAX_MISSION_TOKENS)
    # A raw MiniGrid batch (missions as strings) is tokenised.
    raw = {"image": np.zeros((2, 7, 7, 3), np.uint8),
           "mission": ("go to the red ball", "open the door")}
    np.testing.assert_array_equal(prepare_observations(raw)["mission"],
                                  MissionTokenizer().encode(raw["mission"]))
    with pytest.raises(ValueError, match=r"\(batch, 7, 7, 3\)"):
        prepare_observations({"image": np.zeros((2, 5, 5, 3)), "mission": np.zeros((2, 9))})
    with pytest.raises(ValueError, match="token ids for 2 images"):
        prepare_observations({"image": np.zeros((2, 7, 7, 3)), "mission": np.zeros((3, 9))})
    with pytest.raises(ValueError, match="'image' and 'mission'"):
        prepare_observations(np.zeros((2, 7, 7, 3)))
    env.close()


@pytest.mark.parametrize("levels, match", [
    (("GoToObj", "Unlock"), "Unknown BabyAI level 'Unlock'; expected one of GoToObj"),
    ((), "at least one level"),
    (("GoToObj", "GoToObj"), "must not repeat"),
    (("BabyAI-GoToObj-v0",), "Unknown BabyAI level"),
])
def test_bad_levels(levels, match):
    with pytest.raises(ValueError, match=match):
        make_multitask_env(levels, num_envs=1)


@pytest.mark.parametrize("num_envs", [0, -2, 1.5, True, "4"])
def test_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        make_multitask_env(num_envs=num_envs)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        make_multitask_env(num_envs=1, seed=-1)
