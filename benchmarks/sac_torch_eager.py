"""Multi-task SAC update on eager torch: our MultiTaskSAC against plain PyTorch.

    python benchmarks/sac_torch_eager.py                       # batch 1280, 1 thread
    python benchmarks/sac_torch_eager.py --batch-per-task 32 --threads 2 --rounds 9

One process, KERAS_BACKEND=torch, MT10 shapes (observation 49 with the
one-hot, action 4, 10 tasks, `--batch-per-task` 128 = 1,280 by default).

* ours: `training.sac.MultiTaskSAC` with
  `zoo.metaworld.build_actor_critic("mt10/mt-mh-sac", 10, 4)` and
  `sac_optimizer()`, updated by `train_on_batch` (Keras's train function,
  the one `fit` calls per step);
* plain: a CleanRL-style eager PyTorch SAC update written below with the
  same networks and math: twin Q critics and a tanh-Gaussian actor, each a
  3 x 400 ReLU trunk with one output head per task (one Linear of
  tasks x outputs units, of which each example keeps its task's, as the
  official MT-MH-SAC code does), per-task log_alpha, Adam for the critics
  (both in one optimizer, as CleanRL), the actor and the temperatures,
  gradient-norm clipping at 1 for actor and critics, Polyak targets
  (tau 0.005). As CleanRL it steps the critics first and then the actor
  (ours: one backward pass for all three losses, training/sac.py NOTE 2);
  the work per update is the same.

Both start from their own random weights and see the same pre-drawn
batches. After `--warmup` updates each, every round times `--updates`
updates of each contender back to back (order reversed every other round).
Prints ms per update (median over rounds, min-max) and in process CPU time,
the median and spread of the per-round ratios plain_ms / ours_ms (ours'
updates/s relative to plain torch; the verdict, target >= 0.9), the same
median in CPU time (which preemption by other jobs does not inflate), and
the load average before and after.
"""

import argparse
import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "torch"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TASKS, OBS, ACT = 10, 49, 4
HIDDEN = (400, 400, 400)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
TARGET = 0.9


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-per-task", type=int, default=128,
                        help="transitions per task (10 tasks); default 128")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=10, help="updates per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches cycled")
    args = parser.parse_args()
    for name in ("batch_per_task", "threads", "rounds", "updates", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


# -- Data: what training.replay_buffer.TaskReplayBuffer.sample returns. ---------
def make_batches(count, batch_per_task, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = TASKS * batch_per_task
    task_ids = np.repeat(np.arange(TASKS), batch_per_task).astype("int32")
    one_hot = np.eye(TASKS, dtype="float32")[task_ids]

    def observations():
        return np.concatenate(
            [rng.normal(size=(n, OBS - TASKS)).astype("float32"), one_hot], 1)

    return [{"observations": observations(),
             "actions": rng.uniform(-1, 1, (n, ACT)).astype("float32"),
             "rewards": rng.normal(size=n).astype("float32"),
             "next_observations": observations(),
             "task_ids": task_ids} for _ in range(count)]


# -- Ours. -----------------------------------------------------------------------
class Ours:
    def __init__(self, batches):
        import keras

        from training.sac import MultiTaskSAC, sac_optimizer
        from zoo.metaworld import build_actor_critic

        keras.utils.set_random_seed(0)
        actor, critic = build_actor_critic("mt10/mt-mh-sac", TASKS, ACT)
        self.sac = MultiTaskSAC(actor, critic, TASKS, OBS, ACT, seed=0)
        self.sac.compile(optimizer=sac_optimizer())
        self.batches = batches
        self.step = 0

    def update(self):
        batch = self.batches[self.step % len(self.batches)]
        self.step += 1
        return self.sac.train_on_batch(batch, return_dict=True)["critic_loss"]

    def parameter_count(self):
        import numpy as np

        return sum(int(np.prod(v.shape)) for v in self.sac.trainable_variables)


# -- Plain eager PyTorch (CleanRL style). -----------------------------------------
def plain_sac(batches, gamma=0.99, tau=0.005, lr=3e-4):
    """A closure running one plain-torch SAC update per call (and the parameter count)."""
    import torch
    from torch import nn

    class MultiHeadMLP(nn.Module):
        """3 x 400 ReLU trunk, then one head per task: all heads in one
        Linear, each example keeps its own task's outputs."""

        def __init__(self, inputs, outputs):
            super().__init__()
            layers, width = [], inputs
            for units in HIDDEN:
                layers += [nn.Linear(width, units), nn.ReLU()]
                width = units
            self.trunk = nn.Sequential(*layers)
            self.heads = nn.Linear(width, TASKS * outputs)
            nn.init.uniform_(self.heads.weight, -3e-3, 3e-3)
            nn.init.uniform_(self.heads.bias, -3e-3, 3e-3)
            self.outputs = outputs

        def forward(self, x, task_ids):
            out = self.heads(self.trunk(x)).view(len(x), TASKS, self.outputs)
            return out[torch.arange(len(x)), task_ids]

    class QNetwork(MultiHeadMLP):
        def __init__(self):
            super().__init__(OBS + ACT, 1)

        def forward(self, obs, actions, task_ids):
            return super().forward(torch.cat([obs, actions], 1), task_ids).view(-1)

    class Actor(MultiHeadMLP):
        def __init__(self):
            super().__init__(OBS, 2 * ACT)

        def get_action(self, obs, task_ids):
            mean, log_std = super().forward(obs, task_ids).chunk(2, dim=-1)
            std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
            normal = torch.distributions.Normal(mean, std)
            x_t = normal.rsample()
            action = torch.tanh(x_t)
            # log(1 - tanh(x)^2), exact form (as training/sac.py NOTE 4).
            log_det = 2.0 * (torch.log(torch.tensor(2.0)) - x_t
                             - nn.functional.softplus(-2.0 * x_t))
            return action, (normal.log_prob(x_t) - log_det).sum(-1)

    torch.manual_seed(0)
    actor, qf1, qf2 = Actor(), QNetwork(), QNetwork()
    qf1_target, qf2_target = QNetwork(), QNetwork()
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_params = list(qf1.parameters()) + list(qf2.parameters())
    target_params = list(qf1_target.parameters()) + list(qf2_target.parameters())
    for p in target_params:
        p.requires_grad_(False)
    log_alpha = torch.zeros(TASKS, requires_grad=True)
    q_optimizer = torch.optim.Adam(q_params, lr=lr)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=lr)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=lr)
    target_entropy = -float(ACT)
    data = [{k: torch.as_tensor(v) for k, v in b.items()} for b in batches]
    for b in data:
        b["task_ids"] = b["task_ids"].long()
    step = [0]

    def update():
        b = data[step[0] % len(data)]
        step[0] += 1
        obs, actions, ids = b["observations"], b["actions"], b["task_ids"]
        alpha = log_alpha.detach().exp()[ids]

        # Critics.
        with torch.no_grad():
            next_actions, next_log_pi = actor.get_action(b["next_observations"], ids)
            next_q = torch.min(qf1_target(b["next_observations"], next_actions, ids),
                               qf2_target(b["next_observations"], next_actions, ids))
            target = b["rewards"] + gamma * (next_q - alpha * next_log_pi)
        qf_loss = 0.5 * ((qf1(obs, actions, ids) - target).square()
                         + (qf2(obs, actions, ids) - target).square()).mean()
        q_optimizer.zero_grad()
        qf_loss.backward()
        nn.utils.clip_grad_norm_(q_params, 1.0)
        q_optimizer.step()

        # Actor (critics held: no gradient to their weights).
        for p in q_params:
            p.requires_grad_(False)
        pi, log_pi = actor.get_action(obs, ids)
        min_q = torch.min(qf1(obs, pi, ids), qf2(obs, pi, ids))
        actor_loss = (alpha * log_pi - min_q).mean()
        actor_optimizer.zero_grad()
        actor_loss.backward()
        nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        actor_optimizer.step()
        for p in q_params:
            p.requires_grad_(True)

        # Temperatures.
        alpha_loss = (-log_alpha[ids] * (log_pi.detach() + target_entropy)).mean()
        alpha_optimizer.zero_grad()
        alpha_loss.backward()
        alpha_optimizer.step()

        # Polyak targets.
        with torch.no_grad():
            torch._foreach_lerp_(target_params, q_params, tau)
        return qf_loss.item()

    count = sum(p.numel() for p in list(actor.parameters()) + q_params) + TASKS
    return update, count


