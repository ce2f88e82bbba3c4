"""The environment side of reinforcement learning through `model.fit`,
shared by the off-policy (SAC, `training/off_policy.py`) and on-policy
(PPO, `training/on_policy.py`) loops.

Both loops follow one design: `model.fit` runs the updates on batches from a
`keras.utils.PyDataset`, a callback steps the gymnasium vector environment
with the policy's current values, and the loop checkpoints its own state
at every epoch end beside `keras.callbacks.BackupAndRestore` (weights and
optimizer), so that a killed run resumes from its last finished epoch.
This module holds what they share:

* the environment's tasks: environment i is task `task_ids[i]`, or, when
  the infos carry `task_id` (NOTE 2), the task of its current episode;
* the episode statistics logged as `episode_return` / `success_rate`
  (finished episodes since the last log) and `env_steps`, and the record
  of every finished episode (`episode_records`: the step count at its
  end, its task, success, return and length), checkpointed with the loop
  so that per-task learning curves survive a resume;
* acting with the step's live values through a compiled `model.act`
  (NOTE 1);
* the checkpoint: `loop_state.json` (step count, every random generator's
  state and the subclass's `extra_state()`) plus the subclass's arrays
  (`save_arrays` / `load_arrays`), each written atomically;
* `run_fit`: `model.fit` with the loop's callbacks and BackupAndRestore.

NOTE 1 (acting inside fit, speed): the policy reads the step's current
  values (`backend.live_values`) rather than syncing the trainer's state
  into the variables at every environment step (on JAX, Keras's
  `Callback.model` property syncs at every access, so the loops' callbacks
  keep their own reference), and `model.act` runs compiled
  (`backend.compile_function`): eager it cost 7.5 ms per vector step, as
  much as stepping the ten MT10 environments (measured with cProfile,
  JAX, 400 steps).
NOTE 2 (tasks that change per episode): an environment whose infos carry
  `task_id` (one int per environment, at reset and at every step; with
  SAME_STEP autoreset the ids of the episodes that just began) sets each
  environment's task; transitions are stored under the task of the
  episode they belong to. Without it environment i is `task_ids[i]`.
NOTE 3 (what a resume cannot restore): the environments' own simulator
  state is not saved; a resumed run resets them, so the episodes that were
  running at the checkpoint start over. The loop's checkpoint is written
  just before BackupAndRestore's at every epoch end; a kill between the two
  leaves the loop one epoch ahead of the weights (its data kept, the
  epoch's updates redone), never behind.
NOTE 4 (success at an episode's last step): with SAME_STEP autoreset the
  step that ends an episode returns the reset's infos for that
  environment, and the step's own in `info["final_info"]`; the episode's
  success is read there (BabyAI succeeds only at its last step).
"""

import json
import os

import keras
import numpy as np

from training import backend

STATE_FILE = "loop_state.json"
EPISODES_FILE = "episodes.npy"
# Columns of `EnvironmentLoop.episode_records`.
EPISODE_COLUMNS = ("env_steps", "task_id", "success", "return", "length")


def success_flags(infos, num_envs):
    """Per environment, whether a step's infos report success: `success`
    at the top level or, at an autoreset, in `final_info` (NOTE 4), each
    where its `_success` mask (gymnasium's vector infos) says it is set."""
    flags = np.zeros(num_envs, bool)
    for source in (infos, infos.get("final_info", {})):
        if "success" in source:
            mask = source.get("_success", np.ones(num_envs, bool))
            flags |= np.asarray(source["success"], bool) & np.asarray(mask, bool)
    return flags


class LoopCallback(keras.callbacks.Callback):
    """Base of the loops' callbacks: holds the loop and the acting model
    (NOTE 1), logs progress and checkpoints at every epoch end."""

    def __init__(self, loop, model):
        super().__init__()
        self.loop = loop
        # Not `self.model`: on JAX that property writes the whole trainer
        # state back into the variables at every access (NOTE 1).
        self.acting_model = model

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.loop.progress(epoch_end=True))
        self.loop.save_checkpoint()


