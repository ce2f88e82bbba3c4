"""Polytropon's dual-speed optimisation, written once for every family.

The task-skill allocation logits learn with their own, higher learning rate
and without weight decay; the skills (and any other trainable weights) with
the usual one (paper Section 2; the reference code: allocation lr 0.1 and
weight decay 0, skills lr 1e-3 and weight decay 0.01, AdamW, warm-up then
linear decay, gradient clipping). Keras's `MultiOptimizer` routes variables
by path regex, so no custom optimizer code is needed:

    optimizer = dual_speed_optimizer(total_steps=1000)
    model.compile(optimizer=optimizer, ...)

NOTE 1 (clipping): each optimizer of a `MultiOptimizer` clips its own
  group's gradients to `clipnorm` (a global norm per group); the reference
  code clips all parameters together.
NOTE 2 (schedule): `WarmupLinearDecay` is the schedule of Hugging Face's
  `get_linear_schedule_with_warmup` (the reference code's): linear from 0
  to the peak over the warm-up steps, then linear to 0 at `total_steps`.
NOTE 3 (epsilon): Adam's epsilon is 1e-8, PyTorch's AdamW default, not
  Keras's 1e-7. Keras adds epsilon before the bias correction of v, torch
  after, so Keras's step t acts as torch's with epsilon / sqrt(1 - beta2^t)
  (31.6 x epsilon at t = 1, 1.3 x at t = 1000): no constant matches torch,
  1e-8 is the closer one. It matters for small gradients: the skill
  gradients of a BART at random weights measured ~5e-8 per element
  (benchmarks/bart_skill_speed.py), where Keras's default kept Adam's
  steps on the skills at a fraction of the learning rate for hundreds of
  steps.
"""

import keras

ALLOCATION_PATTERN = "(.*/)?.*skill_logits.*"


@keras.saving.register_keras_serializable(package="modular_zoo")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * step / warmup for step < warmup, then
    peak * (total - step) / (total - warmup), never below 0 (NOTE 2).

    >>> schedule = WarmupLinearDecay(1.0, total_steps=10, warmup_steps=2)
    >>> [round(float(schedule(step)), 3) for step in (0, 1, 2, 6, 10, 12)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0):
        if not peak_learning_rate > 0:
            raise ValueError(f"peak_learning_rate must be > 0; got {peak_learning_rate}.")
        if int(total_steps) < 1 or not 0 <= int(warmup_steps) <= int(total_steps):
            raise ValueError("WarmupLinearDecay needs total_steps >= 1 and 0 <= "
                             f"warmup_steps <= total_steps; got {total_steps}, "
                             f"{warmup_steps}.")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        rising = step / warmup
        falling = (self.total_steps - step) / float(
            max(self.total_steps - self.warmup_steps, 1))
        fraction = keras.ops.where(step < self.warmup_steps, rising, falling)
        return self.peak_learning_rate * keras.ops.clip(fraction, 0.0, 1.0)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def with_allocation_optimizer(optimizer, allocation_optimizer,
                              allocation_pattern=ALLOCATION_PATTERN):
    """`optimizer` for every variable except those matching
    `allocation_pattern` (the skill allocation logits), which
    `allocation_optimizer` updates; None keeps `optimizer` alone."""
    if allocation_optimizer is None:
        return optimizer
    return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        optimizer, {allocation_pattern: allocation_optimizer}))


def dual_speed_optimizer(total_steps, learning_rate=1e-3, allocation_learning_rate=0.1,
                         weight_decay=0.01, warmup_fraction=0.06, clipnorm=0.1,
                         allocation_pattern=ALLOCATION_PATTERN, epsilon=1e-8):
    """The reference code's optimisation (module docstring): AdamW with a
    warm-up and linear decay for the skills, and one without weight decay
    for the allocation logits at `allocation_learning_rate` (None: one
    AdamW for everything), both with Adam's `epsilon` (NOTE 3).

    >>> optimizer = dual_speed_optimizer(total_steps=100)
    >>> type(optimizer).__name__
    'MultiOptimizer'
    """
    warmup = int(round(warmup_fraction * total_steps))

    def adamw(rate, decay):
        return keras.optimizers.AdamW(WarmupLinearDecay(rate, total_steps, warmup),
                                      weight_decay=decay, global_clipnorm=clipnorm,
                                      epsilon=epsilon)  # NOTE 3

    return with_allocation_optimizer(
        adamw(learning_rate, weight_decay),
        None if allocation_learning_rate is None else adamw(allocation_learning_rate, 0.0),
        allocation_pattern)
