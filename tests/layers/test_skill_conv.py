"""Tests of SkillConv2D (Polytropon sparse skills on a 2-D convolution)."""

import keras
import numpy as np
import pytest
from keras import ops

from layers import SkillConv2D, task_context
from tests.harness import assert_same_across_backends, run_layer_checks
from training import value_and_grad

IN, FILTERS, TASKS, SKILLS, SPLITS = 6, 5, 3, 5, 2
IDS = np.array([0, 2, 1, 2, 0], dtype="int32")


def to_np(t):
    return np.asarray(ops.convert_to_numpy(t))


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_conv(x, kernel, strides=(1, 1), padding="valid", dilation=(1, 1)):
    """NumPy cross-correlation, channels_last, Keras/TF 'same' padding."""
    kh, kw = kernel.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    height, width = x.shape[1:3]
    if padding == "same":
        out_h, out_w = -(-height // sh), -(-width // sw)
        pad_h = max((out_h - 1) * sh + (kh - 1) * dh + 1 - height, 0)
        pad_w = max((out_w - 1) * sw + (kw - 1) * dw + 1 - width, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                       (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h = (height - dh * (kh - 1) - 1) // sh + 1
        out_w = (width - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * dh:i * dh + sh * (out_h - 1) + 1:sh,
                      j * dw:j * dw + sw * (out_w - 1) + 1:sw, :]
            out += patch @ kernel[i, j]
    return out


def randomise(layer, rng, scale=0.5):
    """Random values for every float weight except the masks."""
    values = {}
    for variable in layer.weights:
        name = variable.path.split("/")[-1]
        if "float" not in str(variable.dtype) or name == "sft_masks":
            continue
        value = rng.normal(scale=scale, size=variable.shape).astype("float32")
        variable.assign(value)
        values[name] = value
    values["sft_masks"] = to_np(layer.sft_masks)
    return values


def reference(x, ids, weights, w, **conv_kwargs):
    """Per-example NumPy conv with W_t = W0 + sum_s w[t, q(c), s] M_s D_s.

    weights: (num_tasks, splits, skills) allocation weights.
    """
    deltas = w["sft_masks"] * w["sft_deltas"]  # (S, kh, kw, in, F)
    channel_weights = np.repeat(weights, x.shape[-1] // weights.shape[1], axis=1)
    outputs = []
    for b, task in enumerate(ids):
        kernel = w["kernel"] + np.einsum("cs,shwcf->hwcf",
                                         channel_weights[task], deltas)
        outputs.append(np_conv(x[b:b + 1], kernel, **conv_kwargs)[0]
                       + w.get("bias", 0.0))
    return np.stack(outputs)


def learned_weights(logits, splits, u=None):
    rows = logits.reshape(logits.shape[0], splits, -1)
    z = sigmoid(rows) if u is None else sigmoid(rows + np.log(u) - np.log(1 - u))
    return z / (z.sum(-1, keepdims=True) + 1e-12)


def make(x, rng, **kwargs):
    kwargs = {"num_splits": SPLITS, "padding": "same", **kwargs}
    layer = SkillConv2D(FILTERS, 3, TASKS, kwargs.pop("num_skills", SKILLS),
                        **kwargs)
    layer(x, IDS[:len(x)])
    return layer, randomise(layer, rng)


# -- numerics -----------------------------------------------------------------
@pytest.mark.parametrize("task_batching", ["auto", "grouped", "stacked"])
@pytest.mark.parametrize("conv", [
    {"padding": "same"},
    {"padding": "valid", "strides": (2, 1)},
    {"padding": "same", "dilation_rate": 2},
])
def test_matches_numpy_per_task_conv(task_batching, conv):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 7, 6, IN)).astype("float32")
    layer, w = make(x, rng, task_batching=task_batching, **conv)
    expected = reference(
        x, IDS, learned_weights(w["skill_logits"], SPLITS), w,
        strides=layer.strides, padding=layer.padding,
        dilation=layer.dilation_rate)
    np.testing.assert_allclose(to_np(layer(x, IDS)), expected,
                               rtol=1e-4, atol=1e-4)
    # Two tasks in one batch are really different kernels.
    assert np.abs(expected[0] - reference(
        x[:1], [2], learned_weights(w["skill_logits"], SPLITS), w,
        strides=layer.strides, padding=layer.padding,
        dilation=layer.dilation_rate)[0]).max() > 1e-2


def test_channels_first_matches_channels_last():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 7, 6, IN)).astype("float32")
    last, w = make(x, rng, activation="relu")
    for mode in ("grouped", "stacked"):
        first = SkillConv2D(FILTERS, 3, TASKS, SKILLS, num_splits=SPLITS,
                            padding="same", activation="relu",
                            data_format="channels_first", task_batching=mode)
        x_first = np.transpose(x, (0, 3, 1, 2))
        first(x_first, IDS)
        first.set_weights(last.get_weights())
        y = to_np(first(x_first, IDS))
        assert y.shape == (5, FILTERS, 7, 6)
        assert first.compute_output_shape((None, IN, 7, 6)) == (
            None, FILTERS, 7, 6)
        np.testing.assert_allclose(np.transpose(y, (0, 2, 3, 1)),
                                   to_np(last(x, IDS)), rtol=1e-4, atol=1e-4)


