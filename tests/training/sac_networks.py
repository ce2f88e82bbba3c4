"""Tiny actor and critic networks for the SAC tests (one hidden layer)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sac_tests")
class TinyActor(keras.Model):
    """(observations, task_ids) -> (mean, log_std) of a one-hidden-layer MLP
    on [observations, one_hot(task)]."""

    def __init__(self, num_tasks, action_dim, units=8, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.action_dim, self.units = num_tasks, action_dim, units
        self.hidden = keras.layers.Dense(units, activation="relu", name="hidden")
        self.mean = keras.layers.Dense(action_dim, name="mean")
        self.log_std = keras.layers.Dense(action_dim, name="log_std")

    def call(self, inputs):
        observations, task_ids = inputs
        hidden = self.hidden(ops.concatenate(
            [observations, ops.one_hot(task_ids, self.num_tasks)], axis=-1))
        return self.mean(hidden), self.log_std(hidden)

    def get_config(self):
        return dict(super().get_config(), num_tasks=self.num_tasks,
                    action_dim=self.action_dim, units=self.units)


@keras.saving.register_keras_serializable(package="sac_tests")
class TinyCritic(keras.Model):
    """(observations, actions, task_ids) -> Q (batch, 1)."""

    def __init__(self, num_tasks, units=8, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.units = num_tasks, units
        self.hidden = keras.layers.Dense(units, activation="relu", name="hidden")
        self.q = keras.layers.Dense(1, name="q")

    def call(self, inputs):
        observations, actions, task_ids = inputs
        return self.q(self.hidden(ops.concatenate(
            [observations, actions, ops.one_hot(task_ids, self.num_tasks)], axis=-1)))

    def get_config(self):
        return dict(super().get_config(), num_tasks=self.num_tasks, units=self.units)
