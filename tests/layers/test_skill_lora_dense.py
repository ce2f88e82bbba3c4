"""Tests of SkillLoRADense / SkillLoRAEinsumDense (Polytropon, Eqs. 2-7)."""

import keras
import numpy as np
import pytest
from keras import ops

from layers.skill_lora_dense import (
    SkillLoRADense,
    SkillLoRAEinsumDense,
    current_task_ids,
    skill_allocation_metrics,
    task_context,
)
from tests.harness import assert_same_across_backends, run_layer_checks
from training import value_and_grad

IN, OUT, TASKS, SKILLS, RANK, SPLITS = 8, 6, 3, 4, 2, 2
IDS = np.array([0, 2, 1, 2, 0], dtype="int32")


def to_np(t):
    return np.asarray(ops.convert_to_numpy(t))


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def randomise(layer, rng, scale=0.5):
    """Random values for every float weight except the SFT masks."""
    values = {}
    for variable in layer.weights:
        name = variable.path.split("/")[-1]
        if "float" not in str(variable.dtype) or name == "sft_masks":
            continue
        value = rng.normal(scale=scale, size=variable.shape).astype("float32")
        variable.assign(value)
        values[name] = value
    return values


def make_layer(rng, x, **kwargs):
    kwargs = {"num_splits": SPLITS, **kwargs}
    rank = None if kwargs.get("adapter") == "sft" else RANK
    layer = SkillLoRADense(OUT, TASKS, SKILLS, rank, **kwargs)
    layer(x, IDS)
    return layer, randomise(layer, rng)


def poly_reference(x, ids, weights, kernel, bias, lora_a, lora_b, scale):
    """NumPy Polytropon LoRA, one example and one split at a time (PEFT's
    splits: chunk p of the input uses split p's mixed A, the rank-r
    intermediates are summed, output chunk q uses split q's mixed B).

    weights (batch, splits, skills); lora_a (splits, skills, r, in/splits);
    lora_b (splits, skills, r, out/splits); x (batch, ..., in).
    """
    splits = lora_a.shape[0]
    d_in = lora_a.shape[-1]
    outputs = []
    for b in range(x.shape[0]):
        xb = x[b].reshape(-1, x.shape[-1])
        low_rank = 0.0
        for p in range(splits):
            mixed_a = sum(weights[b, p, s] * lora_a[p, s] for s in range(lora_a.shape[1]))
            low_rank = low_rank + xb[:, p * d_in:(p + 1) * d_in] @ mixed_a.T
        chunks = []
        for q in range(splits):
            mixed_b = sum(weights[b, q, s] * lora_b[q, s] for s in range(lora_b.shape[1]))
            chunks.append(scale * low_rank @ mixed_b)
        delta = np.concatenate(chunks, axis=-1)
        outputs.append((xb @ kernel + bias + delta).reshape(x.shape[1:-1] + (-1,)))
    return np.stack(outputs)


def learned_weights(logits, ids, splits, u=None, tau=1.0):
    rows = logits[ids].reshape(len(ids), splits, -1)
    if u is None:
        z = sigmoid(rows)
    else:
        z = sigmoid((rows + np.log(u) - np.log(1 - u)) / tau)
    return z / (z.sum(-1, keepdims=True) + 1e-12)


# -- numerics -----------------------------------------------------------------
@pytest.mark.parametrize("rank_first", [True, False])  # NOTE 12 layouts
@pytest.mark.parametrize("rank_of_input", [2, 3])
def test_inference_matches_numpy(rank_of_input, rank_first):
    rng = np.random.default_rng(1)
    shape = (5, 3, IN) if rank_of_input == 3 else (5, IN)
    x = rng.normal(size=shape).astype("float32")
    layer, w = make_layer(rng, x, lora_alpha=3.0)
    layer._rank_first = rank_first
    expected = poly_reference(
        x, IDS, learned_weights(w["skill_logits"], IDS, SPLITS), w["kernel"],
        w["bias"], w["lora_a"], w["lora_b"], 3.0 / RANK)
    np.testing.assert_allclose(to_np(layer(x, IDS, training=False)), expected,
                               rtol=1e-4, atol=1e-4)


def test_training_gumbel_sigmoid_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    layer, w = make_layer(rng, x, temperature=0.7)
    u = rng.uniform(0.01, 0.99, size=(5, SPLITS, SKILLS)).astype("float32")
    layer._uniform_noise = lambda shape: ops.convert_to_tensor(u)
    expected = poly_reference(
        x, IDS, learned_weights(w["skill_logits"], IDS, SPLITS, u, 0.7),
        w["kernel"], w["bias"], w["lora_a"], w["lora_b"], 1.0 / RANK)
    np.testing.assert_allclose(to_np(layer(x, IDS, training=True)), expected,
                               rtol=1e-4, atol=1e-4)
    # Without noise, training equals inference.
    plain, _ = make_layer(np.random.default_rng(2), x, gumbel_noise=False)
    np.testing.assert_allclose(to_np(plain(x, IDS, training=True)),
                               to_np(plain(x, IDS, training=False)), atol=1e-6)


def test_real_noise_is_seeded_and_per_example():
    rng = np.random.default_rng(3)
    x = np.repeat(rng.normal(size=(1, IN)).astype("float32"), 4, axis=0)
    ids = np.zeros(4, "int32")
    outs = []
    for _ in range(2):
        layer = SkillLoRADense(OUT, TASKS, SKILLS, RANK, seed=7)
        layer(x, ids)
        randomise(layer, np.random.default_rng(3))
        outs.append(to_np(layer(x, ids, training=True)))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)  # seeded
    assert np.abs(outs[0][0] - outs[0][1]).max() > 1e-4  # noise per example
    assert np.abs(outs[0] - to_np(layer(x, ids))).max() > 1e-4


