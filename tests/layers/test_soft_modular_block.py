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
from tests.harness import assert_same_across_backends, run_layer_checks
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


# ---------------------------------------------------------- NumPy helpers


def _relu(x):
    return np.maximum(x, 0.0)


def _softmax(x):
    """Softmax over the last axis, written out."""
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _layer_weights(layer):
    """The layer's weights by name, in float64."""
    return {
        v.name: np.asarray(ops.convert_to_numpy(v), "float64")
        for v in layer.weights
    }


# ------------------------------------- NumPy re-statement of the official net

# The "net" sections of the official configs meta_config/mt{10,50}/
# modular_2_2_2_256_reweight.json and modular_4_4_2_128_reweight.json.
OFFICIAL_NET_CONFIGS = {
    "modular_2_2_2_256_reweight": dict(
        hidden_shapes=[400, 400], em_hidden_shapes=[400], num_layers=2,
        num_modules=2, module_hidden=256, num_gating_layers=2,
        gating_hidden=256, add_bn=False, pre_softmax=False,
    ),
    "modular_4_4_2_128_reweight": dict(
        hidden_shapes=[400, 400], em_hidden_shapes=[400], num_layers=4,
        num_modules=4, module_hidden=128, num_gating_layers=2,
        gating_hidden=256, add_bn=False, pre_softmax=False,
    ),
}


def _layer_kwargs(net):
    """SoftModularBlock arguments for an official "net" config."""
    assert len(net["em_hidden_shapes"]) == 1  # h(z): one Linear layer
    assert not net["add_bn"] and not net["pre_softmax"]  # module NOTE 11
    return dict(
        num_layers=net["num_layers"],
        num_modules=net["num_modules"],
        module_units=net["module_hidden"],
        routing_units=net["gating_hidden"],
        routing_layers=net["num_gating_layers"],
        observation_embedding_units=net["hidden_shapes"][-1],
        observation_embedding_layers=len(net["hidden_shapes"]),
        variant="official",
    )


def _official_parameters(layer):
    """The layer's weights under the official torch names and layouts.

    Each entry is a torch `nn.Linear` as (weight of shape (out, in), bias);
    the layer's kernels are (in, out), and module kernels stack the n
    modules of a layer on their first axis. Every weight of the layer is
    used exactly once.
    """
    weights = _layer_weights(layer)
    used = set()

    def linear(name):
        used.update({f"{name}_kernel", f"{name}_bias"})
        return weights[f"{name}_kernel"].T, weights[f"{name}_bias"]

    num_layers, n = layer.num_layers, layer.num_modules
    params = {}
    for i in range(layer.observation_embedding_layers):
        params[f"base.fc{i}"] = linear(f"observation_{i}")
    params["em_base.fc0"] = linear("task_embedding")
    for i in range(layer.routing_layers):
        params[f"gating_fc_{i}"] = linear(f"routing_trunk_{i}")
    params["gating_weight_fc_0"] = linear("routing_output_0")
    for k in range(1, num_layers - 1):
        params[f"gating_weight_cond_fc_{k}"] = linear(f"routing_condition_{k}")
        params[f"gating_weight_fc_{k}"] = linear(f"routing_output_{k}")
    params["gating_weight_cond_last"] = linear(
        f"routing_condition_{num_layers - 1}"
    )
    params["gating_weight_last"] = linear(f"routing_output_{num_layers - 1}")
    for i in range(num_layers):
        used.update({f"module_{i}_kernel", f"module_{i}_bias"})
        for j in range(n):
            params[f"module_{i}_{j}"] = (
                weights[f"module_{i}_kernel"][j].T,
                weights[f"module_{i}_bias"][j],
            )
    assert used == set(weights), set(weights) ^ used
    return params


