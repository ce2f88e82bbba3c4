"""Gradient-based meta-learning: one bilevel train step for every backend.

For a meta-batch of T tasks, each with a support set S_t and a query set
Q_t, the network's parameters are split into meta parameters `theta` and
the initialisation `phi_0` of fast parameters (both learned in the outer
loop; `MetaNetwork.fast_variables` lists `phi_0`):

    inner loop (k steps, per task, from phi_t^0 = phi_0):
        phi_t^{j+1} = InnerOpt(phi_t^j, grad_phi L(S_t; theta, phi_t^j))
    outer loss:
        L_outer(theta, phi_0) = 1/T sum_t L(Q_t; theta, phi_t^k)

and the outer optimizer (the one given to `compile`) updates
(theta, phi_0) with the gradient of L_outer. Second order (default)
differentiates through the inner loop; `first_order=True` stops the
gradient of every inner gradient, so d phi_t^k / d phi_0 = I (first-order
MAML; (1 - lr * weight_decay)^k I with inner weight decay, whose term is
not stopped) and theta gets only the direct gradient at phi_t^k.

This one step covers MAML (every parameter fast), ANIL (only the head fast;
the body's features are computed once per task, `MetaNetwork.task_features`)
and modular hypernetworks (fast: task embeddings and base biases; meta: the
hypernetwork). It knows no model family: a network subclasses
`MetaNetwork`.

NOTE 1 (tasks batched, no vmap): the fast parameters carry a leading task
  axis, (T, *shape), and the network applies task t's parameters to task
  t's examples (einsum over the task axis). The inner gradient is taken of
  the SUM over tasks of the per-task support losses: task t's loss depends
  only on phi_t, so its gradient w.r.t. phi_t is task t's own gradient.
  One gradient call per inner step then serves the whole meta-batch on
  every backend, where the authors' code uses `jax.vmap` over tasks (JAX
  only; torch.func.vmap does not compose with `torch.autograd.grad`, and
  TensorFlow's `vectorized_map` falls back to a loop on tapes).
NOTE 2 (compiled inner loop): `training.backend.fori_loop` is a `scan` on
  JAX and a `tf.while_loop` (with `maximum_iterations`, which XLA needs to
  differentiate it) on TensorFlow, so an inner loop of 100 steps (ANIL)
  compiles once instead of being unrolled; torch runs it eagerly.
NOTE 3 (AdamW inner optimiser, as optax.adamw): decoupled weight decay,
  p <- p - lr * (m_hat / (sqrt(v_hat + eps_root) + eps) + wd * p), bias
  corrected moments. `eps_root` (default 1e-16, optax's default is 0) keeps
  the second-order gradient of sqrt finite where an inner gradient is
  exactly 0 (a dead ReLU unit); it changes the update by less than 1e-8
  relative wherever v_hat > 1e-8.
NOTE 4 (losses): per-example losses are averaged per task (over the
  support or query mask when given), then summed over tasks for the inner
  gradient (NOTE 1) and averaged over tasks for the outer loss. "kl" is
  KL(targets || softmax(predictions)) (targets are probabilities, the
  hyperteacher's), "mse" the mean squared error over the last axis (the
  preferences grid world's Q-values), "sparse_categorical_crossentropy"
  for integer labels (the goals grid world's expert actions). Accuracy is
  the agreement of argmax(predictions) with argmax(targets) (or the label).
NOTE 5 (non-trainable state): BatchNorm-style statistics of the network
  are updated by the query forward pass only (not by the inner loop).
"""

from typing import NamedTuple

import keras
from keras import ops

from training import backend
from training.state import StepState
from training.step_model import StepModel

LOSSES = ("kl", "mse", "sparse_categorical_crossentropy")
INNER_OPTIMIZERS = ("sgd", "adamw")
_REQUIRED_KEYS = (
    "support_inputs",
    "support_targets",
    "query_inputs",
    "query_targets",
)
_OPTIONAL_KEYS = ("support_mask", "query_mask")


# -- Inner optimisers: functions of values, per task. ------------------------


