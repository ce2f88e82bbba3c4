"""Outer steps/s of the authors' JAX code (smonsays/modular-hyperteacher) on the hyperteacher.

This script runs with the AUTHORS' python and code, never with the project's
environment; `benchmarks/meta_learning_speed.py --authors-python ...` starts
it. It builds the linear hypernetwork meta-learner of Schug et al. (ICLR 2024)
from the public classes of their `metax` package (HyperTeacher,
SyntheticMetaDataloader, MetaHypernetwork, ModelAgnosticMetaLearning,
KLDivergence) with the settings of their `configs/hyperteacher.py`
("hnet_linear"), compiles `learner.update` with `jax.jit` (their training step,
FewshotExperiment.step) and times outer steps. Each timed step draws the next
meta-batch from their data loader (jitted teacher sampling) and then updates,
as their training loop does; no evaluation, no callbacks. `run_fewshot.py`
itself is not imported (it needs wandb and absl flags).

Setting up the authors' environment (what worked on this machine, CPU only,
python 3.11):

    git clone https://github.com/smonsays/modular-hyperteacher /tmp/authors-code
    # (measured at HEAD 2680b5c; a `git archive` of it works the same)
    python3.11 -m venv /tmp/authors-venv
    /tmp/authors-venv/bin/pip install "jax[cpu]==0.4.30" jaxlib==0.4.30 \
        dm-haiku==0.0.12 optax==0.2.2 chex==0.1.86 flax==0.10.4 \
        ml_collections==1.1.0 numpy==1.26.4 absl-py==2.5.1

Their requirements.txt pins are older; these are the versions that import and
train here. Then, by hand:

    PYTHONPATH=/tmp/authors-code /tmp/authors-venv/bin/python \
        benchmarks/authors_hyperteacher_driver.py --config calib --steps 100

prints one JSON line (`outer_steps_per_s`, the configuration, parameter counts,
compile time, load average). With `--serve` the script compiles once and then
answers requests on stdin: each line is a number of steps to time, each answer
one JSON line; `meta_learning_speed.py` uses this to interleave repetitions
of ours and theirs without recompiling.

Configs (as in meta_learning_speed.py): "calib" = base width 64, 16 templates
(embedding dim), hyperteacher M=4 K=2, meta-batch 16, 64/64 shots, 10 inner
AdamW steps at lr 0.3, second order, outer AdamW 3e-3, weight decay 1e-2,
global-norm clip 1; "paper" = the file's hnet_linear (width 128, meta-batch
128, 256/256 shots, outer lr 1e-3) with the same 16 templates.
"""

import argparse
import json
import os
import sys
import time

CONFIGS = {
    "calib": dict(hidden_dim=64, meta_batch_size=16, shots=64, lr_outer=3e-3),
    "paper": dict(hidden_dim=128, meta_batch_size=128, shots=256, lr_outer=1e-3),
}
# Shared by both configs (configs/hyperteacher.py, "hnet_linear" branch).
COMMON = dict(num_hidden=3, templates=16, steps_inner=10, lr_inner=0.3,
              weight_decay_outer=1e-2, max_grad_norm=1.0, num_experts=4,
              num_hot=2, teacher_hidden_dim=32, teacher_num_hidden=3,
              seed=2023)


