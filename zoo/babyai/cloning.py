"""Behaviour cloning of the BabyAI bot with Polytropon's skill variants, for
`python -m zoo run babyai-bc`.

    python -m zoo run babyai-bc --backend jax
    python -m zoo run babyai-bc --variants private,shared,expert,polytropon \\
        --episodes-per-level 200 --epochs 15 --seeds 1

The network and the skill variants of the PPO experiment (networks.py,
the "tiny" preset) learn the bot's actions (demos.py) by supervised
learning: cross-entropy of the policy's logits on the bot's action,
`model.fit` with Adam (the learned allocation logits with their own,
faster Adam, as `training.ppo.ppo_optimizer` does). No reward, no
exploration: whether a learned allocation recovers the expert table of
paper Table 2 can be read without the noise of RL (issue 10).

Data (per level, default CPU_LEVELS): `--episodes-per-level` bot episodes
to train on, `--validation-episodes` other ones for the validation
accuracy, and `--eval-episodes` greedy rollouts of the trained policy from
other seeds again (demos.py NOTE 1). The demonstrations are cached in
`--output-dir/demos/` and read back by a resumed or repeated run.

Per run (`--output-dir/<variant>/seed_<k>/`): `history.csv` (loss,
accuracy, validation loss and accuracy per epoch), `preset/` (the policy,
`presets.from_preset` reads it), `result.json`. For the experiment:
`results.json`, `results.md` and, with a learned variant,
`allocation.png` (the expert table beside each learned allocation, its
skill columns reordered by the matching below). An interrupted run resumes
at its last finished epoch (`keras.callbacks.BackupAndRestore`: weights,
the optimizer state, the epoch; the shuffling of the remaining epochs is not
the uninterrupted run's); finished runs are read back.

Results per variant (means over seeds): per-level validation accuracy
(greedy action = the bot's) and rollout success, and for learned
allocations:

* `mean_probabilities`: sigmoid of the allocation logits (the inference
  allocation, NOTE 5 of layers/skill_lora_dense.py) averaged over the
  skill layers, (levels, skills);
* `metrics`: discreteness, sparsity, usage (paper Eqs. 5-7) of all skill
  layers' rows together;
* `expert_distance` (NOTE 1): the mean absolute difference between the
  mean allocation and the 0/1 expert table after reordering the learned
  skill columns by the permutation that makes it smallest (skills are
  unlabelled); 0 is the expert table exactly; `expert_agreement` the
  fraction of entries whose rounded probability equals the expert's entry
  under that permutation; `expert_distance_layers` the same distance per
  skill layer (each with its own best permutation), averaged.
  `reference_distances` gives the same distance for trivial allocations:
  all 0.5 (the start: logits ~ 0), all ones (every level every skill),
  and the identity (one skill per level, "private").

Default budget (2-core CPU, JAX, measured beside other jobs at a load
of 3-6): 4 CPU levels x 200 episodes (4,361 steps, collected in 4.6 s),
15 epochs of batches of 64: 73-188 s of training and 5-22 s of the 200
rollouts per run (12 runs), 10 minutes for the four variants with one
seed, 28 more for seeds 1 and 2 (docs/results.md).

NOTE 1 (measure): the mean over layers can hide layers that learn
  different permutations; `expert_distance_layers` matches each layer on
  its own. With S skills the search is over S! permutations (24 for the
  CPU levels, 40,320 for all 8 levels, still cheap). Rows are levels;
  the distance is symmetric in 0/1 errors, so a learned allocation that
  switches every skill on for every level scores
  `reference_distances["all_ones"]` (0.375 on the CPU levels).
NOTE 2 (critic): behaviour cloning trains the actor only; the critic's
  layers are frozen (their weights stay at the initialisation and are
  saved with the policy).
"""

import itertools
import os
import time

import numpy as np

from zoo.extras import UsageError
from zoo.runs import write_summary

DEFAULT_VARIANTS = ("private", "shared", "expert", "polytropon")


