"""Presets: the paper's configurations and CPU-sized ones, per task family.

`from_preset("hyperteacher/linear-hnet")` builds a compiled `MetaLearner`
(network, inner loop and outer optimizer) from the table below;
`"hyperteacher/linear-hnet/paper"` picks the paper's configuration (the
authors' config files, `configs/hyperteacher.py`, `compositional_grid.py`,
`preference_grid.py`; reference-facts.md), the default `cpu` the one sized
for a 2-core CPU. A directory written by `save_to_preset` is a preset too.

CPU sizes: on this 2-core CPU the authors' ANIL-512 and MAML-384 ran 0.13
and 0.2 outer steps/s and barely trained in 20 minutes; the CPU presets use
width 128-256 and 10-20 inner steps (so that every model trains in the same
wall-clock budget), meta-batch 16 and 64/64 shots on the hyperteacher.

NOTE 1 (CPU presets): the inner learning rate of the CPU ANIL (20 steps
  instead of 100) is raised from 0.03 to 0.1 so that its head moves as far
  in fewer steps; all CPU outer learning rates are 3e-3 (the calibration's)
  except where the paper's is already higher.
"""

import copy
import json
import os

import keras

from training.meta_learning import MetaLearner
from zoo.hypernetworks.learners import (
    ANILLearner,
    HypernetworkLearner,
    MAMLLearner,
)

MODELS = ("linear-hnet", "nonlinear-hnet", "anil", "maml")
TASKS = ("hyperteacher", "teacher-student", "grid-preferences", "grid-goals")
SIZES = ("cpu", "paper")
_NETWORKS = {
    "linear-hnet": HypernetworkLearner,
    "nonlinear-hnet": HypernetworkLearner,
    "anil": ANILLearner,
    "maml": MAMLLearner,
}


def _config(network, inner, optimizer, data):
    return {"network": network, "inner": inner, "optimizer": optimizer,
            "data": data}


def _hnet(generator, **network):
    return dict(network, generator=generator)


def _inner(steps, learning_rate, weight_decay=1e-4, optimizer="adamw"):
    # Inner AdamW with optax.adamw's default weight decay (1e-4), as the
    # authors' code.
    return {"inner_steps": steps, "inner_learning_rate": learning_rate,
            "inner_weight_decay": weight_decay, "inner_optimizer": optimizer}


def _outer(learning_rate, weight_decay, clipnorm):
    return {"learning_rate": learning_rate, "weight_decay": weight_decay,
            "global_clipnorm": clipnorm}


def _data(meta_batch, support_shots, query_shots, outer_steps):
    return {"meta_batch": meta_batch, "support_shots": support_shots,
            "query_shots": query_shots, "outer_steps": outer_steps}


_HT_PAPER = _data(128, 256, 256, 200_000)
_HT_CPU = _data(16, 64, 64, 600)
_GOALS_PAPER = _data(128, 1, 1, 200_000)
_GOALS_CPU = _data(16, 1, 1, 600)
_PREF_PAPER = _data(128, 16, 16, 100_000)
_PREF_CPU = _data(16, 16, 16, 600)
_TS = _data(16, 64, 64, 1_500)

