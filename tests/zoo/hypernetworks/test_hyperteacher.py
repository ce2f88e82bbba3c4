"""Tests of the hyperteacher task generator."""

import numpy as np
import pytest

from zoo.hypernetworks.hyperteacher import Hyperteacher, module_components


def rows_set(rows):
    return {tuple(row) for row in np.asarray(rows).astype(int)}


def test_task_set_is_product_of_subsets():
    teacher = Hyperteacher(seed=0)
    # 4 one-hots + 6 pairs per layer, 2 generated layers.
    assert teacher.latent_dim == 8
    assert len(teacher.all_tasks) == 100
    assert len(rows_set(teacher.all_tasks)) == 100
    sizes = teacher.all_tasks.reshape(100, 2, 4).sum(-1)
    assert sizes.min() == 1 and sizes.max() == 2
    assert rows_set(teacher.train_tasks) | rows_set(teacher.ood_tasks) == rows_set(
        teacher.all_tasks
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compositional_support(seed):
    teacher = Hyperteacher(support="compositional", seed=seed)
    assert len(teacher.ood_tasks) == 25 and len(teacher.train_tasks) == 75
    # Every module of every layer is used by some training task.
    assert teacher.train_tasks.max(0).min() == 1
    assert not rows_set(teacher.train_tasks) & rows_set(teacher.ood_tasks)
    # The split depends on the seed.
    other = Hyperteacher(support="compositional", seed=seed + 10)
    assert rows_set(other.ood_tasks) != rows_set(teacher.ood_tasks)


def test_compositional_support_covers_modules_when_hard():
    # Keeping 5 of 100 tasks: about half of the random splits miss a module,
    # the generator must redraw until all 8 are covered.
    for seed in range(8):
        teacher = Hyperteacher(support="compositional", ood_fraction=0.95, seed=seed)
        assert len(teacher.train_tasks) == 5
        assert teacher.train_tasks.max(0).min() == 1


def test_non_compositional_support():
    teacher = Hyperteacher(support="non_compositional", seed=0)
    assert (teacher.train_tasks[:, -1] == 0).all()
    assert (teacher.ood_tasks[:, -1] == 1).all()
    # Every other module is still seen in training.
    assert teacher.train_tasks[:, :-1].max(0).min() == 1
    assert not rows_set(teacher.train_tasks) & rows_set(teacher.ood_tasks)


def test_connected_and_disconnected_supports():
    connected = Hyperteacher(num_modules=8, support="connected", seed=0)
    disconnected = Hyperteacher(num_modules=8, support="disconnected", seed=0)
    # Nodes: (layer, module) = entries of the flattened indicators.
    assert module_components(connected.train_tasks, 8) == [tuple(range(16))]
    assert module_components(disconnected.train_tasks, 8) == [
        (0, 1, 2, 3, 8, 9, 10, 11),
        (4, 5, 6, 7, 12, 13, 14, 15),
    ]
    # Connected: per layer only one-hots and pairs at cyclic distance 1 or 2.
    layered = connected.train_tasks.reshape(-1, 2, 8)
    for layer_mask in layered.reshape(-1, 8):
        active = np.flatnonzero(layer_mask)
        if len(active) == 2:
            assert min((active[1] - active[0]) % 8, (active[0] - active[1]) % 8) <= 2
    # Same OOD set for both, disjoint from both training sets.
    assert rows_set(connected.ood_tasks) == rows_set(disconnected.ood_tasks)
    for teacher in (connected, disconnected):
        assert not rows_set(teacher.train_tasks) & rows_set(teacher.ood_tasks)
    assert (len(connected.train_tasks), len(disconnected.train_tasks)) == (576, 104)


def test_module_components_detects_disconnection():
    tasks = np.array([[1, 1, 0, 0], [0, 0, 1, 1]])
    assert module_components(tasks, 4) == [(0, 1), (2, 3)]
    assert module_components(np.array([[1, 1, 0, 0], [0, 1, 1, 1]]), 4) == [
        (0, 1, 2, 3)
    ]


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_sample_shapes_and_targets(split):
    teacher = Hyperteacher(seed=0)
    batch = teacher.sample(split, 5, 6, 7, np.random.default_rng(0))
    assert batch.support_inputs.shape == (5, 6, 16)
    assert batch.support_targets.shape == (5, 6, 8)
    assert batch.query_inputs.shape == (5, 7, 16)
    assert batch.query_targets.shape == (5, 7, 8)
    assert batch.latents.shape == (5, 8)
    assert batch.support_mask is None and batch.query_mask is None
    for array in batch[:4] + (batch.latents,):
        assert array.dtype == np.float32
    assert np.abs(batch.support_inputs).max() <= 1.0
    for targets in (batch.support_targets, batch.query_targets):
        assert (targets >= 0).all()
        np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-5)
    pool = teacher.ood_tasks if split == "ood" else teacher.train_tasks
    assert rows_set(batch.latents) <= rows_set(pool)
    assert (teacher.loss, teacher.input_shape, teacher.output_dim) == ("kl", (16,), 8)


