"""The experiment registry behind `python -m zoo list` and `python -m zoo run`.

An experiment is a module with a `DESCRIPTION` string, an
`add_arguments(parser)` function for its own command-line options and a
`run(args) -> dict` function returning the results to print. A new
experiment is registered by adding a line to `EXPERIMENTS` below.
"""

import importlib

EXPERIMENTS = {
    "synthetic-multitask": "zoo.experiments.synthetic_multitask",
}
DEFAULT_EXPERIMENT = "synthetic-multitask"


def load_experiment(name):
    if name not in EXPERIMENTS:
        raise ValueError(
            f"Unknown experiment {name!r}. Known: {', '.join(sorted(EXPERIMENTS))}."
        )
    return importlib.import_module(EXPERIMENTS[name])