def _ks_statistic(samples, cdf):
    """Kolmogorov-Smirnov distance between samples and a CDF."""
    samples = np.sort(np.asarray(samples, "float64").ravel())
    n = samples.size
    values = cdf(samples)
    return max(np.max(np.arange(1, n + 1) / n - values),
               np.max(values - np.arange(n) / n))


# KS critical value at alpha = 1e-3: 1.95 / sqrt(n). A wrong formula (no
# log(1 - u) term, tau multiplying instead of dividing, the noise added
# after the division) moves the distance above 0.1.
_NOISE_SAMPLES = 20000
_KS_LIMIT = 1.95 / np.sqrt(_NOISE_SAMPLES)


@pytest.mark.parametrize("num_skills", [1, 4])
def test_real_uniform_noise_is_uniform(num_skills):
    layer = SkillLoRADense(OUT, TASKS, num_skills, RANK, seed=21)
    u = to_np(layer._uniform_noise((_NOISE_SAMPLES // num_skills, 1, num_skills)))
    assert u.dtype == np.float32 and u.min() > 0.0 and u.max() < 1.0
    assert _ks_statistic(u, lambda p: p) < _KS_LIMIT


@pytest.mark.parametrize("logit, tau", [
    (0.0, 1.0), (0.7, 1.0), (0.0, 0.5), (0.0, 2.0), (-1.2, 0.5)])
@pytest.mark.parametrize("num_skills", [1, 4])
def test_real_gumbel_sigmoid_distribution(logit, tau, num_skills):
    """z = sigmoid((l + log u - log(1 - u)) / tau) with the REAL noise, before
    the row normalisation: log u - log(1 - u) is standard logistic L, so
    P(z <= p) = P(L <= tau * logit(p) - l) = sigmoid(tau * logit(p) - l);
    with l = 0 and tau = 1, z is Uniform(0, 1)."""
    layer = SkillLoRADense(OUT, TASKS, num_skills, RANK, temperature=tau, seed=22)
    logits = np.full((_NOISE_SAMPLES // num_skills, 1, num_skills), logit, "float32")
    z = to_np(layer._gumbel_sigmoid(ops.convert_to_tensor(logits)))
    assert z.shape == logits.shape

    def cdf(p):
        with np.errstate(divide="ignore"):
            return sigmoid(tau * (np.log(p) - np.log1p(-p)) - logit)

    if logit == 0.0 and tau == 1.0:
        assert _ks_statistic(z, lambda p: p) < _KS_LIMIT  # Uniform(0, 1)
    assert _ks_statistic(z, cdf) < _KS_LIMIT


def test_real_noise_reaches_the_mixing_weights():
    """Through `allocation_weights` (training, logits 0, tau 1, 2 skills):
    w_0 = z_0 / (z_0 + z_1) with z_0, z_1 independent Uniform(0, 1), whose
    CDF is t / (2 (1 - t)) below 1/2 and 1 - (1 - t) / (2 t) above."""
    layer = SkillLoRADense(OUT, _NOISE_SAMPLES, 2, RANK, seed=23,
                           logits_initializer="zeros")
    layer.build((None, IN))
    ids = np.arange(_NOISE_SAMPLES, dtype="int32")
    weights = to_np(layer.allocation_weights(ids, training=True))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)

    def cdf(t):
        return np.where(t < 0.5, t / (2 * (1 - t)), 1 - (1 - t) / (2 * t))

    assert _ks_statistic(weights[:, 0, 0], cdf) < _KS_LIMIT
    # Inference: no noise, sigmoid(0) / (2 sigmoid(0)) = 1/2.
    np.testing.assert_allclose(to_np(layer.allocation_weights(ids[:4])), 0.5,
                               atol=1e-6)


@pytest.mark.parametrize("rank_first", [True, False])  # NOTE 12 layouts
def test_init_equals_frozen_base_exactly(rank_first):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    dense = keras.layers.Dense(OUT, bias_initializer="random_normal")
    base = to_np(dense(x))
    layer = SkillLoRADense.from_dense(dense, TASKS, SKILLS, RANK, num_splits=SPLITS)
    layer._rank_first = rank_first
    assert np.array_equal(to_np(layer(x, IDS, training=True)), base)
    assert np.array_equal(to_np(layer(x, IDS)), base)
    # Initial values: logits U(+-1e-3), A U(+-1/sqrt(in/splits)), B zero.
    assert np.abs(to_np(layer.skill_logits)).max() <= 1e-3
    lora_a = to_np(layer.lora_a)
    assert 0.6 < np.abs(lora_a).max() * np.sqrt(IN / SPLITS) <= 1.0
    assert not np.any(to_np(layer.lora_b))
    assert layer.lora_a.shape == (SPLITS, SKILLS, RANK, IN // SPLITS)
    assert layer.lora_b.shape == (SPLITS, SKILLS, RANK, OUT // SPLITS)


# -- gradients ----------------------------------------------------------------
def test_gradients_reach_skills_and_logits_only():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    layer, _ = make_layer(rng, x)
    names = [v.path.split("/")[-1] for v in layer.trainable_variables]
    assert sorted(names) == ["lora_a", "lora_b", "skill_logits"]
    frozen = [v.path.split("/")[-1] for v in layer.non_trainable_variables]
    assert {"kernel", "bias"} <= set(frozen)
    target = rng.normal(size=(5, 3, OUT)).astype("float32")

    ids_without_task_1 = np.array([0, 2, 0, 2, 0], "int32")

    def loss_fn(trainable):
        out, _ = layer.stateless_call(
            trainable, [v.value for v in layer.non_trainable_variables], x,
            ids_without_task_1, training=True)
        return ops.mean((out - ops.convert_to_tensor(target)) ** 2)

    _, grads = value_and_grad(loss_fn)([v.value for v in layer.trainable_variables])
    for name, grad in zip(names, grads):
        grad = to_np(grad)
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6, name
        if name == "skill_logits":  # only the rows of tasks in the batch
            assert np.all(grad[1] == 0)
            assert np.abs(grad[[0, 2]]).min() > 0

    # One fit step: the base does not move, the skills and the logits do.
    features = keras.Input((3, IN))
    task = keras.Input((), dtype="int32")
    model = keras.Model([features, task], layer(features, task))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = {v.path: to_np(v).copy() for v in layer.weights}
    model.fit([x, IDS], target, epochs=1, batch_size=5, verbose=0)
    for variable in layer.weights:
        moved = not np.array_equal(before[variable.path], to_np(variable))
        name = variable.path.split("/")[-1]
        if name in ("kernel", "bias"):
            assert not moved, name
        elif name in ("skill_logits", "lora_a", "lora_b"):
            assert moved, name


@pytest.mark.parametrize("rank_of_input", [2, 3])
def test_both_layouts_have_the_same_first_and_second_order_gradients(rank_of_input):
    """The rank-first layout (NOTE 12) writes its matmul gradients by hand;
    they must equal the plain layout's, and stay differentiable: the gradient
    of a gradient norm (MAML-style second order) agrees too. Inputs get
    gradients as well (a layer inside a network)."""
    rng = np.random.default_rng(24)
    shape = (5, 3, IN) if rank_of_input == 3 else (5, IN)
    x = rng.normal(size=shape).astype("float32")
    layer, _ = make_layer(rng, x, lora_alpha=2.0)
    upstream = ops.convert_to_tensor(
        rng.normal(size=shape[:-1] + (OUT,)).astype("float32"))
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def inner(params):
        trainable, inputs = params
        out, _ = layer.stateless_call(trainable, non_trainable, inputs, IDS)
        return ops.sum(ops.tanh(out) * upstream)

    def outer(params):
        _, grads = value_and_grad(inner)(params)
        return sum(ops.sum(g ** 2) for g in keras.tree.flatten(grads))

    params = ([v.value for v in layer.trainable_variables], ops.convert_to_tensor(x))
    results = {}
    for rank_first in (True, False):
        layer._rank_first = rank_first
        first = value_and_grad(inner)(params)
        second = value_and_grad(outer)(params)
        results[rank_first] = [to_np(t) for t in keras.tree.flatten((first, second))]
    assert len(results[True]) == len(results[False]) == 10
    for index, (a, b) in enumerate(zip(results[True], results[False], strict=True)):
        assert np.abs(b).max() > 1e-3, index
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=str(index))


# -- allocation modes -----------------------------------------------------------
def _mode_weights(mode, params, ids):
    batch = len(ids)
    if mode == "private":
        return np.broadcast_to(np.eye(TASKS)[ids][:, None], (batch, 1, TASKS))
    if mode == "shared":
        return np.ones((batch, 1, 1))
    if mode == "fixed":
        rows = params["matrix"][ids]
        return (rows / (rows.sum(-1, keepdims=True) + 1e-12))[:, None]
    if mode == "moe":
        logits = params["skill_logits"][ids]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        top = np.sort(probs, axis=-1)[:, -2][:, None]
        probs = np.where(probs >= top, probs, 0.0)
        return (probs / probs.sum(-1, keepdims=True))[:, None]
    return params["task_embeddings"][ids][:, None]  # hyper: linear, no norm


@pytest.mark.parametrize("mode", ["private", "shared", "fixed", "moe", "hyper"])
def test_allocation_modes_match_numpy(mode):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, IN)).astype("float32")
    skills = {"private": TASKS, "shared": 1}.get(mode, SKILLS)
    matrix = np.array([[1, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    kwargs = {"allocation": mode, "top_k": 2}
    if mode == "fixed":
        kwargs["expert_matrix"] = matrix
    layer = SkillLoRADense(OUT, TASKS, skills, RANK, **kwargs)
    layer(x, IDS)
    params = randomise(layer, rng)
    params["matrix"] = matrix
    weights = _mode_weights(mode, params, IDS)
    expected = poly_reference(x, IDS, weights, params["kernel"], params["bias"],
                              params["lora_a"], params["lora_b"], 1.0 / RANK)
    for training in (False, True):  # no noise outside "learned"
        np.testing.assert_allclose(to_np(layer(x, IDS, training=training)),
                                   expected, rtol=1e-4, atol=1e-4)
    trainable = {v.path.split("/")[-1] for v in layer.trainable_variables}
    allocation_vars = {"moe": {"skill_logits"}, "hyper": {"task_embeddings"}}
    assert trainable == {"lora_a", "lora_b"} | allocation_vars.get(mode, set())


# -- configuration errors (one test per ValueError) -------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"allocation": "private"}, "num_skills == num_tasks"),
    ({"allocation": "shared"}, "num_skills=1"),
    ({"allocation": "soft"}, "allocation must be one of"),
    ({"adapter": "dora"}, "adapter must be one of"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"adapter": "sft", "rank": None, "sft_sparsity": 1.0},
     r"sft_sparsity must be in \[0, 1\)"),
    ({"adapter": "sft", "rank": None, "sft_sparsity": -0.1},
     r"sft_sparsity must be in \[0, 1\)"),
    ({"allocation": "fixed"}, "needs expert_matrix"),
    ({"allocation": "fixed", "expert_matrix": np.eye(2)},
     r"expert_matrix must have shape \(num_tasks, num_skills\) = \(3, 4\)"),
    ({"allocation": "fixed", "expert_matrix": np.full((3, 4), 0.5)},
     "only 0 and 1"),
    ({"expert_matrix": np.eye(3, 4)}, "only used with allocation='fixed'"),
    ({"rank": None}, "adapter='lora' needs `rank`"),
    ({"rank": 0}, "`rank` must be an integer >= 1"),
    ({"adapter": "sft"}, "`rank` is a LoRA argument"),
    ({"adapter": "sft", "rank": None, "lora_alpha": 2.0},
     "`lora_alpha` is a LoRA argument"),
    ({"num_tasks": 0}, "`num_tasks` must be an integer >= 1"),
    ({"num_skills": 1.5}, "`num_skills` must be an integer >= 1"),
    ({"num_splits": 0}, "`num_splits` must be an integer >= 1"),
    ({"units": 0}, "`units` must be an integer >= 1"),
    ({"top_k": 0}, "`top_k` must be an integer >= 1"),
])
def test_bad_configs_raise(kwargs, match):
    arguments = {"units": OUT, "num_tasks": TASKS, "num_skills": SKILLS,
                 "rank": RANK, **kwargs}
    with pytest.raises(ValueError, match=match):
        SkillLoRADense(**arguments)


def test_sft_needs_no_rank():
    x = np.random.default_rng(20).normal(size=(5, IN)).astype("float32")
    layer = SkillLoRADense(OUT, TASKS, SKILLS, adapter="sft")
    assert layer.rank is None and layer.scale is None
    assert tuple(layer(x, IDS).shape) == (5, OUT)
    assert layer.get_config()["rank"] is None
    assert SkillLoRADense.from_config(layer.get_config()).rank is None


@pytest.mark.parametrize("features, units", [(6, OUT), (IN, 5)])
def test_num_splits_must_divide_features(features, units):
    layer = SkillLoRADense(units, TASKS, SKILLS, RANK, num_splits=4)
    with pytest.raises(ValueError, match="num_splits=4 must divide"):
        layer(np.ones((5, features), "float32"), IDS)


# -- sparse (SFT) skills --------------------------------------------------------
def test_sft_masks_numerics_and_gradients():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    layer, w = make_layer(rng, x, adapter="sft")
    masks = to_np(layer.sft_masks)
    assert masks.shape == (SKILLS, IN, OUT) and set(np.unique(masks)) == {0.0, 1.0}
    np.testing.assert_array_equal(masks.reshape(SKILLS, -1).sum(1),
                                  round(0.1 * IN * OUT))
    assert not np.array_equal(masks[0], masks[1])
    # Same mask_seed -> same masks (NumPy-drawn, backend independent).
    other = SkillLoRADense(OUT, TASKS, SKILLS, adapter="sft", num_splits=SPLITS)
    other(x, IDS)
    np.testing.assert_array_equal(to_np(other.sft_masks), masks)
    # Deltas start at zero: the layer starts as the base.
    np.testing.assert_allclose(to_np(other(x, IDS)),
                               x @ to_np(other.kernel) + to_np(other.bias), atol=1e-5)

    weights = learned_weights(w["skill_logits"], IDS, SPLITS)
    deltas = masks * w["sft_deltas"]
    expected = []
    for b in range(5):
        row_weights = np.repeat(weights[b].T, IN // SPLITS, axis=1)  # (S, in)
        kernel = w["kernel"] + np.einsum("si,sio->io", row_weights, deltas)
        expected.append(x[b] @ kernel + w["bias"])
    np.testing.assert_allclose(to_np(layer(x, IDS)), np.stack(expected),
                               rtol=1e-4, atol=1e-4)

    def loss_fn(trainable):
        out, _ = layer.stateless_call(
            trainable, [v.value for v in layer.non_trainable_variables], x, IDS)
        return ops.sum(out ** 2)

    _, grads = value_and_grad(loss_fn)([v.value for v in layer.trainable_variables])
    names = [v.path.split("/")[-1] for v in layer.trainable_variables]
    delta_grad = to_np(grads[names.index("sft_deltas")])
    assert np.all(delta_grad[masks == 0] == 0)
    assert np.abs(delta_grad).max() > 0
    assert "sft_masks" not in names


# -- few-shot task adding and metrics --------------------------------------------
def test_add_tasks_keeps_rows_and_saves(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, IN)).astype("float32")
    layer, w = make_layer(rng, x)
    before = to_np(layer(x, IDS))
    new_ids = layer.add_tasks(2)
    assert new_ids == [3, 4] and layer.num_tasks == 5
    assert layer.get_config()["num_tasks"] == 5
    logits = to_np(layer.skill_logits)
    np.testing.assert_array_equal(logits[:TASKS], w["skill_logits"])
    np.testing.assert_array_equal(sigmoid(logits[TASKS:]), 0.5)
    assert any(v is layer.skill_logits for v in layer.trainable_variables)
    assert len(layer.weights) == 5
    np.testing.assert_allclose(to_np(layer(x, IDS)), before, atol=1e-6)
    new_task = np.full(5, 4, "int32")
    weights = learned_weights(logits, new_task, SPLITS)
    np.testing.assert_allclose(weights, 1.0 / SKILLS, atol=1e-6)
    # The grown layer saves and loads.
    features, task = keras.Input((IN,)), keras.Input((), dtype="int32")
    model = keras.Model([features, task], layer(features, task))
    path = str(tmp_path / "grown.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(loaded([x, new_task])),
                               to_np(model([x, new_task])), atol=1e-6)


def _mode_layer(mode):
    skills = {"private": TASKS, "shared": 1}.get(mode, SKILLS)
    extra = {"expert_matrix": np.eye(TASKS, skills)} if mode == "fixed" else {}
    layer = SkillLoRADense(OUT, TASKS, skills, RANK, allocation=mode, **extra)
    layer(np.ones((5, IN), "float32"), IDS)
    return layer


@pytest.mark.parametrize("mode", ["learned", "moe", "hyper", "shared", "fixed"])
def test_add_tasks_per_mode(mode):
    layer = _mode_layer(mode)
    rows = np.ones((2, layer.num_skills)) if mode == "fixed" else None
    assert layer.add_tasks(2, expert_rows=rows) == [TASKS, TASKS + 1]
    new_ids = np.array([TASKS + 1, 0, TASKS, 1, 2], "int32")
    assert tuple(layer(np.ones((5, IN), "float32"), new_ids).shape) == (5, OUT)
    if mode == "fixed":
        np.testing.assert_array_equal(layer.expert_matrix[TASKS:], rows)
    with pytest.raises(ValueError, match="task id out of range"):
        layer(np.ones((5, IN), "float32"), np.full(5, TASKS + 2, "int32"))


def test_add_tasks_to_a_frozen_allocation():
    # Few-shot adaptation in "average" mode freezes Z with
    # `variable.trainable = False`; a later add_tasks must grow it in place:
    # still frozen, same position among the weights, same values.
    layer = _mode_layer("learned")
    names = [v.name for v in layer.weights]
    layer.skill_logits.trainable = False
    before = to_np(layer.skill_logits)
    assert layer.add_tasks(1) == [TASKS]
    assert [v.name for v in layer.weights] == names
    assert not layer.skill_logits.trainable
    assert all(v is not layer.skill_logits for v in layer.trainable_variables)
    np.testing.assert_array_equal(to_np(layer.skill_logits)[:TASKS], before)
    layer.skill_logits.trainable = True
    assert layer.add_tasks(1) == [TASKS + 1]
    assert any(v is layer.skill_logits for v in layer.trainable_variables)


@pytest.mark.parametrize("mode", ["learned", "moe", "hyper", "shared", "fixed"])
@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_add_tasks_needs_a_positive_count(mode, n):
    layer = _mode_layer(mode)
    rows = np.ones((1, layer.num_skills)) if mode == "fixed" else None
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        layer.add_tasks(n, expert_rows=rows)


@pytest.mark.parametrize("mode", ["learned", "moe", "hyper", "shared"])
def test_add_tasks_refuses_expert_rows_outside_fixed(mode):
    layer = _mode_layer(mode)
    with pytest.raises(ValueError, match="expert_rows is only used with"):
        layer.add_tasks(1, expert_rows=np.ones((1, layer.num_skills)))
    assert layer.num_tasks == TASKS


def test_add_tasks_fixed_and_private_errors():
    fixed = _mode_layer("fixed")
    with pytest.raises(ValueError, match="needs expert_rows"):
        fixed.add_tasks(1)
    with pytest.raises(ValueError, match="expert_rows must be a 0/1 array"):
        fixed.add_tasks(1, expert_rows=np.ones((2, SKILLS)))
    with pytest.raises(ValueError, match="expert_rows must be a 0/1 array"):
        fixed.add_tasks(1, expert_rows=np.full((1, SKILLS), 0.5))
    assert fixed.num_tasks == TASKS and fixed.expert_matrix.shape == (TASKS, SKILLS)
    with pytest.raises(ValueError, match="cannot add tasks"):
        _mode_layer("private").add_tasks(1)


def test_allocation_metrics_on_hand_made_matrices():
    binary = np.array([[1, 0, 1], [0, 1, 0]])
    metrics = skill_allocation_metrics(binary)
    assert metrics["discreteness"] == pytest.approx(1.0)
    assert metrics["sparsity"] == pytest.approx(0.5)
    half = skill_allocation_metrics(np.full((4, 3), 0.5))
    assert half["discreteness"] == pytest.approx(0.0, abs=1e-12)
    assert half["usage"] == pytest.approx(1.0)
    one_skill = skill_allocation_metrics(np.array([[1, 0, 0], [1, 0, 0]]))
    assert one_skill["usage"] == pytest.approx(0.0, abs=1e-12)
    # p = 0.9: binary entropy 0.469 bits.
    assert skill_allocation_metrics(np.full((1, 2), 0.9))["discreteness"] == (
        pytest.approx(1 - 0.4689955935892812))
    # The layer reads its own sigmoid(logits).
    layer = SkillLoRADense(OUT, TASKS, SKILLS, RANK)
    layer.build((None, IN))
    layer.skill_logits.assign(np.where(np.eye(TASKS, SKILLS) > 0, 30.0, -30.0))
    metrics = layer.allocation_metrics()
    assert metrics["discreteness"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["sparsity"] == pytest.approx(TASKS / (TASKS * SKILLS))
    assert metrics["usage"] == pytest.approx(np.log(3) / np.log(4), abs=1e-6)


# -- export ---------------------------------------------------------------------
@pytest.mark.parametrize("adapter", ["lora", "sft"])
def test_merged_kernel_and_to_dense(adapter):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, IN)).astype("float32")
    layer, _ = make_layer(rng, x, adapter=adapter, activation="tanh")
    for task in range(TASKS):
        ids = np.full(5, task, "int32")
        expected = to_np(layer(x, ids))
        kernel = to_np(layer.merged_kernel(task))
        np.testing.assert_allclose(np.tanh(x @ kernel + to_np(layer.bias)),
                                   expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(to_np(layer.to_dense(task)(x)), expected,
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        layer.merged_kernel(TASKS)


# -- EinsumDense wrapper -------------------------------------------------------
@pytest.mark.parametrize("projection", ["qkv", "output"])
def test_einsum_wrapper(projection):
    rng = np.random.default_rng(10)
    heads, head_dim, model_dim = 2, 3, 6
    if projection == "qkv":
        wrapped = keras.layers.EinsumDense(
            "abc,cde->abde", (None, heads, head_dim), bias_axes="de")
        x = rng.normal(size=(5, 4, model_dim)).astype("float32")
    else:
        wrapped = keras.layers.EinsumDense("abcd,cde->abe", (None, model_dim),
                                           bias_axes="e")
        x = rng.normal(size=(5, 4, heads, head_dim)).astype("float32")
    base = to_np(wrapped(x))
    layer = SkillLoRAEinsumDense(wrapped, TASKS, SKILLS, RANK, num_splits=SPLITS)
    assert np.array_equal(to_np(layer(x, IDS, training=True)), base)
    assert {v.path.split("/")[-1] for v in layer.trainable_variables} == {
        "skill_logits", "lora_a", "lora_b"}
    w = randomise(layer, rng)
    base = to_np(wrapped(x))
    kernel = to_np(wrapped.kernel)
    flat_in = kernel.shape[0] if projection == "qkv" else heads * head_dim
    flat_kernel = kernel.reshape(flat_in, -1)
    weights = learned_weights(w["skill_logits"], IDS, SPLITS)
    flat_x = x.reshape(5, 4, flat_in)
    expected = poly_reference(flat_x, IDS, weights, flat_kernel,
                              np.zeros(flat_kernel.shape[1], "float32"),
                              w["lora_a"], w["lora_b"], 1.0 / RANK)
    expected = base + (expected - flat_x @ flat_kernel).reshape(base.shape)
    np.testing.assert_allclose(to_np(layer(x, IDS)), expected, rtol=1e-4, atol=1e-4)
    merged = to_np(layer.merged_kernel(2))
    ids = np.full(5, 2, "int32")
    bias = to_np(wrapped.bias)
    via_merged = np.einsum(wrapped.equation, x, merged) + bias
    np.testing.assert_allclose(via_merged, to_np(layer(x, ids)), rtol=1e-4, atol=1e-4)


def test_einsum_wrapper_rejects_unsupported_layers():
    with pytest.raises(ValueError, match="without activation"):
        SkillLoRAEinsumDense(keras.layers.EinsumDense(
            "ab,bc->ac", 4, activation="relu"), 2, 2, 1)
    with pytest.raises(ValueError, match="equation"):
        SkillLoRAEinsumDense(
            keras.layers.EinsumDense("abc,dc->abd", (None, 4)), 2, 2, 1)
    with pytest.raises(ValueError, match="EinsumDense"):
        SkillLoRAEinsumDense(keras.layers.Dense(3), 2, 2, 1)


def test_task_context():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(5, IN)).astype("float32")
    layer, _ = make_layer(rng, x)
    explicit = to_np(layer(x, IDS))
    assert current_task_ids() is None
    with task_context(np.zeros(5, "int32")):
        with task_context(IDS):
            np.testing.assert_allclose(to_np(layer(x)), explicit, atol=1e-6)
        zeros = to_np(layer(x))
    assert current_task_ids() is None
    assert np.abs(zeros - explicit).max() > 1e-4
    with pytest.raises(ValueError, match="needs a task"):
        layer(x)


# -- harness, shapes, saving, bad inputs, cross-backend ---------------------------
def test_layer_checks(tmp_path):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    run_layer_checks(
        SkillLoRADense,
        {"units": OUT, "num_tasks": TASKS, "num_skills": SKILLS, "rank": RANK,
         "num_splits": SPLITS, "lora_alpha": 4.0, "seed": 3,
         "skill_regularizer": "l2"},
        x, IDS, tmp_path,
        expected_output_shape=(5, 3, OUT),
        expected_num_trainable_weights=3,  # skill_logits, lora_a, lora_b
        expected_num_non_trainable_weights=2)  # frozen kernel, bias


def test_einsum_layer_checks(tmp_path):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    wrapped = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3),
                                       bias_axes="de")
    run_layer_checks(
        SkillLoRAEinsumDense,
        {"einsum_dense": keras.saving.serialize_keras_object(wrapped),
         "num_tasks": TASKS, "num_skills": SKILLS,
         "adapter": "sft", "allocation": "moe"},
        x, IDS.astype("uint8"), tmp_path,
        expected_output_shape=(5, 3, 2, 3),
        expected_num_trainable_weights=2,  # skill_logits, sft_deltas
        expected_num_non_trainable_weights=3)  # sft_masks, kernel, bias


@pytest.mark.parametrize("shape", [(5, IN), (5, 3, IN), (5, 2, 3, IN)])
def test_compute_output_shape_and_summary(shape):
    layer = SkillLoRADense(OUT, TASKS, SKILLS, RANK)
    x = np.ones(shape, "float32")
    assert tuple(layer(x, IDS).shape) == shape[:-1] + (OUT,)
    assert layer.compute_output_shape(shape) == shape[:-1] + (OUT,)
    assert layer.compute_output_shape((None,) + shape[1:]) == (
        (None,) + shape[1:-1] + (OUT,))
    features = keras.Input(shape[1:])
    task = keras.Input((), dtype="uint8")
    model = keras.Model([features, task], SkillLoRADense(OUT, TASKS, SKILLS, RANK)(
        features, task))
    assert tuple(model.output.shape) == (None,) + shape[1:-1] + (OUT,)
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    assert "skill_lora_dense" in "\n".join(lines)
    wrapped = keras.layers.EinsumDense("abcd,cde->abe", (None, OUT))
    einsum = SkillLoRAEinsumDense(wrapped, TASKS, SKILLS, RANK)
    assert einsum.compute_output_shape((None, 4, 2, 3)) == (None, 4, OUT)
    assert tuple(einsum(np.ones((5, 4, 2, 3), "float32"), IDS).shape) == (5, 4, OUT)


@pytest.mark.parametrize("allocation", ["learned", "fixed"])
def test_keras_round_trip_with_random_weights(tmp_path, allocation):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    extra = {"expert_matrix": np.eye(TASKS, SKILLS)} if allocation == "fixed" else {}
    features, task = keras.Input((3, IN)), keras.Input((), dtype="int32")
    layer = SkillLoRADense(OUT, TASKS, SKILLS, num_splits=SPLITS,
                           allocation=allocation, adapter="sft", **extra)
    model = keras.Model([features, task], layer(features, task))
    randomise(layer, rng)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(loaded([x, IDS])), to_np(model([x, IDS])),
                               atol=1e-6)
    assert loaded.layers[-1].get_config() == layer.get_config()


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int64", "uint32"])
def test_any_integer_id_dtype_gives_the_same_outputs(dtype):
    rng = np.random.default_rng(17)
    x = rng.normal(size=(5, IN)).astype("float32")
    layer, _ = make_layer(rng, x)
    np.testing.assert_array_equal(to_np(layer(x, IDS.astype(dtype))),
                                  to_np(layer(x, IDS)))


