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

NOTE 1 (acting inside fit, speed): the policy reads the step's current
  values (`backend.live_values`) rather than syncing the trainer's state
  into the variables at every environment step (on JAX, Keras's
  `Callback.model` property syncs at every access, so the callback keeps
  its own reference), and `model.act` runs compiled
  (`backend.compile_function`): eager it cost 7.5 ms per vector step, as
  much as stepping the ten MT10 environments (measured with cProfile,
  JAX, 400 steps).
NOTE 2 (truncation): at an autoreset, gymnasium's vector environments
  (autoreset mode SAME_STEP, Meta-World 3) return the first observation of
  the next episode and the true last one in `info["final_obs"]` (mask
  `info["_final_obs"]`); that one is stored as the next observation. There
  is no done mask (training/sac.py NOTE 1).
NOTE 3 (what a resume cannot restore): the environments' own simulator
  state is not saved; a resumed run resets them, so the episodes that were
  running at the checkpoint start over.
NOTE 4 (threads): the TensorFlow backend draws batches on a tf.data thread
  ahead of the step; the buffer is shared under a lock.
NOTE 5 (tasks that change per episode): an environment whose infos carry
  `task_id` (one int per environment, at reset and at every step; with
  SAME_STEP autoreset the ids of the episodes that just began) sets each
  environment's task; transitions are stored under the task of the
  episode they belong to. Without it environment i is `task_ids[i]`.
