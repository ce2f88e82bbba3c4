"""CrossFit's seven metrics (zoo/polytropon/metrics.py) against values
computed by hand from CrossFit's definitions (INK-USC/CrossFit
dataloader/metrics.py, `rouge==1.0.0`), cross-checked with scikit-learn and
scipy where installed; `evaluate`, `summarize`, `metric_table`. NumPy only
(run under every backend)."""

import math

import numpy as np
import pytest

from zoo.polytropon.metrics import (
    METRIC_FUNCTIONS,
    accuracy,
    classification_f1,
    evaluate,
    exact_match,
    matthews_correlation,
    metric_table,
    normalize_answer,
    pearson_correlation,
    qa_f1,
    rouge_l,
    rouge_l_score,
    score,
    summarize,
    token_f1_score,
)


def test_normalize_answer():
    assert normalize_answer("  An apple, THE pie & a tart. ") == "apple pie tart"
    assert normalize_answer("another theme") == "another theme"  # whole words only
    assert normalize_answer("...") == ""


def test_exact_match():
    predictions = [" The Beatles ", "beatles!", "Paul", "x"]
    references = [["beatles"], "the  Beatles", ["John", "paul."], []]
    # 1, 1, 1 (second answer), 0 (no answer scores 0)
    assert exact_match(predictions, references) == 0.75


def test_accuracy_is_case_insensitive_only():
    predictions = ["Yes", " no", "the dog", "dog."]
    references = ["yes", ["maybe", "NO"], "dog", "dog"]
    assert accuracy(predictions, references) == 0.5


def test_qa_f1():
    # "a big brown dog" -> [big, brown, dog]; "brown dog runs" -> [brown, dog, runs]
    # shared 2: P = 2/3, R = 2/3, F1 = 2/3. Second alternative "dog": P = 1/3, R = 1.
    # F1 = 0.5. Max = 2/3. Second example: no shared token -> 0; third: both
    # empty after normalisation -> 0 (CrossFit's num_same == 0 rule).
    assert token_f1_score("a big brown dog", "brown dog runs") == pytest.approx(2 / 3)
    assert token_f1_score("a big brown dog", "dog") == pytest.approx(0.5)
    value = qa_f1(["a big brown dog", "cat", "the"], [["brown dog runs", "dog"], "dog", "a"])
    assert value == pytest.approx((2 / 3 + 0 + 0) / 3)
    # Repeated tokens count with multiplicity: P = 2/3, R = 2/2.
    assert token_f1_score("dog dog cat", "dog dog") == pytest.approx(0.8)


def test_rouge_l_single_sentence():
    # LCS("a b c d e", "a c e f") = 3 (a c e); R = 3/4, P = 3/5.
    f = 2 * (0.6 * 0.75) / (0.6 + 0.75 + 1e-8)
    assert rouge_l_score("a b c d e", "a c e f") == pytest.approx(f, abs=1e-12)
    assert rouge_l_score("same text", "same text") == pytest.approx(1.0, abs=1e-8)
    assert rouge_l_score("Cat", "cat") == 0.0  # case-sensitive
    assert rouge_l_score("...", "anything") == 0.0  # only punctuation -> 0
    assert rouge_l_score("x", "...") == 0.0  # no reference sentence (CrossFit raises)


def test_rouge_l_sentence_quirks_of_rouge_1_0_0():
    # Split on ".": "a b. c d" -> ["a b", "c d"]; each LCS with the one
    # reference sentence adds up: L = 2 + 2, m = n = 4.
    assert rouge_l_score("a b. c d", "a b c d") == pytest.approx(1.0, abs=1e-8)
    # exclusive=False sums LCS lengths, so a repeated sentence overcounts:
    # L = 2, m = 1, n = 2 -> R = 2, P = 1, F = 4/3.
    assert rouge_l_score("a. a", "a") == pytest.approx(4 / 3, abs=1e-7)
    # A blank piece between two dots is an empty sentence of one empty word:
    # n = 3 (a, "", b), m = 2, L = 2 -> R = 1, P = 2/3, F = 0.8.
    assert rouge_l_score("a .  . b", "a b") == pytest.approx(0.8, abs=1e-7)


def test_rouge_l_max_over_answers_and_mean():
    value = rouge_l(["a b c", "?"], [["x", "a b"], "a"])
    best = 2 * (2 / 3 * 1) / (2 / 3 + 1 + 1e-8)  # vs "a b": L = 2, P = 2/3, R = 1
    assert value == pytest.approx(best / 2, abs=1e-12)


