"""Meta-World actor and critic networks (zoo/metaworld/networks.py)."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from training.sac import MultiTaskSAC, sac_optimizer
from zoo.metaworld.networks import (
    NETWORKS,
    PRESETS,
    MultiTaskActor,
    MultiTaskCritic,
    build_actor_critic,
)

T, STATE, ACT, N = 3, 5, 2, 12
OBS = STATE + T  # the state then the task one-hot, as Meta-World's use_one_hot
HIDDEN = (8, 8)
TINY_SOFT_MODULAR = dict(module_units=8, observation_embedding_units=8,
                         routing_units=8)


def tiny(network, **overrides):
    """Tiny sizes of each network."""
    if network == "soft-modular":
        return {**TINY_SOFT_MODULAR, **overrides}
    return {"hidden_units": HIDDEN, **overrides}


def make_pair(network, **overrides):
    return build_actor_critic(network, T, ACT, **tiny(network, **overrides))


def make_inputs(seed=0, task_ids=None):
    rng = np.random.default_rng(seed)
    task_ids = np.arange(N) % T if task_ids is None else np.asarray(task_ids)
    observations = np.concatenate(
        [rng.normal(size=(N, STATE)), np.eye(T)[task_ids]], -1).astype("float32")
    actions = rng.uniform(-1, 1, (N, ACT)).astype("float32")
    return observations, actions, task_ids.astype("int32")


def actor_outputs(actor, observations, task_ids):
    mean, log_std = actor((observations, task_ids))
    return np.concatenate([ops.convert_to_numpy(mean),
                           ops.convert_to_numpy(log_std)], -1)


def critic_outputs(critic, observations, actions, task_ids):
    return ops.convert_to_numpy(critic((observations, actions, task_ids)))


def randomize(model, seed=0):
    """Random weights of order 1 (the output layers start near 0)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.4
                       for w in model.get_weights()])


# -- Shapes. --------------------------------------------------------------------
SHAPE_CASES = [(network, {}) for network in NETWORKS] + [
    ("soft-modular", {"block": "deep", "variant": "paper"}),
    ("soft-modular", {"block": "shallow", "variant": "paper"}),
    ("soft-modular", {"block": "deep"}),
    ("independent", {"task_layer_mode": "gather"}),
    ("hard-routing", {"task_layer_mode": "gather"}),
    ("moe", {"num_experts": 2}),
]


@pytest.mark.parametrize("network,options", SHAPE_CASES)
def test_output_shapes_with_a_mixed_task_batch(network, options):
    actor, critic = make_pair(network, **options)
    observations, actions, task_ids = make_inputs()
    mean, log_std = actor((observations, task_ids))
    q = critic((observations, actions, task_ids))
    assert tuple(mean.shape) == tuple(log_std.shape) == (N, ACT)
    assert tuple(q.shape) == (N, 1)
    for value in (mean, log_std, q):
        assert np.all(np.isfinite(ops.convert_to_numpy(value)))


def test_output_layers_start_near_zero():
    """NOTE 3: the last layer is U(+-3e-3); the policy starts at mean ~ 0,
    log_std ~ 0 and the critic near 0."""
    for network in NETWORKS:
        actor, critic = make_pair(network)
        observations, actions, task_ids = make_inputs()
        assert np.abs(actor_outputs(actor, observations, task_ids)).max() < 0.1, network
        assert np.abs(critic_outputs(critic, observations, actions, task_ids)).max() < 0.1


# -- Task-specific parts. ---------------------------------------------------------
def weight(model, suffix):
    matches = [w for w in model.weights if w.path.endswith(suffix)]
    assert matches, (suffix, [w.path for w in model.weights])
    return matches


def task_parts(network, model, task):
    """[(variable, index)] of the parameters that belong to `task`, and the
    tasks whose outputs they may change."""
    tasks = {task}
    if network == "mt-mh-sac":
        parts = [(w, task) for w in weight(model, "output/task_kernels")
                 + weight(model, "output/task_biases")]
    elif network == "independent":
        parts = [(w, task) for w in model.weights if "task_" in w.path]
    elif network == "mint":
        parts = [(w, task) for w in weight(model, "task_matrices")
                 + weight(model, "task_biases")]
    elif network == "film":
        parts = [(w, task) for w in weight(model, "task_gammas")
                 + weight(model, "task_betas")]
    elif network == "concat-all-fc":  # the kernel rows of one-hot column `task`
        parts = [(w, w.shape[0] - T + task) for w in weight(model, "kernel")]
        assert len(parts) == len(HIDDEN) + 1
    elif network == "soft-modular":  # row `task` of h(z)
        parts = [(w, task) for w in weight(model, "task_embedding_kernel")]
    elif network == "moe":  # the gate's row for the task's one-hot
        parts = [(w, task) for w in weight(model, "gate/kernel")]
    elif network == "hard-routing":  # the first layer's module of the task
        module = model.network_options["routes"][0][task]
        parts = [(w, module) for w in weight(model, "modules_0/task_kernels")]
        tasks = {t for t in range(T) if model.network_options["routes"][0][t] == module}
    else:
        raise AssertionError(network)
    return parts, tasks


