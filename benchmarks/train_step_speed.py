"""Time per training step: the project's StepModel against Keras's train_step.

Same model (an MLP with Adam, mse loss and an mae metric), same data, same
initial weights; the two contenders run interleaved in one process. After
warm-up epochs (compilation), each repetition times one `fit` epoch of each
contender, in alternating order (A B, then B A, ...), and gives one ratio
StepModel / keras.Model. The table shows the median ms per step of each
contender, the median of the per-repetition ratios ("ratio", the verdict)
and their spread (min-max), the ratio of the fastest repetitions ("best",
the least disturbed by other jobs) and the median ratio in process CPU time
("cpu", which preemption by other jobs does not inflate).

Two rows per backend: the default 3 x 256 MLP at batch 256, and a small
2 x 64 MLP at batch 32, where the per-step overhead of the core shows (and
where reinforcement learning lives). Targets: <= 1.05x on JAX and
TensorFlow, <= 1.1x on torch. torch runs eagerly; its intra-op thread count
is set with `torch.set_num_threads` and every count in `--threads` is
measured (default 1 and 2). One process per backend, since KERAS_BACKEND is
fixed when keras is imported.

    python benchmarks/train_step_speed.py                  # all three backends
    python benchmarks/train_step_speed.py --backend torch --reps 9
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"jax": 1.05, "tensorflow": 1.05, "torch": 1.1}
# (name, depth, width, batch size, steps per epoch)
ROWS = [("3x256 b256", 3, 256, 256, 100), ("2x64 b32", 2, 64, 32, 300)]


def measure_row(depth, width, batch_size, steps, reps, warmup):
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    from training import StepModel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, width)).astype("float32")
    y = rng.normal(size=(steps * batch_size, 1)).astype("float32")

    def build(cls):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((width,))
        hidden = inputs
        for _ in range(depth):
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
        model = cls(inputs, keras.layers.Dense(1)(hidden))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse",
                      metrics=["mae"])
        return model

    models = {"keras.Model": build(keras.Model), "StepModel": build(StepModel)}
    for _ in range(warmup):  # compile and build
        for model in models.values():
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    wall = {name: [] for name in models}
    cpu = {name: [] for name in models}
    names = list(models)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            models[name].fit(x, y, batch_size=batch_size, epochs=1,
                             verbose=0, shuffle=False)
            wall[name].append((time.perf_counter() - start) / steps * 1e3)
            cpu[name].append((time.process_time() - start_cpu) / steps * 1e3)

    def ratios(times):
        return [a / b for a, b in zip(times["StepModel"], times["keras.Model"],
                                      strict=True)]

    wall_ratios = ratios(wall)
    return {
        "ms_per_step": {name: statistics.median(t) for name, t in wall.items()},
        "ratio": statistics.median(wall_ratios),
        "spread": [min(wall_ratios), max(wall_ratios)],
        "best_ratio": min(wall["StepModel"]) / min(wall["keras.Model"]),
        "cpu_ratio": statistics.median(ratios(cpu)),
    }


def measure(args):
    import keras

    backend = keras.backend.backend()
    threads = [None]
    if backend == "torch":
        import torch

        threads = [int(t) for t in args.threads.split(",")]
    results = []
    for count in threads:
        if count is not None:
            torch.set_num_threads(count)
        for name, depth, width, batch_size, steps in ROWS:
            if args.row and args.row != name:
                continue
            row = measure_row(depth, width, batch_size,
                              args.steps or steps, args.reps, args.warmup)
            row.update(backend=backend, row=name, threads=count)
            results.append(row)
    return results


def print_table(results, args, load_before, load_after):
    print(f"StepModel / keras.Model, fit steps of an MLP with Adam; median of "
          f"{args.reps} interleaved repetitions (one epoch each); load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"({os.cpu_count()} cores)")
    print(f"{'backend':<11}{'model':<12}{'thr':>4}{'keras ms':>10}"
          f"{'Step ms':>9}{'ratio':>7}{'spread':>13}{'best':>7}"
          f"{'cpu':>7}  target")
    for row in results:
        ms = row["ms_per_step"]
        target = TARGETS[row["backend"]]
        verdict = "PASS" if row["ratio"] <= target else "MISS"
        threads = "-" if row["threads"] is None else str(row["threads"])
        spread = "{:.2f}-{:.2f}".format(*row["spread"])
        print(f"{row['backend']:<11}{row['row']:<12}{threads:>4}"
              f"{ms['keras.Model']:>10.3f}{ms['StepModel']:>9.3f}"
              f"{row['ratio']:>7.3f}{spread:>13}{row['best_ratio']:>7.3f}"
              f"{row['cpu_ratio']:>7.3f}  <= {target} {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0,
                        help="steps per epoch (default: 100 large, 300 small)")
    parser.add_argument("--row", choices=[r[0] for r in ROWS])
    parser.add_argument("--threads", default="1,2",
                        help="torch intra-op thread counts to measure")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    load_before = os.getloadavg()
    if args.backend:
        if os.environ.get("KERAS_BACKEND") != args.backend:
            os.environ["KERAS_BACKEND"] = args.backend
        results = measure(args)
        if args.json:
            print(json.dumps(results))
        else:
            print_table(results, args, load_before, os.getloadavg())
        return

    results = []
    for backend in ("tensorflow", "jax", "torch"):
        command = [sys.executable, os.path.abspath(__file__), "--backend",
                   backend, "--json", f"--reps={args.reps}",
                   f"--warmup={args.warmup}", f"--steps={args.steps}",
                   f"--threads={args.threads}"]
        if args.row:
            command.append(f"--row={args.row}")
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        output = subprocess.run(command, env=env, capture_output=True,
                                text=True, check=True)
        results.extend(json.loads(output.stdout.strip().splitlines()[-1]))
    print_table(results, args, load_before, os.getloadavg())


if __name__ == "__main__":
    main()
