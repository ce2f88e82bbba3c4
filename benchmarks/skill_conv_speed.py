"""Speed of SkillConv2D on a batch that mixes tasks, against a plain conv.

A BabyAI-size convolution (paper network, Polytropon Appendix A.1): batch
256 of 7 x 7 images, 128 channels in and out, 3 x 3 kernel, padding
"same", 4 tasks drawn uniformly per example, 9 skills, SFT sparsity 0.9,
base trainable (as in the paper's BabyAI runs). Each step is forward +
backward: the gradient of sum(output * upstream) (a fixed random upstream)
with respect to every trainable weight AND the input (what a training step
of a network with this layer in its middle costs); "fwd" rows time the
forward pass alone (rollouts). Contenders:

* ``plain``      `keras.layers.Conv2D` of the same shape (one kernel).
* ``stacked``    `SkillConv2D(task_batching="stacked")`: all task kernels
                 in one conv with num_tasks * filters output channels, each
                 example keeps its slice (static shapes, jit-friendly).
* ``grouped``    `SkillConv2D(task_batching="grouped")`: one conv per task
                 present on that task's examples (needs concrete task ids:
                 eager only; on JAX it runs op by op, so it is compared with
                 ``plain-eager``, the plain conv run op by op too).
* ``per_skill``  (information, for NOTE 2 of layers/skill_conv.py) the one
                 exact form with per-example mixing weights that avoids
                 per-example kernels: one conv with (1 + num_skills) *
                 filters output channels (base + every masked delta), mixed
                 per example by linearity.

JAX steps are `jax.jit`-compiled (except the ``*-eager`` rows), torch runs
eagerly, TensorFlow (only with ``--backends ...,tensorflow``) uses
`tf.function(jit_compile=True)` and runs ``grouped`` eagerly. All go
through `layer.stateless_call` and `training.value_and_grad`. Contenders
are timed INTERLEAVED (one call of each per repetition, the order reversed
every other repetition) after a warm-up; the ratios to ``plain`` (or
``plain-eager``) are per repetition, and their median and spread are
printed side by side for the backends, in one run.

Usage (from the repository root):

    .venv/bin/python benchmarks/skill_conv_speed.py              # jax, torch
    .venv/bin/python benchmarks/skill_conv_speed.py --backends jax,torch,tensorflow
    .venv/bin/python benchmarks/skill_conv_speed.py --quick      # smoke run

Timings are wall clock on whatever machine runs this; on a shared, loaded
machine absolute numbers move a lot, which is why only interleaved ratios
are compared.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RESULT_PREFIX = "SKILL_CONV_SPEED_RESULT "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="jax,torch",
                   help="comma-separated; each runs in its own subprocess")
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=7)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--skills", type=int, default=9)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a loaded "
                   "2-core machine a second thread is often descheduled and "
                   "every parallel op waits for it; the tests run with 1)")
    p.add_argument("--no-per-skill", action="store_true",
                   help="skip the (1 + skills) x channels contender")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny shapes, 2 repetitions")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.channels, args.reps, args.warmup = 16, 8, 2, 1
    return args


# --------------------------------------------------------------------------
# One backend (in its own process).
# --------------------------------------------------------------------------
def make_steps(args, backend):
    import keras
    import numpy as np
    from keras import ops

    from layers.skill_conv import SkillConv2D
    from training import value_and_grad

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.channels)
    x = ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))
    ids_np = rng.integers(0, args.tasks, size=args.batch).astype("int32")
    ids = ops.convert_to_tensor(ids_np)
    up = ops.convert_to_tensor(rng.normal(size=shape[:3] + (args.channels,))
                               .astype("float32"))

    def skill_layer(mode):
        layer = SkillConv2D(
            args.channels, args.kernel, args.tasks, args.skills,
            padding="same", trainable_base=True, task_batching=mode,
            skill_initializer=keras.initializers.RandomNormal(stddev=0.02),
            seed=1)
        layer(x[:2], ids[:2])
        return layer

    plain = keras.layers.Conv2D(args.channels, args.kernel, padding="same")
    plain(x[:2])
    layers = {"plain": plain, "stacked": skill_layer("stacked"),
              "grouped": skill_layer("grouped")}
    # Same base kernel, deltas and logits in the two skill layers.
    layers["grouped"].set_weights(layers["stacked"].get_weights())

    def loss_of(layer, with_task):
        def loss(params, non_trainable, ids, up):
            trainable, inputs = params
            args_ = (inputs, ids) if with_task else (inputs,)
            kwargs = {"training": True} if with_task else {}
            out, _ = layer.stateless_call(trainable, non_trainable, *args_,
                                          **kwargs)
            return ops.sum(out * up)
        return loss

    def per_skill_loss(params, non_trainable, ids, up):
        # Exact per-example mixing weights (Gumbel noise per example) by
        # linearity: conv(x, W + sum_s w_bs D_s) = conv(x, W) + sum_s w_bs
        # conv(x, D_s), one conv with (1 + skills) * filters channels.
        (kernel, bias, logits, deltas), inputs = params
        masks = non_trainable[mask_index]
        rows = ops.take(logits, ids, axis=0)
        u = keras.random.uniform(ops.shape(rows), 1e-6, 1 - 1e-6, seed=1)
        z = ops.sigmoid(rows + ops.log(u) - ops.log1p(-u))
        w = z / (ops.sum(z, -1, keepdims=True) + 1e-12)  # (B, S)
        stacked = ops.concatenate([kernel[None], masks * deltas], 0)
        stacked = ops.reshape(ops.transpose(stacked, (1, 2, 3, 0, 4)),
                              tuple(kernel.shape[:3]) + (-1,))
        out = ops.conv(inputs, stacked, padding="same")
        out = ops.reshape(out, tuple(ops.shape(out)[:3]) + (1 + args.skills, -1))
        coeff = ops.concatenate([ops.ones_like(w[:, :1]), w], 1)
        out = ops.einsum("bhwkf,bk->bhwf", out, coeff) + bias
        return ops.sum(out * up)

    mask_index = [v.path.split("/")[-1] for v in
                  layers["stacked"].non_trainable_variables].index("sft_masks")

    def forward_of(layer, with_task):
        def forward(trainable, non_trainable, inputs, ids):
            args_ = (inputs, ids) if with_task else (inputs,)
            out, _ = layer.stateless_call(trainable, non_trainable, *args_)
            return out
        return forward

    def values(layer):
        return ([v.value for v in layer.trainable_variables],
                [v.value for v in layer.non_trainable_variables])

    fns = {}  # name -> (fn, args, compiled?)
    for name, layer in layers.items():
        tr, nt = values(layer)
        with_task = name != "plain"
        fns[name] = (value_and_grad(loss_of(layer, with_task)),
                     ((tr, x), nt, ids, up))
        fns[name + " fwd"] = (forward_of(layer, with_task), (tr, nt, x, ids))
    if not args.no_per_skill:
        tr, nt = values(layers["stacked"])
        names = [v.path.split("/")[-1] for v in layers["stacked"].trainable_variables]
        assert names == ["kernel", "bias", "skill_logits", "sft_deltas"], names
        fns["per_skill"] = (value_and_grad(per_skill_loss),
                            ((tr, x), nt, ids, up))

    eager_only = {"grouped", "grouped fwd"}
    steps = {}
    if backend == "jax":
        import jax

        for name, (fn, fargs) in fns.items():
            if name not in eager_only:
                compiled = jax.jit(fn)
                steps[name] = (lambda c=compiled, a=fargs:
                               jax.block_until_ready(c(*a)))
        for name in ("plain", "plain fwd", "grouped", "grouped fwd"):
            fn, fargs = fns[name]
            label = name.replace("plain", "plain-eager").replace(
                "grouped", "grouped-eager")
            steps[label] = (lambda f=fn, a=fargs: jax.block_until_ready(f(*a)))
    elif backend == "tensorflow":
        import tensorflow as tf

        for name, (fn, fargs) in fns.items():
            if name not in eager_only:
                compiled = tf.function(fn, jit_compile=True)
                steps[name] = (lambda c=compiled, a=fargs: c(*a))
        for name in ("plain", "plain fwd", "grouped", "grouped fwd"):
            fn, fargs = fns[name]
            label = name.replace("plain", "plain-eager").replace(
                "grouped", "grouped-eager")
            steps[label] = (lambda f=fn, a=fargs: f(*a))
    else:
        import torch

        torch.set_num_threads(args.torch_threads)

        def forward(f, a):
            with torch.no_grad():
                return f(*a)

        for name, (fn, fargs) in fns.items():
            if name.endswith(" fwd"):
                steps[name] = (lambda f=fn, a=fargs: forward(f, a))
            else:
                steps[name] = (lambda f=fn, a=fargs: f(*a))

    # Sanity, outside the timings: the two skill layers agree (same
    # weights, no noise) and every gradient has its weight's shape.
    out_s = forward_of(layers["stacked"], True)(*fns["stacked fwd"][1])
    out_g = forward_of(layers["grouped"], True)(*fns["grouped fwd"][1])
    np.testing.assert_allclose(ops.convert_to_numpy(out_s),
                               ops.convert_to_numpy(out_g), atol=2e-3)
    _, grads = fns["stacked"][0](*fns["stacked"][1])
    flat = keras.tree.flatten(grads)
    assert len(flat) == len(layers["stacked"].trainable_variables) + 1
    return steps


def time_interleaved(steps, reps, warmup):
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    times = {n: [] for n in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def _ratio_summary(times, num, den):
    ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios),
            "max": max(ratios)}


# Rows of the summary: (contender, reference it is divided by).
PAIRS = (
    ("stacked", "plain"), ("grouped", "plain"), ("per_skill", "plain"),
    ("grouped-eager", "plain-eager"),
    ("stacked fwd", "plain fwd"), ("grouped fwd", "plain fwd"),
    ("grouped-eager fwd", "plain-eager fwd"),
)


def run_backend(args):
    os.environ["KERAS_BACKEND"] = args.backend
    sys.path.insert(0, ROOT)
    load_before = os.getloadavg()[0]
    steps = make_steps(args, args.backend)
    threads = None
    if args.backend == "torch":
        import torch

        threads = torch.get_num_threads()
    times = time_interleaved(steps, args.reps, args.warmup)
    medians = {n: 1e3 * statistics.median(t) for n, t in times.items()}
    ratios = {f"{a} / {b}": _ratio_summary(times, a, b)
              for a, b in PAIRS if a in times and b in times}
    result = {"backend": args.backend, "median_ms": medians, "ratios": ratios,
              "load": [load_before, os.getloadavg()[0]],
              "torch_threads": threads}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# All backends, one subprocess each, then one side-by-side table.
# --------------------------------------------------------------------------
def run_all(args, argv):
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = {}
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=ROOT)
        cmd = [sys.executable, os.path.abspath(__file__), "--backend",
               backend] + list(argv)
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                results[backend] = json.loads(line[len(RESULT_PREFIX):])
        if proc.returncode:
            print(f"!! {backend}: exit status {proc.returncode}\n"
                  f"{proc.stderr[-3000:]}")
    print(f"SkillConv2D vs plain conv: batch {args.batch}, "
          f"{args.size}x{args.size}, {args.channels} -> {args.channels} "
          f"channels, {args.kernel}x{args.kernel} 'same', {args.tasks} tasks "
          f"(uniform per example), {args.skills} skills; forward + backward "
          f"(weights and input) unless 'fwd'; {args.reps} interleaved "
          "repetitions")
    print("\nmedian ms per step")
    names = []
    for r in results.values():
        names += [n for n in r["median_ms"] if n not in names]
    header = "  " + f"{'contender':<20}" + "".join(
        f"{b:>14}" for b in results)
    print(header)
    for name in names:
        cells = "".join(
            f"{r['median_ms'][name]:>14.1f}" if name in r["median_ms"]
            else f"{'-':>14}" for r in results.values())
        print(f"  {name:<20}{cells}")
    print("\nper-repetition ratio: median (min-max)")
    print("  " + f"{'ratio':<32}" + "".join(f"{b:>18}" for b in results))
    keys = []
    for r in results.values():
        keys += [k for k in r["ratios"] if k not in keys]
    for key in keys:
        cells = ""
        for r in results.values():
            s = r["ratios"].get(key)
            cell = (f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
                    if s else "-")
            cells += f"{cell:>18}"
        print(f"  {key:<32}{cells}")
    loads = ", ".join(f"{b} {r['load'][0]:.1f}->{r['load'][1]:.1f}"
                      for b, r in results.items())
    print(f"\nload average (1 min) before -> after: {loads}; torch threads "
          f"{results.get('torch', {}).get('torch_threads', '-')}")
    return 0 if len(results) == len(backends) else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.backend is None:
        return run_all(args, argv)
    run_backend(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
