"""Tests of HyperGenerator / HyperDense / HyperMLP (modular hypernetworks)."""

import itertools
import math

import keras
import numpy as np
import pytest

from keras import ops

from layers.hyper_dense import HyperDense, HyperGenerator, HyperMLP
from tests.harness import assert_same_across_backends, run_layer_checks
from training import value_and_grad

IDS = np.array([0, 2, 1, 2, 0, 1], "int32")


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


def randomize(layer, rng, scale=1.0):
    """Sets every variable to random values; returns {short name: value}."""
    values = {}
    for variable in layer.weights:
        value = rng.normal(0, scale, variable.shape).astype("float32")
        variable.assign(value)
        values[variable.path.split("/")[-1]] = value
    return values


def to_np(t):
    return keras.ops.convert_to_numpy(t)


def features(seed=0, batch=6):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 5)).astype(
        "float32")


# ------------------------------------------------------- numerics vs NumPy


@pytest.mark.parametrize("ntk", [True, False])
@pytest.mark.parametrize("generate_bias", [False, True])
def test_linear_hypernetwork_matches_numpy(ntk, generate_bias):
    rng = np.random.default_rng(0)
    x = features()
    layer = HyperDense(3, embedding_dim=4, num_tasks=3, generator="linear",
                       ntk=ntk, generate_bias=generate_bias)
    layer(x, IDS)
    w = randomize(layer, rng)
    expected = np_hyper_dense(x, w["task_embeddings"][IDS], w, 3, "linear",
                              ntk=ntk, bias=w["bias"],
                              generate_bias=generate_bias)
    np.testing.assert_allclose(to_np(layer(x, IDS)), expected, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("mode", ["rms", "unit", None])
def test_mlp_hypernetwork_matches_numpy(mode):
    # The generator's input LayerNorm hides most of the normalisation mode
    # here; the modes are told apart in the linear-generator test below.
    rng = np.random.default_rng(1)
    x = features()
    layer = HyperDense(3, embedding_dim=4, num_tasks=3, generator="mlp",
                       embedding_normalization=mode, activation="tanh")
    layer(x, IDS)
    w = randomize(layer, rng, scale=0.5)
    expected = np.tanh(np_hyper_dense(
        x, w["task_embeddings"][IDS], w, 3, "mlp", bias=w["bias"], mode=mode))
    np.testing.assert_allclose(to_np(layer(x, IDS)), expected, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("generate_bias", [False, True])
def test_normalization_modes_with_linear_generator(generate_bias):
    """Each mode against u = sqrt(d) e/||e||, e/||e||, e; far apart.

    generate_bias=False takes the einsum path of NOTE 9, True the
    generator's own call; HyperMLP passes the mode to its shared generator.
    """
    rng = np.random.default_rng(2)
    x = features(2)
    # ||e|| ~ 10, far from 1 (unit) and sqrt(d) = 2 (rms).
    e = (5.0 * rng.normal(size=(6, 4))).astype("float32")
    size = 15 + (3 if generate_bias else 0)
    theta = rng.normal(size=(4, size)).astype("float32")
    bias = rng.normal(size=3).astype("float32")
    norm = np.linalg.norm(e, axis=-1, keepdims=True)
    references = {"rms": 2.0 * e / norm, "unit": e / norm, None: e}
    tolerance = 1e-5
    outputs = {}
    for mode, u in references.items():
        generated = u @ theta
        expected = np.einsum("bi,bio->bo", x,
                             generated[:, :15].reshape(6, 5, 3)) / math.sqrt(5)
        expected_mlp = expected + bias
        if generate_bias:
            expected = expected + generated[:, 15:]
        expected = expected + bias

        layer = HyperDense(3, embedding_dim=4, generator="linear",
                           embedding_normalization=mode,
                           generate_bias=generate_bias)
        layer(x, e)
        layer.kernel_generator.output_kernel.assign(theta)
        layer.bias.assign(bias)
        outputs[mode] = to_np(layer(x, e))
        np.testing.assert_allclose(outputs[mode], expected, rtol=tolerance,
                                   atol=tolerance, err_msg=str(mode))

        mlp = HyperMLP([3], embedding_dim=4, generator="linear",
                       embedding_normalization=mode)
        mlp(x, e)
        mlp.shared_generator.output_kernel.assign(theta[:, :15])
        mlp.dense_layers[0].bias.assign(bias)
        np.testing.assert_allclose(to_np(mlp(x, e)), expected_mlp,
                                   rtol=tolerance, atol=tolerance,
                                   err_msg=str(mode))
    # A mix-up of two modes would be far outside the tolerance.
    for a, b in itertools.combinations(outputs, 2):
        gap = np.abs(outputs[a] - outputs[b]).max()
        assert gap > 1e4 * tolerance, (a, b, gap)


@pytest.mark.parametrize("mode", ["rms", "unit", None])
def test_gradient_wrt_explicit_embedding(mode):
    """dL/de against the analytic gradient of the linear hypernetwork.

    With u = s(e) e (s = sqrt(d)/||e||, 1/||e|| or 1): stop-gradient gives
    dL/de = s dL/du; without it the radial component is projected out,
    dL/de = s (I - e e^T/||e||^2) dL/du (NOTE 2). None: dL/de = dL/du.
    """
    rng = np.random.default_rng(3)
    x = features(3)
    e = rng.normal(size=(6, 4)).astype("float32")
    g = rng.normal(size=(6, 3)).astype("float32")
    norm = np.linalg.norm(e, axis=-1, keepdims=True)
    scale = {"rms": 2.0 / norm, "unit": 1.0 / norm, None: 1.0}[mode]
    unit = e / norm
    grads = {}
    for stop_gradient in (True, False):
        layer = HyperDense(3, embedding_dim=4, generator="linear",
                           embedding_normalization=mode,
                           normalization_stop_gradient=stop_gradient)
        layer(x, e)
        w = randomize(layer, np.random.default_rng(4))
        g_tensor = keras.ops.convert_to_tensor(g)

        def loss(embedding, layer=layer, g_tensor=g_tensor):
            return keras.ops.sum(layer(x, embedding) * g_tensor)

        value, grad = value_and_grad(loss)(keras.ops.convert_to_tensor(e))
        np.testing.assert_allclose(
            float(value), np.sum(np_hyper_dense(x, e, w, 3, "linear",
                                                bias=w["bias"], mode=mode) * g),
            rtol=1e-4)
        # dL/dW_b = x_b g_b^T / sqrt(in); dL/du_b = Theta vec(dL/dW_b).
        grad_kernel = np.einsum("bi,bo->bio", x, g) / math.sqrt(5)
        grad_u = grad_kernel.reshape(6, -1) @ w["output_kernel"].T
        expected = scale * grad_u
        if not stop_gradient and mode is not None:
            expected = expected - unit * np.sum(unit * expected, -1,
                                                keepdims=True)
        grads[stop_gradient] = to_np(grad)
        np.testing.assert_allclose(grads[stop_gradient], expected, rtol=1e-4,
                                   atol=1e-5)
        # Finite differences agree with the full (not stop-gradient) one.
        if not stop_gradient:
            step = np.zeros_like(e)
            step[1, 2] = 1e-2
            fd = (to_np(loss(e + step)) - to_np(loss(e - step))) / 2e-2
            np.testing.assert_allclose(fd, grads[False][1, 2], rtol=2e-2,
                                       atol=2e-3)
    # The switch matters exactly where there is a normalisation factor.
    gap = np.abs(grads[True] - grads[False]).max()
    if mode is None:
        assert gap < 1e-6, gap
    else:
        assert gap > 1e-2, gap


def test_ntk_scaling_and_default_initialisation():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 256)).astype("float32")
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
    standard.bias.assign(rng.normal(size=128).astype("float32"))
    ntk.bias.assign(to_np(standard.bias))
    bias = to_np(ntk.bias)
    np.testing.assert_allclose(
        (to_np(ntk(x, ids)) - bias) * math.sqrt(256),
        to_np(standard(x, ids)) - bias, rtol=1e-3, atol=1e-3)
    # NTK output variance ~ input variance (variance preserving at init).
    assert 0.7 < (to_np(ntk(x, ids)) - bias).var() < 1.3