# ---------------------------------------------------------------------------
# Allocation against the expert table (NOTE 1), NumPy only.
# ---------------------------------------------------------------------------
def match_to_expert(probabilities, expert):
    """The column permutation of `probabilities` closest to `expert`.

    Args:
        probabilities: (tasks, skills) allocation probabilities in [0, 1].
        expert: (tasks, skills) 0/1 expert table.

    Returns:
        `(distance, permutation)`: the smallest mean absolute difference
        `mean |probabilities[:, permutation] - expert|` over all column
        permutations, and that permutation (a tuple: expert column j is
        learned column permutation[j]).

    Example (a learned table with its columns swapped matches exactly):

    >>> expert = np.array([[1, 0], [1, 1]])
    >>> match_to_expert(np.array([[0.0, 1.0], [1.0, 1.0]]), expert)
    (0.0, (1, 0))
    """
    probabilities = np.asarray(probabilities, np.float64)
    expert = np.asarray(expert, np.float64)
    if probabilities.shape != expert.shape or probabilities.ndim != 2:
        raise ValueError(f"probabilities {probabilities.shape} and expert "
                         f"{expert.shape} must be the same (tasks, skills) shape.")
    permutations = np.array(list(itertools.permutations(range(expert.shape[1]))))
    # (permutations, tasks, skills) in chunks: 8! x 8 x 8 floats is 20 MB.
    best, best_index = np.inf, 0
    for start in range(0, len(permutations), 5040):
        chunk = permutations[start:start + 5040]
        distances = np.abs(probabilities[:, chunk].transpose(1, 0, 2)
                           - expert).mean(axis=(1, 2))
        index = int(np.argmin(distances))
        if distances[index] < best - 1e-12:
            best, best_index = float(distances[index]), start + index
    return round(best, 6), tuple(int(i) for i in permutations[best_index])


def compare_with_expert(per_layer, expert):
    """The NOTE 1 measures of per-layer allocations against the expert.

    Args:
        per_layer: list of (tasks, skills) probability arrays, one per skill
            layer.
        expert: (tasks, skills) 0/1 expert table.

    Returns:
        dict: mean_probabilities (list of rows), metrics, expert_distance,
        expert_permutation, expert_agreement, expert_distance_per_level,
        expert_distance_layers, reference_distances.

    Example:

    >>> expert = np.array([[1, 0], [1, 1]])
    >>> result = compare_with_expert([np.full((2, 2), 0.5)], expert)
    >>> result["expert_distance"], result["reference_distances"]["all_ones"]
    (0.5, 0.25)
    """
    from layers.skill_allocation import skill_allocation_metrics

    per_layer = [np.asarray(p, np.float64) for p in per_layer]
    expert = np.asarray(expert)
    mean = np.mean(per_layer, axis=0)
    distance, permutation = match_to_expert(mean, expert)
    matched = mean[:, list(permutation)]
    metrics = skill_allocation_metrics(np.concatenate(per_layer))
    identity = np.eye(*expert.shape)
    return {
        "mean_probabilities": np.round(mean, 4).tolist(),
        "metrics": {key: round(float(value), 4) for key, value in metrics.items()},
        "expert_distance": round(distance, 4),
        "expert_permutation": list(permutation),
        "expert_agreement": round(float((np.round(matched) == expert).mean()), 4),
        "expert_distance_per_level": np.round(
            np.abs(matched - expert).mean(axis=1), 4).tolist(),
        "expert_distance_layers": round(float(np.mean(
            [match_to_expert(p, expert)[0] for p in per_layer])), 4),
        "reference_distances": {
            "uniform_0.5": 0.5,
            "all_ones": round(float((1 - expert).mean()), 4),
            "identity": (round(match_to_expert(identity, expert)[0], 4)
                         if expert.shape[0] == expert.shape[1] else None),
        },
    }


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------
def _keras_model_class():
    import keras

    @keras.saving.register_keras_serializable(package="modular_zoo")
    class BehaviourCloning(keras.Model):
        """A `BabyAIPolicy` trained on actions: `call((observations,
        task_ids))` returns its action logits (the critic is frozen,
        NOTE 2). Compile it with a from-logits sparse cross-entropy
        (`build_cloning_model` does)."""

        def __init__(self, policy, **kwargs):
            super().__init__(**kwargs)
            self.policy = policy
            for layer in (policy.critic_hidden, policy.critic_value):
                layer.trainable = False

        def call(self, inputs, training=False):
            observations, task_ids = inputs
            logits, _ = self.policy((observations, task_ids), training=training)
            return logits

        def get_config(self):
            config = super().get_config()
            config["policy"] = keras.saving.serialize_keras_object(self.policy)
            return config

        @classmethod
        def from_config(cls, config):
            config = dict(config)
            policy = keras.saving.deserialize_keras_object(config.pop("policy"))
            return cls(policy, **config)

    return BehaviourCloning


