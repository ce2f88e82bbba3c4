"""Off-policy training driven by `model.fit`: replay batches in, environment
steps from a callback, resumable.

    buffer = TaskReplayBuffer(num_tasks, capacity, obs_dim, act_dim)
    loop = OffPolicyLoop(env, buffer, batch_per_task=128, warmup_steps=1000,
                         run_dir="runs/x")
    history = loop.fit(sac, total_env_steps=100_000, steps_per_epoch=1000)

One `fit` step is one update of the model on a task-balanced replay batch
(`ReplayBatches`); after each update the `EnvironmentStepper` callback steps
the vector environment once (one transition per task environment) with the
policy's current weights and adds the transitions to the buffer. Before the
first update `warmup_steps` vector steps of uniform random actions fill the
buffer. Progress shows in fit's bar and `History` (the model's losses plus
`env_steps`, `episode_return`, `success_rate` of finished episodes).

Resume: at the end of every epoch the buffer, the environment step count
and the loop's random state are saved to `run_dir` (atomically), then
`keras.callbacks.BackupAndRestore` saves weights and optimizer; a killed run
restarts from the last finished epoch with all of them, so nothing collected
before that checkpoint is lost.

The environment, its tasks, the episode statistics, compiled acting and
the checkpoint are `training/env_loop.py`'s, shared with the on-policy
loop (its NOTE 1: acting with live values; NOTE 2: tasks per episode from
`info["task_id"]`; NOTE 3: what a resume cannot restore).

NOTE 1 (truncation): at an autoreset, gymnasium's vector environments
  (autoreset mode SAME_STEP, Meta-World 3) return the first observation of
  the next episode and the true last one in `info["final_obs"]` (mask
  `info["_final_obs"]`); that one is stored as the next observation. There
  is no done mask (training/sac.py NOTE 1).
NOTE 2 (threads): the TensorFlow backend draws batches on a tf.data thread
  ahead of the step; the buffer is shared under a lock.
"""

import os
import threading

import keras
import numpy as np
from keras import ops

from training import backend
from training.env_loop import EnvironmentLoop, LoopCallback

_BUFFER_FILE = "replay_buffer.npz"


class ReplayBatches(keras.utils.PyDataset):
    """`steps_per_epoch` task-balanced replay batches per epoch."""

    def __init__(self, loop, steps_per_epoch):
        super().__init__(workers=1, use_multiprocessing=False)
        self.loop = loop
        self.steps_per_epoch = steps_per_epoch

    def __len__(self):
        return self.steps_per_epoch

    def __getitem__(self, index):
        with self.loop.lock:  # NOTE 2
            return self.loop.buffer.sample(self.loop.batch_per_task,
                                           self.loop.sample_rng,
                                           self.loop.tasks_per_batch)


class EnvironmentStepper(LoopCallback):
    """Steps the environment once after every update with the acting
    model's live values (env_loop NOTE 1); checkpoints every epoch."""

    def on_train_batch_end(self, batch, logs=None):
        self.loop.env_step(self.acting_model)
        if logs is not None:
            logs.update(self.loop.progress())