def main():
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import keras

    batches = make_batches(args.batches, args.batch_per_task)
    ours = Ours(batches)
    plain_update, plain_count = plain_sac(batches)
    contenders = {"ours": ours.update, "plain": plain_update}
    print(f"torch {torch.__version__} ({args.threads} thread(s)), keras {keras.__version__}, "
          f"batch {TASKS * args.batch_per_task}; parameters ours "
          f"{ours.parameter_count():,}, plain {plain_count:,}", flush=True)
    for update in contenders.values():
        for _ in range(args.warmup):
            update()

    load_before = os.getloadavg()
    names = list(contenders)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}  # process CPU time: what preemption does not inflate
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            began, began_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.updates):
                loss = contenders[name]()
            float(loss)
            wall[name].append(1000 * (time.perf_counter() - began) / args.updates)
            cpu[name].append(1000 * (time.process_time() - began_cpu) / args.updates)
        print(f"round {r}: ours {wall['ours'][-1]:7.1f}  plain {wall['plain'][-1]:7.1f} "
              f"ms/update", flush=True)
    load_after = os.getloadavg()

    print(f"\nload average {load_before[0]:.2f} -> {load_after[0]:.2f}; "
          f"{args.rounds} rounds x {args.updates} updates")
    print(f"{'':6s} {'ms/update':>9s} {'min-max':>15s} {'updates/s':>9s} {'cpu ms':>7s}")
    for name in names:
        t = wall[name]
        print(f"{name:6s} {statistics.median(t):9.1f} {min(t):7.1f}-{max(t):<7.1f} "
              f"{1000 / statistics.median(t):9.2f} {statistics.median(cpu[name]):7.1f}")
    ratios = [p / o for o, p in zip(wall["ours"], wall["plain"])]
    cpu_ratios = [p / o for o, p in zip(cpu["ours"], cpu["plain"])]
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio >= TARGET else "MISS"
    print(f"ours/plain updates/s: median {ratio:.3f} (spread {min(ratios):.3f}-"
          f"{max(ratios):.3f}); in CPU time {statistics.median(cpu_ratios):.3f}; "
          f"target >= {TARGET}: {verdict}")


if __name__ == "__main__":
    main()
