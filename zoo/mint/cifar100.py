"""CIFAR-100 as 20 five-way tasks (CIFAR-MTL), the Mint paper's benchmark.

Paper: T. Yu, S. Kumar, E. Mitchell, A. Abbas, C. Finn, S. Levine, "Mint:
Matrix-Interleaving for Multi-Task Learning" (ICLR 2020 submission),
Section 6.1, Table 1, which takes the task split of C. Rosenbaum, T. Klinger,
M. Riemer, "Routing Networks: Adaptive Selection of Non-linear Functions for
Multi-Task Learning", ICLR 2018 (arXiv 2017): each of CIFAR-100's 20 coarse
classes (superclasses) is a task, the classification of an image into the 5
fine classes of that superclass.

The mapping. CIFAR-100 fixes which 5 of its 100 fine labels f make up each
coarse label c = FINE_TO_COARSE[f] (the official superclass listing; the
dataset's own `coarse_label` agrees with it, `check_coarse_labels` verifies
that on the real data). With TASK_FINE_LABELS[t] = the 5 fine labels of
coarse class t in increasing order,

    task_id(f) = FINE_TO_COARSE[f]                       in [0, 20)
    target(f)  = index of f in TASK_FINE_LABELS[task_id(f)]  in [0, 5)
    TASK_FINE_LABELS[task_id(f)][target(f)] = f          (a bijection)

so both are computed from the fine label alone: the pipeline never reads
the dataset's `coarse_label` (NOTE 1). Every image belongs to exactly one
task: the 50,000 training images give 2,500 per task, the 10,000 test images
500 per task, and a batch mixes tasks.

The pipeline (`load_cifar100_tasks`): `tfds.load("cifar100")` -> (image,
fine label) pairs, cached in memory -> shuffle (seeded, buffer 10,000;
training only when `shuffle`) -> image uint8 / 255 -> optional augmentation
(NOTE 3) -> per-channel standardisation `(x - MEAN) / STD` (NOTE 2) -> task
id and target from the fine label -> batch -> prefetch. Elements are
`((images float32 (b, 32, 32, 3), task_ids int32 (b,)), targets int32 (b,))`,
which `keras.Model.fit` / `evaluate` take on every backend (Keras reads a
`tf.data.Dataset` under JAX and torch too).

Getting the data. The loader never downloads unless `download=True`. On a
machine with internet:

    pip install 'modular-zoo[data]'
    tfds build cifar100 --data_dir DIR

(or `load_cifar100_tasks(download=True, data_dir=DIR)` once), then copy DIR
where needed and pass `data_dir=DIR` (`--data-dir DIR` on the command line).
Without `data_dir`, tfds's default is used (`$TFDS_DATA_DIR`, else
`~/tensorflow_datasets`). Missing data raises `CIFAR100NotFoundError` (a
`FileNotFoundError`) saying this.

NOTE 1: task ids and targets come from the fixed FINE_TO_COARSE table, not
  from the dataset's `coarse_label` field: the two agree on the real data
  (`check_coarse_labels`), and the table also works on tfds's mock data,
  whose `label` and `coarse_label` are drawn independently.
NOTE 2 (the paper leaves it open): images are scaled to [0, 1] and
  standardised per channel with the CIFAR-100 training-set pixel mean and
  standard deviation, MEAN = (0.5071, 0.4865, 0.4409),
  STD = (0.2673, 0.2564, 0.2762) (over all 50,000 x 32 x 32 training
  pixels, as commonly used).
NOTE 3 (the paper leaves it open): no augmentation by default. With
  `augment=True`: a random horizontal flip and a random 32 x 32 crop of the
  image zero-padded by 4 pixels (padding in [0, 1] pixel space, i.e. black,
  before the standardisation, as `RandomCrop(32, padding=4)` followed by
  `Normalize` does). Random draws are stateless functions of `seed`, new in
  every epoch (`tf.data.Dataset.random(..., rerandomize_each_iteration=True)`).
NOTE 4: under the JAX and torch backends TensorFlow only feeds the data, so
  the loader hides the GPUs from TensorFlow (when TensorFlow has not started
  yet) to keep it from reserving the accelerator memory the model needs.
"""

import os

import numpy as np

from layers.task_inputs import positive_int
from training.backend import keep_tensorflow_off_accelerators
from zoo.extras import MissingDataError

NUM_TASKS = 20
NUM_CLASSES = 5
NUM_FINE_LABELS = 100

#: CIFAR-100's fixed fine -> coarse (superclass) table: entry f is the coarse
#: label of fine label f (fine and coarse labels in the alphabetical order of
#: their names, as in the dataset's label files).
FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip

#: The 5 fine labels of each coarse label (task), in increasing order; the
#: target of fine label f is its position in TASK_FINE_LABELS[task].
TASK_FINE_LABELS = tuple(
    tuple(fine for fine in range(NUM_FINE_LABELS) if FINE_TO_COARSE[fine] == task)
    for task in range(NUM_TASKS)
)