def test_training_noise_is_drawn_per_task():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 5, 5, IN)).astype("float32")
    x = np.repeat(x, 5, axis=0)  # the same image for every example
    layer, w = make(x, rng, seed=4)
    u = rng.uniform(0.05, 0.95, size=(TASKS, SPLITS, SKILLS)).astype("float32")
    shapes = []

    def fixed_noise(shape):
        shapes.append(tuple(int(d) for d in shape))
        return ops.convert_to_tensor(u)

    layer._uniform_noise = fixed_noise
    y = to_np(layer(x, IDS, training=True))
    assert shapes == [(TASKS, SPLITS, SKILLS)]  # one sample per task
    expected = reference(x, IDS, learned_weights(w["skill_logits"], SPLITS, u),
                         w, padding="same")
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    del layer._uniform_noise
    # Real noise: examples of one task share their kernel in a call, tasks
    # differ, and the noise changes between calls.
    first, second = (to_np(layer(x, IDS, training=True)) for _ in range(2))
    np.testing.assert_allclose(first[0], first[4], atol=1e-6)  # task 0 twice
    np.testing.assert_allclose(first[1], first[3], atol=1e-6)  # task 2 twice
    assert np.abs(first[0] - first[2]).max() > 1e-3
    assert np.abs(first - second).max() > 1e-4
    # Inference has no noise.
    np.testing.assert_allclose(to_np(layer(x, IDS)), to_np(layer(x, IDS)))


def test_init_equals_base_and_masks():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 6, 6, IN)).astype("float32")
    layer = SkillConv2D(FILTERS, 3, TASKS, SKILLS, padding="same",
                        bias_initializer="random_normal")
    y = to_np(layer(x, IDS))
    np.testing.assert_allclose(
        y, np_conv(x, to_np(layer.kernel), padding="same") + to_np(layer.bias),
        rtol=1e-5, atol=1e-5)
    masks = to_np(layer.sft_masks)
    assert masks.shape == (SKILLS, 3, 3, IN, FILTERS)
    assert set(np.unique(masks)) == {0.0, 1.0}
    np.testing.assert_array_equal(masks.reshape(SKILLS, -1).sum(1),
                                  round(0.1 * 9 * IN * FILTERS))
    assert not np.array_equal(masks[0], masks[1])
    # Same mask_seed -> same masks; another seed -> other masks.
    same = SkillConv2D(FILTERS, 3, TASKS, SKILLS)
    same(x, IDS)
    np.testing.assert_array_equal(to_np(same.sft_masks), masks)
    other = SkillConv2D(FILTERS, 3, TASKS, SKILLS, mask_seed=1)
    other(x, IDS)
    assert not np.array_equal(to_np(other.sft_masks), masks)
    dense = SkillConv2D(FILTERS, 3, TASKS, SKILLS, sft_sparsity=0.0)
    dense(x, IDS)
    assert to_np(dense.sft_masks).min() == 1.0  # dense skills
    # Frozen base by default; trainable_base trains it.
    names = [v.path.split("/")[-1] for v in layer.trainable_variables]
    assert names == ["skill_logits", "sft_deltas"]
    trained = SkillConv2D(FILTERS, 3, TASKS, SKILLS, trainable_base=True)
    trained(x, IDS)
    assert [v.path.split("/")[-1] for v in trained.trainable_variables] == [
        "kernel", "bias", "skill_logits", "sft_deltas"]