@pytest.mark.parametrize("network", [n for n in NETWORKS if n != "mt-sac"])
def test_task_parameters_change_only_their_tasks_outputs(network):
    """E.g. for mt-mh-sac, changing task 1's head changes only task 1's
    outputs (for hard routing: the tasks routed through the module)."""
    options = {"routes": [[1, 1, 0], [0, 1, 1]]} if network == "hard-routing" else {}
    actor, critic = make_pair(network, **options)
    observations, actions, task_ids = make_inputs()
    rng = np.random.default_rng(3)
    for model, outputs in ((actor, lambda: actor_outputs(actor, observations, task_ids)),
                           (critic, lambda: critic_outputs(critic, observations,
                                                           actions, task_ids))):
        outputs()
        randomize(model)
        before = outputs()
        parts, tasks = task_parts(network, model, task=1)
        for variable, index in parts:
            value = ops.convert_to_numpy(variable).copy()
            value[index] += rng.normal(size=value[index].shape) * 0.5
            variable.assign(value)
        after = outputs()
        changed = np.isin(task_ids, list(tasks))
        np.testing.assert_allclose(after[~changed], before[~changed], rtol=1e-6, atol=1e-6)
        assert np.all(np.abs(after[changed] - before[changed]).max(-1) > 1e-4)
        if network == "hard-routing":
            assert tasks == {0, 1}


def test_mt_sac_sees_the_task_only_through_the_observation():
    """NOTE 1: mt-sac ignores the ids; other networks use them."""
    observations, _, _ = make_inputs()
    for network in ("mt-sac", "mt-mh-sac"):
        actor, _ = make_pair(network)
        actor_outputs(actor, observations, np.zeros(N, "int32"))
        randomize(actor)
        zeros = actor_outputs(actor, observations, np.zeros(N, "int32"))
        twos = actor_outputs(actor, observations, np.full(N, 2, "int32"))
        assert np.allclose(zeros, twos) == (network == "mt-sac")


def test_hard_routing_tasks_on_the_same_route_share_their_outputs():
    actor, _ = make_pair("hard-routing", routes=[[2, 2, 0], [1, 1, 1]])
    observations, _, _ = make_inputs()
    actor_outputs(actor, observations, np.zeros(N, "int32"))
    randomize(actor)
    by_task = [actor_outputs(actor, observations, np.full(N, t, "int32")) for t in range(T)]
    np.testing.assert_allclose(by_task[0], by_task[1], rtol=1e-6)
    assert not np.allclose(by_task[0], by_task[2])


@pytest.mark.parametrize("network", ["independent", "hard-routing"])
def test_select_and_gather_modes_compute_the_same_values(network):
    """NOTE 8: both ways of running per-task layers."""
    select, select_critic = make_pair(network)
    gather = MultiTaskActor.from_config(
        dict(select.get_config(), task_layer_mode="gather"))
    gather_critic = MultiTaskCritic.from_config(
        dict(select_critic.get_config(), task_layer_mode="gather"))
    observations, actions, task_ids = make_inputs()
    actor_outputs(select, observations, task_ids)
    randomize(select)
    gather.build_for(OBS)
    gather.set_weights(select.get_weights())
    np.testing.assert_allclose(actor_outputs(gather, observations, task_ids),
                               actor_outputs(select, observations, task_ids),
                               rtol=1e-5, atol=1e-5)
    critic_outputs(select_critic, observations, actions, task_ids)
    randomize(select_critic)
    gather_critic.build_for(OBS, ACT)
    gather_critic.set_weights(select_critic.get_weights())
    np.testing.assert_allclose(
        critic_outputs(gather_critic, observations, actions, task_ids),
        critic_outputs(select_critic, observations, actions, task_ids),
        rtol=1e-5, atol=1e-5)


