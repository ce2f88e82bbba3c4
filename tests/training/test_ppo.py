"""PPO: the losses of one batch against NumPy, GAE on a hand-made
trajectory with termination and truncation, the recurrent unroll, config."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.training.ppo_fixtures import TinyPolicy, TinyRecurrentPolicy
from training import backend
from training.ppo import PPO, generalized_advantages, ppo_optimizer

T, OBS, ACTIONS, BATCH = 2, 3, 4, 16


def _batch(rng, leading=(BATCH,)):
    return {
        "observations": rng.normal(size=leading + (OBS,)).astype("float32"),
        "task_ids": rng.integers(0, T, leading).astype("int32"),
        "actions": rng.integers(0, ACTIONS, leading).astype("int32"),
        "log_probs": np.log(rng.uniform(0.1, 0.5, leading)).astype("float32"),
        "values": rng.normal(size=leading).astype("float32"),
        "advantages": rng.normal(size=leading).astype("float32"),
        "returns": rng.normal(size=leading).astype("float32"),
    }


def _numpy_policy(policy, observations, task_ids):
    weights = [np.asarray(ops.convert_to_numpy(w), "float64") for w in policy.weights]
    hidden_kernel, hidden_bias, logit_kernel, logit_bias, value_kernel, value_bias = weights
    features = np.concatenate([observations, np.eye(T)[task_ids]], -1)
    hidden = np.tanh(features @ hidden_kernel + hidden_bias)
    return hidden @ logit_kernel + logit_bias, (hidden @ value_kernel + value_bias)[:, 0]


@pytest.mark.parametrize("normalize", [False, True])
def test_losses_match_numpy(normalize):
    rng = np.random.default_rng(0)
    ppo = PPO(TinyPolicy(T, ACTIONS), ACTIONS, normalize_advantages=normalize)
    batch = _batch(rng)
    ppo(batch)
    logits, values = _numpy_policy(ppo.policy, batch["observations"], batch["task_ids"])
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    log_probs = log_softmax[np.arange(BATCH), batch["actions"]]
    entropy = -(np.exp(log_softmax) * log_softmax).sum(-1).mean()
    advantages = batch["advantages"].astype("float64")
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = np.exp(log_probs - batch["log_probs"])
    policy_loss = -np.minimum(ratio * advantages,
                              np.clip(ratio, 0.8, 1.2) * advantages).mean()
    clipped = batch["values"] + np.clip(values - batch["values"], -0.2, 0.2)
    value_loss = np.maximum((values - batch["returns"]) ** 2,
                            (clipped - batch["returns"]) ** 2).mean()
    expected = policy_loss + 0.5 * value_loss - 0.01 * entropy

    variables = backend.step_variables(ppo)
    tensors = {k: ops.convert_to_tensor(v) for k, v in batch.items()}
    total, (logs, _) = ppo.ppo_losses([v.value for v in variables.trainable],
                                      [v.value for v in variables.non_trainable], tensors)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(logs["policy_loss"]), policy_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(logs["value_loss"]), value_loss, rtol=1e-5)
    np.testing.assert_allclose(float(logs["entropy"]), entropy, rtol=1e-5)
    # The clipping binds for some rows: the check has teeth.
    assert np.any(np.abs(ratio - 1) > 0.2) or np.any(np.abs(values - batch["values"]) > 0.2)


def test_gae_by_hand_with_termination_and_truncation():
    # One environment, 4 steps: step 1 terminates, step 3 is cut by a time
    # limit (next value 5.0 of the final observation, bootstrapped).
    rewards = np.array([[1.0], [2.0], [0.5], [1.0]])
    values = np.array([[0.5], [1.0], [2.0], [3.0]])
    next_values = np.array([[1.0], [99.0], [3.0], [5.0]])  # 99: masked (terminal)
    terminations = np.array([[False], [True], [False], [False]])
    episode_ends = np.array([[False], [True], [False], [True]])
    gamma, lam = 0.9, 0.8
    advantages, returns = generalized_advantages(
        rewards, values, next_values, terminations, episode_ends, gamma, lam)
    delta3 = 1.0 + 0.9 * 5.0 - 3.0
    delta2 = 0.5 + 0.9 * 3.0 - 2.0
    delta1 = 2.0 - 1.0
    delta0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = [delta0 + gamma * lam * delta1, delta1,
                delta2 + gamma * lam * delta3, delta3]
    np.testing.assert_allclose(advantages[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(returns, advantages + values, rtol=1e-6)
    with pytest.raises(ValueError, match="values has shape"):
        generalized_advantages(rewards, values[:3], next_values, terminations, episode_ends)


def test_a_train_step_lowers_the_loss_and_logs():
    rng = np.random.default_rng(1)
    ppo = PPO(TinyPolicy(T, ACTIONS), ACTIONS)
    ppo.compile(optimizer=ppo_optimizer(1e-2))
    batch = _batch(rng)
    first = ppo.train_on_batch(batch, return_dict=True)
    for _ in range(20):
        last = ppo.train_on_batch(batch, return_dict=True)
    assert last["value_loss"] < first["value_loss"]
    assert set(first) == {"policy_loss", "value_loss", "entropy", "approx_kl",
                          "clip_fraction"}


def test_recurrent_unroll_matches_a_step_by_step_loop():
    rng = np.random.default_rng(2)
    length = 3
    ppo = PPO(TinyRecurrentPolicy(T, ACTIONS, memory_size=5), ACTIONS, recurrence=length)
    batch = _batch(rng, (4, length))
    batch["memory"] = rng.normal(size=(4, 5)).astype("float32")
    batch["masks"] = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1]], "float32")
    ppo(batch)
    numpy = lambda tensor: ops.convert_to_numpy(ops.stop_gradient(tensor))  # noqa: E731
    logits, values = ppo._unrolled({k: ops.convert_to_tensor(v) for k, v in batch.items()})
    memory = batch["memory"]
    for step in range(length):
        memory = memory * batch["masks"][:, step:step + 1]
        step_logits, step_values, memory = ppo.policy(
            (batch["observations"][:, step], batch["task_ids"][:, step], memory))
        memory = numpy(memory)
        np.testing.assert_allclose(numpy(logits[:, step]), numpy(step_logits), atol=1e-6)
        np.testing.assert_allclose(numpy(values[:, step]), numpy(step_values)[:, 0],
                                   atol=1e-6)
    ppo.compile(optimizer=ppo_optimizer(1e-3))
    logs = ppo.train_on_batch(batch, return_dict=True)
    assert np.isfinite(logs["policy_loss"])


def test_allocation_logits_get_their_own_optimizer():
    optimizer = ppo_optimizer(1e-4, allocation_learning_rate=0.1)
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)


def test_config_round_trip_and_bad_arguments():
    ppo = PPO(TinyPolicy(T, ACTIONS), ACTIONS, clip_ratio=0.1, entropy_coefficient=0.02)
    clone = PPO.from_config(ppo.get_config())
    assert clone.clip_ratio == 0.1 and clone.entropy_coefficient == 0.02
    assert clone.policy.num_actions == ACTIONS
    with pytest.raises(ValueError, match="num_actions must be >= 2"):
        PPO(TinyPolicy(T, ACTIONS), 1)
    with pytest.raises(ValueError, match="memory_size"):
        PPO(TinyPolicy(T, ACTIONS), ACTIONS, recurrence=4)
    ppo = PPO(TinyPolicy(T, ACTIONS), ACTIONS + 1)
    with pytest.raises(ValueError, match="logits have 4 actions; num_actions is 5"):
        ppo(_batch(np.random.default_rng(0)))
