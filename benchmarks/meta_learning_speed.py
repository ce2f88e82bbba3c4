"""Meta-learning outer steps per second: our MetaLearner against the authors' JAX code.

The task (issue 7): on the default hyperteacher config, our outer steps/s
must at least match the authors' code (smonsays/modular-hyperteacher, Schug
et al. ICLR 2024) measured in the same run. Ours is
`training.meta_learning.MetaLearner` around
`zoo.hypernetworks.learners.HypernetworkLearner` (linear hypernetwork),
trained with `model.fit` on a `keras.utils.PyDataset` that draws a fresh
meta-batch from `zoo.hypernetworks.hyperteacher.Hyperteacher` for every step.
Theirs is `benchmarks/authors_hyperteacher_driver.py`, run with their own
python (`--authors-python`) and code (`--authors-code`): `jax.jit` of their
`ModelAgnosticMetaLearning.update`, each step drawing its meta-batch from
their loader. Both sides time whole outer steps, data included, after
compilation.

Configs:
  calib  linear hypernetwork, base MLP 16 -> 64 -> 64 -> 64 -> 8, embedding
         dim 16; hyperteacher M=4 modules, K=2, compositional (their
         "random") support; meta-batch 16 tasks, 64 support / 64 query
         shots; 10 inner AdamW steps (lr 0.3, weight decay 1e-4), second
         order; outer AdamW 3e-3, weight decay 1e-2, global clipnorm 1.
  paper  the same with base width 128, meta-batch 128, 256 / 256 shots and
         outer lr 1e-3 (configs/hyperteacher.py "hnet_linear"); ~0.1
         steps/s on a 2-core CPU, so use few steps.

One long-lived worker process per backend (KERAS_BACKEND is fixed when keras
is imported) and one for the authors' code; each compiles once (a first,
untimed `fit` of `--warmup` steps) and then times `--steps` outer steps per
request (ours: one `model.fit(dataset, epochs=1)` call, so Keras's per-fit
overhead counts against us). Repetitions alternate ours / theirs (A B, then
B A, ...), and each repetition gives one ratio ours / authors from the two
adjacent measurements. torch runs at every intra-op thread count in
`--threads` (`torch.set_num_threads`). The table gives, per backend, the
median steps/s of each side with its spread (min-max over repetitions), and
the median and spread of the per-repetition ratios, plus the load average.

    .venv/bin/python benchmarks/meta_learning_speed.py \
        --authors-python /tmp/authors-venv/bin/python \
        --authors-code /tmp/authors-code
    .venv/bin/python benchmarks/meta_learning_speed.py --backends jax --reps 3
    .venv/bin/python benchmarks/meta_learning_speed.py --config paper \
        --steps 3 --reps 3 --authors-python ... --authors-code ...

Without `--authors-python` only our steps/s are printed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "benchmarks", "authors_hyperteacher_driver.py")
CONFIGS = {
    "calib": dict(hidden_units=64, meta_batch=16, shots=64, outer_lr=3e-3),
    "paper": dict(hidden_units=128, meta_batch=128, shots=256, outer_lr=1e-3),
}
COMMON = dict(embedding_dim=16, num_hidden_layers=3, num_modules=4,
              max_active=2, inner_steps=10, inner_lr=0.3, inner_wd=1e-4,
              outer_wd=1e-2, clipnorm=1.0)


# -- Our worker (runs in its own process, one per backend). ---------------------


def serve_ours(config, warmup):
    """Builds and compiles our meta-learner, then answers requests on stdin:
    each line is JSON {"steps": n, "threads": k or null}; each answer one
    JSON line with the steps/s of one `fit` call of n fresh meta-batches."""
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    from training.meta_learning import MetaLearner
    from zoo.hypernetworks.hyperteacher import Hyperteacher
    from zoo.hypernetworks.learners import HypernetworkLearner

    settings = dict(COMMON, **CONFIGS[config])
    teacher = Hyperteacher(num_modules=settings["num_modules"],
                           max_active=settings["max_active"],
                           support="compositional", seed=0)

    class FreshMetaBatches(keras.utils.PyDataset):
        """`num_steps` meta-batches, each drawn fresh from the teacher."""

        def __init__(self, num_steps, first_index):
            super().__init__()
            self.num_steps, self.first_index = num_steps, first_index

        def __len__(self):
            return self.num_steps

        def __getitem__(self, index):
            rng = np.random.default_rng((0, self.first_index + index))
            return teacher.sample("train", settings["meta_batch"],
                                  settings["shots"], settings["shots"],
                                  rng).as_inputs()

    keras.utils.set_random_seed(0)
    network = HypernetworkLearner(
        teacher.output_dim, hidden_units=settings["hidden_units"],
        num_hidden_layers=settings["num_hidden_layers"],
        embedding_dim=settings["embedding_dim"])
    model = MetaLearner(
        network, inner_steps=settings["inner_steps"],
        inner_optimizer="adamw", inner_learning_rate=settings["inner_lr"],
        inner_weight_decay=settings["inner_wd"], first_order=False,
        loss=teacher.loss)
    model.compile(optimizer=keras.optimizers.AdamW(
        settings["outer_lr"], weight_decay=settings["outer_wd"],
        global_clipnorm=settings["clipnorm"]))
    drawn = 0
    start = time.perf_counter()
    model.fit(FreshMetaBatches(warmup, drawn), epochs=1, verbose=0)
    compile_s = time.perf_counter() - start
    drawn += warmup
    num_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    num_fast = int(sum(np.prod(v.shape) for v in network.fast_variables))
    print(json.dumps({"ready": True, "compile_s": compile_s,
                      "backend": keras.backend.backend(),
                      "num_meta_params": num_params,
                      "num_fast_params": num_fast}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("threads"):
            import torch

            torch.set_num_threads(request["threads"])
        steps = request["steps"]
        dataset = FreshMetaBatches(steps, drawn)
        drawn += steps
        start = time.perf_counter()
        history = model.fit(dataset, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        print(json.dumps({
            "outer_steps_per_s": steps / seconds, "steps": steps,
            "seconds": seconds, "loss": history.history["loss"][-1],
            "accuracy": history.history["accuracy"][-1],
            "load_avg": os.getloadavg(),
        }), flush=True)


# -- The conductor. ----------------------------------------------------------------


class Worker:
    """A long-lived measuring process that answers one JSON line per request."""

    def __init__(self, command, env, name):
        self.name = name
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not os.environ.get("BENCH_DEBUG")
            else None, text=True, bufsize=1)
        self.info = self._read()

    def _read(self):
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(
                    f"{self.name} worker exited (rc {self.process.poll()}); "
                    "rerun with BENCH_DEBUG=1 to see its stderr")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, request):
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def start_ours(backend, args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.abspath(__file__), "--serve-ours",
               backend, f"--config={args.config}", f"--warmup={args.warmup}"]
    return Worker(command, env, f"ours ({backend})")


def start_authors(args):
    env = dict(os.environ, PYTHONPATH=args.authors_code,
               TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("KERAS_BACKEND", None)
    command = [args.authors_python, DRIVER, "--serve",
               f"--config={args.config}", f"--warmup={args.warmup}",
               f"--authors-code={args.authors_code}"]
    return Worker(command, env, "authors")


def measure_backend(backend, authors, args, log):
    """Interleaved repetitions for one backend; one result row per torch
    thread count (one row otherwise)."""
    ours = start_ours(backend, args)
    log(f"{backend}: compiled in {ours.info['compile_s']:.1f} s "
        f"({ours.info['num_meta_params']} meta / "
        f"{ours.info['num_fast_params']} fast parameters)")
    thread_counts = ([int(t) for t in args.threads.split(",")]
                     if backend == "torch" else [None])
    contenders = [("ours", t) for t in thread_counts]
    if authors is not None:
        contenders.append(("authors", None))
    runs = {c: [] for c in contenders}
    loads = []
    for rep in range(args.reps):
        for who, threads in (contenders if rep % 2 == 0 else contenders[::-1]):
            if who == "ours":
                answer = ours.ask(json.dumps({"steps": args.steps,
                                              "threads": threads}))
            else:
                answer = authors.ask(str(args.steps))
            runs[(who, threads)].append(answer)
            loads.append(answer["load_avg"][0])
            log(f"  rep {rep} {who:<7} thr {threads or '-'}: "
                f"{rate(answer['outer_steps_per_s'])} steps/s "
                f"(loss {answer['loss']:.3f}, load {answer['load_avg'][0]:.2f})")
    ours.close()
    rows = []
    theirs = [r["outer_steps_per_s"] for r in runs.get(("authors", None), [])]
    for threads in thread_counts:
        mine = [r["outer_steps_per_s"] for r in runs[("ours", threads)]]
        row = {"backend": backend, "threads": threads, "ours": mine,
               "authors": theirs, "load": [min(loads), max(loads)],
               "ours_last_loss": runs[("ours", threads)][-1]["loss"]}
        if theirs:
            row["ratios"] = [a / b for a, b in zip(mine, theirs, strict=True)]
        rows.append(row)
    return rows


def rate(value):
    """Steps/s with 3 significant digits below 1 (the paper config)."""
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def spread(values):
    return f"{rate(min(values))}-{rate(max(values))}"


def print_table(rows, args, load_before, load_after, authors_info):
    print(f"Outer steps/s, {args.config} config, {args.reps} interleaved "
          f"repetitions of {args.steps} steps (median, spread min-max); "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} "
          f"after ({os.cpu_count()} cores)")
    if authors_info:
        print(f"authors: jax {authors_info.get('jax')}, compiled in "
              f"{authors_info.get('compile_s', 0):.1f} s")
    print(f"{'backend':<11}{'thr':>4}{'ours':>8}{'spread':>12}"
          f"{'authors':>9}{'spread':>12}{'ours/auth':>10}{'spread':>12}"
          f"{'load':>11}  verdict")
    for row in rows:
        threads = "-" if row["threads"] is None else str(row["threads"])
        line = (f"{row['backend']:<11}{threads:>4}"
                f"{rate(statistics.median(row['ours'])):>8}"
                f"{spread(row['ours']):>12}")
        if row.get("ratios"):
            ratio = statistics.median(row["ratios"])
            line += (f"{rate(statistics.median(row['authors'])):>9}"
                     f"{spread(row['authors']):>12}{ratio:>10.2f}"
                     f"{spread(row['ratios']):>12}{spread(row['load']):>11}"
                     f"  {'PASS' if ratio >= 1.0 else 'MISS'} (>= 1)")
        else:
            line += f"{'':>43}{spread(row['load']):>11}"
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="calib")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100,
                        help="outer steps per repetition (use ~3 for paper)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per process; the first compiles")
    parser.add_argument("--threads", default="1,2",
                        help="torch intra-op thread counts to measure")
    parser.add_argument("--authors-python",
                        help="python of the authors' venv (see "
                             "authors_hyperteacher_driver.py)")
    parser.add_argument("--authors-code", default="/tmp/authors-code",
                        help="checkout of smonsays/modular-hyperteacher")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--quiet", action="store_true",
                        help="no per-repetition lines")
    parser.add_argument("--serve-ours", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_ours:
        serve_ours(args.config, args.warmup)
        return

    def log(message):
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    authors = start_authors(args) if args.authors_python else None
    if authors:
        log(f"authors: compiled in {authors.info['compile_s']:.1f} s "
            f"(jax {authors.info['jax']})")
    rows = []
    for backend in args.backends.split(","):
        rows.extend(measure_backend(backend, authors, args, log))
    authors_info = authors.info if authors else None
    if authors:
        authors.close()
    load_after = os.getloadavg()
    print_table(rows, args, load_before, load_after, authors_info)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "load_before": load_before,
                       "load_after": load_after, "rows": rows}, handle,
                      indent=1)


if __name__ == "__main__":
    main()
