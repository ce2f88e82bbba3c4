"""Few-shot adaptation (training/few_shot.py): new rows at p = 1/2, what each
mode trains (and nothing else), no weight decay on the allocation, exact step
counts, the warm-up, learning a new task, raw-text KerasHub BART, bad input."""

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
    freeze_for_few_shot,
    skill_allocation_layers,
)

NUM_TASKS, NUM_SKILLS, FEATURES, RANK = 3, 4, 6, 2


def to_numpy(x):
    return np.array(ops.convert_to_numpy(x))


def skilled_model(allocation="learned", seed=0, units=2, compile_model=True, **options):
    """features -> Dense -> BatchNorm -> tanh (theta_0) -> SkillLoRADense,
    with the task ids as a second input."""
    keras.utils.set_random_seed(seed)
    features = keras.Input((FEATURES,))
    task_ids = keras.Input((), dtype="int32")
    hidden = keras.layers.Dense(8, name="base")(features)
    hidden = keras.layers.BatchNormalization(name="base_norm")(hidden)
    hidden = keras.layers.Activation("tanh", name="hidden")(hidden)
    num_skills = 1 if allocation == "shared" else NUM_SKILLS
    skills = SkillLoRADense(units, num_tasks=NUM_TASKS, num_skills=num_skills,
                            rank=RANK, allocation=allocation, name="skills", **options)
    model = keras.Model([features, task_ids], skills(hidden, task_ids))
    if compile_model:
        model.compile(loss="mse")
    return model


def randomize_skills(model, seed=1):
    """Nonzero skills and allocation (LoRA's B = 0 start hides the skills)."""
    rng = np.random.default_rng(seed)
    for layer in skill_allocation_layers(model):
        for variable in layer.trainable_weights:
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))


def examples(task, count=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, FEATURES)).astype("float32")
    return [x, np.full((count,), task, "int32")]


def snapshot(model):
    return {variable.path: to_numpy(variable) for variable in model.weights}


def allocation_path(model):
    return next(path for path in snapshot(model)
                if path.endswith(("skill_logits", "task_embeddings")))


def uniform_mix_outputs(model, x):
    """By hand: y = h W0 + b0 + (1/r) (h mean_s A_s^T) mean_s B_s."""
    hidden = to_numpy(keras.Model(model.inputs[0], model.get_layer("hidden").output)(x))
    layer = model.get_layer("skills")
    mean_a = to_numpy(layer.lora_a)[0].mean(0)  # (r, in)
    mean_b = to_numpy(layer.lora_b)[0].mean(0)  # (r, out)
    return (hidden @ to_numpy(layer.kernel) + to_numpy(layer.bias)
            + (hidden @ mean_a.T) @ mean_b / RANK)


@pytest.mark.parametrize("allocation,mode", [
    ("learned", "skills"), ("moe", "allocation"), ("hyper", "average"), ("fixed", "average")])
def test_new_tasks_start_as_the_uniform_mix_and_old_tasks_keep_their_outputs(
        allocation, mode):
    options = {"expert_matrix": np.eye(NUM_TASKS, NUM_SKILLS)} if allocation == "fixed" else {}
    model = skilled_model(allocation, **options)
    randomize_skills(model)
    x = examples(0)[0]
    before = [to_numpy(model([x, np.full(16, task, "int32")])) for task in range(NUM_TASKS)]

    new_ids = add_new_tasks(model, 2, mode=mode)

    np.testing.assert_array_equal(new_ids, [3, 4])
    assert model.get_layer("skills").num_tasks == 5
    for task in range(NUM_TASKS):
        np.testing.assert_array_equal(
            to_numpy(model([x, np.full(16, task, "int32")])), before[task])
    expected = uniform_mix_outputs(model, x)
    for task in new_ids:
        np.testing.assert_allclose(
            to_numpy(model([x, np.full(16, task, "int32")])), expected,
            rtol=1e-5, atol=1e-6)
    # The mix differs from the old tasks' (the check can fail).
    assert not np.allclose(expected, before[0], atol=1e-3)
    if allocation in ("learned", "moe"):
        logits = to_numpy(model.get_layer("skills").skill_logits)
        np.testing.assert_array_equal(logits[3:], 0.0)  # p = 1/2


