"""Proximal policy optimisation, one train step written once for all backends.

Schulman et al. 2017 as BabyAI trains it (Chevalier-Boisvert et al. 2019;
Polytropon's BabyAI experiments use it). For a minibatch of a rollout with
old log-probabilities log pi_old(a|s), old values V_old(s), advantages A
(generalised advantage estimation, `generalized_advantages`) and returns
R = A + V_old:

    ratio = exp(log pi(a|s) - log pi_old(a|s))
    L_pi  = -mean min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)
    L_V   = mean max((V(s) - R)^2, (V_old + clip(V(s) - V_old, -eps, eps) - R)^2)
    L     = L_pi + c_V L_V - c_H mean H(pi(.|s))

with eps = 0.2, c_V = 0.5, c_H = 0.01 and the gradient clipped to a global
norm of 0.5 (`ppo_optimizer`: Adam, lr 1e-4 as in Polytropon, eps 1e-5).

A recurrent policy (`recurrence` > 1) is trained by backpropagation through
time over chunks of `recurrence` steps: the batch holds chunks, the memory
at each chunk's start, and masks that zero the memory where an episode
begins; the policy is unrolled over the chunk inside the step.

The policy network is any Keras model
`policy((observations, task_ids))` -> `(logits (batch, actions), values
(batch,) or (batch, 1))`, or, recurrent, `policy((observations, task_ids,
memory))` -> `(logits, values, memory)`. Observations may be a dict of
arrays (BabyAI: image and mission tokens).

NOTE 1 (value loss scale): L_V has no 1/2, as in BabyAI's torch-ac (CleanRL
  writes 0.5 max(...)); with c_V = 0.5 the two differ by a factor 2.
NOTE 2 (advantages): not normalised per minibatch by default, as in BabyAI;
  `normalize_advantages=True` does CleanRL's per-minibatch normalisation.
NOTE 3 (clipping with several optimizers): with a separate optimizer for
  the skill allocation logits (`ppo_optimizer(allocation_learning_rate=)`),
  each group's gradient is clipped to the norm on its own; one Adam over all
  parameters clips them together (BabyAI).
NOTE 4 (sampling): actions are drawn by the Gumbel-max trick from noise the
  loop draws from its own random generator, so that acting is a pure
  compiled function of values and a resumed run draws the same actions.
"""

import keras
from keras import ops

from training import backend
from training.optimizers import ALLOCATION_PATTERN, with_allocation_optimizer
from training.state import StepState
from training.step_model import StepModel

def ppo_optimizer(learning_rate=1e-4, epsilon=1e-5, clipnorm=0.5,
                  allocation_learning_rate=None, allocation_pattern=ALLOCATION_PATTERN):
    """Adam with a global clip norm; with `allocation_learning_rate`, a
    `MultiOptimizer` giving the variables matching `allocation_pattern`
    (Polytropon's skill allocation logits) their own Adam (NOTE 3)."""
    def adam(rate):
        return keras.optimizers.Adam(rate, epsilon=epsilon, global_clipnorm=clipnorm)

    return with_allocation_optimizer(
        adam(learning_rate),
        None if allocation_learning_rate is None else adam(allocation_learning_rate),
        allocation_pattern)


def categorical_log_probs(logits, actions):
    """log pi(a) and the entropy of softmax(logits)."""
    log_probs = ops.log_softmax(logits, axis=-1)
    chosen = ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(actions, "int32"), -1),
                                 axis=-1)
    entropy = -ops.sum(ops.exp(log_probs) * log_probs, axis=-1)
    return ops.squeeze(chosen, -1), entropy


def generalized_advantages(rewards, values, next_values, terminations, episode_ends,
                           gamma=0.99, lam=0.95):
    """GAE(gamma, lambda) of a rollout, in NumPy (the loop's side).

    Args:
        rewards, values: (steps, envs): r_t and V(s_t).
        next_values: (steps, envs): V(s_{t+1}) of the true next state (the
            final observation where an episode was cut; anything where it
            terminated, it is masked).
        terminations: (steps, envs) bool: s_{t+1} is terminal (no bootstrap).
        episode_ends: (steps, envs) bool: an episode ends at t (terminated
            or truncated); advantages do not flow across it.
        gamma, lam: discount and GAE lambda.

    Returns:
        `(advantages, returns)`, each (steps, envs) float32, returns =
        advantages + values.

        delta_t = r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma lam (1 - end_t) A_{t+1}
    """
    import numpy as np

    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    shape = rewards.shape
    for name, array in (("values", values), ("next_values", next_values),
                        ("terminations", terminations), ("episode_ends", episode_ends)):
        if np.shape(array) != shape:
            raise ValueError(f"{name} has shape {np.shape(array)}; rewards {shape}.")
    continues = 1.0 - np.asarray(terminations, np.float64)
    carries = 1.0 - np.asarray(episode_ends, np.float64)
    deltas = rewards + gamma * continues * np.asarray(next_values, np.float64) - values
    advantages = np.zeros(shape)
    running = np.zeros(shape[1:])
    for step in reversed(range(shape[0])):
        running = deltas[step] + gamma * lam * carries[step] * running
        advantages[step] = running
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


