"""Tests of the multi-task teacher-student setting and module alignment."""

import numpy as np
import pytest

from zoo.hypernetworks.hyperteacher import module_components
from zoo.hypernetworks.teacher_student import TeacherStudent, module_alignment


def rows_set(rows):
    return {tuple(row) for row in np.asarray(rows).astype(int)}


@pytest.mark.parametrize("distribution", ["discrete", "continuous"])
def test_supports(distribution):
    connected = TeacherStudent(distribution=distribution, support="connected")
    disconnected = TeacherStudent(distribution=distribution, support="disconnected")
    # Compositional: every module appears in training (Definition 3.1).
    for setting in (connected, disconnected):
        assert setting.train_tasks.max(0).min() == 1
        assert not rows_set(setting.train_tasks) & rows_set(setting.ood_tasks)
        assert len(setting.train_tasks) + len(setting.ood_tasks) == 2**6 - 1
    # Connected (Definition 3.2) vs two components, the halves.
    assert module_components(connected.train_tasks, 6) == [tuple(range(6))]
    assert module_components(disconnected.train_tasks, 6) == [(0, 1, 2), (3, 4, 5)]
    # The paper's Table A9 sizes: 12 discrete (one-hots + pairs), 6 continuous.
    expected = 12 if distribution == "discrete" else 6
    assert len(connected.train_tasks) == len(disconnected.train_tasks) == expected


def test_custom_support():
    masks = [[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [1, 0, 0, 0, 1, 1]]
    setting = TeacherStudent(support=masks)
    assert rows_set(setting.train_tasks) == rows_set(masks)
    assert len(setting.ood_tasks) == 60


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_sample_shapes_latents_and_targets(split):
    for distribution in ("discrete", "continuous"):
        setting = TeacherStudent(distribution=distribution, seed=0)
        batch = setting.sample(split, 6, 5, 9, np.random.default_rng(0))
        assert batch.support_inputs.shape == (6, 5, 16)
        assert batch.query_targets.shape == (6, 9, 4)
        assert batch.latents.shape == (6, 6)
        assert batch.support_targets.dtype == np.float32
        assert np.abs(batch.query_inputs).max() <= np.sqrt(3) + 1e-6
        masks = (batch.latents > 0).astype(int)
        pool = setting.ood_tasks if split == "ood" else setting.train_tasks
        assert rows_set(masks) <= rows_set(pool)
        active = batch.latents[batch.latents > 0]
        if distribution == "discrete":
            np.testing.assert_allclose(np.linalg.norm(batch.latents, axis=1), 1.0, rtol=1e-6)
        else:
            assert active.min() >= 0.5 and active.max() < 1.0
        # Targets are the teacher's outputs for the latents.
        np.testing.assert_allclose(
            setting.teacher_outputs(batch.latents, batch.query_inputs),
            batch.query_targets,
            rtol=1e-4,
            atol=1e-5,
        )
    assert setting.loss == "mse" and setting.latent_dim == 6


def test_sample_is_deterministic_and_tasks_differ():
    setting = TeacherStudent(distribution="continuous", seed=0)
    first = setting.sample("train", 3, 4, 4, np.random.default_rng(1))
    second = TeacherStudent(distribution="continuous", seed=0).sample(
        "train", 3, 4, 4, np.random.default_rng(1)
    )
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    inputs = np.random.default_rng(0).uniform(-1.7, 1.7, (32, 16))
    latents = setting.train_tasks / np.linalg.norm(setting.train_tasks, axis=1, keepdims=True)
    outputs = setting.teacher_outputs(latents, np.broadcast_to(inputs, (6, 32, 16)))
    gaps = np.abs(outputs[:, None] - outputs[None]).mean((-1, -2))
    assert gaps[~np.eye(6, dtype=bool)].min() > 1e-2


def test_alignment_of_teacher_and_mixings():
    setting = TeacherStudent(seed=0)
    teacher = setting.teacher_templates
    rng = np.random.default_rng(5)
    assert module_alignment(teacher, teacher) == pytest.approx(1.0)
    mixing = rng.normal(size=(6, 6))  # invertible a.s.
    assert module_alignment(mixing @ teacher, teacher) == pytest.approx(1.0)
    assert setting.module_alignment(mixing @ teacher) == pytest.approx(1.0)
    # With the latent map (student latent -> teacher latent), hidden-unit
    # permutation, positive rescaling and extra student units do not matter.
    student = (mixing @ teacher).reshape(6, 16, 16)
    student = student[:, :, rng.permutation(16)] * rng.uniform(0.5, 2.0, 16)
    student = np.concatenate([student, rng.normal(size=(6, 16, 8))], axis=2)
    student = student.reshape(6, -1)
    assert module_alignment(student, teacher, latent_map=mixing) == pytest.approx(1.0)
    # A wrong latent map or a sign flip is penalised.
    assert module_alignment(student, teacher, latent_map=rng.normal(size=(6, 6))) < 0.9
    assert module_alignment(-teacher, teacher, latent_map=np.eye(6)) < 0.5


def test_alignment_of_random_templates_is_low():
    teacher = TeacherStudent(seed=0).teacher_templates
    rng = np.random.default_rng(123)
    scores = [module_alignment(rng.normal(size=(6, 256)), teacher) for _ in range(5)]
    assert max(scores) < 0.5
    # A partially identified student (half the modules replaced) sits between.
    student = teacher.copy()
    student[3:] = rng.normal(size=(3, 256)) * teacher.std()
    partial = module_alignment(student, teacher)
    assert max(scores) < partial < 0.99


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_modules=0), "num_modules"),
        (dict(num_modules=5, support="disconnected"), "num_modules"),
        (dict(distribution="sparse"), "distribution"),
        (dict(support="random"), "support"),
        (dict(support=[[1, 0, 2, 0, 0, 0]]), "support"),
        (dict(support=[[1, 0, 0]]), "support"),
        (dict(support=[[0, 0, 0, 0, 0, 0]]), "support"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeacherStudent(**kwargs)


def test_bad_sample_and_alignment_arguments():
    setting = TeacherStudent(seed=0)
    with pytest.raises(ValueError, match="split"):
        setting.sample("eval", 2, 2, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="support_shots"):
        setting.sample("train", 2, 0, 2, np.random.default_rng(0))
    teacher = setting.teacher_templates
    with pytest.raises(ValueError, match="student_templates"):
        module_alignment(np.ones((6, 17)), teacher)
    with pytest.raises(ValueError, match="latent_map"):
        module_alignment(np.ones((6, 512)), teacher)
    with pytest.raises(ValueError, match="latent_map"):
        module_alignment(teacher, teacher, latent_map=np.eye(5))
