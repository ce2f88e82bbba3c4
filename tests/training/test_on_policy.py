"""OnPolicyLoop: PPO through `model.fit` on a tiny discrete multi-task
environment: the return improves, rollouts are arranged as the loop says,
a killed run resumes with its weights, step count and random state."""

import json

import keras
import numpy as np
import pytest

from tests.training.ppo_fixtures import (FakeDiscreteTaskEnv, TinyPolicy,
                                         TinyRecurrentPolicy)
from training.on_policy import OnPolicyLoop
from training.ppo import PPO, ppo_optimizer

ENVS, T, ACTIONS = 4, 2, 4


def make_ppo(recurrent=False, seed=0):
    keras.utils.set_random_seed(seed)
    policy = (TinyRecurrentPolicy(T, ACTIONS, memory_size=8) if recurrent
              else TinyPolicy(T, ACTIONS))
    ppo = PPO(policy, ACTIONS, recurrence=4 if recurrent else 1, entropy_coefficient=0.0)
    ppo.compile(optimizer=ppo_optimizer(1e-2))
    return ppo


def make_loop(run_dir="", **kwargs):
    options = dict(rollout_steps=16, update_epochs=4, minibatch_size=32, lam=0.95,
                   run_dir=run_dir, seed=0, task_ids=np.arange(ENVS) % T)
    return OnPolicyLoop(FakeDiscreteTaskEnv(ENVS, T, num_actions=ACTIONS),
                        **(options | kwargs))


@pytest.mark.parametrize("recurrent", [False, True])
def test_a_short_run_improves_success(recurrent):
    ppo = make_ppo(recurrent)
    loop = make_loop(recurrence=4 if recurrent else 1)
    history = loop.fit(ppo, total_env_steps=ENVS * 16 * 30, verbose=0)
    success = history.history["success_rate"]
    assert len(success) == 30 and history.history["env_steps"][-1] == ENVS * 16 * 30
    # A random policy solves a step with probability 1/4 (0.82 of 6-step
    # episodes succeed); the learned greedy policy takes every task's action.
    returns = history.history["episode_return"]
    # Random: about 0.54 per episode; the best possible 1 - 0.9 / 6 = 0.85.
    assert returns[0] < 0.65 and np.mean(returns[-5:]) > 0.75, returns
    observations = np.random.default_rng(9).normal(size=(8, 3)).astype("float32")
    for task in range(T):
        task_ids = np.full(8, task, "int32")
        inputs = ((observations, task_ids, np.zeros((8, 8), "float32")) if recurrent
                  else (observations, task_ids))
        greedy = keras.ops.convert_to_numpy(ppo(inputs))
        # Chance is 1/4; observations are noise the policy must learn to ignore.
        assert np.mean(greedy == loop.env.targets[task]) >= 0.75, (task, greedy)
    assert loop.rollout["actions"].shape[0] == 64 // (4 if recurrent else 1)


def test_rollout_arrangement_and_minibatches():
    ppo = make_ppo(recurrent=True)
    loop = make_loop(recurrence=4, minibatch_size=8)
    ppo(_placeholder_batch(loop, ppo))
    loop.collect(ppo)
    # 16 steps x 4 envs in chunks of 4: 16 chunks, 2 per minibatch.
    assert loop.rollout["observations"].shape == (16, 4, 3)
    assert loop.rollout["memory"].shape == (16, 8) and loop.num_minibatches == 8
    batch = loop.minibatch(9)  # second pass, second minibatch
    assert batch["actions"].shape == (2, 4) and batch["masks"].shape == (2, 4)
    assert loop.env_steps == 16
    # Every chunk of one pass appears once.
    rows = np.concatenate([loop._orders[0][i * 2:(i + 1) * 2] for i in range(8)])
    assert sorted(rows.tolist()) == list(range(16))


def _placeholder_batch(loop, ppo):
    loop._placeholder(ppo)
    return loop.minibatch(0)


