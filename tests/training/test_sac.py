"""MultiTaskSAC: the losses against NumPy, targets, temperatures, saving."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from tests.harness import assert_same_across_backends
from tests.training.sac_networks import TinyActor, TinyCritic
from training import value_and_grad
from training.sac import MultiTaskSAC, sac_optimizer

T, OBS, ACT, N = 3, 4, 2, 12


def make_sac(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    sac = MultiTaskSAC(TinyActor(T, ACT, name="actor"), TinyCritic(T), T, OBS, ACT,
                       seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    for variable in sac.trainable_variables:  # non-zero log_alpha too
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.5)
    for critic, target in zip(sac.critics, sac.target_critics):
        target.set_weights([w + 0.1 for w in critic.get_weights()])
    return sac


def make_batch(seed=1, task_ids=None):
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(N, OBS)).astype("float32"),
        "actions": rng.uniform(-0.9, 0.9, (N, ACT)).astype("float32"),
        "rewards": rng.normal(size=N).astype("float32"),
        "next_observations": rng.normal(size=(N, OBS)).astype("float32"),
        "task_ids": (np.arange(N) % T if task_ids is None else task_ids).astype("int32"),
    }


# -- NumPy reference. -----------------------------------------------------------
def weights_of(network):
    return {w.path.split("/", 1)[1]: ops.convert_to_numpy(w) for w in network.weights}


def dense(x, weights, name, relu=False):
    y = x @ weights[f"{name}/kernel"] + weights[f"{name}/bias"]
    return np.maximum(y, 0) if relu else y


def actor_np(weights, obs, task_ids):
    hidden = dense(np.concatenate([obs, np.eye(T)[task_ids]], -1), weights, "hidden", True)
    return dense(hidden, weights, "mean"), dense(hidden, weights, "log_std")


def critic_np(weights, obs, actions, task_ids):
    features = np.concatenate([obs, actions, np.eye(T)[task_ids]], -1)
    return dense(dense(features, weights, "hidden", True), weights, "q")[:, 0]


def squash_np(mean, log_std, noise):
    log_std = np.clip(log_std, -20, 2)
    pre = mean + np.exp(log_std) * noise
    action = np.tanh(pre)
    # log(1 - tanh(u)^2), in float64 and written so that it stays finite.
    log_det = np.log(4.0) - 2.0 * np.logaddexp(pre, -pre)
    log_prob = (-0.5 * noise ** 2 - log_std - 0.5 * math.log(2 * math.pi)
                - log_det).sum(-1)
    return action, log_prob


def sac_losses_np(sac, batch, next_noise, noise, gamma=0.99):
    actor = weights_of(sac.actor)
    critics = [weights_of(c) for c in sac.critics]
    targets = [weights_of(t) for t in sac.target_critics]
    log_alpha = ops.convert_to_numpy(sac.log_alpha)
    task = batch["task_ids"]
    alpha = np.exp(log_alpha)[task]
    weights = (T * np.exp(-log_alpha) / np.exp(-log_alpha).sum())[task] \
        if sac.loss_balancing else np.ones(N)
    next_actions, next_log_prob = squash_np(*actor_np(actor, batch["next_observations"], task),
                                            next_noise)
    next_q = np.minimum(*[critic_np(t, batch["next_observations"], next_actions, task)
                          for t in targets])
    y = batch["rewards"] + gamma * (next_q - alpha * next_log_prob)
    q = [critic_np(c, batch["observations"], batch["actions"], task) for c in critics]
    critic_loss = np.mean(weights * 0.5 * ((q[0] - y) ** 2 + (q[1] - y) ** 2))
    actions, log_prob = squash_np(*actor_np(actor, batch["observations"], task), noise)
    policy_q = np.minimum(*[critic_np(c, batch["observations"], actions, task)
                            for c in critics])
    actor_loss = np.mean(weights * (alpha * log_prob - policy_q))
    alpha_loss = np.mean(-log_alpha[task] * (log_prob - ACT))
    alpha_grad = np.array([-(log_prob[task == k] - ACT).sum() / N for k in range(T)])
    return {"critic_loss": critic_loss, "actor_loss": actor_loss,
            "alpha_loss": alpha_loss, "alpha_grad": alpha_grad}


@pytest.mark.parametrize("loss_balancing", [False, True])
def test_losses_and_temperature_gradient_match_numpy(loss_balancing):
    sac = make_sac(loss_balancing=loss_balancing)
    batch = make_batch()
    rng = np.random.default_rng(2)
    next_noise = rng.normal(size=(N, ACT)).astype("float32")
    noise = rng.normal(size=(N, ACT)).astype("float32")
    expected = sac_losses_np(sac, batch, next_noise, noise)
    trainable = [v.value for v in sac.trainable_variables]
    non_trainable = [v.value for v in sac.non_trainable_variables]
    (total, (logs, _)), grads = value_and_grad(sac.sac_losses, has_aux=True)(
        trainable, non_trainable, batch, next_noise, noise)
    for name in ("critic_loss", "actor_loss", "alpha_loss"):
        np.testing.assert_allclose(float(logs[name]), expected[name], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        float(total), expected["critic_loss"] + expected["actor_loss"]
        + expected["alpha_loss"], rtol=1e-4, atol=1e-4)
    # Temperatures receive only the gradient of their own loss (NOTE 2).
    alpha_index = [id(v) for v in sac.trainable_variables].index(id(sac.log_alpha))
    np.testing.assert_allclose(ops.convert_to_numpy(grads[alpha_index]),
                               expected["alpha_grad"], rtol=1e-4, atol=1e-4)


def test_critics_get_only_the_critic_loss_gradient():
    """The actor loss reaches the critics through stop_gradient: the
    critics' gradient of the summed losses equals that of the critic loss."""
    sac = make_sac()
    batch = make_batch()
    noise = np.random.default_rng(3).normal(size=(2, N, ACT)).astype("float32")
    trainable = [v.value for v in sac.trainable_variables]
    non_trainable = [v.value for v in sac.non_trainable_variables]

    def critic_only(values):
        _, (logs, _) = sac.sac_losses(values, non_trainable, batch, *noise)
        return logs["critic_loss"]

    _, all_grads = value_and_grad(sac.sac_losses, has_aux=True)(
        trainable, non_trainable, batch, *noise)
    _, critic_grads = value_and_grad(critic_only)(trainable)
    critic_ids = {id(v) for c in sac.critics for v in c.trainable_variables}
    checked = 0
    for variable, total, own in zip(sac.trainable_variables, all_grads, critic_grads):
        if id(variable) in critic_ids:
            np.testing.assert_allclose(ops.convert_to_numpy(total),
                                       ops.convert_to_numpy(own), rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked == 8


def test_one_fit_step_moves_targets_by_exactly_tau_and_only_present_temperatures():
    sac = make_sac(tau=0.25)
    sac.compile(optimizer=sac_optimizer())
    batch = make_batch(task_ids=np.zeros(N))  # task 0 only
    old_targets = [t.get_weights() for t in sac.target_critics]
    old_log_alpha = ops.convert_to_numpy(sac.log_alpha).copy()
    old_actor = sac.actor.get_weights()
    sac.fit(batch, batch_size=N, epochs=1, verbose=0, shuffle=False)
    for critic, target, old in zip(sac.critics, sac.target_critics, old_targets):
        for new_critic, new_target, old_target in zip(
                critic.get_weights(), target.get_weights(), old):
            np.testing.assert_allclose(new_target, 0.25 * new_critic + 0.75 * old_target,
                                       rtol=1e-5, atol=1e-6)
    new_log_alpha = ops.convert_to_numpy(sac.log_alpha)
    assert new_log_alpha[0] != old_log_alpha[0]
    np.testing.assert_array_equal(new_log_alpha[1:], old_log_alpha[1:])
    # Adam's first step moves each coordinate by about its learning rate.
    np.testing.assert_allclose(abs(new_log_alpha[0] - old_log_alpha[0]), 3e-4, rtol=0.05)
    assert any(not np.allclose(a, b) for a, b in zip(sac.actor.get_weights(), old_actor))


def test_sampled_actions_are_squashed_and_saving_round_trips(tmp_path):
    sac = make_sac()
    batch = make_batch()
    sampled = ops.convert_to_numpy(sac.sample_action(batch))
    assert sampled.shape == (N, ACT) and np.all(np.abs(sampled) <= 1)  # float32 tanh may round to 1
    deterministic = ops.convert_to_numpy(sac((batch["observations"], batch["task_ids"])))
    sac.save(tmp_path / "sac.keras")
    loaded = keras.saving.load_model(tmp_path / "sac.keras")
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded((batch["observations"], batch["task_ids"]))),
        deterministic, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded.log_alpha),
                               ops.convert_to_numpy(sac.log_alpha))
    for target, loaded_target in zip(sac.target_critics, loaded.target_critics):
        for a, b in zip(target.get_weights(), loaded_target.get_weights()):
            np.testing.assert_allclose(a, b)


CROSS_BACKEND_SNIPPET = """
import json
import numpy as np
from keras import ops
from tests.training.test_sac import make_batch, make_sac

sac = make_sac(loss_balancing=True)
rng = np.random.default_rng(4)
noise = rng.normal(size=(2, 12, 2)).astype("float32")
trainable = [v.value for v in sac.trainable_variables]
non_trainable = [v.value for v in sac.non_trainable_variables]
_, (logs, _) = sac.sac_losses(trainable, non_trainable, make_batch(), *noise)
print(json.dumps({{k: float(v) for k, v in logs.items()}}))
"""


def test_same_losses_on_every_backend():
    here = assert_same_across_backends(CROSS_BACKEND_SNIPPET, atol=1e-4, rtol=1e-4)
    assert here["critic_loss"] > 0