@keras.saving.register_keras_serializable(package="modular_zoo")
class PPO(StepModel):
    """PPO as a Keras model: `fit` on rollout minibatches trains it.

    Args:
        policy: the policy-and-value network (module docstring).
        num_actions: size of the discrete action space.
        clip_ratio: eps of the clipped objectives. Defaults to 0.2.
        value_coefficient: c_V. Defaults to 0.5.
        entropy_coefficient: c_H. Defaults to 0.01.
        recurrence: 1 (feedforward) or the BPTT chunk length (recurrent
            policy with a `memory_size` attribute).
        normalize_advantages: NOTE 2.

    Call arguments (the `fit` batch): a dict with `observations`,
    `task_ids`, `actions`, `log_probs`, `values`, `advantages`, `returns`,
    each with a leading batch axis; recurrent: leading (chunks, recurrence)
    axes plus `memory` (chunks, memory_size) and `masks` (chunks,
    recurrence).

    Example:

    >>> class Policy(keras.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body = keras.layers.Dense(3)
    ...     def call(self, inputs):
    ...         observations, task_ids = inputs
    ...         out = self.body(observations)
    ...         return out[:, :2], out[:, 2]
    >>> ppo = PPO(Policy(), num_actions=2)
    >>> ppo.compile(optimizer=ppo_optimizer(1e-3))
    >>> batch = {"observations": np.ones((8, 4), "float32"),
    ...          "task_ids": np.zeros(8, "int32"), "actions": np.zeros(8, "int32"),
    ...          "log_probs": np.full(8, -0.69, "float32"),
    ...          "values": np.zeros(8, "float32"),
    ...          "advantages": np.ones(8, "float32"), "returns": np.ones(8, "float32")}
    >>> logs = ppo.train_on_batch(batch, return_dict=True)
    >>> sorted(logs)
    ['approx_kl', 'clip_fraction', 'entropy', 'policy_loss', 'value_loss']
    """

    # The step reads neither state.trainable nor state.optimizer after its
    # one update: torch may update the variables in place (backend NOTE 6).
    donate_state = True

    def __init__(self, policy, num_actions, clip_ratio=0.2, value_coefficient=0.5,
                 entropy_coefficient=0.01, recurrence=1, normalize_advantages=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.policy = policy
        self.num_actions = int(num_actions)
        self.clip_ratio = float(clip_ratio)
        self.value_coefficient = float(value_coefficient)
        self.entropy_coefficient = float(entropy_coefficient)
        self.recurrence = int(recurrence)
        self.normalize_advantages = bool(normalize_advantages)
        if self.num_actions < 2:
            raise ValueError(f"num_actions must be >= 2; got {num_actions}.")
        if self.recurrence < 1:
            raise ValueError(f"recurrence must be >= 1; got {recurrence}.")
        if self.recurrence > 1 and not hasattr(policy, "memory_size"):
            raise ValueError("A recurrent PPO (recurrence > 1) needs a policy "
                             "with a `memory_size` attribute.")

    @property
    def recurrent(self):
        return self.recurrence > 1

    # -- The policy as functions of values. ----------------------------------------
    def _policy_outputs(self, observations, task_ids, memory=None):
        inputs = (observations, task_ids) if memory is None else (
            observations, task_ids, memory)
        outputs = self.policy(inputs)
        if len(outputs) != (3 if memory is not None else 2):
            raise ValueError(
                f"The policy returned {len(outputs)} outputs; expected (logits, "
                f"values{', memory' if memory is not None else ''}).")
        logits, values = outputs[0], outputs[1]
        if logits.shape[-1] != self.num_actions:
            raise ValueError(f"The policy's logits have {logits.shape[-1]} "
                             f"actions; num_actions is {self.num_actions}.")
        values = ops.reshape(values, ops.shape(logits)[:-1])
        return (logits, values) if memory is None else (logits, values, outputs[2])

    def call(self, inputs, training=False):
        """Greedy actions of `(observations, task_ids[, memory])`, or of a
        `fit` batch (its first step when recurrent)."""
        if isinstance(inputs, dict):
            if self.recurrent:
                inputs = (keras.tree.map_structure(lambda a: a[:, 0], inputs["observations"]),
                          inputs["task_ids"][:, 0], inputs["memory"])
            else:
                inputs = (inputs["observations"], inputs["task_ids"])
        outputs = self._policy_outputs(*inputs)
        return ops.argmax(outputs[0], axis=-1)

    def act(self, trainable, non_trainable, observations, task_ids, gumbel_noise,
            memory=None):
        """Sampled actions from given values (NOTE 4): `(actions, log_probs,
        values)` or, recurrent, `(actions, log_probs, values, memory)`.
        `gumbel_noise` is (batch, num_actions) standard Gumbel noise; None
        gives the greedy action."""
        variables = backend.step_variables(self)
        task_ids = ops.convert_to_tensor(task_ids, "int32")
        with backend.stateless_scope(variables.trainable + variables.non_trainable,
                                     list(trainable) + list(non_trainable)):
            outputs = self._policy_outputs(observations, task_ids, memory)
        logits, values = outputs[0], outputs[1]
        scores = logits if gumbel_noise is None else logits + ops.convert_to_tensor(
            gumbel_noise)
        actions = ops.cast(ops.argmax(scores, axis=-1), "int32")
        log_probs, _ = categorical_log_probs(logits, actions)
        result = (actions, ops.stop_gradient(log_probs), ops.stop_gradient(values))
        if memory is not None:
            result += (ops.stop_gradient(outputs[2]),)
        return result

    def values_of(self, trainable, non_trainable, observations, task_ids, memory=None):
        """V(s) from given values (for bootstrapping final observations)."""
        variables = backend.step_variables(self)
        with backend.stateless_scope(variables.trainable + variables.non_trainable,
                                     list(trainable) + list(non_trainable)):
            outputs = self._policy_outputs(
                observations, ops.convert_to_tensor(task_ids, "int32"), memory)
        return ops.stop_gradient(outputs[1])

    # -- The step, written once. ---------------------------------------------------
    def _unrolled(self, batch):
        """Logits and values of a batch: one call, or the recurrent policy
        unrolled over each chunk (memory zeroed where an episode begins)."""
        if not self.recurrent:
            return self._policy_outputs(batch["observations"], batch["task_ids"])
        memory = batch["memory"]
        logits, values = [], []
        for step in range(self.recurrence):
            observations = keras.tree.map_structure(
                lambda array, step=step: array[:, step], batch["observations"])
            memory = memory * ops.expand_dims(batch["masks"][:, step], -1)
            step_logits, step_values, memory = self._policy_outputs(
                observations, batch["task_ids"][:, step], memory)
            logits.append(step_logits)
            values.append(step_values)
        return ops.stack(logits, axis=1), ops.stack(values, axis=1)

    def ppo_losses(self, trainable, non_trainable, batch):
        """`(total_loss, (logs, new_non_trainable))` of a minibatch."""
        variables = backend.step_variables(self)
        with backend.stateless_scope(variables.trainable + variables.non_trainable,
                                     list(trainable) + list(non_trainable)) as scope:
            logits, values = self._unrolled(batch)
        new_non_trainable = backend.scope_values(
            scope, variables.non_trainable, non_trainable)
        log_probs, entropy = categorical_log_probs(logits, batch["actions"])
        advantages = batch["advantages"]
        if self.normalize_advantages:  # NOTE 2
            advantages = (advantages - ops.mean(advantages)) / (ops.std(advantages) + 1e-8)
        log_ratio = log_probs - batch["log_probs"]
        ratio = ops.exp(log_ratio)
        clipped_ratio = ops.clip(ratio, 1.0 - self.clip_ratio, 1.0 + self.clip_ratio)
        policy_loss = -ops.mean(ops.minimum(ratio * advantages, clipped_ratio * advantages))
        old_values = batch["values"]
        clipped_values = old_values + ops.clip(values - old_values,
                                               -self.clip_ratio, self.clip_ratio)
        value_loss = ops.mean(ops.maximum(  # NOTE 1
            ops.square(values - batch["returns"]),
            ops.square(clipped_values - batch["returns"])))
        mean_entropy = ops.mean(entropy)
        total = (policy_loss + self.value_coefficient * value_loss
                 - self.entropy_coefficient * mean_entropy)
        logs = {
            "policy_loss": policy_loss, "value_loss": value_loss,
            "entropy": mean_entropy,
            "approx_kl": ops.stop_gradient(ops.mean((ratio - 1.0) - log_ratio)),
            "clip_fraction": ops.stop_gradient(ops.mean(ops.cast(
                ops.abs(ratio - 1.0) > self.clip_ratio, "float32"))),
        }
        return total, (logs, new_non_trainable)

    def compute_train_step(self, state, data):
        batch = data[0] if isinstance(data, (tuple, list)) else data
        batch = dict(keras.tree.map_structure(ops.convert_to_tensor, dict(batch)))
        batch["task_ids"] = ops.cast(batch["task_ids"], "int32")
        (_, (logs, non_trainable)), grads = backend.value_and_grad(
            self.ppo_losses, has_aux=True)(state.trainable, state.non_trainable, batch)
        trainable, optimizer = self.apply_gradients(state, grads)
        return logs, StepState(trainable, non_trainable, optimizer, state.metrics)

    def get_config(self):
        config = super().get_config()
        config.update(
            policy=keras.saving.serialize_keras_object(self.policy),
            num_actions=self.num_actions, clip_ratio=self.clip_ratio,
            value_coefficient=self.value_coefficient,
            entropy_coefficient=self.entropy_coefficient,
            recurrence=self.recurrence,
            normalize_advantages=self.normalize_advantages)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["policy"] = keras.saving.deserialize_keras_object(config["policy"])
        return cls(**config)
