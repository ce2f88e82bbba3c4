"""Backend-agnostic training core: steps written once for JAX, TF and torch."""

from training.backend import value_and_grad
from training.step_model import StepModel, StepState

__all__ = ["StepModel", "StepState", "value_and_grad"]
