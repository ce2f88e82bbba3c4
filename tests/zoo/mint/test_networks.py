"""MultiTaskClassifier (Mint and its baselines) and the family's presets."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.harness import assert_same_across_backends
from zoo.mint.networks import MODELS, MultiTaskClassifier
from zoo.mint.presets import PRESETS, from_preset, save_to_preset

T, CLASSES = 3, 4


# -- Parameter counts against formulas. ----------------------------------------
def dense(n_in, n_out):
    return n_in * n_out + n_out


def expected_parameters(model, tasks, classes, conv_filters, dense_units,
                        example_shape):
    """The formula of each model's parameter count (batch norm: 4 per channel,
    2 trainable and 2 moving statistics; Keras counts both)."""
    trunk, channels = 0, example_shape[-1]
    spatial = example_shape[0] if conv_filters else None
    for filters in conv_filters:
        trunk += 9 * channels * filters + filters + 4 * filters
        channels, spatial = filters, spatial // 2
    features = (spatial * spatial * channels if conv_filters
                else int(np.prod(example_shape)))
    if model == "independent":
        trunk *= tasks
    widths = (features,) + tuple(dense_units)
    hidden = sum(dense(a, b) for a, b in zip(widths[:-1], widths[1:]))
    last = widths[-1]
    if model == "mint":
        return trunk + hidden + sum(tasks * (u * u + u) for u in dense_units) + dense(last, classes)
    if model == "film":
        return trunk + hidden + sum(tasks * 2 * u for u in dense_units) + dense(last, classes)
    if model == "1-fc":
        return trunk + hidden + tasks * dense(last, classes)
    if model in ("all-fc", "independent"):
        return trunk + tasks * (hidden + dense(last, classes))
    if model == "cross-stitch":
        return (trunk + tasks * (hidden + dense(last, classes))
                + len(dense_units) * tasks * tasks)
    raise AssertionError(model)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("preset", ["cifar100_small", "digits"])
def test_parameter_counts_match_the_formula(preset, model):
    config = PRESETS[preset]
    network = config["network"]
    classifier = from_preset(preset, model=model)
    assert classifier.count_params() == expected_parameters(
        model, network["num_tasks"], network["num_classes"],
        network["conv_filters"], network["dense_units"], config["input_shape"])


@pytest.mark.parametrize("model", MODELS)
def test_paper_network_parameter_counts(model):
    """The paper's network (Appendix B) for every model; with Mint ~5.5M
    parameters (NOTE 1 of presets.py)."""
    count = from_preset("cifar100_paper", model=model).count_params()
    assert count == expected_parameters(
        model, 20, 5, (160, 160, 160), (320, 320), (32, 32, 3))
    if model == "mint":
        assert 5.4e6 < count < 5.6e6


def test_small_network_is_of_the_order_of_table_1():
    small = {m: from_preset("cifar100_small", model=m).count_params()
             for m in ("mint", "all-fc", "independent")}
    table_1 = {"mint": 699e3, "all-fc": 689e3, "independent": 1.56e6}
    for model, count in small.items():
        assert 0.75 < count / table_1[model] < 1.1, (model, count)


# -- Values against a NumPy forward pass (no conv trunk). ----------------------
def numpy_forward(classifier, features, task_ids):
    """The module docstring's equations, one example at a time."""
    weights = {w.path.split("/", 1)[1]: ops.convert_to_numpy(w)
               for w in classifier.weights}
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    model, logits = classifier.model, []
    for x, k in zip(features, task_ids):
        if model == "cross-stitch":
            columns = np.stack([x] * T)
            for i in range(len(classifier.dense_units)):
                kernel, bias = weights[f"dense_{i}/task_kernels"], weights[f"dense_{i}/task_biases"]
                columns = relu(np.einsum("ti,tio->to", columns, kernel) + bias)
                columns = weights[f"cross_stitch_{i}/stitch_weights"] @ columns
            kernel, bias = weights["logits/task_kernels"], weights["logits/task_biases"]
            logits.append(columns[k] @ kernel[k] + bias[k])
            continue
        a = x
        for i in range(len(classifier.dense_units)):
            if model in ("all-fc", "independent"):
                a = relu(a @ weights[f"dense_{i}/task_kernels"][k]
                         + weights[f"dense_{i}/task_biases"][k])
            else:
                a = relu(a @ weights[f"dense_{i}/kernel"] + weights[f"dense_{i}/bias"])
            if model == "mint":
                a = weights[f"mint_{i}/task_matrices"][k] @ a + weights[f"mint_{i}/task_biases"][k]
            if model == "film":
                a = weights[f"film_{i}/task_gammas"][k] * a + weights[f"film_{i}/task_betas"][k]
        if model in ("mint", "film"):
            logits.append(a @ weights["logits/kernel"] + weights["logits/bias"])
        else:
            logits.append(a @ weights["logits/task_kernels"][k] + weights["logits/task_biases"][k])
    return np.stack(logits)


