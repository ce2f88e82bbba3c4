"""Few-shot adaptation (training/few_shot.py): new rows at p = 0.5, what
each mode trains, exact step counts, learning on a new task, KerasHub BART."""

import keras
import numpy as np
import pytest
from keras import ops

from layers import SkillLoRADense
from tests.zoo.polytropon.tiny_bart import tiny_preset  # noqa: F401 (fixture)
from training.few_shot import (
    FEW_SHOT_MODES,
    add_new_tasks,
    few_shot_adapt,
    few_shot_optimizer,
    skill_allocation_layers,
)

NUM_TASKS, NUM_SKILLS, FEATURES = 3, 4, 6


def to_numpy(x):
    return np.array(ops.convert_to_numpy(x))


def skilled_model(allocation="learned", seed=0, **options):
    """features -> Dense (the base) -> SkillLoRADense, task ids as an input."""
    keras.utils.set_random_seed(seed)
    features = keras.Input((FEATURES,))
    task_ids = keras.Input((), dtype="int32")
    hidden = keras.layers.Dense(8, activation="tanh", name="base")(features)
    num_skills = 1 if allocation == "shared" else NUM_SKILLS
    skills = SkillLoRADense(1, num_tasks=NUM_TASKS, num_skills=num_skills, rank=2,
                            allocation=allocation, name="skills", **options)
    model = keras.Model([features, task_ids], skills(hidden, task_ids))
    model.compile(loss="mse")
    return model


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for layer in skill_allocation_layers(model):
        for variable in layer.trainable_weights:
            variable.assign(rng.normal(0.0, 1.0, variable.shape).astype("float32"))


def examples(task, count=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, FEATURES)).astype("float32")
    return [x, np.full((count,), task, "int32")]


def snapshot(model):
    return {variable.path: to_numpy(variable) for variable in model.weights}


def test_new_rows_start_at_one_half_and_old_tasks_keep_their_outputs():
    model = skilled_model()
    randomize(model)
    x = examples(0)[0]
    before = [to_numpy(model([x, np.full(16, task, "int32")]))
              for task in range(NUM_TASKS)]
    new_ids = add_new_tasks(model, 2)
    np.testing.assert_array_equal(new_ids, [3, 4])
    layer = model.get_layer("skills")
    assert layer.num_tasks == 5
    np.testing.assert_array_equal(layer.allocation_probabilities()[3:], 0.5)
    for task in range(NUM_TASKS):
        np.testing.assert_array_equal(
            to_numpy(model([x, np.full(16, task, "int32")])), before[task])
    # p = 0.5 for every skill: the new task mixes the skills uniformly.
    weights = to_numpy(layer.allocation_weights(np.array([3, 4]), training=False))
    np.testing.assert_allclose(weights, 1.0 / NUM_SKILLS, rtol=1e-5)


