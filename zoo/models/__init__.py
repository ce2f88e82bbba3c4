"""Prebuilt models."""

from zoo.models.task_mlp import TaskConditionedMLP

__all__ = ["TaskConditionedMLP"]