_CLASSES = {}


def __getattr__(name):
    # `BehaviourCloning` is made on first use, so that importing this module
    # (the runner does, to list the experiments) does not import keras.
    if name == "BehaviourCloning":
        if name not in _CLASSES:
            _CLASSES[name] = _keras_model_class()
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cloning_optimizer(learning_rate=1e-3, allocation_learning_rate=None):
    """Adam; with `allocation_learning_rate`, the allocation logits get their
    own Adam (`training.optimizers.with_allocation_optimizer`, as
    `training.ppo.ppo_optimizer`, without its gradient clipping)."""
    import keras

    from training.optimizers import with_allocation_optimizer

    return with_allocation_optimizer(
        keras.optimizers.Adam(learning_rate),
        None if allocation_learning_rate is None
        else keras.optimizers.Adam(allocation_learning_rate))


def build_cloning_model(variant, levels, seed=0, learning_rate=1e-3,
                        allocation_learning_rate=1e-2, preset="tiny",
                        **network_overrides):
    """A compiled `BehaviourCloning` of the preset's policy for `variant`.

    Keras is seeded with `seed` first (initial weights; the allocation
    noise is seeded with it too). The allocation learning rate applies to
    learned variants only. `BehaviourCloning` (this module's attribute,
    made on first use so that importing the module imports no keras) wraps
    the policy: `model((observations, task_ids))` -> logits, `model.policy`.

    Example:

    >>> model = build_cloning_model("polytropon", ["GoToObj", "GoToLocal"])
    >>> observations = {"image": np.zeros((2, 7, 7, 3), "int32"),
    ...                 "mission": np.ones((2, 9), "int32")}
    >>> tuple(model((observations, np.array([0, 1]))).shape)
    (2, 7)
    >>> model.policy.num_skills, type(model).__name__
    (4, 'BehaviourCloning')
    """
    import keras

    from zoo.babyai.presets import from_preset

    keras.utils.set_random_seed(seed)
    policy = from_preset(preset, variant=variant, levels=list(levels), seed=seed,
                         **network_overrides)
    model = __getattr__("BehaviourCloning")(policy)
    learned = policy.allocation == "learned"
    model.compile(
        optimizer=cloning_optimizer(
            learning_rate, allocation_learning_rate if learned else None),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    return model


def fit_arrays(demos):
    """`(inputs, targets)` for `model.fit` from demonstration steps."""
    observations = {"image": demos["image"].astype(np.int32),
                    "mission": demos["mission"].astype(np.int32)}
    return (observations, demos["task_ids"].astype(np.int32)), demos["actions"]


def predict_actions(model, observations, task_ids, batch_size=1024):
    """Greedy actions (argmax of the logits) of a batch of observations."""
    import keras

    actions = []
    for start in range(0, len(task_ids), batch_size):
        chunk = slice(start, start + batch_size)
        logits = model.predict_on_batch(
            ({key: value[chunk] for key, value in observations.items()},
             task_ids[chunk]))
        actions.append(np.argmax(keras.ops.convert_to_numpy(logits), axis=-1))
    return np.concatenate(actions) if actions else np.zeros(0, np.int64)


def per_level_accuracy(model, demos, num_levels):
    """Per level, the fraction of steps where the greedy action is the
    bot's (None for a level without steps)."""
    (observations, task_ids), actions = fit_arrays(demos)
    correct = predict_actions(model, observations, task_ids) == actions
    return [round(float(correct[task_ids == k].mean()), 4) if np.any(task_ids == k)
            else None for k in range(num_levels)]


def rollout_success(model, levels, episodes, seed=0):
    """Greedy rollouts of `model` (`(observations, task_ids)` -> logits):
    `episodes` per level from the "evaluation" seeds of demos.py.

    All episodes step together, one batch per step (a fixed batch size, so
    a compiled predict is traced once); finished episodes are no longer
    stepped.

    Returns:
        `(success, lengths)`: per level, the success rate and the mean
        episode length.
    """
    import contextlib
    import io

    from zoo.babyai.demos import episode_seeds
    from zoo.babyai.envs import MultiLevelEnv

    envs, task_ids, observations = [], [], []
    for task_id, level in enumerate(levels):
        for episode_seed in episode_seeds(seed, level, episodes, "evaluation"):
            env = MultiLevelEnv((level,), seed=0)
            observation, _ = env.reset(seed=int(episode_seed))
            envs.append(env)
            task_ids.append(task_id)
            observations.append(observation)
    task_ids = np.asarray(task_ids, np.int32)
    done = np.zeros(len(envs), bool)
    success = np.zeros(len(envs), bool)
    lengths = np.zeros(len(envs), np.int32)
    try:
        while not done.all():
            batch = {key: np.stack([o[key] for o in observations]).astype(np.int32)
                     for key in ("image", "mission")}
            actions = predict_actions(model, batch, task_ids, batch_size=len(envs))
            for index in np.flatnonzero(~done):
                with contextlib.redirect_stdout(io.StringIO()):
                    observation, _, terminated, truncated, info = envs[index].step(
                        int(actions[index]))
                observations[index] = observation
                lengths[index] += 1
                if terminated or truncated:
                    done[index] = True
                    success[index] = bool(info["success"])
    finally:
        for env in envs:
            env.close()
    rates = [round(float(success[task_ids == k].mean()), 4) for k in range(len(levels))]
    mean_lengths = [round(float(lengths[task_ids == k].mean()), 2)
                    for k in range(len(levels))]
    return rates, mean_lengths


def allocation_result(policy, levels):
    """`compare_with_expert` of a learned policy's skill layers."""
    from zoo.babyai.variants import expert_matrix

    expert = expert_matrix(levels, policy.num_skills)
    per_layer = [np.asarray(p).reshape(len(levels), -1, policy.num_skills).mean(axis=1)
                 for p in policy.allocation_probabilities().values()]
    return compare_with_expert(per_layer, expert)


# ---------------------------------------------------------------------------
# The experiment.
# ---------------------------------------------------------------------------
def _settings(args):
    return {
        "levels": list(args.levels),
        "episodes_per_level": args.episodes_per_level,
        "validation_episodes": args.validation_episodes,
        "eval_episodes": args.eval_episodes,
        "data_seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "allocation_learning_rate": args.allocation_learning_rate,
        "preset": "tiny",
    }


def _demonstrations(args, settings):
    """(train, validation) steps of successful episodes, and the bot's
    success rate on the training episodes."""
    from zoo.babyai.demos import load_or_collect, successful_steps

    demos_dir = os.path.join(args.output_dir, "demos") if args.output_dir else ""
    loaded = {}
    for split, episodes in (("train", settings["episodes_per_level"]),
                            ("validation", settings["validation_episodes"])):
        path = os.path.join(demos_dir, f"{split}.npz") if demos_dir else ""
        began = time.time()
        demos, cached = load_or_collect(path, settings["levels"], episodes,
                                        settings["data_seed"], split)
        if args.verbose:
            print(f"[demos] {split}: {len(demos['episode_success'])} episodes, "
                  f"{len(demos['actions'])} steps, bot success "
                  f"{demos['episode_success'].mean():.3f} "
                  f"({'read back' if cached else f'{time.time() - began:.1f} s'})",
                  flush=True)
        loaded[split] = demos
    bot_success = round(float(loaded["train"]["episode_success"].mean()), 4)
    return (successful_steps(loaded["train"]), successful_steps(loaded["validation"]),
            bot_success)


def train_variant(variant, seed, train, validation, settings, args, run_dir):
    """Trains and evaluates one (variant, seed); returns its result dict."""
    from zoo.babyai.presets import save_to_preset
    from zoo.runs import RunDirectory

    run = RunDirectory(run_dir, {"variant": variant, "seed": seed, **settings})
    finished = run.finished()
    if finished is not None:
        return finished
    levels = settings["levels"]
    model = build_cloning_model(
        variant, levels, seed=seed, learning_rate=settings["learning_rate"],
        allocation_learning_rate=settings["allocation_learning_rate"])
    policy = model.policy
    if args.verbose:
        print(f"[{variant} seed {seed}] {policy.count_params():,} parameters, "
              f"{len(train['actions'])} training steps", flush=True)
    (observations, task_ids), _ = fit_arrays(train)
    # Built on a real batch first: BackupAndRestore (run.callbacks(), which
    # resumes an interrupted run) refuses an unbuilt model on TensorFlow.
    model(({key: value[:2] for key, value in observations.items()}, task_ids[:2]))
    began = time.time()
    model.fit(*fit_arrays(train), batch_size=settings["batch_size"],
              epochs=settings["epochs"], shuffle=True,
              validation_data=fit_arrays(validation), callbacks=run.callbacks(),
              verbose=args.verbose)
    train_seconds = time.time() - began
    accuracy = per_level_accuracy(model, validation, len(levels))
    began = time.time()
    success, lengths = rollout_success(model, levels, settings["eval_episodes"],
                                       seed=settings["data_seed"])
    result = {
        "variant": variant,
        "seed": seed,
        "parameters": int(policy.count_params()),
        "train_steps": int(len(train["actions"])),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.time() - began, 1),
        "validation_accuracy": round(float(np.mean(accuracy)), 4),
        "validation_accuracy_per_level": dict(zip(levels, accuracy)),
        "success_rate": round(float(np.mean(success)), 4),
        "success_rate_per_level": dict(zip(levels, success)),
        "episode_length_per_level": dict(zip(levels, lengths)),
    }
    if policy.allocation == "learned":
        result["allocation"] = allocation_result(policy, levels)
    run.write(result, preset=lambda path: save_to_preset(policy, path, training=settings))
    return result


