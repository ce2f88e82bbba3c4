"""The synthetic skill-composition benchmark (zoo/polytropon/synthetic.py):
the primitives by hand, tasks that are distinct non-redundant compositions,
held-out compositions of seen skills, split sizes and lengths, the
task-skill matrix, rows, vocabulary, determinism, bad arguments. NumPy only
(run under every backend)."""

import numpy as np
import pytest

from zoo.polytropon.metrics import accuracy, exact_match
from zoo.polytropon.synthetic import (
    METRIC,
    PRIMITIVE_NAMES,
    SyntheticBenchmark,
    apply_primitives,
    as_rows,
    make_synthetic_benchmark,
)

LETTERS = "abcdefghij"


@pytest.fixture(scope="module")
def bench():
    return make_synthetic_benchmark(seed=0)


@pytest.mark.parametrize("name, expected", [
    ("reverse", "e c j a a"),
    ("shift", "b b a d f"),
    ("drop_first", "a j c e"),
    ("duplicate", "a a a a j j c c e e"),
    ("sort", "a a c e j"),
    ("rotate", "a j c e a"),
    ("swap_pairs", "a a c j e"),
    ("drop_last", "a a j c"),
    ("next_vowel", "e e j c i"),
    ("mirror", "a a j c e e c j a a"),
])
def test_each_primitive(name, expected):
    assert apply_primitives((name,), "a a j c e", LETTERS) == expected


def test_composition_applies_in_order():
    assert apply_primitives(("drop_first", "reverse"), "a b c", LETTERS) == "c b"
    assert apply_primitives(("reverse", "drop_first"), "a b c", LETTERS) == "b a"
    # next_vowel cycles through the vowels of the alphabet only (a e i here).
    assert apply_primitives(("next_vowel",), "i", LETTERS) == "a"


def test_sizes_ids_and_skill_matrix(bench):
    assert isinstance(bench, SyntheticBenchmark)
    assert bench.primitives == PRIMITIVE_NAMES[:6]
    assert [t.task_id for t in bench.tasks] == list(range(16))
    matrix = bench.task_skill_matrix
    assert matrix.shape == (16, 6) and matrix.dtype == np.int32
    assert (matrix.sum(axis=1) == 2).all()
    for task in bench.tasks:
        assert task.name == "+".join(task.primitives)
        assert [bench.primitives[i] for i in np.flatnonzero(matrix[task.task_id])] == sorted(
            task.primitives, key=bench.primitives.index)
    for task in bench.train_tasks:
        assert (len(task.train), len(task.dev), len(task.test)) == (200, 50, 50)
    for task in bench.heldout_tasks:
        assert (len(task.train), len(task.dev), len(task.test)) == (16, 16, 50)


def test_heldout_tasks_are_new_compositions_of_seen_skills(bench):
    train_matrix = bench.task_skill_matrix[:12]
    assert (train_matrix.sum(axis=0) > 0).all()  # every primitive is trained
    train_names = {t.name for t in bench.train_tasks}
    for task in bench.heldout_tasks:
        assert task.name not in train_names
        inputs = [text for text, _ in task.test]
        outputs = [out for _, out in task.test]
        for other in bench.train_tasks:  # a different function from every training task
            assert [other.apply(text) for text in inputs] != outputs


def test_tasks_are_distinct_and_every_skill_matters(bench):
    for task in bench.tasks:
        inputs = [text for text, _ in task.train + task.test]
        outputs = [task.apply(text) for text in inputs]
        assert outputs != inputs
        for i in range(len(task.primitives)):
            fewer = task.primitives[:i] + task.primitives[i + 1:]
            assert [apply_primitives(fewer, t, LETTERS) for t in inputs] != outputs
        for other in bench.tasks:
            if other is not task:
                assert [other.apply(text) for text in inputs] != outputs, (task.name, other.name)
    # "reverse" or "rotate" before "sort" is just "sort": never a task.
    names = {t.name for t in bench.tasks}
    assert not names & {"reverse+sort", "rotate+sort"}


