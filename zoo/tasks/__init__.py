"""Task generators and data sets (synthetic tasks need no download)."""

from zoo.tasks.synthetic import make_synthetic_tasks

__all__ = ["make_synthetic_tasks"]