# -- allocation modes ------------------------------------------------------------
def test_private_task_k_uses_only_skill_k():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    layer, w = make(x, rng, allocation="private", num_skills=TASKS,
                    num_splits=1)
    deltas = w["sft_masks"] * w["sft_deltas"]
    y = to_np(layer(x, IDS))
    for b, task in enumerate(IDS):
        kernel = w["kernel"] + deltas[task]
        np.testing.assert_allclose(
            y[b], np_conv(x[b:b + 1], kernel, padding="same")[0] + w["bias"],
            rtol=1e-4, atol=1e-4)
    # Changing skill 1 leaves tasks 0 and 2 unchanged and changes task 1.
    changed = w["sft_deltas"].copy()
    changed[1] += 1.0
    layer.sft_deltas.assign(changed)
    y2 = to_np(layer(x, IDS))
    np.testing.assert_array_equal(y2[IDS != 1], y[IDS != 1])
    assert np.abs(y2[IDS == 1] - y[IDS == 1]).max() > 1e-2


def test_shared_every_task_the_same_kernel():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 5, 5, IN)).astype("float32")
    x = np.repeat(x, 5, axis=0)
    layer, w = make(x, rng, allocation="shared", num_skills=1)
    kernels = to_np(layer.task_kernels())
    for t in range(1, TASKS):
        np.testing.assert_allclose(kernels[t], kernels[0], atol=1e-6)
    np.testing.assert_allclose(
        kernels[0], w["kernel"] + w["sft_masks"][0] * w["sft_deltas"][0],
        atol=1e-6)
    y = to_np(layer(x, IDS, training=True))
    for b in range(1, 5):
        np.testing.assert_allclose(y[b], y[0], atol=1e-5)


