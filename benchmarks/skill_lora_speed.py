"""Speed of SkillLoRADense (Polytropon skills as LoRA) against PEFT's poly.

Measures forward + backward of `layers.skill_lora_dense.SkillLoRADense`: the
gradient of `sum(output * upstream)` (a fixed random upstream gradient, so
nothing can be optimised away) with respect to the layer's trainable weights
(allocation logits, LoRA A and B) AND to its input. Contenders, timed
INTERLEAVED in one process (every contender is warmed up / compiled first;
each repetition calls every contender once, the skill contender next to the
PEFT run it is compared with, the order reversed every other repetition):

* ``skill``   SkillLoRADense through `layer.stateless_call` and
              `training.value_and_grad` (the same code on every backend);
              JAX: `jax.jit`; TensorFlow: `tf.function(jit_compile=True)`
              (plus ``skill-graph``, `tf.function` without XLA); torch: eager.
* ``dense``   a frozen `keras.layers.Dense` of the same shape, forward +
              backward with the input gradient only (compiled like ``skill``).
* ``peft``    Hugging Face PEFT's ``poly`` tuner wrapping an
              `nn.Linear(in, out)` (PolyConfig r, n_tasks, n_skills,
              n_splits=1), task ids passed as PEFT does (the forward pre-hooks
              of `PolyModel.forward`), training mode, eager torch, gradients to
              its trainable parameters and its input. PEFT is torch, so it is
              timed in every backend's process.

Targets (issue 6), judged on the per-repetition ratios skill / PEFT (each
repetition times both, back to back):
    torch:           median <= 0.95 and no repetition above 1.0
    JAX, TF-XLA:     median <= 0.85
skill / dense is printed for information (the cost of the skills over the
frozen layer alone).

For each backend the script prints every contender's median, min and max in
ms, then for skill / PEFT and skill / dense the MEDIAN of the per-repetition
ratios and their SPREAD (min - max), and the verdict. The load average of the
machine is printed before and after each backend (the contenders are
interleaved because a shared machine's load moves during a run).

torch intra-op threads: every thread count in ``--threads`` is measured; all
torch contenders in one measurement use the same count. The verdict compares
with PEFT at its fastest count (the peer at its best); on torch the skill
layer runs at that same count.

Usage (from the repository root):

    .venv/bin/python benchmarks/skill_lora_speed.py            # all backends
    .venv/bin/python benchmarks/skill_lora_speed.py --backend jax
    .venv/bin/python benchmarks/skill_lora_speed.py --quick    # smoke run

Without ``--backend`` the script runs itself once per backend in a
subprocess (KERAS_BACKEND is fixed per process) and prints a summary.

Requires `peft` (in the `test` extra, not a dependency of the library;
it needs the CPU torch installed first):
    pip install -e ".[test]"

Timings are wall-clock on whatever machine runs this; on a shared, loaded
machine (as during development) absolute numbers vary by 2x between runs,
which is why the contenders are interleaved and only ratios are judged.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("jax", "tensorflow", "torch")
TARGETS = {
    # backend: (max median skill/peft, max single-repetition skill/peft)
    "jax": (0.85, None),
    "tensorflow": (0.85, None),
    "torch": (0.95, 1.0),
}
RESULT_PREFIX = "SKILL_LORA_SPEED_RESULT "


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="run in this process with this Keras backend; "
                   "default: one subprocess per backend")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and 2 repetitions (smoke run)")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per contender (default 9, at "
                   "least 5 for a verdict; --quick: 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per contender first (default 2)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated torch intra-op thread counts to "
                   "measure (default 1,2)")
    p.add_argument("--no-tf-graph", action="store_true",
                   help="TensorFlow: skip the tf.function-without-XLA "
                   "contenders")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--features", type=int, default=1024)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--skills", type=int, default=8)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    args = p.parse_args(argv)
    if args.quick:
        args.features, args.rank, args.skills, args.tasks = 64, 4, 4, 4
        args.batch, args.seq = 4, 8
    if args.reps is None:
        args.reps = 2 if args.quick else 9
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    args.thread_counts = [int(t) for t in args.threads.split(",") if t]
    return args


# --------------------------------------------------------------------------
# One backend, in this process
# --------------------------------------------------------------------------


def _import_peft():
    try:
        import peft  # noqa: F401
        from peft import PolyConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise SystemExit(
            "benchmarks/skill_lora_speed.py needs Hugging Face PEFT (the "
            "`test` extra, not a dependency of modular-zoo): "
            "`pip install -e '.[test]'` after installing the CPU torch. "
            f"Import error: {e}"
        )
    return PolyConfig, get_peft_model


def make_peft(args, x_np, ids_np, up_np):
    """PEFT poly on an nn.Linear; returns a fwd+bwd closure (eager torch)."""
    import torch
    from torch import nn

    PolyConfig, get_peft_model = _import_peft()

    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(args.features, args.features)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    config = PolyConfig(
        r=args.rank,
        target_modules=["proj"],
        n_tasks=args.tasks,
        n_skills=args.skills,
        n_splits=1,
        init_weights=False,  # nonzero B: the LoRA path really contributes
    )
    model = get_peft_model(Base(), config)
    model.train()  # relaxed-Bernoulli routing, as SkillLoRADense training=True
    poly = model.base_model  # PolyModel: forward(x, task_ids=) registers
    params = [p for p in model.parameters() if p.requires_grad]
    names = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert len(params) == 3, names  # module_logits, lora_A, lora_B
    x = torch.from_numpy(x_np)
    ids = torch.from_numpy(ids_np.astype("int64"))
    up = torch.from_numpy(up_np)

    def step():
        xg = x.detach().requires_grad_(True)
        out = poly(xg, task_ids=ids)
        loss = (out * up).sum()
        grads = torch.autograd.grad(loss, [xg] + params)
        return float(loss.detach()), grads

    return step


def make_keras_steps(args, backend, x_np, ids_np, up_np):
    """Returns {name: closure} for the Keras contenders on this backend."""
    import keras
    import numpy as np

    from training import value_and_grad

    try:
        from layers.skill_lora_dense import SkillLoRADense
    except ImportError as e:
        raise SystemExit(
            "layers/skill_lora_dense.py (SkillLoRADense) is missing or does "
            f"not import: {e}"
        )

    keras.utils.set_random_seed(0)
    x = keras.ops.convert_to_tensor(x_np)
    ids = keras.ops.convert_to_tensor(ids_np)
    up = keras.ops.convert_to_tensor(up_np)

    skill = SkillLoRADense(
        args.features, num_tasks=args.tasks, num_skills=args.skills,
        rank=args.rank, num_splits=1,
    )
    skill(x[:1], ids[:1], training=True)  # build
    # Nonzero B (B starts at zero) so the LoRA path really contributes.
    for v in skill.trainable_variables:
        if tuple(v.shape) != (args.tasks, args.skills) and not np.any(
            keras.ops.convert_to_numpy(v)
        ):
            v.assign(keras.random.normal(v.shape, stddev=0.02, seed=1))
    dense = keras.layers.Dense(args.features)
    dense(x[:1])
    dense.trainable = False

    def skill_loss(params, ids, up, non_trainable):
        trainable, inputs = params
        out, _ = skill.stateless_call(
            trainable, non_trainable, inputs, ids, training=True
        )
        return keras.ops.sum(out * up)

    def dense_loss(inputs, up, non_trainable):
        out, _ = dense.stateless_call([], non_trainable, inputs)
        return keras.ops.sum(out * up)

    skill_vg = value_and_grad(skill_loss)
    dense_vg = value_and_grad(dense_loss)

    def skill_step(trainable, non_trainable, inputs, ids, up):
        return skill_vg((trainable, inputs), ids, up, non_trainable)

    def dense_step(non_trainable, inputs, up):
        return dense_vg(inputs, up, non_trainable)

    s_tr = [v.value for v in skill.trainable_variables]
    s_nt = [v.value for v in skill.non_trainable_variables]
    d_nt = [v.value for v in dense.non_trainable_variables]
    assert not dense.trainable_variables
    n_trainable = len(s_tr)

    def check(result, n_grads):
        value, grads = result
        flat = keras.tree.flatten(grads)
        assert len(flat) == n_grads, (len(flat), n_grads)
        return value, flat

    steps = {}
    if backend == "jax":
        import jax

        sj, dj = jax.jit(skill_step), jax.jit(dense_step)
        steps["skill"] = lambda: jax.block_until_ready(
            sj(s_tr, s_nt, x, ids, up))
        steps["dense"] = lambda: jax.block_until_ready(dj(d_nt, x, up))
    elif backend == "tensorflow":
        import tensorflow as tf

        def tf_steps(suffix, **kw):
            sf = tf.function(skill_step, **kw)
            df = tf.function(dense_step, **kw)
            # tf.function returns once every output is computed; .numpy()
            # of the loss is then only a copy.
            steps["skill" + suffix] = lambda: sf(
                s_tr, s_nt, x, ids, up)[0].numpy()
            steps["dense" + suffix] = lambda: df(d_nt, x, up)[0].numpy()

        tf_steps("", jit_compile=True)
        if not args.no_tf_graph:
            tf_steps("-graph")
    else:
        steps["skill"] = lambda: skill_step(s_tr, s_nt, x, ids, up)
        steps["dense"] = lambda: dense_step(d_nt, x, up)

    # Sanity: gradients to every trainable weight + the input (checked once,
    # eagerly, outside the timed closures).
    v, g = check(skill_step(s_tr, s_nt, x, ids, up), n_trainable + 1)
    assert tuple(g[-1].shape) == tuple(x.shape)
    v, g = check(dense_step(d_nt, x, up), 1)
    info = {
        "skill_trainable": [
            (w.path, tuple(w.shape)) for w in skill.trainable_variables],
        "skill_non_trainable": [
            (w.path, tuple(w.shape)) for w in skill.non_trainable_variables],
    }
    return steps, info


def time_interleaved(steps, reps, warmup, set_threads=None):
    """{name: [seconds]}: one call of every contender per repetition.

    `steps` maps name -> (closure, torch_threads or None), in the order of a
    repetition; odd repetitions run it reversed, so no contender always
    goes first and the contenders that are compared (placed next to each
    other) always run back to back, under the same load.
    """
    names = list(steps)
    for name in names:
        fn, threads = steps[name]
        if set_threads and threads:
            set_threads(threads)
        for _ in range(warmup):
            fn()
    times = {n: [] for n in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            fn, threads = steps[name]
            if set_threads and threads:
                set_threads(threads)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _ratios(times, numerator, denominator):
    """Per-repetition ratios (the two were timed in the same repetition)."""
    a, b = times[numerator], times[denominator]
    assert len(a) == len(b), (numerator, denominator)
    return [x / y for x, y in zip(a, b, strict=True)]


def _summary(ratios):
    return {"median": statistics.median(ratios), "min": min(ratios),
            "max": max(ratios), "all": ratios}


def run_backend(args):
    backend = args.backend
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))
    import numpy as np
    import torch

    import keras

    assert keras.backend.backend() == backend, keras.backend.backend()
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    shape = (args.batch, args.seq, args.features)
    x_np = rng.standard_normal(shape, dtype=np.float32)
    up_np = rng.standard_normal(shape, dtype=np.float32)
    ids_np = (np.arange(args.batch) % args.tasks).astype("int32")
    rng.shuffle(ids_np)

    t_setup = time.perf_counter()
    keras_steps, info = make_keras_steps(args, backend, x_np, ids_np, up_np)
    peft_step = make_peft(args, x_np, ids_np, up_np)
    default_threads = torch.get_num_threads()

    # The order of one repetition: each skill contender next to the PEFT
    # runs it is compared with (see time_interleaved).
    steps = {}
    if backend == "torch":
        # One group per thread count, all three torch contenders at it:
        # dense@1, skill@1, peft@1, peft@2, skill@2, dense@2, ...
        for k, t in enumerate(args.thread_counts):
            group = [(f"dense@{t}t", keras_steps["dense"]),
                     (f"skill@{t}t", keras_steps["skill"]),
                     (f"peft@{t}t", peft_step)]
            for name, fn in group if k % 2 == 0 else group[::-1]:
                steps[name] = (fn, t)
    else:
        # dense, peft@1t, skill, peft@2t, skill-graph, dense-graph
        pefts = [(f"peft@{t}t", (peft_step, t)) for t in args.thread_counts]
        steps["dense"] = (keras_steps["dense"], None)
        steps.update(pefts[:1])
        steps["skill"] = (keras_steps["skill"], None)
        steps.update(pefts[1:])
        for name, fn in keras_steps.items():
            steps.setdefault(name, (fn, None))
    times = time_interleaved(
        steps, args.reps, args.warmup, set_threads=torch.set_num_threads)
    torch.set_num_threads(default_threads)
    elapsed = time.perf_counter() - t_setup

    med = {n: statistics.median(ts) * 1e3 for n, ts in times.items()}
    lo = {n: min(ts) * 1e3 for n, ts in times.items()}
    hi = {n: max(ts) * 1e3 for n, ts in times.items()}

    peft_names = [n for n in med if n.startswith("peft@")]
    best_peft = min(peft_names, key=med.get)
    best_t = best_peft.split("@")[1]
    if backend == "torch":
        skill_n, dense_n = f"skill@{best_t}", f"dense@{best_t}"
    else:
        skill_n, dense_n = "skill", "dense"
    over_peft = _summary(_ratios(times, skill_n, best_peft))
    over_dense = _summary(_ratios(times, skill_n, dense_n))
    max_median, max_single = TARGETS[backend]
    passed = over_peft["median"] <= max_median and (
        max_single is None or over_peft["max"] <= max_single)
    if args.reps < 5:
        passed = None  # too few repetitions for a verdict
    result = {
        "backend": backend,
        "shape": {k: getattr(args, k) for k in (
            "features", "rank", "skills", "tasks", "batch", "seq")},
        "reps": args.reps,
        "median_ms": med, "min_ms": lo, "max_ms": hi,
        "verdict": {
            "skill": skill_n, "dense": dense_n, "peft": best_peft,
            "skill_over_peft": over_peft, "skill_over_dense": over_dense,
            "target_median": max_median, "target_max": max_single,
            "pass": passed,
        },
        "other_ratios": {},
        "torch_default_threads": default_threads,
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "seconds": elapsed,
        "layer": info,
    }
    # The other pairings (other thread counts, TF without XLA), for reading.
    for s_name in [n for n in med if n.startswith("skill")]:
        for p_name in peft_names:
            if backend == "torch" and s_name.split("@")[1] != p_name.split("@")[1]:
                continue
            if (s_name, p_name) != (skill_n, best_peft):
                result["other_ratios"][f"{s_name} / {p_name}"] = _summary(
                    _ratios(times, s_name, p_name))
    print_backend(result)
    if args.json:  # for run_all
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


def _fmt(summary):
    return (f"median {summary['median']:.3f}x, spread "
            f"{summary['min']:.3f}-{summary['max']:.3f}x")


def _verdict_text(v):
    target = f"median <= {v['target_median']}"
    if v["target_max"] is not None:
        target += f", every repetition <= {v['target_max']}"
    status = {True: "PASS", False: "MISS", None: "NO VERDICT (< 5 reps)"}[
        v["pass"]]
    return target, status


def print_backend(r):
    v = r["verdict"]
    s = r["shape"]
    compiled = {"jax": "jax.jit", "tensorflow": "tf.function(jit_compile="
                "True); *-graph: tf.function without XLA",
                "torch": "eager"}[r["backend"]]
    print(f"\n== {r['backend']} ({compiled}) in=out={s['features']} "
          f"r={s['rank']} S={s['skills']} T={s['tasks']} "
          f"batch={s['batch']}x{s['seq']}, {r['reps']} interleaved reps, "
          f"load avg {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} "
          f"on {r['cpu_count']} CPUs ==")
    print(f"  {'contender':<16}{'median ms':>11}{'min':>9}{'max':>9}")
    for n in r["median_ms"]:
        print(f"  {n:<16}{r['median_ms'][n]:>11.1f}{r['min_ms'][n]:>9.1f}"
              f"{r['max_ms'][n]:>9.1f}")
    for k, summary in r["other_ratios"].items():
        print(f"  {k}: {_fmt(summary)}")
    print(f"  skill/dense ({v['skill']} / {v['dense']}): "
          f"{_fmt(v['skill_over_dense'])}")
    target, status = _verdict_text(v)
    print(f"  TARGET skill/peft ({v['skill']} / {v['peft']}): "
          f"{_fmt(v['skill_over_peft'])}; target {target}: {status}",
          flush=True)


# --------------------------------------------------------------------------
# All backends, one subprocess each
# --------------------------------------------------------------------------


def run_all(argv):
    results = []
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend,
                   TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [sys.executable, os.path.abspath(__file__),
               "--backend", backend, "--json"] + list(argv)
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                results.append(json.loads(line[len(RESULT_PREFIX):]))
            else:
                print(line)
        if proc.returncode:
            print(f"!! {backend}: exit status {proc.returncode}")
    print("\n== summary: skill / PEFT poly, per-repetition ratios ==")
    print(f"  {'backend':<11}{'skill ms':>9}{'peft ms':>9}{'median':>8}"
          f"{'spread':>15}  {'target':<40}verdict")
    for r in results:
        v, m = r["verdict"], r["median_ms"]
        ratio = v["skill_over_peft"]
        target, status = _verdict_text(v)
        print(f"  {r['backend']:<11}{m[v['skill']]:>9.1f}{m[v['peft']]:>9.1f}"
              f"{ratio['median']:>8.3f}{ratio['min']:>7.3f}-{ratio['max']:<7.3f}"
              f"  {target:<40}{status}")
    print("  (peft = PEFT poly at its fastest torch thread count; on torch "
          "the skill layer uses that count; load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    ok = len(results) == len(BACKENDS)
    return 0 if ok else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.backend is None:
        return run_all(argv)
    run_backend(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