def _official_forward(params, observations, task_inputs, num_layers,
                      num_modules, num_base_layers, num_gating_layers):
    """The forward pass of the official ModularGatedCascadeCondNet, in NumPy.

    A re-statement of `torchrl/networks/nets.py: ModularGatedCascadeCondNet.
    forward` (github.com/RchalYang/Soft-Module) with cond_ob=True,
    pre_softmax=False, add_bn=False, up to the input of its final `last`
    Linear (the policy head, outside the block). Written from the official
    computation, not from the layer: torch Linear layouts, one module at a
    time, explicit softmax. Returns (features, [routing matrices..., final
    mixing vector]); routing matrix [b, j, k] weighs source module k in the
    input of target module j (official `weights[i][..., j, :]`).

    Where the official network differs from the paper (module NOTEs 1-6):

    1. An extra routing embedding: after the product of the task and
       observation embeddings, `num_gating_layers` Linear layers (ReLU
       before each, none after the last) of width `gating_hidden` (256); the
       paper routes from the product directly.
    2. The observation embedding is activated (ReLU) before entering the
       first modules; the routing network reads it un-activated.
    3. Routing layer l >= 2 is conditioned on ALL previous routing
       matrices (softmax outputs, flattened, concatenated in layer order);
       the paper conditions on the previous layer only.
    4. ReLU after the routing-weighted sum of the previous modules' outputs
       (each module is a bare Linear); the paper applies it before the sum.
    5. An extra final routing vector of n weights (softmax) mixes the last
       module layer's outputs, followed by a ReLU; the paper sums the last
       modules unweighted.
    6. The SAC task loss weights T * softmax(-log_alpha) (detached) scale
       the Q and policy losses; that is training, not this forward pass, so
       it has no counterpart here (nor in the layer).
    """

    def linear(name, x):
        weight, bias = params[name]
        return x @ weight.T + bias

    batch, n = observations.shape[0], num_modules
    # self.base: MLPBase(hidden_shapes=[400, 400]), null last activation.
    out = observations
    for i in range(num_base_layers):
        if i > 0:
            out = _relu(out)
        out = linear(f"base.fc{i}", out)
    # self.em_base: MLPBase(em_hidden_shapes=[400]) on the one-hot task.
    embedding = linear("em_base.fc0", task_inputs)
    embedding = embedding * out  # cond_ob
    out = _relu(out)  # difference 2
    if num_gating_layers > 0:  # difference 1
        embedding = _relu(embedding)
        for i in range(num_gating_layers):
            if i > 0:
                embedding = _relu(embedding)
            embedding = linear(f"gating_fc_{i}", embedding)

    routing, flat_routing = [], []

    def add_routing(raw):
        matrix = _softmax(raw.reshape(batch, n, n))  # over the last axis
        routing.append(matrix)
        flat_routing.append(matrix.reshape(batch, n * n))

    add_routing(linear("gating_weight_fc_0", _relu(embedding)))
    for k in range(1, num_layers - 1):  # difference 3
        cond = linear(
            f"gating_weight_cond_fc_{k}", np.concatenate(flat_routing, -1)
        )
        add_routing(linear(f"gating_weight_fc_{k}", _relu(cond * embedding)))
    cond = linear("gating_weight_cond_last", np.concatenate(flat_routing, -1))
    last_weight = _softmax(  # difference 5
        linear("gating_weight_last", _relu(cond * embedding))
    )

    module_outputs = [linear(f"module_0_{j}", out) for j in range(n)]
    for i in range(num_layers - 1):
        new_outputs = []
        for j in range(n):
            module_input = np.zeros_like(module_outputs[0])
            for k in range(n):
                module_input += routing[i][:, j, k, None] * module_outputs[k]
            module_input = _relu(module_input)  # difference 4
            new_outputs.append(linear(f"module_{i + 1}_{j}", module_input))
        module_outputs = new_outputs
    mixed = np.zeros_like(module_outputs[0])
    for k in range(n):
        mixed += last_weight[:, k, None] * module_outputs[k]
    return _relu(mixed), routing + [last_weight]


