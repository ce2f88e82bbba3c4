"""BabyAI levels (MiniGrid 3) as one multitask gymnasium vector environment,
and the mission tokenizer.

Polytropon's BabyAI experiment (papers/polytropon-combining-modular-skills.txt,
Section 3 and Appendix A.1) trains one agent on 8 levels, `LEVELS`, in
the paper's order; `CPU_LEVELS` are the first four (single room, 64 steps,
learnable by a tiny network in a CPU budget).

    env = make_multitask_env(CPU_LEVELS, num_envs=16, seed=0)
    observations, infos = env.reset(seed=0)
    infos["task_id"]                  # (16,) the level of each episode
    inputs = prepare_observations(observations)
    inputs["image"].shape, inputs["mission"].shape   # (16, 7, 7, 3), (16, 9)

`make_multitask_env` is a `gymnasium.vector.SyncVectorEnv` (SAME_STEP
autoreset) of `MultiLevelEnv`s. Each holds one MiniGrid environment per
level and draws the level of every episode uniformly with its own seeded
generator (NOTE 1); `info["task_id"]` is the index of the episode's level
in `levels`, at reset and at every step, so that the loops of `training/`
file each transition under the level of its episode (training/env_loop.py
NOTE 2). `info["success"]` is reported at reset and at every step: True
at the step that ends an episode with a positive reward, else False
(NOTE 3).

Observations (a `gymnasium.spaces.Dict` that the vector environment
batches): `image` uint8 (7, 7, 3), MiniGrid's partial egocentric view
(object, colour, state ids); `direction` the agent's heading (0-3); and
`mission` the instruction already tokenised, int32 (MAX_MISSION_TOKENS,),
so that the vector environment can stack it (a raw MiniGrid vector
environment gives a tuple of strings). `prepare_observations` turns the
batch into the model's inputs, {"image", "mission"} as int32; assign it to
an `OnPolicyLoop`'s `prepare_observations` hook.

Rewards are MiniGrid's own: `1 - 0.9 * step_count / max_steps` when the
mission is completed (`MiniGridEnv._reward`), 0 otherwise: the paper's
`1 - 0.9 n / n_max` (Appendix A.1). `max_steps` per level: `MAX_STEPS`
(MiniGrid sets it per episode from the room size, the number of rooms and
the navigations the instruction needs). Episodes end by completion, by a
wrong irreversible action (MiniGrid's verifier "failure", reward 0; e.g.
picking up the wrong object), or are truncated at `max_steps`.

Missions (`MissionTokenizer`): lower-case words, found as BabyAI's own
`Vocabulary` finds them (`re.findall("([a-z]+)", text.lower())`), mapped
through the fixed vocabulary `MISSION_WORDS`: the 26 words of all 8
levels' missions (from MiniGrid's grammar: verbs "go to", "pick up", "put
... next to"; articles "a" / "the"; 6 colours; 3 object types; PickupLoc's
locations "in front of you", "behind you", "on your left / right"; checked
by sampling 3,000 missions per single-room level and 600 per maze level).
Id 0 pads, id 1 stands for any word outside the vocabulary (NOTE 2), the
words follow from id 2 in `MISSION_WORDS` order. Missions are right-padded
to `MAX_MISSION_TOKENS` = 9, the longest mission of the 8 levels ("put the
green ball next to the grey key", "pick up the red ball in front of you").

MiniGrid prints "Sampling rejected: ..." (and "Timeout during mission
generation") to stdout with a plain `print` while it generates a level
(`RoomGridLevel._gen_grid`, i.e. inside `reset`; about one reset in five
on GoToRedBall, one in three on PutNextLocal). `MultiLevelEnv.reset`
(which the vector environment's autoreset also calls) runs with stdout
redirected, so none of it reaches the user's output; `step` never prints.

NOTE 1 (levels sampled per episode): the paper says only "During
  training, we sample levels uniformly" (Section 3.2), not whether a
  level is fixed per process or drawn per episode, and its code is not
  public. Here every episode of every environment draws its level
  uniformly and independently (seeded: environment i of
  `reset(seed=s)` from `s + i`), so each environment visits every level
  and the level mix of a rollout does not depend on `num_envs`. Levels
  are uniform per episode, not per frame: a level whose episodes are
  longer (PutNextLocal's 128 steps, the mazes' 576) takes a larger share
  of the frames. The four `CPU_LEVELS` all have 64 steps.
NOTE 2 (unknown words): a mission word outside the vocabulary maps to the
  unknown id (1), never an error, so a model trained on these levels can
  read any instruction (e.g. another level's "open the door"); words past
  `max_length` are dropped (none of the 8 levels' missions is longer than
  9 words). Digits and punctuation are not words (BabyAI's tokenizer).
NOTE 3 (success at the last step): with SAME_STEP autoreset the infos of
  the step that ends an episode are those of the next episode's reset
  (its `task_id`, `success` False); the ended episode's own infos, with its
  `success`, are in `info["final_info"]` (as for Meta-World, envs.py
  NOTE 3). BabyAI succeeds only at an episode's last step, so a success
  count must read `final_info`.
"""

