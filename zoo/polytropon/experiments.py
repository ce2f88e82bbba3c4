"""Polytropon on BART: `python -m zoo run polytropon-synthetic` and
`python -m zoo run polytropon-crossfit`.

    python -m zoo run polytropon-synthetic --backend jax
    python -m zoo run polytropon-synthetic --variants skilled,shared,private --seeds 3
    python -m zoo run polytropon-synthetic --paper          # paper few-shot budget
    python -m zoo run polytropon-crossfit --data-dir DIR --preset bart_large_en

Paper: Ponti et al., "Combining Parameter-efficient Modules for Task-level
Generalisation" (Polytropon), Sections 2.5 and 4-5, Appendix A.2
(papers/polytropon-combining-modular-skills.txt). Both experiments run the
same two phases per (variant, seed):

1. Multitask training of a `SkillBartSeq2SeqLM` on the training tasks, its
   allocation logits at their own learning rate
   (`training.optimizers.dual_speed_optimizer`: allocation lr 0.1 without
   weight decay; the rest AdamW with weight decay 0.01, a 6% warm-up, linear
   decay and gradient clipping).
2. Few-shot adaptation to each held-out task separately, from the multitask
   weights (`training.few_shot`: a new allocation row at p = 0.5, the base
   frozen, AdamW with a 10% warm-up and weight decay 1e-2, batch 8), then
   greedy `generate` on the task's test examples, scored with the task's
   metric (zoo/polytropon/metrics.py).

Variants (`VARIANTS`, the paper's baselines as allocations of
`layers.SkillLoRAEinsumDense`):

    skilled   allocation="learned" (Polytropon), --num-skills skills
    shared    allocation="shared": one skill for every task (S = 1)
    private   allocation="private": one skill per task (Z = I, S = T)
    expert    allocation="fixed", Z = the benchmark's task_skill_matrix
              (S = number of primitives; synthetic benchmark only)
    hyper     allocation="hyper" (HyperFormer-style task embeddings)
    moe       allocation="moe" (Task-MoE: softmax, top-2)

polytropon-synthetic trains a small BART-shaped model from scratch (random
weights, no download) on the offline skill-composition benchmark
(zoo/polytropon/synthetic.py) with a byte-level BPE tokenizer over the
benchmark's letters. The multitask results are the ACC (exact match) of
greedy generation on the training tasks' test examples; the few-shot
results the ACC on each held-out task's test examples after adapting on its
k-shot training examples. Per run (`--output-dir/<variant>/seed_<k>/`):
`history.csv` (multitask loss per tenth of the steps), `multitask.weights.h5`
and `multitask.json` (the multitask phase, kept so that a run killed during
the few-shot phase does not train it again), `few_shot.json` (one entry per
finished held-out task) and `result.json` (written last). For the whole
experiment: `results.md` (the table and the allocation metrics),
`results.json`, and for the learned variant `allocation.png` (the mean
learned allocation beside the true task-skill matrix) and `dendrogram.png`
(hierarchical clustering of the tasks by their allocation rows; the paper's
Figures 5-6). A finished run is read back, not retrained.

polytropon-crossfit does the same on CrossFit's RANDOM partition
(zoo/polytropon/crossfit.py) from a pretrained KerasHub BART preset (base
frozen in both phases): multitask on the 120 training tasks' train and dev
files, few-shot on each of the 20 evaluation tasks and each data seed, and
a per-task metric table (`metrics.metric_table`). It needs the CrossFit
data (`--data-dir`) and the preset's weights.

NOTE 1 (from scratch, polytropon-synthetic): there is no pretrained base
  for the synthetic letters, so in the multitask phase the whole model
  trains (every backbone layer unfrozen, zoo/polytropon/bart.py NOTE 5)
  with the skills, at `--learning-rate` (3e-3, calibrated for the random
  base: 1e-3 learned about a third as much in 300 steps); the base is
  frozen in the few-shot phase, as in the paper. The paper trains only the
  skills and allocation on top of a frozen pretrained BART (as
  polytropon-crossfit does).
NOTE 2 (CPU budget): the synthetic defaults (width 64, 2 layers, 4 heads,
  300 multitask steps of batch 32, few-shot 100 steps of batch 8, rank 4,
  6 letters, inputs of 2-5 letters) are sized for a 2-core CPU; the paper
  adapts for 1000 steps (`--few-shot-steps 1000`) with rank 16 and 8
  skills (`--paper` sets these three; explicit options win).
NOTE 3 (one adaptation per held-out task): all H new rows are added at once
  (`training.few_shot.add_new_tasks`), the weights are copied, and before
  each held-out task they are restored from that copy; only that task's
  examples train. This is the paper's "copy of the multitask model per
  held-out task" (the other new rows get no gradient and do not matter),
  without rebuilding the model H times.
NOTE 4 (private few-shot): Z = I cannot take a new task without a new
  skill (`add_new_tasks` refuses it), and the paper's Private baseline has
  no transfer between training and evaluation tasks. Its few-shot model is
  a new `SkillBartSeq2SeqLM` on a copy of the trained base with
  allocation="shared" and one freshly initialised skill (LoRA B = 0, so it
  starts as the base), which adapts like the others.
NOTE 5 (few-shot mode): `--few-shot-mode` ("skills": the paper; "allocation":
  only the new row; "average": a uniform mix of the skills) applies to the
  variants that learn an allocation (skilled, moe, hyper). shared, private
  and expert have no allocation to learn and always adapt their skills
  (their rows: none, a fresh skill, the expert row).
NOTE 6 (few-shot data): adaptation uses the held-out task's k-shot train
  split only; its dev split is not used (no model selection).
NOTE 7 (expert and order): the task-skill matrix says which primitives a
  task uses, not their order, so two compositions of the same primitives
  in different orders ("shift+sort", "sort+shift") get the same expert row
  and the expert model cannot tell them apart.
NOTE 8 (resuming the multitask phase): a run killed during the multitask
  phase resumes from its last finished tenth of the steps
  (`keras.callbacks.BackupAndRestore`); the data order restarts there,
  so a resumed run sees other batches than an uninterrupted one.
NOTE 9 (allocation pictures): each skill layer has its own skill
  inventory, so its skills are in no particular order. The heatmap matches
  every layer's skills to the primitives (Hungarian assignment on the
  training tasks' rows, when there are as many skills as primitives),
  then averages over layers and seeds. The dendrogram (average linkage,
  Euclidean) clusters the tasks by their allocation rows of every layer,
  concatenated (no matching needed). `allocation_similarity` is the
  Pearson correlation between the learned and the true task-by-task cosine
  similarities (off-diagonal, training tasks, the learned ones averaged over
  layers): 1 when tasks that share primitives share skills.
"""

