"""The BabyAI policy with skills on every layer (zoo/babyai/networks.py),
its variants (variants.py) and presets (presets.py), on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

from zoo.babyai.envs import CPU_LEVELS, LEVELS, MissionTokenizer
from zoo.babyai.networks import BabyAIPolicy
from zoo.babyai.presets import from_preset, get_preset, save_to_preset
from zoo.babyai.variants import VARIANTS, expert_matrix, skill_arguments

TINY = dict(vocabulary_size=MissionTokenizer().vocabulary_size, max_value=11,
            image_embedding=8, width=8, film_blocks=1, instruction_units=8,
            memory_units=0, head_units=8, batch_norm=False)


def observations(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 11, (batch, 7, 7, 3)).astype("int32"),
            "mission": rng.integers(1, 28, (batch, 9)).astype("int32")}


def test_expert_allocation_reproduces_paper_table_2():
    # Paper Table 2, skills per level, written out from the paper.
    table = {"GoTo": {1, 2, 3, 4, 8}, "GoToObjMaze": {1, 8},
             "PickupLoc": {1, 2, 3, 6, 7}, "PutNextLocal": {1, 2, 3, 5},
             "GoToLocal": {1, 2, 3, 4}, "GoToRedBall": {1, 2, 3},
             "GoToRedBallGrey": {1, 2}, "GoToObj": {1}}
    matrix = expert_matrix(LEVELS, num_skills=9)
    assert matrix.shape == (8, 9)
    for row, level in zip(matrix, LEVELS):
        assert set(np.flatnonzero(row) + 1) == table[level]
    # The CPU levels' sets are nested: 4 skills.
    np.testing.assert_array_equal(expert_matrix(CPU_LEVELS), np.tril(np.ones((4, 4))))


def test_variant_allocations_are_what_they_say():
    policy = BabyAIPolicy(**skill_arguments("private", CPU_LEVELS), **TINY)
    policy((observations(), np.arange(4)))
    for layer in policy.skill_layers:
        weights = ops.convert_to_numpy(layer.allocation_weights(np.arange(4)))
        np.testing.assert_array_equal(weights[:, 0], np.eye(4))
    shared = BabyAIPolicy(**skill_arguments("shared", CPU_LEVELS), **TINY)
    assert shared.num_skills == 1 and shared.allocation == "shared"
    expert = BabyAIPolicy(**skill_arguments("expert", CPU_LEVELS), **TINY)
    expert((observations(), np.arange(4)))
    weights = ops.convert_to_numpy(expert.skill_layers[0].allocation_weights(np.arange(4)))
    np.testing.assert_allclose(weights[:, 0], np.tril(np.ones((4, 4)))
                               / np.arange(1, 5)[:, None])
    learned = skill_arguments("polytropon", CPU_LEVELS)
    assert learned["allocation"] == "learned" and learned["num_skills"] == 4
    assert learned["sft_sparsity"] == 0.9
    assert skill_arguments("polytropon-dense", CPU_LEVELS)["sft_sparsity"] == 0.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_layer_has_skills_and_tasks_differ(variant):
    policy = BabyAIPolicy(**skill_arguments(variant, CPU_LEVELS), **TINY)
    inputs = observations()
    logits, values = policy((inputs, np.zeros(4, "int32")))
    assert tuple(logits.shape) == (4, 7) and tuple(values.shape) == (4, 1)
    # Every layer with weights is a skill layer (convolutions included).
    plain = [layer for layer in policy._flatten_layers(include_self=False)
             if layer.weights and layer not in policy.skill_layers
             and not hasattr(layer, "einsum_dense")]
    assert plain == []
    # bag of words, 2 convs, words, 2 GRU maps, 2 FiLM convs + gamma + beta, 4 heads
    assert len(policy.skill_layers) == 14
    other, _ = policy((inputs, np.full(4, 3, "int32")))
    differs = not np.allclose(ops.convert_to_numpy(logits), ops.convert_to_numpy(other))
    assert differs == (variant != "shared")


def test_recurrent_policy_and_config_round_trip(tmp_path):
    policy = BabyAIPolicy(**skill_arguments("polytropon", CPU_LEVELS),
                          **dict(TINY, memory_units=6, batch_norm=True))
    assert policy.memory_size == 12
    memory = np.zeros((4, 12), "float32")
    logits, values, new_memory = policy((observations(), np.arange(4), memory))
    assert tuple(new_memory.shape) == (4, 12)
    clone = BabyAIPolicy.from_config(policy.get_config())
    clone((observations(), np.arange(4), memory))
    clone.set_weights(policy.get_weights())
    np.testing.assert_allclose(
        ops.convert_to_numpy(clone((observations(), np.arange(4), memory))[0]),
        ops.convert_to_numpy(logits), atol=1e-5)
    path = str(tmp_path / "policy.keras")
    policy.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded((observations(), np.arange(4), memory))[0]),
        ops.convert_to_numpy(logits), atol=1e-5)


def test_bad_inputs_give_clear_errors():
    policy = BabyAIPolicy(**skill_arguments("shared", CPU_LEVELS), **TINY)
    inputs = observations()
    with pytest.raises(ValueError, match=r"images of shape \(batch, 7, 7, 3\)"):
        policy(({"image": inputs["image"][:, :5], "mission": inputs["mission"]},
                np.zeros(4, "int32")))
    with pytest.raises(ValueError, match="dict with 'image' and 'mission'"):
        policy(({"image": inputs["image"]}, np.zeros(4, "int32")))
    with pytest.raises(ValueError, match="memory_units"):
        policy((inputs, np.zeros(4, "int32"), np.zeros((4, 2), "float32")))
    with pytest.raises(ValueError, match="out of range|num_tasks"):
        policy((inputs, np.full(4, 7, "int32")))
    with pytest.raises(ValueError, match="Unknown variant"):
        skill_arguments("modular", CPU_LEVELS)
    with pytest.raises(ValueError, match="too few"):
        expert_matrix(LEVELS, num_skills=4)


def test_presets_and_save_to_preset(tmp_path):
    assert get_preset("paper")["network"]["film_blocks"] == 2
    policy = from_preset("tiny", variant="polytropon", levels=["GoToObj", "GoToLocal"])
    assert policy.num_tasks == 2 and policy.num_skills == 4 and not policy.recurrent
    inputs = observations(2)
    expected = ops.convert_to_numpy(policy((inputs, np.array([0, 1])))[0])
    save_to_preset(policy, str(tmp_path / "preset"))
    loaded = from_preset(str(tmp_path / "preset"))
    assert loaded.variant == "polytropon" and loaded.levels == ["GoToObj", "GoToLocal"]
    np.testing.assert_allclose(ops.convert_to_numpy(loaded((inputs, np.array([0, 1])))[0]),
                               expected, atol=1e-5)
    with pytest.raises(ValueError, match="holds a 'polytropon' policy"):
        from_preset(str(tmp_path / "preset"), variant="shared")
    with pytest.raises(ValueError, match="Unknown preset"):
        from_preset("huge", variant="shared")
    with pytest.raises(ValueError, match="needs variant"):
        from_preset("tiny")
