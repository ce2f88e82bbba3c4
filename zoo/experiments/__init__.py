"""The experiment registry behind `python -m zoo list` and `python -m zoo run`.

An experiment is a module with a `DESCRIPTION` string, an
`add_arguments(parser)` function for its own command-line options and a
`run(args) -> dict` function returning the results to print. Later issues
register theirs with `register_experiment` (or by adding a line below).
"""

import importlib

EXPERIMENTS = {
    "synthetic-multitask": "zoo.experiments.synthetic_multitask",
}
DEFAULT_EXPERIMENT = "synthetic-multitask"


def register_experiment(name, module_path):
    """Registers the experiment module `module_path` under `name`."""
    if name in EXPERIMENTS and EXPERIMENTS[name] != module_path:
        raise ValueError(f"Experiment {name!r} is already registered.")
    EXPERIMENTS[name] = module_path


def load_experiment(name):
    if name not in EXPERIMENTS:
        raise ValueError(
            f"Unknown experiment {name!r}. Known: {', '.join(sorted(EXPERIMENTS))}."
        )
    return importlib.import_module(EXPERIMENTS[name])


def run_experiment(name, args):
    return load_experiment(name).run(args)
