"""Demonstrations of the BabyAI bot, for behaviour cloning (cloning.py).

MiniGrid's `minigrid.utils.baby_ai_bot.BabyAIBot` plans with the
environment's own state and solves every level of the paper (reference
facts: 20 of 20 seeds per level). `collect_demonstrations` runs it for a
number of episodes per level and returns one row per step, as the
network reads it (`prepare_observations`' form), with the bot's action:

    demos = collect_demonstrations(CPU_LEVELS, episodes_per_level=200, seed=0)
    demos["image"].shape, demos["mission"].shape   # (N, 7, 7, 3), (N, 9)
    demos["task_ids"], demos["actions"]            # (N,), (N,)
    demos["episode_success"].all()                 # one entry per episode

Episode k of a level starts from `reset(seed=s_k)`, with s_k drawn from
`(seed, level name, split)` (`episode_seeds`): the demonstrations of a
level do not depend on the other levels asked for or on their order, and
the splits ("train", "validation", "evaluation") start from different
seeds (NOTE 1). The bot's action is taken at every step (no noise, no
DAgger); a rare episode the bot does not finish is kept and marked
(`episode_success` False): training uses the successful ones.

`load_or_collect(path, ...)` caches the arrays in an .npz with the
arguments that made them, so that a resumed run reads them back; a file of
other arguments is collected again and overwritten.

Speed (2 cores, measured beside other jobs): 800 episodes of the four
single-room CPU levels (4,361 steps: the bot goes straight to the object)
in 4.6 s.

NOTE 1 (held-out episodes): different seeds give different draws of the
  level generator, but a small room has a finite number of layouts and
  missions, so an evaluation episode can repeat a training layout by
  chance (as in BabyAI's own evaluation, which also only changes seeds).
"""

import contextlib
import io
import os
import zlib

import numpy as np

from zoo.babyai.envs import (
    LEVELS,
    NUM_ACTIONS,
    MissionTokenizer,
    MultiLevelEnv,
    _check_levels,
)
from zoo.extras import checked_int

SPLITS = ("train", "validation", "evaluation")
# Per-step arrays and per-episode arrays of a collection.
STEP_KEYS = ("image", "mission", "task_ids", "actions", "episode_ids")
EPISODE_KEYS = ("episode_task_ids", "episode_success", "episode_lengths")


