"""Multi-task SAC speed: updates per second and the fit loop's overhead.

For one backend per process (`--backend`):

1. updates/s of `training.sac.MultiTaskSAC` at MT10 shapes (observation 49
   with the one-hot, action 4, 10 tasks, `--batch-per-task` 128 = 1,280)
   for the 3x400 multi-head network (mt-mh-sac) and Soft Modularization
   Shallow (soft-modular), through `train_on_batch` (Keras's compiled
   train function, the same one `fit` uses);
2. the loop's overhead: the wall time of `OffPolicyLoop.fit`'s
   `--loop-updates` steps on real MT10 (warm-up excluded) against the sum
   of the same number of acting + environment steps and of updates, each
   measured alone in the same run: the updates through `fit` on batches
   drawn from the replay buffer beforehand, so sampling, the environment
   callback and the bookkeeping all count as the loop's (target: the loop
   adds < 10%).

    python benchmarks/sac_speed.py --backend jax
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"),
                        choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--batch-per-task", type=int, default=128)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--loop-updates", type=int, default=200)
    parser.add_argument("--loop-batch-per-task", type=int, default=32)
    parser.add_argument("--networks", default="mt-mh-sac,soft-modular")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if min(args.batch_per_task, args.updates, args.loop_updates) < 1:
        parser.error("sizes and counts must be >= 1")
    os.environ["KERAS_BACKEND"] = args.backend

    import keras
    import numpy as np

    from training.off_policy import OffPolicyLoop
    from training.replay_buffer import TaskReplayBuffer
    from training.sac import MultiTaskSAC, sac_optimizer
    from zoo.metaworld import NETWORKS, build_actor_critic, make_env

    if args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    networks = args.networks.split(",")
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown networks {unknown}; known: {', '.join(NETWORKS)}")
    tasks, obs_dim, act_dim = 10, 49, 4

    def make_sac(network):
        keras.utils.set_random_seed(0)
        actor, critic = build_actor_critic(f"mt10/{network}", tasks, act_dim)
        sac = MultiTaskSAC(actor, critic, tasks, obs_dim, act_dim,
                           loss_balancing=network.startswith("soft-modular"), seed=0)
        sac.compile(optimizer=sac_optimizer())
        return sac

    rng = np.random.default_rng(0)
    buffer = TaskReplayBuffer(tasks, 2_000, obs_dim, act_dim)
    buffer.add(rng.normal(size=(20_000, obs_dim)), rng.uniform(-1, 1, (20_000, act_dim)),
               rng.normal(size=20_000), rng.normal(size=(20_000, obs_dim)),
               np.arange(20_000) % tasks)
    for network in networks:
        sac = make_sac(network)
        batch = buffer.sample(args.batch_per_task, rng)
        sac.train_on_batch(batch)  # compile
        began = time.perf_counter()
        for _ in range(args.updates):
            logs = sac.train_on_batch(batch, return_dict=True)
        float(logs["critic_loss"])
        seconds = (time.perf_counter() - began) / args.updates
        print(f"{args.backend} {network:>13} batch {args.batch_per_task * tasks}: "
              f"{1000 * seconds:7.1f} ms/update, {1 / seconds:6.2f} updates/s", flush=True)

    # The loop's overhead, on the first network, at the loop's batch size.
    network = networks[0]
    env = make_env("mt10", seed=0)
    sac = make_sac(network)

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.began = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.began

    def fresh_loop():
        loop_buffer = TaskReplayBuffer(tasks, 10_000, obs_dim, act_dim)
        return OffPolicyLoop(env, loop_buffer, batch_per_task=args.loop_batch_per_task,
                             warmup_steps=200, seed=0)

    warmup = 200
    fresh_loop().fit(sac, total_env_steps=tasks * (warmup + 20), steps_per_epoch=20,
                     verbose=0)  # compiles the update and the acting
    loop = fresh_loop()
    clock = Clock()
    loop.fit(sac, total_env_steps=tasks * (warmup + args.loop_updates),
             steps_per_epoch=args.loop_updates, callbacks=[clock], verbose=0)
    whole = clock.seconds  # fit's steps only: the warm-up runs before fit
    began = time.perf_counter()
    for _ in range(args.loop_updates):
        loop.env_step(sac)
    acting = time.perf_counter() - began

    class Batches(keras.utils.PyDataset):  # drawn before timing
        def __init__(self, batches):
            super().__init__()
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            return self.batches[index]

    batches = Batches([loop.buffer.sample(args.loop_batch_per_task, rng)
                       for _ in range(args.loop_updates)])
    clock = Clock()
    sac.fit(batches, epochs=1, callbacks=[clock], verbose=0, shuffle=False)
    updating = clock.seconds
    print(f"{args.backend} loop ({network}, batch {args.loop_batch_per_task * tasks}, "
          f"{args.loop_updates} updates): fit loop {whole:.2f} s; acting + env "
          f"{acting:.2f} s + updates (fit on pre-drawn batches) {updating:.2f} s = "
          f"{acting + updating:.2f} s; loop / parts = {whole / (acting + updating):.3f}")


if __name__ == "__main__":
    main()