def summarise(results, levels):
    """Per variant: means over seeds of the scalar results and per-level
    rates; for learned allocations the expert measures (means over seeds)
    and the first seed's allocation."""
    summary = {}
    for variant, runs in results.items():
        runs = list(runs.values())
        row = {
            "seeds": [run["seed"] for run in runs],
            "parameters": runs[0]["parameters"],
            "train_seconds_mean": round(float(np.mean(
                [run["train_seconds"] for run in runs])), 1),
        }
        for key in ("validation_accuracy", "success_rate"):
            row[key] = round(float(np.mean([run[key] for run in runs])), 4)
            row[key + "_per_level"] = {
                level: round(float(np.mean([run[key + "_per_level"][level]
                                            for run in runs])), 4)
                for level in levels}
        if "allocation" in runs[0]:
            allocations = [run["allocation"] for run in runs]
            for key in ("expert_distance", "expert_agreement", "expert_distance_layers"):
                row[key] = round(float(np.mean([a[key] for a in allocations])), 4)
            row["metrics"] = {key: round(float(np.mean([a["metrics"][key]
                                                        for a in allocations])), 4)
                              for key in allocations[0]["metrics"]}
            row["reference_distances"] = allocations[0]["reference_distances"]
            row["allocation_first_seed"] = allocations[0]
        summary[variant] = row
    return summary