@pytest.mark.parametrize("mode", FEW_SHOT_MODES)
def test_each_mode_trains_exactly_its_variables(mode):
    model = skilled_model()
    randomize_skills(model)
    (new_task,) = add_new_tasks(model, 1, mode=mode)
    expected_names = {"skills": ["skill_logits", "lora_a", "lora_b"],
                      "allocation": ["skill_logits"], "average": ["lora_a", "lora_b"]}
    assert [v.name for v in model.trainable_variables] == expected_names[mode]
    before = snapshot(model)

    x = examples(new_task)
    # "average" leaves `mode` out: few_shot_adapt takes add_new_tasks' mode.
    few_shot_adapt(model, x, np.ones((16, 2), "float32"), steps=6, batch_size=4,
                   mode=None if mode == "average" else mode,
                   optimizer=few_shot_optimizer(6, learning_rate=1e-2), verbose=0)

    after = snapshot(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    logits = allocation_path(model)
    # theta_0 never: the Dense, the BatchNorm (moving statistics included:
    # frozen layers run in inference mode) and the skill layer's W0, b0.
    assert not any(path.startswith(("base/", "base_norm/")) for path in changed), changed
    assert not changed & {"skills/kernel", "skills/bias"}
    np.testing.assert_array_equal(after[logits][:NUM_TASKS], before[logits][:NUM_TASKS])
    new_row_moved = not np.array_equal(after[logits][new_task], before[logits][new_task])
    skills_moved = {"skills/lora_a", "skills/lora_b"} <= changed
    assert new_row_moved == (mode in ("skills", "allocation"))
    assert skills_moved == (mode in ("skills", "average"))
    assert model.get_layer("skills").gumbel_noise == (mode != "average")


def test_average_mode_mixes_the_skills_uniformly_in_training_too():
    model = skilled_model()
    randomize_skills(model)
    (new_task,) = add_new_tasks(model, 1, mode="average")
    layer = model.get_layer("skills")
    weights = to_numpy(layer.allocation_weights(np.full(8, new_task), training=True))
    np.testing.assert_allclose(weights, 1.0 / NUM_SKILLS, rtol=1e-6)
    # With the noise on (the other modes) training draws other weights.
    layer.gumbel_noise = True
    noisy = to_numpy(layer.allocation_weights(np.full(8, new_task), training=True))
    assert not np.allclose(noisy, 1.0 / NUM_SKILLS, atol=1e-3)


@pytest.mark.parametrize("allocation", ["learned", "hyper"])
def test_weight_decay_and_adam_leave_rows_without_examples_in_place(allocation):
    """Old rows and a new task with no example get zero gradients: with the
    few-shot optimizer (strong decay on the skills) they stay exactly."""
    model = skilled_model(allocation)
    randomize_skills(model)
    first, second = add_new_tasks(model, 2, mode="skills")
    before = snapshot(model)
    optimizer = few_shot_optimizer(8, learning_rate=1e-2, weight_decay=0.5)
    few_shot_adapt(model, examples(first), np.ones((16, 2), "float32"), steps=8,
                   batch_size=4, optimizer=optimizer, verbose=0)
    after = snapshot(model)
    rows = allocation_path(model)
    untouched = list(range(NUM_TASKS)) + [second]
    np.testing.assert_array_equal(after[rows][untouched], before[rows][untouched])
    assert not np.array_equal(after[rows][first], before[rows][first])
    assert not np.array_equal(after["skills/lora_a"], before["skills/lora_a"])

    if allocation == "learned":  # the check has teeth: decay on Z moves the rows
        few_shot_adapt(model, examples(first), np.ones((16, 2), "float32"), steps=2,
                       batch_size=4, optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.5),
                       verbose=0)
        moved = to_numpy(model.get_layer("skills").skill_logits)[:NUM_TASKS]
        assert not np.allclose(moved, after[rows][:NUM_TASKS])


