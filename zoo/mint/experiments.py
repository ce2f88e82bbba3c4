"""Mint against its baselines, for `python -m zoo run`.

Two experiments, one code path:

* `mint-offline`: the offline digits benchmark (`digits.py`: each task its
  own pixel permutation and 5-way grouping of the 8x8 digits), no
  download, seconds per model;
* `mint-cifar100`: CIFAR-100 as 20 five-way tasks (`cifar100.py`) through
  tensorflow-datasets, with the data already in `--data-dir` (or
  `--download` on a machine with internet).

Each trains every model of `--models` (default: all of
`networks.MODELS`) for `--seeds` seeds with `model.fit` (Adam, cross
entropy), then prints a table of mean test accuracy (mean and standard
deviation over seeds) with parameter counts, and a per-task table. In
`--output-dir` each (preset, model, seed) run keeps its `history.csv`, its
trained model (`model.keras` and a preset directory `preset/`) and
`result.json` (`zoo/runs.py`); the experiment writes `results.md` and
`results.json`. An interrupted run resumes from its last finished epoch
(`keras.callbacks.BackupAndRestore`), finished runs are read back, and a
run directory of another configuration is refused. On CIFAR-100 the
fine-to-coarse table is first checked against the dataset's own coarse
labels (`--skip-label-check` skips it; tfds mock data needs that).
"""

import os
import time

from zoo.extras import UsageError
from zoo.runs import write_summary

_EXPERIMENTS = {
    "mint-offline": {
        "description": (
            "Mint vs multi-head, all-fc, cross-stitch, FiLM and independent "
            "networks on permuted 8x8-digit tasks (no download; ~1 min)."),
        "requires": (("sklearn", "data"),),
        "presets": ("digits",),
        "default_seeds": 3,
    },
    "mint-cifar100": {
        "description": (
            "Mint and the paper's baselines on CIFAR-100 as 20 five-way tasks "
            "(tensorflow-datasets; the data must be in --data-dir or "
            "--download)."),
        "requires": (("tensorflow_datasets", "data"), ("tensorflow", "data")),
        "presets": ("cifar100_small", "cifar100_paper"),
        "default_seeds": 1,
    },
}