@pytest.mark.parametrize("model", MODELS)
def test_mlp_models_match_numpy(model):
    rng = np.random.default_rng(0)
    classifier = MultiTaskClassifier(T, CLASSES, model=model, dense_units=(6, 5))
    features = rng.normal(size=(9, 7)).astype("float32")
    task_ids = np.array([0, 2, 1, 1, 0, 2, 2, 1, 0])
    classifier.build_for((7,))
    classifier.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5
                            for w in classifier.weights])
    np.testing.assert_allclose(
        ops.convert_to_numpy(classifier((features, task_ids))),
        numpy_forward(classifier, features, task_ids), rtol=1e-4, atol=1e-5)


def test_independent_conv_trunks_do_not_share():
    """Perturbing task 1's trunk, dense layers and head changes task 1's
    logits only (a shared weight or a mixed-up column would change all)."""
    rng = np.random.default_rng(1)
    classifier = MultiTaskClassifier(T, CLASSES, model="independent",
                                     conv_filters=(4, 3), dense_units=(5,))
    images = rng.normal(size=(6, 8, 8, 2)).astype("float32")
    task_ids = np.array([0, 1, 2, 0, 1, 2])
    classifier.build_for((8, 8, 2))
    assert len(classifier.conv_blocks) == T
    before = ops.convert_to_numpy(classifier((images, task_ids)))
    perturbed = 0
    for weight in classifier.weights:
        value = ops.convert_to_numpy(weight).copy()
        if weight.name in ("task_kernels", "task_biases"):  # TaskDense: row 1
            value[1] += rng.normal(size=value[1].shape)
        elif "/task_1_conv_" in weight.path:  # task 1's trunk
            value += np.abs(rng.normal(size=value.shape))
        else:
            continue
        weight.assign(value)
        perturbed += 1
    assert perturbed == 4 + 2 * (2 + 4)  # 2 TaskDense x 2, 2 x (conv 2 + BN 4)
    after = ops.convert_to_numpy(classifier((images, task_ids)))
    np.testing.assert_allclose(after[task_ids != 1], before[task_ids != 1],
                               rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(after[task_ids == 1] - before[task_ids == 1]).max(-1) > 1e-3)


@pytest.mark.parametrize("model", ["independent", "cross-stitch"])
def test_conv_trunk_models_train(model):
    """A few fit steps on a conv trunk lower the loss of a fixed batch."""
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(4)
    classifier = MultiTaskClassifier(T, CLASSES, model=model, conv_filters=(4,),
                                     dense_units=(8,))
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = rng.normal(size=(24, 8, 8, 3)).astype("float32")
    task_ids, targets = np.arange(24) % T, rng.integers(0, CLASSES, 24)
    history = classifier.fit((images, task_ids), targets, batch_size=24, epochs=15,
                             verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]


def test_mint_at_init_is_the_shared_network():
    """Mint starts as the identity (MintLayer NOTE 1): every task gives the
    same logits for the same image."""
    rng = np.random.default_rng(2)
    classifier = MultiTaskClassifier(T, CLASSES, model="mint", conv_filters=(4,),
                                     dense_units=(5,))
    image = rng.normal(size=(1, 8, 8, 3)).astype("float32")
    logits = ops.convert_to_numpy(classifier((np.repeat(image, T, 0), np.arange(T))))
    np.testing.assert_allclose(logits, np.repeat(logits[:1], T, 0), rtol=1e-5, atol=1e-6)


