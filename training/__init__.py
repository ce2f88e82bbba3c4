"""Backend-agnostic training core: steps written once for JAX, TF and torch."""

from training.backend import value_and_grad
from training.state import StepState
from training.step_model import StepModel

# The algorithms (imported from their modules, they pull in more):
#   training.meta_learning.MetaLearner, training.sac.MultiTaskSAC,
#   training.few_shot.add_new_tasks / few_shot_adapt (Polytropon few-shot),
#   training.replay_buffer.TaskReplayBuffer.

__all__ = ["StepModel", "StepState", "value_and_grad"]
