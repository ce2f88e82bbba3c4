"""Multi-task SAC on Meta-World MT10 / MT50 and MINT's goal-conditioned
pushing, for `python -m zoo run`.

    python -m zoo run mt10 --network soft-modular --backend jax
    python -m zoo run mt10 --network soft-modular --goals fixed
    python -m zoo run mt50 --network mt-mh-sac --env-steps 200000
    python -m zoo run mint-push --network mint-goal,sac-goal,concat-all-fc

Trains `training.sac.MultiTaskSAC` with the chosen actor and critic family
(`zoo/metaworld/networks.py`) through `training.off_policy.OffPolicyLoop`
(`model.fit` on task-balanced replay batches, one vector step per update),
evaluates the Meta-World success rate after every epoch (`envs.py`), and
writes to `--output-dir`: `history.csv` (losses, returns, success rate per
epoch), `curves.png`, `result.json` and the final `model.keras`. An
interrupted run resumes from its last epoch (weights, optimizer, replay
buffer, step count, random state); a directory of another configuration is
refused.

CPU budget (default): 32 transitions per task per update and 2 evaluation
episodes per task; one update at the paper's 128 per task (1,280 for MT10)
costs ~30 vector steps on a 2-core CPU (reference-facts "Speed anchors").
`--paper` restores the paper's batch (128 per task), budget (15M MT10,
50M MT50 environment steps) and evaluation (50 episodes per task).
`--goals` picks MT10 / MT50-Conditioned ("random", the default: 50 goals
per task, one per episode) or -Fixed ("fixed": one goal per task), see
envs.py; it is recorded in the run's config and result.

`mint-push` (MINT Section 6.3, goal_push.py): the same SAC and loop on
push-v3 with a table of `--num-goals` goals (200), each goal one task (a
replay region, a temperature), `--num-envs` environments (9) each drawing
a goal per episode, updates on `--goals-per-batch` goals (9) of
`--batch-per-goal` transitions (32; --paper: 128), and the networks of
networks.py NOTE 9 at their "push/<network>" sizes. After every epoch it
evaluates `--eval-goals` fixed goals (the first of the table; 9, --paper:
all) with the deterministic policy: mean success and mean final puck-goal
distance. Results per network: `env_steps`, `success_rate`,
`final_distance` (and `initial_distance`, the evaluation goals' mean
puck-goal distance at reset: a policy that never touches the puck ends
there), in result.json, and one table in `results.md` / `results.json`.

NOTE 1 (mint-push buffer): a region per goal of `--buffer-per-goal`
  transitions (20,000), capped at four times a goal's expected share of
  the run (`4 * env_steps / num_goals`, at least an episode): the buffer
  is checkpointed whole every epoch, and 200 full regions of 20,000 are
  1.3 GB. A goal that is drawn more often than that overwrites its oldest
  transitions.
NOTE 2 (mint-push temperatures): `MultiTaskSAC` keeps one temperature per
  task, so here one per goal (each updated when its goal is in a batch);
  the paper does not say how its goal-conditioned SAC sets the temperature.
NOTE 3 (mint-push budget): the text of the paper gives no environment-step
  budget for pushing (only its Figure 4, not in the extracted text), so
  `--paper` changes the batch and the evaluation, not `--env-steps`.
"""

import os

from zoo.extras import UsageError

_BENCHMARKS = {
    "mt10": {"paper_env_steps": 15_000_000, "default_network": "mt-sac"},
    "mt50": {"paper_env_steps": 50_000_000, "default_network": "mt-sac"},
}


def add_loop_arguments(parser):
    """The off-policy loop's options, shared by the Meta-World experiments."""
    from zoo.__main__ import non_negative_int, positive_float, positive_int

    parser.add_argument("--steps-per-epoch", type=positive_int, default=500,
                        help="updates between evaluations and checkpoints")
    parser.add_argument("--warmup-steps", type=positive_int, default=500,
                        help="vector steps of random actions first")
    parser.add_argument("--learning-rate", type=positive_float, default=3e-4)
    parser.add_argument("--plot", type=non_negative_int, choices=(0, 1), default=1,
                        help="write curves.png (needs the plot extra)")