def results_table(summary, levels, settings, bot_success):
    """Markdown: per variant the means, then per level, then allocations."""
    lines = [f"### babyai-bc ({', '.join(levels)}; "
             f"{settings['episodes_per_level']} bot episodes per level, bot success "
             f"{bot_success:.3f}; {settings['epochs']} epochs)", "",
             "| variant | seeds | parameters | validation accuracy | rollout success | "
             "expert distance | train s/run |",
             "|---|---|---|---|---|---|---|"]
    for variant, row in summary.items():
        distance = (f"{row['expert_distance']:.3f}" if "expert_distance" in row else "-")
        lines.append(f"| {variant} | {len(row['seeds'])} | {row['parameters']:,} | "
                     f"{row['validation_accuracy']:.3f} | {row['success_rate']:.3f} | "
                     f"{distance} | {row['train_seconds_mean']} |")
    variants = list(summary)
    lines += ["", "Per level: validation accuracy / rollout success "
              f"({settings['eval_episodes']} greedy episodes)", "",
              "| level | " + " | ".join(variants) + " |",
              "|---|" + "---|" * len(variants)]
    for level in levels:
        cells = [f"{summary[v]['validation_accuracy_per_level'][level]:.3f} / "
                 f"{summary[v]['success_rate_per_level'][level]:.3f}" for v in variants]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    learned = [v for v in variants if "expert_distance" in summary[v]]
    if learned:
        from zoo.babyai.variants import expert_matrix

        reference = summary[learned[0]]["reference_distances"]
        lines += ["", "Learned allocations against the expert table (mean |p - expert| "
                  "after the best skill permutation; references: all 0.5 "
                  f"{reference['uniform_0.5']}, all ones {reference['all_ones']}, "
                  f"identity {reference['identity']})", "",
                  "| variant | distance | per-layer distance | agreement | "
                  "discreteness | sparsity | usage |",
                  "|---|---|---|---|---|---|---|"]
        for variant in learned:
            row = summary[variant]
            lines.append(
                f"| {variant} | {row['expert_distance']:.3f} | "
                f"{row['expert_distance_layers']:.3f} | {row['expert_agreement']:.3f} | "
                f"{row['metrics']['discreteness']:.3f} | {row['metrics']['sparsity']:.3f} "
                f"| {row['metrics']['usage']:.3f} |")
        expert = expert_matrix(levels)
        for variant in learned:
            allocation = summary[variant]["allocation_first_seed"]
            matched = np.asarray(allocation["mean_probabilities"])[
                :, allocation["expert_permutation"]]
            skills = expert.shape[1]
            lines += ["", f"{variant} (seed {summary[variant]['seeds'][0]}): mean "
                      "allocation, skill columns matched to the expert's "
                      "(expert entry in brackets)", "",
                      "| level | " + " | ".join(f"skill {k + 1}" for k in range(skills))
                      + " |", "|---|" + "---|" * skills]
            for index, level in enumerate(levels):
                lines.append(f"| {level} | " + " | ".join(
                    f"{matched[index, k]:.2f} ({expert[index, k]})"
                    for k in range(skills)) + " |")
    return "\n".join(lines)


