"""On-policy training (PPO) driven by `model.fit`: rollouts in, minibatch
updates out, resumable. The same design as the off-policy loop, on the same
base (`training/env_loop.py`).

    loop = OnPolicyLoop(env, rollout_steps=40, update_epochs=4, minibatch_size=1280,
                        run_dir="runs/x")
    history = loop.fit(ppo, total_env_steps=200_000)

One `fit` epoch is one PPO iteration: at the epoch's start the
`RolloutCollector` callback steps the vector environment `rollout_steps`
times with the policy's current values (sampling actions, storing
log-probabilities and values), computes advantages and returns
(`training.ppo.generalized_advantages`), and draws the minibatch order;
the epoch's `update_epochs * minibatches` fit steps are the updates on
that rollout (`RolloutBatches`). Progress shows in fit's bar and
`History` (the model's losses plus `env_steps`, `episode_return`,
`success_rate`). At every epoch end the step count and random state are
saved beside `BackupAndRestore`, so a killed run resumes at its last
finished iteration; the rollout itself is not saved, since the next
iteration collects a new one with the restored weights.

NOTE 1 (truncation): with `bootstrap_truncation=True` an episode cut by a
  time limit bootstraps from V(final_obs); the default, False, treats it as
  terminal, as BabyAI's PPO does (its reward, 1 - 0.9 n / n_max, makes the
  time limit part of the task).
NOTE 2 (the first batch): TensorFlow's data adapter reads one batch to
  learn its structure when `fit` starts, before any callback: the loop
  gives it a zero rollout of the right shapes, and the first real rollout is
  collected at the first epoch's start (after BackupAndRestore restored a
  resumed run's weights).
NOTE 3 (recurrent policies): with `recurrence` L > 1 the rollout is cut into
  chunks of L steps per environment; a chunk carries the memory at its
  first step and masks that zero the memory where an episode begins
  (`training.ppo.PPO`). `rollout_steps` must be a multiple of L.
"""

import keras
import numpy as np
from keras import ops, tree

from training import backend
from training.env_loop import EnvironmentLoop, LoopCallback
from training.ppo import generalized_advantages


class RolloutBatches(keras.utils.PyDataset):
    """The minibatches of the current rollout, `update_epochs` passes."""

    def __init__(self, loop):
        super().__init__()
        self.loop = loop

    def __len__(self):
        return self.loop.update_epochs * self.loop.num_minibatches

    def __getitem__(self, index):
        return self.loop.minibatch(index)


class RolloutCollector(LoopCallback):
    """Collects a rollout at every epoch's start (NOTE 2); checkpoints at
    every epoch's end."""

    def on_epoch_begin(self, epoch, logs=None):
        self.loop.collect(self.acting_model)


