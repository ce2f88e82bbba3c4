"""PPO on BabyAI: frames per second of the training loop against its parts.

Issue 10's benchmark (not a test). For one backend per process
(`--backend`), PPO is built as the `babyai` experiment builds it
(`zoo/babyai/experiments.py`): the tiny preset and its training settings,
the 4 CPU levels, 16 environments, rollouts of 40 steps (640 frames), 4
epochs of minibatches of 320 (8 updates per rollout). Then `--rounds`
rounds each time four parts, every part over `--rollouts` rollouts' worth
of work, back to back (in reverse order every other round, so that a drift
in the shared machine's load falls on all of them):

* loop: `OnPolicyLoop.fit`, from the end of its `--warmup` untimed first
  epochs (compiles in the first round) to fit's end: every epoch's
  collection (the `RolloutCollector` callback), its updates and fit's
  per-epoch work;
* collect: `loop.collect(ppo)` alone (compiled acting, environment
  stepping, GAE, the minibatch orders);
* updates: `ppo.fit`, one epoch over the minibatches of the last rollout,
  drawn beforehand, as many update steps as the loop ran;
* env: a second vector environment of the same levels stepped as many
  times with uniformly random actions (plus `prepare_observations`), the
  floor the environment sets.

Each part's frames/s is the rollouts' frames over its seconds. The ratio
loop / (collect + updates) is what the loop adds (target < 1.10); it is
printed per round and over all rounds, with the 1-minute load average at
the end of each round. `--profile PART` then runs that part once more
under cProfile and prints its top functions.

    python benchmarks/ppo_speed.py --backend jax
    python benchmarks/ppo_speed.py --backend torch --profile loop
"""

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from zoo.__main__ import positive_int  # noqa: E402 (no keras)
from zoo.babyai.variants import VARIANTS  # noqa: E402 (no keras)

PARTS = ("loop", "collect", "updates", "env")


