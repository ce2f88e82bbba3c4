"""Multi-task soft actor-critic, one train step written once for all backends.

Haarnoja et al. 2018 (SAC with learned temperature), in the multi-task form
of Meta-World's MT-SAC and of Soft Modularization (Yang et al. 2020): one
temperature per task and, optionally, Soft Modularization's task loss
weights. For a batch of transitions (s, a, r, s') of tasks k:

    a' ~ pi(.|s', k),  y = r + gamma * (min_i Q'_i(s', a', k) - alpha_k log pi(a'|s', k))
    L_Q  = mean_b w_k * sum_i 1/2 (Q_i(s, a, k) - y)^2           (y held fixed)
    a~ ~ pi(.|s, k),   L_pi = mean_b w_k * (alpha_k log pi(a~|s, k) - min_i Q_i(s, a~, k))
    L_alpha = mean_b -log_alpha_k * (log pi(a~|s, k) + H_target)   (log pi held fixed)
    Q'_i <- tau Q_i + (1 - tau) Q'_i                               (after the update)

with alpha_k = exp(log_alpha_k), H_target = -|A| by default, the policy a
tanh-squashed Gaussian (log std clamped to [-20, 2]) and w_k = 1, or with
`loss_balancing=True`, w = T * softmax(-log_alpha) held fixed (Soft
Modularization's official code, its difference 6).

NOTE 1 (no done mask): Meta-World episodes only truncate, never terminate,
  so every transition bootstraps from s' (the true last observation,
  `final_obs`, at an autoreset); there is no done input.
NOTE 2 (one backward pass): the three losses are summed and differentiated
  once with respect to every trainable value: the critics' values enter the
  actor loss through `stop_gradient`, the temperatures enter the critic and
  actor losses through `stop_gradient`, and log pi enters the temperature
  loss through `stop_gradient`, so each group of parameters receives exactly
  the gradient of its own loss. Every loss is computed from the parameters
  before the step (the actor loss sees the critics before their update),
  as in a simultaneous update; CleanRL and metaworld-algorithms update the
  critics first and let the actor see the new critics.
NOTE 3 (optimizers): separate optimizers and gradient clipping for actor,
  critics and temperatures are a `keras.optimizers.MultiOptimizer` routing
  variable paths "critic_1/", "critic_2/" and "log_alpha" (the actor: every
  other trainable variable) (`sac_optimizer`).
  A clip norm of the critics' optimizer clips both critics together.
NOTE 4 (log pi of the squashed action): log pi(a) = sum_j [log N(u_j; mu_j,
  sigma_j) - log(1 - tanh(u_j)^2)], a = tanh(u), with the Jacobian term in
  the exact form 2 (log 2 - u - softplus(-2u)). The reference
  implementations write log(1 - a^2 + 1e-6), which in float32 depends on
  how each backend rounds tanh near |a| = 1 (measured here: a 0.035
  difference of the critic loss between TensorFlow and JAX on one batch)
  and is capped at log(1e-6) where the exact term keeps falling.
"""

import math

import keras
from keras import ops

from training import backend
from training.state import StepState
from training.step_model import StepModel

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def squashed_gaussian(mean, log_std, noise):
    """Action a = tanh(mean + std * noise) and its log-probability (NOTE 4)."""
    log_std = ops.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
    pre_tanh = mean + ops.exp(log_std) * noise
    action = ops.tanh(pre_tanh)
    gaussian_log_prob = -0.5 * ops.square(noise) - log_std - 0.5 * math.log(2 * math.pi)
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2 u)), exact (NOTE 4).
    log_det = 2.0 * (math.log(2.0) - pre_tanh - ops.softplus(-2.0 * pre_tanh))
    log_prob = ops.sum(gaussian_log_prob - log_det, axis=-1)
    return action, log_prob


