"""Tests of SoftModularBlock (Soft Modularization, both variants)."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from layers.soft_modular_block import (
    SOFT_MODULAR_CONFIGS,
    OutputUnitsUniform,
    SoftModularBlock,
)
from tests.harness import other_backends, run_in_backends, run_layer_checks
from training import value_and_grad

STATE_DIM = 5
NUM_TASKS = 4
SMALL = dict(
    num_modules=3,
    module_units=8,
    num_tasks=NUM_TASKS,
    routing_units=12,
    observation_embedding_units=16,
)


# ----------------------------------------------------------- NumPy reference


def _relu(x):
    return np.maximum(x, 0.0)


def _softmax(x):
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _dense(x, weights, name):
    return x @ weights[f"{name}_kernel"] + weights[f"{name}_bias"]


def _reference(weights, config, states, task_vectors):
    """Eqs. 5-9 (paper) or the official network, modules one at a time.

    Returns (outputs, routing list). Routing matrices are [target, source].
    """
    n = config["num_modules"]
    num_layers = config["num_layers"]
    variant = config.get("variant", "official")
    batch = states.shape[0]

    observation = states
    for index in range(config.get("observation_embedding_layers", 2)):
        if index > 0:
            observation = _relu(observation)
        observation = _dense(observation, weights, f"observation_{index}")
    task_embedding = _dense(task_vectors, weights, "task_embedding")
    embedding = observation * task_embedding

    def module(index, j, x):  # W_j^l x + b_j^l for ONE module j
        return x @ weights[f"module_{index}_kernel"][j] + weights[
            f"module_{index}_bias"
        ][j]

    if variant == "official":
        if config.get("routing_layers", 2) > 0:
            embedding = _relu(embedding)
            for index in range(config.get("routing_layers", 2)):
                if index > 0:
                    embedding = _relu(embedding)
                embedding = _dense(embedding, weights, f"routing_trunk_{index}")
        logits = _dense(_relu(embedding), weights, "routing_output_0")
        routing = [_softmax(logits.reshape(batch, n, n))]
        for index in range(1, num_layers):
            condition = np.concatenate(
                [p.reshape(batch, n * n) for p in routing], axis=-1
            )
            condition = _dense(condition, weights, f"routing_condition_{index}")
            logits = _dense(
                _relu(condition * embedding), weights, f"routing_output_{index}"
            )
            if index < num_layers - 1:
                routing.append(_softmax(logits.reshape(batch, n, n)))
            else:
                final_mix = _softmax(logits)
        module_outputs = [module(0, j, _relu(observation)) for j in range(n)]
        for index in range(1, num_layers):
            probs = routing[index - 1]
            new_outputs = []
            for i in range(n):
                mixed = sum(probs[:, i, j, None] * module_outputs[j] for j in range(n))
                new_outputs.append(module(index, i, _relu(mixed)))
            module_outputs = new_outputs
        outputs = _relu(
            sum(final_mix[:, j, None] * module_outputs[j] for j in range(n))
        )
        return outputs, routing + [final_mix]

    # Paper: Eq. 6, then Eq. 5 on the previous logits, Eq. 7 softmax.
    logits = _dense(_relu(embedding), weights, "routing_output_0")
    all_logits = [logits]
    for index in range(1, num_layers - 1):
        up = _dense(logits, weights, f"routing_condition_{index}")
        logits = _dense(_relu(up * embedding), weights, f"routing_output_{index}")
        all_logits.append(logits)
    routing = [_softmax(lg.reshape(batch, n, n)) for lg in all_logits]
    # Eq. 8 with g_j^1 = f(s).
    inputs = [observation] * n
    for index in range(num_layers - 1):
        activated = [_relu(module(index, j, inputs[j])) for j in range(n)]
        probs = routing[index]
        inputs = [
            sum(probs[:, i, j, None] * activated[j] for j in range(n))
            for i in range(n)
        ]
    # Eq. 9: unweighted sum of the last modules (one shared bias).
    last = num_layers - 1
    outputs = sum(inputs[j] @ weights[f"module_{last}_kernel"][j] for j in range(n))
    outputs = outputs + weights[f"module_{last}_bias"]
    return outputs, routing


def _randomise(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    values = {}
    for variable in layer.weights:
        shape = tuple(variable.shape)
        fan_in = shape[-2] if len(shape) >= 2 else 1
        value = rng.normal(0.0, scale / np.sqrt(fan_in), shape) + (
            0.1 if len(shape) == 1 else 0.0
        )
        variable.assign(value.astype("float32"))
        values[variable.name] = value.astype("float64")
    return values


def _inputs(batch=6, seed=1):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(batch, STATE_DIM)).astype("float32")
    task_ids = rng.integers(0, NUM_TASKS, size=(batch,)).astype("int32")
    task_ids[:2] = [0, NUM_TASKS - 1]  # mixed-task batch
    return states, task_ids


CASES = [
    dict(variant="official", num_layers=3, routing_layers=2),
    dict(variant="official", num_layers=2, routing_layers=0),
    dict(variant="paper", num_layers=4, output_units=5),
    dict(variant="paper", num_layers=2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(sorted(c.items())))
def test_matches_numpy_reference(case):
    config = {**SMALL, **case}
    layer = SoftModularBlock(**config)
    states, task_ids = _inputs()
    layer(states, task_ids)
    weights = _randomise(layer)
    one_hot = np.eye(NUM_TASKS)[task_ids]
    expected, expected_routing = _reference(weights, config, states, one_hot)
    assert expected.shape == (
        len(states),
        config.get("output_units") or config["module_units"],
    )

    for training in (True, False):  # no stochastic parts: same outputs
        outputs, routing = layer(
            states, task_ids, return_routing=True, training=training
        )
        np.testing.assert_allclose(
            ops.convert_to_numpy(outputs), expected, rtol=2e-4, atol=2e-5
        )
        assert len(routing) == len(expected_routing)
        for actual, reference in zip(routing, expected_routing):
            np.testing.assert_allclose(
                ops.convert_to_numpy(actual), reference, rtol=2e-4, atol=2e-6
            )
    # A one-hot float descriptor is the same task as its integer id.
    from_one_hot = layer(states, one_hot.astype("float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(from_one_hot), expected, rtol=2e-4, atol=2e-5
    )


def test_float_descriptor_without_num_tasks_matches_reference():
    config = {**SMALL, "num_tasks": None, "num_layers": 3}
    rng = np.random.default_rng(3)
    states, _ = _inputs()
    descriptors = rng.normal(size=(len(states), 7)).astype("float32")
    layer = SoftModularBlock(**config)
    layer(states, descriptors)
    weights = _randomise(layer, seed=4)
    assert weights["task_embedding_kernel"].shape == (7, 16)
    expected, _ = _reference(weights, config, states, descriptors)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(states, descriptors)),
        expected,
        rtol=2e-4,
        atol=2e-5,
    )


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_routing_probabilities_are_distributions(variant):
    config = {**SMALL, "num_layers": 4, "variant": variant}
    layer = SoftModularBlock(**config)
    states, task_ids = _inputs(batch=5)
    layer(states, task_ids)
    _randomise(layer, scale=2.0)  # far from uniform
    _, routing = layer(states, task_ids, return_routing=True)
    n = config["num_modules"]
    expected_shapes = [(5, n, n)] * 3 + ([(5, n)] if variant == "official" else [])
    assert [tuple(r.shape) for r in routing] == expected_shapes
    for probs in routing:
        probs = ops.convert_to_numpy(probs)
        assert np.all(probs >= 0.0)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
        assert probs.std() > 1e-2  # not all uniform: depends on the weights
    # Different tasks in one batch get different routing.
    first = ops.convert_to_numpy(routing[0])
    assert not np.allclose(first[0], first[1], atol=1e-4)


def test_default_initialisation_is_official():
    layer = SoftModularBlock(**{**SMALL, "num_layers": 3})
    states, task_ids = _inputs()
    outputs, routing = layer(states, task_ids, return_routing=True)
    weights = {v.name: ops.convert_to_numpy(v) for v in layer.weights}
    for name, value in weights.items():
        if name.startswith("routing_output"):
            assert np.abs(value).max() <= 3e-3 and np.abs(value).max() > 1e-3
        elif name.endswith("_bias"):
            np.testing.assert_array_equal(value, np.float32(0.1))
        else:  # U(+-1/sqrt(output units))
            bound = 1.0 / np.sqrt(value.shape[-1])
            assert np.abs(value).max() <= bound
            assert np.abs(value).max() > 0.8 * bound
    # Routing starts almost uniform (small output layers).
    for probs in routing:
        np.testing.assert_allclose(
            ops.convert_to_numpy(probs), 1.0 / SMALL["num_modules"], atol=1e-2
        )


# ------------------------------------------------------------ shared checks


@pytest.mark.parametrize(
    "variant,task_kind", [("official", "ids"), ("paper", "descriptor")]
)
def test_layer_checks(variant, task_kind, tmp_path):
    states, task_ids = _inputs(batch=4)
    kwargs = {**SMALL, "num_layers": 3, "variant": variant}
    if task_kind == "ids":
        task = task_ids
    else:
        kwargs["num_tasks"] = None
        task = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    run_layer_checks(SoftModularBlock, kwargs, states, task, tmp_path)


def test_custom_objects_round_trip():
    layer = SoftModularBlock(
        **{**SMALL, "num_layers": 2},
        kernel_initializer="glorot_uniform",
        kernel_regularizer="l2",
    )
    config = layer.get_config()
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert config["kernel_regularizer"]["class_name"] == "L2"
    assert SoftModularBlock.from_config(config).get_config() == config
    default = SoftModularBlock(**{**SMALL, "num_layers": 2}).get_config()
    rebuilt = SoftModularBlock.from_config(default)
    assert isinstance(rebuilt.kernel_initializer, OutputUnitsUniform)
    assert rebuilt.routing_output_initializer.maxval == 3e-3


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_gradients_reach_routing_and_modules(variant):
    layer = SoftModularBlock(**{**SMALL, "num_layers": 3, "variant": variant})
    states, _ = _inputs(batch=6)
    task_ids = np.array([0, 1, 1, 0, 1, 0], dtype="int32")  # tasks 2, 3 absent
    layer(states, task_ids)  # official initialisation
    target = ops.convert_to_tensor(
        np.random.default_rng(5).normal(size=(6, 8)).astype("float32")
    )
    variables = layer.trainable_variables

    def loss_fn(values, states, task_ids):
        outputs, _ = layer.stateless_call(values, [], states, task_ids)
        return ops.mean((outputs - target) ** 2)

    _, grads = value_and_grad(loss_fn)(
        [v.value for v in variables], states, task_ids
    )
    names = [v.name for v in variables]
    assert len(set(names)) == len(names)
    assert any(name.startswith("routing_output") for name in names)
    for variable, grad in zip(variables, grads):
        grad = ops.convert_to_numpy(grad)
        if variable.name == "task_embedding_kernel":
            # Only the rows of the tasks in the batch are trained.
            assert np.all(np.abs(grad[[0, 1]]).sum(axis=-1) > 0)
            np.testing.assert_array_equal(grad[[2, 3]], 0.0)
        else:
            assert np.abs(grad).sum() > 0, variable.name


# ----------------------------------------------------- configurations, errors


@pytest.mark.parametrize(
    "name,layers,modules,units", [("shallow", 2, 2, 256), ("deep", 4, 4, 128)]
)
@pytest.mark.parametrize("variant", ["official", "paper"])
def test_named_configurations(name, layers, modules, units, variant):
    assert SOFT_MODULAR_CONFIGS[name] == dict(
        num_layers=layers, num_modules=modules, module_units=units
    )
    block = SoftModularBlock.from_preset_name(name, num_tasks=10, variant=variant)
    # Symbolic call: shapes only (builds the layer without eager compute).
    outputs, routing = block(
        keras.KerasTensor((2, 39)),
        keras.KerasTensor((2,), dtype="int32"),
        return_routing=True,
    )
    assert tuple(outputs.shape) == (2, units)
    module_kernels = [
        v for v in block.weights if v.name.startswith("module_")
        and v.name.endswith("_kernel")
    ]
    assert len(module_kernels) == layers
    assert all(v.shape[0] == modules for v in module_kernels)
    assert module_kernels[0].shape == (modules, 400, units)
    assert [tuple(r.shape) for r in routing[: layers - 1]] == [
        (2, modules, modules)
    ] * (layers - 1)
    assert len(routing) == layers - 1 + (variant == "official")
    overridden = SoftModularBlock.from_preset_name(name, module_units=32)
    assert overridden.module_units == 32 and overridden.num_layers == layers


def test_bad_inputs_raise():
    states, task_ids = _inputs(batch=3)
    layer = SoftModularBlock(**{**SMALL, "num_layers": 2})
    with pytest.raises(ValueError, match=r"state_features.*\(batch, state_dim\)"):
        SoftModularBlock(**{**SMALL, "num_layers": 2})(
            states[:, None, :], task_ids
        )
    layer(states, task_ids)
    with pytest.raises(ValueError, match=r"out of range.*\[0, 4\)"):
        layer(states, np.array([0, 4, 1], "int32"))
    with pytest.raises(ValueError, match=r"out of range"):
        layer(states, np.array([0, -1, 1], "int32"))
    with pytest.raises(ValueError, match=r"shape \(batch, 5\)"):
        layer(states[:, :4], task_ids)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        layer(states, np.ones((3, 3), "float32"))
    with pytest.raises(ValueError, match=r"integer task ids"):
        layer(states, np.ones((3,), "float32"))
    with pytest.raises(ValueError, match=r"\(batch,\) \(integer ids\)"):
        layer(states, np.ones((3, 4, 1), "float32"))
    with pytest.raises(ValueError, match=r"need `num_tasks`"):
        SoftModularBlock(**{**SMALL, "num_layers": 2, "num_tasks": None})(
            states, task_ids
        )
    with pytest.raises(ValueError, match=r"one-hot over num_tasks=4"):
        SoftModularBlock(**{**SMALL, "num_layers": 2})(
            states, np.ones((3, 6), "float32")
        )
    with pytest.raises(ValueError, match=r"variant"):
        SoftModularBlock(**{**SMALL, "num_layers": 2, "variant": "Paper"})
    with pytest.raises(ValueError, match=r"only to variant='paper'"):
        SoftModularBlock(**{**SMALL, "num_layers": 2, "output_units": 3})
    with pytest.raises(ValueError, match=r"num_layers.*>= 2"):
        SoftModularBlock(**{**SMALL, "num_layers": 1})
    with pytest.raises(ValueError, match=r"Unknown configuration 'medium'"):
        SoftModularBlock.from_preset_name("medium")


# -------------------------------------------------------------- cross-backend


CROSS_BACKEND_SNIPPET = """
import json
import numpy as np
from layers.soft_modular_block import SoftModularBlock
data = np.load({inputs!r})
results = {{}}
for variant in ("official", "paper"):
    layer = SoftModularBlock(variant=variant, **{config!r})
    layer(data["states"], data["task_ids"])
    weights = np.load({weights!r}.format(variant))
    for variable in layer.weights:
        variable.assign(weights[variable.name])
    outputs, routing = layer(data["states"], data["task_ids"], return_routing=True)
    results[variant] = [np.asarray(t.detach() if hasattr(t, "detach") else t)
                        .tolist() for t in [outputs] + list(routing)]