def test_bad_inputs_raise():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(5, IN)).astype("float32")
    layer, _ = make_layer(rng, x)
    with pytest.raises(ValueError, match="last axes"):
        layer(np.ones((5, IN + 1), "float32"), IDS)
    with pytest.raises(ValueError, match="out of range"):
        layer(x, np.array([0, 1, 2, 3, 0], "int32"))
    with pytest.raises(ValueError, match="out of range"):
        layer(x, np.array([0, -1, 2, 1, 0], "int32"))
    with pytest.raises(ValueError, match="integer task ids"):
        layer(x, np.ones((5,), "float32"))
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        layer(x, np.zeros((5, 1), "int32"))
    with pytest.raises(ValueError, match="got 4 task entries for a batch of 5"):
        layer(x, np.zeros((4,), "int32"))
    with pytest.raises(ValueError, match="got 1 task entries for a batch of 5"):
        layer(x, np.zeros((1,), "int32"))  # no broadcasting of one task
    with pytest.raises(ValueError, match="in_features"):
        SkillLoRADense(OUT, TASKS, SKILLS, RANK)(np.ones((IN,), "float32"), IDS[:1])
    # The symbolic call checks the task too: the error comes where a
    # functional model is built, not at its first batch.
    with pytest.raises(ValueError, match="integer task ids"):
        SkillLoRADense(OUT, TASKS, SKILLS, RANK)(keras.Input((IN,)),
                                                  keras.Input(()))


