"""MINT's goal-conditioned pushing: Meta-World push-v3 over a fixed,
discretised set of goals, as a gymnasium vector environment.

Paper: "Mint: Matrix-Interleaving for Multi-Task Learning", ICLR 2020
submission (papers/mint-matrix-interleaving.txt, Section 6.3 and Appendix
B). A Sawyer arm pushes a puck to a goal; a goal g is the puck's initial
(x, y) and the goal's (x, y). "To prevent from creating infinite number of
replay buffers, we discretize the goal space into 200 goals": the goal set
is drawn once, and each goal is one task of the multi-task SAC (its own
replay region, training/replay_buffer.py).

    env = make_push_env(num_envs=9, num_goals=200, seed=0)
    table = goal_table(env)            # (200, 4) float32: puck xy, goal xy
    observations, infos = env.reset(seed=0)
    infos["task_id"]                   # the goal of each environment's episode

`make_push_env` is a `gymnasium.vector.SyncVectorEnv` (SAME_STEP autoreset)
of `num_envs` push-v3 environments (V2 rewards, goal-observable 39-float
observations as float32, truncated after 500 steps, never terminated:
Meta-World's `terminate_on_success=False`). Every episode of every
environment draws one goal index uniformly from the table, sets it through
Meta-World's task machinery (`set_task` with a frozen `rand_vec`: the
environment's reset then places the puck and the goal exactly there) and
reports it as `info["task_id"]` at reset and at every step, so that
`training.off_policy.OffPolicyLoop` files each transition under its goal
(training/env_loop.py NOTE 2). `evaluate_goals` measures the mean success
and the mean final puck-goal distance over a fixed list of goals.

NOTE 1 (goal ranges): Appendix B draws the puck (x, y) from [-0.2, 0.6] to
  [0.2, 0.7] and the goal (x, y) from [-0.2, 0.85] to [0.2, 0.95] (in the
  older multiworld Sawyer push environment). Here both come from push-v3's
  own ranges, puck [-0.1, 0.6] to [0.1, 0.7] and goal [-0.1, 0.8] to
  [0.1, 0.9] (`PUCK_RANGE`, `GOAL_RANGE`): half the paper's width in x, the
  goal 0.05 closer in y. Meta-World clips observations to its own goal
  space, so a goal outside these ranges would be misreported to the policy.
NOTE 2 (minimum distance): push-v3's reset redraws its random vector until
  the puck and the goal are at least 0.15 apart in (x, y); with a frozen
  vector that loop would never end, so goals are drawn the same way (a
  6-float vector uniform in push-v3's reset space, redrawn while closer
  than 0.15), which also keeps their distribution that of push-v3. The z
  entries of the vector are unused by push-v3 (both heights are the
  puck's resting height).
NOTE 3 (rollouts): the paper samples "a batch of 9 goals and collect[s] 3
  paths for each goal" per rollout step. Here 9 environments step together
  and each episode draws its goal independently (with replacement across
  environments), one path per draw, one vector step per update
  (OffPolicyLoop). Updates sample 9 goals (`tasks_per_batch`) as in the
  paper.
NOTE 4 (goal table and seeds): the table depends on `goal_seed` only, so a
  training and an evaluation environment built with different `seed`s
  share it; `seed` drives the goal draws of the episodes (re-seeded by
  `reset(seed=...)`: environment i from `seed + i`).
NOTE 5 (observation space): push-v3 is built goal-hidden and made
  goal-observable by its first `set_task`, but keeps the observation space
  it was built with (goal bounds 0); the wrapper exposes the goal-observable
  bounds, as float32.
"""

import pickle
import warnings

import gymnasium
import numpy as np

from zoo.extras import checked_int, require

ENV_NAME = "push-v3"
EPISODE_LENGTH = 500
# push-v3's reset ranges (metaworld/envs/sawyer_push_v3.py obj_low/high,
# goal_low/high; NOTE 1). Rows: low, high; columns x, y, z.
PUCK_RANGE = np.array([[-0.1, 0.6, 0.02], [0.1, 0.7, 0.02]])
GOAL_RANGE = np.array([[-0.1, 0.8, 0.01], [0.1, 0.9, 0.02]])
MIN_DISTANCE = 0.15  # NOTE 2
GOAL_DIM = 4  # puck x, y, goal x, y