#: The 5-way target of each fine label within its task.
FINE_TO_TARGET = tuple(
    TASK_FINE_LABELS[FINE_TO_COARSE[fine]].index(fine)
    for fine in range(NUM_FINE_LABELS)
)

#: Per-channel pixel mean and standard deviation of the CIFAR-100 training
#: images scaled to [0, 1] (NOTE 2).
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)

IMAGE_SHAPE = (32, 32, 3)
SHUFFLE_BUFFER = 10_000
CROP_PADDING = 4


class CIFAR100NotFoundError(MissingDataError):
    """CIFAR-100 is not in the data directory and downloading is off (the
    runner prints it as one line, exit status 2)."""


def split_fine_labels(fine_labels):
    """The task id and 5-way target of each CIFAR-100 fine label.

    Args:
        fine_labels: Integer array (any shape) of fine labels in [0, 100).

    Returns:
        `(task_ids, targets)`: int32 arrays of the same shape, task ids in
        [0, 20) (the coarse labels) and targets in [0, 5) (the position of
        the fine label among its task's TASK_FINE_LABELS).

    Example:

    >>> task_ids, targets = split_fine_labels([0, 1, 4, 57, 99])
    >>> task_ids.tolist(), targets.tolist()
    ([4, 1, 0, 4, 13], [0, 0, 0, 3, 4])
    >>> [TASK_FINE_LABELS[t][y] for t, y in zip(task_ids, targets)]
    [0, 1, 4, 57, 99]
    """
    fine_labels = np.asarray(fine_labels)
    if fine_labels.dtype.kind not in "iu":
        raise ValueError(
            f"`fine_labels` must be integers; got dtype {fine_labels.dtype}."
        )
    if fine_labels.size and (
        fine_labels.min() < 0 or fine_labels.max() >= NUM_FINE_LABELS
    ):
        raise ValueError(
            f"`fine_labels` must be in [0, {NUM_FINE_LABELS}); got values in "
            f"[{fine_labels.min()}, {fine_labels.max()}]."
        )
    task_ids = np.asarray(FINE_TO_COARSE, np.int32)[fine_labels]
    targets = np.asarray(FINE_TO_TARGET, np.int32)[fine_labels]
    return task_ids, targets


def _data_packages(feature):
    """Imports tensorflow and tensorflow_datasets (extra "data")."""
    from zoo.extras import require

    require("tensorflow", "data", feature)
    require("tensorflow_datasets", "data", feature)
    import tensorflow as tf
    import tensorflow_datasets as tfds

    return tf, tfds


def _missing_data_message(tfds, data_dir):
    if data_dir is None:
        builder = tfds.builder("cifar100")
        # data_dir of a builder: <root>/cifar100/<version>.
        data_dir = os.path.dirname(os.path.dirname(builder.data_dir))
        where = f"tfds's default data directory {data_dir}"
    else:
        where = f"{data_dir}"
    return (
        f"CIFAR-100 (tfds 'cifar100') is not in {where} and download=False. "
        f"On a machine with internet run `tfds build cifar100 --data_dir "
        f"{data_dir}` (or call with download=True), copy that directory "
        f"here if needed, and point data_dir (--data-dir on the command "
        f"line) at it."
    )


def _load_split(tfds, split, data_dir, download, shuffle_files, seed, decoders=None):
    """`tfds.load("cifar100")` as a dataset of feature dicts."""
    try:
        return tfds.load(
            "cifar100",
            split=split,
            data_dir=data_dir,
            download=download,
            shuffle_files=shuffle_files,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
            decoders=decoders,
        )
    except AssertionError as error:
        # tfds 4.9 raises a bare AssertionError ("could not find data in
        # DIR") when download=False and the prepared data is missing.
        if tfds.builder("cifar100", data_dir=data_dir).is_prepared():
            raise
        raise CIFAR100NotFoundError(
            _missing_data_message(tfds, data_dir)
        ) from error


