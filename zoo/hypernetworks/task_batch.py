"""`TaskBatch`: the meta-batch every task generator of this family returns.

A meta-batch holds `T` tasks, each with a support set (what the inner loop
adapts on) and a query set (what the adapted learner is scored on). Every
array has the task axis first:

    support_inputs   (T, n_support, *input_shape)   float32
    support_targets  (T, n_support, *target_shape)  float32 or int32
    query_inputs     (T, n_query, *input_shape)
    query_targets    (T, n_query, *target_shape)
    support_mask     (T, n_support) float32 or None (1: the example counts)
    query_mask       (T, n_query) float32 or None
    latents          (T, latent_dim) float32 or None: the ground-truth task
                     latent (module indicators, preference weights...), for
                     linear decodability; never fed to a learner.
"""

from typing import NamedTuple

import numpy as np

#: The keys of `TaskBatch.as_inputs()`, in order (the masks only if set).
INPUT_KEYS = (
    "support_inputs",
    "support_targets",
    "query_inputs",
    "query_targets",
    "support_mask",
    "query_mask",
)


class TaskBatch(NamedTuple):
    """A meta-batch of tasks, each with a support and a query set."""

    support_inputs: np.ndarray
    support_targets: np.ndarray
    query_inputs: np.ndarray
    query_targets: np.ndarray
    support_mask: np.ndarray = None
    query_mask: np.ndarray = None
    latents: np.ndarray = None

    @property
    def num_tasks(self):
        return int(self.support_inputs.shape[0])

    def as_inputs(self):
        """The dict a `MetaLearner` takes (`fit`, `evaluate`, `predict`):
        the four sets, plus the masks when they are set; no latents."""
        return {
            key: getattr(self, key)
            for key in INPUT_KEYS
            if getattr(self, key) is not None
        }

    def take(self, index):
        """The tasks `index` (an int array or slice) of this batch."""
        return TaskBatch(
            *(None if value is None else value[index] for value in self)
        )
