"""The meta-learners (`HypernetworkLearner`, `ANILLearner`, `MAMLLearner`):
shapes, NumPy forward passes, per-task fast parameters, ANIL's feature
reuse, save/load and argument checks."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from tests.harness import current_backend
from training import backend
from training.meta_learning import MetaLearner
from zoo.hypernetworks.learners import (
    ANILLearner,
    HypernetworkLearner,
    MAMLLearner,
)

TASKS, SHOTS, IN, OUT = 3, 4, 5, 2

LEARNERS = {
    "hnet_linear": lambda: HypernetworkLearner(
        OUT, hidden_units=6, num_hidden_layers=2, embedding_dim=3),
    "hnet_mlp": lambda: HypernetworkLearner(
        OUT, hidden_units=6, num_hidden_layers=1, embedding_dim=3,
        generator="mlp", generator_units=4, generator_depth=2),
    "anil": lambda: ANILLearner(OUT, hidden_units=6, num_hidden_layers=2),
    "maml": lambda: MAMLLearner(OUT, hidden_units=6, num_hidden_layers=2),
}

FAST_SHAPES = {
    "hnet_linear": [(3, 3), (OUT,)],  # 3 generated layers x embedding 3
    "hnet_mlp": [(2, 3), (OUT,)],
    "anil": [(6, OUT), (OUT,)],
    "maml": [(IN, 6), (6,), (6, 6), (6,), (6, OUT), (OUT,)],
}


def _inputs(tasks=TASKS, shots=SHOTS, seed=0):
    return np.random.default_rng(seed).uniform(
        -1, 1, (tasks, shots, IN)).astype("float32")


def _meta_batch(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(TASKS, 2 * SHOTS, OUT))
    targets = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    inputs = rng.uniform(-1, 1, (TASKS, 2 * SHOTS, IN))
    return {
        "support_inputs": inputs[:, :SHOTS].astype("float32"),
        "support_targets": targets[:, :SHOTS].astype("float32"),
        "query_inputs": inputs[:, SHOTS:].astype("float32"),
        "query_targets": targets[:, SHOTS:].astype("float32"),
    }


def _random_fast_params(network, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(TASKS,) + tuple(v.shape)).astype("float32")
            for v in network.fast_variables]


def _numpy(x):
    return ops.convert_to_numpy(x)


def _relu(x):
    return np.maximum(x, 0.0)


# -- Shapes and forward passes. ---------------------------------------------------
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_output_and_fast_variable_shapes(name):
    network = LEARNERS[name]()
    outputs = network(_inputs())
    assert tuple(outputs.shape) == (TASKS, SHOTS, OUT)
    assert network.compute_output_shape((TASKS, SHOTS, IN)) == (
        TASKS, SHOTS, OUT)
    assert [tuple(v.shape) for v in network.fast_variables] == FAST_SHAPES[name]
    assert np.isfinite(_numpy(outputs)).all()
    # Calling the network uses the initialisation for every task.
    initial = network.initial_fast_params(TASKS)
    assert [tuple(p.shape) for p in initial] == [
        (TASKS,) + s for s in FAST_SHAPES[name]]
    np.testing.assert_allclose(
        _numpy(network.adapted_call(network.task_features(_inputs()),
                                    initial)),
        _numpy(outputs), atol=1e-6)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_task_t_parameters_apply_to_task_t_only(name):
    """adapted_call on T tasks = T separate one-task calls (NOTE 1)."""
    network = LEARNERS[name]()
    inputs = _inputs()
    network(inputs)
    fast = _random_fast_params(network)
    together = _numpy(network.adapted_call(network.task_features(inputs),
                                           fast))
    for task in range(TASKS):
        alone = network.adapted_call(
            network.task_features(inputs[task:task + 1]),
            [p[task:task + 1] for p in fast])
        np.testing.assert_allclose(together[task:task + 1], _numpy(alone),
                                   atol=1e-5)
    # And the task's parameters matter: other values, other outputs.
    other = network.adapted_call(network.task_features(inputs),
                                 _random_fast_params(network, seed=2))
    assert np.abs(_numpy(other) - together).max() > 1e-3


def test_anil_matches_numpy_forward():
    network = LEARNERS["anil"]()
    inputs = _inputs()
    network(inputs)
    kernel, bias = _random_fast_params(network)
    hidden = inputs
    for layer in network.body_layers:
        hidden = _relu(hidden @ _numpy(layer.kernel) + _numpy(layer.bias))
    expected = np.einsum("tnf,tfo->tno", hidden, kernel) + bias[:, None]
    features = network.task_features(inputs)
    np.testing.assert_allclose(_numpy(features), hidden, atol=1e-5)
    np.testing.assert_allclose(
        _numpy(network.adapted_call(features, [kernel, bias])), expected,
        atol=1e-5)


def test_maml_matches_numpy_forward():
    network = LEARNERS["maml"]()
    inputs = _inputs()
    network(inputs)
    fast = _random_fast_params(network)
    hidden = inputs
    for index in range(0, len(fast), 2):
        hidden = np.einsum("tni,tio->tno", hidden, fast[index])
        hidden = hidden + fast[index + 1][:, None]
        if index < len(fast) - 2:
            hidden = _relu(hidden)
    np.testing.assert_allclose(
        _numpy(network.adapted_call(network.task_features(inputs), fast)),
        hidden, atol=1e-4, rtol=1e-5)


def test_hypernetwork_fast_and_meta_variables():
    network = LEARNERS["hnet_linear"]()
    network(_inputs())
    embeddings, output_bias = network.fast_variables
    # NOTE 2: the output bias starts at zero and is not meta-learned.
    assert embeddings.trainable and not output_bias.trainable
    np.testing.assert_array_equal(_numpy(output_bias), np.zeros(OUT))
    fast_ids = {id(v) for v in network.fast_variables}
    meta = [v for v in network.trainable_variables if id(v) not in fast_ids]
    assert meta, "the generators are meta parameters"
    # The output bias is added as it is.
    inputs = _inputs()
    fast = _random_fast_params(network)
    shifted = [fast[0], fast[1] + 1.5]
    np.testing.assert_allclose(
        _numpy(network.adapted_call(inputs, shifted))
        - _numpy(network.adapted_call(inputs, fast)), 1.5, atol=1e-5)


def test_nonlinear_hypernetwork_one_meta_training_step():
    # (The linear one is trained in tests/training/test_meta_learning.py.)
    model = MetaLearner(LEARNERS["hnet_mlp"](), inner_steps=1,
                        first_order=True, loss="kl")  # (compiles faster)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    batch = _meta_batch()
    model.build({k: v.shape for k, v in batch.items()})
    before = model.get_weights()
    logs = model.fit(batch, batch_size=TASKS, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    changed = [np.abs(a - b).max() > 0 for a, b in
               zip(model.get_weights(), before, strict=True)]
    assert sum(changed) == len(changed) - 1  # all but the output bias init


# -- ANIL: the body once per set. ---------------------------------------------------
class _CountingANIL(ANILLearner):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts = {"task_features": 0, "adapted_call": 0}

    def task_features(self, inputs, training=False):
        self.counts["task_features"] += 1
        return super().task_features(inputs, training=training)

    def adapted_call(self, features, fast_params, training=False):
        self.counts["adapted_call"] += 1
        return super().adapted_call(features, fast_params, training=training)


def _python_loop(num_steps, body, init):
    carry = init
    for step in range(num_steps):
        carry = body(step, carry)
    return carry


def test_anil_body_features_are_computed_once_per_set(monkeypatch):
    if current_backend() == "jax":
        # jax.lax.fori_loop traces its body once (a scan); a Python loop
        # makes the count of inner adapted_calls observable as well.
        monkeypatch.setattr(backend, "fori_loop", _python_loop)
    inner_steps = 5
    network = _CountingANIL(OUT, hidden_units=6, num_hidden_layers=1)
    model = MetaLearner(network, inner_steps=inner_steps,
                        inner_optimizer="sgd", inner_learning_rate=0.1,
                        loss="kl")
    model.compile(optimizer="sgd", run_eagerly=True)
    batch = _meta_batch()
    model.fit(batch, batch_size=TASKS, epochs=1, verbose=0)  # builds
    for steps in (1, 2):  # meta-batches of TASKS tasks each (same shapes)
        network.counts["task_features"] = network.counts["adapted_call"] = 0
        data = {k: np.concatenate([v] * steps) for k, v in batch.items()}
        model.fit(data, batch_size=TASKS, epochs=1, shuffle=False, verbose=0)
        # support + query features per outer step; the head once per inner
        # step and once on the query set.
        assert dict(network.counts) == {
            "task_features": 2 * steps,
            "adapted_call": (inner_steps + 1) * steps,
        }, (steps, network.counts)


# -- Save / load. -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hnet_linear", "anil", "maml"])
def test_saved_meta_learner_adapts_the_same(name, tmp_path):
    model = MetaLearner(LEARNERS[name](), inner_steps=2,
                        inner_optimizer="adamw", inner_learning_rate=0.2,
                        inner_weight_decay=0.01, first_order=True, loss="kl",
                        name="learner")
    batch = _meta_batch()
    model.build({k: v.shape for k, v in batch.items()})
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5
                       for w in model.get_weights()])
    expected = model.adapt(batch)
    path = str(tmp_path / "learner.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MetaLearner)
    assert type(loaded.network) is type(model.network)
    got = loaded.adapt(batch)
    np.testing.assert_allclose(got.query_predictions,
                               expected.query_predictions, atol=1e-5)
    for a, b in zip(got.fast_params, expected.fast_params, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # (JSON: the nested build_config's shape is a list after loading.)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_config_round_trip(name):
    model = MetaLearner(LEARNERS[name](), inner_steps=3,
                        inner_optimizer="sgd", inner_learning_rate=0.05,
                        loss="mse")
    config = model.get_config()
    clone = MetaLearner.from_config(config)
    assert clone.get_config() == config
    network_config = model.network.get_config()
    assert type(model.network).from_config(network_config).get_config() == (
        network_config)
    assert (clone.inner_steps, clone.inner_optimizer_name, clone.loss_name) == (
        3, "sgd", "mse")


# -- Bad arguments. -----------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, message", [
    (HypernetworkLearner, {"output_dim": 0}, "output_dim"),
    (HypernetworkLearner, {"output_dim": 2, "generator": "rnn"}, "generator"),
    (HypernetworkLearner, {"output_dim": 2, "embedding_dim": 1.5},
     "embedding_dim"),
    (HypernetworkLearner, {"output_dim": 2, "hidden_units": 0},
     "hidden_units"),
    (HypernetworkLearner, {"output_dim": 2, "generator": "mlp",
                           "generator_depth": 0}, "generator_depth"),
    (ANILLearner, {"output_dim": 2, "num_hidden_layers": 0},
     "num_hidden_layers"),
    (ANILLearner, {"output_dim": True}, "output_dim"),
    (MAMLLearner, {"output_dim": 2, "hidden_units": -3}, "hidden_units"),
])
def test_bad_constructor_arguments_raise(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_inputs_of_the_wrong_size_raise(name):
    network = LEARNERS[name]()
    network(_inputs())
    with pytest.raises(ValueError, match=r"\(tasks, examples, 5\)"):
        wrong = np.zeros((TASKS, SHOTS, IN + 1), "float32")
        network.adapted_call(network.task_features(wrong),
                             network.initial_fast_params(TASKS))