def _official_reference(layer, observations, task_inputs):
    return _official_forward(
        _official_parameters(layer),
        np.asarray(observations, "float64"),
        np.asarray(task_inputs, "float64"),
        num_layers=layer.num_layers,
        num_modules=layer.num_modules,
        num_base_layers=layer.observation_embedding_layers,
        num_gating_layers=layer.routing_layers,
    )


# ------------------------------------------------ NumPy reference, the paper


def _paper_reference(layer, states, task_vectors):
    """Paper Eqs. 5-9 (NOTES 7, 8), modules one at a time.

    Returns (outputs, routing list). Routing matrices are [target, source].
    """
    weights = _layer_weights(layer)
    n, num_layers = layer.num_modules, layer.num_layers
    batch = states.shape[0]

    def dense(x, name):
        return x @ weights[f"{name}_kernel"] + weights[f"{name}_bias"]

    def module(index, j, x):  # W_j^l x + b_j^l for ONE module j
        return (x @ weights[f"module_{index}_kernel"][j]
                + weights[f"module_{index}_bias"][j])

    observation = np.asarray(states, "float64")
    for index in range(layer.observation_embedding_layers):
        if index > 0:
            observation = _relu(observation)
        observation = dense(observation, f"observation_{index}")
    embedding = observation * dense(task_vectors, "task_embedding")
    # Eq. 6, then Eq. 5 on the previous logits, Eq. 7 softmax.
    logits = dense(_relu(embedding), "routing_output_0")
    all_logits = [logits]
    for index in range(1, num_layers - 1):
        up = dense(logits, f"routing_condition_{index}")
        logits = dense(_relu(up * embedding), f"routing_output_{index}")
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
    outputs = sum(
        inputs[j] @ weights[f"module_{last}_kernel"][j] for j in range(n)
    ) + weights[f"module_{last}_bias"]
    return outputs, routing


def _reference(layer, states, task_vectors):
    if layer.variant == "official":
        return _official_reference(layer, states, task_vectors)
    return _paper_reference(layer, states, task_vectors)


# ------------------------------------------------------------------- data


def _perturb(layer, seed=0, scale=0.5, routing_scale=None):
    """Random weights: the initial values plus Gaussian noise.

    Kernels get noise of std scale / sqrt(fan_in), biases std scale / 4;
    routing output layers `routing_scale` instead of `scale` (to move the
    routing far from uniform).
    """
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        shape = tuple(variable.shape)
        std = routing_scale if (
            routing_scale is not None and variable.name.startswith("routing_output")
        ) else scale
        std = std / np.sqrt(shape[-2]) if len(shape) >= 2 else std / 4
        value = ops.convert_to_numpy(variable) + rng.normal(0.0, std, shape)
        variable.assign(value.astype("float32"))


def _inputs(batch=6, seed=1, state_dim=STATE_DIM, num_tasks=NUM_TASKS):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(batch, state_dim)).astype("float32")
    task_ids = rng.integers(0, num_tasks, size=(batch,)).astype("int32")
    task_ids[:2] = [0, num_tasks - 1]  # mixed-task batch
    return states, task_ids


def _assert_matches(outputs, routing, expected, expected_routing, atol):
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs), expected, rtol=atol, atol=atol,
        err_msg="features",
    )
    assert len(routing) == len(expected_routing)
    for index, (actual, reference) in enumerate(
        zip(routing, expected_routing, strict=True)
    ):
        np.testing.assert_allclose(
            ops.convert_to_numpy(actual), reference, rtol=atol, atol=atol,
            err_msg=f"routing output {index}",
        )


# ------------------------------------------------- the official cross-check


