"""The paper's comparisons for `python -m zoo run`.

Four experiments, one code path: `hyperteacher` (default of the runner),
`teacher-student`, `grid-preferences` and `grid-goals`. Each trains the
selected meta-learners (`--models linear-hnet,nonlinear-hnet,anil,maml`)
on each selected support (`--supports compositional,non_compositional`)
with `model.fit` for `--outer-steps` outer steps, then adapts to fixed
sets of training-family ("train": tasks seen in training with fresh data,
"test": a second such set) and held-out ("ood") tasks and reports query
loss and accuracy, the test-OOD gap and the linear decodability of the
task latents (R^2 on OOD; `metrics.py`); teacher-student adds the module
alignment. It prints (and writes to `--output-dir`) a results table, the
learning curves (`curves.png`, with the `plot` extra) and the JSON results.

An interrupted run resumes: each (support, model) trains under
`keras.callbacks.BackupAndRestore`, finished ones are read back from their
`result.json`.

CPU budgets are the presets' (`presets.py`); `--paper` switches to the
paper's configuration and budget (hours to days on a CPU).
"""

import json
import os
import time

from zoo.runs import pyplot, write_summary

DESCRIPTION_HYPERTEACHER = (
    "Modular hypernetworks vs ANIL and MAML on the hyperteacher, "
    "compositional vs non-compositional support (no download; minutes)."
)

_TASKS = {
    "hyperteacher": {
        "supports": ("compositional", "non_compositional", "connected",
                     "disconnected"),
        "default_supports": "compositional,non_compositional",
        "description": DESCRIPTION_HYPERTEACHER,
    },
    "teacher-student": {
        "supports": ("connected", "disconnected"),
        "default_supports": "connected,disconnected",
        "description": (
            "The theory's multi-task teacher-student setting: a linear "
            "hypernetwork student, module alignment for connected vs "
            "disconnected task supports."),
        "default_models": "linear-hnet",
    },
    "grid-preferences": {
        "supports": ("compositional",),
        "default_supports": "compositional",
        "description": (
            "Compositional preferences grid world (optimal Q-values by "
            "finite-horizon backups): hypernetworks vs ANIL and MAML."),
    },
    "grid-goals": {
        "supports": ("compositional",),
        "default_supports": "compositional",
        "description": (
            "Compositional goals grid world (expert actions by shortest "
            "paths): hypernetworks vs ANIL and MAML."),
    },
}
MODELS = ("linear-hnet", "nonlinear-hnet", "anil", "maml")


def make_task_family(task, support, seed, num_modules=None):
    """The generator of a task family (numpy only)."""
    if task == "hyperteacher":
        from zoo.hypernetworks.hyperteacher import Hyperteacher

        kwargs = {} if num_modules is None else {"num_modules": num_modules}
        return Hyperteacher(support=support, seed=seed, **kwargs)
    if task == "teacher-student":
        from zoo.hypernetworks.teacher_student import TeacherStudent

        kwargs = {} if num_modules is None else {"num_modules": num_modules}
        return TeacherStudent(support=support, seed=seed, **kwargs)
    from zoo.hypernetworks.grid_worlds import (
        GoalsGridWorld,
        PreferencesGridWorld,
    )

    return (PreferencesGridWorld if task == "grid-preferences"
            else GoalsGridWorld)(seed=seed)


class MetaLearningExperiment:
    """One registered experiment (`task` is a key of `_TASKS`)."""

    REQUIRES = ()

    def __init__(self, task):
        self.task = task
        self.DESCRIPTION = _TASKS[task]["description"]

    def add_arguments(self, parser):
        from zoo.__main__ import comma_list, non_negative_int, positive_int

        info = _TASKS[self.task]
        supports = info["supports"]
        parser.add_argument(
            "--models", default=info.get("default_models", ",".join(MODELS)),
            type=comma_list(MODELS, "models"),
            help=f"comma-separated, from {', '.join(MODELS)}")
        parser.add_argument(
            "--supports", default=info["default_supports"],
            type=comma_list(supports, "supports"),
            help=f"comma-separated, from {', '.join(supports)}")
        parser.add_argument(
            "--outer-steps", type=positive_int, default=None,
            help="outer steps per model (default: the preset's CPU budget)")
        parser.add_argument("--eval-every", type=positive_int, default=100,
                            help="outer steps between evaluations (an epoch)")
        parser.add_argument("--meta-batch", type=positive_int, default=None)
        parser.add_argument("--support-shots", type=positive_int, default=None)
        parser.add_argument("--query-shots", type=positive_int, default=None)
        parser.add_argument("--eval-tasks", type=positive_int, default=256,
                            help="tasks per evaluation set")
        parser.add_argument("--num-modules", type=positive_int, default=None,
                            help="modules of the task family (hyperteacher: "
                                 "4; connected/disconnected need 6 or more)")
        parser.add_argument("--first-order", action="store_true",
                            help="first-order meta-gradients")
        parser.add_argument(
            "--paper", action="store_true",
            help="the paper's configuration and budget (meta-batch 128, "
                 "256/256 shots on the hyperteacher, 200k outer steps: days "
                 "on a CPU)")
        parser.add_argument("--plot", type=non_negative_int, choices=(0, 1),
                            default=1, help="write curves.png (needs the "
                                            "plot extra)")

    def run(self, args):
        import keras

        from zoo.hypernetworks.presets import get_preset

        keras.utils.set_random_seed(args.seed)
        size = "paper" if args.paper else "cpu"
        results, curves = {}, {}
        for support in args.supports:
            family = make_task_family(self.task, support, args.seed,
                                      args.num_modules)
            for model_name in args.models:
                config = get_preset(f"{self.task}/{model_name}/{size}")
                data = config["data"]
                for key in ("outer_steps", "meta_batch", "support_shots",
                            "query_shots"):
                    value = getattr(args, key)
                    if value is not None:
                        data[key] = value
                run_dir = (os.path.join(args.output_dir, support, model_name)
                           if args.output_dir else "")
                result, history = train_and_evaluate(
                    family, config, args, run_dir)
                results.setdefault(support, {})[model_name] = result
                curves[(support, model_name)] = history
        table = results_table(self.task, results)
        print(table)
        write_summary(args.output_dir, table, results)
        if args.output_dir:
            if args.plot:
                plot_curves(curves, os.path.join(args.output_dir,
                                                 "curves.png"))
        return results