def episode_seeds(seed, level, count, split="train"):
    """The reset seeds of `count` episodes of `level` (module docstring):
    a function of the seed, the level's name and the split only.

    >>> a = episode_seeds(0, "GoToObj", 3)
    >>> a.shape, bool((a == episode_seeds(0, "GoToObj", 5)[:3]).all())
    ((3,), True)
    >>> bool((a != episode_seeds(0, "GoToObj", 3, split="evaluation")).all())
    True
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}.")
    if level not in LEVELS:
        raise ValueError(f"Unknown BabyAI level {level!r}; expected one of "
                         f"{', '.join(LEVELS)}.")
    seed = checked_int(seed, "seed", minimum=0)
    count = checked_int(count, "count", minimum=0)
    entropy = [seed, zlib.crc32(level.encode()), SPLITS.index(split)]
    # Each episode's seed is the state of its own child sequence, so the
    # first k seeds do not depend on how many are asked for.
    return np.array([child.generate_state(1, np.uint32)[0] for child in
                     np.random.SeedSequence(entropy).spawn(count)], np.int64)


def collect_demonstrations(levels, episodes_per_level, seed=0, split="train",
                           tokenizer=None):
    """The bot's demonstrations on each level (module docstring).

    Args:
        levels: level names (`envs.LEVELS`); `task_ids` index them.
        episodes_per_level: positive int.
        seed: int >= 0; with `split`, it fixes every episode.
        split: "train", "validation" or "evaluation" (other seeds).
        tokenizer: the `MissionTokenizer` (default: the fixed vocabulary).

    Returns:
        A dict of NumPy arrays: per step (N steps in all) "image" uint8
        (N, 7, 7, 3), "mission" int32 (N, max_tokens), "task_ids" int32
        (N,), "actions" int32 (N,), "episode_ids" int32 (N,) (index of the
        step's episode); per episode (E = levels x episodes_per_level)
        "episode_task_ids" int32, "episode_success" bool and
        "episode_lengths" int32.

    Example (needs the `rl` extra):

    >>> demos = collect_demonstrations(["GoToObj"], episodes_per_level=2)
    >>> demos["image"].shape[1:], bool(demos["episode_success"].all())
    ((7, 7, 3), True)
    """
    levels = _check_levels(levels)
    episodes_per_level = checked_int(episodes_per_level, "episodes_per_level")
    seed = checked_int(seed, "seed", minimum=0)
    from minigrid.utils.baby_ai_bot import BabyAIBot

    tokenizer = tokenizer or MissionTokenizer()
    steps = {key: [] for key in STEP_KEYS}
    episodes = {key: [] for key in EPISODE_KEYS}
    episode_id = 0
    for task_id, level in enumerate(levels):
        env = MultiLevelEnv((level,), seed=seed, tokenizer=tokenizer)
        try:
            for episode_seed in episode_seeds(seed, level, episodes_per_level, split):
                observation, _ = env.reset(seed=int(episode_seed))
                # MiniGrid prints while it generates a level (envs.py); the
                # reset above is quiet, the bot is kept quiet as well.
                with contextlib.redirect_stdout(io.StringIO()):
                    bot = BabyAIBot(env.current.unwrapped)
                length, done, success = 0, False, False
                while not done:
                    with contextlib.redirect_stdout(io.StringIO()):
                        action = int(bot.replan())
                    steps["image"].append(observation["image"])
                    steps["mission"].append(observation["mission"])
                    steps["actions"].append(action)
                    observation, _, terminated, truncated, info = env.step(action)
                    length += 1
                    done = terminated or truncated
                    success = bool(info["success"])
                steps["task_ids"].extend([task_id] * length)
                steps["episode_ids"].extend([episode_id] * length)
                episodes["episode_task_ids"].append(task_id)
                episodes["episode_success"].append(success)
                episodes["episode_lengths"].append(length)
                episode_id += 1
        finally:
            env.close()
    demos = {
        "image": np.stack(steps["image"]).astype(np.uint8),
        "mission": np.stack(steps["mission"]).astype(np.int32),
        "task_ids": np.asarray(steps["task_ids"], np.int32),
        "actions": np.asarray(steps["actions"], np.int32),
        "episode_ids": np.asarray(steps["episode_ids"], np.int32),
        "episode_task_ids": np.asarray(episodes["episode_task_ids"], np.int32),
        "episode_success": np.asarray(episodes["episode_success"], bool),
        "episode_lengths": np.asarray(episodes["episode_lengths"], np.int32),
    }
    if demos["actions"].min() < 0 or demos["actions"].max() >= NUM_ACTIONS:
        raise RuntimeError("The bot chose an action outside the action space.")
    return demos


def successful_steps(demos):
    """The per-step arrays restricted to the steps of successful episodes."""
    keep = demos["episode_success"][demos["episode_ids"]]
    return {key: demos[key][keep] for key in STEP_KEYS}


def load_or_collect(path, levels, episodes_per_level, seed=0, split="train"):
    """`collect_demonstrations(...)`, read from the .npz at `path` when it
    holds the demonstrations of these arguments, else collected and saved
    there (`path=""`: never saved).

    Returns:
        `(demos, loaded)`: the dict of arrays and whether it was read back.
    """
    levels = _check_levels(levels)
    key = np.array(repr((list(levels), int(episodes_per_level), int(seed), split)))
    if path and os.path.exists(path):
        with np.load(path) as saved:
            if "arguments" in saved.files and str(saved["arguments"]) == str(key):
                return {name: saved[name] for name in STEP_KEYS + EPISODE_KEYS}, True
    demos = collect_demonstrations(levels, episodes_per_level, seed, split)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        temporary = path + ".tmp.npz"  # written whole, then renamed
        np.savez_compressed(temporary, arguments=key, **demos)
        os.replace(temporary, path)
    return demos, False