def test_killed_run_resumes_with_weights_steps_and_random_state(tmp_path):
    class Kill(keras.callbacks.Callback):  # during the third iteration
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    run_dir = str(tmp_path / "run")
    ppo, loop = make_ppo(), make_loop(run_dir)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(ppo, total_env_steps=ENVS * 16 * 4, callbacks=[Kill()], verbose=0)
    # The third rollout was collected when the kill came: it is not saved.
    assert loop.env_steps == 48
    saved_steps = 32
    weights_at_kill = [w.copy() for w in ppo.get_weights()]

    resumed_ppo = make_ppo(seed=5)
    resumed = make_loop(run_dir)
    assert resumed.env_steps == saved_steps and resumed.resumed_from_env_step == ENVS * 32
    # The random state of the checkpoint (not the killed loop's later one).
    with open(tmp_path / "run" / "loop_state.json") as file:
        saved = json.load(file)
    assert resumed.action_rng.bit_generator.state == saved["action_rng"]
    assert resumed.sample_rng.bit_generator.state == saved["sample_rng"]
    assert resumed.action_rng.bit_generator.state != loop.action_rng.bit_generator.state
    # The episodes finished before the checkpoint, and only those, come back.
    before = loop.episode_records[loop.episode_records[:, 0] <= ENVS * saved_steps]
    assert len(before) and len(before) < len(loop.episode_records)
    np.testing.assert_array_equal(resumed.episode_records, before)

    class FirstCollection(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = getattr(self, "epoch", epoch)
            self.weights = getattr(self, "weights", None) or [
                w.copy() for w in resumed_ppo.get_weights()]

    first = FirstCollection()
    history = resumed.fit(resumed_ppo, total_env_steps=ENVS * 16 * 4,
                          callbacks=[first], verbose=0)
    assert first.epoch == 2 and len(history.history["env_steps"]) == 2
    for restored, saved in zip(first.weights, weights_at_kill):
        np.testing.assert_allclose(restored, saved, rtol=1e-6)
    assert resumed.env_steps == 64


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="multiple of recurrence"):
        make_loop(rollout_steps=10, recurrence=4)
    with pytest.raises(ValueError, match="does not divide"):
        make_loop(minibatch_size=24)
    with pytest.raises(ValueError, match="rollout_steps must be a positive int"):
        make_loop(rollout_steps=0)

    class Continuous(FakeDiscreteTaskEnv):
        def __init__(self):
            super().__init__()
            import gymnasium
            self.single_action_space = gymnasium.spaces.Box(-1, 1, (2,))

    with pytest.raises(ValueError, match="discrete action space"):
        OnPolicyLoop(Continuous())
    loop = make_loop()
    with pytest.raises(ValueError, match="The model has 5 actions; the environment 4"):
        loop.fit(PPO(TinyPolicy(T, 5), 5), total_env_steps=64, verbose=0)


def test_success_reported_only_in_final_info_counts():
    # Gymnasium's SAME_STEP autoreset: the ending step's infos are in
    # final_info; the top level holds the new episode's (env_loop NOTE 4).
    class ResetInfos(FakeDiscreteTaskEnv):
        def step(self, actions):
            observations, rewards, terms, truncs, infos = super().step(actions)
            ended = terms | truncs
            infos["final_info"] = {"success": infos["success"].copy(), "_success": ended}
            infos["success"] = np.zeros(self.num_envs, bool)
            return observations, rewards, terms, truncs, infos

    loop = OnPolicyLoop(ResetInfos(ENVS, T, num_actions=ACTIONS), rollout_steps=16,
                        minibatch_size=32, task_ids=np.arange(ENVS) % T)
    ppo = make_ppo()
    loop._placeholder(ppo)
    ppo(loop.minibatch(0))
    loop.collect(ppo)
    # A random policy solves about 0.82 of the 6-step episodes.
    assert loop.progress()["success_rate"] > 0.5


def test_bootstrapped_truncation_adds_the_final_value_at_every_cut():
    # With V(final_obs) = 7 everywhere, an advantage at a cut step (the end
    # of its episode, so delta only) gains exactly gamma * 7 over the run
    # that treats the cut as terminal (NOTE 1); earlier steps of that
    # episode gain less, (gamma lam)^k gamma 7.
    class CountingEnv(FakeDiscreteTaskEnv):
        cuts = 0

        def step(self, actions):
            outputs = super().step(actions)
            self.cuts += int(np.sum(outputs[3] & ~outputs[2]))
            return outputs

    advantages = {}
    for bootstrap in (False, True):
        ppo = make_ppo()
        ppo.values_of = lambda *args, **kwargs: np.full(ENVS, 7.0, "float32")
        env = CountingEnv(ENVS, T, num_actions=ACTIONS, episode_length=3)
        loop = OnPolicyLoop(env, rollout_steps=16, minibatch_size=32, lam=0.5,
                            bootstrap_truncation=bootstrap, task_ids=np.arange(ENVS) % T)
        loop._placeholder(ppo)
        ppo(loop.minibatch(0))
        loop.collect(ppo)
        advantages[bootstrap] = loop.rollout["advantages"]
    gain = advantages[True] - advantages[False]
    assert env.cuts > 0
    assert np.sum(np.isclose(gain, 0.99 * 7.0, atol=1e-4)) == env.cuts
    assert np.all(gain > -1e-5) and gain.max() < 0.99 * 7.0 + 1e-4