# -- Config and saving. -------------------------------------------------------------
@pytest.mark.parametrize("network", NETWORKS)
def test_config_round_trip_gives_the_same_outputs(network):
    actor, critic = make_pair(network)
    observations, actions, task_ids = make_inputs()
    expected_actor = actor_outputs(actor, observations, task_ids)
    expected_critic = critic_outputs(critic, observations, actions, task_ids)
    for model, expected, call in (
            (actor, expected_actor,
             lambda m: actor_outputs(m, observations, task_ids)),
            (critic, expected_critic,
             lambda m: critic_outputs(m, observations, actions, task_ids))):
        config = json.loads(json.dumps(model.get_config()))  # JSON-able
        clone = model.__class__.from_config(config)
        call(clone)
        assert not all(np.array_equal(a, b) for a, b in
                       zip(clone.get_weights(), model.get_weights()))
        clone.set_weights(model.get_weights())
        np.testing.assert_allclose(call(clone), expected, rtol=1e-6, atol=1e-6)
        assert clone.get_config() == model.get_config() | {"name": clone.name}


@pytest.mark.parametrize("network", ["soft-modular", "hard-routing", "mint"])
def test_keras_file_round_trip(network, tmp_path):
    actor, critic = make_pair(network)
    observations, actions, task_ids = make_inputs()
    for model, call in (
            (actor, lambda m: actor_outputs(m, observations, task_ids)),
            (critic, lambda m: critic_outputs(m, observations, actions, task_ids))):
        call(model)
        randomize(model)
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(model)
        np.testing.assert_allclose(call(loaded), call(model), rtol=1e-6, atol=1e-6)


# -- One SAC step. ---------------------------------------------------------------
@pytest.mark.parametrize("network", NETWORKS)
def test_one_sac_fit_step_trains_every_network(network):
    actor, critic = make_pair(network)
    sac = MultiTaskSAC(actor, critic, T, OBS, ACT, seed=0)
    critic_1, critic_2 = (c.get_weights() for c in sac.critics)
    assert not all(np.array_equal(a, b) for a, b in zip(critic_1, critic_2))
    sac.compile(optimizer=sac_optimizer())
    observations, actions, task_ids = make_inputs()
    next_observations, _, _ = make_inputs(seed=1)
    batch = {
        "observations": observations, "actions": actions,
        "rewards": np.random.default_rng(2).normal(size=N).astype("float32"),
        "next_observations": next_observations, "task_ids": task_ids,
    }
    old_actor = sac.actor.get_weights()
    history = sac.fit(batch, batch_size=N, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["critic_loss"][-1])
    assert any(not np.allclose(a, b) for a, b in zip(sac.actor.get_weights(), old_actor))
    assert any(not np.allclose(a, b)
               for a, b in zip(sac.critics[0].get_weights(), critic_1))


def test_sac_with_a_zoo_network_saves_and_loads(tmp_path):
    actor, critic = make_pair("soft-modular")
    sac = MultiTaskSAC(actor, critic, T, OBS, ACT, seed=0)
    observations, _, task_ids = make_inputs()
    for network in [sac.actor, *sac.critics]:
        randomize(network)
    expected = ops.convert_to_numpy(sac((observations, task_ids)))
    sac.save(tmp_path / "sac.keras")
    loaded = keras.saving.load_model(tmp_path / "sac.keras")
    assert isinstance(loaded.actor, MultiTaskActor)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded((observations, task_ids))),
                               expected, rtol=1e-6, atol=1e-6)
    for critic, loaded_critic in zip(sac.critics, loaded.critics):
        for a, b in zip(critic.get_weights(), loaded_critic.get_weights()):
            np.testing.assert_array_equal(a, b)


# -- Names, options, presets. -------------------------------------------------------
def test_bad_names_and_options_raise():
    with pytest.raises(ValueError, match="Unknown network 'mlp'.*mt-sac, mt-mh-sac"):
        build_actor_critic("mlp", T, ACT)
    with pytest.raises(ValueError, match="Unknown network"):
        MultiTaskActor("soft-modular-huge", T, ACT)
    with pytest.raises(ValueError, match="takes no option.*num_experts"):
        MultiTaskActor("mint", T, ACT, num_experts=4)
    with pytest.raises(ValueError, match="not `hidden_units`"):
        MultiTaskActor("soft-modular", T, ACT, hidden_units=(8,))
    with pytest.raises(ValueError, match="`block` must be one of"):
        MultiTaskActor("soft-modular", T, ACT, block="medium")
    with pytest.raises(ValueError, match="`routes` must be integers in \\[0, 4\\)"):
        MultiTaskActor("hard-routing", T, ACT, hidden_units=HIDDEN, routes=[[0, 1, 4]] * 2)
    with pytest.raises(ValueError, match="task_layer_mode"):
        MultiTaskActor("independent", T, ACT, task_layer_mode="loop")
    actor, critic = make_pair("mt-sac")
    observations, actions, task_ids = make_inputs()
    actor((observations, task_ids))
    with pytest.raises(ValueError, match="built for observations of size 8"):
        actor((observations[:, 1:], task_ids))
    with pytest.raises(ValueError, match="actions of size 2"):
        critic((observations, actions[:, :1], task_ids))
    with pytest.raises(ValueError, match="task id out of range"):
        actor((observations, np.full(N, T)))