def load_average():
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"),
                        choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--variant", default="polytropon", choices=VARIANTS)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--rollouts", type=positive_int, default=4,
                        help="rollouts timed per part and round (default 4)")
    parser.add_argument("--warmup", type=positive_int, default=1,
                        help="untimed first rollouts of every loop fit (default 1)")
    parser.add_argument("--profile", choices=PARTS[:3],
                        help="after the timed rounds, cProfile this part once")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend

    import keras
    import numpy as np

    from training.backend import set_cpu_threads
    from training.on_policy import OnPolicyLoop
    from training.ppo import PPO, ppo_optimizer
    from zoo.babyai.envs import make_multitask_env, prepare_observations
    from zoo.babyai.presets import from_preset, get_preset

    threads = set_cpu_threads()  # the repository's choice: 1 on torch here
    settings = get_preset("tiny")["training"]
    levels, num_envs = settings["levels"], settings["num_envs"]
    began_load = load_average()

    keras.utils.set_random_seed(0)
    policy = from_preset("tiny", variant=args.variant, levels=levels, seed=0)
    ppo = PPO(policy, num_actions=policy.num_actions)
    learned = policy.allocation == "learned"
    ppo.compile(optimizer=ppo_optimizer(
        settings["learning_rate"],
        allocation_learning_rate=settings["allocation_learning_rate"] if learned else None))
    env = make_multitask_env(levels, num_envs=num_envs, seed=0)
    loop = OnPolicyLoop(env, rollout_steps=settings["rollout_steps"],
                        update_epochs=settings["update_epochs"],
                        minibatch_size=settings["minibatch_size"],
                        gamma=settings["gamma"], lam=settings["lam"], seed=0)
    loop.prepare_observations = prepare_observations
    reference_env = make_multitask_env(levels, num_envs=num_envs, seed=1)
    reference_env.reset(seed=1)
    action_rng = np.random.default_rng(0)
    per_rollout = loop.rollout_steps * num_envs
    updates_per_rollout = loop.update_epochs * loop.num_minibatches

    class Clock(keras.callbacks.Callback):
        """Times a fit from the end of epoch `skip - 1` (from its start when
        `skip` is 0) to its end, and splits the timed epochs into the time
        between epochs (the loop's collection: the RolloutCollector runs
        before this callback at every epoch's start) and within them (the
        updates). No batch hooks and no `self.model` (env_loop NOTE 1):
        both would change what fit does."""

        def __init__(self, skip=0):
            super().__init__()
            self.skip = skip
            self.began = self.mark = None
            self.between = self.within = 0.0

        def on_train_begin(self, logs=None):
            self.began = self.mark = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            now = time.perf_counter()
            if epoch >= self.skip:
                self.between += now - self.mark
            self.mark = now

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            if epoch >= self.skip:
                self.within += now - self.mark
            elif epoch == self.skip - 1:
                self.began = now
            self.mark = now

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.began

    class Minibatches(keras.utils.PyDataset):
        def __init__(self, batches):
            super().__init__()
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            return self.batches[index]

    inside = dict(collecting=0.0, updating=0.0)

    def run_loop():
        clock = Clock(skip=args.warmup)
        loop.fit(ppo, (args.warmup + args.rollouts) * per_rollout, callbacks=[clock],
                 verbose=0)
        inside["collecting"] += clock.between
        inside["updating"] += clock.within
        return clock.seconds

    def run_collect():
        began = time.perf_counter()
        for _ in range(args.rollouts):
            loop.collect(ppo)
        return time.perf_counter() - began

    def run_updates():  # the first round's loop ran before: a rollout is there
        batches = [loop.minibatch(i) for i in range(updates_per_rollout)]
        clock = Clock()
        ppo.fit(Minibatches(batches * args.rollouts), epochs=1, callbacks=[clock],
                verbose=0, shuffle=False)
        return clock.seconds

    def run_env():
        steps = args.rollouts * loop.rollout_steps
        actions = action_rng.integers(0, loop.num_actions, size=(steps, num_envs))
        began = time.perf_counter()
        for step in range(steps):
            prepare_observations(reference_env.step(actions[step])[0])
        return time.perf_counter() - began

    timers = dict(loop=run_loop, collect=run_collect, updates=run_updates, env=run_env)
    frames = args.rollouts * per_rollout
    print(f"{args.backend}" + (f" ({threads} thread)" if threads == 1 else "")
          + f", {args.variant}: {args.rounds} rounds x {args.rollouts} rollouts of "
          f"{per_rollout} frames ({num_envs} envs x {loop.rollout_steps} steps), "
          f"{updates_per_rollout} updates of {loop.sequences_per_batch} per rollout; "
          f"load average {began_load}")
    print("frames/s   " + "".join(f"{part:>9}" for part in PARTS)
          + "   loop/(collect+updates)  load")
    totals = dict.fromkeys(PARTS, 0.0)

    def row(name, seconds, frames, load):
        ratio = seconds["loop"] / (seconds["collect"] + seconds["updates"])
        print(f"{name:<11}" + "".join(f"{frames / seconds[part]:9.0f}" for part in PARTS)
              + f"   {ratio:22.3f}  {load}", flush=True)

    for round_index in range(args.rounds):
        order = PARTS if round_index % 2 == 0 else PARTS[::-1]
        seconds = {part: timers[part]() for part in order}
        for part in PARTS:
            totals[part] += seconds[part]
        row(f"round {round_index + 1}", seconds, frames, f"{os.getloadavg()[0]:.2f}")
    row("overall", totals, frames * args.rounds, load_average())
    print(f"seconds: loop {totals['loop']:.1f} (collecting {inside['collecting']:.1f}, "
          f"update epochs {inside['updating']:.1f}); collect alone "
          f"{totals['collect']:.1f}; updates alone {totals['updates']:.1f}; env "
          f"alone {totals['env']:.1f}", flush=True)

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(timers[args.profile])
        stats = pstats.Stats(profiler).strip_dirs()
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
    env.close()
    reference_env.close()


if __name__ == "__main__":
    main()