def test_adapt_runs_exactly_steps_iterations_with_the_default_schedule():
    model = skilled_model()
    (new_task,) = add_new_tasks(model, 1)

    class CountBatches(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            CountBatches.batches += 1

    x = examples(new_task, count=5)  # 5 examples, batches of 4: repeated
    history = few_shot_adapt(model, x, np.ones((5, 2), "float32"), steps=7,
                             batch_size=4, callbacks=[CountBatches()], verbose=0)
    assert int(to_numpy(model.optimizer.iterations)) == 7
    assert CountBatches.batches == 7
    assert len(history.history["loss"]) == 1
    schedules = [sub._learning_rate for sub in model.optimizer.optimizers]
    assert [(s.total_steps, s.warmup_steps) for s in schedules] == [(7, 1), (7, 1)]
    assert sorted(s.peak_learning_rate for s in schedules) == [1e-3, 0.1]
    assert [int(to_numpy(sub.iterations)) for sub in model.optimizer.optimizers] == [7, 7]


def test_the_few_shot_optimizer_warms_up_over_a_tenth_then_decays():
    optimizer = few_shot_optimizer(total_steps=100, learning_rate=1e-3,
                                   allocation_learning_rate=0.1)
    allocation, skills = sorted(optimizer.optimizers,
                                key=lambda sub: -sub._learning_rate.peak_learning_rate)
    assert (skills.weight_decay, allocation.weight_decay) == (1e-2, 0.0)
    steps = (0, 5, 10, 55, 100)
    np.testing.assert_allclose(
        [float(to_numpy(skills._learning_rate(k))) for k in steps],
        [0, 5e-4, 1e-3, 5e-4, 0], atol=1e-9)
    np.testing.assert_allclose(
        [float(to_numpy(allocation._learning_rate(k))) for k in steps],
        [0, 0.05, 0.1, 0.05, 0], atol=1e-7)
    # The allocation group holds the logits and "hyper" embeddings alone.
    route = optimizer._optimizer_map
    assert route["skills/skill_logits"] is allocation
    assert route["a/b/task_embeddings"] is allocation
    assert route["skills/lora_a"] is skills and route["skills/sft_deltas"] is skills


def test_adapting_to_a_new_task_learns_it():
    """Tasks are sums of two of four directions (y = x . (d_i + d_j)); the new
    task is an unseen pair. Can fail: the new task's held-out loss must fall
    below half of its loss at the uniform start."""
    model = skilled_model(gumbel_noise=False, units=1)
    directions = np.random.default_rng(5).normal(size=(NUM_SKILLS, FEATURES))
    pairs = {0: (0, 1), 1: (1, 2), 2: (2, 3), 3: (0, 3)}

    def data(task, count, seed):
        x, ids = examples(task, count, seed)
        return [x, ids], (x @ directions[list(pairs[task])].sum(0))[:, None]

    train = [data(task, 128, task) for task in range(NUM_TASKS)]
    x = [np.concatenate([d[0][0] for d in train]), np.concatenate([d[0][1] for d in train])]
    y = np.concatenate([d[1] for d in train]).astype("float32")
    model.fit(x, y, batch_size=32, epochs=20, verbose=0)

    (new_task,) = add_new_tasks(model, 1)
    shots, target = data(new_task, 16, 10)
    test_x, test_y = data(new_task, 128, 11)
    loss_before = float(model.evaluate(test_x, test_y, verbose=0))
    few_shot_adapt(model, shots, target, steps=150, batch_size=8,
                   optimizer=few_shot_optimizer(150, learning_rate=3e-2), verbose=0)
    loss_after = float(model.evaluate(test_x, test_y, verbose=0))
    assert loss_after < loss_before / 2, (loss_before, loss_after)


def test_skill_layers_inside_a_frozen_submodel_still_train():
    features = keras.Input((FEATURES,))
    task_ids = keras.Input((), dtype="int32")
    hidden = keras.layers.Dense(8, name="inner_base")(features)
    skills = SkillLoRADense(2, num_tasks=2, num_skills=2, rank=1, trainable_base=True)
    inner = keras.Model([features, task_ids], skills(hidden, task_ids), name="inner")
    inner.trainable = False
    outer_features = keras.Input((FEATURES,))
    outer_ids = keras.Input((), dtype="int32")
    head = keras.layers.Dense(1, name="head")
    outer = keras.Model([outer_features, outer_ids],
                        head(inner([outer_features, outer_ids])))
    assert skill_allocation_layers(outer) == [skills]
    trainable = freeze_for_few_shot(outer, "skills")
    assert [id(v) for v in trainable] == [
        id(skills.skill_logits), id(skills.lora_a), id(skills.lora_b)]
    assert not skills.kernel.trainable  # W0 frozen despite trainable_base=True
    assert not head.trainable and not inner.get_layer("inner_base").trainable


def test_bad_inputs_raise_clear_errors():
    model = skilled_model()
    with pytest.raises(ValueError, match="mode must be one of"):
        add_new_tasks(model, 1, mode="everything")
    with pytest.raises(ValueError, match="num_new_tasks must be a positive integer; got 0"):
        add_new_tasks(model, 0)
    with pytest.raises(ValueError, match="expert_rows is only used with allocation='fixed'"):
        add_new_tasks(model, 1, expert_rows=np.ones((1, NUM_SKILLS)))
    assert model.get_layer("skills").num_tasks == NUM_TASKS  # nothing grew
    with pytest.raises(ValueError, match="steps must be a positive integer; got 0"):
        few_shot_adapt(model, examples(0), np.ones((16, 2)), steps=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        few_shot_adapt(model, examples(0), np.ones((16, 2)), batch_size=-1)
    with pytest.raises(ValueError, match="mode must be one of"):
        few_shot_adapt(model, examples(0), np.ones((16, 2)), mode="all")
    with pytest.raises(ValueError, match=r"sets \['epochs'\] itself"):
        few_shot_adapt(model, examples(0), np.ones((16, 2)), epochs=3)
    with pytest.raises(ValueError, match=r"row counts \[15, 16\]"):
        few_shot_adapt(model, examples(0), np.ones((15, 2)), steps=1)

    private = keras.Model(*_private_graph())
    with pytest.raises(ValueError, match="'private'.*allocation='shared'"):
        add_new_tasks(private, 1)
    with pytest.raises(ValueError, match="no skill layer"):
        add_new_tasks(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), 1)
    with pytest.raises(ValueError, match="mode='allocation' needs a learnable allocation"):
        add_new_tasks(skilled_model("shared"), 1, mode="allocation")
    fixed = skilled_model("fixed", expert_matrix=np.eye(NUM_TASKS, NUM_SKILLS))
    with pytest.raises(ValueError, match="needs expert_rows"):
        add_new_tasks(fixed, 1)
    with pytest.raises(ValueError, match=r"shape \(1, 4\); got shape \(1, 3\)"):
        add_new_tasks(fixed, 1, expert_rows=np.ones((1, 3)))
    with pytest.raises(ValueError, match="mode='average' gives the new tasks the uniform mix"):
        add_new_tasks(fixed, 1, mode="average", expert_rows=np.ones((1, NUM_SKILLS)))

    (new_task,) = add_new_tasks(model, 1, mode="average")
    with pytest.raises(ValueError,
                       match="mode='skills' but the model was set up for mode 'average'"):
        few_shot_adapt(model, examples(new_task), np.ones((16, 2)), steps=1, mode="skills")
    uncompiled = skilled_model(compile_model=False)
    with pytest.raises(ValueError, match="needs a loss"):
        few_shot_adapt(uncompiled, examples(0), np.ones((16, 2)), steps=1)
    with pytest.raises(ValueError, match="warmup_fraction must be in"):
        few_shot_optimizer(10, warmup_fraction=1.5)
    with pytest.raises(ValueError, match="allocation_learning_rate must be a positive"):
        few_shot_optimizer(10, allocation_learning_rate=None)


def _private_graph():
    features = keras.Input((FEATURES,))
    task_ids = keras.Input((), dtype="int32")
    layer = SkillLoRADense(1, num_tasks=2, num_skills=2, rank=1, allocation="private")
    return [features, task_ids], layer(features, task_ids)


def test_bart_adapts_a_new_task_from_raw_text(tiny_preset):  # noqa: F811
    from zoo.polytropon.bart import SkillBartSeq2SeqLM

    # Value projections only, no relaxation noise: each halves JAX's
    # compile time (the other targets and the noise are test_bart.py's).
    model = SkillBartSeq2SeqLM.from_preset(
        tiny_preset, num_tasks=2, num_skills=2, rank=2, targets=("value",),
        gumbel_noise=False, encoder_sequence_length=8, decoder_sequence_length=8)
    model.compile(sampler="greedy")
    base = [to_numpy(v) for v in model.backbone.weights]
    (new_task,) = add_new_tasks(model, 1)
    assert new_task == 2 and model.num_tasks == 3
    rows_before = [to_numpy(v) for v in model.allocation_variables]
    skills_before = [to_numpy(v) for v in model.skill_variables]

    raw = {"encoder_text": ["the cat sat", "a dog ran", "big sun"],
           "decoder_text": ["on a mat", "far away", "hot"], "task_ids": [new_task] * 3}
    few_shot_adapt(model, raw, steps=3, batch_size=2, verbose=0)

    assert int(to_numpy(model.optimizer.iterations)) == 3
    assert model.preprocessor is not None  # put back after fit
    assert model.sampler is not None and type(model.sampler).__name__ == "GreedySampler"
    for before, variable in zip(base, model.backbone.weights):
        np.testing.assert_array_equal(to_numpy(variable), before, err_msg=variable.path)
    for before, variable in zip(rows_before, model.allocation_variables):
        after = to_numpy(variable)
        np.testing.assert_array_equal(after[:new_task], before[:new_task])
        assert not np.array_equal(after[new_task], before[new_task])
    assert all(not np.array_equal(to_numpy(v), before)
               for before, v in zip(skills_before, model.skill_variables)
               if v.name == "lora_b")
    output = model.generate({"encoder_text": ["the cat sat"], "task_ids": [new_task]})
    assert isinstance(output[0] if isinstance(output, list) else output, str)