import dataclasses
import json
import math
import os
import time
import warnings

import numpy as np

from zoo.extras import MissingDataError, UsageError

VARIANTS = {
    "skilled": "learned",
    "shared": "shared",
    "private": "private",
    "expert": "fixed",
    "hyper": "hyper",
    "moe": "moe",
}
LEARNED_ALLOCATIONS = ("learned", "moe", "hyper")
FEW_SHOT_MODES = ("skills", "allocation", "average")  # training.few_shot's
PAPER_SETTINGS = {"few_shot_steps": 1000, "rank": 16, "num_skills": 8}
LOG_CHUNKS = 10  # multitask history points (epochs of the multitask fit)

SYNTHETIC_DEFAULTS = {
    # benchmark (zoo/polytropon/synthetic.py)
    "num_primitives": 6, "skills_per_task": 2, "num_train_tasks": 12,
    "num_heldout_tasks": 4, "examples_per_task": 200, "few_shot": 16,
    "eval_examples": 50, "num_letters": 6, "min_length": 2, "max_length": 5,
    "max_output_length": 10, "benchmark_seed": 0,
    # model
    "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "rank": 4,
    "num_skills": None,
    # training
    "steps": 300, "batch_size": 32, "learning_rate": 3e-3,
    "allocation_learning_rate": 0.1, "few_shot_steps": 100,
    "few_shot_batch_size": 8, "few_shot_learning_rate": 1e-3,
    "few_shot_mode": "skills", "generate_batch_size": 256,
}


# ---------------------------------------------------------------------------
# Tasks as both experiments see them.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Adaptation:
    """One task to train or evaluate on.

    Attributes:
        name: the task's name (CrossFit's, or the synthetic composition).
        task_id: its row of the allocation.
        train: `(inputs, outputs)` lists of strings (one answer each).
        test: `(inputs, references)`; a reference is a string or a list of
            correct answers.
        metric: a metric name of zoo/polytropon/metrics.py.
        data_seed: the few-shot data seed (CrossFit), or None.
    """

    name: str
    task_id: int
    train: tuple
    test: tuple
    metric: str
    data_seed: object = None

    @property
    def key(self):
        """The name, with the data seed when there is one."""
        return self.name if self.data_seed is None else f"{self.name}@{self.data_seed}"


def _synthetic_adaptations(tasks):
    return [Adaptation(
        name=task.name, task_id=task.task_id,
        train=([i for i, _ in task.train], [o for _, o in task.train]),
        test=([i for i, _ in task.test], [o for _, o in task.test]),
        metric="ACC") for task in tasks]


# ---------------------------------------------------------------------------
# Model pieces.
# ---------------------------------------------------------------------------
def letter_tokenizer(letters):
    """A byte-level BPE `BartTokenizer` over single letters: the BART
    special tokens, "Ġ", each letter and each letter after a space ("Ġa").

    >>> tokenizer = letter_tokenizer("abc")  # 4 special, "Ġ", 3 + 3 letters
    >>> tokenizer.vocabulary_size()
    11
    """
    import keras_hub

    tokens = ["<s>", "<pad>", "</s>", "<unk>", "Ġ"]
    tokens += list(letters) + ["Ġ" + letter for letter in letters]
    vocabulary = {token: index for index, token in enumerate(tokens)}
    merges = [f"Ġ {letter}" for letter in letters]
    return keras_hub.models.BartTokenizer(vocabulary=vocabulary, merges=merges)


def skill_arguments(variant, num_tasks, num_skills, expert_matrix=None):
    """The `SkillBartSeq2SeqLM` skill arguments of a variant.

    >>> skill_arguments("private", 3, 8)
    {'allocation': 'private', 'num_skills': 3}
    >>> skill_arguments("shared", 3, 8)
    {'allocation': 'shared', 'num_skills': 1}
    """
    allocation = VARIANTS[variant]
    if allocation == "private":
        return {"allocation": allocation, "num_skills": num_tasks}
    if allocation == "shared":
        return {"allocation": allocation, "num_skills": 1}
    if allocation == "fixed":
        if expert_matrix is None:
            raise UsageError("The expert variant needs a task-skill table (the "
                             "synthetic benchmark has one; CrossFit has none).")
        matrix = np.asarray(expert_matrix)[:num_tasks]
        return {"allocation": allocation, "num_skills": int(matrix.shape[1]),
                "expert_matrix": matrix}
    return {"allocation": allocation, "num_skills": num_skills}


