"""Dual-speed optimisation (training/optimizers.py): the schedule, and the
allocation logits updated by their own optimizer at their own rate."""

import keras
import numpy as np
import pytest
from keras import ops

from layers import SkillLoRADense
from training.optimizers import WarmupLinearDecay, dual_speed_optimizer


def test_schedule_values_and_config():
    schedule = WarmupLinearDecay(2.0, total_steps=11, warmup_steps=1)
    values = [float(ops.convert_to_numpy(schedule(step))) for step in range(12)]
    np.testing.assert_allclose(values, [0.0, 2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.8, 0.6,
                                        0.4, 0.2, 0.0], atol=1e-6)
    clone = WarmupLinearDecay.from_config(schedule.get_config())
    assert clone.get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupLinearDecay(1.0, total_steps=5, warmup_steps=6)


def test_allocation_logits_learn_at_their_own_rate_without_weight_decay():
    keras.utils.set_random_seed(0)
    layer = SkillLoRADense(3, num_tasks=2, num_skills=2, rank=1, gumbel_noise=False)
    inputs = keras.Input((4,))
    task = keras.Input((), dtype="int32")
    model = keras.Model([inputs, task], layer(inputs, task))
    model.compile(optimizer=dual_speed_optimizer(total_steps=4, learning_rate=1e-3,
                                                 allocation_learning_rate=0.1,
                                                 warmup_fraction=0.0, clipnorm=None),
                  loss="mse")
    layer.lora_b.assign(np.ones(layer.lora_b.shape, "float32"))  # logits get gradients
    before = {w.path: ops.convert_to_numpy(w).copy() for w in model.trainable_weights}
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model.train_on_batch([x, np.zeros(8, "int32")], np.zeros((8, 3), "float32"))
    steps = {w.path: np.abs(ops.convert_to_numpy(w) - before[w.path]).max()
             for w in model.trainable_weights}
    logits = next(path for path in steps if "skill_logits" in path)
    skills = next(path for path in steps if "lora_a" in path)
    # Adam's first step moves each parameter by about its learning rate.
    assert steps[logits] == pytest.approx(0.1, rel=0.05)
    assert steps[skills] == pytest.approx(1e-3, rel=0.05)


def test_adam_epsilon_is_torchs():
    # NOTE 3: Keras's first Adam step on a gradient g is
    # lr * sqrt(1 - beta2) g / (sqrt(1 - beta2) g + epsilon): for g = 5e-8
    # (a BART's skills at random weights) 0.137 lr at epsilon 1e-8, 0.016 lr
    # at Keras's default 1e-7.
    layer = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
    model = keras.Sequential([keras.Input((1,)), layer])
    model.compile(optimizer=dual_speed_optimizer(
        total_steps=4, learning_rate=1e-3, allocation_learning_rate=None,
        weight_decay=0.0, warmup_fraction=0.0, clipnorm=None), loss="mse")
    # d/dw mean((w x - y)^2) = -2 x y at w = 0: 5e-8 for x = 1, y = -2.5e-8.
    model.train_on_batch(np.ones((1, 1), "float32"), np.full((1, 1), -2.5e-8, "float32"))
    step = float(np.abs(ops.convert_to_numpy(layer.kernel)).max())
    scaled = 0.001 ** 0.5 * 5e-8
    assert step == pytest.approx(1e-3 * scaled / (scaled + 1e-8), rel=0.02)
