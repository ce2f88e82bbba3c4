"""Multi-task SAC on Meta-World MT10 / MT50, for `python -m zoo run`.

    python -m zoo run mt10 --network soft-modular --backend jax
    python -m zoo run mt50 --network mt-mh-sac --env-steps 200000

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
"""

import os

from zoo.extras import UsageError

_BENCHMARKS = {
    "mt10": {"paper_env_steps": 15_000_000, "default_network": "mt-sac"},
    "mt50": {"paper_env_steps": 50_000_000, "default_network": "mt-sac"},
}


class MetaWorldExperiment:
    """One registered experiment per benchmark."""

    REQUIRES = (("gymnasium", "rl"), ("metaworld", "rl"), ("packaging", "rl"))

    def __init__(self, benchmark):
        self.benchmark = benchmark
        self.DESCRIPTION = (
            f"Multi-task SAC on Meta-World {benchmark.upper()} with Soft "
            "Modularization, MINT or a baseline network (CPU budget by default).")

    def add_arguments(self, parser):
        from zoo.__main__ import (
            comma_list,
            non_negative_int,
            positive_float,
            positive_int,
        )
        from zoo.metaworld import NETWORK_PRESETS

        parser.add_argument("--network", default=_BENCHMARKS[self.benchmark]["default_network"],
                            type=comma_list(NETWORK_PRESETS, "networks"),
                            help=f"one or several of {', '.join(NETWORK_PRESETS)}")
        parser.add_argument("--env-steps", type=positive_int, default=None,
                            help="environment steps over all tasks (default "
                                 "100,000; --paper: the paper's)")
        parser.add_argument("--batch-per-task", type=positive_int, default=None,
                            help="transitions per task per update (default 32; "
                                 "--paper: 128)")
        parser.add_argument("--steps-per-epoch", type=positive_int, default=500,
                            help="updates between evaluations and checkpoints")
        parser.add_argument("--warmup-steps", type=positive_int, default=500,
                            help="vector steps of random actions first")
        parser.add_argument("--eval-episodes", type=positive_int, default=None,
                            help="episodes per task per evaluation (default 2; "
                                 "--paper: 50)")
        parser.add_argument("--learning-rate", type=positive_float, default=3e-4)
        parser.add_argument("--buffer-per-task", type=positive_int, default=1_000_000)
        parser.add_argument("--paper", action="store_true",
                            help="the paper's batch, budget and evaluation (GPU)")
        parser.add_argument("--plot", type=non_negative_int, choices=(0, 1), default=1,
                            help="write curves.png (needs the plot extra)")

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
    }
    return settings


def train_and_evaluate(benchmark, network, args, run_dir):
    import keras
    import numpy as np

    from training.off_policy import OffPolicyLoop
    from training.replay_buffer import TaskReplayBuffer
    from training.sac import MultiTaskSAC, sac_optimizer
    from zoo.metaworld.envs import make_env, task_names
    from zoo.metaworld.networks import build_actor_critic
    from zoo.runs import RunDirectory

    settings = _settings(benchmark, args)
    run = RunDirectory(run_dir, {"benchmark": benchmark, "network": network,
                                 "seed": args.seed, **settings})
    finished = run.finished()
    if finished is not None:
        return finished
    env = make_env(benchmark, seed=args.seed)
    eval_env = make_env(benchmark, seed=args.seed + 10_000)
    num_tasks = env.num_envs
    observation_dim = int(np.prod(env.single_observation_space.shape))
    action_dim = int(np.prod(env.single_action_space.shape))
    if settings["env_steps"] <= settings["warmup_steps"] * num_tasks:
        raise UsageError(
            f"--env-steps {settings['env_steps']} leaves no update after the "
            f"warm-up of {settings['warmup_steps']} vector steps x {num_tasks} tasks.")
    names = task_names(env)
    keras.utils.set_random_seed(args.seed)
    actor, critic = build_actor_critic(f"{benchmark}/{network}", num_tasks, action_dim)
    sac = MultiTaskSAC(actor, critic, num_tasks, observation_dim, action_dim,
                       # Soft Modularization's task loss weights (official difference 6).
                       loss_balancing=network.startswith("soft-modular"), seed=args.seed)
    lr = settings["learning_rate"]
    sac.compile(optimizer=sac_optimizer(lr, lr, lr))
    capacity = min(settings["buffer_per_task"],
                   -(-settings["env_steps"] // num_tasks))
    buffer = TaskReplayBuffer(num_tasks, capacity, observation_dim, action_dim)
    loop = OffPolicyLoop(env, buffer, batch_per_task=settings["batch_per_task"],
                         warmup_steps=settings["warmup_steps"], run_dir=run.path,
                         seed=args.seed)
    evaluation = SuccessEvaluation(sac, eval_env, settings["eval_episodes"], args.seed)
    # The loop adds its own BackupAndRestore (same directory); the run
    # directory adds the CSV history.
    loop.fit(sac, settings["env_steps"],
                       steps_per_epoch=settings["steps_per_epoch"],
                       callbacks=[evaluation, *run.callbacks()[1:]],
                       verbose=args.verbose)
    success_rate, per_task = evaluation.last
    result = {
        "benchmark": benchmark,
        "network": network,
        "env_steps": loop.env_steps * num_tasks,
        "success_rate": round(success_rate, 4),
        "success_rate_per_task": {name: round(rate, 4)
                                  for name, rate in zip(names, per_task)},
        "parameters": {"actor": int(actor.count_params()),
                       "critic": int(sac.critics[0].count_params())},
    }
    if loop.resumed_from_env_step is not None:
        result["resumed_from_env_step"] = loop.resumed_from_env_step
    if run.path and args.plot:
        plot_success(os.path.join(run.path, "history.csv"),
                     os.path.join(run.path, "curves.png"))
    run.write(result, sac)
    return result


class SuccessEvaluation:
    """Evaluates the success rate after every epoch (logged as
    `eval_success_rate`, plus one `eval_success/<task>` entry per task)."""

    def __new__(cls, model, env, episodes_per_task, seed):
        import keras

        from training.backend import compile_function, live_values
        from zoo.metaworld.envs import evaluate_success, task_names

        act = compile_function(model.act)

        class _SuccessEvaluation(keras.callbacks.Callback):
            last = (float("nan"), [])

            def on_epoch_end(self, epoch, logs=None):
                trainable, non_trainable = live_values(model)

                def policy(observations, task_ids):
                    return keras.ops.convert_to_numpy(act(
                        trainable, non_trainable, observations, task_ids))

                self.last = evaluate_success(policy, env, episodes_per_task,
                                             seed=seed + epoch)
                if logs is not None:
                    logs["eval_success_rate"] = self.last[0]
                    for name, rate in zip(task_names(env), self.last[1]):
                        logs[f"eval_success/{name}"] = rate

        return _SuccessEvaluation()


def plot_success(history_csv, path):
    """Success rate against environment steps from a run's history.csv."""
    import csv

    from zoo.runs import pyplot

    plt = pyplot(path)
    if plt is None:
        return

    with open(history_csv) as file:
        rows = list(csv.DictReader(file))
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


MT10 = MetaWorldExperiment("mt10")
MT50 = MetaWorldExperiment("mt50")