print(json.dumps(results))
"""


def test_same_weights_same_outputs_across_backends(tmp_path):
    config = {**SMALL, "num_layers": 3}
    states, task_ids = _inputs(batch=4)
    inputs_path = os.path.join(str(tmp_path), "inputs.npz")
    np.savez(inputs_path, states=states, task_ids=task_ids)
    weights_path = os.path.join(str(tmp_path), "{}_weights.npz")
    expected = {}
    for variant in ("official", "paper"):
        layer = SoftModularBlock(variant=variant, **config)
        layer(states, task_ids)
        values = _randomise(layer, seed=7)
        np.savez(weights_path.format(variant), **{
            name: value.astype("float32") for name, value in values.items()
        })
        outputs, routing = layer(states, task_ids, return_routing=True)
        expected[variant] = [ops.convert_to_numpy(t) for t in [outputs, *routing]]
    results = run_in_backends(
        CROSS_BACKEND_SNIPPET,
        other_backends(),
        inputs=inputs_path,
        config=config,
        weights=weights_path,
    )
    for backend, result in results.items():
        for variant, tensors in expected.items():
            assert len(result[variant]) == len(tensors)
            for actual, reference in zip(result[variant], tensors):
                np.testing.assert_allclose(
                    np.asarray(actual), reference, rtol=1e-4, atol=1e-5,
                    err_msg=f"{backend} {variant}",
                )