PRESETS = {
    "hyperteacher": {
        "linear-hnet": {
            "paper": _config(_hnet("linear", hidden_units=128, embedding_dim=16),
                             _inner(10, 0.3), _outer(1e-3, 1e-2, 1.0), _HT_PAPER),
            "cpu": _config(_hnet("linear", hidden_units=64, embedding_dim=16),
                           _inner(10, 0.3), _outer(3e-3, 1e-2, 1.0), _HT_CPU),
        },
        "nonlinear-hnet": {
            "paper": _config(_hnet("mlp", hidden_units=128, embedding_dim=16),
                             _inner(10, 0.3), _outer(3e-3, 1e-2, 1.0), _HT_PAPER),
            "cpu": _config(_hnet("mlp", hidden_units=64, embedding_dim=16),
                           _inner(10, 0.3), _outer(3e-3, 1e-2, 1.0), _HT_CPU),
        },
        "anil": {
            "paper": _config({"hidden_units": 512}, _inner(100, 0.03),
                             _outer(1e-3, 1e-4, 2.0), _HT_PAPER),
            "cpu": _config({"hidden_units": 256}, _inner(20, 0.1),  # NOTE 1
                           _outer(3e-3, 1e-4, 2.0), _HT_CPU),
        },
        "maml": {
            "paper": _config({"hidden_units": 384}, _inner(10, 0.01),
                             _outer(1e-3, 1e-4, 2.0), _HT_PAPER),
            "cpu": _config({"hidden_units": 128}, _inner(10, 0.01),
                           _outer(3e-3, 1e-4, 2.0), _HT_CPU),
        },
    },
    "teacher-student": {
        "linear-hnet": {
            size: _config(
                _hnet("linear", hidden_units=16, num_hidden_layers=1,
                      embedding_dim=6, generate_bias=False),
                _inner(10, 0.3), _outer(3e-3, 0.0, 1.0), _TS)
            for size in SIZES
        },
        "nonlinear-hnet": {
            size: _config(
                _hnet("mlp", hidden_units=16, num_hidden_layers=1,
                      embedding_dim=6, generate_bias=False),
                _inner(10, 0.3), _outer(3e-3, 0.0, 1.0), _TS)
            for size in SIZES
        },
        "anil": {size: _config({"hidden_units": 128, "num_hidden_layers": 1},
                               _inner(20, 0.1), _outer(3e-3, 1e-4, 2.0), _TS)
                 for size in SIZES},
        "maml": {size: _config({"hidden_units": 64, "num_hidden_layers": 1},
                               _inner(10, 0.01), _outer(3e-3, 1e-4, 2.0), _TS)
                 for size in SIZES},
    },
    "grid-goals": {
        "linear-hnet": {
            "paper": _config(_hnet("linear", hidden_units=32, num_hidden_layers=2,
                                   embedding_dim=8),
                             _inner(10, 0.3), _outer(3e-3, 1e-2, 2.0), _GOALS_PAPER),
            "cpu": _config(_hnet("linear", hidden_units=32, num_hidden_layers=2,
                                 embedding_dim=8),
                           _inner(10, 0.3), _outer(3e-3, 1e-2, 2.0), _GOALS_CPU),
        },
        "nonlinear-hnet": {
            "paper": _config(_hnet("mlp", hidden_units=32, num_hidden_layers=2,
                                   embedding_dim=8),
                             _inner(10, 0.1), _outer(1e-3, 1e-2, 1.0), _GOALS_PAPER),
            "cpu": _config(_hnet("mlp", hidden_units=32, num_hidden_layers=2,
                                 embedding_dim=8),
                           _inner(10, 0.1), _outer(3e-3, 1e-2, 1.0), _GOALS_CPU),
        },
        "anil": {
            "paper": _config({"hidden_units": 512, "num_hidden_layers": 2},
                             _inner(100, 0.01), _outer(1e-3, 1e-2, 1.0), _GOALS_PAPER),
            "cpu": _config({"hidden_units": 256, "num_hidden_layers": 2},
                           _inner(20, 0.05), _outer(3e-3, 1e-2, 1.0), _GOALS_CPU),
        },
        "maml": {
            "paper": _config({"hidden_units": 384, "num_hidden_layers": 2},
                             _inner(10, 0.01), _outer(1e-3, 1e-2, 1.0), _GOALS_PAPER),
            "cpu": _config({"hidden_units": 128, "num_hidden_layers": 2},
                           _inner(10, 0.01), _outer(3e-3, 1e-2, 1.0), _GOALS_CPU),
        },
    },
    "grid-preferences": {
        "linear-hnet": {
            "paper": _config(_hnet("linear", hidden_units=64, num_hidden_layers=3,
                                   embedding_dim=32),
                             _inner(10, 0.1), _outer(3e-4, 1e-2, 1.0), _PREF_PAPER),
            "cpu": _config(_hnet("linear", hidden_units=64, num_hidden_layers=3,
                                 embedding_dim=32),
                           _inner(10, 0.1), _outer(1e-3, 1e-2, 1.0), _PREF_CPU),
        },
        "nonlinear-hnet": {
            "paper": _config(_hnet("mlp", hidden_units=64, num_hidden_layers=2,
                                   embedding_dim=32),
                             _inner(10, 0.1), _outer(3e-4, 1e-2, 1.0), _PREF_PAPER),
            "cpu": _config(_hnet("mlp", hidden_units=64, num_hidden_layers=2,
                                 embedding_dim=32),
                           _inner(10, 0.1), _outer(1e-3, 1e-2, 1.0), _PREF_CPU),
        },
        "anil": {
            "paper": _config({"hidden_units": 512, "num_hidden_layers": 4},
                             _inner(100, 0.01), _outer(3e-4, 1e-2, 1.0), _PREF_PAPER),
            "cpu": _config({"hidden_units": 256, "num_hidden_layers": 3},
                           _inner(20, 0.05), _outer(1e-3, 1e-2, 1.0), _PREF_CPU),
        },
        "maml": {
            "paper": _config({"hidden_units": 368, "num_hidden_layers": 3},
                             _inner(10, 0.01), _outer(3e-4, 1e-2, 1.0), _PREF_PAPER),
            "cpu": _config({"hidden_units": 128, "num_hidden_layers": 3},
                           _inner(10, 0.01), _outer(1e-3, 1e-2, 1.0), _PREF_CPU),
        },
    },
}

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.weights.h5"