def test_fixed_uses_the_normalised_expert_rows():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    expert = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 1]])
    layer, w = make(x, rng, allocation="fixed", expert_matrix=expert)
    rows = expert / expert.sum(1, keepdims=True)
    weights = np.repeat(rows[:, None, :], SPLITS, axis=1)
    np.testing.assert_allclose(to_np(layer(x, IDS, training=True)),
                               reference(x, IDS, weights, w, padding="same"),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(layer.allocation_probabilities()[:, 0],
                                  expert)


@pytest.mark.parametrize("allocation", ["moe", "hyper"])
def test_other_allocations_mix_like_the_dense_form(allocation):
    from layers import SkillLoRADense

    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    layer, w = make(x, rng, allocation=allocation)
    # The allocation weights are the shared code of SkillLoRADense.
    dense = SkillLoRADense(2 * SPLITS, TASKS, SKILLS, num_splits=SPLITS,
                           allocation=allocation, adapter="sft")
    dense(np.ones((5, IN), "float32"), IDS)
    table = "task_embeddings" if allocation == "hyper" else "skill_logits"
    getattr(dense, table).assign(w[table])
    weights = to_np(dense.allocation_weights(np.arange(TASKS)))
    np.testing.assert_allclose(to_np(layer(x, IDS)),
                               reference(x, IDS, weights, w, padding="same"),
                               rtol=1e-4, atol=1e-4)


# -- gradients -----------------------------------------------------------------
def _gradients(layer, x, ids, training):
    def loss_fn(trainable):
        out, _ = layer.stateless_call(
            trainable, [v.value for v in layer.non_trainable_variables], x, ids,
            training=training)
        return ops.sum(out ** 2)

    _, grads = value_and_grad(loss_fn)(
        [v.value for v in layer.trainable_variables])
    names = [v.path.split("/")[-1] for v in layer.trainable_variables]
    return dict(zip(names, (to_np(g) for g in grads), strict=True))


def test_gradients_reach_deltas_only_through_the_masks():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    grouped, _ = make(x, rng, task_batching="grouped", mask_seed=3)
    stacked, _ = make(x, rng, task_batching="stacked", mask_seed=3)
    stacked.set_weights(grouped.get_weights())  # the same weights in both
    grads = {mode: _gradients(layer, x, IDS, training=False)
             for mode, layer in (("grouped", grouped), ("stacked", stacked))}
    layer = grouped
    masks = to_np(layer.sft_masks)
    for mode, g in grads.items():
        assert sorted(g) == ["sft_deltas", "skill_logits"], mode
        assert np.all(g["sft_deltas"][masks == 0] == 0), mode
        assert np.mean(g["sft_deltas"][masks == 1] != 0) > 0.9, mode
        assert np.abs(g["skill_logits"]).max() > 0, mode
    # The two batchings have the same gradients.
    for name in grads["grouped"]:
        np.testing.assert_allclose(grads["stacked"][name],
                                   grads["grouped"][name], rtol=1e-4, atol=1e-3)


def test_trainable_base_gets_gradients_in_training():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    layer, _ = make(x, rng, trainable_base=True, seed=1)
    grads = _gradients(layer, x, IDS, training=True)
    assert sorted(grads) == ["bias", "kernel", "sft_deltas", "skill_logits"]
    assert all(np.abs(g).max() > 0 for g in grads.values())
    assert np.all(grads["sft_deltas"][to_np(layer.sft_masks) == 0] == 0)


# -- export, few-shot, task context ------------------------------------------------
def test_merged_kernel_to_conv_and_from_conv():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(5, 6, 6, IN)).astype("float32")
    layer, _ = make(x, rng, strides=2, activation="relu")
    y = to_np(layer(x, IDS))
    for task in range(TASKS):
        conv = layer.to_conv(task)
        assert isinstance(conv, keras.layers.Conv2D)
        np.testing.assert_allclose(to_np(conv(x))[IDS == task], y[IDS == task],
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="task id out of range"):
        layer.merged_kernel(TASKS)
    base = keras.layers.Conv2D(FILTERS, 3, padding="same")
    base(x)
    copied = SkillConv2D.from_conv(base, TASKS, SKILLS, num_splits=SPLITS)
    np.testing.assert_allclose(to_np(copied(x, IDS)), to_np(base(x)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="built keras.layers.Conv2D"):
        SkillConv2D.from_conv(keras.layers.Conv2D(2, 3), TASKS, SKILLS)


def test_add_tasks_and_task_context():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    layer, _ = make(x, rng)
    before = to_np(layer(x, IDS))
    with task_context(IDS):
        np.testing.assert_allclose(to_np(layer(x)), before, atol=1e-6)
    assert layer.add_tasks(1) == [TASKS]
    np.testing.assert_allclose(to_np(layer(x, IDS)), before, atol=1e-6)
    new_ids = np.full(5, TASKS, "int32")
    assert tuple(layer(x, new_ids).shape) == (5, 5, 5, FILTERS)
    assert layer.get_config()["num_tasks"] == TASKS + 1


# -- harness, saving, bad inputs, cross-backend ------------------------------------
def test_layer_checks(tmp_path):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(5, 6, 6, IN)).astype("float32")
    run_layer_checks(
        SkillConv2D,
        {"filters": FILTERS, "kernel_size": 3, "num_tasks": TASKS,
         "num_skills": SKILLS, "padding": "same", "num_splits": SPLITS,
         "seed": 3, "skill_regularizer": "l2"},
        x, IDS, tmp_path,
        expected_output_shape=(5, 6, 6, FILTERS),
        expected_num_trainable_weights=2,  # skill_logits, sft_deltas
        expected_num_non_trainable_weights=3)  # kernel, bias, sft_masks


