"""Tests of HyperGenerator / HyperDense / HyperMLP (modular hypernetworks)."""

import json
import math
import os

import keras
import numpy as np
import pytest

from layers.hyper_dense import HyperDense, HyperGenerator, HyperMLP
from tests.harness import other_backends, run_in_backends, run_layer_checks
from training import value_and_grad

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- NumPy


def np_normalize(e, mode="rms", eps=1e-6):
    if mode is None:
        return e
    norm = np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), eps)
    scale = math.sqrt(e.shape[-1]) if mode == "rms" else 1.0
    return e * scale / norm


def np_layer_norm(h, scale, offset, eps=1e-5):
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / np.sqrt(var + eps) * scale + offset


def np_elu(h):
    return np.where(h > 0, h, np.expm1(np.minimum(h, 0)))


def np_generator(u, weights, generator, depth=4):
    """weights: dict name -> array (HyperGenerator variable names)."""
    h = u
    if generator == "mlp":
        h = np_layer_norm(h, weights["layer_norm_scale_0"],
                          weights["layer_norm_offset_0"])
        for i in range(depth):
            h = h @ weights[f"hidden_kernel_{i}"] + weights[f"hidden_bias_{i}"]
            h = np_layer_norm(h, weights[f"layer_norm_scale_{i + 1}"],
                              weights[f"layer_norm_offset_{i + 1}"])
            h = np_elu(h)
    return h @ weights["output_kernel"]


def np_hyper_dense(x, e, weights, units, generator, ntk=True, bias=None,
                   generate_bias=False, mode="rms"):
    generated = np_generator(np_normalize(e, mode), weights, generator)
    fan_in = x.shape[-1]
    kernel = generated[:, : fan_in * units].reshape(-1, fan_in, units)
    y = np.einsum("bi,bio->bo", x, kernel)
    if ntk:
        y = y / math.sqrt(fan_in)
    if generate_bias:
        y = y + generated[:, fan_in * units:]
    if bias is not None:
        y = y + bias
    return y


def randomize(layer, scale=1.0):
    """Sets every variable to random values; returns {short name: value}."""
    values = {}
    for variable in layer.weights:
        value = RNG.normal(0, scale, variable.shape).astype("float32")
        variable.assign(value)
        values[variable.path.split("/")[-1]] = value
    return values


def to_np(t):
    return keras.ops.convert_to_numpy(t)


X = RNG.uniform(-1, 1, (6, 5)).astype("float32")
IDS = np.array([0, 2, 1, 2, 0, 1], "int32")


# ------------------------------------------------------- numerics vs NumPy