def test_examples_lengths_and_disjoint_inputs(bench):
    for task in bench.tasks:
        texts = [text for text, _ in task.train + task.dev + task.test]
        assert len(set(texts)) == len(texts)
        for text, target in task.train + task.dev + task.test:
            assert 3 <= len(text.split()) <= 8
            assert 1 <= len(target.split()) <= 16
            assert target == task.apply(text)
            assert set(text.split()) | set(target.split()) <= set(bench.vocabulary())


def test_vocabulary_and_rows(bench):
    assert bench.vocabulary() == list(LETTERS)
    rows = bench.as_rows("train")
    assert len(rows) == 12 * 200
    assert rows[0] == bench.train_tasks[0].train[0] + (0,)
    heldout = bench.as_rows("dev", which="heldout")
    assert sorted({r[2] for r in heldout}) == [12, 13, 14, 15] and len(heldout) == 64
    shuffled = as_rows(bench.train_tasks, "test", shuffle_seed=3)
    assert shuffled == as_rows(bench.train_tasks, "test", shuffle_seed=3)
    assert shuffled != as_rows(bench.train_tasks, "test")
    assert sorted(shuffled) == sorted(as_rows(bench.train_tasks, "test"))
    assert len(bench.as_rows("test", which="all")) == 16 * 50
    with pytest.raises(ValueError, match="`which` must be one of"):
        bench.as_rows("train", which="eval")
    with pytest.raises(ValueError, match="`split` must be"):
        bench.as_rows("validation")


def test_score_is_exact_match_accuracy(bench):
    assert METRIC == "ACC"
    task = bench.heldout_tasks[0]
    targets = [target for _, target in task.test]
    assert task.score(targets) == 1.0
    wrong = list(targets)
    wrong[0] = "z"
    assert task.score(wrong) == pytest.approx(49 / 50)
    # The word "a" counts (CrossFit's EM would normalise it away).
    assert accuracy(["b c"], ["a b c"]) == 0.0 and exact_match(["b c"], ["a b c"]) == 1.0


def test_deterministic_from_seed():
    one = make_synthetic_benchmark(seed=3, examples_per_task=20)
    two = make_synthetic_benchmark(seed=3, examples_per_task=20)
    other = make_synthetic_benchmark(seed=4, examples_per_task=20)
    assert one.tasks == two.tasks
    assert np.array_equal(one.task_skill_matrix, two.task_skill_matrix)
    assert [t.name for t in one.tasks] != [t.name for t in other.tasks]


@pytest.mark.parametrize("primitives, skills, train, heldout", [
    (10, 2, 40, 10),
    (6, 3, 30, 8),
    (4, 1, 4, 0),
])
def test_other_configurations(primitives, skills, train, heldout):
    bench = make_synthetic_benchmark(
        num_primitives=primitives, skills_per_task=skills, num_train_tasks=train,
        num_heldout_tasks=heldout, examples_per_task=10, few_shot=4, eval_examples=5,
        num_letters=26, seed=1)
    assert bench.task_skill_matrix.shape == (train + heldout, primitives)
    assert (bench.task_skill_matrix.sum(axis=1) == skills).all()
    assert (bench.task_skill_matrix[:train].sum(axis=0) > 0).all()
    assert len(bench.vocabulary()) == 26
    for task in bench.tasks:
        for text, target in task.train + task.test:
            assert len(text.split()) <= 8 and 1 <= len(target.split()) <= 16


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Only 22 distinct compositions of 2 of 6"):
        make_synthetic_benchmark(num_train_tasks=20, num_heldout_tasks=3)
    with pytest.raises(ValueError, match="at most 10"):
        make_synthetic_benchmark(num_primitives=11)
    with pytest.raises(ValueError, match="must not exceed"):
        make_synthetic_benchmark(num_primitives=2, skills_per_task=3)
    with pytest.raises(ValueError, match="`few_shot` must be an integer >= 1"):
        make_synthetic_benchmark(few_shot=0)
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0"):
        make_synthetic_benchmark(seed=-1)
    with pytest.raises(ValueError, match="use all 6 primitives"):
        make_synthetic_benchmark(num_train_tasks=2, num_heldout_tasks=0)
    with pytest.raises(ValueError, match="not enough distinct inputs"):
        make_synthetic_benchmark(num_letters=2, min_length=3, max_length=3,
                                 examples_per_task=20)