def test_layer_checks_trainable_base_moe(tmp_path):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(5, 7, 7, IN)).astype("float32")
    run_layer_checks(
        SkillConv2D,
        {"filters": FILTERS, "kernel_size": (3, 2), "num_tasks": TASKS,
         "num_skills": SKILLS, "strides": 2, "allocation": "moe",
         "trainable_base": True, "activation": "relu",
         "task_batching": "stacked"},
        x, IDS.astype("uint8"), tmp_path,
        expected_output_shape=(5, 3, 3, FILTERS),
        expected_num_trainable_weights=4,  # kernel, bias, logits, deltas
        expected_num_non_trainable_weights=1)  # sft_masks


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(5, 6, 6, IN)).astype("float32")
    expert = np.eye(TASKS, SKILLS)
    features, task = keras.Input((6, 6, IN)), keras.Input((), dtype="int32")
    layer = SkillConv2D(FILTERS, 3, TASKS, SKILLS, allocation="fixed",
                        expert_matrix=expert, sft_sparsity=0.5, mask_seed=7,
                        padding="same", skill_initializer="he_uniform")
    model = keras.Model([features, task], layer(features, task))
    randomise(layer, rng)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(loaded([x, IDS])), to_np(model([x, IDS])),
                               atol=1e-6)
    restored = loaded.layers[-1]
    assert restored.get_config() == layer.get_config()
    np.testing.assert_array_equal(to_np(restored.sft_masks),
                                  to_np(layer.sft_masks))


def test_bad_inputs_raise():
    rng = np.random.default_rng(16)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    layer, _ = make(x, rng)
    with pytest.raises(ValueError, match="out of range"):
        layer(x, np.array([0, 1, 2, 3, 0], "int32"))
    with pytest.raises(ValueError, match="out of range"):
        layer(x, np.array([0, -1, 2, 1, 0], "int32"))
    with pytest.raises(ValueError, match="integer task ids"):
        layer(x, np.ones((5,), "float32"))
    with pytest.raises(ValueError, match="got 4 task entries for a batch of 5"):
        layer(x, np.zeros((4,), "int32"))
    with pytest.raises(ValueError, match="rank 4"):
        layer(x[:, 0], IDS)
    with pytest.raises(ValueError, match="rank 4"):
        SkillConv2D(FILTERS, 3, TASKS, SKILLS)(x[..., None], IDS)
    with pytest.raises(ValueError, match=f"built for {IN} input channels"):
        layer(np.ones((5, 5, 5, IN + 1), "float32"), IDS)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        SkillConv2D(FILTERS, 3, TASKS, SKILLS)(np.ones((5, 2, 5, IN)), IDS)
    with pytest.raises(ValueError, match="needs a task"):
        layer(x)
    with pytest.raises(ValueError, match="num_splits=4 must divide"):
        SkillConv2D(FILTERS, 3, TASKS, SKILLS, num_splits=4)(x, IDS)
    # The symbolic call checks too (errors where a model is built).
    with pytest.raises(ValueError, match="integer task ids"):
        SkillConv2D(FILTERS, 3, TASKS, SKILLS)(keras.Input((5, 5, IN)),
                                                 keras.Input(()))
    with pytest.raises(ValueError, match="rank 4"):
        SkillConv2D(FILTERS, 3, TASKS, SKILLS)(
            keras.Input((5, IN)), keras.Input((), dtype="int32"))