def draw_goals(num_goals=200, goal_seed=0):
    """push-v3 random vectors (num_goals, 6): puck xyz then goal xyz, uniform
    in push-v3's reset space, at least 0.15 apart in (x, y) (NOTE 2).

    >>> vectors = draw_goals(5, goal_seed=0)
    >>> vectors.shape
    (5, 6)
    >>> bool(np.all(np.linalg.norm(vectors[:, :2] - vectors[:, 3:5], axis=1) >= 0.15))
    True
    """
    num_goals = checked_int(num_goals, "num_goals")
    rng = np.random.default_rng(checked_int(goal_seed, "goal_seed", minimum=0))
    low = np.concatenate([PUCK_RANGE[0], GOAL_RANGE[0]])
    high = np.concatenate([PUCK_RANGE[1], GOAL_RANGE[1]])
    vectors = []
    while len(vectors) < num_goals:
        vector = rng.uniform(low, high)
        if np.linalg.norm(vector[:2] - vector[3:5]) >= MIN_DISTANCE:
            vectors.append(vector)
    return np.stack(vectors)


def descriptors(vectors):
    """Goal descriptors g = (puck x, puck y, goal x, goal y), float32."""
    return np.asarray(vectors)[:, [0, 1, 3, 4]].astype(np.float32)