import contextlib
import io
import re

import numpy as np

from zoo.extras import checked_int, require

require("gymnasium", "rl", "BabyAI environments")
import gymnasium  # noqa: E402

# The paper's 8 levels in its order (Table 2 / Table 3), and the four of
# the CPU-sized default run.
LEVELS = ("GoToObj", "GoToRedBallGrey", "GoToRedBall", "GoToLocal",
          "PutNextLocal", "PickupLoc", "GoToObjMaze", "GoTo")
CPU_LEVELS = LEVELS[:4]
# MiniGrid's max_steps of each level (checked against the environments).
MAX_STEPS = {"GoToObj": 64, "GoToRedBallGrey": 64, "GoToRedBall": 64,
             "GoToLocal": 64, "PutNextLocal": 128, "PickupLoc": 64,
             "GoToObjMaze": 576, "GoTo": 576}
NUM_ACTIONS = 7
# Every word of the 8 levels' missions (module docstring), sorted.
MISSION_WORDS = (
    "a", "ball", "behind", "blue", "box", "front", "go", "green", "grey", "in",
    "key", "left", "next", "of", "on", "pick", "purple", "put", "red", "right",
    "the", "to", "up", "yellow", "you", "your")
MAX_MISSION_TOKENS = 9
PAD_ID, UNKNOWN_ID = 0, 1
_WORD = re.compile("([a-z]+)")


def gym_id(level):
    """The gymnasium id of a level: `BabyAI-<Level>-v0`.

    >>> gym_id("GoToRedBall")
    'BabyAI-GoToRedBall-v0'
    >>> gym_id("Unlock")
    Traceback (most recent call last):
    ...
    ValueError: Unknown BabyAI level 'Unlock'; expected one of GoToObj, ..., GoTo.
    """
    if not isinstance(level, str) or level not in LEVELS:
        raise ValueError(f"Unknown BabyAI level {level!r}; expected one of "
                         f"{', '.join(LEVELS)}.")
    return f"BabyAI-{level}-v0"


def _check_levels(levels):
    if isinstance(levels, str):
        levels = (levels,)
    levels = tuple(levels)
    if not levels:
        raise ValueError("levels must name at least one level; expected some of "
                         f"{', '.join(LEVELS)}.")
    for level in levels:
        gym_id(level)
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels must not repeat a level; got {levels!r}.")
    return levels