def synthetic_model(bench, variant, settings, seed):
    """A `SkillBartSeq2SeqLM` with a random BART base (trainable, NOTE 1)
    for the training tasks of the synthetic benchmark `bench`."""
    import keras
    import keras_hub

    from zoo.polytropon.bart import SkillBartSeq2SeqLM, SkillBartSeq2SeqLMPreprocessor

    keras.utils.set_random_seed(seed)
    tokenizer = letter_tokenizer(bench.letters)
    preprocessor = SkillBartSeq2SeqLMPreprocessor(
        tokenizer=tokenizer,
        # encoder: <s> letters </s>; decoder: </s> <s> letters </s>.
        encoder_sequence_length=settings["max_length"] + 2,
        decoder_sequence_length=settings["max_output_length"] + 2)
    width = settings["hidden_dim"]
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=settings["num_layers"], num_heads=settings["num_heads"],
        hidden_dim=width, intermediate_dim=2 * width,
        max_sequence_length=max(settings["max_length"], settings["max_output_length"]) + 4,
        dropout=0.0)
    num_tasks = len(bench.train_tasks)
    model = SkillBartSeq2SeqLM(
        backbone=backbone, preprocessor=preprocessor, num_tasks=num_tasks,
        rank=settings["rank"], seed=seed,
        **skill_arguments(variant, num_tasks, settings["num_skills"],
                          bench.task_skill_matrix))
    # NOTE 1: unfreeze the base layer by layer, as the constructor froze it
    # (on TensorFlow `model.backbone.trainable = True` leaves the layers
    # frozen: the backbone's own flag was never False).
    for layer in model.backbone.layers:
        layer.trainable = True
    return model


def fresh_skill_model(model, num_tasks, rank, seed):
    """NOTE 4: a "shared" model with one new skill on a copy of `model`'s
    base (its backbone's weights; the base is frozen)."""
    from zoo.polytropon.bart import SkillBartSeq2SeqLM

    backbone = type(model.backbone).from_config(model.backbone.get_config())
    backbone.set_weights(model.backbone.get_weights())
    fresh = SkillBartSeq2SeqLM(
        backbone=backbone, preprocessor=model.preprocessor, num_tasks=num_tasks,
        num_skills=1, rank=rank, allocation="shared", seed=seed)
    fresh.compile(sampler="greedy")
    return fresh


def tokenized(preprocessor, inputs, outputs, task_ids):
    """NumPy `(x, y, sample_weight)` of raw training text."""
    import keras

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(preprocessor({
        "encoder_text": list(inputs), "decoder_text": list(outputs),
        "task_ids": np.asarray(task_ids, "int32")}))
    as_numpy = lambda value: np.asarray(keras.ops.convert_to_numpy(value))  # noqa: E731
    return ({k: as_numpy(v) for k, v in x.items()}, as_numpy(y), as_numpy(sample_weight))