@pytest.mark.parametrize("ntk", [True, False])
@pytest.mark.parametrize("generate_bias", [False, True])
def test_linear_hypernetwork_matches_numpy(ntk, generate_bias):
    layer = HyperDense(3, embedding_dim=4, num_tasks=3, generator="linear",
                       ntk=ntk, generate_bias=generate_bias)
    layer(X, IDS)
    w = randomize(layer)
    expected = np_hyper_dense(X, w["task_embeddings"][IDS], w, 3, "linear",
                              ntk=ntk, bias=w["bias"],
                              generate_bias=generate_bias)
    np.testing.assert_allclose(to_np(layer(X, IDS)), expected, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("mode", ["rms", "unit", None])
def test_mlp_hypernetwork_matches_numpy(mode):
    layer = HyperDense(3, embedding_dim=4, num_tasks=3, generator="mlp",
                       embedding_normalization=mode, activation="tanh")
    layer(X, IDS)
    w = randomize(layer, scale=0.5)
    expected = np.tanh(np_hyper_dense(
        X, w["task_embeddings"][IDS], w, 3, "mlp", bias=w["bias"], mode=mode))
    np.testing.assert_allclose(to_np(layer(X, IDS)), expected, rtol=1e-4,
                               atol=1e-4)


def test_ntk_scaling_and_default_initialisation():
    x = RNG.normal(size=(64, 256)).astype("float32")
    ids = np.zeros(64, "int32")
    ntk = HyperDense(128, embedding_dim=16, num_tasks=1, ntk=True)
    standard = HyperDense(128, embedding_dim=16, num_tasks=1, ntk=False)
    ntk(x, ids), standard(x, ids)
    # Default init: generated kernel ~unit variance under NTK (weights
    # N(0,1)-style, pre-activation scaled by 1/sqrt(in)), ~1/in otherwise.
    u = np_normalize(to_np(ntk.task_embeddings)[:1])
    kernel_ntk = u @ to_np(ntk.kernel_generator.output_kernel)
    u = np_normalize(to_np(standard.task_embeddings)[:1])
    kernel_std = u @ to_np(standard.kernel_generator.output_kernel)
    assert 0.85 < kernel_ntk.std() < 1.15, kernel_ntk.std()
    assert 0.85 < kernel_std.std() * math.sqrt(256) < 1.15
    # The same weights: NTK pre-activations are the standard ones / sqrt(in).
    standard.set_weights(ntk.get_weights())
    standard.bias.assign(RNG.normal(size=128).astype("float32"))
    ntk.bias.assign(to_np(standard.bias))
    bias = to_np(ntk.bias)
    np.testing.assert_allclose(
        (to_np(ntk(x, ids)) - bias) * math.sqrt(256),
        to_np(standard(x, ids)) - bias, rtol=1e-3, atol=1e-3)
    # NTK output variance ~ input variance (variance preserving at init).
    assert 0.7 < (to_np(ntk(x, ids)) - bias).var() < 1.3


def test_table_and_explicit_embedding_paths_agree():
    for generator in ("linear", "mlp"):
        layer = HyperDense(3, embedding_dim=4, num_tasks=3,
                           generator=generator)
        layer(X, IDS)
        randomize(layer, scale=0.5)
        explicit = to_np(layer.task_embeddings)[IDS]
        np.testing.assert_allclose(to_np(layer(X, IDS)),
                                   to_np(layer(X, explicit)), rtol=1e-5,
                                   atol=1e-5)
        # Mixed-task batch: every example uses its own task's kernel.
        single = to_np(layer(X[:1], IDS[:1]))
        np.testing.assert_allclose(to_np(layer(X, IDS))[:1], single,
                                   rtol=1e-5, atol=1e-5)


def test_zero_embedding_is_finite():
    layer = HyperDense(3, embedding_dim=4, generator="linear")
    zero = np.zeros((6, 4), "float32")
    layer(X, zero)
    w = randomize(layer)
    # ||e|| clamped at epsilon: u = 0, generated kernel 0, output = bias.
    np.testing.assert_allclose(to_np(layer(X, zero)),
                               np.broadcast_to(w["bias"], (6, 3)), atol=1e-6)
    for stop in (True, False):
        layer.kernel_generator.normalization_stop_gradient = stop
        _, grad = value_and_grad(
            lambda e: keras.ops.sum(layer(X, e) ** 2))(keras.ops.convert_to_tensor(zero))
        assert np.all(np.isfinite(to_np(grad)))
    # Tiny but nonzero embeddings are still normalised (epsilon 1e-6).
    tiny = np.full((6, 4), 1e-4, "float32")
    np.testing.assert_allclose(to_np(layer(X, tiny)),
                               to_np(layer(X, np.ones((6, 4), "float32"))),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_gradient_wrt_explicit_embedding(stop_gradient):
    """dL/de against the analytic gradient of the linear hypernetwork."""
    layer = HyperDense(3, embedding_dim=4, generator="linear",
                       normalization_stop_gradient=stop_gradient)
    e = RNG.normal(size=(6, 4)).astype("float32")
    layer(X, e)
    w = randomize(layer)
    g = RNG.normal(size=(6, 3)).astype("float32")

    g_tensor = keras.ops.convert_to_tensor(g)

    def loss(embedding):
        return keras.ops.sum(layer(X, embedding) * g_tensor)

    value, grad = value_and_grad(loss)(keras.ops.convert_to_tensor(e))
    np.testing.assert_allclose(
        float(value), np.sum(np_hyper_dense(X, e, w, 3, "linear",
                                            bias=w["bias"]) * g), rtol=1e-4)
    # dL/dW_b = x_b g_b^T / sqrt(in); dL/du_b = Theta vec(dL/dW_b).
    grad_kernel = np.einsum("bi,bo->bio", X, g) / math.sqrt(5)
    grad_u = grad_kernel.reshape(6, -1) @ w["output_kernel"].T
    norm = np.linalg.norm(e, axis=-1, keepdims=True)
    scale = 2.0 / norm  # sqrt(d) / ||e||, d = 4
    expected = scale * grad_u
    if not stop_gradient:  # project out the radial component
        unit = e / norm
        expected = expected - unit * np.sum(unit * expected, -1, keepdims=True)
    np.testing.assert_allclose(to_np(grad), expected, rtol=1e-4, atol=1e-5)
    # Finite differences agree with the full (not stop-gradient) gradient.
    if not stop_gradient:
        step = np.zeros_like(e)
        step[1, 2] = 1e-2
        fd = (to_np(loss(e + step)) - to_np(loss(e - step))) / 2e-2
        np.testing.assert_allclose(fd, to_np(grad)[1, 2], rtol=2e-2,
                                   atol=2e-3)


# ---------------------------------------------------- shared generator


def test_shared_chunked_generator_numerics():
    mlp = HyperMLP([4, 3], embedding_dim=4, num_tasks=3, generator="linear",
                   chunk_size=7, chunk_embedding_dim=2, activation="relu")
    out = mlp(X, IDS)
    assert tuple(out.shape) == (6, 3)
    generator = mlp.shared_generator
    # kernels 5*4 + 4*3 = 32 parameters in ceil(32 / 7) = 5 chunks.
    assert generator.num_chunks == 5
    assert tuple(generator.output_kernel.shape) == (4 + 2, 7)
    assert tuple(generator.chunk_embeddings.shape) == (5, 2)
    w = randomize(mlp, scale=0.5)
    u = np_normalize(w["task_embeddings"][IDS])
    chunk_inputs = np.concatenate(
        [np.repeat(u[:, None], 5, 1),
         np.broadcast_to(w["chunk_embeddings"], (6, 5, 2))], -1)
    flat = (chunk_inputs @ w["output_kernel"]).reshape(6, 35)[:, :32]
    np.testing.assert_allclose(to_np(generator(
        to_np(mlp.task_embeddings)[IDS])), flat, rtol=1e-4, atol=1e-5)
    hidden = np.einsum("bi,bio->bo", X, flat[:, :20].reshape(6, 5, 4))
    hidden = np.maximum(hidden / math.sqrt(5) + to_np(mlp.dense_layers[0].bias), 0)
    expected = np.einsum("bi,bio->bo", hidden, flat[:, 20:].reshape(6, 4, 3))
    expected = expected / 2.0 + to_np(mlp.dense_layers[1].bias)
    np.testing.assert_allclose(to_np(mlp(X, IDS)), expected, rtol=1e-4,
                               atol=1e-4)


def test_embedding_per_chunk_and_external_kernel():
    mlp = HyperMLP([4, 3], embedding_dim=2, num_tasks=3, generator="mlp",
                   chunk_size=16, embedding_per_chunk=True)
    mlp(X, IDS)
    randomize(mlp, scale=0.5)
    table = to_np(mlp.task_embeddings)
    assert table.shape == (3, 2, 2)  # 32 parameters in 2 chunks of 16
    w = {v.path.split("/")[-1]: to_np(v) for v in mlp.shared_generator.weights}
    u = np_normalize(table[IDS])  # each chunk's own embedding, normalised
    flat = np_generator(u, w, "mlp").reshape(6, 32)
    np.testing.assert_allclose(
        to_np(mlp.shared_generator(table[IDS])), flat, rtol=1e-4, atol=1e-4)
    # Explicit per-chunk embeddings (flattened) give the same output.
    np.testing.assert_allclose(to_np(mlp(X, table[IDS].reshape(6, 4))),
                               to_np(mlp(X, IDS)), rtol=1e-5, atol=1e-5)
    # A HyperDense without generator applies a given kernel, either layout.
    dense = HyperDense(4, generator=None, ntk=False, use_bias=False)
    kernel = RNG.normal(size=(6, 5, 4)).astype("float32")
    expected = np.einsum("bi,bio->bo", X, kernel)
    np.testing.assert_allclose(to_np(dense(X, generated_kernel=kernel)),
                               expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        to_np(dense(X, generated_kernel=kernel.reshape(6, 20))), expected,
        rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- harness


def test_layer_checks(tmp_path):
    for name in ("linear", "shared"):
        (tmp_path / name).mkdir()
    run_layer_checks(HyperDense, dict(units=3, embedding_dim=4, num_tasks=3),
                     X, IDS, tmp_path / "linear")
    run_layer_checks(HyperMLP, dict(layer_sizes=[8, 3], embedding_dim=4,
                                    num_tasks=3, chunk_size=16,
                                    chunk_embedding_dim=2),
                     X, IDS, tmp_path / "shared")
    # Config round trip of the non-default options (the harness covers the
    # defaults; the mlp generator is also saved/loaded in the cross-backend
    # test).
    layer = HyperDense(3, embedding_dim=4, generator="mlp", generate_bias=True,
                       ntk=False, embedding_normalization="unit",
                       embedding_regularizer="l2", activation="relu",
                       generator_initializer="zeros", hidden_units=8, depth=2)
    config = layer.get_config()
    assert HyperDense.from_config(config).get_config() == config
    generator = HyperGenerator(10, 3, chunk_size=4, chunk_embedding_dim=2,
                               kernel_regularizer="l1")
    config = generator.get_config()
    assert HyperGenerator.from_config(config).get_config() == config


# ------------------------------------------------------------ gradients


def _fit_one_step(layer, task):
    features = keras.Input((5,))
    task_input = (keras.Input((), dtype="int32") if task.dtype.kind == "i"
                  else keras.Input(task.shape[1:]))
    model = keras.Model([features, task_input], layer(features, task_input))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = {v.path: to_np(v).copy() for v in model.trainable_variables}
    model.fit([X, task], RNG.normal(size=(6, 3)).astype("float32"),
              batch_size=6, epochs=1, verbose=0)
    return {v.path: ~np.isclose(to_np(v), before[v.path], rtol=0, atol=0)
            for v in model.trainable_variables}


def test_gradients_reach_exactly_the_intended_variables():
    # Only tasks 0 and 2 in the batch: row 1 of the table must not move.
    ids = np.array([0, 2, 0, 2, 0, 2], "int32")
    layer = HyperDense(3, embedding_dim=4, num_tasks=3, generator="mlp")
    changed = _fit_one_step(layer, ids)
    table = changed[layer.task_embeddings.path]
    assert table[[0, 2]].all() and not table[1].any()
    for path, mask in changed.items():
        if path != layer.task_embeddings.path:
            assert mask.any(), path
    assert len(changed) == 2 + 4 * 4 + 2 + 1  # table, bias, generator
    # The shared chunked generator: every variable trains.
    mlp = HyperMLP([4, 3], embedding_dim=4, num_tasks=3, chunk_size=10,
                   chunk_embedding_dim=2)
    changed = _fit_one_step(mlp, ids)
    assert all(mask.any() for mask in changed.values()), changed
    assert not changed[mlp.task_embeddings.path][1].any()
    # Explicit embedding input: no table; only the bias and the generator
    # are variables, and both train.
    layer = HyperDense(3, embedding_dim=4, generator="linear")
    changed = _fit_one_step(layer, RNG.normal(size=(6, 4)).astype("float32"))
    assert sorted(p.split("/")[-1] for p in changed) == ["bias",
                                                         "output_kernel"]
    assert all(mask.all() for mask in changed.values())


# ------------------------------------------------------------ bad inputs


def test_bad_inputs_raise():
    layer = HyperDense(3, embedding_dim=4, num_tasks=3)
    layer(X, IDS)
    with pytest.raises(ValueError, match=r"out of range.*\[0, 3\)"):
        layer(X, np.array([0, 1, 3, 0, 1, 2], "int32"))
    with pytest.raises(ValueError, match=r"out of range"):
        layer(X, np.array([0, -1, 0, 0, 1, 2], "int32"))
    with pytest.raises(ValueError, match=r"shape \(batch,\) \+ \(4,\)"):
        layer(X, np.ones((6, 5), "float32"))
    with pytest.raises(ValueError, match=r"task ids must have shape"):
        layer(X, IDS.reshape(6, 1))
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        layer(X[:, :4], IDS)
    with pytest.raises(ValueError, match=r"\(batch, in\)"):
        HyperDense(3, embedding_dim=4, num_tasks=3)(X[None], IDS)
    with pytest.raises(ValueError, match=r"need an embedding table"):
        HyperDense(3, embedding_dim=4)(X, IDS)
    with pytest.raises(ValueError, match=r"generator must be one of"):
        HyperDense(3, embedding_dim=4, generator="deep")
    with pytest.raises(ValueError, match=r"generated_kernel"):
        HyperDense(3, generator=None)(X, IDS)
    with pytest.raises(ValueError, match=r"\(batch, 15\)"):
        HyperDense(3, generator=None)(X, generated_kernel=np.ones((6, 14),
                                                                  "float32"))
    mlp = HyperMLP([4, 3], embedding_dim=2, num_tasks=3, chunk_size=16,
                   embedding_per_chunk=True)
    with pytest.raises(ValueError, match=r"\(batch, 4\) \(num_chunks"):
        mlp(X, np.ones((6, 2), "float32"))
    with pytest.raises(ValueError, match=r"expected an embedding of shape"):
        HyperGenerator(10, embedding_dim=3)(np.ones((2, 4), "float32"))


# --------------------------------------------------------- cross-backend


def test_same_weights_same_outputs_on_other_backends(tmp_path):
    features = keras.Input((5,))
    task = keras.Input((), dtype="int32")
    hidden = HyperDense(4, embedding_dim=3, num_tasks=3, generator="mlp",
                        activation="relu", name="first")(features, task)
    outputs = HyperMLP([4, 3], embedding_dim=3, num_tasks=3, chunk_size=8,
                       chunk_embedding_dim=2, name="shared")(hidden, task)
    model = keras.Model([features, task], outputs)
    for variable in model.weights:
        variable.assign(RNG.normal(0, 0.5, variable.shape).astype("float32"))
    path = os.path.join(str(tmp_path), "model.weights.h5")
    model.save_weights(path)
    expected = to_np(model([X, IDS]))
    code = """
        import json, keras, numpy as np
        from layers.hyper_dense import HyperDense, HyperMLP
        features = keras.Input((5,)); task = keras.Input((), dtype="int32")
        hidden = HyperDense(4, embedding_dim=3, num_tasks=3, generator="mlp",
                            activation="relu", name="first")(features, task)
        outputs = HyperMLP([4, 3], embedding_dim=3, num_tasks=3, chunk_size=8,
                           chunk_embedding_dim=2, name="shared")(hidden, task)
        model = keras.Model([features, task], outputs)
        model.load_weights({path!r})
        x = np.array(json.loads({x!r}), "float32")
        ids = np.array(json.loads({ids!r}), "int32")
        print(json.dumps(keras.ops.convert_to_numpy(model([x, ids])).tolist()))
    """
    results = run_in_backends(code, other_backends(), path=path,
                              x=json.dumps(X.tolist()),
                              ids=json.dumps(IDS.tolist()))
    for backend, value in results.items():
        np.testing.assert_allclose(np.array(value), expected, rtol=1e-4,
                                   atol=1e-4, err_msg=backend)