class MetaWorldExperiment:
    """One registered experiment per benchmark."""

    REQUIRES = (("gymnasium", "rl"), ("metaworld", "rl"), ("packaging", "rl"))

    def __init__(self, benchmark):
        self.benchmark = benchmark
        self.DESCRIPTION = (
            f"Multi-task SAC on Meta-World {benchmark.upper()} with Soft "
            "Modularization, MINT or a baseline network (CPU budget by default).")

    def add_arguments(self, parser):
        from zoo.__main__ import comma_list, positive_int
        from zoo.metaworld import NETWORK_PRESETS

        parser.add_argument("--network", default=_BENCHMARKS[self.benchmark]["default_network"],
                            type=comma_list(NETWORK_PRESETS, "networks"),
                            help=f"one or several of {', '.join(NETWORK_PRESETS)}")
        parser.add_argument("--goals", choices=("random", "fixed"), default="random",
                            help="random: 50 goals per task, one per episode "
                                 f"({self.benchmark.upper()}-Conditioned); fixed: one "
                                 f"goal per task ({self.benchmark.upper()}-Fixed)")
        parser.add_argument("--env-steps", type=positive_int, default=None,
                            help="environment steps over all tasks (default "
                                 "100,000; --paper: the paper's)")
        parser.add_argument("--batch-per-task", type=positive_int, default=None,
                            help="transitions per task per update (default 32; "
                                 "--paper: 128)")
        parser.add_argument("--eval-episodes", type=positive_int, default=None,
                            help="episodes per task per evaluation (default 2; "
                                 "--paper: 50)")
        parser.add_argument("--buffer-per-task", type=positive_int, default=1_000_000)
        parser.add_argument("--paper", action="store_true",
                            help="the paper's batch, budget and evaluation (GPU)")
        add_loop_arguments(parser)

    def run(self, args):
        results = {}
        for network in args.network:
            run_dir = (os.path.join(args.output_dir, network) if args.output_dir else "")
            results[network] = train_and_evaluate(self.benchmark, network, args, run_dir)
        if len(results) == 1:
            return next(iter(results.values()))
        return results


def _settings(benchmark, args):
    paper = args.paper
    settings = {
        "env_steps": args.env_steps or (
            _BENCHMARKS[benchmark]["paper_env_steps"] if paper else 100_000),
        "batch_per_task": args.batch_per_task or (128 if paper else 32),
        "eval_episodes": args.eval_episodes or (50 if paper else 2),
        "steps_per_epoch": args.steps_per_epoch,
        "warmup_steps": args.warmup_steps,
        "learning_rate": args.learning_rate,
        "buffer_per_task": args.buffer_per_task,
        "goals": args.goals,
    }
    return settings


