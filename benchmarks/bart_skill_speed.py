"""Training speed of `SkillBartSeq2SeqLM` against Hugging Face PEFT's poly.

Training tokens per second of a bart-base-shaped model with random weights
(vocabulary 50265, 6 encoder + 6 decoder layers, hidden 768, 12 heads,
intermediate 3072, max_sequence_length 1024, dropout 0.1), frozen base,
Polytropon LoRA skills on the q, k, v and output projections of the three
attentions (encoder self, decoder self, decoder cross: 72 adapted
projections), 8 skills, rank 16, one split, 8 tasks:

* ``ours``  `zoo.polytropon.bart.SkillBartSeq2SeqLM` built from a
            `keras_hub.models.BartBackbone` (`seed=0`), compiled with
            `keras.optimizers.AdamW` and `SparseCategoricalCrossentropy(
            from_logits=True)`, no metrics (the peer computes none), and
            `jit_compile` as Keras defaults per backend ("auto": JAX jit;
            TensorFlow on a CPU-only machine tf.function WITHOUT XLA; torch
            eager), reported per run. One step is `model.train_on_batch`,
            the real `fit` train step (forward, backward, AdamW update).
* ``peft``  transformers' `BartForConditionalGeneration` initialised at
            random from a `BartConfig` of the same shape (dropout 0.1,
            attention_dropout 0.1 as KerasHub's layers drop attention
            probabilities too, activation_dropout 0; the default attention
            implementation of transformers), wrapped by peft's
            `PolyConfig(task_type="SEQ_2_SEQ_LM", r=16, n_tasks=8,
            n_skills=8, n_splits=1, target_modules=["q_proj", "k_proj",
            "v_proj", "out_proj"])`, trained with `task_ids` and
            `torch.optim.AdamW`: one step is zero_grad, forward with
            `labels` (the model's own cross-entropy), backward, step.

Both sides: AdamW lr 1e-3, epsilon 1e-8 (torch's default; Keras's 1e-7 is
above the ~5e-8 skill gradients of a random-weight BART and would damp the
steps), weight decay 0.01 on the skill parameters only
(allocation logits, LoRA A and B: the trainable parameter counts are checked
equal), training mode (dropout and the relaxed-Bernoulli allocation noise
on), one fixed batch of random token ids, `--batch` examples of
`--encoder-len` encoder and `--decoder-len` decoder tokens with no padding,
task ids mixed in the batch (a shuffled `arange(batch) % tasks`).

    tokens/s = batch * (encoder_len + decoder_len) / step time

Timing: every backend runs in its own process (KERAS_BACKEND is fixed per
process). Inside a process both contenders are warmed up (`--warmup` steps
each, not timed; ours' first step, which traces / compiles, is reported
apart), then each of `--reps` repetitions runs one step of every contender
back to back, the order reversed every other repetition, so ours and PEFT
see the same load. Reported: the median (and min / max) step time of each
contender, its tokens/s, and ours / PEFT as the median of the
per-repetition ratios of tokens/s (PEFT step time / ours step time: above 1
means ours is faster) with their spread.

torch intra-op threads: every count in `--threads` (default 1,2) is
measured for PEFT and, on the torch backend, for ours (on this 2-core
machine under load torch was far slower with 2 threads than with 1); each
side is reported at its fastest count (the setting is printed). On JAX and
TensorFlow ours uses the backend's default thread pools.

Usage (from the repository root):

    .venv/bin/python benchmarks/bart_skill_speed.py              # all backends
    .venv/bin/python benchmarks/bart_skill_speed.py --backend jax
    .venv/bin/python benchmarks/bart_skill_speed.py --backend peft  # peer alone
    .venv/bin/python benchmarks/bart_skill_speed.py --quick      # smoke run

Without `--backend` the script runs itself once per backend of
`--backends` (default jax,tensorflow,torch), one subprocess after the other,
and prints every figure and the ratios side by side. The load average is
printed before and after each backend.

Requires torch, transformers and peft (the `test` extra) besides keras and
keras-hub.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from zoo.__main__ import comma_list, positive_int  # noqa: E402 (no keras)

KERAS_BACKENDS = ("jax", "tensorflow", "torch")
RESULT_PREFIX = "BART_SKILL_SPEED_RESULT "
TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
QUICK = {"vocab": 512, "layers": 2, "hidden": 64, "heads": 4,
         "intermediate": 128, "max_len": 64, "batch": 4,
         "encoder_len": 16, "decoder_len": 8, "rank": 4, "skills": 4,
         "tasks": 4, "reps": 2, "warmup": 1}


def _thread_list(text):
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}")
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=KERAS_BACKENDS + ("peft",),
                   help="run in this process: ours on this Keras backend "
                   "interleaved with PEFT, or 'peft' alone; default: one "
                   "subprocess per backend of --backends")
    p.add_argument("--backends", type=comma_list(KERAS_BACKENDS, "backends"),
                   default=list(KERAS_BACKENDS),
                   help="backends the driver runs (default jax,tensorflow,"
                   "torch)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, 2 repetitions (smoke run)")
    p.add_argument("--reps", type=positive_int, help="timed steps (default 7)")
    p.add_argument("--warmup", type=positive_int,
                   help="untimed steps per contender first (default 2)")
    p.add_argument("--threads", type=_thread_list, default=[1, 2],
                   help="torch intra-op thread counts (default 1,2)")
    p.add_argument("--jit-compile", choices=("auto", "true", "false"),
                   default="auto",
                   help="ours: Keras compile(jit_compile=...) (default auto)")
    p.add_argument("--vocab", type=positive_int, help="default 50265")
    p.add_argument("--layers", type=positive_int, help="default 6 (+6)")
    p.add_argument("--hidden", type=positive_int, help="default 768")
    p.add_argument("--heads", type=positive_int, help="default 12")
    p.add_argument("--intermediate", type=positive_int, help="default 3072")
    p.add_argument("--max-len", type=positive_int, help="default 1024")
    p.add_argument("--batch", type=positive_int, help="default 4")
    p.add_argument("--encoder-len", type=positive_int, help="default 128")
    p.add_argument("--decoder-len", type=positive_int, help="default 64")
    p.add_argument("--tasks", type=positive_int, help="default 8")
    p.add_argument("--skills", type=positive_int, help="default 8")
    p.add_argument("--rank", type=positive_int, help="default 16")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = {"vocab": 50265, "layers": 6, "hidden": 768, "heads": 12,
                "intermediate": 3072, "max_len": 1024, "batch": 4,
                "encoder_len": 128, "decoder_len": 64, "rank": 16,
                "skills": 8, "tasks": 8, "reps": 7, "warmup": 2}
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.hidden % args.heads:
        p.error(f"--hidden must be a multiple of --heads; got {args.hidden} "
                f"and {args.heads}")
    if max(args.encoder_len, args.decoder_len) > args.max_len:
        p.error("--encoder-len and --decoder-len must be <= --max-len")
    return args


def shape_of(args):
    return {k: getattr(args, k) for k in (
        "vocab", "layers", "hidden", "heads", "intermediate", "max_len",
        "batch", "encoder_len", "decoder_len", "tasks", "skills", "rank")}


def make_batch(args):
    """Random token ids (no padding), labels and mixed task ids (NumPy)."""
    import numpy as np

    rng = np.random.default_rng(0)
    low = min(4, args.vocab - 1)  # above BART's special tokens
    encoder = rng.integers(low, args.vocab, (args.batch, args.encoder_len))
    decoder = rng.integers(low, args.vocab, (args.batch, args.decoder_len + 1))
    task_ids = np.arange(args.batch) % args.tasks
    rng.shuffle(task_ids)
    return {
        "encoder_token_ids": encoder.astype("int32"),
        "decoder_token_ids": decoder[:, :-1].astype("int32"),
        "labels": decoder[:, 1:].astype("int32"),
        "task_ids": task_ids.astype("int32"),
    }


# --------------------------------------------------------------------------
# The contenders (each returns a closure running one training step).
# --------------------------------------------------------------------------


def make_peft(args, batch):
    """PEFT poly on transformers' BART; returns (step, info)."""
    try:
        import torch
        import transformers
        from peft import PolyConfig, get_peft_model
        from transformers import BartConfig, BartForConditionalGeneration
        import peft
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise SystemExit(
            "benchmarks/bart_skill_speed.py needs torch, transformers and "
            f"peft (`pip install -e '.[test]'`): {e}")

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=args.vocab, d_model=args.hidden,
        encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads,
        encoder_ffn_dim=args.intermediate, decoder_ffn_dim=args.intermediate,
        max_position_embeddings=args.max_len, dropout=0.1,
        attention_dropout=0.1, activation_dropout=0.0)
    base = BartForConditionalGeneration(config)
    poly = PolyConfig(
        task_type="SEQ_2_SEQ_LM", r=args.rank, n_tasks=args.tasks,
        n_skills=args.skills, n_splits=1, target_modules=list(TARGETS))
    model = get_peft_model(base, poly)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    t = {k: torch.from_numpy(v.astype("int64")) for k, v in batch.items()}
    encoder_mask = torch.ones_like(t["encoder_token_ids"])
    decoder_mask = torch.ones_like(t["decoder_token_ids"])

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=t["encoder_token_ids"],
                    attention_mask=encoder_mask,
                    decoder_input_ids=t["decoder_token_ids"],
                    decoder_attention_mask=decoder_mask,
                    labels=t["labels"], task_ids=t["task_ids"])
        out.loss.backward()
        optimizer.step()
        return float(out.loss.detach())

    adapted = [n for n, m in model.named_modules()
               if type(m).__module__.startswith("peft.tuners.poly")
               and hasattr(m, "poly_lora_A")]
    info = {
        "trainable_params": sum(p.numel() for p in params),
        "adapted_modules": len(adapted),
        "attn_implementation": getattr(
            base.config, "_attn_implementation", None),
        "versions": {"torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "peft": peft.__version__},
    }
    return step, info


def make_ours(args, batch):
    """SkillBartSeq2SeqLM on the current Keras backend; returns (step, info)."""
    import keras
    import keras_hub
    import numpy as np

    from zoo.polytropon.bart import SkillBartSeq2SeqLM

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=args.vocab, num_layers=args.layers,
        num_heads=args.heads, hidden_dim=args.hidden,
        intermediate_dim=args.intermediate, dropout=0.1,
        max_sequence_length=args.max_len)
    model = SkillBartSeq2SeqLM(
        backbone, num_tasks=args.tasks, num_skills=args.skills,
        rank=args.rank, num_splits=1, seed=0)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(
        # epsilon 1e-8 as torch's AdamW (Keras defaults to 1e-7): the skill
        # gradients of a random-weight BART are ~5e-8, so Keras's default
        # epsilon would damp Adam's steps ~3x and the loss column would
        # compare optimisers, not models. Speed does not depend on it.
        optimizer=keras.optimizers.AdamW(learning_rate=1e-3,
                                         weight_decay=0.01, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=None, jit_compile=jit)
    x = {
        "encoder_token_ids": batch["encoder_token_ids"],
        "encoder_padding_mask": np.ones_like(batch["encoder_token_ids"],
                                             dtype=bool),
        "decoder_token_ids": batch["decoder_token_ids"],
        "decoder_padding_mask": np.ones_like(batch["decoder_token_ids"],
                                             dtype=bool),
        "task_ids": batch["task_ids"],
    }
    y = batch["labels"]

    def step():
        return float(model.train_on_batch(x, y, return_dict=True)["loss"])

    info = {
        "trainable_params": int(sum(
            np.prod(v.shape) for v in model.trainable_weights)),
        "trainable_variables": len(model.trainable_weights),
        "adapted_modules": len(model.skill_layers),
        "jit_compile": model.jit_compile,
        "versions": {"keras": keras.__version__,
                     "keras_hub": keras_hub.__version__},
    }
    return step, info, model


# --------------------------------------------------------------------------
# One backend, in this process
# --------------------------------------------------------------------------


def time_interleaved(steps, reps, warmup, set_threads):
    """{name: [seconds]}: one step of every contender per repetition.

    `steps` maps name -> (closure, torch threads or None), in the order of a
    repetition; odd repetitions run it reversed.
    """
    names = list(steps)
    first, losses = {}, {n: [] for n in names}
    for name in names:
        fn, threads = steps[name]
        if threads:
            set_threads(threads)
        for k in range(warmup):
            t0 = time.perf_counter()
            losses[name].append(fn())
            if k == 0:
                first[name] = time.perf_counter() - t0
    times = {n: [] for n in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            fn, threads = steps[name]
            if threads:
                set_threads(threads)
            t0 = time.perf_counter()
            losses[name].append(fn())
            times[name].append(time.perf_counter() - t0)
    return times, first, losses


def run_backend(args):
    backend = args.backend
    if backend != "peft":
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import torch

    load_before = os.getloadavg()
    batch = make_batch(args)
    t_setup = time.perf_counter()
    peft_step, peft_info = make_peft(args, batch)
    info = {"peft": peft_info}
    steps = {}
    if backend == "peft":
        for t in args.threads:
            steps[f"peft@{t}t"] = (peft_step, t)
    else:
        import keras

        assert keras.backend.backend() == backend, keras.backend.backend()
        ours_step, ours_info, _ = make_ours(args, batch)
        info["ours"] = ours_info
        if ours_info["trainable_params"] != peft_info["trainable_params"]:
            raise SystemExit(
                "trainable parameter counts differ: ours "
                f"{ours_info['trainable_params']}, PEFT "
                f"{peft_info['trainable_params']}")
        if ours_info["adapted_modules"] != peft_info["adapted_modules"]:
            raise SystemExit(
                f"adapted projections differ: ours {ours_info['adapted_modules']}"
                f", PEFT {peft_info['adapted_modules']}")
        pefts = [(f"peft@{t}t", (peft_step, t)) for t in args.threads]
        if backend == "torch":
            # ours@1, peft@1, peft@2, ours@2: each next to a PEFT run.
            for k, t in enumerate(args.threads):
                group = [(f"ours@{t}t", (ours_step, t)), pefts[k]]
                steps.update(group if k % 2 == 0 else group[::-1])
        else:
            # peft@1, ours, peft@2
            steps.update(pefts[:1])
            steps["ours"] = (ours_step, None)
            steps.update(pefts[1:])
    setup_s = time.perf_counter() - t_setup
    default_threads = torch.get_num_threads()
    times, first, losses = time_interleaved(
        steps, args.reps, args.warmup, torch.set_num_threads)
    torch.set_num_threads(default_threads)

    tokens = args.batch * (args.encoder_len + args.decoder_len)
    med = {n: statistics.median(ts) for n, ts in times.items()}
    best_peft = min((n for n in med if n.startswith("peft")), key=med.get)
    result = {
        "backend": backend, "shape": shape_of(args), "reps": args.reps,
        "warmup": args.warmup, "tokens_per_step": tokens,
        "median_s": med,
        "min_s": {n: min(ts) for n, ts in times.items()},
        "max_s": {n: max(ts) for n, ts in times.items()},
        "all_s": times, "first_step_s": first,
        "loss_first_last": {n: (ls[0], ls[-1]) for n, ls in losses.items()},
        "best_peft": best_peft, "setup_s": setup_s, "info": info,
        "torch_default_threads": default_threads,
        "cpu_count": os.cpu_count(),
        "load_before": load_before, "load_after": os.getloadavg(),
    }
    if backend != "peft":
        ours = [n for n in med if n.startswith("ours")]
        best_ours = min(ours, key=med.get)
        ratios = [p / o for p, o in zip(times[best_peft], times[best_ours],
                                        strict=True)]
        result["best_ours"] = best_ours
        result["ours_over_peft"] = {
            "median": statistics.median(ratios), "min": min(ratios),
            "max": max(ratios), "all": ratios}
    print_backend(result)
    if args.json:
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


def _compiled(result):
    if result["backend"] == "peft":
        return "eager torch"
    jit = result["info"]["ours"]["jit_compile"]
    return {"jax": "jax.jit" if jit else "eager jax",
            "tensorflow": "tf.function + XLA" if jit else
            "tf.function, no XLA",
            "torch": "torch.compile" if jit else "eager"}[result["backend"]] + (
        f" (jit_compile={jit})")


def print_backend(r):
    s = r["shape"]
    tok = r["tokens_per_step"]
    print(f"\n== {r['backend']}: ours {_compiled(r)}; BART vocab {s['vocab']}, "
          f"{s['layers']}+{s['layers']} layers, hidden {s['hidden']}, heads "
          f"{s['heads']}, ffn {s['intermediate']}; skills {s['skills']}, rank "
          f"{s['rank']}, tasks {s['tasks']}; batch {s['batch']} x "
          f"({s['encoder_len']} + {s['decoder_len']}) = {tok} tokens; "
          f"{r['reps']} interleaved reps after {r['warmup']} warm-up; load "
          f"avg {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} on "
          f"{r['cpu_count']} CPUs ==")
    for side, i in r["info"].items():
        print(f"  {side}: {i['adapted_modules']} adapted projections, "
              f"{i['trainable_params']:,} trainable parameters; {i['versions']}"
              + (f"; attention {i['attn_implementation']}"
                 if "attn_implementation" in i else ""))
    print(f"  {'contender':<10}{'median s':>10}{'min':>8}{'max':>8}"
          f"{'tokens/s':>10}{'1st step s':>12}  loss first -> last")
    for n, m in r["median_s"].items():
        lf = r["loss_first_last"][n]
        print(f"  {n:<10}{m:>10.3f}{r['min_s'][n]:>8.3f}{r['max_s'][n]:>8.3f}"
              f"{tok / m:>10.1f}{r['first_step_s'][n]:>12.2f}  "
              f"{lf[0]:.4f} -> {lf[1]:.4f}")
    if "ours_over_peft" in r:
        q = r["ours_over_peft"]
        print(f"  ours/PEFT tokens/s ({r['best_ours']} vs {r['best_peft']}): "
              f"median {q['median']:.3f}x, spread {q['min']:.3f}-"
              f"{q['max']:.3f}x (> 1: ours faster)", flush=True)


# --------------------------------------------------------------------------
# All backends, one subprocess each
# --------------------------------------------------------------------------


def _child_argv(argv):
    """argv without the driver's own --backends option."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--backends":
            skip = True
            continue
        if a.startswith("--backends="):
            continue
        out.append(a)
    return out


def run_all(args, argv):
    results = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [sys.executable, os.path.abspath(__file__), "--backend",
               backend, "--json"] + _child_argv(argv)
        # stderr (TensorFlow's and XLA's start-up lines) is shown only when
        # the child fails.
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                results.append(json.loads(line[len(RESULT_PREFIX):]))
            else:
                print(line, flush=True)
        if proc.returncode:
            print(proc.stderr[-4000:])
            print(f"!! {backend}: exit status {proc.returncode}", flush=True)
    print("\n== summary: training tokens/s, ours (SkillBartSeq2SeqLM) vs "
          "PEFT poly (transformers BART), same process, interleaved ==")
    print(f"  {'backend':<11}{'ours':<28}{'ours s':>8}{'ours tok/s':>11}"
          f"{'PEFT s':>8}{'PEFT tok/s':>11}{'ours/PEFT':>10}{'spread':>14}"
          f"{'load':>12}")
    for r in results:
        tok, bo, bp = r["tokens_per_step"], r["best_ours"], r["best_peft"]
        mo, mp = r["median_s"][bo], r["median_s"][bp]
        q = r["ours_over_peft"]
        setting = _compiled(r).split(" (")[0]
        if "@" in bo:
            setting += f", {bo.split('@')[1][:-1]} thr"
        print(f"  {r['backend']:<11}{setting:<28}{mo:>8.3f}{tok / mo:>11.1f}"
              f"{mp:>8.3f}{tok / mp:>11.1f}{q['median']:>10.3f}"
              f"{q['min']:>7.3f}-{q['max']:<6.3f}"
              f"{r['load_before'][0]:>6.2f}-{r['load_after'][0]:<5.2f}")
    print("  (PEFT at its fastest torch thread count in each process: "
          + ", ".join(f"{r['backend']}: {r['best_peft'].split('@')[1][:-1]} "
                      "thr" for r in results)
          + "; ours/PEFT = median of per-repetition PEFT time / ours time)")
    return 0 if len(results) == len(args.backends) else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.backend:
        run_backend(args)
        return 0
    return run_all(args, argv)


if __name__ == "__main__":
    sys.exit(main())
