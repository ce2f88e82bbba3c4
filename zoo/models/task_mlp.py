"""A task-conditioned MLP trained through the project's training core.

The baseline of the synthetic multi-task experiment: a shared MLP whose input
is the features concatenated with a learned task embedding.
"""

import keras
from keras import ops

from training import StepModel
from layers.layers_backend import check_index_range


@keras.saving.register_keras_serializable(package="modular_zoo")
class TaskConditionedMLP(StepModel):
    """MLP on `[features, embedding(task_id)]`, trained with `StepModel`.

    h_0 = [x, E[k]],   h_{i+1} = relu(h_i W_i + b_i),   y = h_L W_out + b_out

    Args:
        num_tasks: number of tasks (rows of the embedding table E).
        output_dim: size of y.
        hidden_units: sizes of the hidden layers.
        task_embedding_dim: size of E's rows.

    Call arguments:
        inputs: a tuple `(features, task_ids)`: features (batch, in) float,
            task_ids (batch,) int in [0, num_tasks).

    Example:
    >>> import numpy as np
    >>> model = TaskConditionedMLP(num_tasks=3, output_dim=2)
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x = np.zeros((8, 5), "float32"); t = np.arange(8) % 3
    >>> model.fit((x, t), np.zeros((8, 2), "float32"), verbose=0).history.keys()
    dict_keys(['loss'])
    """

    def __init__(
        self,
        num_tasks,
        output_dim,
        hidden_units=(64, 64),
        task_embedding_dim=8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        self.output_dim = int(output_dim)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.task_embedding_dim = int(task_embedding_dim)
        self.task_embedding = keras.layers.Embedding(
            self.num_tasks, self.task_embedding_dim, name="task_embedding"
        )
        self.hidden_layers = [
            keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")
            for i, units in enumerate(self.hidden_units)
        ]
        self.output_layer = keras.layers.Dense(self.output_dim, name="output")

    def call(self, inputs):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(
                "TaskConditionedMLP expects inputs (features, task_ids); got "
                f"{type(inputs).__name__}."
            )
        features, task_ids = inputs
        task_ids = ops.cast(task_ids, "int32")
        check_index_range(task_ids, self.num_tasks)
        hidden = ops.concatenate(
            [features, ops.cast(self.task_embedding(task_ids), features.dtype)],
            axis=-1,
        )
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        return self.output_layer(hidden)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tasks=self.num_tasks,
            output_dim=self.output_dim,
            hidden_units=list(self.hidden_units),
            task_embedding_dim=self.task_embedding_dim,
        )
        return config
