"""Prebuilt models, presets, tasks, environments and the experiment runner.

Run `python -m zoo list` to see the bundled experiments and
`python -m zoo run <experiment> --backend jax` to run one.

Names are imported lazily so that `python -m zoo --backend ...` can choose
the Keras backend before keras is first imported.
"""

import importlib

_LAZY = {
    "EXPERIMENTS": "zoo.experiments",
    "make_synthetic_tasks": "zoo.tasks.synthetic",
    "TaskConditionedMLP": "zoo.models.task_mlp",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return __all__
