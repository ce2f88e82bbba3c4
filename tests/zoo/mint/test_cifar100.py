"""Tests of CIFAR-100 as 20 five-way tasks (zoo/mint/cifar100.py), offline:
tfds's mock data stands in for the images."""

import importlib.util

import keras
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from zoo.extras import MissingExtraError  # noqa: E402
from zoo.mint import cifar100  # noqa: E402
from zoo.mint.cifar100 import (  # noqa: E402
    FINE_TO_COARSE,
    MEAN,
    STD,
    TASK_FINE_LABELS,
    CIFAR100NotFoundError,
    check_coarse_labels,
    load_cifar100_tasks,
    split_fine_labels,
)

# The official CIFAR-100 superclass listing (www.cs.toronto.edu/~kriz/cifar),
# spelled as in the dataset's label files (coarse_label_names.txt,
# fine_label_names.txt), which list both kinds of labels in alphabetical order.
SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": (
        "clock", "keyboard", "lamp", "telephone", "television",
    ),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": (
        "bridge", "castle", "house", "road", "skyscraper",
    ),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": (
        "camel", "cattle", "chimpanzee", "elephant", "kangaroo",
    ),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}  # fmt: skip


def label_names():
    """(fine names, coarse names) in label order: tfds's names where it has
    them (after the data was prepared), else the label files' alphabetical
    order (offline, tfds only knows the numbers of classes)."""
    features = tfds.builder("cifar100").info.features
    fine_names = list(features["label"].names)
    coarse_names = list(features["coarse_label"].names)
    if fine_names == [str(i) for i in range(100)]:
        fine_names = sorted(name for names in SUPERCLASSES.values() for name in names)
    if coarse_names == [str(i) for i in range(20)]:
        coarse_names = sorted(SUPERCLASSES)
    return fine_names, coarse_names


def test_fine_to_coarse_table():
    assert len(FINE_TO_COARSE) == 100
    assert np.bincount(FINE_TO_COARSE).tolist() == [5] * 20
    fine_names, coarse_names = label_names()
    assert len(set(fine_names)) == 100 and len(coarse_names) == 20
    expected = [None] * 100
    for superclass, names in SUPERCLASSES.items():
        for name in names:
            expected[fine_names.index(name)] = coarse_names.index(superclass)
    assert list(FINE_TO_COARSE) == expected
    assert [FINE_TO_COARSE[fine_names.index("apple")], coarse_names[4]] == [
        4,
        "fruit_and_vegetables",
    ]


def test_split_fine_labels():
    fine_labels = np.arange(100).reshape(4, 25)
    task_ids, targets = split_fine_labels(fine_labels)
    assert task_ids.dtype == np.int32 and targets.dtype == np.int32
    assert task_ids.shape == targets.shape == (4, 25)
    np.testing.assert_array_equal(task_ids.ravel(), FINE_TO_COARSE)
    # NumPy reference: the target is the rank of the fine label among the
    # fine labels of its coarse class.
    table = np.asarray(FINE_TO_COARSE)
    for fine in range(100):
        same_task = np.flatnonzero(table == table[fine])
        assert targets.ravel()[fine] == np.searchsorted(same_task, fine)
        assert TASK_FINE_LABELS[task_ids.ravel()[fine]][targets.ravel()[fine]] == fine
    # Each task's targets are 0..4 exactly once.
    for task in range(20):
        assert sorted(targets.ravel()[task_ids.ravel() == task]) == [0, 1, 2, 3, 4]
    assert split_fine_labels([72])[0].tolist() == [0]  # seal: aquatic mammals
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        split_fine_labels([3, 100])
    with pytest.raises(ValueError, match="integers"):
        split_fine_labels([1.0])


def raw_examples(num_examples):
    """The mock 'train' split as NumPy: (uint8 images, fine labels)."""
    with tfds.testing.mock_data(num_examples=num_examples):
        dataset = tfds.load("cifar100", split="train", shuffle_files=False)
        pairs = [(ex["image"], ex["label"]) for ex in tfds.as_numpy(dataset)]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def collect(dataset):
    """A batched task dataset as NumPy (images, task_ids, targets), and the
    batch sizes."""
    batches = list(tfds.as_numpy(dataset))
    images = np.concatenate([b[0][0] for b in batches])
    task_ids = np.concatenate([b[0][1] for b in batches])
    targets = np.concatenate([b[1] for b in batches])
    return (images, task_ids, targets), [len(b[1]) for b in batches]


def normalise(raw_images):
    """NumPy reference of the image transform (without augmentation)."""
    return (raw_images.astype(np.float32) / 255.0 - np.array(MEAN)) / np.array(STD)


def test_loader_on_mock_data():
    raw_images, fine_labels = raw_examples(20)
    with tfds.testing.mock_data(num_examples=20):
        dataset = load_cifar100_tasks("train", batch_size=8, shuffle=False)
        (images, task_ids, targets), sizes = collect(dataset)
        _, dropped_sizes = collect(
            load_cifar100_tasks(
                "train", batch_size=8, shuffle=False, drop_remainder=True
            )
        )
    assert sizes == [8, 8, 4] and dropped_sizes == [8, 8]
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.float32
    assert task_ids.dtype == np.int32 and targets.dtype == np.int32
    assert task_ids.min() >= 0 and task_ids.max() < 20
    assert targets.min() >= 0 and targets.max() < 5
    # (task, target) -> fine label round-trips to the raw labels, in order.
    np.testing.assert_array_equal(
        [TASK_FINE_LABELS[t][y] for t, y in zip(task_ids, targets)], fine_labels
    )
    np.testing.assert_allclose(images, normalise(raw_images), rtol=1e-5, atol=1e-5)