def plot_allocations(path, summary, levels):
    """The expert table beside each learned variant's mean allocation
    (first seed), its skill columns in the matched order."""
    from zoo.babyai.variants import expert_matrix
    from zoo.runs import pyplot

    learned = [v for v in summary if "allocation_first_seed" in summary[v]]
    plt = pyplot(path) if learned else None
    if plt is None:
        return
    expert = expert_matrix(levels)
    panels = [("expert (paper Table 2)", expert)]
    for variant in learned:
        allocation = summary[variant]["allocation_first_seed"]
        panels.append((f"{variant}, seed {summary[variant]['seeds'][0]}\n"
                       f"distance {allocation['expert_distance']:.3f}",
                       np.asarray(allocation["mean_probabilities"])[
                           :, allocation["expert_permutation"]]))
    figure, axes = plt.subplots(1, len(panels), figsize=(2.2 + 2.4 * len(panels), 3.2),
                                squeeze=False)
    for axis, (title, matrix) in zip(axes[0], panels):
        image = axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        axis.set_title(title, fontsize=9)
        axis.set_xticks(range(matrix.shape[1]))
        axis.set_xticklabels([str(k + 1) for k in range(matrix.shape[1])])
        axis.set_xlabel("skill")
        axis.set_yticks(range(len(levels)))
        axis.set_yticklabels(levels if axis is axes[0][0] else [], fontsize=8)
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, f"{value:.2f}" if value % 1 else f"{int(value)}",
                      ha="center", va="center", fontsize=7,
                      color="black" if value > 0.5 else "white")
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


