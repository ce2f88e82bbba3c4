"""Mint supervised multi-task learning ("Mint: Matrix-Interleaving for
Multi-Task Learning", ICLR 2020 submission, Section 6.1): CIFAR-100 as 20 five-way tasks, the
baselines (1-fc, all-fc, cross-stitch, FiLM, independent networks) and Mint,
their presets, and an offline benchmark of permuted, regrouped 8x8 digits.

    from zoo.mint import load_cifar100_tasks, from_preset
    train = load_cifar100_tasks("train", data_dir="DIR")
    model = from_preset("cifar100_small", model="mint")

Names are imported lazily so that importing the family (the runner does,
to list its experiments) does not import keras or TensorFlow before the
backend is set.
"""

from zoo.lazy import lazy_attributes

# The models of `MultiTaskClassifier` (networks.py), here so that the
# runner can list them without importing keras.
MODELS = ("1-fc", "all-fc", "cross-stitch", "film", "independent", "mint")

_LAZY = {
    "load_cifar100_tasks": "zoo.mint.cifar100",
    "check_coarse_labels": "zoo.mint.cifar100",
    "split_fine_labels": "zoo.mint.cifar100",
    "FINE_TO_COARSE": "zoo.mint.cifar100",
    "TASK_FINE_LABELS": "zoo.mint.cifar100",
    "CIFAR100NotFoundError": "zoo.mint.cifar100",
    "make_digit_tasks": "zoo.mint.digits",
    "DigitTasks": "zoo.mint.digits",
    "MultiTaskClassifier": "zoo.mint.networks",
    "from_preset": "zoo.mint.presets",
    "save_to_preset": "zoo.mint.presets",
    "PRESETS": "zoo.mint.presets",
    "get_preset": "zoo.mint.presets",
}

__getattr__, __dir__, __all__ = lazy_attributes(
    "zoo.mint", _LAZY, eager=("MODELS",))