class MissionTokenizer:
    """Mission strings to fixed-length int32 word ids (module docstring).

    Args:
        words: the vocabulary, distinct lower-case words (`MISSION_WORDS`);
            word k has id k + 2.
        max_length: ids per mission: shorter missions are right-padded
            with 0, longer ones keep their first `max_length` words.

    Example:

    >>> tokenizer = MissionTokenizer()
    >>> tokenizer.vocabulary_size
    28
    >>> ids = tokenizer.encode(["go to the red ball", "Open the door"])
    >>> ids.dtype, ids.shape
    (dtype('int32'), (2, 9))
    >>> ids[1].tolist()   # "open" and "door" are unknown (id 1)
    [1, 22, 1, 0, 0, 0, 0, 0, 0]
    >>> tokenizer.decode(ids)
    ['go to the red ball', '<unk> the <unk>']
    """

    pad_id, unknown_id = PAD_ID, UNKNOWN_ID

    def __init__(self, words=MISSION_WORDS, max_length=MAX_MISSION_TOKENS):
        words = tuple(words)
        for word in words:
            if not isinstance(word, str) or not _WORD.fullmatch(word):
                raise ValueError(f"Vocabulary words must be lower-case letters; "
                                 f"got {word!r}.")
        if len(set(words)) != len(words):
            raise ValueError("Vocabulary words must be distinct.")
        self.words = words
        self.max_length = checked_int(max_length, "max_length")
        self.word_ids = {word: index + 2 for index, word in enumerate(words)}
        self._cache = {}

    @property
    def vocabulary_size(self):
        """Ids in use: the words plus pad (0) and unknown (1)."""
        return len(self.words) + 2

    @staticmethod
    def split(mission):
        """The lower-case words of a mission (BabyAI's tokenisation)."""
        return _WORD.findall(mission.lower())

    def encode_one(self, mission):
        """int32 ids (max_length,) of one mission string."""
        if not isinstance(mission, str):
            raise TypeError(f"A mission must be a string; got {type(mission).__name__}.")
        ids = self._cache.get(mission)
        if ids is None:
            ids = np.zeros(self.max_length, np.int32)
            tokens = [self.word_ids.get(word, UNKNOWN_ID) for word in self.split(mission)]
            tokens = tokens[:self.max_length]
            ids[:len(tokens)] = tokens
            if len(self._cache) < 10_000:  # missions repeat within an episode
                self._cache[mission] = ids
        return ids.copy()

    def encode(self, missions):
        """int32 ids (len(missions), max_length) of a sequence of strings."""
        if isinstance(missions, str):
            raise TypeError("encode takes a sequence of missions; wrap a single "
                            "mission in a list.")
        missions = list(missions)
        if not missions:
            return np.zeros((0, self.max_length), np.int32)
        return np.stack([self.encode_one(mission) for mission in missions])

    def decode(self, ids):
        """Mission strings of ids (batch, length): pads dropped, unknown
        words as '<unk>'."""
        names = ("<pad>", "<unk>") + self.words
        return [" ".join(names[i] for i in row if i != PAD_ID)
                for row in np.asarray(ids).reshape(-1, np.shape(ids)[-1]).tolist()]


class MultiLevelEnv(gymnasium.Env):
    """One environment over several BabyAI levels: every episode draws its
    level uniformly (module docstring, NOTE 1).

    Args:
        levels: level names (`LEVELS`); `task_id` is the index into them.
        seed: seed of the level draws and of the levels' environments when
            `reset` is called without one.
        tokenizer: the `MissionTokenizer` of the `mission` observation.

    Attributes:
        levels, task_id (the current episode's level index), level (its
        name), current (its MiniGrid environment).
    """

    metadata = {"render_modes": []}

    def __init__(self, levels=CPU_LEVELS, seed=0, tokenizer=None):
        self.levels = _check_levels(levels)
        require("minigrid", "rl", "BabyAI environments")
        import minigrid  # noqa: F401  (registers the BabyAI levels)

        self.tokenizer = tokenizer or MissionTokenizer()
        self.envs = [gymnasium.make(gym_id(level), disable_env_checker=True)
                     for level in self.levels]
        self.action_space = self.envs[0].action_space
        image = self.envs[0].observation_space["image"]
        self.observation_space = gymnasium.spaces.Dict({
            "image": gymnasium.spaces.Box(0, 255, image.shape, np.uint8),
            "direction": gymnasium.spaces.Discrete(4),
            "mission": gymnasium.spaces.Box(
                0, self.tokenizer.vocabulary_size - 1,
                (self.tokenizer.max_length,), np.int32),
        })
        self.task_id = 0
        self._reseed(checked_int(seed, "seed", minimum=0))

    @property
    def level(self):
        return self.levels[self.task_id]

    @property
    def current(self):
        return self.envs[self.task_id]

    def _reseed(self, seed):
        # Independent streams for the level draws and for each level's
        # environment (seeded at its next reset).
        children = np.random.SeedSequence(seed).spawn(1 + len(self.levels))
        self.level_rng = np.random.default_rng(children[0])
        self._pending_seeds = {k: int(child.generate_state(1)[0])
                               for k, child in enumerate(children[1:])}

    def _observation(self, observation):
        return {"image": observation["image"],
                "direction": int(observation["direction"]),
                "mission": self.tokenizer.encode_one(observation["mission"])}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._reseed(seed)
        self.task_id = int(self.level_rng.integers(len(self.levels)))
        # MiniGrid prints rejected samples while it generates a level.
        with contextlib.redirect_stdout(io.StringIO()):
            observation, info = self.current.reset(
                seed=self._pending_seeds.pop(self.task_id, None), options=options)
        return self._observation(observation), dict(info, task_id=self.task_id,
                                                    success=False)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.current.step(action)
        info = dict(info, task_id=self.task_id,
                    success=bool(terminated and reward > 0))
        return self._observation(observation), reward, terminated, truncated, info

    def close(self):
        for env in self.envs:
            env.close()


