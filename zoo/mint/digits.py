"""An offline multi-task benchmark from the 8x8 digits of scikit-learn.

Not from the Mint paper (Yu et al., "Mint: Matrix-Interleaving for
Multi-Task Learning", ICLR 2020 submission): a small stand-in for its
supervised multi-task experiments (Section 6.1) that needs no download, so
the baselines and Mint can be compared anywhere, in seconds. The 1,797 8x8
grey-scale digit images ship inside scikit-learn
(`sklearn.datasets.load_digits`, pixel values 0..16).

Task t of T has

* its own fixed pixel permutation pi_t of the 64 pixels (as in permuted
  MNIST), so the tasks share no input alignment, and
* its own grouping g_t: {0..9} -> {0..C-1} of the 10 digits into C classes
  of 10 / C digits each (C = num_classes, a divisor of 10), so that the
  tasks disagree on the labels of the same digit.

An example of task t built from the image x of digit d is

    input  = (x / 16)[pi_t]   (64,) float32 in [0, 1]
    target = g_t(d)           int32 in [0, C)

Every image appears once in every task (with that task's permutation and
grouping). One random split of the images into train and test
(`test_fraction`) is shared by all tasks, so no task's test example is an
image that any task trains on. The training set (T x n_train examples) is
shuffled so that batches mix tasks; the test set is in task order.

Everything is drawn from `numpy.random.default_rng(seed)`: the image split,
then each task's permutation and grouping, then the training order.

NOTE 1: this benchmark is ours (the paper has none offline); the sizes
  (10 tasks, 5 classes, 30% test images) are defaults, not paper settings.
NOTE 2: the split of the images is random, not stratified by digit.
"""

import dataclasses

import numpy as np

from layers.task_inputs import positive_int

NUM_DIGITS = 10
NUM_PIXELS = 64


@dataclasses.dataclass(frozen=True)
class DigitTasks:
    """The offline digits benchmark (see the module docstring).

    Attributes:
        train: `(images, task_ids, targets)`: float32 `(N, 64)` in [0, 1],
            int32 `(N,)` in [0, num_tasks), int32 `(N,)` in [0, num_classes);
            shuffled across tasks.
        test: the same for the test images, in task order.
        permutations: int32 `(num_tasks, 64)`, task t's input is
            `pixels[permutations[t]]`.
        groupings: int32 `(num_tasks, 10)`, task t's target of digit d is
            `groupings[t, d]`.
        num_tasks: int, T.
        num_classes: int, C.
    """

    train: tuple
    test: tuple
    permutations: np.ndarray
    groupings: np.ndarray
    num_tasks: int
    num_classes: int


def _task_examples(pixels, digits, permutations, groupings):
    """All tasks' examples of the given images, in task order."""
    images = np.concatenate([pixels[:, permutation] for permutation in permutations])
    task_ids = np.repeat(np.arange(len(permutations), dtype=np.int32), len(digits))
    targets = np.concatenate([grouping[digits] for grouping in groupings])
    return images.astype(np.float32), task_ids, targets.astype(np.int32)


def make_digit_tasks(num_tasks=10, num_classes=5, test_fraction=0.3, seed=0):
    """The offline digits benchmark: T permuted, regrouped digit tasks.

    Args:
        num_tasks: Positive integer, T.
        num_classes: Integer >= 2 dividing 10, C: each task groups the 10
            digits into C classes of 10 / C digits.
        test_fraction: float in (0, 1), the share of the images held out
            for testing (the same images for every task).
        seed: Non-negative integer, seeds every random draw.

    Returns:
        A `DigitTasks`.

    Example:

    >>> tasks = make_digit_tasks(num_tasks=3, num_classes=2, seed=0)
    >>> images, task_ids, targets = tasks.train
    >>> images.shape, images.dtype, task_ids.dtype, targets.dtype
    ((3774, 64), dtype('float32'), dtype('int32'), dtype('int32'))
    >>> tasks.test[0].shape, tasks.permutations.shape, tasks.groupings.shape
    ((1617, 64), (3, 64), (3, 10))
    >>> np.bincount(tasks.groupings[0]).tolist()
    [5, 5]
    """
    num_tasks = positive_int(num_tasks, "num_tasks")
    num_classes = positive_int(num_classes, "num_classes", minimum=2)
    if NUM_DIGITS % num_classes:
        raise ValueError(
            f"`num_classes` must divide the {NUM_DIGITS} digits into equal "
            f"classes (2, 5 or 10); got {num_classes}."
        )
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise ValueError(
            f"`test_fraction` must be a number in (0, 1); got {test_fraction!r}."
        )
    seed = positive_int(seed, "seed", minimum=0)

    from zoo.extras import require

    require("sklearn", "data", "The offline digits benchmark")
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.data.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    num_images = len(labels)
    num_test = int(round(test_fraction * num_images))
    if not 0 < num_test < num_images:
        raise ValueError(
            f"`test_fraction` {test_fraction} leaves no train or no test "
            f"image of {num_images}."
        )

    rng = np.random.default_rng(seed)
    image_order = rng.permutation(num_images)
    test_images, train_images = image_order[:num_test], image_order[num_test:]
    permutations = np.stack(
        [rng.permutation(NUM_PIXELS) for _ in range(num_tasks)]
    ).astype(np.int32)
    # Digits at positions [c * D, (c + 1) * D) of a random order form class c.
    digits_per_class = NUM_DIGITS // num_classes
    groupings = np.empty((num_tasks, NUM_DIGITS), np.int32)
    for task in range(num_tasks):
        groupings[task, rng.permutation(NUM_DIGITS)] = (
            np.arange(NUM_DIGITS) // digits_per_class
        )

    train = _task_examples(
        pixels[train_images], labels[train_images], permutations, groupings
    )
    train_order = rng.permutation(len(train[0]))
    train = tuple(array[train_order] for array in train)
    test = _task_examples(
        pixels[test_images], labels[test_images], permutations, groupings
    )
    return DigitTasks(
        train=train,
        test=test,
        permutations=permutations,
        groupings=groupings,
        num_tasks=num_tasks,
        num_classes=num_classes,
    )