# -- Saving. -------------------------------------------------------------------
@pytest.mark.parametrize("model", ["mint", "cross-stitch", "independent"])
def test_keras_file_and_preset_round_trip(model, tmp_path):
    rng = np.random.default_rng(3)
    classifier = MultiTaskClassifier(T, CLASSES, model=model, conv_filters=(4,),
                                     dense_units=(5,))
    images = rng.normal(size=(6, 8, 8, 3)).astype("float32")
    task_ids = np.arange(6) % T
    classifier.build_for((8, 8, 3))
    classifier.set_weights([w + rng.normal(size=w.shape).astype("float32") * 0.1
                            for w in classifier.get_weights()])
    expected = ops.convert_to_numpy(classifier((images, task_ids)))
    classifier.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded((images, task_ids))),
                               expected, rtol=1e-5, atol=1e-6)
    save_to_preset(classifier, str(tmp_path / "preset"))
    restored = from_preset(str(tmp_path / "preset"))
    assert restored.get_config() == classifier.get_config() | {"name": restored.name}
    np.testing.assert_allclose(ops.convert_to_numpy(restored((images, task_ids))),
                               expected, rtol=1e-5, atol=1e-6)
    other = "film" if model != "film" else "mint"
    with pytest.raises(ValueError, match=f"holds a '{model}' model"):
        from_preset(str(tmp_path / "preset"), model=other)


# -- Bad input. ----------------------------------------------------------------
def test_task_ids_out_of_range_raise():
    classifier = MultiTaskClassifier(T, CLASSES, model="mint", dense_units=(4,))
    with pytest.raises(ValueError, match=r"task id out of range.*\[0, 3\)"):
        classifier((np.zeros((2, 5), "float32"), np.array([0, 3])))


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((2, 8, 8, 3), "float32"), r"expects inputs \(images, task_ids\)"),
    ((np.zeros((2, 64), "float32"), np.array([0, 1])), r"images of shape \(batch, height"),
    ((np.zeros((2, 8, 8, 3), "float32"), np.array([0, 1, 1])), r"got 3 task entries"),
    ((np.zeros((2, 8, 8, 3), "float32"), np.zeros((2, 3), "float32")),
     r"integer task ids"),
])
def test_bad_inputs_raise(inputs, message):
    classifier = MultiTaskClassifier(T, CLASSES, model="all-fc", conv_filters=(4,),
                                     dense_units=(4,))
    with pytest.raises(ValueError, match=message):
        classifier(inputs)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "routing"}, "Unknown model 'routing'"),
    ({"model": "cross-stitch", "num_tasks": 1}, "needs num_tasks >= 2"),
    ({"dense_units": (0,)}, "`dense_units` must be an integer >= 1"),
    ({"num_classes": -2}, "`num_classes` must be an integer >= 1"),
    ({"conv_filters": 32}, "`conv_filters` must be a list of positive integers"),
    ({"cross_stitch_self_weight": "abc"}, r"must be a number in \(0, 1\]"),
    ({"cross_stitch_self_weight": 1.5}, r"must be a number in \(0, 1\]"),
])
def test_bad_arguments_raise(kwargs, message):
    arguments = {"num_tasks": T, "num_classes": CLASSES} | kwargs
    with pytest.raises(ValueError, match=message):
        MultiTaskClassifier(**arguments)


@pytest.mark.parametrize("preset, model, message", [
    ("cifar100_huge", "mint", "Unknown preset 'cifar100_huge'"),
    ("digits", None, "needs model= one of"),
    ("digits", "moe", "needs model= one of"),
])
def test_bad_presets_raise(preset, model, message):
    with pytest.raises(ValueError, match=message):
        from_preset(preset, model=model)


CROSS_BACKEND_SNIPPET = """
import json
import numpy as np
from keras import ops
from zoo.mint.networks import MultiTaskClassifier

rng = np.random.default_rng(7)
images = rng.normal(size=(6, 8, 8, 2)).astype("float32")
task_ids = np.array([0, 2, 1, 1, 0, 2])
results = {{}}
for model in ("mint", "independent", "cross-stitch"):
    classifier = MultiTaskClassifier(3, 4, model=model, conv_filters=(4,),
                                     dense_units=(5,))
    classifier.build_for((8, 8, 2))
    values = [rng.normal(size=w.shape).astype("float32") * 0.3
              for w in classifier.weights]
    classifier.set_weights([np.abs(v) + 0.5 if "variance" in w.path else v
                            for w, v in zip(classifier.weights, values)])
    logits = classifier((images, task_ids), training=False)
    results[model] = ops.convert_to_numpy(logits).tolist()
print(json.dumps(results))
"""


def test_same_logits_on_every_backend():
    here = assert_same_across_backends(CROSS_BACKEND_SNIPPET, atol=1e-4, rtol=1e-4)
    assert not np.allclose(here["mint"], here["independent"])
