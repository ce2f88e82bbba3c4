"""`MetaLearner`: the bilevel step against NumPy, training, checks, backends.

The reference problem (`_Bilinear`): prediction `x A e_t` with meta
parameters `A (in, d)` and fast parameters `e_t (d,)` from a learned
initialisation `e_0`, MSE loss. The inner loop is run in float64 NumPy; the
first-order meta-gradient is written out by hand, the second-order one is
the central finite difference of the NumPy outer loss (float64).
"""

import keras
import numpy as np
import pytest
from keras import ops

from tests.harness import assert_same_across_backends
from training.meta_learning import MetaLearner, MetaNetwork
from zoo.hypernetworks.hyperteacher import Hyperteacher
from zoo.hypernetworks.learners import HypernetworkLearner

TASKS, SUPPORT, QUERY, IN, DIM = 2, 4, 5, 3, 2
INNER_STEPS, OUTER_LR = 2, 0.5


class _Bilinear(MetaNetwork):
    """predictions[t, n] = x[t, n] @ A @ e_t; A meta, e fast."""

    def __init__(self, dim=DIM, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def build(self, inputs_shape):
        self.meta_kernel = self.add_weight(
            name="meta_kernel", shape=(inputs_shape[-1], self.dim))
        self.fast_init = self.add_weight(name="fast_init", shape=(self.dim,))

    @property
    def fast_variables(self):
        return [self.fast_init]

    def adapted_call(self, features, fast_params, training=False):
        projected = ops.matmul(features, self.meta_kernel)
        return ops.einsum("tnd,td->tn", projected, fast_params[0])[..., None]

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (1,)


def _problem():
    """Float64 meta-batch and initial weights (A, e_0)."""
    rng = np.random.default_rng(0)
    arrays = dict(
        support_inputs=rng.normal(size=(TASKS, SUPPORT, IN)),
        support_targets=rng.normal(size=(TASKS, SUPPORT, 1)),
        query_inputs=rng.normal(size=(TASKS, QUERY, IN)),
        query_targets=rng.normal(size=(TASKS, QUERY, 1)),
    )
    return arrays, rng.normal(size=(IN, DIM)) * 0.5, rng.normal(size=DIM) * 0.5


# -- NumPy reference (float64). -------------------------------------------------
def _mse_grad(inputs, targets, meta_kernel, fast):
    """Per-task d/de_t of mean_n (x A e_t - y)^2, and the residuals."""
    projected = inputs @ meta_kernel
    residuals = np.einsum("tnd,td->tn", projected, fast) - targets[..., 0]
    grad = 2.0 / inputs.shape[1] * np.einsum("tnd,tn->td", projected, residuals)
    return grad, residuals


class _NumpyInner:
    """The inner optimisers of NOTE 3, in NumPy: sgd or optax-style adamw."""

    def __init__(self, name, lr, weight_decay=0.0, b1=0.9, b2=0.999,
                 eps=1e-8, eps_root=1e-16):
        self.name, self.lr, self.wd = name, lr, weight_decay
        self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root

    def run(self, batch, meta_kernel, fast_init, steps):
        fast = np.broadcast_to(fast_init, (TASKS, DIM)).copy()
        first = np.zeros_like(fast)
        second = np.zeros_like(fast)
        for step in range(steps):
            grad, _ = _mse_grad(batch["support_inputs"],
                                batch["support_targets"], meta_kernel, fast)
            if self.name == "sgd":
                fast = fast - self.lr * (grad + self.wd * fast)
                continue
            count = step + 1
            first = self.b1 * first + (1 - self.b1) * grad
            second = self.b2 * second + (1 - self.b2) * grad**2
            first_hat = first / (1 - self.b1**count)
            second_hat = second / (1 - self.b2**count)
            direction = first_hat / (np.sqrt(second_hat + self.eps_root)
                                     + self.eps)
            fast = fast - self.lr * (direction + self.wd * fast)
        return fast


def _outer_loss(batch, meta_kernel, fast_init, inner):
    fast = inner.run(batch, meta_kernel, fast_init, INNER_STEPS)
    _, residuals = _mse_grad(batch["query_inputs"], batch["query_targets"],
                             meta_kernel, fast)
    return np.mean(residuals**2)


def _central_difference(fn, point, step=1e-6):
    grad = np.zeros_like(point)
    for index in np.ndindex(point.shape):
        plus, minus = point.copy(), point.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (fn(plus) - fn(minus)) / (2 * step)
    return grad


def _second_order_grads(batch, meta_kernel, fast_init, inner):
    return (
        _central_difference(
            lambda a: _outer_loss(batch, a, fast_init, inner), meta_kernel),
        _central_difference(
            lambda e: _outer_loss(batch, meta_kernel, e, inner), fast_init),
    )


def _first_order_grads(batch, meta_kernel, fast_init, inner):
    """Inner gradients are constants: A gets the direct query gradient at the
    adapted e_t; d e_t^k / d e_0 is (1 - lr * wd)^k I (only the decay term
    of the inner update depends on e, for SGD and AdamW alike)."""
    fast = inner.run(batch, meta_kernel, fast_init, INNER_STEPS)
    _, residuals = _mse_grad(batch["query_inputs"], batch["query_targets"],
                             meta_kernel, fast)
    scale = 2.0 / (QUERY * TASKS)  # per-task mean, then mean over tasks
    grad_kernel = scale * np.einsum("tni,tn,td->id", batch["query_inputs"],
                                    residuals, fast)
    grad_fast = scale * np.einsum("tnd,tn->d",
                                  batch["query_inputs"] @ meta_kernel,
                                  residuals)
    return grad_kernel, grad_fast * (1 - inner.lr * inner.wd) ** INNER_STEPS


def _one_keras_step(batch, meta_kernel, fast_init, inner, first_order):
    network = _Bilinear()
    model = MetaLearner(network, inner_steps=INNER_STEPS,
                        inner_optimizer=inner.name,
                        inner_learning_rate=inner.lr,
                        inner_weight_decay=inner.wd,
                        first_order=first_order, loss="mse")
    model.compile(optimizer=keras.optimizers.SGD(OUTER_LR))
    float_batch = {k: v.astype("float32") for k, v in batch.items()}
    model.build({k: v.shape for k, v in float_batch.items()})
    model.set_weights([meta_kernel.astype("float32"),
                       fast_init.astype("float32")])
    logs = model.fit(float_batch, batch_size=TASKS, epochs=1, shuffle=False,
                     verbose=0).history
    return model.get_weights(), logs["loss"][0]


_INNER = {
    "sgd": _NumpyInner("sgd", 0.3),
    # Weight decay makes d e^k / d e_0 = 0.98 I in first order (checked).
    "adamw": _NumpyInner("adamw", 0.1, weight_decay=0.1),
}


@pytest.mark.parametrize("first_order", [False, True],
                         ids=["second_order", "first_order"])
@pytest.mark.parametrize("inner_name", ["sgd", "adamw"])
def test_one_outer_step_matches_numpy_reference(inner_name, first_order):
    batch, meta_kernel, fast_init = _problem()
    inner = _INNER[inner_name]
    grads = (_first_order_grads if first_order else _second_order_grads)(
        batch, meta_kernel, fast_init, inner)
    weights, loss = _one_keras_step(batch, meta_kernel, fast_init, inner,
                                    first_order)
    # The logged loss is the outer loss before the update.
    np.testing.assert_allclose(
        loss, _outer_loss(batch, meta_kernel, fast_init, inner), rtol=1e-5)
    expected = [meta_kernel - OUTER_LR * grads[0],
                fast_init - OUTER_LR * grads[1]]
    for got, want in zip(weights, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("inner_name", ["sgd", "adamw"])
def test_first_and_second_order_updates_differ(inner_name):
    batch, meta_kernel, fast_init = _problem()
    inner = _INNER[inner_name]
    first = _first_order_grads(batch, meta_kernel, fast_init, inner)
    second = _second_order_grads(batch, meta_kernel, fast_init, inner)
    # The reference itself tells them apart (the test above has teeth) ...
    assert np.abs(first[0] - second[0]).max() > 1e-2
    # ... and so do the two Keras steps.
    first_weights, _ = _one_keras_step(batch, meta_kernel, fast_init, inner,
                                       True)
    second_weights, _ = _one_keras_step(batch, meta_kernel, fast_init, inner,
                                        False)
    assert np.abs(first_weights[0] - second_weights[0]).max() > 5e-3


# -- Training, evaluation. ------------------------------------------------------
def test_meta_training_on_the_hyperteacher_lowers_the_query_loss():
    teacher = Hyperteacher(seed=0)
    rng = np.random.default_rng(0)
    train = [teacher.sample("train", 8, 16, 16, rng).as_inputs()
             for _ in range(40)]
    held_out = teacher.sample("test", 32, 16, 32,
                              np.random.default_rng(1)).as_inputs()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, index):
            return train[index]

    model = MetaLearner(
        HypernetworkLearner(teacher.output_dim, hidden_units=16,
                            num_hidden_layers=2, embedding_dim=4),
        inner_steps=3, inner_learning_rate=0.3, loss=teacher.loss)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    before = model.evaluate(held_out, batch_size=32, verbose=0,
                            return_dict=True)
    model.fit(Batches(), epochs=1, verbose=0)
    after = model.evaluate(held_out, batch_size=32, verbose=0,
                           return_dict=True)
    # Untrained: about KL to the uniform prediction (~2.0); measured after
    # 40 steps: 1.73-1.76 on every backend.
    assert after["loss"] < 0.9 * before["loss"], (before, after)


def _task_offsets_batch(num_tasks=6, seed=0):
    """Regression tasks y = x w + b_t: only the per-task offset differs."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(num_tasks, 16, 2)).astype("float32")
    offsets = rng.normal(size=(num_tasks, 1, 1)).astype("float32") * 2
    targets = inputs @ np.array([[1.0], [-1.0]], "float32") + offsets
    return dict(support_inputs=inputs[:, :8], support_targets=targets[:, :8],
                query_inputs=inputs[:, 8:], query_targets=targets[:, 8:])


class _TaskBias(MetaNetwork):
    """y = x w + b_t with the bias fast (the MetaLearner doctest's network)."""

    def build(self, inputs_shape):
        self.kernel = self.add_weight(name="kernel",
                                      shape=(inputs_shape[-1], 1))
        self.bias = self.add_weight(name="bias", shape=(1,),
                                    initializer="zeros")

    @property
    def fast_variables(self):
        return [self.bias]

    def adapted_call(self, features, fast_params, training=False):
        return ops.matmul(features, self.kernel) + fast_params[0][:, None]

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (1,)


def test_evaluate_adapts_on_the_support_set_and_keeps_the_weights():
    batch = _task_offsets_batch()
    # Near the true kernel, zero offsets: only adaptation can fit the tasks.
    weights = [np.array([[0.9], [-1.1]], "float32"), np.zeros(1, "float32")]
    losses, models = {}, {}
    for steps in (0, 5):
        model = models[steps] = MetaLearner(
            _TaskBias(), inner_steps=steps, inner_optimizer="sgd",
            inner_learning_rate=0.25, loss="mse")
        model.compile(optimizer=keras.optimizers.Adam(0.05))
        model.build({k: v.shape for k, v in batch.items()})
        model.set_weights(weights)
        losses[steps] = model.evaluate(batch, batch_size=3, verbose=0,
                                       return_dict=True)["loss"]
        for got, want in zip(model.get_weights(), weights, strict=True):
            np.testing.assert_array_equal(got, want)
    # Without adaptation: the plain MSE of x w (zero offsets) on the query.
    unadapted = np.mean(
        (batch["query_inputs"] @ weights[0] - batch["query_targets"]) ** 2)
    np.testing.assert_allclose(losses[0], unadapted, rtol=1e-5)
    # The offsets are learned from the support set in the inner loop only;
    # evaluate, predict and adapt agree.
    assert losses[5] < 0.2 * losses[0], losses
    adaptation = models[5].adapt(batch)
    np.testing.assert_allclose(losses[5], adaptation.query_loss, rtol=1e-5)
    np.testing.assert_allclose(
        models[5].predict(batch, batch_size=3, verbose=0),
        adaptation.query_predictions, atol=1e-5)


# -- Bad input. -----------------------------------------------------------------
def _model(**kwargs):
    return MetaLearner(_TaskBias(), **{"loss": "mse", **kwargs})


def _bad_batches():
    good = _task_offsets_batch(num_tasks=3)
    yield "tasks", {**good, "query_targets": good["query_targets"][:2]}
    yield "empty", {**good, "support_inputs": good["support_inputs"][:, :0],
                    "support_targets": good["support_targets"][:, :0]}
    yield "same example shape", {
        **good, "query_inputs": np.concatenate(
            [good["query_inputs"], good["query_inputs"]], -1)}
    yield "missing", {k: v for k, v in good.items() if k != "query_targets"}
    yield "unknown", {**good, "latents": np.zeros((3, 2), "float32")}
    yield "disagree", {**good, "support_targets": good["support_targets"][:, :5]}
    yield "dict", good["support_inputs"]


@pytest.mark.parametrize("message, batch", list(_bad_batches()),
                         ids=[name for name, _ in _bad_batches()])
def test_bad_meta_batches_raise_clear_errors(message, batch):
    with pytest.raises(ValueError, match=message):
        _model(inner_steps=1).adapt(batch)


def test_bad_meta_batch_in_fit_raises():
    batch = _task_offsets_batch(num_tasks=3)
    batch["support_inputs"] = batch["support_inputs"][:, :0]
    batch["support_targets"] = batch["support_targets"][:, :0]
    model = _model(inner_steps=1)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="empty"):
        model.fit(batch, batch_size=3, verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"inner_steps": -1}, "inner_steps"),
    ({"inner_steps": 2.5}, "inner_steps"),
    ({"inner_steps": True}, "inner_steps"),
    ({"inner_optimizer": "adam"}, "inner_optimizer"),
    ({"inner_learning_rate": 0.0}, "inner_learning_rate"),
    ({"loss": "hinge"}, "loss"),
])
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)