def make_learner(settings, num_steps):
    """The authors' data loader, meta-model and MAML learner for `settings`."""
    import jax
    import jax.numpy as jnp
    import optax
    from metax import energy, learner, models, module
    from metax.data.dataset.teacher import HyperTeacher
    from metax.data.synthetic import SyntheticMetaDataloader

    s = settings
    teacher = HyperTeacher(
        input_dim=16, output_dim=8, hidden_dim=s["teacher_hidden_dim"],
        num_hidden=s["teacher_num_hidden"], num_experts=s["num_experts"],
        num_hot=s["num_hot"], frac_ood=0.25, scale=1.0, classification=True,
        normalize_classifier=True, targets_temperature=0.1,
        continuous_combinations=False, chunking=False, task_support="random",
        seed=s["seed"])
    loader = SyntheticMetaDataloader(
        data_generator=teacher, num_tasks=num_steps * s["meta_batch_size"],
        shots_train=s["shots"], shots_test=s["shots"],
        meta_batch_size=s["meta_batch_size"], mode="train",
        train_test_split=True,
        rng=jax.random.split(jax.random.PRNGKey(s["seed"]), 5)[0])

    def base_mlp(sizes, activate_final):  # NTK-parametrised, as their hnets
        return models.MultilayerPerceptron(
            output_sizes=sizes, activate_final=activate_final,
            batch_norm=False, reparametrized_linear=True)

    width = s["hidden_dim"]
    meta_model = module.MetaHypernetwork(
        energy.KLDivergence(reduction="mean"),
        energy.KLDivergence(reduction="mean"),
        target_network_input=base_mlp([width], True),
        target_network_hidden=base_mlp([width] * (s["num_hidden"] - 1), True),
        target_network_output=base_mlp([teacher.output_dim], False),
        input_shape=teacher.input_shape, output_dim=teacher.output_dim,
        hidden_dim=width, num_templates=s["templates"], chunking=True,
        weight_generator="linear", embedding_nonlinearity="linear",
        embedding_dropout=0.0, embedding_norm_stop_grad=True,
        embedding_normalization=True, embedding_constant_init=False,
        hnet_init="default", l1_reg=0.0, l2_reg=0.0, zero_threshold=0,
        fast_bias=True)
    # Inner: their utils.create_optimizer("adamw") = optax.adamw with
    # eps_root = float32 eps. Outer: clip, AdamW, skip non-finite updates.
    inner = optax.adamw(learning_rate=s["lr_inner"],
                        eps_root=float(jnp.finfo(jnp.float32).eps))
    outer = optax.apply_if_finite(optax.chain(
        optax.clip_by_global_norm(s["max_grad_norm"]),
        optax.adamw(learning_rate=s["lr_outer"],
                    weight_decay=s["weight_decay_outer"])), 1)
    maml = learner.ModelAgnosticMetaLearning(
        meta_model=meta_model, batch_size=None, steps_inner=s["steps_inner"],
        optim_fn_inner=inner, optim_fn_outer=outer, first_order=False)
    return loader, meta_model, maml


class Runner:
    """Compiled update plus an endless stream of meta-batches."""

    def __init__(self, settings, warmup, max_steps):
        import jax

        self.jax = jax
        loader, meta_model, maml = make_learner(settings, max_steps)
        init_key, self.key = jax.random.split(jax.random.PRNGKey(settings["seed"]))
        self.state = maml.reset(init_key, loader.sample_input)
        hparams, hstate = meta_model.reset_hparams(init_key, loader.sample_input)
        params, _ = meta_model.reset_params(init_key, hparams, hstate,
                                            loader.sample_input)
        count = lambda tree: int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))  # noqa: E731
        self.num_meta_params, self.num_fast_params = count(hparams), count(params)
        self.update = jax.jit(maml.update)
        self.batches = iter(loader)
        self.metrics = {}
        start = time.perf_counter()
        self.run(warmup)  # the first call compiles
        self.compile_s = time.perf_counter() - start

    def run(self, steps):
        """Times `steps` outer steps, each drawing its meta-batch first."""
        start = time.perf_counter()
        for _ in range(steps):
            self.key, step_key = self.jax.random.split(self.key)
            self.state, self.metrics = self.update(step_key, self.state,
                                                   next(self.batches))
        self.jax.block_until_ready(self.state)
        return time.perf_counter() - start

    def report(self, steps, seconds):
        return {
            "outer_steps_per_s": steps / seconds, "steps": steps,
            "seconds": seconds, "compile_s": round(self.compile_s, 2),
            "loss": float(self.metrics["loss_outer"]),
            "accuracy": float(self.metrics["acc_outer"]),
            "num_meta_params": self.num_meta_params,
            "num_fast_params": self.num_fast_params,
            "load_avg": os.getloadavg(),
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="calib")
    parser.add_argument("--steps", type=int, default=100,
                        help="timed outer steps (without --serve)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps; the first compiles")
    parser.add_argument("--serve", action="store_true",
                        help="answer 'number of steps' lines on stdin")
    parser.add_argument("--max-steps", type=int, default=100_000,
                        help="meta-batches the loader can draw (--serve)")
    parser.add_argument("--authors-code", default=os.environ.get(
        "AUTHORS_CODE", "/tmp/authors-code"))
    args = parser.parse_args()
    sys.path.insert(0, args.authors_code)

    settings = dict(COMMON, **CONFIGS[args.config])
    max_steps = args.max_steps if args.serve else args.warmup + args.steps
    runner = Runner(settings, args.warmup, max_steps)
    header = {"config": args.config, "settings": settings,
              "jax": runner.jax.__version__,
              "device": runner.jax.default_backend()}
    if not args.serve:
        print(json.dumps(dict(header, **runner.report(
            args.steps, runner.run(args.steps)))), flush=True)
        return
    print(json.dumps(dict(header, ready=True, compile_s=runner.compile_s)),
          flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        steps = int(line)
        print(json.dumps(runner.report(steps, runner.run(steps))), flush=True)


if __name__ == "__main__":
    main()
