"""Modular hypernetworks (Schug et al., ICLR 2024): meta-learners, presets,
task families and the paper's experiments.

    from zoo.hypernetworks import from_preset, Hyperteacher
    model = from_preset("hyperteacher/linear-hnet", output_dim=8, loss="kl")

Names are imported lazily so that importing the family (the runner does,
to list its experiments) does not import keras before the backend is set.
"""

from zoo.lazy import lazy_attributes

_LAZY = {
    "HypernetworkLearner": "zoo.hypernetworks.learners",
    "ANILLearner": "zoo.hypernetworks.learners",
    "MAMLLearner": "zoo.hypernetworks.learners",
    "from_preset": "zoo.hypernetworks.presets",
    "save_to_preset": "zoo.hypernetworks.presets",
    "preset_names": "zoo.hypernetworks.presets",
    "Hyperteacher": "zoo.hypernetworks.hyperteacher",
    "TeacherStudent": "zoo.hypernetworks.teacher_student",
    "module_alignment": "zoo.hypernetworks.teacher_student",
    "PreferencesGridWorld": "zoo.hypernetworks.grid_worlds",
    "GoalsGridWorld": "zoo.hypernetworks.grid_worlds",
    "TaskBatch": "zoo.hypernetworks.task_batch",
    "linear_decodability": "zoo.hypernetworks.metrics",
}

__getattr__, __dir__, __all__ = lazy_attributes(
    "zoo.hypernetworks", _LAZY)
