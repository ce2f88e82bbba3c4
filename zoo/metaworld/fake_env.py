"""A tiny multi-task vector environment with Meta-World's interface, for
fast tests and smoke runs of an off-policy loop without MuJoCo.

    env = FakeMultiTaskVectorEnv(num_tasks=3, observation_dim=4, action_dim=2)
    loop = OffPolicyLoop(env, TaskReplayBuffer(3, 1000, 4, 2), batch_per_task=16)

Environment i is task i. Observations are random; the reward is
`-mean((a - c_k)^2)` for a fixed target action c_k of task k, so a policy
that learns c_k per task raises its return. Episodes only truncate (after
`episode_length` steps) with SAME_STEP autoreset: the returned observation
is the next episode's first, the true last one is in `info["final_obs"]`.
`info["success"]` is true when the action is within 0.2 of the target.

With `num_envs` other than `num_tasks`, every episode of every environment
draws its task uniformly and the infos carry `task_id` (one per
environment, at reset and at every step), as goal-conditioned environments
do (training/off_policy.py NOTE 5).
"""

import gymnasium
import numpy as np


class FakeMultiTaskVectorEnv:
    """The module docstring's environment: `num_envs = num_tasks`, Box
    observations of `observation_dim` float32 and Box(-1, 1) actions of
    `action_dim`, like `gymnasium.vector.VectorEnv`."""

    def __init__(self, num_tasks=3, observation_dim=4, action_dim=2,
                 episode_length=10, seed=0, num_envs=None):
        num_envs = num_tasks if num_envs is None else num_envs
        for name, value in (("num_tasks", num_tasks), ("observation_dim", observation_dim),
                            ("action_dim", action_dim), ("episode_length", episode_length),
                            ("num_envs", num_envs)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        self.num_tasks = num_tasks
        self.num_envs = num_envs
        self.switching = num_envs != num_tasks
        self.task_ids = np.arange(num_envs) % num_tasks
        self.single_observation_space = gymnasium.spaces.Box(
            -np.inf, np.inf, (observation_dim,), np.float32)
        self.single_action_space = gymnasium.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.episode_length = episode_length
        self.targets = np.random.default_rng(seed).uniform(-0.8, 0.8, (num_tasks, action_dim))
        self.rng = np.random.default_rng(seed)
        self.elapsed = np.zeros(num_envs, int)
        self.steps_taken = 0

    def _observations(self):
        return self.rng.normal(size=(self.num_envs,) + self.single_observation_space.shape
                               ).astype(np.float32)

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.elapsed[:] = 0
        if self.switching:
            self.task_ids = self.rng.integers(0, self.num_tasks, self.num_envs)
        return self._observations(), self._infos()

    def _infos(self):
        return {"task_id": self.task_ids.copy()} if self.switching else {}

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) + self.single_action_space.shape:
            raise ValueError(
                f"Actions must have shape {(self.num_envs,) + self.single_action_space.shape}"
                f"; got {actions.shape}.")
        self.steps_taken += 1
        targets = self.targets[self.task_ids]
        errors = np.mean((actions - targets) ** 2, axis=-1)
        self.elapsed += 1
        truncations = self.elapsed >= self.episode_length
        observations = self._observations()
        infos = {"success": np.max(np.abs(actions - targets), -1) < 0.2}
        if truncations.any():
            infos["final_obs"] = observations.copy()
            infos["_final_obs"] = truncations.copy()
            restarted = self._observations()
            observations[truncations] = restarted[truncations]
            self.elapsed[truncations] = 0
            if self.switching:
                self.task_ids[truncations] = self.rng.integers(
                    0, self.num_tasks, int(truncations.sum()))
        infos.update(self._infos())
        return (observations, -errors.astype(np.float32),
                np.zeros(self.num_envs, bool), truncations, infos)
