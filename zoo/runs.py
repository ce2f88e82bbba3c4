"""Resumable experiment runs: one directory per run, shared by the families.

A run directory holds

    run_config.json   the configuration the run was started with
    backup/           keras.callbacks.BackupAndRestore (while it trains)
    history.csv       one line per finished epoch (keras.callbacks.CSVLogger)
    model.keras       the trained model
    result.json       written last: the run is finished

so that a run killed at any point restarts from its last finished epoch, a
finished run is read back instead of retrained, and a directory that holds
a run of another configuration is refused (one line on the command line)
rather than mixed with this one.
"""

import json
import os

from zoo.extras import UsageError

_CONFIG_FILE = "run_config.json"
_RESULT_FILE = "result.json"


def _normalised(config):
    """The JSON form of a config (tuples become lists, keys strings)."""
    return json.loads(json.dumps(config, sort_keys=True))


class RunDirectory:
    """The files of one run; `path=""` disables saving (nothing is kept).

    Args:
        path: the run's directory, or "" for a run that keeps nothing.
        config: a JSON-serialisable dict: everything that determines the
            run (network, training, data and seed). A directory started
            with another config raises `UsageError`.
    """

    def __init__(self, path, config):
        self.path = path
        self.config = _normalised(config)
        if not path:
            return
        config_file = os.path.join(path, _CONFIG_FILE)
        if os.path.exists(config_file):
            with open(config_file) as file:
                saved = json.load(file)
            if saved != self.config:
                changed = sorted(
                    key for key in set(saved) | set(self.config)
                    if saved.get(key) != self.config.get(key))
                raise UsageError(
                    f"{path} holds a run with another configuration (differs "
                    f"in {', '.join(changed)}); choose another --output-dir "
                    "or delete it.")
        else:
            os.makedirs(path, exist_ok=True)
            with open(config_file, "w") as file:
                json.dump(self.config, file, indent=2)

    @property
    def backup_dir(self):
        return os.path.join(self.path, "backup") if self.path else ""

    def finished(self):
        """The payload of a finished run (`write`'s), or None."""
        if not self.path or not os.path.exists(os.path.join(self.path, _RESULT_FILE)):
            return None
        with open(os.path.join(self.path, _RESULT_FILE)) as file:
            return json.load(file)

    def callbacks(self, backup=True):
        """BackupAndRestore (unless `backup=False`: a training loop that
        adds its own) and a CSV history (continued on resume, started
        afresh when there is no backup to resume from)."""
        import keras

        if not self.path:
            return []
        resuming = os.path.isdir(self.backup_dir)
        history = keras.callbacks.CSVLogger(os.path.join(self.path, "history.csv"),
                                            append=resuming)
        if not backup:
            return [history]
        return [keras.callbacks.BackupAndRestore(self.backup_dir), history]

    def write(self, payload, model=None, **artifacts):
        """Saves `model` (`model.keras`), then calls each `artifacts` value
        with its path (`name=fn`), then writes `payload` as result.json."""
        if not self.path:
            return
        if model is not None:
            model.save(os.path.join(self.path, "model.keras"))
        for name, save in artifacts.items():
            save(os.path.join(self.path, name))
        with open(os.path.join(self.path, _RESULT_FILE), "w") as file:
            json.dump(payload, file, indent=2)


def lookup_preset(preset, presets, config_file="config.json"):
    """A family's preset dict (a copy): a key of `presets`, or a directory
    written by the family's `save_to_preset` (its `config_file`).

    >>> lookup_preset("small", {"small": {"width": 8}})
    {'width': 8}
    """
    import copy

    if isinstance(preset, str) and preset in presets:
        return copy.deepcopy(presets[preset])
    if isinstance(preset, str) and os.path.isfile(os.path.join(preset, config_file)):
        with open(os.path.join(preset, config_file)) as file:
            return json.load(file)
    raise ValueError(
        f"Unknown preset {preset!r}: expected one of {', '.join(presets)} or a "
        f"directory written by save_to_preset (with {config_file}).")


def write_summary(output_dir, table, results):
    """Writes an experiment's `results.md` (its table) and `results.json`."""
    if not output_dir:
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.md"), "w") as file:
        file.write(table + "\n")
    with open(os.path.join(output_dir, "results.json"), "w") as file:
        json.dump(results, file, indent=2)


def pyplot(path):
    """matplotlib.pyplot on the Agg backend, or None (after saying that
    `path` is not written) when the `plot` extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no {os.path.basename(path)}: pip install 'modular-zoo[plot]')")
        return None
    return plt