class SupervisedMintExperiment:
    """One registered experiment (`name` is a key of `_EXPERIMENTS`)."""

    def __init__(self, name):
        self.name = name
        info = _EXPERIMENTS[name]
        self.DESCRIPTION = info["description"]
        self.REQUIRES = info["requires"]

    def add_arguments(self, parser):
        from zoo.__main__ import comma_list, positive_float, positive_int
        from zoo.mint import MODELS

        info = _EXPERIMENTS[self.name]
        parser.add_argument("--models", default=",".join(MODELS),
                            type=comma_list(MODELS, "models"),
                            help=f"comma-separated, from {', '.join(MODELS)}")
        parser.add_argument("--seeds", type=positive_int,
                            default=info["default_seeds"],
                            help="runs per model (seeds seed, seed+1, ...)")
        parser.add_argument("--preset", choices=info["presets"],
                            default=info["presets"][0],
                            help="network size (presets.py)")
        parser.add_argument("--epochs", type=positive_int, default=None,
                            help="default: the preset's")
        parser.add_argument("--batch-size", type=positive_int, default=None,
                            help="default: the preset's")
        parser.add_argument("--learning-rate", type=positive_float,
                            default=None, help="Adam; default: the preset's")
        if self.name == "mint-cifar100":
            parser.add_argument("--data-dir", default=None,
                                help="tensorflow-datasets data_dir holding "
                                     "cifar100 (default: tfds's)")
            parser.add_argument("--download", action="store_true",
                                help="let tfds download CIFAR-100 (internet)")
            parser.add_argument("--augment", action="store_true",
                                help="random flips and crops in training")
            parser.add_argument("--skip-label-check", action="store_true",
                                help="do not compare the fine-to-coarse table "
                                     "with the dataset's coarse labels")
        else:
            parser.add_argument("--num-tasks", type=positive_int, default=None,
                                help="digit tasks (default: the preset's 10)")

    def run(self, args):
        from zoo.mint.presets import get_preset

        preset = get_preset(args.preset)
        training = dict(preset["training"])
        for key in ("epochs", "batch_size", "learning_rate"):
            if getattr(args, key) is not None:
                training[key] = getattr(args, key)
        data = self._data(args, preset, training)
        results = {}
        for model_name in args.models:
            for seed in range(args.seed, args.seed + args.seeds):
                run_dir = (os.path.join(args.output_dir, args.preset, model_name,
                                        f"seed_{seed}")
                           if args.output_dir else "")
                results.setdefault(model_name, {})[seed] = train_and_evaluate(
                    model_name, args.preset, data, training, seed, args, run_dir)
        summary = summarise(results)
        table = results_table(self.name, args.preset, summary)
        print(table)
        write_summary(args.output_dir, table, summary)
        return summary

    def _data(self, args, preset, training):
        """{"train": seed -> fit data, "test": batches, "num_tasks", "source"}."""
        if self.name == "mint-cifar100":
            from zoo.mint.cifar100 import (
                NUM_TASKS,
                check_coarse_labels,
                load_cifar100_tasks,
            )

            def load(split, shuffle, augment, seed):
                return load_cifar100_tasks(
                    split=split, batch_size=training["batch_size"],
                    data_dir=args.data_dir, shuffle=shuffle, seed=seed,
                    download=args.download, augment=augment)

            test = load("test", False, False, 0)  # fails first without data
            if not args.skip_label_check:
                check_coarse_labels("train", data_dir=args.data_dir)
            return {
                # Each run shuffles (and augments) with its own seed, so its
                # data order does not depend on the runs before it.
                "train": lambda seed: load("train", True, args.augment, seed),
                "test": test,
                "num_tasks": NUM_TASKS,
                "source": {"dataset": "cifar100", "augment": args.augment},
            }
        from zoo.mint.digits import make_digit_tasks

        num_tasks = args.num_tasks or preset["network"]["num_tasks"]
        if num_tasks < 2:
            raise UsageError(f"--num-tasks must be >= 2 (multi-task); got {num_tasks}.")
        tasks = make_digit_tasks(num_tasks=num_tasks,
                                 num_classes=preset["network"]["num_classes"],
                                 seed=args.seed)
        (train_x, train_t, train_y), (test_x, test_t, test_y) = tasks.train, tasks.test
        chunk = 1024
        return {
            "train": lambda seed: ((train_x, train_t), train_y),
            "test": [((test_x[i:i + chunk], test_t[i:i + chunk]), test_y[i:i + chunk])
                     for i in range(0, len(test_y), chunk)],
            "num_tasks": num_tasks,
            "source": {"dataset": "digits", "data_seed": args.seed},
        }