def test_shuffle_is_seeded_permutation():
    _, fine_labels = raw_examples(40)

    def fine_order(seed):
        with tfds.testing.mock_data(num_examples=40):
            dataset = load_cifar100_tasks("train", batch_size=16, seed=seed)
            (_, task_ids, targets), _ = collect(dataset)
        return [TASK_FINE_LABELS[t][y] for t, y in zip(task_ids, targets)]

    first, again, other = fine_order(0), fine_order(0), fine_order(1)
    assert sorted(first) == sorted(fine_labels.tolist())
    assert first == again
    assert first != fine_labels.tolist() and other != first


def test_augmentation_flips_and_crops():
    raw_images, _ = raw_examples(12)
    with tfds.testing.mock_data(num_examples=12):
        dataset = load_cifar100_tasks(
            "train", batch_size=12, shuffle=False, augment=True, seed=3
        )
        (images, _, _), _ = collect(dataset)
        (again, _, _), _ = collect(
            load_cifar100_tasks(
                "train", batch_size=12, shuffle=False, augment=True, seed=3
            )
        )
    np.testing.assert_array_equal(images, again)
    # NumPy reference: every image is a 32x32 window of the (optionally
    # flipped) image zero-padded by 4 in [0, 1] pixel space, standardised.
    padded = np.pad(raw_images / 255.0, ((0, 0), (4, 4), (4, 4), (0, 0)))
    padded = (padded - np.array(MEAN)) / np.array(STD)
    changed = 0
    for image, source in zip(images, padded):
        windows = [
            candidate[dy : dy + 32, dx : dx + 32]
            for candidate in (source, source[:, ::-1])
            for dy in range(9)
            for dx in range(9)
        ]
        errors = [np.abs(image - window).max() for window in windows]
        assert min(errors) < 1e-4
        changed += int(np.argmin(errors) != 4 * 9 + 4)  # not the centre, unflipped
    assert changed >= 8


def test_fit_step_on_mock_data():
    with tfds.testing.mock_data(num_examples=16):
        dataset = load_cifar100_tasks("train", batch_size=8, seed=0)
        images = keras.Input((32, 32, 3))
        task_ids = keras.Input((), dtype="int32")
        features = keras.layers.Dense(5)(
            keras.layers.GlobalAveragePooling2D()(images)
        )
        task_bias = keras.layers.Embedding(20, 5)(task_ids)
        model = keras.Model([images, task_ids], features + task_bias)
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def consistent_cifar100(self, *args, **kwargs):
    """A mock `_as_dataset` whose 100 examples (fine labels 0..99) carry the
    coarse labels of the superclass listing in this file."""
    fine_names, coarse_names = label_names()
    coarse_of_name = {
        name: coarse_names.index(superclass)
        for superclass, names in SUPERCLASSES.items()
        for name in names
    }
    return tf.data.Dataset.from_tensor_slices(
        {
            "id": [f"train_{i}" for i in range(100)],
            "image": np.zeros((100, 32, 32, 3), np.uint8),
            "label": np.arange(100, dtype=np.int64),
            "coarse_label": np.array(
                [coarse_of_name[name] for name in fine_names], np.int64
            ),
        }
    )


def test_check_coarse_labels():
    with tfds.testing.mock_data(as_dataset_fn=consistent_cifar100):
        assert check_coarse_labels("train") == 100
        assert check_coarse_labels("test", max_examples=30) == 30
    # tfds's mock data draws label and coarse_label independently.
    _, fine_labels = raw_examples(20)
    with tfds.testing.mock_data(num_examples=20):
        dataset = tfds.load("cifar100", split="train", shuffle_files=False)
        coarse_labels = np.array(
            [example["coarse_label"] for example in tfds.as_numpy(dataset)]
        )
        wrong = int((coarse_labels != np.asarray(FINE_TO_COARSE)[fine_labels]).sum())
        assert wrong > 0
        with pytest.raises(ValueError, match=rf"^{wrong} of 20 examples"):
            check_coarse_labels("train")


def test_missing_data_says_how_to_get_it(tmp_path):
    for call in (
        lambda: load_cifar100_tasks("train", data_dir=str(tmp_path)),
        lambda: check_coarse_labels("test", data_dir=str(tmp_path)),
    ):
        with pytest.raises(CIFAR100NotFoundError) as raised:
            call()
        assert isinstance(raised.value, FileNotFoundError)
        message = str(raised.value)
        assert f"tfds build cifar100 --data_dir {tmp_path}" in message
        assert "download=True" in message and "--data-dir" in message


def test_missing_tensorflow_datasets(monkeypatch):
    find_spec = importlib.util.find_spec

    def without_tfds(name, *args, **kwargs):
        if name == "tensorflow_datasets":
            return None
        return find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_tfds)
    missing = r"tensorflow_datasets.*modular-zoo\[data\]"
    with pytest.raises(MissingExtraError, match=missing):
        load_cifar100_tasks()
    with pytest.raises(MissingExtraError, match=r"modular-zoo\[data\]"):
        check_coarse_labels()


def test_argument_checks():
    with pytest.raises(ValueError, match="batch_size"):
        load_cifar100_tasks(batch_size=0)
    with pytest.raises(ValueError, match="seed"):
        load_cifar100_tasks(seed=-1)
    with pytest.raises(ValueError, match="max_examples"):
        check_coarse_labels(max_examples=0)
    assert cifar100.NUM_TASKS == 20 and cifar100.NUM_CLASSES == 5
