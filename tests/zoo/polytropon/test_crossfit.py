"""CrossFit partition, metric table and file reader (zoo/polytropon/crossfit.py):
the RANDOM partition against the Polytropon paper's Table 1, the metric of
every task, the file layout with fake data, the MissingDataError messages,
bad arguments. Pure Python (run under every backend)."""

import json
import os

import pytest

from zoo.extras import MissingDataError
from zoo.polytropon import crossfit
from zoo.polytropon.crossfit import (
    ALL_TASKS,
    METRIC_NAMES,
    RANDOM_PARTITION,
    SEEDS,
    TASK_METRICS,
    find_task_file,
    load_partition,
    load_task,
    partition_tasks,
    read_tsv,
    shots,
    task_file,
    task_metric,
    with_task_prefix,
)

# Polytropon paper, Table 1: the 20 evaluation tasks and their metrics.
PAPER_TABLE_1 = {
    "ag_news": "Classification-F1",
    "ai2_arc": "ACC",
    "amazon_polarity": "Classification-F1",
    "blimp-sentential_negation_npi_licensor_present": "ACC",
    "blimp-sentential_negation_npi_scope": "ACC",
    "break-QDMR": "EM",
    "circa": "Classification-F1",
    "crawl_domain": "EM",
    "ethos-disability": "Classification-F1",
    "ethos-sexual_orientation": "Classification-F1",
    "freebase_qa": "EM",
    "glue-cola": "Matthew-Correlation",
    "glue-qnli": "ACC",
    "hatexplain": "Classification-F1",
    "quoref": "QA-F1",
    "race-high": "ACC",
    "superglue-rte": "ACC",
    "tweet_eval-irony": "Classification-F1",
    "wiki_split": "Rouge-L",
    "yelp_polarity": "Classification-F1",
}


def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write("".join(line + "\n" for line in lines))


