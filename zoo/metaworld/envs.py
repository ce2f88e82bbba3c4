"""Meta-World MT10 / MT50 as gymnasium vector environments, and evaluation.

`make_env("mt10")` is `gymnasium.make_vec("Meta-World/MT10", ...)` of
Meta-World 3 (V2 rewards, the one-hot task id appended to the 39-float
observation, float32, episodes truncated at 500 steps, never terminated:
`terminate_on_success=False`). Environment i is task i (its one-hot), so
the task ids of the vector are `arange(num_envs)`; `task_names(env)` gives
their Meta-World names.

`evaluate_success` follows Meta-World's protocol: an episode succeeds if
`info["success"]` is reached at any of its steps; the success rate of a
task is the fraction of its episodes that succeed.

NOTE 1: Meta-World's own evaluation (`metaworld.evaluation`) runs 50
  episodes per task with the policy's mean action; the CPU default here is
  fewer episodes (`episodes_per_task`), with the same deterministic
  actions (tanh of the mean).
"""

import warnings

import numpy as np

from zoo.extras import require

BENCHMARKS = {"mt10": "Meta-World/MT10", "mt50": "Meta-World/MT50"}


def make_env(benchmark="mt10", seed=0, vector_strategy="sync"):
    """The benchmark's vector environment (module docstring)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(
            f"Unknown benchmark {benchmark!r}; expected one of "
            f"{', '.join(BENCHMARKS)}.")
    if vector_strategy not in ("sync", "async"):
        raise ValueError(
            f"vector_strategy must be 'sync' or 'async'; got {vector_strategy!r}.")
    for module in ("gymnasium", "metaworld", "packaging"):
        require(module, "rl", "Meta-World environments")
    import gymnasium
    import metaworld  # noqa: F401  (registers the Meta-World environments)

    with warnings.catch_warnings():  # float64 bounds cast to float32
        warnings.simplefilter("ignore", UserWarning)
        return gymnasium.make_vec(
            BENCHMARKS[benchmark], vector_strategy=vector_strategy, seed=seed,
            use_one_hot=True, terminate_on_success=False)


def task_names(env):
    """The Meta-World name of each environment's task (e.g. 'reach')."""
    try:
        names = env.get_attr("task_name")
    except AttributeError:
        return [f"task_{i}" for i in range(env.num_envs)]
    return [name.removeprefix("Sawyer").removesuffix("EnvV3").removesuffix("EnvV2")
            for name in names]


def evaluate_success(policy, env, episodes_per_task=10, seed=0):
    """Per-task success rates of `policy(observations, task_ids) -> actions`.

    Every environment runs `episodes_per_task` whole episodes (they
    truncate at the same step, so the vector runs them in lockstep).

    Returns:
        `(success_rate, per_task)`: the mean over tasks and a list, one rate
        per environment.
    """
    task_ids = np.arange(env.num_envs, dtype=np.int32)
    successes = np.zeros(env.num_envs)
    observations, _ = env.reset(seed=seed)
    for _ in range(episodes_per_task):
        reached = np.zeros(env.num_envs, bool)
        finished = np.zeros(env.num_envs, bool)
        while not finished.all():
            actions = np.asarray(policy(np.asarray(observations, np.float32), task_ids))
            observations, _, terminations, truncations, infos = env.step(actions)
            reached |= np.asarray(infos.get("success", np.zeros(env.num_envs)), bool) & ~finished
            finished |= np.logical_or(terminations, truncations)
        successes += reached
    per_task = (successes / episodes_per_task).tolist()
    return float(np.mean(per_task)), per_task