def repeated_order(num_rows, total, seed):
    """`total` row indices in shuffled passes over `num_rows` rows.

    >>> sorted(repeated_order(3, 6, seed=0).tolist())
    [0, 0, 1, 1, 2, 2]
    """
    rng = np.random.default_rng(seed)
    passes = -(-total // num_rows)
    return np.concatenate([rng.permutation(num_rows) for _ in range(passes)])[:total]


def log_chunks(steps, most=LOG_CHUNKS):
    """The largest divisor of `steps` that is at most `most` (the multitask
    fit's epochs, so that it runs exactly `steps` steps).

    >>> log_chunks(300), log_chunks(7), log_chunks(13)
    (10, 7, 1)
    """
    return max(d for d in range(1, min(steps, most) + 1) if steps % d == 0)


def train_multitask(model, data, *, steps, batch_size, optimizer, seed,
                    callbacks=(), verbose=2):
    """Multitask training for exactly `steps` steps; returns the loss of
    each tenth of them (the fit's epochs)."""
    x, y, sample_weight = data
    order = repeated_order(len(y), steps * batch_size, seed)
    epochs = log_chunks(steps)
    model.compile(optimizer=optimizer, sampler="greedy")
    preprocessor, model.preprocessor = model.preprocessor, None
    try:
        history = model.fit(
            {k: v[order] for k, v in x.items()}, y[order],
            sample_weight=sample_weight[order], batch_size=batch_size,
            epochs=epochs, steps_per_epoch=steps // epochs, shuffle=False,
            callbacks=list(callbacks), verbose=verbose)
    finally:
        model.preprocessor = preprocessor
    return [round(float(v), 5) for v in history.history.get("loss", [])]


def generate_texts(model, inputs, task_ids, batch_size=256):
    """Greedy generations (stripped strings) for `inputs`, in batches of
    `batch_size` (the last one padded, so that every batch has one shape)."""
    inputs = list(inputs)
    task_ids = np.asarray(task_ids, "int32")
    size = min(batch_size, len(inputs))
    outputs = []
    for start in range(0, len(inputs), size):
        chunk = inputs[start:start + size]
        ids = task_ids[start:start + size]
        pad = size - len(chunk)
        generated = model.generate({
            "encoder_text": chunk + [chunk[-1]] * pad,
            "task_ids": np.concatenate([ids, np.full(pad, ids[-1], "int32")])})
        outputs += [text.strip() for text in generated[:len(chunk)]]
    return outputs


def evaluate_tasks(model, adaptations, batch_size=256):
    """{task key: score} of greedy generations on each task's test set."""
    from zoo.polytropon.metrics import score

    inputs = [text for a in adaptations for text in a.test[0]]
    task_ids = [a.task_id for a in adaptations for _ in a.test[0]]
    predictions = generate_texts(model, inputs, task_ids, batch_size)
    scores, start = {}, 0
    for a in adaptations:
        count = len(a.test[0])
        scores[a.key] = round(score(a.metric, predictions[start:start + count],
                                    list(a.test[1])), 5)
        start += count
    return scores


def allocation_summary(model):
    """The mean allocation metrics over skill layers (None for "hyper",
    which has no probabilities) and each layer's (num_tasks, num_skills)
    probabilities averaged over splits (None for "hyper")."""
    try:
        metrics = model.allocation_metrics()["mean"]
        probabilities = [p.mean(axis=1) for p in model.allocation_probabilities().values()]
    except ValueError:  # "hyper": task embeddings, not probabilities
        return None, None
    return ({k: round(float(v), 4) for k, v in metrics.items()},
            np.asarray(probabilities, np.float64))


def _read_json(path):
    if os.path.exists(path):
        with open(path) as file:
            return json.load(file)
    return None


def _write_json(path, payload):
    if not path:
        return
    with open(path + ".tmp", "w") as file:
        json.dump(payload, file, indent=2)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------
# One (variant, seed) run: multitask, then few-shot per held-out task.
# ---------------------------------------------------------------------------
def run_variant(variant, seed, settings, build_model, train_tasks, heldout,
                run_dir, config, verbose=2, multitask_eval=True, multitask_data=None):
    """Trains and evaluates one variant for one seed (module docstring).

    Args:
        variant: a key of `VARIANTS`.
        seed: int, the model's seed.
        settings: the experiment's settings (steps, learning rates, ...).
        build_model: `fn(variant, seed) -> SkillBartSeq2SeqLM` for the
            training tasks.
        train_tasks: `Adaptation`s of the training tasks (ids 0..T-1).
        heldout: `Adaptation`s to adapt to, one by one (NOTE 3); ids from T.
        run_dir: the run's directory ("" keeps nothing).
        config: the JSON config of the run (`zoo.runs.RunDirectory`).
        multitask_eval: whether to score the training tasks' test sets.
        multitask_data: None, or `(inputs, outputs, task_ids)` to train on
            (default: the training tasks' train sets).

    Returns:
        The run's result dict (also `run_dir/result.json`).
    """
    import keras

    from training.few_shot import add_new_tasks, few_shot_adapt, few_shot_optimizer
    from training.optimizers import dual_speed_optimizer
    from zoo.runs import RunDirectory

    run = RunDirectory(run_dir, config)
    finished = run.finished()
    if finished is not None:
        return finished
    start = time.time()
    path = (lambda name: os.path.join(run.path, name)) if run.path else (lambda name: "")
    allocation = VARIANTS[variant]
    model = build_model(variant, seed)
    num_train = len(train_tasks)

    # -- multitask phase ---------------------------------------------------
    multitask = _read_json(path("multitask.json")) if run.path else None
    if multitask is not None:
        with warnings.catch_warnings():  # the saved optimizer is not needed
            warnings.filterwarnings("ignore", message="Skipping variable loading for opt")
            model.load_weights(path("multitask.weights.h5"))
        model.compile(sampler="greedy")
    else:
        if multitask_data is None:
            multitask_data = (
                [t for a in train_tasks for t in a.train[0]],
                [t for a in train_tasks for t in a.train[1]],
                [a.task_id for a in train_tasks for _ in a.train[0]])
        data = tokenized(model.preprocessor, *multitask_data)
        learned = allocation in ("learned", "moe")
        optimizer = dual_speed_optimizer(
            settings["steps"], learning_rate=settings["learning_rate"],
            allocation_learning_rate=settings["allocation_learning_rate"] if learned else None,
            weight_decay=0.01, warmup_fraction=0.06)
        losses = train_multitask(
            model, data, steps=settings["steps"], batch_size=settings["batch_size"],
            optimizer=optimizer, seed=seed, callbacks=run.callbacks(),
            verbose=verbose)
        metrics, probabilities = allocation_summary(model)
        multitask = {
            "loss": losses,
            "acc": (evaluate_tasks(model, train_tasks, settings["generate_batch_size"])
                    if multitask_eval else None),
            "allocation_metrics": metrics,
            "allocation": None if probabilities is None else probabilities.round(4).tolist(),
            "seconds": round(time.time() - start, 1),
        }
        if run.path:
            model.save_weights(path("multitask.weights.h5"))
            _write_json(path("multitask.json"), multitask)

    # -- few-shot phase (NOTE 3, 4, 5) --------------------------------------
    few_shot = (_read_json(path("few_shot.json")) if run.path else None) or {}
    todo = [a for a in heldout if a.key not in few_shot]
    if todo:
        new_ids = sorted({a.task_id for a in heldout})
        if new_ids != list(range(num_train, num_train + len(new_ids))):
            raise ValueError(f"Held-out task ids must follow the {num_train} "
                             f"training tasks; got {new_ids}.")
        if allocation == "private":  # NOTE 4
            adapted = fresh_skill_model(model, num_train + len(new_ids),
                                        settings["rank"], seed)
        else:
            adapted = model
            mode = settings["few_shot_mode"] if allocation in LEARNED_ALLOCATIONS else "skills"
            expert_rows = None
            if allocation == "fixed":
                expert_rows = np.asarray(settings["expert_matrix"])[
                    num_train:num_train + len(new_ids)]
            add_new_tasks(adapted, len(new_ids), mode=mode, expert_rows=expert_rows)
        snapshot = [np.array(keras.ops.convert_to_numpy(v)) for v in adapted.weights]
        for a in todo:
            for variable, value in zip(adapted.weights, snapshot):
                variable.assign(value)
            history = few_shot_adapt(
                adapted,
                {"encoder_text": list(a.train[0]), "decoder_text": list(a.train[1]),
                 "task_ids": np.full(len(a.train[0]), a.task_id, "int32")},
                steps=settings["few_shot_steps"],
                batch_size=settings["few_shot_batch_size"],
                optimizer=few_shot_optimizer(
                    settings["few_shot_steps"],
                    learning_rate=settings["few_shot_learning_rate"],
                    allocation_learning_rate=settings["allocation_learning_rate"]),
                verbose=0, seed=seed)
            entry = {"score": evaluate_tasks(adapted, [a], settings["generate_batch_size"])[a.key],
                     "task": a.name, "metric": a.metric,
                     "final_loss": round(float(history.history["loss"][-1]), 5)}
            _, probabilities = allocation_summary(adapted)
            if probabilities is not None and VARIANTS[variant] in ("learned", "moe"):
                entry["allocation_row"] = probabilities[:, a.task_id].round(4).tolist()
            few_shot[a.key] = entry
            _write_json(path("few_shot.json"), few_shot)

    scores = {key: entry["score"] for key, entry in few_shot.items()}
    result = {
        "variant": variant, "seed": seed, "allocation": allocation,
        "num_skills": int(model.skill_layers[0].num_skills),
        "multitask_loss": multitask["loss"],
        "multitask_acc": multitask["acc"],
        "multitask_mean": (None if not multitask["acc"]
                           else round(float(np.mean(list(multitask["acc"].values()))), 5)),
        "few_shot": scores,
        "few_shot_mean": round(float(np.mean(list(scores.values()))), 5) if scores else None,
        "allocation_metrics": multitask["allocation_metrics"],
        "allocation": multitask["allocation"],
        "heldout_allocation": {key: entry["allocation_row"] for key, entry in few_shot.items()
                               if "allocation_row" in entry} or None,
        "seconds": round(time.time() - start, 1),
    }
    run.write(result)
    return result


# ---------------------------------------------------------------------------
# Summaries, tables and pictures.
# ---------------------------------------------------------------------------
def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values)) if len(values) > 1 else None)