class InnerSGD:
    """Plain gradient descent for the inner loop (with optional L2 decay).

        phi <- phi - lr * (g + weight_decay * phi)

    Example:

    >>> sgd = InnerSGD(learning_rate=0.5)
    >>> params, slots = sgd.update(0, [ops.ones(2)], [ops.ones(2)], sgd.init(
    ...     [ops.ones(2)]))
    >>> ops.convert_to_numpy(params[0]).tolist()
    [0.5, 0.5]
    """

    name = "sgd"

    def __init__(self, learning_rate, weight_decay=0.0):
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)

    def init(self, params):
        return []

    def update(self, step, params, grads, slots):
        return [
            p - self.learning_rate * (g + self.weight_decay * p)
            for p, g in zip(params, grads)
        ], slots

    def get_config(self):
        return {"learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay}


class InnerAdamW:
    """AdamW for the inner loop, as `optax.adamw` (NOTE 3).

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        phi <- phi - lr * (m_hat / (sqrt(v_hat + eps_root) + eps) + wd phi)

    with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t), t = step + 1.

    Example (the first step moves every coordinate by lr, Adam's sign step):

    >>> adamw = InnerAdamW(learning_rate=0.1)
    >>> params = [ops.convert_to_tensor([1.0, -2.0])]
    >>> new, _ = adamw.update(0, params, [ops.convert_to_tensor([3.0, -0.5])],
    ...                       adamw.init(params))
    >>> [round(float(v), 4) for v in ops.convert_to_numpy(new[0])]
    [0.9, -1.9]
    """

    name = "adamw"

    def __init__(self, learning_rate, weight_decay=0.0, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, epsilon_root=1e-16):
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.epsilon_root = float(epsilon_root)

    def init(self, params):
        return [[ops.zeros_like(p) for p in params],
                [ops.zeros_like(p) for p in params]]

    def update(self, step, params, grads, slots):
        first_moments, second_moments = slots
        count = ops.cast(step, "float32") + 1.0
        first_correction = 1.0 - ops.power(self.beta_1, count)
        second_correction = 1.0 - ops.power(self.beta_2, count)
        new_params, new_first, new_second = [], [], []
        for p, g, m, v in zip(params, grads, first_moments, second_moments):
            m = self.beta_1 * m + (1.0 - self.beta_1) * g
            v = self.beta_2 * v + (1.0 - self.beta_2) * ops.square(g)
            m_hat = m / ops.cast(first_correction, m.dtype)
            v_hat = v / ops.cast(second_correction, v.dtype)
            direction = m_hat / (
                ops.sqrt(v_hat + self.epsilon_root) + self.epsilon
            )
            new_params.append(
                p - self.learning_rate * (direction + self.weight_decay * p)
            )
            new_first.append(m)
            new_second.append(v)
        return new_params, [new_first, new_second]

    def get_config(self):
        return {"learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay, "beta_1": self.beta_1,
                "beta_2": self.beta_2, "epsilon": self.epsilon,
                "epsilon_root": self.epsilon_root}


def make_inner_optimizer(name, learning_rate, weight_decay=0.0):
    """`InnerSGD` or `InnerAdamW` by name ("sgd", "adamw")."""
    if name not in INNER_OPTIMIZERS:
        raise ValueError(
            f"`inner_optimizer` must be one of {INNER_OPTIMIZERS}; got "
            f"{name!r}."
        )
    if not learning_rate > 0:
        raise ValueError(
            f"`inner_learning_rate` must be > 0; got {learning_rate!r}."
        )
    cls = InnerSGD if name == "sgd" else InnerAdamW
    return cls(learning_rate, weight_decay=weight_decay)


# -- The network protocol. -----------------------------------------------------


class MetaNetwork(keras.layers.Layer):
    """Base class of the networks a `MetaLearner` adapts.

    A subclass creates its variables in `build(inputs_shape)` (inputs
    `(T, n, *input_shape)`: T tasks of n examples) and implements:

    * `fast_variables`: the variables whose values initialise the fast
      parameters (learned by the outer loop);
    * `adapted_call(features, fast_params, training=False)`: predictions
      `(T, n, *output_shape)` for features `(T, n, ...)` and fast parameter
      values with a leading task axis, `[(T, *v.shape) for v in
      fast_variables]` (NOTE 1): task t's values apply to task t's rows;
    * optionally `task_features(inputs, training=False)`: what depends on
      meta parameters only (ANIL's body), computed once per set and reused
      by every inner step (default: the inputs themselves);
    * `compute_output_shape(inputs_shape)`.

    Calling the network, `network(inputs)`, uses the initialisation for
    every task (no adaptation).
    """

    @property
    def fast_variables(self):
        raise NotImplementedError(
            f"{type(self).__name__} must list its fast variables."
        )

    def task_features(self, inputs, training=False):
        return inputs

    def adapted_call(self, features, fast_params, training=False):
        raise NotImplementedError(
            f"{type(self).__name__} must implement adapted_call."
        )

    def initial_fast_params(self, num_tasks):
        """The initialisation, one copy per task: `(T, *v.shape)` each."""
        # A copy (`tile`), not a view (`broadcast_to`): on torch, a view of
        # a variable taken under `no_grad` (evaluate, predict) says it
        # requires grad but gets zero inner gradients, so `evaluate` did
        # not adapt.
        return [
            ops.tile(
                ops.expand_dims(v.value, 0), (num_tasks,) + (1,) * len(v.shape)
            )
            for v in self.fast_variables
        ]

    def call(self, inputs, training=False):
        return self.adapted_call(
            self.task_features(inputs, training=training),
            self.initial_fast_params(ops.shape(inputs)[0]),
            training=training,
        )


class Adaptation(NamedTuple):
    """What adapting to a meta-batch gives (`MetaLearner.adapt`)."""

    fast_params: list  # adapted values, (T, *v.shape) per fast variable
    query_predictions: object  # (T, n_query, *output_shape)
    query_loss: object  # scalar: mean over tasks (NOTE 4)
    query_accuracy: object  # scalar
    task_query_losses: object  # (T,)
    task_query_accuracies: object  # (T,)


# -- The model. ----------------------------------------------------------------


@keras.saving.register_keras_serializable(package="modular_zoo")
class MetaLearner(StepModel):
    """Bilevel meta-learning of a `MetaNetwork` with `model.fit`.

    See the module docstring for the math. `fit` takes a dataset whose
    batches are meta-batches: dicts with `support_inputs (T, n_s, ...)`,
    `support_targets (T, n_s, ...)`, `query_inputs (T, n_q, ...)`,
    `query_targets (T, n_q, ...)` and optionally `support_mask (T, n_s)`,
    `query_mask (T, n_q)`; `evaluate` adapts on the support sets and reports
    the query loss and accuracy; `predict` returns the adapted query
    predictions. The outer optimizer is the one given to `compile` (e.g.
    `keras.optimizers.AdamW(1e-3, global_clipnorm=1.0)`).

    Args:
        network: A `MetaNetwork`.
        inner_steps: Non-negative integer, inner-loop steps per task (k).
        inner_optimizer: `"adamw"` (default, as the authors' code) or
            `"sgd"`.
        inner_learning_rate: Positive float.
        inner_weight_decay: Float >= 0, the inner optimiser's weight decay.
        first_order: Boolean, stop the gradient of the inner gradients.
        loss: `"kl"`, `"mse"` or `"sparse_categorical_crossentropy"`
            (NOTE 4).
        **kwargs: `keras.Model` arguments (`name`).

    Logs: `loss` (outer query loss) and `accuracy`; `val_` versions from
    `validation_data`.

    Example:

    >>> from training.meta_learning import MetaLearner, MetaNetwork
    >>> class TaskBias(MetaNetwork):  # y = x w + b_t, b_t fast
    ...     def build(self, inputs_shape):
    ...         self.w = self.add_weight(shape=(inputs_shape[-1], 1))
    ...         self.b = self.add_weight(shape=(1,), initializer="zeros")
    ...     @property
    ...     def fast_variables(self):
    ...         return [self.b]
    ...     def adapted_call(self, features, fast_params, training=False):
    ...         return ops.matmul(features, self.w) + fast_params[0][:, None]
    ...     def compute_output_shape(self, inputs_shape):
    ...         return tuple(inputs_shape[:-1]) + (1,)
    >>> model = MetaLearner(TaskBias(), inner_steps=5, inner_optimizer="sgd",
    ...                     inner_learning_rate=0.5, loss="mse")
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(4, 6, 2)).astype("float32")
    >>> offsets = rng.normal(size=(4, 1, 1)).astype("float32")
    >>> batch = dict(support_inputs=x, support_targets=x[..., :1] + offsets,
    ...              query_inputs=x, query_targets=x[..., :1] + offsets)
    >>> model.compile(optimizer=keras.optimizers.Adam(0.05))
    >>> history = model.fit(batch, batch_size=2, epochs=20, verbose=0)
    >>> losses = history.history["loss"]
    >>> bool(losses[-1] < 0.5 * losses[0])
    True
    """

    donate_state = True  # one apply_gradients, no read of the old values

    def __init__(
        self,
        network,
        inner_steps=10,
        inner_optimizer="adamw",
        inner_learning_rate=0.3,
        inner_weight_decay=0.0,
        first_order=False,
        loss="kl",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(network, MetaNetwork):
            raise ValueError(
                "`network` must be a training.meta_learning.MetaNetwork; "
                f"got {type(network).__name__}."
            )
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) \
                or inner_steps < 0:
            raise ValueError(
                f"`inner_steps` must be an integer >= 0; got {inner_steps!r}."
            )
        if loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}; got {loss!r}.")
        self.network = network
        self.inner_steps = inner_steps
        self.inner_optimizer_name = inner_optimizer
        self.inner_learning_rate = float(inner_learning_rate)
        self.inner_weight_decay = float(inner_weight_decay)
        self.inner_optimizer = make_inner_optimizer(
            inner_optimizer, inner_learning_rate, inner_weight_decay
        )
        self.first_order = bool(first_order)
        self.loss_name = loss
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    # -- Building and checking. ------------------------------------------------
    def build(self, inputs_shape):
        shapes = self._check_batch_shapes(inputs_shape)
        if not self.network.built:
            self.network.build(shapes["support_inputs"])
        self.built = True

    def compute_output_shape(self, inputs_shape):
        return self.network.compute_output_shape(inputs_shape["query_inputs"])

    def _check_batch_shapes(self, shapes):
        """The batch's shapes, or a ValueError saying what is wrong."""
        if not isinstance(shapes, dict):
            raise ValueError(
                "A MetaLearner takes a dict meta-batch with keys "
                f"{_REQUIRED_KEYS} (and optionally {_OPTIONAL_KEYS}); got "
                f"{type(shapes).__name__}."
            )
        missing = [k for k in _REQUIRED_KEYS if k not in shapes]
        unknown = [k for k in shapes if k not in _REQUIRED_KEYS + _OPTIONAL_KEYS]
        if missing or unknown:
            raise ValueError(
                f"Meta-batch keys: missing {missing}, unknown {unknown}; "
                f"expected {_REQUIRED_KEYS} and optionally {_OPTIONAL_KEYS}."
            )
        shapes = {k: tuple(v) for k, v in shapes.items()}
        for key, rank in (("support_inputs", 3), ("query_inputs", 3),
                          ("support_targets", 2), ("query_targets", 2)):
            if len(shapes[key]) < rank:
                raise ValueError(
                    f"`{key}` must have shape (tasks, examples, ...) of rank "
                    f">= {rank}; got {shapes[key]}."
                )
        tasks = {k: s[0] for k, s in shapes.items() if s[0] is not None}
        if len(set(tasks.values())) > 1:
            raise ValueError(
                f"Every entry of a meta-batch needs the same number of "
                f"tasks (first axis); got {tasks}."
            )
        for kind in ("support", "query"):
            sizes = {
                k: shapes[k][1]
                for k in (f"{kind}_inputs", f"{kind}_targets", f"{kind}_mask")
                if k in shapes
            }
            known = {k: n for k, n in sizes.items() if n is not None}
            if len(set(known.values())) > 1:
                raise ValueError(
                    f"The {kind} set's entries disagree on the number of "
                    f"examples (second axis): {known}."
                )
            if any(n == 0 for n in known.values()):
                raise ValueError(
                    f"The {kind} sets are empty (0 examples per task); each "
                    "task needs at least one support and one query example."
                )
            mask = f"{kind}_mask"
            if mask in shapes and len(shapes[mask]) != 2:
                raise ValueError(
                    f"`{mask}` must have shape (tasks, examples); got "
                    f"{shapes[mask]}."
                )
        if shapes["support_inputs"][2:] != shapes["query_inputs"][2:]:
            raise ValueError(
                "Support and query inputs must have the same example shape; "
                f"got {shapes['support_inputs'][2:]} and "
                f"{shapes['query_inputs'][2:]}."
            )
        if shapes["support_targets"][2:] != shapes["query_targets"][2:]:
            raise ValueError(
                "Support and query targets must have the same example shape; "
                f"got {shapes['support_targets'][2:]} and "
                f"{shapes['query_targets'][2:]}."
            )
        return shapes

    def _batch(self, data):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._check_batch_shapes(
            {k: v.shape for k, v in batch.items()}
            if isinstance(batch, dict) else batch
        )
        return batch

    # -- Losses (NOTE 4). --------------------------------------------------------
    def _example_losses(self, targets, predictions):
        predictions = ops.cast(predictions, "float32")
        if self.loss_name == "mse":
            return ops.mean(
                ops.square(predictions - ops.cast(targets, "float32")), axis=-1
            )
        log_probs = ops.log_softmax(predictions, axis=-1)
        if self.loss_name == "kl":
            targets = ops.cast(targets, "float32")
            log_targets = ops.log(ops.maximum(targets, 1e-30))
            return ops.sum(targets * (log_targets - log_probs), axis=-1)
        labels = ops.expand_dims(ops.cast(targets, "int32"), -1)
        return -ops.squeeze(ops.take_along_axis(log_probs, labels, -1), -1)

    def _example_hits(self, targets, predictions):
        predicted = ops.argmax(predictions, axis=-1)
        if self.loss_name == "sparse_categorical_crossentropy":
            wanted = ops.cast(targets, predicted.dtype)
        else:
            wanted = ops.argmax(targets, axis=-1)
        return ops.cast(ops.equal(predicted, wanted), "float32")

    @staticmethod
    def _task_means(values, mask):
        """(T, n, ...) per-example values -> (T,) per-task (masked) means."""
        values = ops.reshape(values, (ops.shape(values)[0],
                                      ops.shape(values)[1], -1))
        values = ops.mean(values, axis=-1)
        if mask is None:
            return ops.mean(values, axis=1)
        mask = ops.cast(mask, "float32")
        return ops.sum(values * mask, axis=1) / ops.maximum(
            ops.sum(mask, axis=1), 1.0
        )

    # -- The bilevel computation, written once. -------------------------------------
    def adapt_values(self, batch, training=False):
        """Adapts to every task of `batch` with the variables' current
        values (in a stateless scope: the scope's values). Returns an
        `Adaptation`."""
        network = self.network
        support_features = network.task_features(
            batch["support_inputs"], training=training
        )
        query_features = network.task_features(
            batch["query_inputs"], training=training
        )
        support_targets = batch["support_targets"]
        support_mask = batch.get("support_mask")

        def support_objective(fast_params):
            predictions = network.adapted_call(
                support_features, fast_params, training=training
            )
            losses = self._example_losses(support_targets, predictions)
            return ops.sum(self._task_means(losses, support_mask))  # NOTE 1

        inner_gradient = backend.value_and_grad(support_objective)

        def inner_step(step, carry):
            fast_params, slots = carry
            _, grads = inner_gradient(fast_params)
            if self.first_order:
                grads = [ops.stop_gradient(g) for g in grads]
            return self.inner_optimizer.update(step, fast_params, grads, slots)

        fast_params = network.initial_fast_params(
            ops.shape(batch["support_inputs"])[0]
        )
        fast_params, _ = backend.fori_loop(  # NOTE 2
            self.inner_steps,
            inner_step,
            (fast_params, self.inner_optimizer.init(fast_params)),
        )
        query_predictions = network.adapted_call(
            query_features, fast_params, training=training
        )
        query_mask = batch.get("query_mask")
        task_losses = self._task_means(
            self._example_losses(batch["query_targets"], query_predictions),
            query_mask,
        )
        task_accuracies = self._task_means(
            self._example_hits(batch["query_targets"], query_predictions),
            query_mask,
        )
        return Adaptation(
            fast_params=list(fast_params),
            query_predictions=query_predictions,
            query_loss=ops.mean(task_losses),
            query_accuracy=ops.mean(task_accuracies),
            task_query_losses=task_losses,
            task_query_accuracies=task_accuracies,
        )

    def meta_objective(self, trainable, non_trainable, batch, training=True):
        """Outer loss as a function of the trainable values (differentiated)
        and the non-trainable ones. Returns `(loss, (adaptation,
        new_non_trainable))`."""
        variables = backend.step_variables(self)
        with backend.stateless_scope(
            variables.trainable + variables.non_trainable,
            list(trainable) + list(non_trainable),
        ) as scope:
            adaptation = self.adapt_values(batch, training=training)
        new_non_trainable = backend.scope_values(
            scope, variables.non_trainable, non_trainable
        )
        return adaptation.query_loss, (adaptation, new_non_trainable)

    def _update_metrics(self, metrics, adaptation, num_tasks):
        variables = backend.step_variables(self).metrics
        with backend.stateless_scope(variables, metrics) as scope:
            self.loss_tracker.update_state(
                adaptation.query_loss, sample_weight=num_tasks
            )
            self.accuracy_tracker.update_state(
                adaptation.query_accuracy, sample_weight=num_tasks
            )
            logs = {m.name: m.result() for m in self.metrics}
        return logs, backend.scope_values(scope, variables, metrics)

    def compute_train_step(self, state, data):
        batch = self._batch(data)
        (_, (adaptation, non_trainable)), grads = backend.value_and_grad(
            self.meta_objective, has_aux=True
        )(state.trainable, state.non_trainable, batch, True)
        trainable, optimizer = self.apply_gradients(state, grads)
        logs, metrics = self._update_metrics(
            state.metrics, adaptation, ops.shape(batch["support_inputs"])[0]
        )
        return logs, StepState(trainable, non_trainable, optimizer, metrics)

    def compute_test_step(self, state, data):
        batch = self._batch(data)
        _, (adaptation, non_trainable) = self.meta_objective(
            state.trainable, state.non_trainable, batch, training=False
        )
        logs, metrics = self._update_metrics(
            state.metrics, adaptation, ops.shape(batch["support_inputs"])[0]
        )
        return logs, state._replace(non_trainable=non_trainable,
                                    metrics=metrics)

    def call(self, inputs, training=False):
        """Adapted query predictions `(T, n_query, ...)` for a meta-batch."""
        return self.adapt_values(inputs, training=training).query_predictions

    def adapt(self, batch):
        """Adapts to `batch` (a dict meta-batch) with the current weights.

        Returns:
            An `Adaptation` of numpy arrays: the adapted fast parameters,
            query predictions, and the query loss and accuracy (per task
            and averaged).
        """
        batch = self._batch(batch)
        if not self.built:
            self.build({k: v.shape for k, v in batch.items()})
        batch = {k: ops.convert_to_tensor(v) for k, v in batch.items()}
        adaptation = self.adapt_values(batch, training=False)
        return Adaptation(*(
            [ops.convert_to_numpy(p) for p in value]
            if isinstance(value, list) else ops.convert_to_numpy(value)
            for value in adaptation
        ))

    def get_config(self):
        config = super().get_config()
        config.update(
            network=keras.saving.serialize_keras_object(self.network),
            inner_steps=self.inner_steps,
            inner_optimizer=self.inner_optimizer_name,
            inner_learning_rate=self.inner_learning_rate,
            inner_weight_decay=self.inner_weight_decay,
            first_order=self.first_order,
            loss=self.loss_name,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"]
        )
        return cls(**config)
