"""A tiny multi-task vector environment with Meta-World's interface.

Environment i is task i. Observations are random; the reward is
`-mean((a - c_k)^2)` for a fixed target action c_k of task k, so a policy
that learns c_k per task raises its return. Episodes only truncate (after
`episode_length` steps) with SAME_STEP autoreset: the returned observation
is the next episode's first, the true last one is in `info["final_obs"]`.
`info["success"]` is true when the action is within 0.2 of the target.
"""

import gymnasium
import numpy as np


class FakeMultiTaskVectorEnv:
    def __init__(self, num_tasks=3, observation_dim=4, action_dim=2,
                 episode_length=10, seed=0):
        self.num_envs = num_tasks
        self.single_observation_space = gymnasium.spaces.Box(
            -np.inf, np.inf, (observation_dim,), np.float32)
        self.single_action_space = gymnasium.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.episode_length = episode_length
        self.targets = np.random.default_rng(seed).uniform(-0.8, 0.8, (num_tasks, action_dim))
        self.rng = np.random.default_rng(seed)
        self.elapsed = np.zeros(num_tasks, int)
        self.steps_taken = 0

    def _observations(self):
        return self.rng.normal(size=(self.num_envs,) + self.single_observation_space.shape
                               ).astype(np.float32)

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.elapsed[:] = 0
        return self._observations(), {}

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) + self.single_action_space.shape:
            raise ValueError(f"bad action shape {actions.shape}")
        self.steps_taken += 1
        errors = np.mean((actions - self.targets) ** 2, axis=-1)
        self.elapsed += 1
        truncations = self.elapsed >= self.episode_length
        observations = self._observations()
        infos = {"success": np.max(np.abs(actions - self.targets), -1) < 0.2}
        if truncations.any():
            infos["final_obs"] = observations.copy()
            infos["_final_obs"] = truncations.copy()
            restarted = self._observations()
            observations[truncations] = restarted[truncations]
            self.elapsed[truncations] = 0
        return (observations, -errors.astype(np.float32),
                np.zeros(self.num_envs, bool), truncations, infos)
