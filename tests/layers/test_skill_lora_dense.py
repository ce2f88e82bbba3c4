"""Tests of SkillLoRADense / SkillLoRAEinsumDense (Polytropon, Eqs. 2-7)."""

import json

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
from tests.harness import other_backends, run_in_backends, run_layer_checks
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
    layer = SkillLoRADense(OUT, TASKS, SKILLS, RANK, **kwargs)
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
@pytest.mark.parametrize("rank_of_input", [2, 3])
def test_inference_matches_numpy(rank_of_input):
    rng = np.random.default_rng(1)
    shape = (5, 3, IN) if rank_of_input == 3 else (5, IN)
    x = rng.normal(size=shape).astype("float32")
    layer, w = make_layer(rng, x, lora_alpha=3.0)
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


def test_init_equals_frozen_base_exactly():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    dense = keras.layers.Dense(OUT, bias_initializer="random_normal")
    base = to_np(dense(x))
    layer = SkillLoRADense.from_dense(dense, TASKS, SKILLS, RANK, num_splits=SPLITS)
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


def test_bad_allocation_configs_raise():
    with pytest.raises(ValueError, match="num_skills == num_tasks"):
        SkillLoRADense(OUT, 3, 4, RANK, allocation="private")
    with pytest.raises(ValueError, match="num_skills=1"):
        SkillLoRADense(OUT, 3, 2, RANK, allocation="shared")
    with pytest.raises(ValueError, match="expert_matrix"):
        SkillLoRADense(OUT, 3, 2, RANK, allocation="fixed")
    with pytest.raises(ValueError, match=r"\(num_tasks, num_skills\)"):
        SkillLoRADense(OUT, 3, 2, RANK, allocation="fixed", expert_matrix=np.eye(2))
    with pytest.raises(ValueError, match="allocation must be one of"):
        SkillLoRADense(OUT, 3, 2, RANK, allocation="soft")
    with pytest.raises(ValueError, match="must divide"):
        SkillLoRADense(OUT, 3, 2, RANK, num_splits=4)(np.ones((1, 6), "float32"),
                                                      np.array([0]))


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
    other = SkillLoRADense(OUT, TASKS, SKILLS, RANK, adapter="sft", num_splits=SPLITS)
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
    with pytest.raises(ValueError, match="cannot add tasks"):
        SkillLoRADense(OUT, 2, 2, RANK, allocation="private").add_tasks(1)


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
    with pytest.raises(ValueError, match="needs task ids"):
        layer(x)


# -- harness, saving, bad inputs, cross-backend -----------------------------------
def test_layer_checks(tmp_path):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    run_layer_checks(
        SkillLoRADense,
        {"units": OUT, "num_tasks": TASKS, "num_skills": SKILLS, "rank": RANK,
         "num_splits": SPLITS, "lora_alpha": 4.0, "seed": 3,
         "skill_regularizer": "l2"},
        x, IDS, tmp_path)
    wrapped = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3))
    run_layer_checks(
        SkillLoRAEinsumDense,
        {"einsum_dense": keras.saving.serialize_keras_object(wrapped),
         "num_tasks": TASKS, "num_skills": SKILLS, "rank": RANK,
         "adapter": "sft", "allocation": "moe"},
        x, IDS, tmp_path)


@pytest.mark.parametrize("allocation", ["learned", "fixed"])
def test_keras_round_trip_with_random_weights(tmp_path, allocation):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    extra = {"expert_matrix": np.eye(TASKS, SKILLS)} if allocation == "fixed" else {}
    features, task = keras.Input((3, IN)), keras.Input((), dtype="int32")
    layer = SkillLoRADense(OUT, TASKS, SKILLS, RANK, num_splits=SPLITS,
                           allocation=allocation, adapter="sft", **extra)
    model = keras.Model([features, task], layer(features, task))
    randomise(layer, rng)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(loaded([x, IDS])), to_np(model([x, IDS])),
                               atol=1e-6)
    assert loaded.layers[-1].get_config() == layer.get_config()


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
    with pytest.raises(ValueError, match="entries for a batch"):
        layer(x, np.zeros((4,), "int32"))
    with pytest.raises(ValueError, match="in_features"):
        SkillLoRADense(OUT, TASKS, SKILLS, RANK)(np.ones((IN,), "float32"), IDS[:1])


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
for adapter in ("lora", "sft"):
    layer = SkillLoRADense(6, 3, 4, 2, num_splits=2, adapter=adapter)
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
    here = json.loads(_run_snippet_here())
    others = run_in_backends(CROSS_BACKEND_SNIPPET, other_backends())
    for backend, results in others.items():
        for case, (expected, actual) in enumerate(zip(here, results)):
            np.testing.assert_allclose(np.array(actual), np.array(expected),
                                       rtol=1e-4, atol=1e-4,
                                       err_msg=f"{backend}, case {case}")


def _run_snippet_here():
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(CROSS_BACKEND_SNIPPET, {})
    return buffer.getvalue().strip().splitlines()[-1]


def test_matches_peft_poly_reference():
    """Same weights as Hugging Face PEFT's `poly` Linear give the same outputs
    (inference), including splits; PEFT's A is our A with the last two axes
    swapped (NOTE 2). Optional: PEFT is a benchmark-only package."""
    if keras.backend.backend() != "torch":
        pytest.skip("PEFT comparison runs under the torch backend")
    pytest.importorskip("peft")
    import torch
    from peft.tuners.poly.config import PolyConfig
    from peft.tuners.poly.layer import Linear as PolyLinear

    rng = np.random.default_rng(16)
    x = rng.normal(size=(5, 3, IN)).astype("float32")
    layer, w = make_layer(rng, x)
    base = torch.nn.Linear(IN, OUT)
    peft_layer = PolyLinear(base, "default", PolyConfig(
        r=RANK, n_tasks=TASKS, n_skills=SKILLS, n_splits=SPLITS))
    with torch.no_grad():
        base.weight.copy_(torch.from_numpy(w["kernel"].T))
        base.bias.copy_(torch.from_numpy(w["bias"]))
        peft_layer.poly_lora_A["default"].copy_(
            torch.from_numpy(w["lora_a"].transpose(0, 1, 3, 2).copy()))
        peft_layer.poly_lora_B["default"].copy_(torch.from_numpy(w["lora_b"]))
        peft_layer.poly_router["default"].module_logits.copy_(
            torch.from_numpy(w["skill_logits"]))
        peft_layer.eval()
        expected = peft_layer(torch.from_numpy(x),
                              task_ids=torch.from_numpy(IDS).long()).numpy()
    np.testing.assert_allclose(to_np(layer(x, IDS)), expected, rtol=1e-5, atol=1e-5)