def test_presets_hold_the_papers_sizes():
    assert set(PRESETS) >= {f"{b}/{n}" for b in ("mt10", "mt50") for n in NETWORKS}
    assert PRESETS["mt10/mint"]["hidden_units"] == (160,) * 3
    assert PRESETS["mt50/mint"]["hidden_units"] == (150,) * 3
    for benchmark in ("mt10", "mt50"):
        for network in ("mt-sac", "mt-mh-sac", "film", "concat-all-fc", "independent", "moe"):
            assert PRESETS[f"{benchmark}/{network}"]["hidden_units"] == (400,) * 3
    actor, critic = build_actor_critic("mt10/soft-modular", 10, 4)
    block = actor.block
    assert (block.num_layers, block.num_modules, block.module_units) == (2, 2, 256)
    actor, critic = build_actor_critic("mt50/soft-modular", 50, 4)
    block = critic.block
    assert (block.num_layers, block.num_modules, block.module_units) == (4, 4, 128)
    assert block.variant == "official"
    actor, _ = build_actor_critic("mt10/soft-modular-deep", 10, 4, variant="paper")
    assert actor.block.variant == "paper" and actor.block.output_units == 8
    assert actor.output_layer is None  # NOTE 5: Eq. 9 is the output
    actor, _ = build_actor_critic("mt10/hard-routing", 10, 4)
    assert actor.hidden_units == (400,) * 4
    assert np.array(actor.network_options["routes"]).shape == (4, 10)
    actor, _ = build_actor_critic("mt10/mint", 10, 4, hidden_units=(6, 6))  # an override
    assert actor.hidden_units == (6, 6)


# -- Parameter counts against formulas. ---------------------------------------------
def dense(n_in, n_out):
    return n_in * n_out + n_out


def expected_parameters(network, tasks, inputs, outputs, hidden, experts=4, modules=4):
    widths = (inputs,) + tuple(hidden)
    mlp = sum(dense(a, b) for a, b in zip(widths[:-1], widths[1:]))
    head = dense(widths[-1], outputs)
    if network == "mt-sac":
        return mlp + head
    if network == "mt-mh-sac":
        return mlp + tasks * head
    if network == "independent":
        return tasks * (mlp + head)
    if network == "concat-all-fc":
        return sum(dense(a + tasks, b) for a, b in zip(widths[:-1], widths[1:])) + dense(
            widths[-1] + tasks, outputs)
    if network == "mint":
        return mlp + sum(tasks * (u * u + u) for u in hidden) + head
    if network == "film":
        return mlp + sum(tasks * 2 * u for u in hidden) + head
    if network == "moe":
        return experts * (mlp + head) + dense(tasks, experts)
    if network == "hard-routing":
        return modules * mlp + head
    raise AssertionError(network)


@pytest.mark.parametrize("network", ["mt-sac", "mint"])
def test_mt10_parameter_counts(network):
    """MT10 shapes: observations 39 + 10 (one-hot), actions 4."""
    hidden = {"mt-sac": (400,) * 3, "mint": (160,) * 3}[network]
    actor, critic = build_actor_critic(f"mt10/{network}", 10, 4)
    actor.build_for(49)
    critic.build_for(49, 4)
    assert actor.count_params() == expected_parameters(network, 10, 49, 8, hidden)
    assert critic.count_params() == expected_parameters(network, 10, 53, 1, hidden)
    if network == "mint":  # 3 x 10 x (160^2 + 160) in the Mint layers
        assert actor.count_params() == 833_608


@pytest.mark.parametrize("network", [n for n in NETWORKS if n != "soft-modular"])
def test_tiny_parameter_counts(network):
    actor, critic = make_pair(network)
    actor.build_for(OBS)
    critic.build_for(OBS, ACT)
    assert actor.count_params() == expected_parameters(network, T, OBS, 2 * ACT, HIDDEN)
    assert critic.count_params() == expected_parameters(network, T, OBS + ACT, 1, HIDDEN)