def test_classification_f1_macro_over_gold_and_predicted_labels():
    predictions = ["pos", "pos", "neg", "other", "neg"]
    references = [["pos"], ["neg", "pos"], "neg", "pos", "neg"]  # first answers
    # pos: TP 1, FP 1, FN 1 -> 0.5; neg: TP 2, FP 0, FN 1 -> 0.8;
    # "other" (only predicted): TP 0 -> 0. Macro = 1.3 / 3.
    assert classification_f1(predictions, references) == pytest.approx(1.3 / 3)
    assert classification_f1(["a", "b"], ["a", "b"]) == 1.0
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gold = ["pos", "neg", "neg", "pos", "neg"]
    assert classification_f1(predictions, references) == pytest.approx(
        sklearn_metrics.f1_score(gold, predictions, average="macro"))


def test_matthews_correlation():
    predictions = ["acceptable", "acceptable", "unacceptable", "foo", "acceptable"]
    references = ["acceptable", "unacceptable", "unacceptable", "acceptable", "acceptable"]
    # TP 2, FP 1, TN 1, FN 1: (2 - 1) / sqrt(3 * 3 * 2 * 2) = 1/6.
    assert matthews_correlation(predictions, references) == pytest.approx(1 / 6)
    # Constant predictions: undefined -> 0.
    assert matthews_correlation(["acceptable"] * 3, references[:3]) == 0.0
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gold = [r == "acceptable" for r in references]
    predicted = [p == "acceptable" for p in predictions]
    assert matthews_correlation(predictions, references) == pytest.approx(
        sklearn_metrics.matthews_corrcoef(gold, predicted))


def test_pearson_correlation_and_unparsable_predictions():
    # x = 1, 3, 2, y = 1, 2, 3: dx = -1, 1, 0; dy = -1, 0, 1 -> r = 1 / 2.
    assert pearson_correlation(["1", " 3 ", "2"], ["1", "2", "3"]) == pytest.approx(0.5)
    assert math.isnan(pearson_correlation(["1", "three", "2"], ["1", "2", "3"]))
    assert pearson_correlation(["1", "three", "2"], ["1", "2", "3"], unparsable=0.0) == (
        pytest.approx(0.5))  # x = 1, 0, 2: dx = 0, -1, 1 -> r = 1/2 as well
    assert math.isnan(pearson_correlation(["2", "2"], ["1", "3"]))  # constant
    assert math.isnan(pearson_correlation(["2"], ["1"]))  # one example
    stats = pytest.importorskip("scipy.stats")
    x, y = ["0.5", "4", "2", "7"], ["1", "5", "2", "4"]
    assert pearson_correlation(x, y) == pytest.approx(
        stats.pearsonr([float(v) for v in x], [float(v) for v in y])[0])


def test_evaluate_uses_each_tasks_metric():
    assert evaluate("glue-cola", ["acceptable", "unacceptable"],
                    [["acceptable"], ["unacceptable"]]) == 1.0
    assert evaluate("quoref", ["red dog"], [["the red dog"]]) == 1.0
    assert evaluate("freebase_qa", ["Paris."], [["paris"]]) == 1.0
    assert evaluate("superglue-rte", ["Paris."], [["paris"]]) == 0.0  # ACC: no normalising
    assert evaluate("mine", ["x"], ["y"], metric="ACC") == 0.0
    with pytest.raises(ValueError, match="not a CrossFit task; pass `metric`"):
        evaluate("mine", ["x"], ["y"])
    with pytest.raises(ValueError, match="Unknown metric"):
        score("BLEU", ["x"], ["x"])
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        evaluate("quoref", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="No predictions"):
        evaluate("quoref", [], [])
    assert len(METRIC_FUNCTIONS) == 7


def test_summarize_and_table():
    results = {"glue-cola": [0.2, 0.4, 0.6], "ag_news": [0.5, 0.5, 0.8], "mine": [1.0, 1.0, 1.0]}
    mean, std = summarize(results)
    assert mean == pytest.approx(np.mean([0.4, 0.6, 1.0]))
    runs = np.mean([[0.2, 0.4, 0.6], [0.5, 0.5, 0.8], [1.0, 1.0, 1.0]], axis=0)
    assert std == pytest.approx(np.std(runs))
    table = metric_table(results, metrics={"mine": "ACC"}, digits=2)
    lines = table.splitlines()
    assert lines[0] == "| task | metric | score |"
    assert lines[2] == f"| glue-cola | M-Corr | 40.00 ± {100 * np.std([0.2, 0.4, 0.6]):.2f} |"
    assert lines[3] == "| ag_news | C-F1 | 60.00 ± 14.14 |"
    assert lines[4] == "| mine | Acc | 100.00 ± 0.00 |"
    assert lines[5] == f"| ALL | - | {100 * mean:.2f} ± {100 * std:.2f} |"
    single = metric_table({"unknown_task": 0.25, "quoref": 0.5})
    assert single.splitlines()[2:] == [
        "| unknown_task | - | 25.0 |", "| quoref | QA-F1 | 50.0 |", "| ALL | - | 37.5 |"]
    with pytest.raises(ValueError, match="No results"):
        summarize({})