def test_sample_is_deterministic():
    teacher = Hyperteacher(seed=0)
    first = teacher.sample("train", 4, 8, 8, np.random.default_rng(7))
    second = Hyperteacher(seed=0).sample("train", 4, 8, 8, np.random.default_rng(7))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    third = teacher.sample("train", 4, 8, 8, np.random.default_rng(8))
    assert not np.array_equal(first.support_inputs, third.support_inputs)


def test_teacher_is_fixed_by_seed_not_support():
    inputs = np.random.default_rng(0).uniform(-1, 1, (1, 32, 16))
    latents = np.zeros((1, 8))
    latents[0, [0, 5]] = 1
    a = Hyperteacher(seed=0, support="compositional").targets(latents, inputs)
    b = Hyperteacher(seed=0, support="non_compositional").targets(latents, inputs)
    c = Hyperteacher(seed=1).targets(latents, inputs)
    np.testing.assert_allclose(a, b)
    assert np.abs(a - c).max() > 0.1


def test_different_tasks_give_different_targets():
    teacher = Hyperteacher(seed=0)
    inputs = np.random.default_rng(0).uniform(-1, 1, (64, 16))
    tasks = teacher.all_tasks[::3]  # 34 tasks, the same inputs for all
    targets = teacher.targets(tasks, inputs)
    labels = targets.argmax(-1)  # (34, 64)
    agreement = (labels[:, None] == labels[None]).mean(-1)
    off_diagonal = agreement[~np.eye(len(tasks), dtype=bool)]
    assert off_diagonal.max() < 0.95
    assert off_diagonal.mean() < 0.5
    # Targets are sharp-ish (temperature 0.1) and all classes occur.
    assert targets.max(-1).mean() > 0.5
    assert len(np.unique(labels)) == 8


def test_output_normalisation():
    teacher = Hyperteacher(seed=0)
    logits = teacher.teacher_logits(teacher.all_tasks[:5], teacher.normalization_inputs)
    np.testing.assert_allclose(logits.mean(1), 0.0, atol=1e-9)
    np.testing.assert_allclose(logits.std(1), 1.0, atol=1e-9)
    # Sampled targets use the same (cached) statistics.
    batch = teacher.sample("ood", 3, 4, 4, np.random.default_rng(0))
    np.testing.assert_allclose(
        teacher.targets(batch.latents, batch.query_inputs), batch.query_targets, atol=1e-5
    )


def test_layerwise_generators_decouple_layers():
    teacher = Hyperteacher(layerwise_generators=True, seed=0)
    latents = np.zeros((2, 8))
    latents[:, [0, 4]] = 1
    latents[1, 5] = 1  # changes only layer 2's modules
    kernels = teacher.generated_kernels(latents)
    np.testing.assert_allclose(kernels[0, 0], kernels[1, 0])
    assert not np.allclose(kernels[0, 1], kernels[1, 1])
    # The official shared generator couples them.
    shared = Hyperteacher(seed=0).generated_kernels(latents)
    assert not np.allclose(shared[0, 0], shared[1, 0])


def test_one_hidden_layer_generates_input_kernel():
    teacher = Hyperteacher(num_hidden_layers=1, seed=0)
    assert teacher.latent_dim == 4 and teacher.input_kernel is None
    assert teacher.generated_kernels(teacher.train_tasks[:2]).shape == (2, 1, 16, 32)
    batch = teacher.sample("train", 2, 3, 3, np.random.default_rng(0))
    assert batch.query_targets.shape == (2, 3, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_active=5), "max_active"),
        (dict(max_active=0), "max_active"),
        (dict(num_modules=0), "num_modules"),
        (dict(support="random"), "support"),
        (dict(ood_fraction=1.0), "ood_fraction"),
        (dict(temperature=0.0), "temperature"),
        (dict(support="connected"), "num_modules"),
        (dict(support="disconnected", num_modules=8, max_active=3), "max_active"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Hyperteacher(**kwargs)


@pytest.mark.parametrize(
    "args, match",
    [
        (("validation", 2, 2, 2), "split"),
        (("train", 0, 2, 2), "num_tasks"),
        (("train", 2, 0, 2), "support_shots"),
        (("train", 2, 2, 0), "query_shots"),
        (("train", 2, 2, 1.5), "query_shots"),
    ],
)
def test_bad_sample_arguments(args, match):
    teacher = Hyperteacher(seed=0)
    with pytest.raises(ValueError, match=match):
        teacher.sample(*args, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        teacher.sample("train", 2, 2, 2, rng="seed")