def train_and_evaluate(benchmark, network, args, run_dir):
    import numpy as np

    from zoo.metaworld.envs import make_env, task_names
    from zoo.metaworld.networks import build_actor_critic
    from zoo.runs import RunDirectory

    settings = _settings(benchmark, args)
    run = RunDirectory(run_dir, {"benchmark": benchmark, "network": network,
                                 "seed": args.seed, **settings})
    finished = run.finished()
    if finished is not None:
        return finished
    env = make_env(benchmark, seed=args.seed, goals=settings["goals"])
    # The same seed: the benchmark's goals are drawn from it, so evaluation
    # runs the training goals (for --goals fixed, the one goal of each task).
    eval_env = make_env(benchmark, seed=args.seed, goals=settings["goals"])
    num_tasks = env.num_envs
    action_dim = int(np.prod(env.single_action_space.shape))
    _check_warmup(settings, num_tasks, "tasks")
    names = task_names(env)
    actor, critic = _seeded(args.seed, build_actor_critic, f"{benchmark}/{network}",
                            num_tasks, action_dim)
    capacity = min(settings["buffer_per_task"], -(-settings["env_steps"] // num_tasks))
    sac, loop, evaluation = _train_sac(
        env, actor, critic, num_tasks, capacity, settings, args, run,
        lambda sac: SuccessEvaluation(sac, eval_env, settings["eval_episodes"], args.seed),
        batch_per_task=settings["batch_per_task"],
        # Soft Modularization's task loss weights (official difference 6).
        loss_balancing=network.startswith("soft-modular"))
    success_rate, per_task = evaluation.last
    result = {
        "benchmark": benchmark,
        "network": network,
        "goals": settings["goals"],
        "env_steps": loop.env_steps * num_tasks,
        "success_rate": round(success_rate, 4),
        "success_rate_per_task": {name: round(rate, 4)
                                  for name, rate in zip(names, per_task)},
        "parameters": {"actor": int(actor.count_params()),
                       "critic": int(sac.critics[0].count_params())},
    }
    return _finish(run, args, loop, sac, result, plot_success)


def _check_warmup(settings, num_envs, what):
    if settings["env_steps"] <= settings["warmup_steps"] * num_envs:
        raise UsageError(
            f"--env-steps {settings['env_steps']} leaves no update after the "
            f"warm-up of {settings['warmup_steps']} vector steps x {num_envs} {what}.")


def _seeded(seed, build, *build_args, **build_kwargs):
    """`build(...)` after seeding Keras (the networks' initial weights)."""
    import keras

    keras.utils.set_random_seed(seed)
    return build(*build_args, **build_kwargs)


def _train_sac(env, actor, critic, num_tasks, capacity, settings, args, run,
               make_evaluation, batch_per_task, tasks_per_batch=None,
               loss_balancing=False):
    """Multi-task SAC of `actor` / `critic` trained on `env` through
    OffPolicyLoop; `make_evaluation(sac)` is the per-epoch evaluation
    callback. Returns `(sac, loop, evaluation)`."""
    import numpy as np

    from training.off_policy import OffPolicyLoop
    from training.replay_buffer import TaskReplayBuffer
    from training.sac import MultiTaskSAC, sac_optimizer

    observation_dim = int(np.prod(env.single_observation_space.shape))
    action_dim = int(np.prod(env.single_action_space.shape))
    sac = MultiTaskSAC(actor, critic, num_tasks, observation_dim, action_dim,
                       loss_balancing=loss_balancing, seed=args.seed)
    lr = settings["learning_rate"]
    sac.compile(optimizer=sac_optimizer(lr, lr, lr))
    buffer = TaskReplayBuffer(num_tasks, capacity, observation_dim, action_dim)
    loop = OffPolicyLoop(env, buffer, batch_per_task=batch_per_task,
                         warmup_steps=settings["warmup_steps"], run_dir=run.path,
                         seed=args.seed, tasks_per_batch=tasks_per_batch)
    evaluation = make_evaluation(sac)
    # The loop adds its own BackupAndRestore (same directory).
    loop.fit(sac, settings["env_steps"], steps_per_epoch=settings["steps_per_epoch"],
             callbacks=[evaluation, *run.callbacks(backup=False)], verbose=args.verbose)
    return sac, loop, evaluation


def _finish(run, args, loop, sac, result, plot):
    """Adds the resume point, plots the history, writes the run."""
    if loop.resumed_from_env_step is not None:
        result["resumed_from_env_step"] = loop.resumed_from_env_step
    if run.path and args.plot:
        plot(os.path.join(run.path, "history.csv"), os.path.join(run.path, "curves.png"))
    run.write(result, sac)
    return result


def _epoch_evaluation(model, evaluate):
    """A callback that, after every epoch, runs `evaluate(policy, epoch) ->
    (result, logs)` with the deterministic policy of `model` (its live
    values, compiled `act`), keeps `result` as `.last` and adds `logs` to
    the epoch's logs."""
    import keras

    from training.backend import compile_function, live_values

    act = compile_function(model.act)

    class _EpochEvaluation(keras.callbacks.Callback):
        last = None

        def on_epoch_end(self, epoch, logs=None):
            trainable, non_trainable = live_values(model)

            def policy(observations, task_ids):
                return keras.ops.convert_to_numpy(act(
                    trainable, non_trainable, observations, task_ids))

            self.last, epoch_logs = evaluate(policy, epoch)
            if logs is not None:
                logs.update(epoch_logs)

    return _EpochEvaluation()


class SuccessEvaluation:
    """Evaluates the success rate after every epoch (logged as
    `eval_success_rate`, plus one `eval_success/<task>` entry per task)."""

    def __new__(cls, model, env, episodes_per_task, seed):
        from zoo.metaworld.envs import evaluate_success, task_names

        names = task_names(env)

        def evaluate(policy, epoch):
            rate, per_task = evaluate_success(policy, env, episodes_per_task,
                                              seed=seed + epoch)
            logs = {"eval_success_rate": rate}
            logs.update({f"eval_success/{name}": value
                         for name, value in zip(names, per_task)})
            return (rate, per_task), logs

        callback = _epoch_evaluation(model, evaluate)
        callback.last = (float("nan"), [])
        return callback


class GoalEvaluation:
    """Evaluates goal-conditioned pushing after every epoch on fixed goals
    (logged as `eval_success_rate` and `eval_final_distance`)."""

    def __new__(cls, model, env, goal_ids, seed):
        from zoo.metaworld.goal_push import evaluate_goals

        def evaluate(policy, epoch):
            result = evaluate_goals(policy, env, goal_ids, seed=seed + epoch)
            return result, {"eval_success_rate": result["success_rate"],
                            "eval_final_distance": result["final_distance"]}

        callback = _epoch_evaluation(model, evaluate)
        callback.last = {"success_rate": float("nan"), "final_distance": float("nan")}
        return callback


def _history(history_csv):
    import csv

    with open(history_csv) as file:
        return list(csv.DictReader(file))


def plot_success(history_csv, path):
    """Success rate against environment steps from a run's history.csv."""
    from zoo.runs import pyplot

    plt = pyplot(path)
    rows = _history(history_csv) if plt is not None else []
    if not rows:
        return
    steps = [float(row["env_steps"]) for row in rows]
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.plot(steps, [float(row["eval_success_rate"]) for row in rows], label="evaluation")
    if "success_rate" in rows[0]:
        axis.plot(steps, [float(row["success_rate"] or "nan") for row in rows],
                  label="training episodes", linestyle="--")
    axis.set_xlabel("environment steps")
    axis.set_ylabel("success rate")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_push(history_csv, path):
    """Evaluation success and final puck-goal distance against environment
    steps from a mint-push run's history.csv."""
    from zoo.runs import pyplot

    plt = pyplot(path)
    rows = _history(history_csv) if plt is not None else []
    if not rows:
        return
    steps = [float(row["env_steps"]) for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    for axis, column, label in ((axes[0], "eval_success_rate", "success rate"),
                                (axes[1], "eval_final_distance", "final puck-goal distance")):
        axis.plot(steps, [float(row[column]) for row in rows])
        axis.set_xlabel("environment steps")
        axis.set_ylabel(label)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class MintPushExperiment:
    """MINT's goal-conditioned pushing (module docstring)."""

    DESCRIPTION = ("Goal-conditioned SAC on Meta-World push-v3 over 200 goals "
                   "(MINT Section 6.3): mint-goal and baselines (CPU budget by default).")
    REQUIRES = MetaWorldExperiment.REQUIRES

    def add_arguments(self, parser):
        from zoo.__main__ import comma_list, non_negative_int, positive_int
        from zoo.metaworld import GOAL_NETWORKS

        parser.add_argument("--network", default="mint-goal",
                            type=comma_list(GOAL_NETWORKS, "networks"),
                            help=f"one or several of {', '.join(GOAL_NETWORKS)}")
        parser.add_argument("--env-steps", type=positive_int, default=None,
                            help="environment steps over all environments "
                                 f"(default {_PUSH_ENV_STEPS:,})")
        parser.add_argument("--num-goals", type=positive_int, default=200,
                            help="goals of the table, one replay region each")
        parser.add_argument("--goal-seed", type=non_negative_int, default=0,
                            help="seed of the goal table")
        parser.add_argument("--num-envs", type=positive_int, default=9,
                            help="environments stepped together, a goal per episode")
        parser.add_argument("--goals-per-batch", type=positive_int, default=9,
                            help="goals sampled per update")
        parser.add_argument("--batch-per-goal", type=positive_int, default=None,
                            help="transitions per goal per update (default 32; "
                                 "--paper: 128)")
        parser.add_argument("--eval-goals", type=positive_int, default=None,
                            help="evaluation goals, the first of the table "
                                 "(default 9; --paper: all)")
        parser.add_argument("--episode-length", type=positive_int, default=500,
                            help="steps before truncation (500; shorter for smoke runs)")
        parser.add_argument("--buffer-per-goal", type=positive_int, default=20_000,
                            help="replay capacity per goal (NOTE 1)")
        parser.add_argument("--paper", action="store_true",
                            help="the paper's batch and evaluation on every goal (GPU)")
        add_loop_arguments(parser)

    def run(self, args):
        from zoo.runs import write_summary

        settings = _push_settings(args)
        results = {}
        for network in args.network:
            run_dir = (os.path.join(args.output_dir, network) if args.output_dir else "")
            results[network] = train_push(network, settings, args, run_dir)
        rows = ["| network | env steps | success | final distance | initial distance "
                "| actor parameters |", "|---|---|---|---|---|---|"]
        for network, result in results.items():
            rows.append(
                f"| {network} | {result['env_steps']:,} | {result['success_rate']:.3f} "
                f"| {result['final_distance']:.4f} | {result['initial_distance']:.4f} "
                f"| {result['parameters']['actor']:,} |")
        write_summary(args.output_dir, "\n".join(rows), results)
        if len(results) == 1:
            return next(iter(results.values()))
        return results


_PUSH_ENV_STEPS = 90_000


def _push_settings(args):
    from zoo.metaworld.goal_push import EPISODE_LENGTH

    settings = {
        "env_steps": args.env_steps or _PUSH_ENV_STEPS,  # NOTE 3
        "num_goals": args.num_goals,
        "goal_seed": args.goal_seed,
        "num_envs": args.num_envs,
        "goals_per_batch": args.goals_per_batch,
        "batch_per_goal": args.batch_per_goal or (128 if args.paper else 32),
        "eval_goals": args.eval_goals or (args.num_goals if args.paper else 9),
        "episode_length": args.episode_length,
        "steps_per_epoch": args.steps_per_epoch,
        "warmup_steps": args.warmup_steps,
        "learning_rate": args.learning_rate,
        "buffer_per_goal": args.buffer_per_goal,
    }
    for name, limit in (("goals_per_batch", "num_goals"), ("eval_goals", "num_goals")):
        if settings[name] > settings[limit]:
            raise UsageError(
                f"--{name.replace('_', '-')} {settings[name]} is more than "
                f"--{limit.replace('_', '-')} {settings[limit]}.")
    if settings["episode_length"] > EPISODE_LENGTH:
        raise UsageError(f"--episode-length {settings['episode_length']} is more "
                         f"than Meta-World's {EPISODE_LENGTH} steps.")
    _check_warmup(settings, settings["num_envs"], "environments")
    return settings


def train_push(network, settings, args, run_dir):
    """One network of mint-push (module docstring): result.json's dict."""
    import numpy as np

    from zoo.metaworld.goal_push import goal_table, make_push_env
    from zoo.metaworld.networks import build_actor_critic
    from zoo.runs import RunDirectory

    run = RunDirectory(run_dir, {"experiment": "mint-push", "network": network,
                                 "seed": args.seed, **settings})
    finished = run.finished()
    if finished is not None:
        return finished
    shape = {key: settings[key] for key in ("num_goals", "goal_seed", "episode_length")}
    env = make_push_env(settings["num_envs"], seed=args.seed, **shape)
    eval_env = make_push_env(settings["num_envs"], seed=args.seed + 10_000, **shape)
    table = goal_table(env)  # the same for both: it depends on goal_seed only
    num_goals = len(table)
    action_dim = int(np.prod(env.single_action_space.shape))
    actor, critic = _seeded(args.seed, build_actor_critic, f"push/{network}",
                            num_goals, action_dim, goal_table=table)
    capacity = min(settings["buffer_per_goal"], max(  # NOTE 1
        settings["episode_length"], -(-4 * settings["env_steps"] // num_goals)))
    eval_goals = list(range(settings["eval_goals"]))
    sac, loop, evaluation = _train_sac(
        env, actor, critic, num_goals, capacity, settings, args, run,
        lambda sac: GoalEvaluation(sac, eval_env, eval_goals, args.seed),
        batch_per_task=settings["batch_per_goal"],
        tasks_per_batch=settings["goals_per_batch"])
    initial = np.linalg.norm(table[eval_goals, :2] - table[eval_goals, 2:], axis=1)
    result = {
        "experiment": "mint-push",
        "network": network,
        "env_steps": loop.env_steps * settings["num_envs"],
        "success_rate": round(evaluation.last["success_rate"], 4),
        "final_distance": round(evaluation.last["final_distance"], 4),
        "initial_distance": round(float(initial.mean()), 4),
        "eval_goals": len(eval_goals),
        "num_goals": num_goals,
        "parameters": {"actor": int(actor.count_params()),
                       "critic": int(sac.critics[0].count_params())},
    }
    return _finish(run, args, loop, sac, result, plot_push)


MT10 = MetaWorldExperiment("mt10")
MT50 = MetaWorldExperiment("mt50")
MINT_PUSH = MintPushExperiment()
