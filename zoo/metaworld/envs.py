"""Meta-World MT10 / MT50 as gymnasium vector environments, and evaluation.

`make_env("mt10")` is `gymnasium.make_vec("Meta-World/MT10", ...)` of
Meta-World 3 (V2 rewards, the one-hot task id appended to the 39-float
observation, float32, episodes truncated at 500 steps, never terminated:
`terminate_on_success=False`). Environment i is task i (its one-hot), so
the task ids of the vector are `arange(num_envs)`; `task_names(env)` gives
their Meta-World names.

Goals (`goals=`). Every task of MT10 / MT50 is one environment class whose
object and goal positions come from a per-class range. Meta-World 3 draws,
per environment, `num_goals` such positions once (from the benchmark's
seed) and picks one of them at random at every reset (its
`RandomTaskSelectWrapper`); the goal position is in the observation
(floats 36:39: the MT benchmarks are goal-observable).

    goals="random": 50 goals per task, one drawn per episode: Meta-World 3's
        default, Soft Modularization's "MT10-Conditioned" / "MT50-Conditioned".
    goals="fixed":  one goal per task, the same in every episode: Soft
        Modularization's "MT10-Fixed" / "MT50-Fixed" (the setting of its
        reported 87.0% / 60.0%), as in Meta-World v1's MT10 / MT50.

`evaluate_success` follows Meta-World's protocol: an episode succeeds if
`info["success"]` is reached at any of its steps; the success rate of a
task is the fraction of its episodes that succeed. `run_episodes` is the
loop under it, shared with the goal-conditioned pushing evaluation
(`goal_push.py`): an environment whose infos carry `task_id` (one int per
environment, training/env_loop.py NOTE 2) gives the policy those ids
instead of `arange(num_envs)`.

NOTE 1: Meta-World's own evaluation (`metaworld.evaluation`) runs 50
  episodes per task with the policy's mean action; the CPU default here is
  fewer episodes (`episodes_per_task`), with the same deterministic
  actions (tanh of the mean).
NOTE 2 (num_goals is a global): Meta-World 3's vector entry point stores
  `num_goals` in a module-global (`metaworld._N_GOALS`) that stays set for
  every benchmark built later in the process; `make_env` always passes it,
  so one call's choice never leaks into the next.
NOTE 3 (the last step): with SAME_STEP autoreset the infos of an episode's
  last step are those of the next episode's reset; the step's own infos
  are in `info["final_info"]`. `run_episodes` reads `success` there too, so
  a success reached only at the last step counts.
"""

import warnings

import numpy as np

from zoo.extras import require

BENCHMARKS = {"mt10": "Meta-World/MT10", "mt50": "Meta-World/MT50"}
# Goals per task of each `goals=` setting (module docstring).
GOALS = {"random": 50, "fixed": 1}


def make_env(benchmark="mt10", seed=0, vector_strategy="sync", goals="random"):
    """The benchmark's vector environment (module docstring).

    Args:
        benchmark: "mt10" or "mt50".
        seed: Seed of the benchmark's goals and of the environments.
        vector_strategy: "sync" or "async".
        goals: "random" (50 goals per task, one per episode: MT10 / MT50-
            Conditioned) or "fixed" (one goal per task: MT10 / MT50-Fixed).

    Example (needs the `rl` extra):

        env = make_env("mt10", goals="fixed")
        observations, _ = env.reset(seed=0)   # (10, 49) float32
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(
            f"Unknown benchmark {benchmark!r}; expected one of "
            f"{', '.join(BENCHMARKS)}.")
    if vector_strategy not in ("sync", "async"):
        raise ValueError(
            f"vector_strategy must be 'sync' or 'async'; got {vector_strategy!r}.")
    if goals not in GOALS:
        raise ValueError(
            f"goals must be one of {', '.join(map(repr, GOALS))}; got {goals!r}.")
    for module in ("gymnasium", "metaworld", "packaging"):
        require(module, "rl", "Meta-World environments")
    import gymnasium
    import metaworld  # noqa: F401  (registers the Meta-World environments)

    with warnings.catch_warnings():  # float64 bounds cast to float32
        warnings.simplefilter("ignore", UserWarning)
        return gymnasium.make_vec(
            BENCHMARKS[benchmark], vector_strategy=vector_strategy, seed=seed,
            use_one_hot=True, terminate_on_success=False,
            num_goals=GOALS[goals])  # NOTE 2: always explicit


def task_names(env):
    """The Meta-World name of each environment's task (e.g. 'reach')."""
    try:
        names = env.get_attr("task_name")
    except AttributeError:
        return [f"task_{i}" for i in range(env.num_envs)]
    return [name.removeprefix("Sawyer").removesuffix("EnvV3").removesuffix("EnvV2")
            for name in names]


def run_episodes(policy, env, episodes_per_env, seed=0):
    """Runs every environment of `env` for `episodes_per_env` whole episodes
    with `policy(observations, task_ids) -> actions`.

    Episodes truncate at the same step, so the vector runs them in
    lockstep; an environment that finishes first keeps stepping (its extra
    episodes are not reported). Task ids come from `info["task_id"]` when
    the environment reports them, else environment i is task i.

    Returns:
        A list per environment of its episodes in order, each a dict with
        `task_id` (int), `success` (bool: reached at any step, NOTE 3) and
        `final_obs` (the episode's last observation, float32).
    """
    episodes = [[] for _ in range(env.num_envs)]
    observations, infos = env.reset(seed=seed)
    task_ids = _task_ids(infos, env.num_envs)
    reached = np.zeros(env.num_envs, bool)
    while min(len(done) for done in episodes) < episodes_per_env:
        actions = np.asarray(policy(np.asarray(observations, np.float32), task_ids))
        observations, _, terminations, truncations, infos = env.step(actions)
        reached |= _flag(infos, "success", env.num_envs)
        finished = np.logical_or(terminations, truncations)
        if finished.any():
            reached |= _flag(infos.get("final_info", {}), "success", env.num_envs)  # NOTE 3
            for index in np.flatnonzero(finished):
                final = infos["final_obs"][index] if "final_obs" in infos else observations[index]
                episodes[index].append({
                    "task_id": int(task_ids[index]), "success": bool(reached[index]),
                    "final_obs": np.asarray(final, np.float32)})
                reached[index] = False
        task_ids = _task_ids(infos, env.num_envs, task_ids)
    return [done[:episodes_per_env] for done in episodes]


def _task_ids(infos, num_envs, previous=None):
    if "task_id" in infos:
        return np.asarray(infos["task_id"], np.int32)
    return np.arange(num_envs, dtype=np.int32) if previous is None else previous


def _flag(infos, key, num_envs):
    """`infos[key]` as booleans where present (its `_key` mask), else False.
    (training.env_loop.success_flags does the same for the training loops;
    this module stays free of keras, which importing training would load.)"""
    if key not in infos:
        return np.zeros(num_envs, bool)
    values = np.asarray(infos[key], bool)
    return values & np.asarray(infos.get(f"_{key}", np.ones(num_envs, bool)), bool)


def evaluate_success(policy, env, episodes_per_task=10, seed=0):
    """Per-task success rates of `policy(observations, task_ids) -> actions`.

    Every environment runs `episodes_per_task` whole episodes
    (`run_episodes`).

    Returns:
        `(success_rate, per_task)`: the mean over tasks and a list, one rate
        per environment.
    """
    episodes = run_episodes(policy, env, episodes_per_task, seed=seed)
    per_task = [float(np.mean([episode["success"] for episode in done]))
                for done in episodes]
    return float(np.mean(per_task)), per_task