@pytest.mark.parametrize("config_name", sorted(OFFICIAL_NET_CONFIGS))
def test_matches_official_network(config_name):
    """The official variant equals the official torch network's forward pass.

    `_official_forward` (see its docstring for the six differences from
    the paper) on random, perturbed weights taken from the layer by name,
    at the full sizes of the released shallow (modular_2_2_2_256) and deep
    (modular_4_4_2_128) configs: features and every routing output.
    """
    net = OFFICIAL_NET_CONFIGS[config_name]
    kwargs = _layer_kwargs(net)
    preset = "shallow" if net["num_layers"] == 2 else "deep"
    # The presets and the block's defaults are the released configs.
    preset_config = SoftModularBlock.from_preset_name(preset).get_config()
    for key, value in kwargs.items():
        assert preset_config[key] == value, key
    num_tasks = 10
    layer = SoftModularBlock(num_tasks=num_tasks, **kwargs)
    states, task_ids = _inputs(batch=8, seed=2, state_dim=39,
                               num_tasks=num_tasks)
    layer(states, task_ids)
    _perturb(layer, seed=3, scale=1.0, routing_scale=4.0)

    expected, expected_routing = _official_reference(
        layer, states, np.eye(num_tasks)[task_ids]
    )
    # The check has teeth only if routing is far from uniform and differs
    # between the rows of a matrix (a transposed index then shows).
    for probs in expected_routing:
        assert probs.std() > 0.05
    assert np.abs(expected_routing[0] - expected_routing[0].transpose(0, 2, 1)
                  ).max() > 0.1
    assert expected.std() > 0.1 and (expected > 0).mean() > 0.2

    outputs, routing = layer(states, task_ids, return_routing=True)
    _assert_matches(outputs, routing, expected, expected_routing, atol=1e-5)


CASES = [
    dict(variant="official", num_layers=3, routing_layers=2),
    dict(variant="official", num_layers=2, routing_layers=0),
    dict(variant="official", num_layers=3, observation_embedding_layers=1),
    dict(variant="paper", num_layers=4, output_units=5),
    dict(variant="paper", num_layers=2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(sorted(c.items())))
def test_matches_numpy_reference(case):
    layer = SoftModularBlock(**{**SMALL, **case})
    states, task_ids = _inputs()
    layer(states, task_ids)
    _perturb(layer, seed=0, scale=1.0, routing_scale=3.0)
    one_hot = np.eye(NUM_TASKS)[task_ids]
    expected, expected_routing = _reference(layer, states, one_hot)
    assert expected.shape == (
        len(states), case.get("output_units") or SMALL["module_units"]
    )
    for training in (True, False):  # no stochastic parts: same outputs
        outputs, routing = layer(
            states, task_ids, return_routing=True, training=training
        )
        _assert_matches(outputs, routing, expected, expected_routing,
                        atol=2e-5)
    # A one-hot float descriptor is the same task as its integer id.
    from_one_hot = layer(states, one_hot.astype("float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(from_one_hot), expected, rtol=2e-5, atol=2e-5
    )


def test_float_descriptor_without_num_tasks_matches_reference():
    rng = np.random.default_rng(3)
    states, _ = _inputs()
    descriptors = rng.normal(size=(len(states), 7)).astype("float32")
    layer = SoftModularBlock(**{**SMALL, "num_tasks": None, "num_layers": 3})
    layer(states, descriptors)
    _perturb(layer, seed=4)
    assert tuple(layer.task_kernel.shape) == (7, 16)
    expected, _ = _official_reference(layer, states, descriptors)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(states, descriptors)),
        expected, rtol=2e-5, atol=2e-5,
    )


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int64"])
def test_any_integer_id_dtype(dtype):
    layer = SoftModularBlock(**{**SMALL, "num_layers": 2})
    states, task_ids = _inputs()
    expected = ops.convert_to_numpy(layer(states, task_ids))
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(states, task_ids.astype(dtype))),
        expected, rtol=1e-6, atol=1e-6,
    )


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_routing_probabilities_are_distributions(variant):
    layer = SoftModularBlock(**{**SMALL, "num_layers": 4, "variant": variant})
    states, task_ids = _inputs(batch=5)
    layer(states, task_ids)
    _perturb(layer, scale=2.0, routing_scale=6.0)  # far from uniform
    _, routing = layer(states, task_ids, return_routing=True)
    n = SMALL["num_modules"]
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