CROSS_BACKEND_SNIPPET = """
import json
import numpy as np
from keras import ops
from layers.skill_lora_dense import SkillLoRADense, SkillLoRAEinsumDense
import keras
rng = np.random.default_rng(15)
x = rng.normal(size=(5, 3, 8)).astype("float32")
ids = np.array([0, 2, 1, 2, 0], "int32")
results = []
for adapter, rank in (("lora", 2), ("sft", None)):
    layer = SkillLoRADense(6, 3, 4, rank, num_splits=2, adapter=adapter)
    layer(x, ids)
    for variable in layer.weights:
        if "float" in str(variable.dtype) and not variable.path.endswith("masks"):
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
    results.append(np.asarray(ops.convert_to_numpy(layer(x, ids))).tolist())
wrapped = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3))
layer = SkillLoRAEinsumDense(wrapped, 3, 4, 2)
layer(x, ids)
for variable in layer.weights:
    variable.assign(rng.normal(size=variable.shape).astype("float32"))
results.append(np.asarray(ops.convert_to_numpy(layer(x, ids))).tolist())
print(json.dumps(results))
"""


def test_same_outputs_on_other_backends():
    document = assert_same_across_backends(CROSS_BACKEND_SNIPPET, atol=1e-4,
                                           rtol=1e-4)
    assert len(document) == 3 and np.abs(np.array(document[0])).max() > 0.1


