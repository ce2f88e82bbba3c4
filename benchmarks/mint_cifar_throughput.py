"""Training throughput of Mint and its baselines on CIFAR-shaped inputs.

For orientation before a CIFAR-100 run (the real data cannot be downloaded
on every machine): `model.fit` images per second of every model of
`zoo.mint.MODELS` for one preset, on random 32x32x3 images with mixed task
ids, each model timed over the same number of steps after a warm-up epoch
(compilation), and the ratio to the shared network with task heads ("1-fc")
measured in the same run.

    python benchmarks/mint_cifar_throughput.py --backend jax
    python benchmarks/mint_cifar_throughput.py --backend torch --preset cifar100_paper
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zoo.__main__ import comma_list, positive_int  # noqa: E402 (no keras import)
from zoo.mint import MODELS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"),
                        choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--preset", default="cifar100_small",
                        choices=("cifar100_small", "cifar100_paper"))
    parser.add_argument("--models", default=",".join(MODELS),
                        type=comma_list(MODELS, "models"),
                        help="comma-separated (default: all)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch intra-op threads (reference-facts: eager "
                             "torch on 2 cores is fastest with 1)")
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend

    import keras
    import numpy as np

    from zoo.mint.presets import PRESETS, from_preset

    if args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    models = args.models
    preset = PRESETS[args.preset]
    num_tasks = preset["network"]["num_tasks"]
    rng = np.random.default_rng(0)
    count = args.steps * args.batch_size
    images = rng.normal(size=(count,) + preset["input_shape"]).astype("float32")
    task_ids = rng.integers(0, num_tasks, count).astype("int32")
    targets = rng.integers(0, 5, count).astype("int32")
    rates = {}
    for model_name in models:
        keras.utils.set_random_seed(0)
        model = from_preset(args.preset, model=model_name)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        fit = dict(batch_size=args.batch_size, verbose=0, shuffle=False)
        model.fit((images[:args.batch_size * 2], task_ids[:args.batch_size * 2]),
                  targets[:args.batch_size * 2], **fit)  # compile
        began = time.perf_counter()
        model.fit((images, task_ids), targets, **fit)
        rates[model_name] = count / (time.perf_counter() - began)
        print(f"{args.backend} {args.preset} {model_name:>12}: "
              f"{model.count_params():>10,} parameters, "
              f"{rates[model_name]:8.1f} images/s", flush=True)
    if "1-fc" in rates:
        print("time per image relative to 1-fc (shared trunk, task heads): " + ", ".join(
            f"{m} {rates['1-fc'] / r:.2f}x" for m, r in rates.items()))


if __name__ == "__main__":
    main()