# ---------------------------------------------------------- initialisation


def test_default_initialisation_is_official():
    layer = SoftModularBlock(**{**SMALL, "num_layers": 3})
    states, task_ids = _inputs()
    outputs, routing = layer(states, task_ids, return_routing=True)
    for name, value in _layer_weights(layer).items():
        if name.startswith("routing_output"):
            assert np.abs(value).max() <= 3e-3 and np.abs(value).max() > 1e-3
        elif name.endswith("_bias"):
            np.testing.assert_array_equal(value, np.float32(0.1))
        else:  # U(+-1/sqrt(output units))
            bound = 1.0 / np.sqrt(value.shape[-1])
            assert np.abs(value).max() <= bound * (1 + 1e-6)
            assert np.abs(value).max() > 0.8 * bound
    # Routing starts almost uniform (small output layers).
    for probs in routing:
        np.testing.assert_allclose(
            ops.convert_to_numpy(probs), 1.0 / SMALL["num_modules"], atol=1e-2
        )


def test_no_two_weights_start_equal():
    """Module NOTE 13: every weight draws with its own seed.

    With one seed per initializer, the routing output layers of a deep
    block (same shapes) started identical, as would its module kernels.
    """
    layer = SoftModularBlock(**{**SMALL, "num_layers": 4})
    layer(*_inputs())
    weights = sorted(_layer_weights(layer).items())
    random = [(name, value) for name, value in weights if value.std() > 0]
    assert len(random) > 10
    for index, (name, value) in enumerate(random):
        for other, other_value in random[index + 1:]:
            if value.shape == other_value.shape:
                assert not np.allclose(value, other_value), (name, other)


def test_seeded_initializers_are_reproducible():
    def build(**kwargs):
        layer = SoftModularBlock(**{**SMALL, "num_layers": 3}, **kwargs)
        layer(*_inputs())
        return _layer_weights(layer)

    seeded = dict(
        kernel_initializer=OutputUnitsUniform(seed=3),
        routing_output_initializer=keras.initializers.RandomUniform(
            -3e-3, 3e-3, seed=4
        ),
    )
    first, second = build(**seeded), build(**seeded)
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    other = build(kernel_initializer=OutputUnitsUniform(seed=5))
    assert not np.allclose(first["module_1_kernel"], other["module_1_kernel"])
    # Unseeded defaults follow keras.utils.set_random_seed.
    keras.utils.set_random_seed(11)
    first = build()
    keras.utils.set_random_seed(11)
    second = build()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_output_units_uniform():
    init = OutputUnitsUniform(seed=7)
    values = ops.convert_to_numpy(init((2, 300, 16)))
    assert np.abs(values).max() <= 0.25 and np.abs(values).max() > 0.24
    # Stateless with an integer seed, as keras.initializers.RandomUniform.
    np.testing.assert_array_equal(values, ops.convert_to_numpy(init((2, 300, 16))))
    assert init.get_config() == {"seed": 7}
    rebuilt = OutputUnitsUniform.from_config(init.get_config())
    np.testing.assert_array_equal(values, ops.convert_to_numpy(rebuilt((2, 300, 16))))
    assert OutputUnitsUniform().get_config() == {"seed": None}
    # A SeedGenerator gives new values at every call.
    generator_init = OutputUnitsUniform(seed=keras.random.SeedGenerator(1))
    assert not np.allclose(
        ops.convert_to_numpy(generator_init((4, 4))),
        ops.convert_to_numpy(generator_init((4, 4))),
    )
    serialized = keras.initializers.serialize(init)
    assert isinstance(keras.initializers.deserialize(serialized), OutputUnitsUniform)