@pytest.mark.parametrize("kwargs, match", [
    ({"sft_sparsity": 1.0}, r"sft_sparsity must be in \[0, 1\)"),
    ({"sft_sparsity": -0.1}, r"sft_sparsity must be in \[0, 1\)"),
    ({"sft_sparsity": "0.9"}, r"sft_sparsity must be in \[0, 1\)"),
    ({"filters": 0}, "`filters` must be an integer >= 1"),
    ({"kernel_size": 0}, "`kernel_size` must be an integer >= 1"),
    ({"kernel_size": (3, 3, 3)}, "`kernel_size` must be"),
    ({"strides": 2, "dilation_rate": 2}, "cannot be combined"),
    ({"padding": "causal"}, "padding must be 'valid' or 'same'"),
    ({"data_format": "nhwc"}, "data_format must be one of"),
    ({"task_batching": "vmap"}, "task_batching must be one of"),
    ({"allocation": "private"}, "needs num_skills == num_tasks"),
    ({"allocation": "shared"}, "needs num_skills=1"),
    ({"allocation": "fixed"}, "needs expert_matrix"),
    ({"expert_matrix": np.eye(3, 5)}, "only used with allocation='fixed'"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"num_tasks": 0}, "`num_tasks` must be an integer >= 1"),
    ({"allocation": "softmax"}, "allocation must be one of"),
])
def test_bad_configs_raise(kwargs, match):
    arguments = {"filters": FILTERS, "kernel_size": 3, "num_tasks": TASKS,
                 "num_skills": SKILLS, **kwargs}
    with pytest.raises(ValueError, match=match):
        SkillConv2D(**arguments)


def test_grouped_refuses_traced_ids_and_auto_falls_back(monkeypatch):
    """Under jit (jax.jit, tf.function) the ids have no values: "grouped"
    says so, "auto" stacks. torch.compile is too slow for a unit test, so
    on torch traced ids are simulated (no concrete values)."""
    backend = keras.backend.backend()
    rng = np.random.default_rng(17)
    x = rng.normal(size=(5, 5, 5, IN)).astype("float32")
    results = {}
    grouped, _ = make(x, rng, task_batching="grouped")
    auto, _ = make(x, rng, task_batching="auto")
    auto.set_weights(grouped.get_weights())
    for mode, layer in (("grouped", grouped), ("auto", auto)):
        values = ([v.value for v in layer.trainable_variables],
                  [v.value for v in layer.non_trainable_variables])

        def forward(trainable, non_trainable, inputs, ids, layer=layer):
            return layer.stateless_call(trainable, non_trainable, inputs,
                                        ids)[0]

        if backend == "jax":
            import jax
            compiled = jax.jit(forward)
        elif backend == "tensorflow":
            import tensorflow as tf
            compiled = tf.function(forward)
        else:
            import layers.skill_conv

            def compiled(*args):
                with monkeypatch.context() as patch:
                    patch.setattr(layers.skill_conv, "_concrete_values",
                                  lambda ids: None)
                    return forward(*args)
        if mode == "grouped":
            with pytest.raises(ValueError, match="needs task ids with concrete"):
                compiled(*values, x, IDS)
            results[mode] = to_np(forward(*values, x, IDS))  # eager: fine
        else:
            results[mode] = to_np(compiled(*values, x, IDS))
    np.testing.assert_allclose(results["auto"], results["grouped"],
                               rtol=1e-4, atol=1e-4)


CROSS_BACKEND_SNIPPET = """
import json
import numpy as np
from keras import ops
from layers import SkillConv2D
rng = np.random.default_rng(18)
x = rng.normal(size=(5, 6, 6, 4)).astype("float32")
ids = np.array([0, 2, 1, 2, 0], "int32")
results = []
for mode in ("grouped", "stacked"):
    layer = SkillConv2D(6, 3, 3, 5, num_splits=2, padding="same",
                        task_batching=mode)
    layer(x, ids)
    for variable in layer.weights:
        if "float" in str(variable.dtype) and not variable.path.endswith("masks"):
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
    results.append(np.asarray(ops.convert_to_numpy(layer(x, ids))).tolist())
    results.append(float(ops.convert_to_numpy(ops.sum(layer.sft_masks[1, 2]))))
print(json.dumps(results))
"""


def test_same_outputs_on_other_backends():
    document = assert_same_across_backends(CROSS_BACKEND_SNIPPET, atol=1e-4,
                                           rtol=1e-4)
    assert len(document) == 4 and np.abs(np.array(document[0])).max() > 0.1