@pytest.mark.parametrize("mode", FEW_SHOT_MODES)
def test_each_mode_trains_exactly_its_variables(mode):
    model = skilled_model()
    randomize(model)
    (new_task,) = add_new_tasks(model, 1, mode=mode)
    before = snapshot(model)
    x = examples(new_task)
    steps = 6
    few_shot_adapt(model, x, np.ones((16, 1), "float32"), steps=steps, batch_size=4,
                   optimizer=keras.optimizers.Adam(0.05), verbose=0)
    assert int(to_numpy(model.optimizer.iterations)) == steps
    after = snapshot(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    logits = next(path for path in before if path.endswith("skill_logits"))

    assert not any(path.startswith("base/") for path in changed)  # theta_0
    assert "skills/kernel" not in changed and "skills/bias" not in changed
    np.testing.assert_array_equal(after[logits][:NUM_TASKS],  # old rows
                                  before[logits][:NUM_TASKS])
    new_row_moved = not np.array_equal(after[logits][new_task], before[logits][new_task])
    skills_moved = {"skills/lora_a", "skills/lora_b"} <= changed
    assert new_row_moved == (mode in ("skills", "allocation"))
    assert skills_moved == (mode in ("skills", "average"))
    assert model.get_layer("skills").gumbel_noise == (mode != "average")


def test_average_mode_mixes_the_skills_uniformly_in_training_too():
    model = skilled_model()
    randomize(model)
    (new_task,) = add_new_tasks(model, 1, mode="average")
    layer = model.get_layer("skills")
    weights = to_numpy(layer.allocation_weights(np.full(8, new_task), training=True))
    np.testing.assert_allclose(weights, 1.0 / NUM_SKILLS, rtol=1e-5)


def test_the_default_optimizer_warms_up_over_a_tenth_of_the_steps():
    optimizer = few_shot_optimizer(total_steps=100, learning_rate=1e-3,
                                   allocation_learning_rate=0.1)
    # Told apart by their peak rates (the order of `optimizers` is Keras's).
    allocation, skills = sorted(optimizer.optimizers,
                                key=lambda sub: -sub._learning_rate.peak_learning_rate)
    rates = {}
    for name, sub in (("skills", skills), ("allocation", allocation)):
        schedule = sub._learning_rate
        rates[name] = [float(to_numpy(schedule(step))) for step in (0, 5, 10, 55, 100)]
    assert (skills.weight_decay, allocation.weight_decay) == (1e-2, 0.0)
    np.testing.assert_allclose(rates["skills"], [0, 5e-4, 1e-3, 5e-4, 0], atol=1e-9)
    np.testing.assert_allclose(rates["allocation"], [0, 0.05, 0.1, 0.05, 0], atol=1e-7)


def test_adapting_to_a_new_task_learns_it():
    """Tasks are sums of two of four skill directions; the new task is an
    unseen pair. Can fail: the test loss must fall to under a half (measured:
    4.5-5.3 -> 1.1-1.5 on the three backends)."""
    model = skilled_model(gumbel_noise=False)
    directions = np.random.default_rng(5).normal(size=(NUM_SKILLS, FEATURES))
    pairs = {0: (0, 1), 1: (1, 2), 2: (2, 3), 3: (0, 3)}

    def data(task, count, seed):
        x, ids = examples(task, count, seed)
        target = x @ directions[list(pairs[task])].sum(0)
        return [x, ids], target[:, None].astype("float32")

    train = [data(task, 128, task) for task in range(NUM_TASKS)]
    x = [np.concatenate([d[0][0] for d in train]), np.concatenate([d[0][1] for d in train])]
    y = np.concatenate([d[1] for d in train])
    model.fit(x, y, batch_size=32, epochs=30, verbose=0)

    (new_task,) = add_new_tasks(model, 1)
    shots, target = data(new_task, 16, 10)
    test_x, test_y = data(new_task, 128, 11)
    loss_before = float(model.evaluate(test_x, test_y, verbose=0))
    few_shot_adapt(model, shots, target, steps=200, batch_size=8,
                   optimizer=few_shot_optimizer(200, learning_rate=3e-2), verbose=0)
    loss_after = float(model.evaluate(test_x, test_y, verbose=0))
    assert loss_after < loss_before / 2, (loss_before, loss_after)


def test_bad_inputs_raise_clear_errors():
    model = skilled_model()
    with pytest.raises(ValueError, match="mode must be one of"):
        add_new_tasks(model, 1, mode="everything")
    with pytest.raises(ValueError, match="num_new_tasks must be a positive integer"):
        add_new_tasks(model, 0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        few_shot_adapt(model, examples(0), np.ones((16, 1)), steps=0)
    private = keras.Model(*_private_graph())
    with pytest.raises(ValueError, match="'private'.*shared"):
        add_new_tasks(private, 1)
    with pytest.raises(ValueError, match="no skill layer"):
        add_new_tasks(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), 1)
    fixed = skilled_model("fixed", expert_matrix=np.eye(NUM_TASKS, NUM_SKILLS))
    with pytest.raises(ValueError, match="mode='average' needs"):
        add_new_tasks(fixed, 1, mode="average", expert_rows=np.ones((1, NUM_SKILLS)))


def _private_graph():
    features = keras.Input((FEATURES,))
    task_ids = keras.Input((), dtype="int32")
    layer = SkillLoRADense(1, num_tasks=2, num_skills=2, rank=1, allocation="private")
    return [features, task_ids], layer(features, task_ids)


def test_bart_adapts_a_new_task_from_raw_text(tiny_preset):  # noqa: F811
    from zoo.polytropon.bart import SkillBartSeq2SeqLM

    model = SkillBartSeq2SeqLM.from_preset(
        tiny_preset, num_tasks=2, num_skills=2, rank=2, gumbel_noise=False,
        encoder_sequence_length=8, decoder_sequence_length=8)
    base = [to_numpy(v) for v in model.backbone.weights]
    (new_task,) = add_new_tasks(model, 1)
    assert new_task == 2
    raw = {"encoder_text": ["the cat sat", "a dog ran"],
           "decoder_text": ["on a mat", "far away"], "task_ids": [new_task] * 2}
    few_shot_adapt(model, raw, steps=3, batch_size=2, verbose=0)
    assert int(to_numpy(model.optimizer.iterations)) == 3
    assert model.preprocessor is not None  # restored after fit
    for before, variable in zip(base, model.backbone.weights):
        np.testing.assert_array_equal(to_numpy(variable), before)
    moved = [not np.allclose(to_numpy(v)[new_task], 0.0, atol=1e-6)
             for v in model.allocation_variables]
    assert all(moved)
    output = model.generate({"encoder_text": ["the cat sat"], "task_ids": [new_task]})
    assert isinstance(output[0] if isinstance(output, list) else output, str)