# -- the reference implementation: Hugging Face PEFT's poly tuner ---------------
def _import_peft():
    """torch and PEFT's poly Linear. PEFT is torch-only but it runs next to
    any backend (the layer on this backend, PEFT on CPU torch in the same
    process: ~4 s of imports under JAX / TensorFlow, no subprocess). `peft`
    is in the test extra: missing it fails the torch run and skips the
    others."""
    try:
        import torch
        from peft.tuners.poly.config import PolyConfig
        from peft.tuners.poly.layer import Linear as PolyLinear
    except ImportError as error:
        if keras.backend.backend() == "torch":
            pytest.fail("the PEFT cross-check needs `peft` (test extra: "
                        f"pip install -e '.[test]'): {error}")
        pytest.skip(f"PEFT (a torch-only reference) does not import: {error}")
    return torch, PolyConfig, PolyLinear


P_IN, P_OUT = 16, 12  # divisible by 1, 2 and 4 splits


@pytest.mark.parametrize("rank_first", [True, False])  # NOTE 12 layouts
@pytest.mark.parametrize("splits", [1, 2, 4])
def test_matches_peft_poly_reference(splits, rank_first, monkeypatch):
    """Outputs AND gradients (allocation logits, LoRA A and B, inputs) equal Hugging
    Face PEFT's `poly` Linear on the same weights, with 1, 2 and 4 splits,
    in three modes: inference; training with the noise switched off; training
    with the same noise. PEFT's A is our A with the last two axes swapped
    (NOTE 2).

    PEFT has no switch for the noise: in training its router always samples
    `RelaxedBernoulli(temperature=1.0, logits).rsample()`, which draws
    u = torch.rand(shape). The test patches `torch.rand` around PEFT's call:
    u = 0.5 makes log u - log(1 - u) = 0 (noise off, our
    `gumbel_noise=False`), and a given u (our `_uniform_noise` patched to the
    same u) checks the relaxed sample itself."""
    torch, PolyConfig, PolyLinear = _import_peft()
    rng = np.random.default_rng(16 + splits)
    x = rng.normal(size=(5, 3, P_IN)).astype("float32")
    upstream = rng.normal(size=(5, 3, P_OUT)).astype("float32")
    layer = SkillLoRADense(P_OUT, TASKS, SKILLS, RANK, num_splits=splits)
    layer(x, IDS)
    layer._rank_first = rank_first
    w = randomise(layer, rng)
    names = [v.path.split("/")[-1] for v in layer.trainable_variables]
    assert names == ["skill_logits", "lora_a", "lora_b"]

    base = torch.nn.Linear(P_IN, P_OUT)
    peft_layer = PolyLinear(base, "default", PolyConfig(
        r=RANK, n_tasks=TASKS, n_skills=SKILLS, n_splits=splits))
    peft_params = {
        "skill_logits": peft_layer.poly_router["default"].module_logits,
        "lora_a": peft_layer.poly_lora_A["default"],
        "lora_b": peft_layer.poly_lora_B["default"],
    }
    with torch.no_grad():
        base.weight.copy_(torch.from_numpy(w["kernel"].T))
        base.bias.copy_(torch.from_numpy(w["bias"]))
        peft_params["skill_logits"].copy_(torch.from_numpy(w["skill_logits"]))
        peft_params["lora_a"].copy_(
            torch.from_numpy(w["lora_a"].transpose(0, 1, 3, 2).copy()))
        peft_params["lora_b"].copy_(torch.from_numpy(w["lora_b"]))

    def peft_run(training, u):
        peft_layer.train(training)
        for param in peft_params.values():
            param.grad = None
        draws = []

        def rand(*shape, dtype=None, device=None, **_):
            if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
                shape = shape[0]
            assert tuple(shape) == u.shape, (tuple(shape), u.shape)
            draws.append(shape)
            return torch.from_numpy(u).to(dtype)

        inputs = torch.from_numpy(x).requires_grad_(True)
        with monkeypatch.context() as patch:
            patch.setattr(torch, "rand", rand)
            out = peft_layer(inputs, task_ids=torch.from_numpy(IDS).long())
        assert len(draws) == (1 if training else 0)  # the patch is PEFT's noise
        (out * torch.from_numpy(upstream)).sum().backward()
        grads = {k: p.grad.numpy() for k, p in peft_params.items()}
        grads["lora_a"] = grads["lora_a"].transpose(0, 1, 3, 2)  # NOTE 2
        grads["inputs"] = inputs.grad.numpy()
        return out.detach().numpy(), grads

    def ours(training, noise, u):
        layer.gumbel_noise = noise
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(params):
            trainable, inputs = params
            out, _ = layer.stateless_call(trainable, non_trainable, inputs,
                                          IDS, training=training)
            return ops.sum(out * ops.convert_to_tensor(upstream)), out

        with monkeypatch.context() as patch:
            patch.setattr(layer, "_uniform_noise",
                          lambda shape: ops.convert_to_tensor(u))
            (_, out), (grads, input_grad) = value_and_grad(
                loss_fn, has_aux=True)(
                ([v.value for v in layer.trainable_variables],
                 ops.convert_to_tensor(x)))
        grads = dict(zip(names, map(to_np, grads), strict=True))
        grads["inputs"] = to_np(input_grad)
        return to_np(out), grads

    half = np.full((5, splits, SKILLS), 0.5, "float32")
    noise = rng.uniform(0.05, 0.95, size=(5, splits, SKILLS)).astype("float32")
    cases = {
        "inference": (False, True, half),
        "training, noise off": (True, False, half),
        "training, same noise": (True, True, noise),
    }
    outputs = {}
    for case, (training, with_noise, u) in cases.items():
        expected, expected_grads = peft_run(training, u)
        actual, grads = ours(training, with_noise, u)
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5,
                                   err_msg=case)
        assert sorted(grads) == sorted(expected_grads)
        for name, grad in grads.items():
            assert np.abs(expected_grads[name]).max() > 1e-3, (case, name)
            np.testing.assert_allclose(grad, expected_grads[name], rtol=1e-4,
                                       atol=1e-5, err_msg=f"{case}: {name}")
        outputs[case] = actual
    # The noise changes the outputs: the third case checks the sample.
    assert np.abs(outputs["training, same noise"] - outputs["inference"]).max() > 1e-3