def train_and_evaluate(model_name, preset, data, training, seed, args, run_dir):
    """Trains one model with one seed; returns its result dict."""
    import keras
    import numpy as np

    from zoo.mint.presets import from_preset, save_to_preset
    from zoo.runs import RunDirectory

    run = RunDirectory(run_dir, {
        "preset": preset, "model": model_name, "seed": seed,
        "training": training, "num_tasks": data["num_tasks"], **data["source"]})
    finished = run.finished()
    if finished is not None:
        return finished
    keras.utils.set_random_seed(seed)
    model = from_preset(preset, model=model_name, num_tasks=data["num_tasks"])
    model.compile(
        optimizer=keras.optimizers.Adam(training["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if args.verbose:
        print(f"[{model_name} seed {seed}] {model.count_params():,} parameters",
              flush=True)
    train = data["train"](seed)
    fit = dict(epochs=training["epochs"], callbacks=run.callbacks(),
               verbose=args.verbose)
    began = time.time()
    if isinstance(train, tuple):  # arrays: (inputs, targets)
        model.fit(*train, batch_size=training["batch_size"], shuffle=True, **fit)
    else:  # a tf.data pipeline, shuffled by itself
        model.fit(train, shuffle=False, **fit)
    seconds = time.time() - began
    correct = np.zeros(data["num_tasks"])
    counts = np.zeros(data["num_tasks"])
    for (inputs, targets) in _batches(data["test"]):
        predictions = np.argmax(
            keras.ops.convert_to_numpy(model.predict_on_batch(inputs)), axis=-1)
        task_ids = np.asarray(inputs[1])
        np.add.at(counts, task_ids, 1)
        np.add.at(correct, task_ids, predictions == np.asarray(targets))
    # A task without test examples (possible on tfds mock data) has no
    # accuracy (None), not 0.
    per_task = [round(float(c / n), 4) if n else None
                for c, n in zip(correct, counts)]
    result = {
        "model": model_name,
        "seed": seed,
        "parameters": int(model.count_params()),
        "epochs": training["epochs"],
        "train_seconds": round(seconds, 1),
        "test_accuracy": round(float(correct.sum() / counts.sum()), 4),
        "per_task_accuracy": per_task,
    }
    run.write(result, model, preset=lambda path: save_to_preset(
        model, path, training=training))
    return result


def _batches(test):
    """(inputs, targets) numpy batches of a list or a tf.data dataset."""
    if isinstance(test, list):
        yield from test
    else:
        yield from test.as_numpy_iterator()


def summarise(results):
    """{model: mean/std of accuracy over seeds, per-task means, params}."""
    import numpy as np

    summary = {}
    for model_name, runs in results.items():
        accuracies = [run["test_accuracy"] for run in runs.values()]
        per_seed = np.array([run["per_task_accuracy"] for run in runs.values()],
                            dtype=float)  # None (no test example) -> nan
        measured = np.sum(~np.isnan(per_seed), axis=0)
        per_task = np.where(measured > 0, np.nansum(per_seed, axis=0)
                            / np.maximum(measured, 1), np.nan)
        any_run = next(iter(runs.values()))
        summary[model_name] = {
            "test_accuracy_mean": round(float(np.mean(accuracies)), 4),
            # The sample standard deviation over seeds (0 for one seed).
            "test_accuracy_std": round(float(
                np.std(accuracies, ddof=1) if len(accuracies) > 1 else 0.0), 4),
            "seeds": sorted(int(seed) for seed in runs),
            "parameters": any_run["parameters"],
            "epochs": any_run["epochs"],
            "train_seconds_mean": round(float(np.mean(
                [run["train_seconds"] for run in runs.values()])), 1),
            "per_task_accuracy": [None if np.isnan(a) else round(float(a), 4)
                                  for a in per_task],
        }
    return summary


def results_table(experiment, preset, summary):
    """Markdown: mean accuracy and parameters per model, then per task."""
    lines = [f"### {experiment} ({preset})", "",
             "| model | test accuracy (mean ± std over seeds) | seeds | "
             "parameters | epochs | train s/run |",
             "|---|---|---|---|---|---|"]
    for model_name, row in summary.items():
        lines.append(
            f"| {model_name} | {row['test_accuracy_mean']:.3f} ± "
            f"{row['test_accuracy_std']:.3f} | {len(row['seeds'])} | "
            f"{row['parameters']:,} | {row['epochs']} | "
            f"{row['train_seconds_mean']} |")
    models = list(summary)
    lines += ["", "| task | " + " | ".join(models) + " |",
              "|---|" + "---|" * len(models)]
    num_tasks = len(next(iter(summary.values()))["per_task_accuracy"])
    for task in range(num_tasks):
        cells = [summary[m]["per_task_accuracy"][task] for m in models]
        lines.append(f"| {task} | " + " | ".join(
            "-" if cell is None else f"{cell:.3f}" for cell in cells) + " |")
    return "\n".join(lines)


MINT_OFFLINE = SupervisedMintExperiment("mint-offline")
MINT_CIFAR100 = SupervisedMintExperiment("mint-cifar100")