def test_network_must_be_a_meta_network():
    with pytest.raises(ValueError, match="MetaNetwork"):
        MetaLearner(keras.layers.Dense(3))


# -- One step, every backend. ----------------------------------------------------
_CROSS_BACKEND_STEP = """
import json, numpy as np, keras
from training.meta_learning import MetaLearner
from zoo.hypernetworks.learners import HypernetworkLearner
rng = np.random.default_rng(3)
batch = dict(
    support_inputs=rng.uniform(-1, 1, (3, 6, 5)).astype("float32"),
    query_inputs=rng.uniform(-1, 1, (3, 7, 5)).astype("float32"))
for key in ("support", "query"):
    logits = rng.normal(size=batch[key + "_inputs"].shape[:2] + (4,))
    batch[key + "_targets"] = (np.exp(logits) / np.exp(logits).sum(-1,
        keepdims=True)).astype("float32")
model = MetaLearner(
    HypernetworkLearner(4, hidden_units=6, num_hidden_layers=1,
                        embedding_dim=3, name="hnet"),
    inner_steps=3, inner_optimizer="adamw", inner_learning_rate=0.1,
    inner_weight_decay=0.01, first_order=False, loss="kl", name="learner")
model.compile(optimizer=keras.optimizers.SGD(0.5))
model.build({{k: v.shape for k, v in batch.items()}})
initial = [(rng.normal(size=w.shape) * 0.5).astype("float32")
           for w in model.get_weights()]
model.set_weights(initial)
loss = model.fit(batch, batch_size=3, epochs=1, shuffle=False,
                 verbose=0).history["loss"][0]
weights = model.get_weights()
print(json.dumps(dict(
    loss=float(loss), weights=[w.tolist() for w in weights],
    moved={{v.path: float(np.abs(w - i).max())
           for v, w, i in zip(model.weights, weights, initial)}})))
"""


def test_second_order_adamw_step_is_the_same_on_every_backend():
    document = assert_same_across_backends(_CROSS_BACKEND_STEP, atol=1e-4,
                                           rtol=1e-4)
    # The step does something: every trainable weight moved (the fast output
    # bias init is non-trainable, NOTE 2 of learners.py, and stays).
    moved = document["moved"]
    for path, change in moved.items():
        if path.endswith("output_bias_init"):
            assert change == 0.0, path
        else:
            assert change > 1e-3, (path, change)