class BehaviourCloningExperiment:
    """`babyai-bc` (module docstring)."""

    DESCRIPTION = ("Behaviour cloning of the BabyAI bot with the private, shared, "
                   "expert and Polytropon skill variants (CPU levels; minutes): do "
                   "learned allocations recover the expert table?")
    REQUIRES = (("gymnasium", "rl"), ("minigrid", "rl"))

    def add_arguments(self, parser):
        from zoo.__main__ import comma_list, positive_float, positive_int
        from zoo.babyai.envs import CPU_LEVELS, LEVELS
        from zoo.babyai.variants import VARIANTS

        parser.add_argument("--variants", "--variant", dest="variants",
                            default=",".join(DEFAULT_VARIANTS),
                            type=comma_list(VARIANTS, "variants"),
                            help=f"comma-separated, from {', '.join(VARIANTS)}")
        parser.add_argument("--levels", default=",".join(CPU_LEVELS),
                            type=comma_list(LEVELS, "levels"),
                            help="comma-separated BabyAI levels (default: the 4 "
                                 "single-room CPU levels)")
        parser.add_argument("--episodes-per-level", type=positive_int, default=200,
                            help="bot episodes per level to train on")
        parser.add_argument("--validation-episodes", type=positive_int, default=25,
                            help="other bot episodes per level for the validation "
                                 "accuracy")
        parser.add_argument("--eval-episodes", type=positive_int, default=50,
                            help="greedy rollouts per level of each trained policy")
        parser.add_argument("--epochs", type=positive_int, default=15)
        parser.add_argument("--batch-size", type=positive_int, default=64)
        parser.add_argument("--learning-rate", type=positive_float, default=1e-3,
                            help="Adam, the network's weights and skills")
        parser.add_argument("--allocation-learning-rate", type=positive_float,
                            default=1e-2, help="Adam, the learned allocation logits")
        parser.add_argument("--seeds", type=positive_int, default=1,
                            help="runs per variant (seeds seed, seed+1, ...)")
        parser.add_argument("--plot", type=int, choices=(0, 1), default=1,
                            help="write allocation.png (needs the plot extra)")

    def run(self, args):
        for name, values in (("--variants", args.variants), ("--levels", args.levels)):
            if len(set(values)) != len(values):
                raise UsageError(f"{name} repeats a value: {','.join(values)}.")
        settings = _settings(args)
        levels = settings["levels"]
        train, validation, bot_success = _demonstrations(args, settings)
        results = {}
        for variant in args.variants:
            for seed in range(args.seed, args.seed + args.seeds):
                run_dir = (os.path.join(args.output_dir, variant, f"seed_{seed}")
                           if args.output_dir else "")
                results.setdefault(variant, {})[seed] = train_variant(
                    variant, seed, train, validation, settings, args, run_dir)
        summary = summarise(results, levels)
        table = results_table(summary, levels, settings, bot_success)
        write_summary(args.output_dir, table, {"bot_success": bot_success,
                                               "settings": settings,
                                               "variants": summary})
        if args.output_dir and args.plot:
            plot_allocations(os.path.join(args.output_dir, "allocation.png"),
                             summary, levels)
        return {"bot_success": bot_success, "variants": summary}


BABYAI_BC = BehaviourCloningExperiment()