class OnPolicyLoop(EnvironmentLoop):
    """The environment side of on-policy training (module docstring).

    Args:
        env: a gymnasium vector environment with a discrete action space.
        rollout_steps: vector steps per rollout (BabyAI: 40 frames per
            process).
        update_epochs: passes over each rollout (BabyAI: 4).
        minibatch_size: transitions per update (BabyAI: 1280); recurrent:
            rounded down to whole chunks. Must divide into the rollout.
        gamma, lam: discount and GAE lambda (BabyAI: 0.99, 0.99).
        bootstrap_truncation: NOTE 1.
        recurrence: 1, or the BPTT chunk length of a recurrent policy
            (NOTE 3; BabyAI: 20).
        run_dir: where the loop state is checkpointed ("" for none).
        seed: seed of the action sampling and the minibatch order.
        task_ids: the task of each environment (env_loop NOTE 2).
    """

    rng_names = ("action_rng", "sample_rng")

    def __init__(self, env, rollout_steps=40, update_epochs=4, minibatch_size=1280,
                 gamma=0.99, lam=0.99, bootstrap_truncation=False, recurrence=1,
                 run_dir="", seed=0, task_ids=None):
        super().__init__(env, run_dir=run_dir, seed=seed, task_ids=task_ids)
        for name, value in (("rollout_steps", rollout_steps),
                            ("update_epochs", update_epochs),
                            ("minibatch_size", minibatch_size), ("recurrence", recurrence)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if not hasattr(env.single_action_space, "n"):
            raise ValueError("OnPolicyLoop needs a discrete action space; got "
                             f"{env.single_action_space}.")
        if rollout_steps % recurrence:
            raise ValueError(f"rollout_steps ({rollout_steps}) must be a multiple "
                             f"of recurrence ({recurrence}) (NOTE 3).")
        self.rollout_steps = int(rollout_steps)
        self.update_epochs = int(update_epochs)
        self.recurrence = int(recurrence)
        self.gamma, self.lam = float(gamma), float(lam)
        self.bootstrap_truncation = bool(bootstrap_truncation)
        self.num_actions = int(env.single_action_space.n)
        sequences = self.rollout_steps // self.recurrence * self.num_envs
        per_batch = max(1, int(minibatch_size) // self.recurrence)
        if sequences % per_batch:
            raise ValueError(
                f"minibatch_size {minibatch_size} does not divide the rollout of "
                f"{self.rollout_steps} x {self.num_envs} steps"
                + (f" in chunks of {self.recurrence}" if self.recurrence > 1 else "") + ".")
        self.sequences_per_batch = per_batch
        self.num_minibatches = sequences // per_batch
        self.rollout = None
        self._orders = None
        self._memory = self._last_mask = None
        self.restore_if_saved()

    # -- Acting. -----------------------------------------------------------------
    def _check_model(self, model):
        if getattr(model, "num_actions", self.num_actions) != self.num_actions:
            raise ValueError(f"The model has {model.num_actions} actions; the "
                             f"environment {self.num_actions}.")
        if getattr(model, "recurrence", 1) != self.recurrence:
            raise ValueError(f"The model's recurrence is {model.recurrence}; the "
                             f"loop's {self.recurrence}.")

    def _memory_size(self, model):
        return int(model.policy.memory_size) if self.recurrence > 1 else 0

    def collect(self, model):
        """One rollout with `model`'s live values, its advantages, returns
        and minibatch orders."""
        if self._observations is None:
            self.reset()
        trainable, non_trainable = backend.live_values(model)  # env_loop NOTE 1
        act = self.compiled_act(model)
        recurrent = self.recurrence > 1
        if recurrent and self._memory is None:
            self._memory = np.zeros((self.num_envs, self._memory_size(model)), np.float32)
        steps, envs = self.rollout_steps, self.num_envs
        observations, task_ids, masks, memories = [], [], [], []
        actions = np.zeros((steps, envs), np.int32)
        log_probs = np.zeros((steps, envs), np.float32)
        values = np.zeros((steps, envs), np.float32)
        rewards = np.zeros((steps, envs), np.float32)
        terminations = np.zeros((steps, envs), bool)
        episode_ends = np.zeros((steps, envs), bool)
        next_values = np.zeros((steps, envs), np.float32)
        mask = (np.ones(self.num_envs, np.float32) if self._last_mask is None
                else self._last_mask)
        for step in range(steps):
            gumbel = self.action_rng.gumbel(size=(envs, self.num_actions)).astype(np.float32)
            memory_in = None if not recurrent else self._memory * mask[:, None]
            outputs = act(trainable, non_trainable, self._observations, self.task_ids,
                          gumbel, *(() if memory_in is None else (memory_in,)))
            outputs = [np.asarray(ops.convert_to_numpy(o)) for o in outputs]
            observations.append(self._observations)
            task_ids.append(self.task_ids.copy())
            masks.append(mask)
            if recurrent:
                memories.append(memory_in)
                self._memory = outputs[3]
            actions[step], log_probs[step], values[step] = outputs[:3]
            next_obs, step_rewards, terms, truncs, infos = self.env.step(actions[step])
            next_obs = self.prepare_observations(next_obs)
            rewards[step] = step_rewards
            terminations[step] = terms if self.bootstrap_truncation else (terms | truncs)
            episode_ends[step] = self.record_episodes(step_rewards, terms, truncs, infos)
            cut = truncs & ~terms
            if self.bootstrap_truncation and cut.any():  # NOTE 1
                final = self._final_observations(next_obs, infos, cut)
                final_values = np.asarray(ops.convert_to_numpy(model.values_of(
                    trainable, non_trainable, final, self.task_ids,
                    *(() if not recurrent else (self._memory,)))))
                next_values[step] = np.where(cut, final_values, 0.0)
            self._observations = next_obs
            self.read_task_ids(infos)
            mask = (~episode_ends[step]).astype(np.float32)
            self.env_steps += 1
        last_values = np.asarray(ops.convert_to_numpy(model.values_of(
            trainable, non_trainable, self._observations, self.task_ids,
            *(() if not recurrent else (self._memory * mask[:, None],)))))
        self._last_mask = mask
        # V(s_{t+1}): the next step's value within an episode, the last value
        # after the rollout, the final observation's at a cut (set above).
        following = np.concatenate([values[1:], last_values[None]], axis=0)
        next_values = np.where(episode_ends, next_values, following)
        advantages, returns = generalized_advantages(
            rewards, values, next_values, terminations, episode_ends, self.gamma, self.lam)
        stacked = lambda items: tree.map_structure(lambda *a: np.stack(a), *items)  # noqa: E731
        rollout = {
            "observations": stacked(observations), "task_ids": np.stack(task_ids),
            "actions": actions, "log_probs": log_probs, "values": values,
            "advantages": advantages, "returns": returns,
        }
        if recurrent:
            rollout["masks"] = np.stack(masks)
            rollout["memory"] = np.stack(memories)
        self.rollout = self._arrange(rollout)
        self._orders = [self.sample_rng.permutation(self.num_minibatches
                                                    * self.sequences_per_batch)
                        for _ in range(self.update_epochs)]

    def _final_observations(self, next_obs, infos, cut):
        """`next_obs` with the true last observation (`final_obs`) of every
        environment whose episode was cut, prepared as the model takes it."""
        final = tree.map_structure(np.array, next_obs)
        for index in np.flatnonzero(cut):
            single = self.prepare_observations(tree.map_structure(
                lambda array: np.asarray(array)[None], infos["final_obs"][index]))
            for rows, row in zip(tree.flatten(final), tree.flatten(single), strict=True):
                rows[index] = row[0]
        return final

    def _arrange(self, rollout):
        """(steps, envs, ...) arrays as (sequences, ...) rows: one row per
        transition, or recurrent, one per chunk of `recurrence` steps with
        the memory at the chunk's start (NOTE 3)."""
        length = self.recurrence

        def rows(array):
            array = np.asarray(array)
            if length == 1:
                return array.reshape((-1,) + array.shape[2:])
            chunks = array.reshape((self.rollout_steps // length, length) + array.shape[1:])
            chunks = np.swapaxes(chunks, 1, 2)  # (chunks, envs, length, ...)
            return chunks.reshape((-1, length) + array.shape[2:])

        memory = rollout.pop("memory", None)
        arranged = tree.map_structure(rows, rollout)
        if memory is not None:
            arranged["memory"] = memory[::length].reshape((-1, memory.shape[-1]))
        return arranged

    def minibatch(self, index):
        """Minibatch `index` of the current rollout (epoch-major order)."""
        epoch, position = divmod(int(index), self.num_minibatches)
        rows = self._orders[epoch][position * self.sequences_per_batch:
                                   (position + 1) * self.sequences_per_batch]
        return tree.map_structure(lambda array: array[rows], self.rollout)

    def _placeholder(self, model):
        """A zero rollout of the right structure (NOTE 2); resets the
        environments and the memory."""
        self.reset()
        self._memory = self._last_mask = None
        zeros = lambda array: np.zeros((self.rollout_steps,) + np.shape(array),  # noqa: E731
                                       np.asarray(array).dtype)
        steps_envs = (self.rollout_steps, self.num_envs)
        rollout = {
            "observations": tree.map_structure(zeros, self._observations),
            "task_ids": np.zeros(steps_envs, np.int32),
            "actions": np.zeros(steps_envs, np.int32),
            **{key: np.zeros(steps_envs, np.float32)
               for key in ("log_probs", "values", "advantages", "returns")},
        }
        if self.recurrence > 1:
            rollout["masks"] = np.ones(steps_envs, np.float32)
            rollout["memory"] = np.zeros(steps_envs + (self._memory_size(model),),
                                         np.float32)
        self.rollout = self._arrange(rollout)
        self._orders = [np.arange(self.num_minibatches * self.sequences_per_batch)
                        ] * self.update_epochs

    # -- Training. ---------------------------------------------------------------
    def fit(self, model, total_env_steps, callbacks=(), verbose="auto"):
        """Trains `model` for `total_env_steps` environment steps (over all
        environments; whole rollouts); returns fit's `History`."""
        self._check_model(model)
        per_rollout = self.rollout_steps * self.num_envs
        iterations = max(1, -(-int(total_env_steps) // per_rollout))
        self._placeholder(model)
        if not (model.built and model.weights):
            # Acting needs the variables before fit's first step; and a model
            # fit finds unbuilt is built symbolically, which on torch runs the
            # policy on placeholder ids (ones) that may exceed num_tasks.
            model(self.minibatch(0))
        return self.run_fit(model, RolloutBatches(self), iterations,
                            [RolloutCollector(self, model), *callbacks], verbose)
