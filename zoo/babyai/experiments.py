"""Polytropon on BabyAI with PPO, for `python -m zoo run babyai`.

    python -m zoo run babyai --variant polytropon --backend jax
    python -m zoo run babyai --variants private,shared,expert,polytropon --seeds 3
    python -m zoo run babyai --preset paper --variant polytropon     # GPU-sized

Trains `training.ppo.PPO` with the `BabyAIPolicy` of a preset and a skill
variant (networks.py) through `training.on_policy.OnPolicyLoop` on the
multitask vector environment (a level drawn per episode; envs.py). The
CPU default ("tiny" preset): GoToObj, GoToRedBallGrey, GoToRedBall and
GoToLocal (their expert skill sets are nested, 4 skills), 16 environments,
200K frames per run (`--frames`). `--preset paper` gives the paper's 8
levels, network (2 FiLM blocks, LSTM, recurrence 20) and batch.

Per run (`--output-dir/<variant>/seed_<k>/`): `history.csv` (PPO losses,
frames, success per rollout), `episodes.csv` (every finished episode:
frames, level, success, return, length), `result.json`, `model.keras` and
a preset directory. For the whole experiment: `results.json` /
`results.md` (per variant and level, mean over seeds), `curves.csv` and
`curves.png` (rolling success against frames), and, for learned
allocations, `allocation.png` (the mean allocation over skill layers
beside the expert table of paper Table 2). An interrupted run resumes at
its last finished rollout; finished runs are read back.

Metrics per level (BabyAI's, with the issue's threshold): `success_rate`
is the mean success of the level's last 100 episodes;
`frames_to_0.9` / `episodes_to_0.9` are the frames (over all environments)
and the level's episodes when its rolling 100-episode success first
reached 0.9 (None if never); `success_auc` is the area under the rolling
success curve over the run's frames, divided by the frames (1.0: solved
from the start).
"""

import os

import numpy as np

from zoo.extras import UsageError

WINDOW = 100
THRESHOLD = 0.9
CURVE_POINTS = 50


def level_curve(records, task_id, window=WINDOW):
    """(frames, rolling success) of one level's episodes, in order."""
    rows = records[records[:, 1] == task_id]
    if not len(rows):
        return np.zeros(0), np.zeros(0)
    success = rows[:, 2]
    cumulative = np.concatenate([[0.0], np.cumsum(success)])
    counts = np.minimum(np.arange(1, len(success) + 1), window)
    ends = np.arange(1, len(success) + 1)
    rolling = (cumulative[ends] - cumulative[ends - counts]) / counts
    return rows[:, 0], rolling


def level_metrics(records, task_id, total_frames, window=WINDOW, threshold=THRESHOLD):
    """The module docstring's metrics of one level.

    >>> records = np.array([[10, 0, 0, 0, 5], [20, 0, 1, .9, 4], [30, 0, 1, .9, 3]])
    >>> level_metrics(records, 0, 40, window=2, threshold=0.9)["frames_to_0.9"]
    30
    """
    frames, rolling = level_curve(records, task_id, window)
    if not len(frames):
        return {"episodes": 0, "success_rate": None, "frames_to_0.9": None,
                "episodes_to_0.9": None, "success_auc": 0.0}
    # Only full windows count as reaching the threshold (after the first
    # `window` episodes, or all of them when fewer finished).
    full = np.arange(1, len(frames) + 1) >= min(window, len(frames))
    reached = np.flatnonzero((rolling >= threshold) & full)
    # Step function: the rolling success holds from one episode to the next.
    edges = np.concatenate([frames, [max(total_frames, frames[-1])]])
    auc = float(np.sum(rolling * np.diff(edges)) / max(total_frames, 1))
    return {
        "episodes": int(len(frames)),
        "success_rate": round(float(rolling[-1]), 4),
        "frames_to_0.9": int(frames[reached[0]]) if len(reached) else None,
        "episodes_to_0.9": int(reached[0] + 1) if len(reached) else None,
        "success_auc": round(auc, 4),
    }