def load_cifar100_tasks(
    split="train",
    batch_size=128,
    data_dir=None,
    shuffle=True,
    seed=0,
    download=False,
    augment=False,
    drop_remainder=False,
):
    """CIFAR-100 as 20 five-way tasks: a batched `tf.data.Dataset`.

    Each example is an image with its task (the coarse label of its fine
    label) and its 5-way target within the task (`split_fine_labels`).

    Args:
        split: str, a tfds split of "cifar100": "train", "test", or a slice
            such as "train[:90%]".
        batch_size: Positive integer, examples per batch.
        data_dir: str or None, the tfds data directory holding "cifar100"
            (None: tfds's default, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        shuffle: bool, whether to shuffle the examples (every epoch anew;
            buffer of 10,000) and the files; False keeps the dataset order.
        seed: Non-negative integer, seeds the shuffling and augmentation.
        download: bool, whether tfds may download and prepare the data into
            `data_dir` when it is missing.
        augment: bool, random horizontal flips and pad-4 random crops
            (NOTE 3; default off, as the paper mentions none).
        drop_remainder: bool, whether to drop the last, smaller batch.

    Returns:
        A `tf.data.Dataset` of `((images, task_ids), targets)`: images
        float32 `(b, 32, 32, 3)` standardised per channel (NOTE 2), task ids
        int32 `(b,)` in [0, 20), targets int32 `(b,)` in [0, 5).

    Raises:
        CIFAR100NotFoundError: (a FileNotFoundError) the data is not in
            `data_dir` and `download` is False; the message says how to get it.
        zoo.extras.MissingExtraError: tensorflow or tensorflow_datasets is not
            installed (the extra "data").
    """
    batch_size = positive_int(batch_size, "batch_size")
    seed = positive_int(seed, "seed", minimum=0)
    tf, tfds = _data_packages("CIFAR-100 tasks")
    keep_tensorflow_off_accelerators()
    examples = _load_split(
        tfds, split, data_dir, download, shuffle_files=bool(shuffle), seed=seed
    )
    examples = examples.map(
        lambda example: (example["image"], tf.cast(example["label"], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).cache()
    if shuffle:
        examples = examples.shuffle(
            SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True
        )

    fine_to_coarse = tf.constant(FINE_TO_COARSE, tf.int32)
    fine_to_target = tf.constant(FINE_TO_TARGET, tf.int32)
    mean = tf.constant(MEAN, tf.float32)
    std = tf.constant(STD, tf.float32)

    def to_task_example(image, fine_label, random_seeds=None):
        image = tf.cast(image, tf.float32) / 255.0
        if random_seeds is not None:  # NOTE 3
            random_seeds = tf.reshape(random_seeds, (2, 2))
            image = tf.image.stateless_random_flip_left_right(image, random_seeds[0])
            padding = [[CROP_PADDING, CROP_PADDING]] * 2 + [[0, 0]]
            image = tf.image.stateless_random_crop(
                tf.pad(image, padding), IMAGE_SHAPE, random_seeds[1]
            )
        image = (image - mean) / std  # NOTE 2
        task_id = tf.gather(fine_to_coarse, fine_label)  # NOTE 1
        target = tf.gather(fine_to_target, fine_label)
        return (image, task_id), target

    if augment:
        # Four int64 seeds per example (flip and crop), new every epoch.
        random_seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(4)
        examples = tf.data.Dataset.zip((examples, random_seeds)).map(
            lambda pair, seeds: to_task_example(*pair, seeds),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        examples = examples.map(to_task_example, num_parallel_calls=tf.data.AUTOTUNE)
    examples = examples.batch(batch_size, drop_remainder=bool(drop_remainder))
    return examples.prefetch(tf.data.AUTOTUNE)


def check_coarse_labels(split="train", data_dir=None, max_examples=None):
    """Checks the dataset's own `coarse_label` against FINE_TO_COARSE.

    Args:
        split: str, a tfds split of "cifar100".
        data_dir: str or None, the tfds data directory (as in
            `load_cifar100_tasks`); never downloads.
        max_examples: Positive integer or None, check only the first ones.

    Returns:
        The number of examples checked.

    Raises:
        ValueError: some example's `coarse_label` is not
            `FINE_TO_COARSE[label]`; the message gives their number.
        CIFAR100NotFoundError: the data is not in `data_dir`.
    """
    if max_examples is not None:
        max_examples = positive_int(max_examples, "max_examples")
    tf, tfds = _data_packages("The CIFAR-100 coarse label check")
    keep_tensorflow_off_accelerators()
    examples = _load_split(
        tfds,
        split,
        data_dir,
        download=False,
        shuffle_files=False,
        seed=0,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    if max_examples is not None:
        examples = examples.take(max_examples)
    examples = examples.map(
        lambda example: (example["label"], example["coarse_label"])
    ).batch(1024)
    fine_to_coarse = np.asarray(FINE_TO_COARSE)
    checked = disagreements = 0
    first = None
    for fine_labels, coarse_labels in tfds.as_numpy(examples):
        wrong = coarse_labels != fine_to_coarse[fine_labels]
        if first is None and wrong.any():
            index = int(np.argmax(wrong))
            first = (checked + index, fine_labels[index], coarse_labels[index])
        disagreements += int(wrong.sum())
        checked += len(fine_labels)
    if disagreements:
        position, fine, coarse = first
        raise ValueError(
            f"{disagreements} of {checked} examples of CIFAR-100 {split!r} have "
            f"a coarse_label other than FINE_TO_COARSE[label] (first: example "
            f"{position}, label {fine}, coarse_label {coarse}, table "
            f"{FINE_TO_COARSE[fine]})."
        )
    return checked
