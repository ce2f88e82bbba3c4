"""Presets of the Mint supervised family: the paper's network and the one
that matches its parameter counts, and the offline digits benchmark.

    from zoo.mint import from_preset
    model = from_preset("cifar100_paper", model="mint")    # built, not compiled
    model = from_preset("runs/mint-offline/mint/seed_0/preset")  # a saved one

A preset gives the network (`MultiTaskClassifier` arguments and the input
shape) and the training defaults the experiments use. A directory written
by `save_to_preset` (config.json + model.weights.h5) is a preset too.

NOTE 1 (which network matches which number): Appendix B describes 3
  convolutions of 160 filters and 2 dense layers of 320 with Mint
  ("cifar100_paper"); Table 1's parameter counts do not fit it. They are of
  the order of a 4 x conv 32 / dense 128 network, the CIFAR-MTL network of
  Rosenbaum et al. ("cifar100_small"). Counts (`count_params`, batch norm
  statistics included; checked by formula in the tests) beside Table 1:

  | model        | Table 1 | cifar100_small | cifar100_paper |
  |--------------|---------|----------------|----------------|
  | 1-fc         | 104K    | 75K            | 1.42M          |
  | all-fc       | 689K    | 703K           | 18.9M          |
  | cross-stitch | 1.23M   | 703K           | 18.9M          |
  | independent  | 1.56M   | 1.26M          | 27.8M          |
  | Mint         | 699K    | 723K           | 5.50M          |
  | FiLM         | -       | 73K            | 1.42M          |

  "cifar100_small" matches all-fc and Mint within 4%, 1-fc and independent
  within 30%; cross-stitch in Table 1 is larger than any of our columns
  (its units or columns were evidently wider). Compare Table 1's
  accuracies with "cifar100_small".
NOTE 2 (training): the paper gives no optimiser or schedule; the presets
  use Adam with the learning rates below, without weight decay.
"""

import json
import os

import keras

from zoo.mint.networks import MODELS, MultiTaskClassifier
from zoo.runs import lookup_preset


PRESETS = {
    "cifar100_small": {
        "description": "4 x conv 32, dense 128-128: the size of Table 1's "
                       "parameter counts (NOTE 1)",
        "input_shape": (32, 32, 3),
        "network": {"num_tasks": 20, "num_classes": 5,
                    "conv_filters": (32, 32, 32, 32), "dense_units": (128, 128)},
        "training": {"learning_rate": 1e-3, "batch_size": 128, "epochs": 30},
    },
    "cifar100_paper": {
        "description": "3 x conv 160, dense 320-320: Appendix B's network",
        "input_shape": (32, 32, 3),
        "network": {"num_tasks": 20, "num_classes": 5,
                    "conv_filters": (160, 160, 160), "dense_units": (320, 320)},
        "training": {"learning_rate": 1e-3, "batch_size": 128, "epochs": 30},
    },
    "digits": {
        "description": "offline benchmark: 10 permuted 8x8-digit tasks, 5-way, "
                       "MLP 16-16",
        "input_shape": (64,),
        "network": {"num_tasks": 10, "num_classes": 5, "conv_filters": (),
                    "dense_units": (16, 16)},
        "training": {"learning_rate": 3e-3, "batch_size": 64, "epochs": 10},
    },
}

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.weights.h5"


def get_preset(preset):
    """The preset's dict (a copy): a name of `PRESETS` or a saved directory."""
    return lookup_preset(preset, PRESETS, _CONFIG_FILE)


def from_preset(preset, model=None, **network_overrides):
    """A built `MultiTaskClassifier` from a preset name or a saved directory.

    Args:
        preset: a key of `PRESETS` or a directory from `save_to_preset`
            (whose weights are loaded).
        model: one of `MODELS`; required for a named preset, taken from the
            directory's config otherwise (giving another one is an error).
        **network_overrides: other `MultiTaskClassifier` arguments.

    Example:

    >>> model = from_preset("digits", model="mint")
    >>> model.count_params()  # MLP 64-16-16-5 and two Mint layers of 10 tasks
    6837
    """
    config = get_preset(preset)
    network = dict(config["network"], **network_overrides)
    saved_model = network.pop("model", None)
    if saved_model is not None and model not in (None, saved_model):
        raise ValueError(
            f"The preset at {preset!r} holds a {saved_model!r} model; got "
            f"model={model!r}."
        )
    model = model or saved_model
    if model not in MODELS:
        raise ValueError(
            f"from_preset needs model= one of {', '.join(MODELS)}; got {model!r}."
        )
    classifier = MultiTaskClassifier(model=model, **network)
    input_shape = tuple(config["input_shape"])
    classifier.build_for(input_shape)
    if saved_model is not None:
        classifier.load_weights(os.path.join(preset, _WEIGHTS_FILE))
    return classifier


def save_to_preset(model, directory, training=None):
    """Writes `model` (config + weights) as a preset directory.

    Args:
        model: a built `MultiTaskClassifier`.
        directory: where to write config.json and model.weights.h5.
        training: optional dict of training settings stored beside.
    """
    if not isinstance(model, MultiTaskClassifier):
        raise ValueError(
            f"save_to_preset needs a MultiTaskClassifier; got {type(model).__name__}."
        )
    if model.example_shape is None:
        raise ValueError(
            "save_to_preset needs a built model: call it once or use build_for."
        )
    os.makedirs(directory, exist_ok=True)
    network = {
        key: value for key, value in model.get_config().items()
        if key in ("num_tasks", "num_classes", "model", "conv_filters",
                   "dense_units", "kernel_size", "batch_norm",
                   "cross_stitch_self_weight")
    }
    config = {
        "input_shape": list(model.example_shape),
        "network": network,
        "training": dict(training or {}),
        "keras_version": keras.__version__,
    }
    with open(os.path.join(directory, _CONFIG_FILE), "w") as file:
        json.dump(config, file, indent=2)
    model.save_weights(os.path.join(directory, _WEIGHTS_FILE))