def curve_points(records, task_id, total_frames, points=CURVE_POINTS):
    """The rolling success of a level sampled at `points` evenly spaced
    frame counts (0 before its first episode)."""
    frames, rolling = level_curve(records, task_id)
    grid = np.linspace(total_frames / points, total_frames, points)
    if not len(frames):
        return grid, np.zeros(points)
    index = np.searchsorted(frames, grid, side="right") - 1
    return grid, np.where(index >= 0, rolling[np.maximum(index, 0)], 0.0)


def _settings(args):
    from zoo.babyai.envs import LEVELS
    from zoo.babyai.presets import get_preset

    training = get_preset(args.preset)["training"]
    if args.levels == "cpu":
        levels = training["levels"] if args.preset == "tiny" else list(LEVELS[:4])
    elif args.levels == "paper":
        levels = list(LEVELS)
    else:
        levels = list(args.levels)
    settings = dict(training, levels=levels)
    for name in ("frames", "num_envs", "rollout_steps", "minibatch_size",
                 "update_epochs", "learning_rate", "allocation_learning_rate"):
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    settings["num_skills"] = args.skills
    per_rollout = settings["num_envs"] * settings["rollout_steps"]
    if (per_rollout // settings["recurrence"]) % max(
            1, settings["minibatch_size"] // settings["recurrence"]):
        raise UsageError(
            f"--minibatch-size {settings['minibatch_size']} does not divide a rollout "
            f"of {settings['num_envs']} environments x {settings['rollout_steps']} steps.")
    if settings["frames"] < per_rollout:
        raise UsageError(f"--frames {settings['frames']} is less than one rollout "
                         f"({per_rollout} frames).")
    return settings


def train_variant(variant, seed, settings, args, run_dir):
    """Trains one variant for one seed; returns its result dict."""
    import keras

    from training.on_policy import OnPolicyLoop
    from training.ppo import PPO, ppo_optimizer
    from zoo.babyai.envs import make_multitask_env, prepare_observations
    from zoo.babyai.presets import from_preset, save_to_preset
    from zoo.runs import RunDirectory

    run = RunDirectory(run_dir, {"experiment": "babyai", "variant": variant,
                                 "seed": seed, "preset": args.preset, **settings})
    finished = run.finished()
    if finished is not None:
        return finished
    levels = settings["levels"]
    keras.utils.set_random_seed(seed)
    try:
        policy = from_preset(args.preset, variant=variant, levels=levels,
                             num_skills=settings["num_skills"], seed=seed)
    except ValueError as error:  # e.g. too few skills for the expert table
        raise UsageError(str(error)) from None
    ppo = PPO(policy, num_actions=policy.num_actions,
              recurrence=settings["recurrence"])
    learned = policy.allocation == "learned"
    ppo.compile(optimizer=ppo_optimizer(
        settings["learning_rate"],
        allocation_learning_rate=settings["allocation_learning_rate"] if learned else None))
    env = make_multitask_env(levels, num_envs=settings["num_envs"], seed=seed)
    loop = OnPolicyLoop(env, rollout_steps=settings["rollout_steps"],
                        update_epochs=settings["update_epochs"],
                        minibatch_size=settings["minibatch_size"],
                        gamma=settings["gamma"], lam=settings["lam"],
                        recurrence=settings["recurrence"], run_dir=run.path, seed=seed)
    loop.prepare_observations = prepare_observations
    loop.fit(ppo, settings["frames"], callbacks=run.callbacks(backup=False),
             verbose=args.verbose)
    env.close()
    records = loop.episode_records
    frames = loop.env_steps * loop.num_envs
    result = {
        "variant": variant, "seed": seed, "frames": int(frames),
        "episodes": int(len(records)),
        "levels": {level: level_metrics(records, task, frames)
                   for task, level in enumerate(levels)},
        "curves": {level: curve_points(records, task, frames)[1].round(4).tolist()
                   for task, level in enumerate(levels)},
    }
    if loop.resumed_from_env_step is not None:
        result["resumed_from_env_step"] = loop.resumed_from_env_step
    if learned:
        result["allocation"] = _allocation_summary(policy)

    def write_episodes(path):
        header = "frames,level,success,return,length"
        rows = [f"{int(r[0])},{levels[int(r[1])]},{int(r[2])},{r[3]:.4f},{int(r[4])}"
                for r in records]
        with open(path, "w") as file:
            file.write("\n".join([header, *rows]) + "\n")

    run.write(result, ppo, **{
        "episodes.csv": write_episodes,
        "preset": lambda path: save_to_preset(policy, path, training=settings)})
    return result


def _allocation_summary(policy):
    """The mean allocation probabilities over skill layers and its metrics."""
    from layers.skill_allocation import skill_allocation_metrics

    per_layer = list(policy.allocation_probabilities().values())  # (tasks, splits, skills)
    probabilities = np.mean([p.mean(axis=1) for p in per_layer], axis=0)
    metrics = skill_allocation_metrics(np.concatenate(
        [p.reshape(-1, p.shape[-1]) for p in per_layer]))
    return {"mean_probabilities": probabilities.astype(np.float64).round(4).tolist(),
            "metrics": {name: round(float(value), 4) for name, value in metrics.items()}}


def _aggregate(results, levels):
    """Per variant and level, the mean (and per-seed values) over seeds."""
    summary = {}
    for variant, runs in results.items():
        summary[variant] = {}
        for level in levels:
            per_seed = [run["levels"][level] for run in runs]
            entry = {}
            for name in ("success_rate", "success_auc", "frames_to_0.9",
                         "episodes_to_0.9"):
                values = [m[name] for m in per_seed]
                known = [v for v in values if v is not None]
                entry[name] = (round(float(np.mean(known)), 4)
                               if len(known) == len(values) else None)
                entry[name + "_per_seed"] = values
            summary[variant][level] = entry
    return summary


def _table(summary, levels, settings, seeds):
    lines = [f"BabyAI PPO, {settings['frames']:,} frames per run, {seeds} seed(s); "
             "success of the last 100 episodes / frames to 0.9 rolling success "
             "(mean over seeds; - if a seed never reached it)", "",
             "| variant | " + " | ".join(levels) + " |",
             "|---" * (len(levels) + 1) + "|"]
    for variant, per_level in summary.items():
        cells = []
        for level in levels:
            entry = per_level[level]
            frames = entry["frames_to_0.9"]
            rate = entry["success_rate"]
            cells.append((f"{rate:.2f}" if rate is not None else "no episode") + " / "
                         + (f"{frames / 1000:.0f}K" if frames is not None else "-"))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_curves(output_dir, results, levels, frames):
    from zoo.runs import pyplot

    grid = np.linspace(frames / CURVE_POINTS, frames, CURVE_POINTS)
    rows = ["variant,level,frames,rolling_success_mean"]
    means = {}
    for variant, runs in results.items():
        for level in levels:
            mean = np.mean([run["curves"][level] for run in runs], axis=0)
            means[variant, level] = mean
            rows += [f"{variant},{level},{int(f)},{s:.4f}" for f, s in zip(grid, mean)]
    with open(os.path.join(output_dir, "curves.csv"), "w") as file:
        file.write("\n".join(rows) + "\n")
    path = os.path.join(output_dir, "curves.png")
    plt = pyplot(path)
    if plt is None:
        return
    figure, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.2),
                                squeeze=False)
    for axis, level in zip(axes[0], levels):
        for variant in results:
            axis.plot(grid, means[variant, level], label=variant)
        axis.set_title(level)
        axis.set_xlabel("frames")
        axis.set_ylim(0, 1.02)
    axes[0][0].set_ylabel(f"success (rolling {WINDOW})")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _write_allocation(output_dir, results, levels):
    from zoo.babyai.variants import expert_matrix
    from zoo.runs import pyplot

    learned = {variant: runs for variant, runs in results.items()
               if "allocation" in runs[0]}
    if not learned:
        return
    path = os.path.join(output_dir, "allocation.png")
    plt = pyplot(path)
    if plt is None:
        return
    panels = [("expert (paper Table 2)", expert_matrix(levels))]
    for variant, runs in learned.items():
        for run in runs:
            panels.append((f"{variant}, seed {run['seed']}",
                           np.asarray(run["allocation"]["mean_probabilities"])))
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3),
                                squeeze=False)
    for axis, (title, matrix) in zip(axes[0], panels):
        axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        axis.set_title(title, fontsize=8)
        axis.set_yticks(range(len(levels)), levels, fontsize=7)
        axis.set_xticks(range(matrix.shape[1]), range(1, matrix.shape[1] + 1))
        axis.set_xlabel("skill")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class BabyAIExperiment:
    DESCRIPTION = ("Polytropon on BabyAI: PPO with private / shared / expert / "
                   "polytropon skills on every layer (CPU: 4 levels, tiny network, "
                   "200K frames).")
    REQUIRES = (("gymnasium", "rl"), ("minigrid", "rl"))

    def add_arguments(self, parser):
        from zoo.__main__ import comma_list, positive_float, positive_int
        from zoo.babyai.envs import LEVELS
        from zoo.babyai.variants import VARIANTS
        from zoo.babyai.presets import PRESETS

        level_list = comma_list(LEVELS, "levels")
        parser.add_argument("--variants", "--variant", dest="variants",
                            type=comma_list(VARIANTS, "variants"), default=["polytropon"],
                            help=f"one or several of {', '.join(VARIANTS)}")
        parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                            help="network and training defaults (tiny: CPU; paper: "
                                 "the paper's 8 levels, network and batch)")
        parser.add_argument("--levels", default="cpu",
                            type=lambda text: text if text in ("cpu", "paper")
                            else level_list(text),
                            help="cpu (GoToObj, GoToRedBallGrey, GoToRedBall, GoToLocal),"
                                 " paper (the 8 levels) or a comma list of levels")
        parser.add_argument("--frames", type=positive_int, default=None,
                            help="frames per run over all environments (tiny: 200,000)")
        parser.add_argument("--seeds", type=positive_int, default=1,
                            help="runs per variant, seeds --seed, --seed + 1, ...")
        parser.add_argument("--skills", type=positive_int, default=None,
                            help="skill inventory of the learned variants (default: "
                                 "the expert table's, 4 for the CPU levels)")
        parser.add_argument("--num-envs", type=positive_int, default=None)
        parser.add_argument("--rollout-steps", type=positive_int, default=None)
        parser.add_argument("--minibatch-size", type=positive_int, default=None)
        parser.add_argument("--update-epochs", type=positive_int, default=None)
        parser.add_argument("--learning-rate", type=positive_float, default=None)
        parser.add_argument("--allocation-learning-rate", type=positive_float,
                            default=None)

    def run(self, args):
        settings = _settings(args)
        levels = settings["levels"]
        results = {}
        for variant in args.variants:
            results[variant] = []
            for seed in range(args.seed, args.seed + args.seeds):
                run_dir = (os.path.join(args.output_dir, variant, f"seed_{seed}")
                           if args.output_dir else "")
                results[variant].append(train_variant(variant, seed, settings, args,
                                                      run_dir))
        summary = _aggregate(results, levels)
        output = {"preset": args.preset, "levels": levels, "frames": settings["frames"],
                  "seeds": args.seeds, "per_level": summary,
                  "runs": {variant: [{key: run[key] for key in run if key != "curves"}
                                     for run in runs]
                           for variant, runs in results.items()}}
        if args.output_dir:
            from zoo.runs import write_summary

            write_summary(args.output_dir, _table(summary, levels, settings, args.seeds),
                          output)
            _write_curves(args.output_dir, results, levels, settings["frames"])
            _write_allocation(args.output_dir, results, levels)
        return output


BABYAI = BabyAIExperiment()
