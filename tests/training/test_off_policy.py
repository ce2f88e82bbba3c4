"""The fit-driven off-policy loop: learning, truncation, kill and resume."""

import keras
import numpy as np
import pytest

from zoo.metaworld.fake_env import FakeMultiTaskVectorEnv
from tests.training.sac_networks import TinyActor, TinyCritic
from training.off_policy import OffPolicyLoop, ReplayBatches
from training.replay_buffer import TaskReplayBuffer
from training.sac import MultiTaskSAC, sac_optimizer

T, OBS, ACT = 3, 4, 2


def make_sac(seed=0):
    keras.utils.set_random_seed(seed)
    sac = MultiTaskSAC(TinyActor(T, ACT, units=32, name="actor"),
                       TinyCritic(T, units=32), T, OBS, ACT, seed=seed)
    sac.compile(optimizer=sac_optimizer(3e-3, 3e-3, 3e-3))
    return sac


def make_loop(run_dir="", env=None, **kwargs):
    env = env or FakeMultiTaskVectorEnv(T, OBS, ACT, episode_length=10)
    buffer = TaskReplayBuffer(T, 5_000, OBS, ACT)
    options = dict(batch_per_task=32, warmup_steps=50, run_dir=run_dir, seed=0)
    return OffPolicyLoop(env, buffer, **(options | kwargs))


def test_a_short_run_improves_the_return():
    sac, loop = make_sac(), make_loop()
    history = loop.fit(sac, total_env_steps=T * 650, steps_per_epoch=150, verbose=0)
    returns = history.history["episode_return"]
    assert len(returns) == 4
    assert history.history["env_steps"][-1] == T * 650
    # Random actions: about -0.55 per step, -5.5 per 10-step episode.
    assert returns[-1] > returns[0] + 2.0, returns
    assert history.history["success_rate"][-1] > history.history["success_rate"][0]


class MarkedFinalObservation(FakeMultiTaskVectorEnv):
    """final_obs is 99 everywhere, unlike any returned observation."""

    def step(self, actions):
        outputs = super().step(actions)
        if "final_obs" in outputs[4]:
            outputs[4]["final_obs"] = np.full_like(outputs[4]["final_obs"], 99.0)
        return outputs


def test_truncation_stores_the_final_observation_as_next_state():
    env = MarkedFinalObservation(T, OBS, ACT, episode_length=3)
    loop = make_loop(env=env, warmup_steps=7)
    loop.warm_up(model=None)
    assert loop.env_steps == 7 and loop.buffer.sizes.tolist() == [7] * T
    next_observations = loop.buffer.next_observations[:, :7]
    marked = np.all(next_observations == 99.0, axis=-1)
    # Steps 3 and 6 of every environment end an episode (length 3).
    assert marked.tolist() == [[False, False, True, False, False, True, False]] * T
    # The observation after a truncation is the next episode's first.
    assert not np.any(loop.buffer.observations[:, :7] == 99.0)


def test_tasks_that_change_per_episode_store_under_their_episode_task():
    # 2 environments drawing one of 5 tasks per 3-step episode (NOTE 5).
    env = FakeMultiTaskVectorEnv(5, OBS, ACT, episode_length=3, num_envs=2)
    buffer = TaskReplayBuffer(5, 100, OBS, ACT)
    loop = OffPolicyLoop(env, buffer, batch_per_task=4, warmup_steps=30,
                         tasks_per_batch=2, seed=0)
    loop.warm_up(model=None)
    assert loop.buffer.sizes.sum() == 60 and (loop.buffer.sizes > 0).sum() >= 2
    for task in range(5):
        size = loop.buffer.sizes[task]
        actions = loop.buffer.actions[task, :size]
        # The reward of the fake task is -mean((a - c_task)^2): a transition
        # filed under another task than its episode's would not match.
        expected = -np.mean((actions - env.targets[task]) ** 2, axis=-1)
        np.testing.assert_allclose(loop.buffer.rewards[task, :size], expected, rtol=1e-5)
    batch = ReplayBatches(loop, 1)[0]
    assert len(set(batch["task_ids"].tolist())) == 2 and len(batch["task_ids"]) == 8


def test_spaces_that_do_not_match_the_buffer_raise():
    env = FakeMultiTaskVectorEnv(T, OBS + 1, ACT)
    with pytest.raises(ValueError, match="observations of size 5 and actions of "
                                         "size 2; the replay buffer expects 4 and 2"):
        make_loop(env=env)


def test_killed_run_resumes_with_weights_buffer_steps_and_random_state(tmp_path):
    run_dir = str(tmp_path / "run")
    checkpoint = {}

    class KillInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            checkpoint["weights"] = [w.copy() for w in self.model.get_weights()]

        def on_train_batch_begin(self, batch, logs=None):
            if checkpoint.get("weights") is not None and batch == 3:
                raise KeyboardInterrupt

    sac, loop = make_sac(), make_loop(run_dir)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(sac, total_env_steps=T * 250, steps_per_epoch=100, verbose=0,
                 callbacks=[KillInSecondEpoch()])
    saved_sizes = TaskReplayBuffer.load(f"{run_dir}/replay_buffer.npz").sizes.tolist()
    assert saved_sizes == [150] * T  # warm-up 50 + one epoch of 100 steps

    resumed_sac, resumed = make_sac(seed=1), make_loop(run_dir)
    assert resumed.resumed_from_env_step == T * 150
    assert resumed.buffer.sizes.tolist() == saved_sizes
    assert resumed.env_steps == 150
    started = {}

    class RecordStart(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.setdefault("epoch", epoch)
            started.setdefault("weights", self.model.get_weights())

    history = resumed.fit(resumed_sac, total_env_steps=T * 250, steps_per_epoch=100,
                          verbose=0, callbacks=[RecordStart()])
    assert started["epoch"] == 1
    for restored, saved in zip(started["weights"], checkpoint["weights"], strict=True):
        np.testing.assert_allclose(restored, saved)
    assert resumed.env_steps == 250 and history.history["env_steps"] == [T * 250]