def sac_optimizer(actor_learning_rate=3e-4, critic_learning_rate=3e-4,
                  alpha_learning_rate=3e-4, clipnorm=1.0):
    """A MultiOptimizer with one Adam per group (NOTE 3)."""
    def adam(learning_rate, clip):
        return keras.optimizers.Adam(learning_rate, global_clipnorm=clip)

    return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        adam(actor_learning_rate, clipnorm), {
            "(.*/)?critic_[12]/.*": adam(critic_learning_rate, clipnorm),
            "(.*/)?log_alpha": adam(alpha_learning_rate, None),
        }))


def _observations_and_tasks(inputs):
    """(observations, task_ids) from a tuple or a replay batch dict."""
    if isinstance(inputs, dict):
        return inputs["observations"], inputs["task_ids"]
    observations, task_ids = inputs
    return observations, task_ids


def _clone(network, name):
    clone = network.__class__.from_config(dict(network.get_config(), name=name))
    return clone


@keras.saving.register_keras_serializable(package="modular_zoo")
class MultiTaskSAC(StepModel):
    """Multi-task SAC as a Keras model: `fit` on replay batches trains it.

    Args:
        actor: A Keras model `actor((observations, task_ids))` -> `(mean,
            log_std)`, each `(batch, action_dim)`.
        critic: A Keras model `critic((observations, actions, task_ids))` ->
            Q-values `(batch,)` or `(batch, 1)`. Two independent copies and
            their target copies are made from its config (so it must have a
            complete `get_config`).
        num_tasks: Positive integer, T (one temperature per task).
        observation_dim, action_dim: Sizes of observations and actions.
        gamma: Discount. Defaults to 0.99.
        tau: Polyak rate of the target critics. Defaults to 0.005.
        target_entropy: Defaults to `-action_dim`.
        initial_log_alpha: Initial log temperature of every task (0: alpha 1,
            the official Soft Modularization code).
        loss_balancing: Boolean, Soft Modularization's task loss weights.
        seed: Seed of the policy noise.

    Call arguments (the `fit` batch): a dict with `observations` (batch,
    obs), `actions` (batch, act), `rewards` (batch,), `next_observations`
    (batch, obs) and integer `task_ids` (batch,).

    `model((observations, task_ids))` returns the deterministic action
    tanh(mean); `model.sample_action((observations, task_ids))` samples.
    """

    # The step reads neither state.trainable nor state.optimizer after its
    # one update: torch may update the variables in place (backend NOTE 6).
    donate_state = True

    def __init__(self, actor, critic, num_tasks, observation_dim, action_dim,
                 gamma=0.99, tau=0.005, target_entropy=None,
                 initial_log_alpha=0.0, loss_balancing=False, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        self.observation_dim = int(observation_dim)
        self.action_dim = int(action_dim)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.target_entropy = (-float(action_dim) if target_entropy is None
                               else float(target_entropy))
        self.initial_log_alpha = float(initial_log_alpha)
        self.loss_balancing = bool(loss_balancing)
        self.seed = seed
        self.actor = actor
        self.critics = [_clone(critic, f"critic_{i}") for i in (1, 2)]
        self.target_critics = [_clone(critic, f"target_critic_{i}") for i in (1, 2)]
        self.noise_seed = keras.random.SeedGenerator(seed, name="policy_noise")
        self.log_alpha = self.add_weight(
            name="log_alpha", shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_log_alpha))
        self._critic_serialized = keras.saving.serialize_keras_object(critic)
        self._variable_groups = None
        self.build_networks()
        # After building: a network that creates sublayers in `build` would
        # otherwise leave those of its target copies trainable.
        for target in self.target_critics:
            target.trainable = False

    def build_networks(self):
        """Creates every weight and copies the critics into their targets."""
        observations = ops.zeros((1, self.observation_dim))
        actions = ops.zeros((1, self.action_dim))
        task_ids = ops.zeros((1,), "int32")
        self.actor((observations, task_ids))
        for critic, target in zip(self.critics, self.target_critics):
            critic((observations, actions, task_ids))
            target((observations, actions, task_ids))
            target.set_weights(critic.get_weights())
        self.built = True

    # -- Acting. ---------------------------------------------------------------
    def call(self, inputs, training=False):
        observations, task_ids = _observations_and_tasks(inputs)
        mean, _ = self.actor((observations, task_ids), training=training)
        return ops.tanh(mean)

    def sample_action(self, inputs):
        """Actions sampled from the policy (eager, for data collection)."""
        observations, task_ids = _observations_and_tasks(inputs)
        mean, log_std = self.actor((observations, task_ids))
        noise = keras.random.normal(ops.shape(mean), seed=self.noise_seed)
        action, _ = squashed_gaussian(mean, log_std, noise)
        return action

    def act(self, trainable, non_trainable, observations, task_ids, noise=None):
        """Actions from given values (the loop's NOTE 1): tanh(mean), or with
        standard normal `noise` (batch, action_dim) a policy sample."""
        variables = backend.step_variables(self)
        with backend.stateless_scope(variables.trainable + variables.non_trainable,
                                     list(trainable) + list(non_trainable)):
            mean, log_std = self.actor((ops.convert_to_tensor(observations),
                                        ops.convert_to_tensor(task_ids, "int32")))
        if noise is None:
            return ops.stop_gradient(ops.tanh(mean))
        action, _ = squashed_gaussian(mean, log_std, ops.convert_to_tensor(noise))
        return ops.stop_gradient(action)

    # -- The step, written once. -------------------------------------------------
    def _groups(self):
        """Positions of each network's variables in the step's lists
        (fixed once the networks are built; computed on first use)."""
        if self._variable_groups is None:
            variables = backend.step_variables(self)
            trainable_ids = [id(v) for v in variables.trainable]
            non_trainable_ids = [id(v) for v in variables.non_trainable]
            critics, targets = [], []
            for critic, target in zip(self.critics, self.target_critics, strict=True):
                pairs = [(source, copy) for source, copy in zip(
                    critic.weights, target.weights, strict=True) if source.trainable]
                critics.append(tuple(trainable_ids.index(id(s)) for s, _ in pairs))
                targets.append(tuple(non_trainable_ids.index(id(t)) for _, t in pairs))
            # A tuple: Keras does not wrap it in a tracked structure.
            self._variable_groups = (tuple(critics), tuple(targets),
                                     trainable_ids.index(id(self.log_alpha)))
        critics, targets, log_alpha = self._variable_groups
        return {"critics": critics, "targets": targets, "log_alpha": log_alpha}

    def _q_values(self, critics, observations, actions, task_ids):
        return [ops.reshape(critic((observations, actions, task_ids)), (-1,))
                for critic in critics]

    def sac_losses(self, trainable, non_trainable, batch, next_noise, noise):
        """The three SAC losses (summed) as a function of values (NOTE 2).

        Args:
            trainable, non_trainable: values of the model's variables.
            batch: the replay batch (a dict, see the class docstring).
            next_noise, noise: standard normal draws (batch, action_dim) for
                the next action a' and the current action a~.

        Returns:
            `(total_loss, (logs, new_non_trainable))`.
        """
        variables = backend.step_variables(self)
        batch = {key: ops.convert_to_tensor(value) for key, value in batch.items()}
        next_noise, noise = ops.convert_to_tensor(next_noise), ops.convert_to_tensor(noise)
        groups = self._groups()
        critic_positions = {p for group in groups["critics"] for p in group}
        alpha_position = groups["log_alpha"]
        task_ids = ops.cast(batch["task_ids"], "int32")
        observations = batch["observations"]
        next_observations = batch["next_observations"]
        rewards = ops.reshape(batch["rewards"], (-1,))

        # Values seen by the actor loss: critics held fixed; and by the
        # critic and actor losses: temperatures held fixed (NOTE 2).
        held = [ops.stop_gradient(value) if (position in critic_positions
                                             or position == alpha_position)
                else value for position, value in enumerate(trainable)]
        log_alpha = trainable[alpha_position]
        alpha = ops.exp(ops.stop_gradient(log_alpha))
        task_alpha = ops.take(alpha, task_ids)
        if self.loss_balancing:
            weights = self.num_tasks * ops.softmax(-ops.stop_gradient(log_alpha))
            task_weights = ops.take(weights, task_ids)
        else:
            task_weights = ops.ones_like(rewards)

        all_variables = variables.trainable + variables.non_trainable
        with backend.stateless_scope(all_variables, held + list(non_trainable)):
            next_mean, next_log_std = self.actor((next_observations, task_ids))
            next_actions, next_log_prob = squashed_gaussian(
                next_mean, next_log_std, next_noise)
            next_q = ops.minimum(*self._q_values(
                self.target_critics, next_observations, next_actions, task_ids))
            targets = ops.stop_gradient(
                rewards + self.gamma * (next_q - task_alpha * next_log_prob))
        with backend.stateless_scope(all_variables, list(trainable) + list(non_trainable)):
            q_1, q_2 = self._q_values(self.critics, observations,
                                      batch["actions"], task_ids)
        critic_loss = ops.mean(task_weights * 0.5 * (
            ops.square(q_1 - targets) + ops.square(q_2 - targets)))
        with backend.stateless_scope(all_variables, held + list(non_trainable)) as scope:
            mean, log_std = self.actor((observations, task_ids))
            actions, log_prob = squashed_gaussian(mean, log_std, noise)
            policy_q = ops.minimum(*self._q_values(
                self.critics, observations, actions, task_ids))
        new_non_trainable = backend.scope_values(
            scope, variables.non_trainable, non_trainable)
        actor_loss = ops.mean(task_weights * (task_alpha * log_prob - policy_q))
        alpha_loss = ops.mean(-ops.take(log_alpha, task_ids) * ops.stop_gradient(
            log_prob + self.target_entropy))
        logs = {
            "critic_loss": critic_loss, "actor_loss": actor_loss,
            "alpha_loss": alpha_loss, "alpha": ops.mean(alpha),
            "q": ops.mean(q_1), "entropy": -ops.mean(log_prob),
        }
        return critic_loss + actor_loss + alpha_loss, (logs, new_non_trainable)

    def compute_train_step(self, state, data):
        batch = data[0] if isinstance(data, (tuple, list)) else data
        variables = backend.step_variables(self)
        shape = (ops.shape(batch["observations"])[0], self.action_dim)
        with backend.stateless_scope(variables.non_trainable, state.non_trainable) as scope:
            next_noise = keras.random.normal(shape, seed=self.noise_seed)
            noise = keras.random.normal(shape, seed=self.noise_seed)
        non_trainable = backend.scope_values(
            scope, variables.non_trainable, state.non_trainable)
        (_, (logs, non_trainable)), grads = backend.value_and_grad(
            self.sac_losses, has_aux=True)(
                state.trainable, non_trainable, batch, next_noise, noise)
        trainable, optimizer = self.apply_gradients(state, grads)
        non_trainable = self.polyak_update(trainable, non_trainable)
        return logs, StepState(trainable, non_trainable, optimizer, state.metrics)

    def polyak_update(self, trainable, non_trainable):
        """Target critics <- tau * critics + (1 - tau) * targets."""
        groups = self._groups()
        non_trainable = list(non_trainable)
        for critic, target in zip(groups["critics"], groups["targets"], strict=True):
            for source, destination in zip(critic, target, strict=True):
                non_trainable[destination] = (
                    self.tau * trainable[source]
                    + (1.0 - self.tau) * non_trainable[destination])
        return non_trainable

    def get_config(self):
        config = super().get_config()
        config.update(
            actor=keras.saving.serialize_keras_object(self.actor),
            critic=self._critic_serialized,
            num_tasks=self.num_tasks, observation_dim=self.observation_dim,
            action_dim=self.action_dim, gamma=self.gamma, tau=self.tau,
            target_entropy=self.target_entropy,
            initial_log_alpha=self.initial_log_alpha,
            loss_balancing=self.loss_balancing, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["actor"] = keras.saving.deserialize_keras_object(config["actor"])
        config["critic"] = keras.saving.deserialize_keras_object(config["critic"])
        return cls(**config)
