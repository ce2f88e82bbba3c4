"""Prebuilt models, presets, tasks, environments and the experiment runner.

Run `python -m zoo list` to see the bundled experiments and
`python -m zoo run <experiment> --backend jax` to run one.

Names are imported lazily so that `python -m zoo --backend ...` can choose
the Keras backend before keras is first imported.
"""

from zoo.lazy import lazy_attributes

_LAZY = {
    "EXPERIMENTS": "zoo.experiments",
    "make_synthetic_tasks": "zoo.tasks.synthetic",
    "TaskConditionedMLP": "zoo.models.task_mlp",
    "SkillBartSeq2SeqLM": "zoo.polytropon.bart",
    "SkillBartSeq2SeqLMPreprocessor": "zoo.polytropon.bart",
}

__getattr__, __dir__, __all__ = lazy_attributes(
    "zoo", _LAZY)