def _cell(values, scale=100.0):
    mean, std = _mean_std(values)
    if mean is None:
        return "-"
    return f"{mean * scale:.1f}" + (f" ± {std * scale:.1f}" if std is not None else "")


def aggregate(results, heldout_keys):
    """Per variant: the means over seeds (and the per-seed values)."""
    summary = {}
    for variant, runs in results.items():
        metrics = [run["allocation_metrics"] for run in runs if run["allocation_metrics"]]
        summary[variant] = {
            "multitask_acc": _mean_std([run["multitask_mean"] for run in runs])[0],
            "multitask_acc_per_seed": [run["multitask_mean"] for run in runs],
            "few_shot": {key: _mean_std([run["few_shot"].get(key) for run in runs])[0]
                         for key in heldout_keys},
            "few_shot_mean": _mean_std([run["few_shot_mean"] for run in runs])[0],
            "few_shot_mean_per_seed": [run["few_shot_mean"] for run in runs],
            "allocation_metrics": ({name: round(float(np.mean([m[name] for m in metrics])), 4)
                                    for name in metrics[0]} if metrics else None),
            "seconds": [run["seconds"] for run in runs],
        }
    return summary


def results_table(results, heldout_keys, title):
    """The Markdown table: variant x (multitask, few-shot per task, mean),
    in % (mean ± std over seeds), then the allocation metrics."""
    lines = [title, "",
             "| variant | multitask | " + " | ".join(heldout_keys) + " | few-shot mean |",
             "|---" * (len(heldout_keys) + 3) + "|"]
    for variant, runs in results.items():
        cells = [_cell([run["multitask_mean"] for run in runs])]
        cells += [_cell([run["few_shot"].get(key) for run in runs]) for key in heldout_keys]
        cells.append(_cell([run["few_shot_mean"] for run in runs]))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "Allocation metrics after multitask training (paper Eqs. 5-7, mean "
              "over skill layers and seeds; hyper has no probabilities):", "",
              "| variant | skills | discreteness | sparsity | usage |",
              "|---|---|---|---|---|"]
    for variant, runs in results.items():
        metrics = [run["allocation_metrics"] for run in runs if run["allocation_metrics"]]
        cells = [f"{np.mean([m[name] for m in metrics]):.3f}" if metrics else "-"
                 for name in ("discreteness", "sparsity", "usage")]
        lines.append(f"| {variant} | {runs[0]['num_skills']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _match_skills(layer_probabilities, true_matrix):
    """Each layer's columns reordered to the primitives (NOTE 9); None if
    the skill count differs from the primitive count or scipy is missing."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return None
    layers = np.asarray(layer_probabilities)
    if layers.shape[-1] != true_matrix.shape[1]:
        return None
    matched = []
    for probabilities in layers:
        rows = min(len(true_matrix), probabilities.shape[0])
        gain = probabilities[:rows].T @ true_matrix[:rows]  # (skills, primitives)
        skills, primitives = linear_sum_assignment(-gain)
        order = np.empty(len(primitives), int)
        order[primitives] = skills
        matched.append(probabilities[:, order])
    return np.asarray(matched)


def allocation_similarity(layer_probabilities, true_matrix):
    """NOTE 9: Pearson correlation of learned and true task-by-task cosine
    similarities (off-diagonal), over the rows of `layer_probabilities`.

    >>> true = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 0]])
    >>> round(allocation_similarity([true[:, ::-1] * 0.9], true), 6)
    1.0
    >>> allocation_similarity([np.eye(2)], np.eye(2)) is None  # one pair
    True
    """
    def cosine(matrix):
        matrix = np.asarray(matrix, np.float64)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit = matrix / np.maximum(norms, 1e-12)
        return unit @ unit.T

    layers = np.asarray(layer_probabilities, np.float64)
    learned = np.mean([cosine(p) for p in layers], axis=0)
    true = cosine(np.asarray(true_matrix)[:layers.shape[1]])
    mask = ~np.eye(len(true), dtype=bool)
    a, b = learned[mask], true[mask]
    if a.std() == 0 or b.std() == 0:
        return None  # e.g. two tasks: one pair, no correlation
    return float(np.corrcoef(a, b)[0, 1])


def _allocation_rows(runs, num_train, heldout_keys):
    """Per seed: (layers, T + H, skills) allocation of the training tasks
    (multitask) and of each held-out task after its own adaptation."""
    stacks = []
    for run in runs:
        layers = np.asarray(run["allocation"])  # (layers, T, skills) or wider
        rows = [layers[:, :num_train]]
        held = run.get("heldout_allocation") or {}
        if all(key in held for key in heldout_keys):
            rows += [np.asarray(held[key])[:, None] for key in heldout_keys]
        stacks.append(np.concatenate(rows, axis=1))
    return stacks


def write_allocation_figures(output_dir, runs, true_matrix, task_names, num_train,
                             heldout_keys, variant="skilled", primitive_names=None):
    """`allocation.png` and `dendrogram.png` of a learned variant (NOTE 9);
    returns the paths written."""
    from zoo.runs import pyplot

    written = []
    stacks = _allocation_rows(runs, num_train, heldout_keys)
    if not stacks:
        return written
    names = list(task_names[:stacks[0].shape[1]])
    true_matrix = np.asarray(true_matrix)[:len(names)]
    matched = [_match_skills(stack, true_matrix[:num_train]) for stack in stacks]
    aligned = all(m is not None for m in matched)
    mean = (np.mean([m.mean(axis=0) for m in matched], axis=0) if aligned
            else np.mean([s.mean(axis=0) for s in stacks], axis=0))

    path = os.path.join(output_dir, "allocation.png")
    plt = pyplot(path)
    if plt is None:
        return written
    figure, axes = plt.subplots(1, 2, figsize=(9, 0.32 * len(names) + 2))
    panels = [("true task-skill matrix", true_matrix, True),
              (f"{variant}: mean learned allocation\n(" +
               ("skills matched to primitives, " if aligned else "") +
               f"{len(runs)} seed(s))", mean, aligned)]
    primitives = list(primitive_names or [f"p{i}" for i in range(true_matrix.shape[1])])
    for index, (axis, (title, matrix, by_primitive)) in enumerate(zip(axes, panels)):
        image = axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axis.set_title(title, fontsize=9)
        axis.set_yticks(range(len(names)), names if index == 0 else [], fontsize=7)
        columns = primitives if by_primitive else [f"s{i}" for i in range(matrix.shape[1])]
        axis.set_xticks(range(matrix.shape[1]), columns, fontsize=7, rotation=45,
                        ha="right")
        if len(names) > num_train:
            axis.axhline(num_train - 0.5, color="white", linewidth=2)
    figure.colorbar(image, ax=axes, fraction=0.03)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    written.append(path)

    try:
        from scipy.cluster.hierarchy import dendrogram, linkage
    except ImportError:
        print("(no dendrogram.png: scipy is not installed)")
        return written
    path = os.path.join(output_dir, "dendrogram.png")
    features = np.concatenate([s.transpose(1, 0, 2).reshape(len(names), -1)
                               for s in stacks], axis=1)
    figure, axes = plt.subplots(1, 2, figsize=(11, 0.3 * len(names) + 1.5))
    for axis, (title, rows) in zip(axes, [
            (f"{variant}: learned allocation rows (all layers, seeds)", features),
            ("true task-skill matrix", true_matrix.astype(np.float64))]):
        dendrogram(linkage(rows, method="average", metric="euclidean"),
                   labels=names, orientation="right", ax=axis, leaf_font_size=7)
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    written.append(path)
    return written


# ---------------------------------------------------------------------------
# The experiments.
# ---------------------------------------------------------------------------
class _PolytroponExperiment:
    REQUIRES = (("keras_hub", "nlp"),)

    def _add_common(self, parser, variants, default_variants):
        from zoo.__main__ import comma_list, positive_float, positive_int

        parser.add_argument("--variants", "--variant", dest="variants",
                            type=comma_list(variants, "variants"),
                            default=list(default_variants),
                            help=f"one or several of {', '.join(variants)}")
        parser.add_argument("--seeds", type=positive_int, default=1,
                            help="runs per variant, seeds --seed, --seed + 1, ...")
        parser.add_argument("--steps", type=positive_int, default=None,
                            help="multitask optimizer steps")
        parser.add_argument("--batch-size", type=positive_int, default=None)
        parser.add_argument("--learning-rate", type=positive_float, default=None,
                            help="multitask lr of everything but the allocation")
        parser.add_argument("--allocation-learning-rate", type=positive_float,
                            default=0.1)
        parser.add_argument("--few-shot-steps", type=positive_int, default=None,
                            help="few-shot steps per held-out task (paper: 1000)")
        parser.add_argument("--few-shot-batch-size", type=positive_int, default=8)
        parser.add_argument("--few-shot-learning-rate", type=positive_float,
                            default=1e-3)
        parser.add_argument("--few-shot-mode", choices=FEW_SHOT_MODES, default="skills",
                            help="skilled/moe/hyper few-shot: skills (paper), "
                                 "allocation only, or average of the skills")
        parser.add_argument("--num-skills", type=positive_int, default=None,
                            help="skills of skilled/moe/hyper")
        parser.add_argument("--rank", type=positive_int, default=None,
                            help="LoRA rank of every skill")
        parser.add_argument("--paper", action="store_true",
                            help="the paper's few-shot budget: --few-shot-steps "
                                 "1000 --rank 16 --num-skills 8 (unless given)")

    def _settings(self, args, defaults):
        settings = dict(defaults)
        for name in defaults:
            value = getattr(args, name, None)
            if value is not None:
                settings[name] = value
        if args.paper:
            for name, value in PAPER_SETTINGS.items():
                if getattr(args, name, None) is None:
                    settings[name] = value
        return settings


class PolytroponSynthetic(_PolytroponExperiment):
    DESCRIPTION = ("Polytropon on the synthetic skill-composition benchmark: a "
                   "small BART from scratch, skilled / shared / private / expert / "
                   "hyper / moe, multitask then few-shot on held-out compositions "
                   "(CPU: a few minutes per variant).")

    def add_arguments(self, parser):
        from zoo.__main__ import non_negative_int, positive_int

        self._add_common(parser, tuple(VARIANTS), tuple(VARIANTS))
        group = parser.add_argument_group("benchmark (zoo/polytropon/synthetic.py)")
        for name in ("num_primitives", "skills_per_task", "num_train_tasks",
                     "examples_per_task", "few_shot", "eval_examples", "num_letters",
                     "min_length", "max_length", "max_output_length"):
            group.add_argument("--" + name.replace("_", "-"), type=positive_int,
                               default=None, help=f"default {SYNTHETIC_DEFAULTS[name]}")
        group.add_argument("--num-heldout-tasks", type=positive_int, default=None,
                           help=f"default {SYNTHETIC_DEFAULTS['num_heldout_tasks']}")
        group.add_argument("--benchmark-seed", type=non_negative_int, default=None,
                           help="the benchmark's seed (the same tasks for every run)")
        group = parser.add_argument_group("model (a BART with random weights)")
        for name in ("hidden_dim", "num_layers", "num_heads"):
            group.add_argument("--" + name.replace("_", "-"), type=positive_int,
                               default=None, help=f"default {SYNTHETIC_DEFAULTS[name]}")

    def settings(self, args):
        """The run settings from `args` (defaults, `--paper`, options)."""
        settings = self._settings(args, SYNTHETIC_DEFAULTS)
        if settings["hidden_dim"] % settings["num_heads"]:
            raise UsageError(f"--hidden-dim {settings['hidden_dim']} is not a multiple "
                             f"of --num-heads {settings['num_heads']}.")
        if settings["num_skills"] is None:
            settings["num_skills"] = settings["num_primitives"]  # NOTE 7
        return settings

    def benchmark(self, settings):
        from zoo.polytropon.synthetic import make_synthetic_benchmark

        names = ("num_primitives", "skills_per_task", "num_train_tasks",
                 "num_heldout_tasks", "examples_per_task", "few_shot", "eval_examples",
                 "num_letters", "min_length", "max_length", "max_output_length")
        try:
            return make_synthetic_benchmark(
                **{name: settings[name] for name in names}, seed=settings["benchmark_seed"])
        except ValueError as error:
            raise UsageError(f"bad benchmark options: {error}") from None

    def run(self, args):
        from zoo.runs import write_summary

        start = time.time()
        settings = self.settings(args)
        bench = self.benchmark(settings)
        settings["expert_matrix"] = bench.task_skill_matrix.tolist()
        train = _synthetic_adaptations(bench.train_tasks)
        heldout = _synthetic_adaptations(bench.heldout_tasks)
        heldout_keys = [a.key for a in heldout]

        def build(variant, seed):
            return synthetic_model(bench, variant, settings, seed)

        results = {variant: [] for variant in args.variants}
        for seed in range(args.seed, args.seed + args.seeds):  # every variant per seed
            for variant in args.variants:
                run_dir = (os.path.join(args.output_dir, variant, f"seed_{seed}")
                           if args.output_dir else "")
                config = {"experiment": "polytropon-synthetic", "variant": variant,
                          "seed": seed, **settings}
                results[variant].append(run_variant(
                    variant, seed, settings, build, train, heldout, run_dir, config,
                    verbose=args.verbose))
        title = (f"Polytropon on the synthetic benchmark: {len(train)} training and "
                 f"{len(heldout)} held-out compositions of {settings['skills_per_task']} "
                 f"of {settings['num_primitives']} primitives; ACC (%) of greedy "
                 f"generation, mean ± std over {args.seeds} seed(s); multitask: "
                 f"{settings['steps']} steps, few-shot: {settings['few_shot_steps']} "
                 f"steps on {settings['few_shot']} examples per held-out task "
                 f"(mode {settings['few_shot_mode']}).")
        table = results_table(results, heldout_keys, title)
        summary = aggregate(results, heldout_keys)
        similarity = {}
        for variant, runs in results.items():
            if runs[0]["allocation"] is not None and VARIANTS[variant] in ("learned", "moe"):
                values = [allocation_similarity(np.asarray(run["allocation"])[:, :len(train)],
                                                bench.task_skill_matrix[:len(train)])
                          for run in runs]
                known = [v for v in values if v is not None]
                similarity[variant] = {
                    "mean": round(float(np.mean(known)), 4) if known else None,
                    "per_seed": [None if v is None else round(v, 4) for v in values]}
        if similarity:
            table += ("\n\nAllocation similarity to the true task-skill matrix (Pearson r "
                      "of task-by-task cosine similarities, training tasks; 1 = same "
                      "structure): " + ", ".join(
                          f"{v} " + ("-" if s["mean"] is None else f"{s['mean']:.2f}")
                          for v, s in similarity.items()))
        output = {
            "tasks": {"train": [a.name for a in train], "heldout": heldout_keys},
            "task_skill_matrix": bench.task_skill_matrix.tolist(),
            "settings": {k: v for k, v in settings.items() if k != "expert_matrix"},
            "seeds": args.seeds, "per_variant": summary,
            "allocation_similarity": similarity,
            "seconds": round(time.time() - start, 1),
        }
        print(table)
        if args.output_dir:
            write_summary(args.output_dir, table, output)
            names = [a.name for a in train + heldout]
            for variant in ("skilled", "moe"):
                if variant in results:
                    output["figures"] = write_allocation_figures(
                        args.output_dir, results[variant], bench.task_skill_matrix,
                        names, len(train), heldout_keys, variant=variant,
                        primitive_names=bench.primitives)
                    break
        return output


CROSSFIT_DEFAULTS = {
    "steps": None, "batch_size": 32, "learning_rate": 1e-3,
    "allocation_learning_rate": 0.1, "few_shot_steps": 1000,
    "few_shot_batch_size": 8, "few_shot_learning_rate": 1e-3,
    "few_shot_mode": "skills", "num_skills": 8, "rank": 16,
    "generate_batch_size": 32,
}


class PolytroponCrossFit(_PolytroponExperiment):
    DESCRIPTION = ("Polytropon on CrossFit (RANDOM partition) with a pretrained "
                   "KerasHub BART: multitask on the 120 training tasks, few-shot on "
                   "the 20 evaluation tasks (needs --data-dir and the preset's weights).")

    def add_arguments(self, parser):
        from zoo.__main__ import comma_list, positive_int

        self._add_common(parser, tuple(v for v in VARIANTS if v != "expert"), ("skilled",))
        parser.add_argument("--data-dir", default=None,
                            help="CrossFit data: <dir>/<task>/<task>_<k>_<seed>_{train,"
                                 "dev,test}.tsv")
        parser.add_argument("--preset", default="bart_large_en",
                            help="a KerasHub BART preset, hf:// handle or directory")
        parser.add_argument("--partition", default="random",
                            help="'random' or a CrossFit split JSON file")
        parser.add_argument("--data-seeds", default="13,21,42,87,100",
                            type=comma_list(("13", "21", "42", "87", "100"), "seeds"),
                            help="few-shot data seeds of each evaluation task")
        parser.add_argument("--epochs", type=positive_int, default=30,
                            help="multitask epochs when --steps is not given (paper: 30)")
        parser.add_argument("--encoder-sequence-length", type=positive_int, default=512)
        parser.add_argument("--decoder-sequence-length", type=positive_int, default=128)
        parser.add_argument("--test-limit", type=positive_int, default=None,
                            help="test examples per evaluation task (default CrossFit's "
                                 "10,000)")

    def run(self, args):
        from zoo.polytropon import crossfit
        from zoo.runs import write_summary

        start = time.time()
        if not args.data_dir:
            raise UsageError("polytropon-crossfit needs --data-dir, the CrossFit data "
                             f"directory ({crossfit._LAYOUT}); {crossfit._HOW_TO_GET}.")
        if not os.path.isdir(args.data_dir):
            raise MissingDataError(f"CrossFit data not found: the directory "
                                   f"{args.data_dir!r} does not exist; "
                                   f"{crossfit._HOW_TO_GET}.")
        settings = self._settings(args, CROSSFIT_DEFAULTS)
        try:
            train_names = crossfit.partition_tasks("train", args.partition)
            eval_names = crossfit.partition_tasks("test", args.partition)
        except ValueError as error:
            raise UsageError(str(error)) from None
        data = crossfit.load_partition(args.data_dir, "train", args.partition)
        data_seeds = [int(s) for s in args.data_seeds]
        rng = np.random.default_rng(args.seed)
        inputs, outputs, task_ids = [], [], []
        for task_id, name in enumerate(train_names):  # crossfit NOTE 2
            task_inputs, answers = data[name]
            inputs += crossfit.with_task_prefix(name, task_inputs)
            outputs += [a[int(rng.integers(len(a)))] for a in answers]
            task_ids += [task_id] * len(task_inputs)
        if settings["steps"] is None:
            settings["steps"] = max(1, math.ceil(
                args.epochs * len(inputs) / settings["batch_size"]))
        limit = args.test_limit or crossfit.CROSSFIT_TEST_LIMIT
        heldout = []
        for j, name in enumerate(eval_names):
            test_inputs, test_answers = crossfit.load_task(
                args.data_dir, name, seed=data_seeds[0], split="test", limit=limit)
            for data_seed in data_seeds:
                train_inputs, train_answers = crossfit.load_task(
                    args.data_dir, name, seed=data_seed, split="train")
                heldout.append(Adaptation(
                    name=name, task_id=len(train_names) + j,
                    train=(crossfit.with_task_prefix(name, train_inputs),
                           [a[0] for a in train_answers]),
                    test=(crossfit.with_task_prefix(name, test_inputs), test_answers),
                    metric=crossfit.task_metric(name) if name in crossfit.TASK_METRICS
                    else "EM",
                    data_seed=data_seed))
        train = [Adaptation(name=name, task_id=i, train=((), ()), test=((), ()),
                            metric="EM") for i, name in enumerate(train_names)]

        def build(variant, seed):
            import keras

            from zoo.polytropon.bart import SkillBartSeq2SeqLM

            keras.utils.set_random_seed(seed)
            try:
                return SkillBartSeq2SeqLM.from_preset(
                    args.preset, num_tasks=len(train_names), rank=settings["rank"],
                    seed=seed, encoder_sequence_length=args.encoder_sequence_length,
                    decoder_sequence_length=args.decoder_sequence_length,
                    **skill_arguments(variant, len(train_names), settings["num_skills"]))
            except ValueError as error:
                raise UsageError(str(error)) from None

        results = {variant: [] for variant in args.variants}
        for seed in range(args.seed, args.seed + args.seeds):
            for variant in args.variants:
                run_dir = (os.path.join(args.output_dir, variant, f"seed_{seed}")
                           if args.output_dir else "")
                config = {"experiment": "polytropon-crossfit", "variant": variant,
                          "seed": seed, "preset": args.preset,
                          "data_dir": os.path.abspath(args.data_dir),
                          "partition": args.partition, "data_seeds": data_seeds,
                          "sequence_lengths": [args.encoder_sequence_length,
                                               args.decoder_sequence_length],
                          "test_limit": limit, **settings}
                results[variant].append(run_variant(
                    variant, seed, settings, build, train, heldout, run_dir, config,
                    verbose=args.verbose, multitask_eval=False,
                    multitask_data=(inputs, outputs, task_ids)))
        from zoo.polytropon.metrics import metric_table

        metrics = {a.name: a.metric for a in heldout}
        tables, per_task = [], {}
        for variant, runs in results.items():
            scores = {name: [run["few_shot"][a.key] for run in runs for a in heldout
                             if a.name == name] for name in eval_names}
            per_task[variant] = scores
            tables.append(f"### {variant}\n\n" + metric_table(scores, metrics=metrics))
        table = (f"Polytropon on CrossFit ({args.partition} partition), {args.preset}: "
                 f"few-shot scores (%) of the {len(eval_names)} evaluation tasks, mean "
                 f"± std over data seeds {data_seeds} and {args.seeds} seed(s).\n\n"
                 + "\n\n".join(tables))
        output = {"preset": args.preset, "train_tasks": len(train_names),
                  "eval_tasks": list(eval_names), "data_seeds": data_seeds,
                  "settings": settings, "per_task": per_task,
                  "allocation_metrics": {v: runs[0]["allocation_metrics"]
                                         for v, runs in results.items()},
                  "seconds": round(time.time() - start, 1)}
        print(table)
        if args.output_dir:
            write_summary(args.output_dir, table, output)
        return output


POLYTROPON_SYNTHETIC = PolytroponSynthetic()
POLYTROPON_CROSSFIT = PolytroponCrossFit()