class PolicyNetwork(keras.Model):
    """A policy network as SAC builds it: a subclassed model, block + head."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = SoftModularBlock(**{**SMALL, "num_layers": 3})
        self.head = keras.layers.Dense(2)

    def call(self, inputs):
        return self.head(self.block(inputs["obs"], inputs["task"]))


def test_first_call_inside_subclassed_policy_model():
    """Regression: on TensorFlow this first call raised "AttributeError:
    'NoneType' object has no attribute 'assign'" (an unseeded initializer
    drew from the global seed generator while Keras built the model
    symbolically; module NOTE 13)."""
    states, task_ids = _inputs(batch=4)
    policy = PolicyNetwork()
    outputs = policy({"obs": states, "task": task_ids})
    assert tuple(outputs.shape) == (4, 2)
    assert np.all(np.isfinite(ops.convert_to_numpy(outputs)))
    assert len(policy.trainable_weights) == 26 + 2
    policy.compile(optimizer="sgd", loss="mse")
    policy.fit({"obs": states, "task": task_ids}, np.zeros((4, 2), "float32"),
               epochs=1, verbose=0)


# ------------------------------------------------------------ shared checks

# Trainable weights of SMALL with num_layers=3 (kernel + bias each):
# official: observation 2, task 1, trunk 2, routing outputs 3, routing
# conditions 2, modules 3 = 13 pairs; paper: observation 2, task 1, routing
# outputs 2, conditions 1, modules 3 = 9 pairs.
N = SMALL["num_modules"]


@pytest.mark.parametrize(
    "variant,task_kind,return_routing,expected_shape,num_weights",
    [
        ("official", "ids", False, (4, 8), 26),
        ("official", "ids", True, ((4, 8), [(4, N, N), (4, N, N), (4, N)]), 26),
        ("paper", "descriptor", True, ((4, 8), [(4, N, N), (4, N, N)]), 18),
    ],
)
def test_layer_checks(variant, task_kind, return_routing, expected_shape,
                      num_weights, tmp_path):
    states, task_ids = _inputs(batch=4)
    kwargs = {**SMALL, "num_layers": 3, "variant": variant}
    if task_kind == "ids":
        task = task_ids.astype("uint8")
    else:
        kwargs["num_tasks"] = None
        task = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    run_layer_checks(
        SoftModularBlock, kwargs, states, task, tmp_path,
        expected_output_shape=expected_shape,
        expected_num_trainable_weights=num_weights,
        call_kwargs={"return_routing": return_routing},
    )


def test_compute_output_shape():
    official = SoftModularBlock(**{**SMALL, "num_layers": 4})
    assert official.compute_output_shape((None, 5), (None,)) == (None, 8)
    assert official.compute_output_shape(
        (2, 5), (2,), return_routing=True
    ) == ((2, 8), [(2, 3, 3)] * 3 + [(2, 3)])
    paper = SoftModularBlock(
        **{**SMALL, "num_layers": 2, "variant": "paper", "output_units": 6}
    )
    assert paper.compute_output_shape(
        (2, 5), (2,), return_routing=True
    ) == ((2, 6), [(2, 3, 3)])
    # Functional model and summary.
    features = keras.Input((5,))
    task = keras.Input((), dtype="uint8")
    outputs, routing = official(features, task, return_routing=True)
    model = keras.Model([features, task], [outputs, *routing])
    assert [tuple(t.shape) for t in model.outputs] == [
        (None, 8), (None, 3, 3), (None, 3, 3), (None, 3, 3), (None, 3)
    ]
    model.summary(print_fn=lambda *args, **kwargs: None)


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
    # A user's seeded-by-default initializer (glorot) also draws one seed
    # per weight (NOTE 13): module kernels of one shape start different.
    built = SoftModularBlock.from_config(config)
    built(*_inputs())
    kernels = _layer_weights(built)
    assert not np.allclose(kernels["module_1_kernel"], kernels["module_0_kernel"][:, :8])


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

    def loss_fn(values, inputs, task):
        outputs, _ = layer.stateless_call(values, [], inputs, task)
        return ops.mean((outputs - target) ** 2)

    _, grads = value_and_grad(loss_fn)(
        [v.value for v in variables], states, task_ids
    )
    names = [v.name for v in variables]
    assert len(set(names)) == len(names)
    assert any(name.startswith("routing_output") for name in names)
    for variable, grad in zip(variables, grads, strict=True):
        grad = ops.convert_to_numpy(grad)
        if variable.name == "task_embedding_kernel":
            # Only the rows of the tasks in the batch are trained.
            assert np.all(np.abs(grad[[0, 1]]).sum(axis=-1) > 0)
            np.testing.assert_array_equal(grad[[2, 3]], 0.0)
        else:
            assert np.abs(grad).sum() > 0, variable.name


# ------------------------------------------------------------ configurations


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


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "name,value,match",
    [
        ("num_layers", 1, r"`num_layers` must be an integer >= 2; got 1"),
        ("num_layers", 2.5, r"`num_layers` must be an integer >= 2"),
        ("num_modules", 0, r"`num_modules` must be an integer >= 1; got 0"),
        ("num_modules", "3", r"`num_modules` must be an integer >= 1"),
        ("module_units", -8, r"`module_units` must be an integer >= 1"),
        ("module_units", 8.5, r"`module_units` must be an integer >= 1"),
        ("routing_units", 0, r"`routing_units` must be an integer >= 1"),
        ("routing_units", True, r"`routing_units` must be an integer >= 1"),
        ("routing_layers", -1, r"`routing_layers` must be an integer >= 0"),
        ("observation_embedding_units", 0,
         r"`observation_embedding_units` must be an integer >= 1"),
        ("observation_embedding_layers", 0,
         r"`observation_embedding_layers` must be an integer >= 1"),
        ("num_tasks", 0, r"`num_tasks` must be None or an integer >= 1"),
        ("num_tasks", 2.5, r"`num_tasks` must be None or an integer >= 1"),
        ("variant", "Paper", r"`variant` must be one of \('official', 'paper'\)"),
        ("output_units", 3, r"applies only to variant='paper'"),
    ],
)
def test_constructor_errors(name, value, match):
    kwargs = {**SMALL, "num_layers": 2, name: value}
    with pytest.raises(ValueError, match=match):
        SoftModularBlock(**kwargs)


def test_constructor_error_output_units_paper():
    with pytest.raises(ValueError, match=r"`output_units` must be None or an integer >= 1"):
        SoftModularBlock(**SMALL, num_layers=2, variant="paper", output_units=0)
    with pytest.raises(ValueError, match=r"Unknown configuration 'medium'"):
        SoftModularBlock.from_preset_name("medium")


def test_inputs_rank_errors():
    states, task_ids = _inputs(batch=3)
    # At build (first call)...
    for bad in (states[:, None, :], states[:, 0]):
        with pytest.raises(ValueError, match=r"`inputs` of shape \(batch, input_dim\)"):
            SoftModularBlock(**SMALL, num_layers=2)(bad, task_ids)
    # ... and after it.
    layer = SoftModularBlock(**SMALL, num_layers=2)
    layer(states, task_ids)
    with pytest.raises(ValueError, match=r"`inputs` of shape \(batch, input_dim\)"):
        layer(states[:, None, :], task_ids)
    with pytest.raises(ValueError, match=r"built for `inputs` of shape \(batch, 5\); got shape \(3, 4\)"):
        layer(states[:, :4], task_ids)


def test_task_errors():
    states, task_ids = _inputs(batch=4)
    layer = SoftModularBlock(**SMALL, num_layers=2)
    layer(states, task_ids)
    with pytest.raises(ValueError, match=r"got 3 task entries for a batch of 4"):
        layer(states, task_ids[:3])
    # A single task is not broadcast (it was on JAX and torch, not on TF).
    with pytest.raises(ValueError, match=r"got 1 task entries for a batch of 4"):
        layer(states, task_ids[:1])
    with pytest.raises(ValueError, match=r"got float32 values of shape \(4, 6\)"):
        layer(states, np.ones((4, 6), "float32"))  # one-hot over 4 tasks
    with pytest.raises(ValueError, match=r"got float32 values of shape \(4,\)"):
        layer(states, np.ones((4,), "float32"))
    with pytest.raises(ValueError, match=r"got integer values of shape \(4, 4\)"):
        layer(states, np.ones((4, 4), "int32"))
    with pytest.raises(ValueError, match=r"out of range.*\[0, 4\)"):
        layer(states, np.array([0, 4, 1, 2], "int32"))
    with pytest.raises(ValueError, match=r"out of range"):
        layer(states, np.array([0, -1, 1, 2], "int32"))
    # Symbolic calls (functional models) give the same errors.
    with pytest.raises(ValueError, match=r"got float32 values of shape \(4,\)"):
        SoftModularBlock(**SMALL, num_layers=2)(
            keras.KerasTensor((4, 5)), keras.KerasTensor((4,))
        )


def test_task_errors_without_num_tasks():
    states, task_ids = _inputs(batch=4)
    with pytest.raises(ValueError, match=r"num_tasks=None and takes only float task descriptors"):
        SoftModularBlock(**{**SMALL, "num_layers": 2, "num_tasks": None})(
            states, task_ids
        )
    layer = SoftModularBlock(**{**SMALL, "num_layers": 2, "num_tasks": None})
    layer(states, np.ones((4, 7), "float32"))
    with pytest.raises(ValueError, match=r"float task descriptor of shape \(batch, 7\); got float32 values of shape \(4, 5\)"):
        layer(states, np.ones((4, 5), "float32"))
    with pytest.raises(ValueError, match=r"got integer values of shape \(4,\)"):
        layer(states, task_ids)


# -------------------------------------------------------------- cross-backend


CROSS_BACKEND_SNIPPET = """
import json
import numpy as np
from keras import ops
from layers.soft_modular_block import SoftModularBlock
data = np.load({inputs!r})
results = {{}}
for variant in ("official", "paper"):
    layer = SoftModularBlock(variant=variant, **{config!r})
    layer(data["states"], data["task_ids"])
    weights = np.load({weights!r}.format(variant))
    assert sorted(weights.files) == sorted(v.name for v in layer.weights)
    for variable in layer.weights:
        variable.assign(weights[variable.name])
    outputs, routing = layer(data["states"], data["task_ids"], return_routing=True)
    results[variant] = [ops.convert_to_numpy(t).tolist()
                        for t in [outputs] + list(routing)]
print(json.dumps(results))
"""


def test_same_weights_same_outputs_across_backends(tmp_path):
    config = {**SMALL, "num_layers": 3}
    states, task_ids = _inputs(batch=4)
    inputs_path = os.path.join(str(tmp_path), "inputs.npz")
    np.savez(inputs_path, states=states, task_ids=task_ids)
    weights_path = os.path.join(str(tmp_path), "{}_weights.npz")
    for variant in ("official", "paper"):
        layer = SoftModularBlock(variant=variant, **config)
        layer(states, task_ids)
        _perturb(layer, seed=7, scale=1.0, routing_scale=3.0)
        np.savez(weights_path.format(variant), **_layer_weights(layer))
    document = assert_same_across_backends(
        CROSS_BACKEND_SNIPPET,
        atol=1e-5,
        rtol=1e-4,
        inputs=inputs_path,
        config=config,
        weights=weights_path,
    )
    assert len(document["official"]) == 4 and len(document["paper"]) == 3
    assert np.std(document["official"][1]) > 0.05  # routing not uniform