class OffPolicyLoop(EnvironmentLoop):
    """The environment side of off-policy training (module docstring).

    Args:
        env: a gymnasium vector environment whose environment i is task
            `task_ids[i]` (default: environment i is task i).
        buffer: a `training.replay_buffer.TaskReplayBuffer`.
        batch_per_task: transitions of every task per update.
        warmup_steps: vector steps of random actions before the first update.
        run_dir: where the loop state and the buffer are checkpointed ("" for
            none).
        seed: seed of the actions' noise, the warm-up and the sampling.
        task_ids: the task of each environment (env_loop NOTE 2).
        tasks_per_batch: None (every task in every batch) or the number of
            tasks drawn per batch (`TaskReplayBuffer.sample`).
    """

    rng_names = ("action_rng", "sample_rng")

    def __init__(self, env, buffer, batch_per_task=128, warmup_steps=1000,
                 run_dir="", seed=0, task_ids=None, tasks_per_batch=None):
        super().__init__(env, run_dir=run_dir, seed=seed, task_ids=task_ids)
        self.buffer = buffer
        self.batch_per_task = int(batch_per_task)
        self.tasks_per_batch = None if tasks_per_batch is None else int(tasks_per_batch)
        self.warmup_steps = int(warmup_steps)
        self._check_spaces()
        self.lock = threading.Lock()
        self.restore_if_saved()

    def _check_spaces(self):
        observation_dim = int(np.prod(self.env.single_observation_space.shape))
        action_dim = int(np.prod(self.env.single_action_space.shape))
        expected = (self.buffer.observation_dim, self.buffer.action_dim)
        if (observation_dim, action_dim) != expected:
            raise ValueError(
                f"The environment has observations of size {observation_dim} "
                f"and actions of size {action_dim}; the replay buffer expects "
                f"{expected[0]} and {expected[1]}.")

    # -- Acting. -----------------------------------------------------------------
    def _policy_actions(self, model):
        trainable, non_trainable = backend.live_values(model)  # env_loop NOTE 1
        noise = self.action_rng.standard_normal(
            (self.num_envs, self.buffer.action_dim)).astype(np.float32)
        actions = self.compiled_act(model)(trainable, non_trainable, self._observations,
                                           self.task_ids, noise)
        return np.asarray(ops.convert_to_numpy(actions), np.float32)

    def _step(self, actions):
        next_observations, rewards, terminations, truncations, infos = self.env.step(actions)
        next_observations = self.prepare_observations(next_observations)
        stored_next = next_observations.copy()
        if "final_obs" in infos:  # NOTE 1
            mask = np.asarray(infos.get("_final_obs", np.zeros(self.num_envs, bool)))
            for index in np.flatnonzero(mask):
                stored_next[index] = infos["final_obs"][index]
        with self.lock:
            self.buffer.add(self._observations, actions, rewards, stored_next,
                            self.task_ids)
        self.record_episodes(rewards, terminations, truncations, infos)
        self._observations = next_observations
        self.read_task_ids(infos)  # after storing: the ended episodes' tasks
        self.env_steps += 1

    def warm_up(self, model):
        self.reset()
        while self.env_steps < self.warmup_steps or not self._can_sample():
            low = self.env.single_action_space.low
            high = self.env.single_action_space.high
            self._step(self.action_rng.uniform(
                low, high, (self.num_envs,) + low.shape).astype(np.float32))

    def _can_sample(self):
        sizes = np.asarray(self.buffer.sizes)
        if self.tasks_per_batch is None:
            return sizes.min() > 0
        return np.count_nonzero(sizes) >= self.tasks_per_batch

    def env_step(self, model):
        self._step(self._policy_actions(model))

    # -- Checkpoints: the buffer beside the loop state. ----------------------------
    def save_arrays(self):
        with self.lock:
            self.buffer.save(os.path.join(self.run_dir, _BUFFER_FILE))

    def load_arrays(self):
        self.buffer.load_state_dict(
            type(self.buffer).load(os.path.join(self.run_dir, _BUFFER_FILE)).state_dict())

    # -- Training. ---------------------------------------------------------------
    def fit(self, model, total_env_steps, steps_per_epoch=1000, callbacks=(),
            verbose="auto"):
        """Trains `model` until `total_env_steps` environment steps (over all
        task environments, warm-up included); returns fit's `History`."""
        vector_steps = -(-int(total_env_steps) // self.num_envs)
        updates = max(0, vector_steps - max(self.warmup_steps, 1))
        epochs = max(1, -(-updates // int(steps_per_epoch)))
        # Before fit: TensorFlow's data adapter draws a first batch to learn
        # its structure when fit starts, so the buffer must hold every task.
        self.warm_up(model)
        return self.run_fit(model, ReplayBatches(self, int(steps_per_epoch)), epochs,
                            [EnvironmentStepper(self, model), *callbacks], verbose)