def test_table_and_explicit_embedding_paths_agree():
    rng = np.random.default_rng(6)
    x = features(6)
    for generator in ("linear", "mlp"):
        layer = HyperDense(3, embedding_dim=4, num_tasks=3,
                           generator=generator)
        layer(x, IDS)
        randomize(layer, rng, scale=0.5)
        explicit = to_np(layer.task_embeddings)[IDS]
        np.testing.assert_allclose(to_np(layer(x, IDS)),
                                   to_np(layer(x, explicit)), rtol=1e-5,
                                   atol=1e-5)
        # Mixed-task batch: every example uses its own task's kernel.
        single = to_np(layer(x[:1], IDS[:1]))
        np.testing.assert_allclose(to_np(layer(x, IDS))[:1], single,
                                   rtol=1e-5, atol=1e-5)


def test_zero_embedding_is_finite():
    rng = np.random.default_rng(7)
    x = features(7)
    layer = HyperDense(3, embedding_dim=4, generator="linear")
    zero = np.zeros((6, 4), "float32")
    layer(x, zero)
    w = randomize(layer, rng)
    # ||e|| clamped at epsilon: u = 0, generated kernel 0, output = bias.
    np.testing.assert_allclose(to_np(layer(x, zero)),
                               np.broadcast_to(w["bias"], (6, 3)), atol=1e-6)
    for stop in (True, False):
        layer.kernel_generator.normalization_stop_gradient = stop
        _, grad = value_and_grad(lambda e: keras.ops.sum(layer(x, e) ** 2))(
            keras.ops.convert_to_tensor(zero))
        assert np.all(np.isfinite(to_np(grad)))
    # Tiny but nonzero embeddings are still normalised (epsilon 1e-6).
    tiny = np.full((6, 4), 1e-4, "float32")
    np.testing.assert_allclose(to_np(layer(x, tiny)),
                               to_np(layer(x, np.ones((6, 4), "float32"))),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ task inputs


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int64"])
def test_any_integer_id_dtype(dtype):
    """uint8 / int8 ids failed on TensorFlow (a gather with uint8 indices)."""
    rng = np.random.default_rng(8)
    x = features(8)
    layers = [
        HyperDense(3, embedding_dim=4, num_tasks=3, generator="linear"),
        HyperDense(3, embedding_dim=4, num_tasks=3, generator="mlp"),
        HyperMLP([4, 3], embedding_dim=2, num_tasks=3, chunk_size=16,
                 embedding_per_chunk=True),
    ]
    for layer in layers:
        layer(x, IDS)  # build
        randomize(layer, rng, scale=0.5)
        expected = to_np(layer(x, IDS))
        np.testing.assert_allclose(to_np(layer(x, IDS.astype(dtype))),
                                   expected, rtol=1e-6, atol=1e-6,
                                   err_msg=layer.name)


@pytest.mark.parametrize(
    "task",
    [
        pytest.param(np.array([1], "int32"), id="one-id-for-4"),
        pytest.param(np.array([0, 1, 2], "uint8"), id="three-ids-for-4"),
        pytest.param(np.ones((1, 4), "float32"), id="one-embedding-for-4"),
        pytest.param(np.ones((5, 4), "float32"), id="five-embeddings-for-4"),
    ],
)
def test_task_batch_must_match_inputs(task):
    x = features(9, batch=4)
    batch = task.shape[0]
    pattern = rf"got {batch} task entries for a batch of 4 inputs"
    dense = HyperDense(3, embedding_dim=4, num_tasks=3)
    with pytest.raises(ValueError, match=pattern):
        dense(x, task)
    mlp = HyperMLP([4, 3], embedding_dim=4, num_tasks=3, generator="linear")
    with pytest.raises(ValueError, match=pattern):
        mlp(x, task)


def test_compute_output_shape():
    rng = np.random.default_rng(10)
    x = features(10)
    cases = [
        (HyperDense(3, embedding_dim=4, num_tasks=3), (x, IDS)),
        (HyperDense(3, embedding_dim=4, generator="mlp", generate_bias=True),
         (x, rng.normal(size=(6, 4)).astype("float32"))),
        (HyperMLP([4, 7], embedding_dim=2, num_tasks=3, chunk_size=16,
                  embedding_per_chunk=True), (x, IDS)),
        (HyperGenerator(10, 3), (np.ones((6, 3), "float32"),)),
        (HyperGenerator(10, 3, chunk_size=4, chunk_embedding_dim=2),
         (np.ones((6, 3, 3), "float32"),)),  # one embedding per chunk
    ]
    for layer, args in cases:
        outputs = layer(*args)
        shapes = [arg.shape for arg in args]
        assert tuple(outputs.shape) == tuple(layer.compute_output_shape(
            *shapes)), layer.name
        # Symbolic: a functional model gets the same (batch-free) shape.
        symbolic = [keras.Input(shape[1:], dtype=str(arg.dtype))
                    for shape, arg in zip(shapes, args, strict=True)]
        assert tuple(layer(*symbolic).shape) == (None,) + tuple(
            outputs.shape[1:]), layer.name
    dense = HyperDense(3, generator=None)
    dense(x, generated_kernel=np.ones((6, 15), "float32"))
    assert dense.compute_output_shape((6, 5), None, (6, 15)) == (6, 3)


# ---------------------------------------------------- shared generator


def test_shared_chunked_generator_numerics():
    rng = np.random.default_rng(11)
    x = features(11)
    mlp = HyperMLP([4, 3], embedding_dim=4, num_tasks=3, generator="linear",
                   chunk_size=7, chunk_embedding_dim=2, activation="relu")
    out = mlp(x, IDS)
    assert tuple(out.shape) == (6, 3)
    generator = mlp.shared_generator
    # kernels 5*4 + 4*3 = 32 parameters in ceil(32 / 7) = 5 chunks.
    assert generator.num_chunks == 5
    assert tuple(generator.output_kernel.shape) == (4 + 2, 7)
    assert tuple(generator.chunk_embeddings.shape) == (5, 2)
    w = randomize(mlp, rng, scale=0.5)
    u = np_normalize(w["task_embeddings"][IDS])
    chunk_inputs = np.concatenate(
        [np.repeat(u[:, None], 5, 1),
         np.broadcast_to(w["chunk_embeddings"], (6, 5, 2))], -1)
    flat = (chunk_inputs @ w["output_kernel"]).reshape(6, 35)[:, :32]
    np.testing.assert_allclose(to_np(generator(
        to_np(mlp.task_embeddings)[IDS])), flat, rtol=1e-4, atol=1e-5)
    hidden = np.einsum("bi,bio->bo", x, flat[:, :20].reshape(6, 5, 4))
    hidden = np.maximum(hidden / math.sqrt(5)
                        + to_np(mlp.dense_layers[0].bias), 0)
    expected = np.einsum("bi,bio->bo", hidden, flat[:, 20:].reshape(6, 4, 3))
    expected = expected / 2.0 + to_np(mlp.dense_layers[1].bias)
    np.testing.assert_allclose(to_np(mlp(x, IDS)), expected, rtol=1e-4,
                               atol=1e-4)


def test_embedding_per_chunk_and_external_kernel():
    rng = np.random.default_rng(12)
    x = features(12)
    mlp = HyperMLP([4, 3], embedding_dim=2, num_tasks=3, generator="mlp",
                   chunk_size=16, embedding_per_chunk=True)
    mlp(x, IDS)
    randomize(mlp, rng, scale=0.5)
    table = to_np(mlp.task_embeddings)
    assert table.shape == (3, 2, 2)  # 32 parameters in 2 chunks of 16
    w = {v.path.split("/")[-1]: to_np(v) for v in mlp.shared_generator.weights}
    u = np_normalize(table[IDS])  # each chunk's own embedding, normalised
    flat = np_generator(u, w, "mlp").reshape(6, 32)
    np.testing.assert_allclose(
        to_np(mlp.shared_generator(table[IDS])), flat, rtol=1e-4, atol=1e-4)
    # Explicit per-chunk embeddings (flattened) give the same output.
    np.testing.assert_allclose(to_np(mlp(x, table[IDS].reshape(6, 4))),
                               to_np(mlp(x, IDS)), rtol=1e-5, atol=1e-5)
    # A HyperDense without generator applies a given kernel, either layout.
    dense = HyperDense(4, generator=None, ntk=False, use_bias=False)
    kernel = rng.normal(size=(6, 5, 4)).astype("float32")
    expected = np.einsum("bi,bio->bo", x, kernel)
    np.testing.assert_allclose(to_np(dense(x, generated_kernel=kernel)),
                               expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        to_np(dense(x, generated_kernel=kernel.reshape(6, 20))), expected,
        rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- harness


def test_layer_checks(tmp_path):
    rng = np.random.default_rng(13)
    x = features(13)
    for name in ("linear", "mlp", "shared"):
        (tmp_path / name).mkdir()
    # Table of task embeddings: table, generator output kernel, bias.
    run_layer_checks(HyperDense, dict(units=3, embedding_dim=4, num_tasks=3),
                     x, IDS, tmp_path / "linear",
                     expected_output_shape=(6, 3),
                     expected_num_trainable_weights=3)
    # Float embeddings, mlp generator with generated bias: bias, 5 x 2
    # LayerNorm, 4 x 2 hidden, output kernel.
    run_layer_checks(HyperDense, dict(units=3, embedding_dim=4,
                                      generator="mlp", generate_bias=True),
                     x, rng.normal(size=(6, 4)).astype("float32"),
                     tmp_path / "mlp", expected_output_shape=(6, 3),
                     expected_num_trainable_weights=20)
    # Shared chunked mlp generator: 2 biases, table, chunk embeddings and
    # the 19 generator variables.
    run_layer_checks(HyperMLP, dict(layer_sizes=[8, 3], embedding_dim=4,
                                    num_tasks=3, chunk_size=16,
                                    chunk_embedding_dim=2),
                     x, IDS, tmp_path / "shared",
                     expected_output_shape=(6, 3),
                     expected_num_trainable_weights=23)


def test_config_round_trip_of_non_default_options():
    # The harness covers the defaults; every shared argument set here.
    options = dict(
        embedding_dim=4, num_tasks=5, generator="mlp", hidden_units=8,
        depth=2, ntk=False, use_bias=False, activation="relu",
        embedding_normalization="unit", normalization_epsilon=1e-3,
        normalization_stop_gradient=False, embedding_initializer="ones",
        generator_initializer="zeros", bias_initializer="ones",
        bias_regularizer="l1", embedding_regularizer="l2",
        generator_regularizer="l1",
    )
    dense = HyperDense(3, generate_bias=True, **options)
    mlp = HyperMLP([4, 3], chunk_size=8, chunk_embedding_dim=2,
                   embedding_per_chunk=True, **options)
    generator = HyperGenerator(10, 3, chunk_size=4, chunk_embedding_dim=2,
                               kernel_regularizer="l1", depth=0,
                               embedding_normalization=None)
    for layer in (dense, mlp, generator):
        config = layer.get_config()
        rebuilt = type(layer).from_config(config)
        assert rebuilt.get_config() == config
        for name in set(options) & set(config):
            if layer is not generator and isinstance(options[name], (bool, int, float)) or options[
                    name] is None:
                assert getattr(rebuilt, name) == options[name], name
    # Same keys as before the shared arguments moved to `_TaskEmbedding`
    # (saved models keep loading).
    shared = {"embedding_dim", "num_tasks", "generator", "hidden_units",
              "depth", "ntk", "use_bias", "activation",
              "embedding_normalization", "normalization_epsilon",
              "normalization_stop_gradient", "embedding_initializer",
              "generator_initializer", "bias_initializer", "bias_regularizer",
              "embedding_regularizer", "generator_regularizer"}
    base = set(keras.layers.Layer().get_config())
    assert set(dense.get_config()) - base == shared | {"units",
                                                       "generate_bias"}
    assert set(mlp.get_config()) - base == shared | {
        "layer_sizes", "chunk_size", "chunk_embedding_dim",
        "embedding_per_chunk"}
    # The options reach the generator the layer builds.
    x = features(14)
    mlp(x, IDS)
    built = mlp.shared_generator
    assert (built.embedding_normalization, built.normalization_epsilon,
            built.normalization_stop_gradient, built.hidden_units,
            built.depth) == ("unit", 1e-3, False, 8, 2)


# ------------------------------------------------------------ gradients


def _fit_one_step(layer, task, rng):
    x = features(15)
    features_input = keras.Input((5,))
    task_input = (keras.Input((), dtype="int32") if task.dtype.kind == "i"
                  else keras.Input(task.shape[1:]))
    model = keras.Model([features_input, task_input],
                        layer(features_input, task_input))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = {v.path: to_np(v).copy() for v in model.trainable_variables}
    model.fit([x, task], rng.normal(size=(6, 3)).astype("float32"),
              batch_size=6, epochs=1, verbose=0)
    return {v.path: ~np.isclose(to_np(v), before[v.path], rtol=0, atol=0)
            for v in model.trainable_variables}


def test_gradients_reach_exactly_the_intended_variables():
    rng = np.random.default_rng(16)
    # Only tasks 0 and 2 in the batch: row 1 of the table must not move.
    ids = np.array([0, 2, 0, 2, 0, 2], "int32")
    layer = HyperDense(3, embedding_dim=4, num_tasks=3, generator="mlp")
    changed = _fit_one_step(layer, ids, rng)
    table = changed[layer.task_embeddings.path]
    assert table[[0, 2]].all() and not table[1].any()
    for path, mask in changed.items():
        if path != layer.task_embeddings.path:
            assert mask.any(), path
    assert len(changed) == 2 + 4 * 4 + 2 + 1  # table, bias, generator
    # The shared chunked generator: every variable trains.
    mlp = HyperMLP([4, 3], embedding_dim=4, num_tasks=3, chunk_size=10,
                   chunk_embedding_dim=2)
    changed = _fit_one_step(mlp, ids, rng)
    assert all(mask.any() for mask in changed.values()), changed
    assert not changed[mlp.task_embeddings.path][1].any()
    # Explicit embedding input: no table; only the bias and the generator
    # are variables, and both train.
    layer = HyperDense(3, embedding_dim=4, generator="linear")
    changed = _fit_one_step(
        layer, rng.normal(size=(6, 4)).astype("float32"), rng)
    assert sorted(p.split("/")[-1] for p in changed) == ["bias",
                                                         "output_kernel"]
    assert all(mask.all() for mask in changed.values())


# ------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "make, match",
    [
        # generator name
        (lambda: HyperDense(3, embedding_dim=4, generator="deep"),
         r"`generator` must be one of \('linear', 'mlp', None\); got 'deep'"),
        (lambda: HyperMLP([3], embedding_dim=4, generator=None),
         r"`generator` must be one of \('linear', 'mlp'\); got None"),
        (lambda: HyperGenerator(10, 3, generator="deepmlp"),
         r"`generator` must be one of \('linear', 'mlp'\)"),
        # normalisation mode
        (lambda: HyperDense(3, embedding_dim=4, embedding_normalization="l2"),
         r"`embedding_normalization` must be one of \('rms', 'unit', None\)"),
        (lambda: HyperMLP([3], embedding_dim=4,
                          embedding_normalization="sphere"),
         r"`embedding_normalization` must be one of"),
        (lambda: HyperGenerator(10, 3, embedding_normalization="RMS"),
         r"`embedding_normalization` must be one of"),
        # chunk arguments
        (lambda: HyperMLP([3], embedding_dim=4, chunk_embedding_dim=2),
         r"`chunk_embedding_dim` needs `chunk_size`"),
        (lambda: HyperGenerator(10, 3, chunk_embedding_dim=2),
         r"`chunk_embedding_dim` needs `chunk_size`"),
        (lambda: HyperMLP([3], embedding_dim=4, embedding_per_chunk=True),
         r"`embedding_per_chunk=True` needs `chunk_size`"),
        (lambda: HyperMLP([3], embedding_dim=4, chunk_size=0),
         r"`chunk_size` must be None or an integer >= 1; got 0"),
        (lambda: HyperGenerator(10, 3, chunk_size=-4),
         r"`chunk_size` must be None or an integer >= 1; got -4"),
        (lambda: HyperMLP([3], embedding_dim=4, chunk_size=4,
                          chunk_embedding_dim=-1),
         r"`chunk_embedding_dim` must be an integer >= 0; got -1"),
        # sizes
        (lambda: HyperDense(0, embedding_dim=4),
         r"`units` must be an integer >= 1; got 0"),
        (lambda: HyperDense(2.5, embedding_dim=4),
         r"`units` must be an integer >= 1; got 2.5"),
        (lambda: HyperDense(3, embedding_dim=0),
         r"`embedding_dim` must be None or an integer >= 1; got 0"),
        (lambda: HyperDense(3, embedding_dim=4, num_tasks=0),
         r"`num_tasks` must be None or an integer >= 1; got 0"),
        (lambda: HyperDense(3, embedding_dim=4, hidden_units=0),
         r"`hidden_units` must be an integer >= 1; got 0"),
        (lambda: HyperMLP([3], embedding_dim=4, depth=-1),
         r"`depth` must be an integer >= 0; got -1"),
        (lambda: HyperGenerator(0, 3), r"`output_size` must be an integer"),
        (lambda: HyperGenerator(10, -3),
         r"`embedding_dim` must be an integer >= 1; got -3"),
        (lambda: HyperMLP([], embedding_dim=4),
         r"`layer_sizes` must be a non-empty list"),
        (lambda: HyperMLP(4, embedding_dim=4),
         r"`layer_sizes` must be a non-empty list"),
        (lambda: HyperMLP([4, 0], embedding_dim=4),
         r"`layer_sizes\[1\]` must be an integer >= 1; got 0"),
        # embedding_dim / num_tasks against the generator
        (lambda: HyperDense(3, generator="linear"),
         r"a generator needs `embedding_dim`"),
        (lambda: HyperMLP([3], embedding_dim=None),
         r"a generator needs `embedding_dim`"),
        (lambda: HyperDense(3, generator=None, num_tasks=3),
         r"`num_tasks` \(an embedding table\) needs a generator"),
    ],
)
def test_bad_constructor_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _built(layer, *args, **kwargs):
    layer(*args, **kwargs)
    return layer


@pytest.mark.parametrize(
    "call, match",
    [
        # inputs of rank not 2 or 3 (at build) or of the wrong size (after)
        (lambda x: HyperDense(3, embedding_dim=4, num_tasks=3)(
            x[None, None], IDS),
         r"expected inputs of shape \(batch, in\) or \(batch, group, in\) "
         r"with a known `in`, got \(1, 1, 6, 5\)"),
        (lambda x: HyperMLP([3], embedding_dim=4, num_tasks=3)(x[:, None, None], IDS),
         r"expected inputs of shape \(batch, in\) or \(batch, group, in\)"),
        (lambda x: _built(HyperDense(3, embedding_dim=4, num_tasks=3), x,
                          IDS)(x[:, :4], IDS),
         r"expected inputs of shape \(batch, 5\) or \(batch, group, 5\), got \(6, 4\)"),
        (lambda x: _built(HyperMLP([3], embedding_dim=4, num_tasks=3), x,
                          IDS)(x[:, :4], IDS),
         r"expected inputs of shape \(batch, 5\) or \(batch, group, 5\), got \(6, 4\)"),
        # task ids and embeddings
        (lambda x: HyperDense(3, embedding_dim=4)(x, IDS),
         r"takes a float task embedding of shape \(batch, 4\); got integer "
         r"values of shape \(6,\)"),
        (lambda x: HyperMLP([3], embedding_dim=4)(x, IDS.astype("uint8")),
         r"takes a float task embedding of shape \(batch, 4\); got integer"),
        (lambda x: HyperDense(3, embedding_dim=4, num_tasks=3)(
            x, np.ones((6, 5), "float32")),
         r"takes integer task ids of shape \(batch,\) or a float task "
         r"embedding of shape \(batch, 4\); got float32 values of shape "
         r"\(6, 5\)"),
        (lambda x: HyperDense(3, embedding_dim=4, num_tasks=3)(
            x, IDS.reshape(6, 1)),
         r"got integer values of shape \(6, 1\)"),
        (lambda x: HyperMLP([4, 3], embedding_dim=2, num_tasks=3,
                            chunk_size=16, embedding_per_chunk=True)(
            x, np.ones((6, 2), "float32")),
         r"task embedding \(2 chunks x 2, chunk-major\) of shape "
         r"\(batch, 4\); got float32 values of shape \(6, 2\)"),
        (lambda x: HyperDense(3, embedding_dim=4, num_tasks=3)(
            x, np.array([0, 1, 3, 0, 1, 2], "int32")),
         r"out of range: got \[3\], expected integers in \[0, 3\)"),
        (lambda x: HyperMLP([3], embedding_dim=4, num_tasks=3)(
            x, np.array([0, -1, 0, 0, 1, 2], "int64")),
         r"out of range: got \[-1\]"),
        (lambda x: HyperDense(3, embedding_dim=4, num_tasks=3)(x),
         r"needs a task: call it as layer\(inputs, task\)"),
        # generated_kernel misuse
        (lambda x: HyperDense(3, embedding_dim=4, num_tasks=3)(
            x, IDS, generated_kernel=np.ones((6, 15), "float32")),
         r"generates its kernel \(generator='linear'\): call it as "
         r"layer\(inputs, task\), without `generated_kernel`"),
        (lambda x: HyperDense(3, generator=None)(x),
         r"generator=None: pass the kernel as `generated_kernel` "
         r"\(batch, 15\)"),
        (lambda x: HyperDense(3, generator=None)(
            x, IDS, generated_kernel=np.ones((6, 15), "float32")),
         r"generator=None and takes no task"),
        (lambda x: HyperDense(3, generator=None)(
            x, generated_kernel=np.ones((6, 14), "float32")),
         r"`generated_kernel` must have shape \(batch, 15\) or "
         r"\(batch, 5, 3\), got \(6, 14\)"),
        (lambda x: HyperDense(3, generator=None, generate_bias=True)(
            x, generated_kernel=np.ones((6, 5, 3), "float32")),
         r"`generated_kernel` must have shape \(batch, 18\), got "
         r"\(6, 5, 3\)"),
        (lambda x: HyperDense(3, generator=None)(
            x, generated_kernel=np.ones((4, 15), "float32")),
         r"got 4 generated kernels for a batch of 6 inputs"),
        (lambda x: HyperDense(3, generator=None).generated_size,
         r"is not built yet"),
        # HyperGenerator embeddings
        (lambda x: HyperGenerator(10, embedding_dim=3)(
            np.ones((2, 4), "float32")),
         r"expected an embedding of shape \(batch, 3\), got \(2, 4\)"),
        (lambda x: HyperGenerator(10, embedding_dim=3, chunk_size=4)(
            np.ones((2, 2, 3), "float32")),
         r"per-chunk embeddings must have shape \(batch, 3, 3\), got "
         r"\(2, 2, 3\)"),
    ],
)
def test_bad_call_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(features(17))


# --------------------------------------------------------- cross-backend


def test_same_weights_same_outputs_on_every_backend():
    # No braces in the snippet: the harness formats it with str.format.
    code = """
        import json, keras, numpy as np
        from layers.hyper_dense import HyperDense, HyperMLP
        features = keras.Input((5,))
        task = keras.Input((), dtype="int32")
        first = HyperDense(4, embedding_dim=3, num_tasks=3, generator="mlp",
                           activation="relu", name="first")
        shared = HyperMLP([4, 3], embedding_dim=3, num_tasks=3, chunk_size=8,
                          chunk_embedding_dim=2, name="shared")
        model = keras.Model([features, task], shared(first(features, task),
                                                     task))
        unit = HyperDense(3, embedding_dim=4, generator="linear",
                          embedding_normalization="unit", generate_bias=True,
                          name="unit")
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (6, 5)).astype("float32")
        ids = np.array([0, 2, 1, 2, 0, 1], "int32")
        e = (3.0 * rng.normal(size=(6, 4))).astype("float32")
        unit(x, e)
        variables = sorted(model.weights + unit.weights, key=lambda v: v.path)
        assert len(set(v.path for v in variables)) == len(variables)
        for v in variables:
            v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
        ids8 = ids.astype("uint8")
        to_list = lambda t: keras.ops.convert_to_numpy(t).tolist()
        print(json.dumps(dict(
            model=to_list(model([x, ids])),
            uint8_ids=to_list(shared(first(x, ids8), ids8)),
            unit=to_list(unit(x, e)),
            paths=[v.path for v in variables],
        )))
    """
    assert_same_across_backends(code, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("generator", ["linear", "mlp"])
def test_grouped_inputs_equal_per_example_calls(generator):
    """(tasks, shots, in) with one embedding per task equals the flat call
    with the task's embedding repeated for each of its shots (NOTE 11)."""
    layer = HyperDense(6, embedding_dim=3, generator=generator,
                       bias_initializer="random_normal")
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(4, 5, 7)).astype("float32")
    embeddings = rng.normal(size=(4, 3)).astype("float32")
    grouped = ops.convert_to_numpy(layer(inputs, embeddings))
    flat = ops.convert_to_numpy(layer(inputs.reshape(20, 7),
                                      np.repeat(embeddings, 5, axis=0)))
    assert grouped.shape == (4, 5, 6)
    np.testing.assert_allclose(grouped.reshape(20, 6), flat, atol=1e-5)
    assert layer.compute_output_shape((4, 5, 7)) == (4, 5, 6)


def test_hyper_mlp_grouped_inputs_equal_per_example_calls():
    mlp = HyperMLP([8, 3], embedding_dim=4, num_tasks=3)
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(3, 4, 5)).astype("float32")
    task = np.array([2, 0, 1])
    grouped = ops.convert_to_numpy(mlp(inputs, task))
    flat = ops.convert_to_numpy(mlp(inputs.reshape(12, 5), np.repeat(task, 4)))
    np.testing.assert_allclose(grouped.reshape(12, 3), flat, atol=1e-5)


def test_rank_four_inputs_are_a_clear_error():
    layer = HyperDense(2, embedding_dim=3)
    with pytest.raises(ValueError, match=r"\(batch, group, in\)"):
        layer(np.ones((2, 3, 4, 5), "float32"), np.ones((2, 3), "float32"))