class MetaBatches:
    """A `keras.utils.PyDataset` of fresh meta-batches (made lazily so
    that keras is imported after the backend is chosen)."""

    def __new__(cls, family, split, meta_batch, support_shots, query_shots,
                seed, num_batches=None, start=0):
        import keras
        import numpy as np

        class _MetaBatches(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()
                self.step = start

            @property
            def num_batches(self):
                return num_batches  # None: endless (fit's steps_per_epoch)

            def __len__(self):
                return num_batches

            def __getitem__(self, index):
                # A counter, not `index`: fresh tasks in every epoch, and a
                # resumed run continues the sequence (`start`).
                key = index if num_batches is not None else self.step
                self.step += 1
                rng = np.random.default_rng((seed, key))
                return family.sample(split, meta_batch, support_shots,
                                     query_shots, rng).as_inputs()

        return _MetaBatches()


def _fixed_set(family, split, num_tasks, data, seed):
    import numpy as np

    return family.sample(split, num_tasks, data["support_shots"],
                         data["query_shots"], np.random.default_rng(seed))


def _completed_epochs(backup_dir):
    # Keras internal: BackupAndRestore keeps the last finished epoch in
    # `training_metadata.json` (keras 3.15); used only to continue the
    # sequence of meta-batches of a resumed run.
    if not backup_dir:
        return 0
    try:
        with open(os.path.join(backup_dir, "training_metadata.json")) as f:
            return int(json.load(f)["epoch"]) + 1
    except (OSError, ValueError, KeyError):
        return 0


def train_and_evaluate(family, config, args, run_dir):
    """Trains one preset on one task family; returns (result, history)."""
    from zoo.hypernetworks.metrics import linear_decodability
    from zoo.hypernetworks.presets import build_meta_learner
    from zoo.runs import RunDirectory

    run = RunDirectory(run_dir, {
        "preset": config, "first_order": args.first_order,
        "eval_every": args.eval_every, "eval_tasks": args.eval_tasks,
        "seed": args.seed, "num_modules": args.num_modules})
    saved = run.finished()
    if saved is not None:  # finished before
        return saved["result"], saved["history"]
    data = config["data"]
    model = build_meta_learner(config, family.output_dim, family.loss,
                               first_order=args.first_order)
    eval_tasks = args.eval_tasks
    fixed = {
        split: _fixed_set(family, "train" if split == "test" else split,
                          eval_tasks, data, seed)
        for split, seed in (("train", 1_000 + args.seed),
                            ("test", 2_000 + args.seed),
                            ("ood", 3_000 + args.seed))
    }
    model.build({k: v.shape for k, v in fixed["test"].as_inputs().items()})
    steps_per_epoch = min(args.eval_every, data["outer_steps"])
    epochs = max(1, data["outer_steps"] // steps_per_epoch)
    callbacks = [OODEvaluation(fixed["ood"], eval_tasks), *run.callbacks()]
    start = _completed_epochs(run.backup_dir) * steps_per_epoch
    train = MetaBatches(family, "train", data["meta_batch"],
                        data["support_shots"], data["query_shots"],
                        seed=args.seed, start=start)
    began = time.time()
    history = model.fit(
        train, epochs=epochs, steps_per_epoch=steps_per_epoch,
        validation_data=_as_dataset(fixed["test"], eval_tasks),
        callbacks=callbacks, verbose=args.verbose, shuffle=False,
    )
    seconds = time.time() - began
    result = {"outer_steps": epochs * steps_per_epoch,
              "train_seconds": round(seconds, 1)}
    adapted = {}
    for split, batch in fixed.items():
        scores = model.evaluate(_as_dataset(batch, eval_tasks), verbose=0,
                                return_dict=True)
        result[f"{split}_loss"] = round(float(scores["loss"]), 4)
        result[f"{split}_accuracy"] = round(float(scores["accuracy"]), 4)
        adapted[split] = _adapt_in_chunks(model, batch)
    result["test_ood_gap"] = round(
        result["test_accuracy"] - result["ood_accuracy"], 4)
    result["decodability_r2"] = round(linear_decodability(
        adapted["test"], fixed["test"].latents,
        adapted["ood"], fixed["ood"].latents), 4)
    if hasattr(family, "module_alignment") and (
            getattr(model.network, "generator", None) == "linear"):
        result["module_alignment"] = round(_alignment(
            model, family, adapted["test"], fixed["test"].latents), 4)
    curve = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    run.write({"result": result, "history": curve}, model)
    return result, curve


def _as_dataset(batch, chunk):
    """A fixed TaskBatch as an evaluation dataset of meta-batches."""
    import keras

    inputs = batch.as_inputs()

    class Chunks(keras.utils.PyDataset):
        def __len__(self):
            return -(-len(inputs["support_inputs"]) // chunk)

        def __getitem__(self, index):
            part = slice(index * chunk, (index + 1) * chunk)
            return {k: v[part] for k, v in inputs.items()}

    return Chunks()


def _adapt_in_chunks(model, batch, chunk=64):
    """Adapted fast parameters of every task, flattened: (T, total)."""
    import numpy as np

    from zoo.hypernetworks.metrics import flatten_fast_params

    parts = []
    for start in range(0, batch.num_tasks, chunk):
        part = batch.take(slice(start, start + chunk))
        parts.append(flatten_fast_params(model.adapt(part.as_inputs())
                                         .fast_params))
    return np.concatenate(parts)


def _alignment(model, family, adapted_test, latents):
    """Module alignment of the first generated layer (teacher-student)."""
    import numpy as np
    from keras import ops

    layer = model.network.generated_layers[0]
    templates = ops.convert_to_numpy(layer.kernel_generator.output_kernel)
    dim = model.network.embedding_dim
    embeddings = adapted_test[:, :dim]  # first layer's embedding
    normalized = ops.convert_to_numpy(layer.kernel_generator.normalize(
        ops.convert_to_tensor(embeddings, "float32"))).astype(np.float64)
    # z ~ u F: least squares (ridge 1e-3) from normalised embeddings.
    latent_map = np.linalg.solve(
        normalized.T @ normalized + 1e-3 * np.eye(dim), normalized.T @ latents)
    return family.module_alignment(templates, latent_map=latent_map)


class OODEvaluation:
    """Callback: query loss/accuracy on the OOD set after every epoch."""

    def __new__(cls, batch, chunk):
        import keras

        class _OODEvaluation(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                scores = self.model.evaluate(_as_dataset(batch, chunk),
                                             verbose=0, return_dict=True)
                if logs is not None:
                    logs["ood_loss"] = scores["loss"]
                    logs["ood_accuracy"] = scores["accuracy"]

        return _OODEvaluation()


def results_table(task, results):
    """A markdown table: one row per (support, model)."""
    extra = any("module_alignment" in r for s in results.values()
                for r in s.values())
    header = ("| support | model | outer steps | train acc | test acc | "
              "OOD acc | test-OOD gap | OOD loss | decodability R^2 |"
              + (" module alignment |" if extra else ""))
    lines = [f"### {task}", "", header,
             "|" + "---|" * (header.count("|") - 1)]
    for support, models in results.items():
        for model, r in models.items():
            row = (f"| {support} | {model} | {r['outer_steps']} | "
                   f"{r['train_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
                   f"{r['ood_accuracy']:.3f} | {r['test_ood_gap']:+.3f} | "
                   f"{r['ood_loss']:.3f} | {r['decodability_r2']:.3f} |")
            if extra:
                alignment = r.get("module_alignment")
                row += f" {alignment:.3f} |" if alignment is not None else " - |"
            lines.append(row)
    return "\n".join(lines)


def plot_curves(curves, path):
    """Learning curves (test and OOD query accuracy per epoch)."""
    plt = pyplot(path)
    if plt is None:
        return
    supports = sorted({s for s, _ in curves})
    figure, axes = plt.subplots(1, len(supports), squeeze=False,
                                figsize=(5 * len(supports), 4))
    for axis, support in zip(axes[0], supports):
        for (s, model), history in curves.items():
            if s != support or "val_accuracy" not in history:
                continue
            steps = range(1, len(history["val_accuracy"]) + 1)
            line, = axis.plot(steps, history["val_accuracy"],
                              label=f"{model} test")
            if "ood_accuracy" in history:
                axis.plot(steps, history["ood_accuracy"], linestyle="--",
                          color=line.get_color(), label=f"{model} OOD")
        axis.set_title(support)
        axis.set_xlabel("evaluation (epoch)")
        axis.set_ylabel("query accuracy")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


HYPERTEACHER = MetaLearningExperiment("hyperteacher")
TEACHER_STUDENT = MetaLearningExperiment("teacher-student")
GRID_PREFERENCES = MetaLearningExperiment("grid-preferences")
GRID_GOALS = MetaLearningExperiment("grid-goals")