class EnvironmentLoop:
    """Shared state and bookkeeping of the loops (module docstring).

    Args:
        env: a gymnasium vector environment.
        run_dir: where the loop state is checkpointed ("" for none).
        seed: seed of the loop's random generators (`rng_names`).
        task_ids: the task of each environment (default: environment i is
            task i; NOTE 2).
    """

    rng_names = ("action_rng",)

    def __init__(self, env, run_dir="", seed=0, task_ids=None):
        self.env = env
        self.run_dir = run_dir
        self.seed = int(seed)
        self.num_envs = int(env.num_envs)
        self.task_ids = (np.arange(self.num_envs, dtype=np.int32) if task_ids is None
                         else np.asarray(task_ids, np.int32))
        if len(self.task_ids) != self.num_envs:
            raise ValueError(f"task_ids has {len(self.task_ids)} entries for "
                             f"{self.num_envs} environments.")
        self.env_steps = 0            # vector steps taken
        self.resumed_from_env_step = None
        for offset, name in enumerate(self.rng_names):
            setattr(self, name, np.random.default_rng(self.seed + offset))
        self._observations = None
        self._act = self._acting_model = None
        self._episode_returns = np.zeros(self.num_envs)
        self._episode_success = np.zeros(self.num_envs, bool)
        self._episode_lengths = np.zeros(self.num_envs, np.int64)
        self._records = []
        self._finished_returns, self._finished_success = [], []
        self._epoch_returns, self._epoch_success = [], []

    # -- The environment. --------------------------------------------------------
    def reset(self):
        """Resets every environment (seeded by the step count)."""
        observations, infos = self.env.reset(seed=self.seed + self.env_steps)
        self._observations = self.prepare_observations(observations)
        self.read_task_ids(infos)
        self._episode_returns[:] = 0
        self._episode_success[:] = False
        self._episode_lengths[:] = 0

    def prepare_observations(self, observations):
        """Observations as the model takes them (float32 by default)."""
        return np.asarray(observations, np.float32)

    def read_task_ids(self, infos):
        if "task_id" in infos:  # NOTE 2
            self.task_ids = np.asarray(infos["task_id"], np.int32)

    def record_episodes(self, rewards, terminations, truncations, infos):
        """Adds a step's rewards and success to the running episodes and
        files the finished ones; returns the mask of finished episodes."""
        self._episode_returns += rewards
        self._episode_lengths += 1
        finished = np.logical_or(terminations, truncations)
        self._episode_success |= success_flags(infos, self.num_envs)
        # Called before `read_task_ids`: `task_ids` are the ended episodes'.
        frames = (self.env_steps + 1) * self.num_envs
        for index in np.flatnonzero(finished):
            self._finished_returns.append(float(self._episode_returns[index]))
            self._finished_success.append(bool(self._episode_success[index]))
            self._records.append((frames, int(self.task_ids[index]),
                                  float(self._episode_success[index]),
                                  float(self._episode_returns[index]),
                                  int(self._episode_lengths[index])))
            self._episode_returns[index] = 0
            self._episode_success[index] = False
            self._episode_lengths[index] = 0
        return finished

    @property
    def episode_records(self):
        """Every finished episode, (episodes, 5) float64 with the columns
        `EPISODE_COLUMNS`: environment steps (over all environments) when it
        ended, task id, success (0/1), return and length."""
        return np.asarray(self._records, np.float64).reshape(-1, len(EPISODE_COLUMNS))

    def compiled_act(self, model):
        """`model.act` compiled once per model (NOTE 1)."""
        if self._acting_model is not model:
            self._act = backend.compile_function(model.act)
            self._acting_model = model
        return self._act

    def progress(self, epoch_end=False):
        """`env_steps` (over all environments) and, when episodes finished
        since the last epoch, their mean return and success rate."""
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
    def extra_state(self):
        """JSON-able state of a subclass, saved in the loop state file."""
        return {}

    def load_extra_state(self, state):
        """Restores `extra_state()`."""

    def save_arrays(self):
        """Writes a subclass's arrays into `run_dir` (atomically)."""

    def load_arrays(self):
        """Reads what `save_arrays` wrote."""

    def save_checkpoint(self):
        if not self.run_dir:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        self.save_arrays()
        temporary = os.path.join(self.run_dir, "tmp_" + EPISODES_FILE)
        np.save(temporary, self.episode_records)
        os.replace(temporary, os.path.join(self.run_dir, EPISODES_FILE))
        state = {"env_steps": self.env_steps, "extra": self.extra_state()}
        for name in self.rng_names:
            state[name] = getattr(self, name).bit_generator.state
        temporary = os.path.join(self.run_dir, STATE_FILE + ".tmp")
        with open(temporary, "w") as file:
            json.dump(state, file)
        os.replace(temporary, os.path.join(self.run_dir, STATE_FILE))

    def restore_if_saved(self):
        """Restores the last checkpoint of `run_dir`, if there is one."""
        if not (self.run_dir and os.path.exists(os.path.join(self.run_dir, STATE_FILE))):
            return
        with open(os.path.join(self.run_dir, STATE_FILE)) as file:
            state = json.load(file)
        self.load_arrays()
        episodes = os.path.join(self.run_dir, EPISODES_FILE)
        if os.path.exists(episodes):
            self._records = [tuple(row) for row in np.load(episodes).tolist()]
        self.env_steps = int(state["env_steps"])
        for name in self.rng_names:
            getattr(self, name).bit_generator.state = state[name]
        self.load_extra_state(state.get("extra", {}))
        self.resumed_from_env_step = self.env_steps * self.num_envs

    # -- Training. ---------------------------------------------------------------
    def run_fit(self, model, dataset, epochs, callbacks, verbose):
        """`model.fit(dataset)` with `callbacks` and, with a `run_dir`,
        BackupAndRestore (weights, optimizer, epoch) beside the loop's own
        checkpoint."""
        callbacks = list(callbacks)
        if self.run_dir:
            callbacks.append(keras.callbacks.BackupAndRestore(
                os.path.join(self.run_dir, "backup")))
        return model.fit(dataset, epochs=epochs, callbacks=callbacks,
                         verbose=verbose, shuffle=False)