"""

import json
import os
import threading

import keras
import numpy as np
from keras import ops

from training import backend

_STATE_FILE = "loop_state.json"
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
        with self.loop.lock:
            return self.loop.buffer.sample(self.loop.batch_per_task,
                                           self.loop.sample_rng,
                                           self.loop.tasks_per_batch)


class EnvironmentStepper(keras.callbacks.Callback):
    """Steps the environment once after every update with `model`'s live
    values (NOTE 1)."""

    def __init__(self, loop, model):
        super().__init__()
        self.loop = loop
        # Not `self.model`: on JAX that property writes the whole trainer
        # state back into the variables at every access (NOTE 1).
        self.acting_model = model

    def on_train_batch_end(self, batch, logs=None):
        self.loop.env_step(self.acting_model)
        if logs is not None:
            logs.update(self.loop.progress())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.loop.progress(epoch_end=True))
        self.loop.save_checkpoint()


class OffPolicyLoop:
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
        task_ids: the task of each environment (NOTE 5).
        tasks_per_batch: None (every task in every batch) or the number of
            tasks drawn per batch (`TaskReplayBuffer.sample`).
    """

    def __init__(self, env, buffer, batch_per_task=128, warmup_steps=1000,
                 run_dir="", seed=0, task_ids=None, tasks_per_batch=None):
        self.env = env
        self.buffer = buffer
        self.batch_per_task = int(batch_per_task)
        self.tasks_per_batch = None if tasks_per_batch is None else int(tasks_per_batch)
        self.warmup_steps = int(warmup_steps)
        self.run_dir = run_dir
        self.seed = int(seed)
        self.num_envs = int(env.num_envs)
        self.task_ids = (np.arange(self.num_envs, dtype=np.int32) if task_ids is None
                         else np.asarray(task_ids, np.int32))
        self._check_spaces()
        self.lock = threading.Lock()
        self.env_steps = 0            # vector steps taken
        self.resumed_from_env_step = None
        self.action_rng = np.random.default_rng(self.seed)
        self.sample_rng = np.random.default_rng(self.seed + 1)
        self._observations = None
        self._act = self._acting_model = None
        self._episode_returns = np.zeros(self.num_envs)
        self._episode_success = np.zeros(self.num_envs, bool)
        self._finished_returns, self._finished_success = [], []
        self._epoch_returns, self._epoch_success = [], []
        if run_dir and os.path.exists(os.path.join(run_dir, _STATE_FILE)):
            self._restore()

    def _check_spaces(self):
        observation_dim = int(np.prod(self.env.single_observation_space.shape))
        action_dim = int(np.prod(self.env.single_action_space.shape))
        expected = (self.buffer.observation_dim, self.buffer.action_dim)
        if (observation_dim, action_dim) != expected:
            raise ValueError(
                f"The environment has observations of size {observation_dim} "
                f"and actions of size {action_dim}; the replay buffer expects "
                f"{expected[0]} and {expected[1]}.")
        if len(self.task_ids) != self.num_envs:
            raise ValueError(f"task_ids has {len(self.task_ids)} entries for "
                             f"{self.num_envs} environments.")

    # -- Acting. -----------------------------------------------------------------
    def _reset(self):
        observations, infos = self.env.reset(seed=self.seed + self.env_steps)
        self._observations = np.asarray(observations, np.float32)
        self._read_task_ids(infos)
        self._episode_returns[:] = 0
        self._episode_success[:] = False

    def _policy_actions(self, model):
        trainable, non_trainable = backend.live_values(model)  # NOTE 1
        if self._acting_model is not model:
            self._act = backend.compile_function(model.act)
            self._acting_model = model
        noise = self.action_rng.standard_normal(
            (self.num_envs, self.buffer.action_dim)).astype(np.float32)
        actions = self._act(trainable, non_trainable, self._observations,
                            self.task_ids, noise)
        return np.asarray(ops.convert_to_numpy(actions), np.float32)

    def _step(self, actions):
        next_observations, rewards, terminations, truncations, infos = self.env.step(actions)
        next_observations = np.asarray(next_observations, np.float32)
        stored_next = next_observations.copy()
        if "final_obs" in infos:  # NOTE 2
            mask = np.asarray(infos.get("_final_obs", np.zeros(self.num_envs, bool)))
            for index in np.flatnonzero(mask):
                stored_next[index] = infos["final_obs"][index]
        with self.lock:
            self.buffer.add(self._observations, actions, rewards, stored_next,
                            self.task_ids)
        self._episode_returns += rewards
        if "success" in infos:
            self._episode_success |= np.asarray(infos["success"], bool)
        for index in np.flatnonzero(np.logical_or(terminations, truncations)):
            self._finished_returns.append(float(self._episode_returns[index]))
            self._finished_success.append(bool(self._episode_success[index]))
            self._episode_returns[index] = 0
            self._episode_success[index] = False
        self._observations = next_observations
        self._read_task_ids(infos)  # after storing: the ended episodes' tasks
        self.env_steps += 1

    def _read_task_ids(self, infos):
        if "task_id" in infos:  # NOTE 5
            self.task_ids = np.asarray(infos["task_id"], np.int32)

    def warm_up(self, model):
        self._reset()
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

    def progress(self, epoch_end=False):
        logs = {"env_steps": float(self.env_steps * self.num_envs)}
        if epoch_end:
            self._epoch_returns, self._finished_returns = self._finished_returns, []
            self._epoch_success, self._finished_success = self._finished_success, []
        returns = self._epoch_returns if epoch_end else self._finished_returns
        success = self._epoch_success if epoch_end else self._finished_success
        if returns:
            logs["episode_return"] = float(np.mean(returns))
            logs["success_rate"] = float(np.mean(success))
        return logs

    # -- Checkpoints. ------------------------------------------------------------
    def save_checkpoint(self):
        if not self.run_dir:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        with self.lock:
            self.buffer.save(os.path.join(self.run_dir, _BUFFER_FILE))
        state = {
            "env_steps": self.env_steps,
            "action_rng": self.action_rng.bit_generator.state,
            "sample_rng": self.sample_rng.bit_generator.state,
        }
        temporary = os.path.join(self.run_dir, _STATE_FILE + ".tmp")
        with open(temporary, "w") as file:
            json.dump(state, file)
        os.replace(temporary, os.path.join(self.run_dir, _STATE_FILE))

    def _restore(self):
        with open(os.path.join(self.run_dir, _STATE_FILE)) as file:
            state = json.load(file)
        self.buffer.load_state_dict(
            type(self.buffer).load(os.path.join(self.run_dir, _BUFFER_FILE)).state_dict())
        self.env_steps = int(state["env_steps"])
        self.action_rng.bit_generator.state = state["action_rng"]
        self.sample_rng.bit_generator.state = state["sample_rng"]
        self.resumed_from_env_step = self.env_steps * self.num_envs

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
        callbacks = [EnvironmentStepper(self, model), *callbacks]
        if self.run_dir:
            callbacks.append(keras.callbacks.BackupAndRestore(
                os.path.join(self.run_dir, "backup")))
        return model.fit(ReplayBatches(self, int(steps_per_epoch)), epochs=epochs,
                         callbacks=callbacks, verbose=verbose, shuffle=False)