def make_multitask_env(levels=CPU_LEVELS, num_envs=16, seed=0):
    """The multitask vector environment (module docstring).

    Args:
        levels: level names (`LEVELS`), or one name; `info["task_id"]`
            indexes them.
        num_envs: positive int, environments stepped together.
        seed: int >= 0, environment i draws from `seed + i` until a
            `reset(seed=s)` reseeds it from `s + i`.

    Returns:
        A `gymnasium.vector.SyncVectorEnv` (SAME_STEP autoreset) whose
        infos carry `task_id` and `success`.

    Example (needs the `rl` extra):

    >>> env = make_multitask_env(num_envs=2)
    >>> observations, infos = env.reset(seed=0)
    >>> sorted(observations), observations["mission"].shape
    (['direction', 'image', 'mission'], (2, 9))
    >>> env.close()
    """
    levels = _check_levels(levels)
    num_envs = checked_int(num_envs, "num_envs")
    seed = checked_int(seed, "seed", minimum=0)
    factories = [(lambda index=index: MultiLevelEnv(levels, seed + index))
                 for index in range(num_envs)]
    return gymnasium.vector.SyncVectorEnv(
        factories, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)


def level_names(env):
    """The level names of a `make_multitask_env` environment, in task id
    order."""
    try:
        return tuple(env.get_attr("levels")[0])
    except AttributeError:
        raise ValueError("level_names needs an environment of make_multitask_env; "
                         f"got {type(env).__name__}.") from None


_DEFAULT_TOKENIZER = None


def prepare_observations(observations):
    """A batch of observations as the model's inputs: {"image": int32
    (N, 7, 7, 3), "mission": int32 (N, max_len)}.

    Takes the batched dict of `make_multitask_env` (or of a raw MiniGrid
    vector environment, whose missions are strings: they are tokenised
    with the default `MissionTokenizer`). Usable as an `OnPolicyLoop`'s
    `prepare_observations`: `loop.prepare_observations = prepare_observations`.

    >>> batch = {"image": np.zeros((2, 7, 7, 3), np.uint8), "direction": np.zeros(2),
    ...          "mission": ("go to the red ball", "pick up a key")}
    >>> inputs = prepare_observations(batch)
    >>> inputs["image"].dtype, inputs["mission"].shape
    (dtype('int32'), (2, 9))
    """
    global _DEFAULT_TOKENIZER
    if not isinstance(observations, dict) or not {"image", "mission"} <= set(observations):
        raise ValueError("BabyAI observations must be a dict with 'image' and "
                         f"'mission'; got {type(observations).__name__}"
                         + (f" with keys {sorted(observations)}"
                            if isinstance(observations, dict) else "") + ".")
    image = np.asarray(observations["image"])
    mission = observations["mission"]
    if not isinstance(mission, np.ndarray) or mission.dtype.kind in "OUS":
        mission = np.asarray(mission)
        if mission.dtype.kind in "OUS":
            if _DEFAULT_TOKENIZER is None:
                _DEFAULT_TOKENIZER = MissionTokenizer()
            mission = _DEFAULT_TOKENIZER.encode(mission.reshape(-1).tolist())
    if image.ndim != 4 or image.shape[1:] != (7, 7, 3):
        raise ValueError(f"BabyAI images must be (batch, 7, 7, 3); got {image.shape}.")
    if mission.ndim != 2 or mission.shape[0] != image.shape[0]:
        raise ValueError(f"BabyAI missions must be ({image.shape[0]}, length) token "
                         f"ids for {image.shape[0]} images; got {mission.shape}.")
    return {"image": image.astype(np.int32), "mission": mission.astype(np.int32)}


def random_policy_success(level, episodes=100, seed=0):
    """Success rate of uniformly random actions on `level` over `episodes`
    episodes (a baseline: reference-facts measured GoToObj .22, GoToLocal
    .27, PutNextLocal .005).

    >>> 0.0 <= random_policy_success("GoToObj", episodes=5) <= 1.0
    True
    """
    env = MultiLevelEnv((level,), seed=checked_int(seed, "seed", minimum=0))
    episodes = checked_int(episodes, "episodes")
    rng = np.random.default_rng(seed)
    successes = 0
    try:
        for episode in range(episodes):
            env.reset(seed=seed if episode == 0 else None)
            done = False
            while not done:
                _, _, terminated, truncated, info = env.step(
                    int(rng.integers(env.action_space.n)))
                done = terminated or truncated
            successes += info["success"]
    finally:
        env.close()
    return successes / episodes
