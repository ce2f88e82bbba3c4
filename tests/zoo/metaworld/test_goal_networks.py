"""Goal-conditioned networks of MINT's pushing experiment
(zoo/metaworld/networks.py NOTES 9-11): goals from a constant table of the
task ids, Mint's identity start and goal dependence, config and saving,
one SAC step, the pushing presets' parameter counts, bad options."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from training.sac import MultiTaskSAC, sac_optimizer
from zoo.metaworld import GOAL_NETWORKS
from zoo.metaworld.networks import (
    PRESETS,
    MultiTaskActor,
    MultiTaskCritic,
    build_actor_critic,
)

T, OBS, ACT, N, HIDDEN = 3, 6, 2, 12, (8, 8)
# Goals 0 and 2 are the same goal under two task ids.
GOALS = np.array([[0.0, 0.6, 0.1, 0.9], [0.1, 0.7, -0.1, 0.8],
                  [0.0, 0.6, 0.1, 0.9]], "float32")


def make_pair(network, **overrides):
    return build_actor_critic(network, T, ACT, **{
        "hidden_units": HIDDEN, "goal_table": GOALS, **overrides})


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(N, OBS)).astype("float32")
    actions = rng.uniform(-1, 1, (N, ACT)).astype("float32")
    return observations, actions


def outputs(model, observations, actions, task_ids):
    task_ids = np.asarray(task_ids, "int32")
    if isinstance(model, MultiTaskCritic):
        return ops.convert_to_numpy(model((observations, actions, task_ids)))
    mean, log_std = model((observations, task_ids))
    return np.concatenate([ops.convert_to_numpy(mean), ops.convert_to_numpy(log_std)], -1)


def by_task(model, observations, actions):
    return [outputs(model, observations, actions, np.full(N, task)) for task in range(T)]


def randomize(variables, seed=0):
    rng = np.random.default_rng(seed)
    for variable in variables:
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.4)


def plain_weights(model):
    """The dense layers' and output layer's variables (not Mint's)."""
    return [w for w in model.weights if "mint_" not in w.path]


@pytest.mark.parametrize("kind", ["actor", "critic"])
def test_mint_goal_starts_as_the_plain_network(kind):
    """MintLayer NOTE 4: M(g) = I, beta(g) = 0 for every goal at init, so
    the network is relu(W x + b) layers and the output layer."""
    actor, critic = make_pair("mint-goal")
    model = actor if kind == "actor" else critic
    observations, actions = make_inputs()
    outputs(model, observations, actions, np.zeros(N))
    randomize(plain_weights(model))
    hidden = observations if kind == "actor" else np.concatenate([observations, actions], -1)
    for layer in model.hidden_layers:
        kernel, bias = (ops.convert_to_numpy(w) for w in layer.weights)
        hidden = np.maximum(hidden @ kernel + bias, 0.0)
    kernel, bias = (ops.convert_to_numpy(w) for w in model.output_layer.weights)
    expected = hidden @ kernel + bias
    for task in range(T):
        np.testing.assert_allclose(outputs(model, observations, actions, np.full(N, task)),
                                   expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("network", GOAL_NETWORKS)
def test_outputs_depend_on_the_goal_not_the_id(network):
    """Two ids of different goals give different outputs (for Mint once
    M(g) is perturbed); two ids of the same goal give the same."""
    actor, critic = make_pair(network)
    observations, actions = make_inputs()
    for model in (actor, critic):
        outputs(model, observations, actions, np.zeros(N))
        randomize(plain_weights(model))
        if network == "mint-goal":
            before = by_task(model, observations, actions)
            np.testing.assert_allclose(before[0], before[1], rtol=1e-6)  # M = I
            randomize([w for w in model.weights if "matrix_network" in w.path], seed=1)
        goal_0, goal_1, goal_0_again = by_task(model, observations, actions)
        assert np.abs(goal_0 - goal_1).max() > 1e-3
        np.testing.assert_allclose(goal_0, goal_0_again, rtol=1e-6, atol=1e-6)


def test_goal_table_is_a_constant_and_concat_all_fc_keeps_its_one_hot():
    actor, _ = make_pair("mint-goal")
    actor.build_for(OBS)
    assert not any("goal" in w.path and "network" not in w.path for w in actor.weights)
    one_hot, _ = build_actor_critic("concat-all-fc", T, ACT, hidden_units=HIDDEN)
    goal, _ = make_pair("concat-all-fc")
    one_hot.build_for(OBS)
    goal.build_for(OBS)
    # The first layer takes [x, z]: the one-hot (T floats) or the goal (4).
    assert one_hot.hidden_layers[0].kernel.shape[0] == OBS + T
    assert goal.hidden_layers[0].kernel.shape[0] == OBS + 4


@pytest.mark.parametrize("network", GOAL_NETWORKS)
def test_config_round_trip_and_keras_file(network, tmp_path):
    actor, critic = make_pair(network)
    observations, actions = make_inputs()
    task_ids = np.arange(N) % T
    for model in (actor, critic):
        outputs(model, observations, actions, task_ids)
        randomize(model.weights)
        expected = outputs(model, observations, actions, task_ids)
        config = json.loads(json.dumps(model.get_config()))
        assert np.array_equal(np.asarray(config["goal_table"], "float32"), GOALS)
        clone = model.__class__.from_config(config)
        outputs(clone, observations, actions, task_ids)
        clone.set_weights(model.get_weights())
        np.testing.assert_allclose(outputs(clone, observations, actions, task_ids),
                                   expected, rtol=1e-5, atol=1e-5)
        assert clone.get_config() == model.get_config() | {"name": clone.name}
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_allclose(outputs(loaded, observations, actions, task_ids),
                                   expected, rtol=1e-5, atol=1e-5)


def test_one_sac_step_trains_mint_goal_networks_and_not_the_targets():
    actor, critic = make_pair("mint-goal")
    sac = MultiTaskSAC(actor, critic, T, OBS, ACT, seed=0)
    # The targets' Mint goal networks are non-trainable too (networks.py:
    # the Mint layers are built at construction).
    for target in sac.target_critics:
        assert not target.trainable_weights
    sac.compile(optimizer=sac_optimizer())
    observations, actions = make_inputs()
    next_observations, _ = make_inputs(seed=1)
    batch = {"observations": observations, "actions": actions,
             "rewards": np.random.default_rng(2).normal(size=N).astype("float32"),
             "next_observations": next_observations,
             "task_ids": (np.arange(N) % T).astype("int32")}
    mint = [w for w in sac.actor.weights if "matrix_network_output/kernel" in w.path]
    before = [ops.convert_to_numpy(w).copy() for w in mint]
    history = sac.fit(batch, batch_size=N, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["critic_loss"][-1])
    assert any(not np.allclose(ops.convert_to_numpy(w), b) for w, b in zip(mint, before))


def test_push_presets_have_about_equal_parameter_counts():
    """NOTE 11: Mint 3 x 200 with linear goal networks (NOTE 10); the
    6-layer baselines within 15% of it (push-v3: 39 floats, 4 actions; the
    actors: the critics differ from them by the same few inputs)."""
    table = np.zeros((200, 4), "float32")
    counts = {}
    for network in GOAL_NETWORKS:
        actor = MultiTaskActor(network, 200, 4, goal_table=table,
                               **{k: v for k, v in PRESETS[f"push/{network}"].items()
                                  if k != "network"})
        actor.build_for(39)
        counts[network] = actor.count_params()
        assert len(actor.hidden_units) == (3 if network == "mint-goal" else 6)
    dense = 39 * 200 + 200 + 2 * (200 * 200 + 200) + 200 * 8 + 8
    mint = 3 * ((4 + 1) * 200 * 200 + (4 + 1) * 200)  # T_phi and T_psi per layer
    assert counts["mint-goal"] == dense + mint == 693_008
    for network in ("sac-goal", "concat-all-fc"):
        assert abs(counts[network] / counts["mint-goal"] - 1) < 0.15, counts
    assert PRESETS["push/mint-goal"]["hidden_units"] == (200,) * 3


def test_bad_goal_options_raise():
    with pytest.raises(ValueError, match="'mint-goal' needs `goal_table`"):
        MultiTaskActor("mint-goal", T, ACT, hidden_units=HIDDEN)
    with pytest.raises(ValueError, match="'sac-goal' needs `goal_table`"):
        build_actor_critic("push/sac-goal", T, ACT)
    with pytest.raises(ValueError, match=r"shape \(num_tasks, goal_dim\) = \(3, goal_dim\); "
                                         r"got shape \(2, 4\)"):
        make_pair("mint-goal", goal_table=GOALS[:2])
    with pytest.raises(ValueError, match="finite floats"):
        make_pair("sac-goal", goal_table=np.full((T, 4), np.nan))
    with pytest.raises(ValueError, match="takes no option.*goal_table"):
        MultiTaskActor("mint", T, ACT, goal_table=GOALS)
    with pytest.raises(ValueError, match="`goal_network` must be a dict"):
        make_pair("mint-goal", goal_network=[16])
    with pytest.raises(ValueError, match="Unknown network 'film-goal'"):
        make_pair("film-goal")