def preset_names():
    """Every built-in preset name, `task/model/size`."""
    return [f"{task}/{model}/{size}" for task, models in PRESETS.items()
            for model, sizes in models.items() for size in sizes]


def get_preset(name):
    """The configuration dict of a preset name (`task/model[/size]`)."""
    parts = name.split("/")
    if len(parts) == 2:
        parts.append("cpu")
    if (len(parts) != 3 or parts[0] not in PRESETS
            or parts[1] not in PRESETS[parts[0]] or parts[2] not in SIZES):
        raise ValueError(
            f"Unknown preset {name!r}: expected 'task/model[/size]' with task "
            f"in {TASKS}, model in {MODELS}, size in {SIZES} (e.g. "
            "'hyperteacher/linear-hnet/paper'), or a directory written by "
            "save_to_preset."
        )
    config = copy.deepcopy(PRESETS[parts[0]][parts[1]][parts[2]])
    config["model"] = parts[1]
    return config


def build_meta_learner(config, output_dim, loss, first_order=False):
    """A compiled `MetaLearner` from a preset configuration dict."""
    network = _NETWORKS[config["model"]](output_dim=output_dim,
                                         **config["network"])
    model = MetaLearner(network, first_order=first_order, loss=loss,
                        **config["inner"])
    optimizer = config["optimizer"]
    model.compile(optimizer=keras.optimizers.AdamW(
        learning_rate=optimizer["learning_rate"],
        weight_decay=optimizer["weight_decay"],
        global_clipnorm=optimizer["global_clipnorm"],
    ))
    return model


def from_preset(preset, output_dim=None, loss=None, input_shape=None,
                **overrides):
    """A compiled `MetaLearner` from a preset name or directory.

    Args:
        preset: `"task/model[/size]"` (see `preset_names()`), or a directory
            written by `save_to_preset` (weights restored).
        output_dim: Outputs of the network (built-in presets; the task
            family's `output_dim`).
        loss: The task family's loss (`"kl"`, `"mse"`,
            `"sparse_categorical_crossentropy"`).
        input_shape: Example shape, e.g. `(16,)`, to build the model now
            (needed to restore weights; optional otherwise).
        **overrides: Network keyword arguments to override, or
            `first_order=True`.

    Example:

    >>> model = from_preset("hyperteacher/linear-hnet", output_dim=8,
    ...                     loss="kl")
    >>> model.inner_steps, model.network.hidden_units
    (10, 64)
    """
    first_order = overrides.pop("first_order", False)
    if os.path.isdir(str(preset)):
        with open(os.path.join(preset, _CONFIG_FILE)) as file:
            saved = json.load(file)
        config, output_dim, loss = saved["config"], saved["output_dim"], \
            saved["loss"]
        input_shape = saved["input_shape"]
        first_order = saved.get("first_order", first_order)
    else:
        config = get_preset(preset)
        if output_dim is None or loss is None:
            raise ValueError(
                "A built-in preset needs the task family's `output_dim` and "
                "`loss`."
            )
    config["network"].update(overrides)
    model = build_meta_learner(config, output_dim, loss, first_order)
    model.preset_config = config
    if input_shape is not None:
        shape = (1, 1) + tuple(input_shape)
        model.build({"support_inputs": shape, "support_targets": (1, 1, 1),
                     "query_inputs": shape, "query_targets": (1, 1, 1)})
    if os.path.isdir(str(preset)):
        model.load_weights(os.path.join(preset, _WEIGHTS_FILE))
    return model


def save_to_preset(model, directory, input_shape):
    """Writes a `MetaLearner` made by `from_preset` (config and weights)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, _CONFIG_FILE), "w") as file:
        json.dump({"config": model.preset_config,
                   "output_dim": model.network.output_dim,
                   "loss": model.loss_name,
                   "first_order": model.first_order,
                   "input_shape": list(input_shape)}, file, indent=2)
    model.save_weights(os.path.join(directory, _WEIGHTS_FILE))