def test_random_partition_sizes_disjoint_and_complete():
    train, dev, test = (RANDOM_PARTITION[g] for g in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (120, 20, 20)
    assert len(set(train) | set(dev) | set(test)) == 160
    assert set(train + dev + test) == set(ALL_TASKS) == set(TASK_METRICS)
    assert partition_tasks("all") == train + dev + test
    assert partition_tasks("train") == train


def test_evaluation_tasks_and_metrics_are_the_papers_table_1():
    assert set(partition_tasks("test")) == set(PAPER_TABLE_1)
    for task, metric in PAPER_TABLE_1.items():
        assert task_metric(task) == metric, task


def test_metric_table_counts_and_names():
    counts = {name: list(TASK_METRICS.values()).count(name) for name in METRIC_NAMES}
    assert counts == {
        "Classification-F1": 51, "ACC": 51, "QA-F1": 9, "EM": 28, "Rouge-L": 17,
        "Matthew-Correlation": 1, "Pearson-Correlation": 3,
    }
    assert [t for t, m in TASK_METRICS.items() if m == "Pearson-Correlation"] == [
        "app_reviews", "mocha", "yelp_review_full"]


def test_shots():
    assert sum(shots(task) == 16 for task in ALL_TASKS) == 82
    assert sum(shots(task) == 32 for task in ALL_TASKS) == 78
    assert shots("glue-cola") == 16 and shots("kilt_nq") == 32
    with pytest.raises(ValueError, match="Unknown CrossFit task 'nope'"):
        shots("nope")
    with pytest.raises(ValueError, match="Unknown CrossFit task"):
        task_metric("nope")


def test_partition_from_dict_and_json_file(tmp_path):
    split = {"train": ["a", "b"], "dev": ["c"], "test": ["d"]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    assert partition_tasks("train", split) == ("a", "b")
    assert partition_tasks("all", str(path)) == ("a", "b", "c", "d")
    with pytest.raises(ValueError, match="`group` must be one of"):
        partition_tasks("eval")
    with pytest.raises(ValueError, match="`partition` must be one of"):
        partition_tasks("train", "no_such_partition")


def test_load_task_reads_crossfit_lines(tmp_path):
    path = task_file(tmp_path, "ropes", 42, "train")
    assert path == os.path.join(str(tmp_path), "ropes", "ropes_32_42_train.tsv")
    write(path, [
        "question: who? [SEP] situation: s [SEP] background: b\tAnn\tann smith",
        "  lead and trail spaces \tyes ",
        "no answer here",
        "no answer either\t",
        "question: what?\tx",
    ])
    inputs, outputs = load_task(tmp_path, "ropes", seed=42, split="train")
    # Alternatives are TAB fields; " [SEP] " stays inside the input.
    assert inputs == [
        "question: who? [SEP] situation: s [SEP] background: b",
        "lead and trail spaces ",
        "question: what?",
    ]
    assert outputs == [["Ann", "ann smith"], ["yes"], ["x"]]
    assert load_task(tmp_path, "ropes", seed=42, split="train", limit=2)[1] == [
        ["Ann", "ann smith"], ["yes"]]
    assert read_tsv(path) == (inputs, outputs)


def test_k_is_found_for_other_tasks_or_given(tmp_path):
    write(os.path.join(tmp_path, "mine", "mine_8_13_dev.tsv"), ["in\tout"])
    assert load_task(tmp_path, "mine", seed=13, split="dev") == (["in"], [["out"]])
    assert load_task(tmp_path, "mine", seed=13, split="dev", k=8) == (["in"], [["out"]])
    # A CrossFit task whose files have another k is found too.
    write(os.path.join(tmp_path, "boolq", "boolq_4_13_test.tsv"), ["q\tyes"])
    assert find_task_file(tmp_path, "boolq", 13, "test").endswith("boolq_4_13_test.tsv")
    write(os.path.join(tmp_path, "mine", "mine_16_13_dev.tsv"), ["in\tout"])
    with pytest.raises(ValueError, match="pass `k`"):
        load_task(tmp_path, "mine", seed=13, split="dev")


def test_missing_data_messages(tmp_path):
    with pytest.raises(MissingDataError) as error:
        load_task(tmp_path / "absent", "ag_news", seed=13, split="test")
    message = str(error.value)
    assert "does not exist" in message and "absent" in message
    assert "<data_dir>/<task>/<task>_<k>_<seed>_{train,dev,test}.tsv" in message
    assert "_build_gym.py" in message and "\n" not in message
    with pytest.raises(MissingDataError, match="ag_news_16_13_test.tsv"):
        load_task(tmp_path, "ag_news", seed=13, split="test")
    with pytest.raises(MissingDataError, match=r"mine_<k>_13_dev.tsv"):
        load_task(tmp_path, "mine", seed=13, split="dev")
    assert issubclass(MissingDataError, FileNotFoundError)


def test_load_partition_concatenates_seeds_and_splits(tmp_path):
    split = {"train": ["glue-cola", "mine"], "dev": [], "test": ["quoref"]}
    for seed in SEEDS[:2]:
        for name in ("train", "dev", "test"):
            write(task_file(tmp_path, "glue-cola", seed, name), [f"c {seed} {name}\tacceptable"])
            write(task_file(tmp_path, "mine", seed, name, k=4), [f"m {seed} {name}\to"])
    data = load_partition(tmp_path, "train", split, seeds=SEEDS[:2])
    assert list(data) == ["glue-cola", "mine"]
    assert data["glue-cola"][0] == ["c 13 train", "c 13 dev", "c 21 train", "c 21 dev"]
    assert data["mine"][1] == [["o"]] * 4
    with_test = load_partition(tmp_path, "train", split, seeds=SEEDS[:2],
                               splits=("train", "test"))
    assert with_test["mine"][0] == ["m 13 train", "m 13 test", "m 21 train"]
    # Every missing file is counted in one error.
    expected = r"missing 4 file\(s\).*mine_<k>_42_train.tsv and 1 more"
    with pytest.raises(MissingDataError, match=expected):
        load_partition(tmp_path, "train", split, seeds=SEEDS[1:3])
    with pytest.raises(MissingDataError, match="missing 10 file"):
        load_partition(tmp_path, "test", split)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="`split` must be one of"):
        load_task(tmp_path, "ag_news", seed=13, split="validation")
    with pytest.raises(ValueError, match="`seed` must be"):
        load_task(tmp_path, "ag_news", seed=-1)
    with pytest.raises(ValueError, match="`seeds` and `splits`"):
        load_partition(tmp_path, seeds=())


def test_task_prefix():
    assert with_task_prefix("glue-cola", ["a", "b"]) == [" [glue-cola] a", " [glue-cola] b"]
    assert crossfit.CROSSFIT_TEST_LIMIT == 10000 and SEEDS == (13, 21, 42, 87, 100)
