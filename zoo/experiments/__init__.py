"""The experiment registry behind `python -m zoo list` and `python -m zoo run`.

An experiment is a module with a `DESCRIPTION` string, an
`add_arguments(parser)` function for its own command-line options and a
`run(args) -> dict` function returning the results to print: a module, or
an object in a module (`"module:NAME"`, e.g. one of a family's
experiments). A new experiment is registered by adding a line to
`EXPERIMENTS` below.
"""

import importlib

EXPERIMENTS = {
    "synthetic-multitask": "zoo.experiments.synthetic_multitask",
    "hyperteacher": "zoo.hypernetworks.experiments:HYPERTEACHER",
    "teacher-student": "zoo.hypernetworks.experiments:TEACHER_STUDENT",
    "grid-preferences": "zoo.hypernetworks.experiments:GRID_PREFERENCES",
    "grid-goals": "zoo.hypernetworks.experiments:GRID_GOALS",
    "mint-offline": "zoo.mint.experiments:MINT_OFFLINE",
    "mint-cifar100": "zoo.mint.experiments:MINT_CIFAR100",
    "mt10": "zoo.metaworld.experiments:MT10",
    "mt50": "zoo.metaworld.experiments:MT50",
    "mint-push": "zoo.metaworld.experiments:MINT_PUSH",
    "babyai": "zoo.babyai.experiments:BABYAI",
    "polytropon-synthetic": "zoo.polytropon.experiments:POLYTROPON_SYNTHETIC",
    "polytropon-crossfit": "zoo.polytropon.experiments:POLYTROPON_CROSSFIT",
    "babyai-bc": "zoo.babyai.cloning:BABYAI_BC",
}
DEFAULT_EXPERIMENT = "hyperteacher"


def load_experiment(name):
    if name not in EXPERIMENTS:
        raise ValueError(
            f"Unknown experiment {name!r}. Known: {', '.join(sorted(EXPERIMENTS))}."
        )
    module, _, attribute = EXPERIMENTS[name].partition(":")
    module = importlib.import_module(module)
    return getattr(module, attribute) if attribute else module

