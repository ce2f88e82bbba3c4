"""A tiny discrete multi-task vector environment and tiny policies for the
PPO tests.

Environment i is task i % num_tasks; task k is solved by action c_k: the
episode terminates when the policy takes it, with BabyAI's reward
1 - 0.9 n / episode_length at step n, and truncates after `episode_length`
steps with reward 0. Observations are random, so a
policy must learn c_k from the task id.
"""

import gymnasium
import keras
import numpy as np
from keras import ops


class FakeDiscreteTaskEnv:
    def __init__(self, num_envs=4, num_tasks=2, observation_dim=3, num_actions=4,
                 episode_length=6, seed=0):
        self.num_envs, self.num_tasks = num_envs, num_tasks
        self.single_observation_space = gymnasium.spaces.Box(
            -np.inf, np.inf, (observation_dim,), np.float32)
        self.single_action_space = gymnasium.spaces.Discrete(num_actions)
        self.episode_length = episode_length
        self.targets = np.random.default_rng(seed + 1).integers(0, num_actions, num_tasks)
        self.task_of_env = np.arange(num_envs) % num_tasks
        self.rng = np.random.default_rng(seed)
        self.elapsed = np.zeros(num_envs, int)

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
        solved = actions == self.targets[self.task_of_env]
        self.elapsed += 1
        truncations = ~solved & (self.elapsed >= self.episode_length)
        rewards = np.where(solved, 1.0 - 0.9 * self.elapsed / self.episode_length,
                           0.0).astype(np.float32)
        observations = self._observations()
        infos = {"success": solved}
        ended = solved | truncations
        if ended.any():
            infos["final_obs"] = observations.copy()
            infos["_final_obs"] = ended
            observations[ended] = self._observations()[ended]
            self.elapsed[ended] = 0
        return observations, rewards, solved, truncations, infos


@keras.saving.register_keras_serializable(package="ppo_tests")
class TinyPolicy(keras.Model):
    """(observations, task_ids) -> (logits, values) of an MLP on
    [observations, one_hot(task)]."""

    def __init__(self, num_tasks, num_actions, units=16, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.num_actions, self.units = num_tasks, num_actions, units
        self.hidden = keras.layers.Dense(units, activation="tanh")
        self.logits = keras.layers.Dense(num_actions)
        self.value = keras.layers.Dense(1)

    def call(self, inputs):
        observations, task_ids = inputs
        hidden = self.hidden(ops.concatenate(
            [observations, ops.one_hot(task_ids, self.num_tasks)], axis=-1))
        return self.logits(hidden), self.value(hidden)

    def get_config(self):
        return dict(super().get_config(), num_tasks=self.num_tasks,
                    num_actions=self.num_actions, units=self.units)


@keras.saving.register_keras_serializable(package="ppo_tests")
class TinyRecurrentPolicy(keras.Model):
    """(observations, task_ids, memory) -> (logits, values, memory): an
    Elman cell memory = tanh(W [x, one_hot(task)] + U memory)."""

    def __init__(self, num_tasks, num_actions, memory_size=8, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.num_actions = num_tasks, num_actions
        self.memory_size = memory_size
        self.input_map = keras.layers.Dense(memory_size)
        self.recurrent_map = keras.layers.Dense(memory_size, use_bias=False)
        self.logits = keras.layers.Dense(num_actions)
        self.value = keras.layers.Dense(1)

    def call(self, inputs):
        observations, task_ids, memory = inputs
        features = ops.concatenate([observations, ops.one_hot(task_ids, self.num_tasks)], -1)
        memory = ops.tanh(self.input_map(features) + self.recurrent_map(memory))
        return self.logits(memory), self.value(memory), memory

    def get_config(self):
        return dict(super().get_config(), num_tasks=self.num_tasks,
                    num_actions=self.num_actions, memory_size=self.memory_size)
