"""Time per training step: the project's StepModel against Keras's train_step.

Same model (an MLP), same data, same optimizer; the two contenders are timed
interleaved in one process (one `fit` epoch of each per repetition, after a
warm-up epoch that compiles), and the median time per step is printed with
the ratio StepModel / keras.Model (target <= 1.1x). One process per backend,
since KERAS_BACKEND is fixed when keras is imported.

    python benchmarks/train_step_speed.py                 # all three backends
    python benchmarks/train_step_speed.py --backend jax --reps 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(args):
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    from training import StepModel

    rng = np.random.default_rng(0)
    steps = args.steps
    x = rng.normal(size=(steps * args.batch_size, args.width)).astype("float32")
    y = rng.normal(size=(steps * args.batch_size, 1)).astype("float32")

    def build(cls):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((args.width,))
        hidden = inputs
        for _ in range(args.depth):
            hidden = keras.layers.Dense(args.width, activation="relu")(hidden)
        model = cls(inputs, keras.layers.Dense(1)(hidden))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
        return model

    models = {"keras.Model": build(keras.Model), "StepModel": build(StepModel)}
    for model in models.values():  # warm-up: compile and build
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
    times = {name: [] for name in models}
    for _ in range(args.reps):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "backend": keras.backend.backend(),
        "ms_per_step": medians,
        "ratio": medians["StepModel"] / medians["keras.Model"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.backend:
        if os.environ.get("KERAS_BACKEND") != args.backend:
            os.environ["KERAS_BACKEND"] = args.backend
        result = measure(args)
        print(json.dumps(result) if args.json else result)
        return

    rows = []
    for backend in ("tensorflow", "jax", "torch"):
        command = [sys.executable, __file__, "--backend", backend, "--json"] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("backend", "json")
        ]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
    print(f"MLP {args.depth}x{args.width}, batch {args.batch_size}, Adam, "
          f"median of {args.reps} epochs of {args.steps} steps")
    print(f"{'backend':<12}{'keras.Model ms':>16}{'StepModel ms':>15}{'ratio':>8}  target <= 1.1x")
    for row in rows:
        ms = row["ms_per_step"]
        verdict = "PASS" if row["ratio"] <= 1.1 else "MISS"
        print(f"{row['backend']:<12}{ms['keras.Model']:>16.3f}{ms['StepModel']:>15.3f}"
              f"{row['ratio']:>8.3f}  {verdict}")


if __name__ == "__main__":
    main()