class GoalSelectWrapper(gymnasium.Wrapper):
    """One push-v3 environment whose every episode takes a goal of the
    table: the next of `goal_schedule` if any, else a uniform draw; the
    goal's index is `info["task_id"]` at reset and at every step."""

    def __init__(self, env, vectors, seed):
        super().__init__(env)
        from metaworld.types import Task

        cls = type(env.unwrapped)
        self.goal_table = descriptors(vectors)
        self._tasks = [Task(env_name=ENV_NAME, data=pickle.dumps({
            "env_cls": cls, "rand_vec": np.asarray(vector, np.float64),
            "partially_observable": False})) for vector in vectors]
        self.goal_rng = np.random.default_rng(seed)
        self.goal_schedule = []
        self.task_id = 0
        env.unwrapped.set_task(self._tasks[0])
        space = env.unwrapped.sawyer_observation_space  # NOTE 5
        self.observation_space = gymnasium.spaces.Box(
            space.low.astype(np.float32), space.high.astype(np.float32),
            dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.goal_rng = np.random.default_rng(seed)
        if self.goal_schedule:
            self.task_id = int(self.goal_schedule.pop(0))
        else:
            self.task_id = int(self.goal_rng.integers(len(self._tasks)))
        # Meta-World's task machinery: a frozen rand_vec that reset_model
        # turns into the puck's and the goal's positions.
        self.env.unwrapped.set_task(self._tasks[self.task_id])
        observation, info = self.env.reset(seed=seed, options=options)
        return np.asarray(observation, np.float32), dict(info, task_id=self.task_id)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return (np.asarray(observation, np.float32), reward, terminated,
                truncated, dict(info, task_id=self.task_id))


def _make_one(vectors, seed, episode_length):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS[ENV_NAME]()  # V2 rewards by default
    env.seed(seed)
    env = gymnasium.wrappers.TimeLimit(env, episode_length)
    return GoalSelectWrapper(env, vectors, seed)


def make_push_env(num_envs=9, num_goals=200, seed=0, goal_seed=0,
                  episode_length=EPISODE_LENGTH):
    """The goal-conditioned pushing vector environment (module docstring).

    Args:
        num_envs: Positive int, environments stepped together (9: the
            paper's 9 goals per rollout, NOTE 3).
        num_goals: Positive int, the size of the goal table (200).
        seed: Int >= 0, seed of the environments and of their goal draws
            (environment i: `seed + i`; NOTE 4).
        goal_seed: Int >= 0, seed of the goal table (NOTE 4).
        episode_length: Positive int <= 500, steps before truncation
            (Meta-World's 500; shorter only for tests and smoke runs).

    Returns:
        A `gymnasium.vector.SyncVectorEnv` whose infos carry `task_id`.

    Example (needs the `rl` extra):

        env = make_push_env(num_envs=2, num_goals=10)
        observations, infos = env.reset(seed=0)    # (2, 39) float32
        goal_table(env)[infos["task_id"]]          # the episodes' goals
    """
    num_envs = checked_int(num_envs, "num_envs")
    episode_length = checked_int(episode_length, "episode_length")
    if episode_length > EPISODE_LENGTH:
        raise ValueError(
            f"episode_length must be at most {EPISODE_LENGTH} (Meta-World's "
            f"max_path_length); got {episode_length}.")
    seed = checked_int(seed, "seed", minimum=0)
    vectors = draw_goals(num_goals, goal_seed)
    for module in ("metaworld", "packaging"):
        require(module, "rl", "Meta-World environments")
    import metaworld  # noqa: F401

    factories = [
        (lambda index=index: _make_one(vectors, seed + index, episode_length))
        for index in range(num_envs)]
    with warnings.catch_warnings():  # float64 bounds cast to float32
        warnings.simplefilter("ignore", UserWarning)
        return gymnasium.vector.SyncVectorEnv(
            factories, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)


def goal_table(env):
    """The goal descriptors of a `make_push_env` environment, (num_goals, 4)
    float32: row k is goal k's (puck x, puck y, goal x, goal y)."""
    try:
        tables = env.get_attr("goal_table")
    except AttributeError:
        raise ValueError(
            "goal_table needs an environment of make_push_env (its "
            "environments have a goal table); got "
            f"{type(env).__name__}.") from None
    return np.array(tables[0], np.float32)


def final_distances(observations):
    """Puck-goal distances of Meta-World observations (..., 39): floats 4:7
    are the puck's position, 36:39 the goal's (push-v3's `obj_to_target`)."""
    observations = np.asarray(observations)
    return np.linalg.norm(observations[..., 4:7] - observations[..., 36:39], axis=-1)


def evaluate_goals(policy, env, goal_ids, seed=0):
    """Success and final puck-goal distance of `policy` on given goals.

    Goal `goal_ids[j]` is one episode of environment `j % num_envs`
    (scheduled through the environments' `goal_schedule`), run with
    `envs.run_episodes`; success is reached at any step, the distance is
    that of the episode's last observation.

    Args:
        policy: `policy(observations, task_ids) -> actions`.
        env: An environment of `make_push_env`.
        goal_ids: Sequence of goal indices (repeats allowed), at least one.
        seed: Seed of the episodes' reset.

    Returns:
        A dict: `success_rate` and `final_distance` (means over the goals),
        and `per_goal`, one `(goal_id, success, final_distance)` per entry
        of `goal_ids`, in order.
    """
    from zoo.metaworld.envs import run_episodes

    num_goals = len(goal_table(env))
    goal_ids = [int(goal) for goal in goal_ids]
    if not goal_ids or min(goal_ids) < 0 or max(goal_ids) >= num_goals:
        raise ValueError(
            f"goal_ids must be a non-empty list of goals in [0, {num_goals}); "
            f"got {goal_ids!r}.")
    schedules = [goal_ids[index::env.num_envs] for index in range(env.num_envs)]
    env.set_attr("goal_schedule", [list(schedule) for schedule in schedules])
    try:
        episodes = run_episodes(policy, env, max(len(s) for s in schedules), seed=seed)
    finally:
        env.set_attr("goal_schedule", [[] for _ in range(env.num_envs)])
    per_goal = []
    for position, goal in enumerate(goal_ids):
        episode = episodes[position % env.num_envs][position // env.num_envs]
        if episode["task_id"] != goal:
            raise RuntimeError(f"episode of goal {goal} ran goal {episode['task_id']}")
        per_goal.append((goal, episode["success"],
                         float(final_distances(episode["final_obs"]))))
    return {
        "success_rate": float(np.mean([success for _, success, _ in per_goal])),
        "final_distance": float(np.mean([distance for _, _, distance in per_goal])),
        "per_goal": per_goal,
    }
