"""Command line: `python -m zoo list` and `python -m zoo run <experiment>`.

The backend is chosen with `--backend` (or KERAS_BACKEND) before keras is
imported, so this module imports nothing from keras at the top level. Bad
values (an unknown experiment, `--epochs -1`, a backend or extra that is not
installed, a dataset that is not in its data directory) end with one line on
stderr and exit status 2, never a traceback.
"""

import argparse
import json
import os
import sys
import time

from zoo.extras import (
    BACKEND_EXTRAS,
    MissingDataError,
    MissingExtraError,
    UsageError,
    require,
    require_backend,
)

BACKENDS = tuple(BACKEND_EXTRAS)


def _import_tensorflow_quietly():
    """Imports TensorFlow, if installed, with file descriptor 2 sent to
    /dev/null: TensorFlow 2.21 writes start-up lines to stderr from C++
    before its logging starts (absl's "All log messages before
    absl::InitializeLog() ...", the oneDNN and CUDA notices), which
    TF_CPP_MIN_LOG_LEVEL does not reach. An import error still raises."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _number_type(convert, minimum, inclusive, what):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


# Argument types for experiments' options: `--epochs -1` is a usage error.
positive_int = _number_type(int, 1, True, "a positive integer")
non_negative_int = _number_type(int, 0, True, "an integer >= 0")
positive_float = _number_type(float, 0.0, False, "a positive number")


def comma_list(choices, what):
    """An argparse type: a comma-separated list of `what` from `choices`."""
    def parse(text):
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if value not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {what} from "
                f"{', '.join(choices)}, got {text!r}")
        return values

    parse.__name__ = f"list of {what}"
    return parse


def _parser():
    from zoo.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS, load_experiment

    parser = argparse.ArgumentParser(
        prog="python -m zoo",
        description="Modular multi-task learning zoo: bundled experiments.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the bundled experiments")
    run = commands.add_parser("run", help="run an experiment and print its results")
    experiments = run.add_subparsers(dest="experiment")
    for name in sorted(EXPERIMENTS):
        module = load_experiment(name)
        sub = experiments.add_parser(name, help=module.DESCRIPTION)
        sub.add_argument("--backend", choices=BACKENDS, default=None,
                         help="Keras backend (default: $KERAS_BACKEND or jax)")
        sub.add_argument("--seed", type=non_negative_int, default=0)
        sub.add_argument("--output-dir", default=os.path.join("runs", name),
                         help="checkpoints, history and the final model; an "
                              "interrupted run resumes from here ('' to disable)")
        sub.add_argument("--threads", type=positive_int, default=None,
                         help="intra-op CPU threads (default: 1 for torch on a "
                              "CPU-only machine of <= 4 cores, else the backend's)")
        sub.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                         help="Keras progress: 0 silent, 1 bar, 2 a line per epoch")
        module.add_arguments(sub)
    run.set_defaults(experiment=DEFAULT_EXPERIMENT)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    from zoo.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS, load_experiment

    # `run` with no experiment (or only options) runs the default one.
    if argv[:1] == ["run"] and (len(argv) == 1 or argv[1].startswith("-")):
        argv.insert(1, DEFAULT_EXPERIMENT)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in sorted(EXPERIMENTS):
            marker = " (default)" if name == DEFAULT_EXPERIMENT else ""
            print(f"{name}{marker}: {load_experiment(name).DESCRIPTION}")
        return 0

    backend = args.backend or os.environ.get("KERAS_BACKEND") or "jax"
    if backend not in BACKENDS:
        parser.exit(2, f"error: KERAS_BACKEND={backend!r}; expected one of "
                       f"{', '.join(BACKENDS)}\n")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != backend:
        parser.exit(2, "error: keras was imported before the backend could be "
                       "chosen\n")
    experiment = load_experiment(args.experiment)
    try:
        require_backend(backend)
        for module, extra in getattr(experiment, "REQUIRES", ()):
            require(module, extra, f"The experiment {args.experiment!r}")
    except MissingExtraError as error:
        parser.exit(2, f"error: {error}\n")
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _import_tensorflow_quietly()
    from training.backend import set_cpu_threads

    set_cpu_threads(args.threads)
    start = time.time()
    try:
        results = experiment.run(args)
    except (MissingDataError, MissingExtraError, UsageError) as error:
        parser.exit(2, f"error: {error}\n")
    print(json.dumps({
        "experiment": args.experiment,
        "backend": backend,
        "seconds": round(time.time() - start, 1),
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
