"""Tests of the offline digits benchmark (zoo/mint/digits.py)."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402

from zoo.mint.digits import DigitTasks, make_digit_tasks  # noqa: E402

DIGITS = load_digits()
PIXELS = DIGITS.data / 16.0


def image_keys(images, permutation):
    """Each example's original (unpermuted) image, as hashable bytes."""
    original = np.empty_like(images)
    original[:, permutation] = images
    return [row.tobytes() for row in original]


@pytest.mark.parametrize("num_classes", [2, 5, 10])
def test_shapes_dtypes_and_ranges(num_classes):
    tasks = make_digit_tasks(num_tasks=4, num_classes=num_classes, seed=0)
    assert isinstance(tasks, DigitTasks)
    assert (tasks.num_tasks, tasks.num_classes) == (4, num_classes)
    num_test = round(0.3 * len(PIXELS))
    for (images, task_ids, targets), per_task in (
        (tasks.train, len(PIXELS) - num_test),
        (tasks.test, num_test),
    ):
        assert images.shape == (4 * per_task, 64) and images.dtype == np.float32
        assert task_ids.shape == targets.shape == (4 * per_task,)
        assert task_ids.dtype == np.int32 and targets.dtype == np.int32
        assert images.min() >= 0 and images.max() <= 1
        assert np.bincount(task_ids).tolist() == [per_task] * 4
        assert targets.min() == 0 and targets.max() == num_classes - 1
    assert tasks.permutations.shape == (4, 64)
    assert tasks.groupings.shape == (4, 10)
    for grouping in tasks.groupings:
        # Equal class sizes: 10 / C digits per class.
        assert np.bincount(grouping, minlength=num_classes).tolist() == [
            10 // num_classes
        ] * num_classes


def test_examples_follow_permutation_and_grouping():
    tasks = make_digit_tasks(num_tasks=3, num_classes=5, seed=1)
    # NumPy reference: look every original image up in sklearn's digits.
    digit_of_image = {}
    for row, digit in zip(PIXELS.astype(np.float32), DIGITS.target):
        digit_of_image.setdefault(row.tobytes(), set()).add(int(digit))
    for images, task_ids, targets in (tasks.train, tasks.test):
        for task in range(3):
            rows = task_ids == task
            keys = image_keys(images[rows], tasks.permutations[task])
            for key, target in zip(keys, targets[rows]):
                digits = digit_of_image[key]  # KeyError: not a permuted image
                assert {tasks.groupings[task][d] for d in digits} == {target}
    # Every permutation is one, and they differ across tasks.
    for permutation in tasks.permutations:
        assert sorted(permutation) == list(range(64))
    assert len({p.tobytes() for p in tasks.permutations}) == 3


def test_same_images_in_every_task_and_disjoint_split():
    tasks = make_digit_tasks(num_tasks=3, num_classes=2, seed=2)
    splits = {}
    for name, (images, task_ids, _) in (("train", tasks.train), ("test", tasks.test)):
        per_task = [
            sorted(image_keys(images[task_ids == t], tasks.permutations[t]))
            for t in range(3)
        ]
        assert per_task[0] == per_task[1] == per_task[2]
        splits[name] = per_task[0]
    # Every sklearn image (all 1,797 are distinct) is in exactly one split.
    all_images = {row.tobytes() for row in PIXELS.astype(np.float32)}
    assert len(all_images) == len(PIXELS)
    assert not set(splits["train"]) & set(splits["test"])
    assert set(splits["train"]) | set(splits["test"]) == all_images
    # The training set mixes tasks: not in task order.
    train_tasks = tasks.train[1]
    assert (np.diff(train_tasks) != 0).sum() > 100


def test_seeding():
    first = make_digit_tasks(num_tasks=2, seed=5)
    again = make_digit_tasks(num_tasks=2, seed=5)
    other = make_digit_tasks(num_tasks=2, seed=6)
    for a, b in zip(first.train + first.test, again.train + again.test):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.permutations, again.permutations)
    np.testing.assert_array_equal(first.groupings, again.groupings)
    assert not np.array_equal(first.permutations, other.permutations)
    assert not np.array_equal(first.train[0], other.train[0])
    assert not np.array_equal(first.groupings, other.groupings)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 0}, "num_tasks"),
        ({"num_tasks": 2.5}, "num_tasks"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 3}, "divide"),
        ({"num_classes": 4}, "divide"),
        ({"test_fraction": 0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": "0.3"}, "test_fraction"),
        ({"test_fraction": 1e-5}, "no train or no test"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_digit_tasks(**kwargs)
