"""CrossFit's seven evaluation metrics, as CrossFit computes them, and a
per-task results table. Pure Python and NumPy (no keras, scikit-learn, scipy
or rouge needed).

The definitions follow INK-USC/CrossFit dataloader/metrics.py (`evaluate`,
commit 56285ca2c63b4553ed4bb75c7352cca755805757), which the Polytropon code
(microsoft/mttl mttl/dataloader/xfit_metrics.py) reuses. Predictions are
stripped first (CrossFit's `evaluate` callers do); a reference is a string or
a list of correct answers (CrossFit's TSV files give a list, see crossfit.py).
Every metric returns a fraction (the papers print 100 times it).

    =====================  ==========================================================
    "EM"                   exact match after SQuAD normalisation (lower case, no
                           punctuation, no articles a/an/the, single spaces), max
                           over the answers, averaged
    "ACC"                  `prediction.lower() == answer.lower()`, max over the
                           answers, averaged (no other normalisation)
    "QA-F1"                SQuAD token F1 of the normalised texts, max over the
                           answers, averaged; 0 when nothing is shared (also when
                           both are empty)
    "Classification-F1"    macro F1 (scikit-learn `f1_score(average="macro")`) over
                           the labels in the gold FIRST answers or the predictions
                           (a prediction outside the label set is a class of F1 0)
    "Matthew-Correlation"  Matthews correlation of "acceptable" vs anything else
                           (glue-cola); 0 when undefined
    "Pearson-Correlation"  Pearson r of `float(prediction)` and `float(first answer)`;
                           an unparsable prediction becomes NaN, as in CrossFit,
                           which makes r NaN (`unparsable=` substitutes a number)
    "Rouge-L"              ROUGE-L F of the `rouge==1.0.0` package CrossFit pins,
                           max over the answers, averaged (see `rouge_l_score`)
    =====================  ==========================================================

    evaluate("ag_news", ["Business", "Sports"], [["Business"], ["World"]])

NOTE 1: CrossFit's Pearson-Correlation maps an unparsable prediction to NaN
  (`cast_to_float`), so one such prediction makes the task's score NaN
  (scipy's `pearsonr` propagates it); a constant input is NaN too.
NOTE 2: Rouge-L is the `rouge` package's summary-level ROUGE-L with its
  version 1.0.0 default `exclusive=False`, not Google's `rouge_score` (which
  lower-cases, tokenises on non-alphanumerics and has no sentence split). The
  two agree on one-sentence lower-case texts up to the 1e-8 in the F formula.
NOTE 3: CrossFit would raise on an empty reference ("Reference is empty.")
  for Rouge-L; here it scores 0.
"""

import math
import re
import string
from collections import Counter

import numpy as np

from zoo.polytropon.crossfit import METRIC_NAMES, TASK_METRICS

# The paper's abbreviations (Polytropon Table 1).
METRIC_ABBREVIATIONS = {
    "Classification-F1": "C-F1",
    "ACC": "Acc",
    "QA-F1": "QA-F1",
    "EM": "EM",
    "Rouge-L": "Rouge-L",
    "Matthew-Correlation": "M-Corr",
    "Pearson-Correlation": "P-Corr",
}

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text):
    """SQuAD normalisation: lower case, punctuation and the articles
    a / an / the removed, whitespace collapsed.

    >>> normalize_answer("The  Eiffel-Tower, Paris!")
    'eiffeltower paris'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _answers(reference):
    """A reference as a list of answers."""
    if isinstance(reference, str):
        return [reference]
    return list(reference)


def _max_over(score, prediction, reference):
    answers = _answers(reference)
    if not answers:
        return 0.0
    return max(float(score(prediction, answer)) for answer in answers)


def _checked(predictions, references):
    predictions = [str(prediction).strip() for prediction in predictions]
    references = list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions for {len(references)} references."
        )
    if not predictions:
        raise ValueError("No predictions to score.")
    return predictions, references


def exact_match_score(prediction, answer):
    """1.0 when the normalised texts are equal, else 0.0.

    >>> exact_match_score("the Cat.", "cat"), exact_match_score("cats", "cat")
    (1.0, 0.0)
    """
    return float(normalize_answer(prediction) == normalize_answer(answer))


def token_f1_score(prediction, answer):
    """SQuAD token F1 of the normalised texts (0 when none is shared).

    >>> round(token_f1_score("the big red dog", "a red dog barks"), 4)
    0.6667
    """
    predicted = normalize_answer(prediction).split()
    gold = normalize_answer(answer).split()
    shared = sum((Counter(predicted) & Counter(gold)).values())
    if shared == 0:
        return 0.0
    precision = shared / len(predicted)
    recall = shared / len(gold)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(x, y):
    """Length of the longest common subsequence of two token lists."""
    if len(x) < len(y):
        x, y = y, x
    previous = [0] * (len(y) + 1)
    for token in x:
        current = [0]
        for j, other in enumerate(y):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _sentences(text):
    """`rouge` 1.0.0's sentence split: on ".", empty pieces dropped, each
    piece's whitespace collapsed (a blank piece stays, as an empty sentence)."""
    return [" ".join(piece.split()) for piece in text.split(".") if len(piece) > 0]


def rouge_l_score(prediction, answer):
    """ROUGE-L F of one prediction against one answer, as CrossFit computes
    it with `rouge==1.0.0` (`Rouge().get_scores(p, a, avg=True)["rouge-l"]["f"]`).

    A prediction without any non-punctuation character scores 0 (CrossFit's
    `get_rouge_over_list`). Texts are split into sentences on "." and into
    words on single spaces (case-sensitive). With exclusive=False (the
    1.0.0 default) the "union" LCS of a reference sentence with the
    prediction's sentences is the SUM of their LCS lengths; L = that sum over
    the reference sentences, m and n the word counts of the answer and the
    prediction, R = L / m, P = L / n, F = 2PR / (P + R + 1e-8).

    >>> round(rouge_l_score("the cat sat on the mat", "the cat lay on a mat"), 6)
    0.666667
    >>> rouge_l_score("?!", "anything")
    0.0
    """
    if not "".join(ch for ch in prediction if ch not in _PUNCTUATION):
        return 0.0
    predicted = _sentences(prediction)
    gold = _sentences(answer)
    if not predicted or not gold:
        return 0.0
    predicted_words = [sentence.split(" ") for sentence in predicted]
    gold_words = [sentence.split(" ") for sentence in gold]
    m = sum(len(words) for words in gold_words)
    n = sum(len(words) for words in predicted_words)
    lcs = sum(_lcs_length(g, p) for g in gold_words for p in predicted_words)
    recall, precision = lcs / m, lcs / n
    return 2.0 * (precision * recall / (precision + recall + 1e-8))


def exact_match(predictions, references):
    """CrossFit "EM": mean over examples of the best normalised exact match.

    >>> round(exact_match(["Paris", "the moon", "x"], [["paris"], ["Moon", "luna"], "y"]), 6)
    0.666667
    """
    predictions, references = _checked(predictions, references)
    return float(np.mean([
        _max_over(exact_match_score, p, r) for p, r in zip(predictions, references)
    ]))


def accuracy(predictions, references):
    """CrossFit "ACC": case-insensitive string equality with any answer.

    >>> round(accuracy(["Yes", "no ", "the cat"], ["yes", ["No", "nope"], "cat"]), 6)
    0.666667
    """
    predictions, references = _checked(predictions, references)
    return float(np.mean([
        _max_over(lambda p, a: p.lower() == a.lower(), p, r)
        for p, r in zip(predictions, references)
    ]))


def qa_f1(predictions, references):
    """CrossFit "QA-F1": mean over examples of the best token F1.

    >>> qa_f1(["red dog", "blue"], [["a red dog", "dog"], "green"])
    0.5
    """
    predictions, references = _checked(predictions, references)
    return float(np.mean([
        _max_over(token_f1_score, p, r) for p, r in zip(predictions, references)
    ]))


def rouge_l(predictions, references):
    """CrossFit "Rouge-L": mean over examples of the best `rouge_l_score`.

    >>> round(rouge_l(["a b c d"], [["a c", "x y"]]), 6)
    0.666667
    """
    predictions, references = _checked(predictions, references)
    return float(np.mean([
        _max_over(rouge_l_score, p, r) for p, r in zip(predictions, references)
    ]))


def _first_answers(references):
    firsts = []
    for reference in references:
        answers = _answers(reference)
        if not answers:
            raise ValueError("A reference has no answer.")
        firsts.append(answers[0])
    return firsts


def classification_f1(predictions, references):
    """CrossFit "Classification-F1": macro F1 against the FIRST answers.

    The classes are every label among the gold labels and the predictions
    (scikit-learn's default); per class F1 = 2 TP / (2 TP + FP + FN).
    Labels are compared exactly (case-sensitive).

    >>> round(classification_f1(["pos", "pos", "neg", "neu"], ["pos", "neg", "neg", "pos"]), 6)
    0.388889
    """
    predictions, references = _checked(predictions, references)
    gold = _first_answers(references)
    scores = []
    for label in sorted(set(gold) | set(predictions)):
        tp = sum(p == label and g == label for p, g in zip(predictions, gold))
        fp = sum(p == label and g != label for p, g in zip(predictions, gold))
        fn = sum(p != label and g == label for p, g in zip(predictions, gold))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def matthews_correlation(predictions, references, positive="acceptable"):
    """CrossFit "Matthew-Correlation": binary Matthews correlation of
    `== positive` (glue-cola's "acceptable") for the predictions and the
    first answers; 0 when a marginal is empty (scikit-learn's convention).

    >>> gold = ["acceptable", "unacceptable", "unacceptable", "unacceptable"]
    >>> round(matthews_correlation(["acceptable", "acceptable", "unacceptable", "x"], gold), 6)
    0.57735
    """
    predictions, references = _checked(predictions, references)
    gold = [answer == positive for answer in _first_answers(references)]
    predicted = [prediction == positive for prediction in predictions]
    tp = sum(p and g for p, g in zip(predicted, gold))
    tn = sum(not p and not g for p, g in zip(predicted, gold))
    fp = sum(p and not g for p, g in zip(predicted, gold))
    fn = sum(not p and g for p, g in zip(predicted, gold))
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denominator == 0:
        return 0.0
    return (tp * tn - fp * fn) / math.sqrt(denominator)


def _to_float(text, unparsable):
    try:
        return float(text.strip())
    except ValueError:
        return unparsable


def pearson_correlation(predictions, references, unparsable=float("nan")):
    """CrossFit "Pearson-Correlation" of the predictions and first answers
    read as numbers.

    Args:
        predictions, references: as in every metric.
        unparsable: the number an unparsable prediction stands for; CrossFit
            uses NaN, which makes the result NaN.

    Returns:
        Pearson's r, NaN when a value is NaN, when fewer than 2 examples are
        given or when either side is constant.

    >>> round(pearson_correlation(["1", "2", "4"], ["1", "2", "3"]), 6)
    0.981981
    >>> pearson_correlation(["1", "two", "4"], ["1", "2", "3"])
    nan
    >>> round(pearson_correlation(["1", "two", "4"], ["1", "2", "3"], unparsable=0.0), 6)
    0.720577
    """
    predictions, references = _checked(predictions, references)
    x = np.array([_to_float(p, unparsable) for p in predictions], dtype=np.float64)
    y = np.array([float(a) for a in _first_answers(references)], dtype=np.float64)
    if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0:
        return float("nan")
    return float(np.clip(float(dx @ dy) / denominator, -1.0, 1.0))


METRIC_FUNCTIONS = {
    "EM": exact_match,
    "ACC": accuracy,
    "QA-F1": qa_f1,
    "Classification-F1": classification_f1,
    "Matthew-Correlation": matthews_correlation,
    "Pearson-Correlation": pearson_correlation,
    "Rouge-L": rouge_l,
}
assert set(METRIC_FUNCTIONS) == set(METRIC_NAMES)


def score(metric, predictions, references):
    """One of the seven metrics by its CrossFit name.

    >>> score("ACC", ["a"], ["A"])
    1.0
    """
    if metric not in METRIC_FUNCTIONS:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {METRIC_NAMES}.")
    return METRIC_FUNCTIONS[metric](predictions, references)


def evaluate(task, predictions, references, metric=None):
    """Scores one task's predictions with the task's CrossFit metric.

    Args:
        task: a CrossFit task name (its metric is `TASK_METRICS[task]`), or
            any name when `metric` is given.
        predictions: a list of generated strings.
        references: a list of the same length; each a string or a list of
            correct answers (as `crossfit.load_task` returns them).
        metric: None, or a metric name that overrides the task's.

    Returns:
        The score, a Python float (a fraction; NaN is possible for
        Pearson-Correlation, see NOTE 1).

    >>> round(evaluate("ag_news", ["Business", "Sports"], [["Business"], ["World"]]), 6)
    0.333333
    >>> evaluate("my_task", ["x"], ["x"], metric="EM")
    1.0
    """
    if metric is None:
        if task not in TASK_METRICS:
            raise ValueError(
                f"{task!r} is not a CrossFit task; pass `metric` (one of {METRIC_NAMES})."
            )
        metric = TASK_METRICS[task]
    return score(metric, predictions, references)


def _scores(value):
    """A result as a 1-D float array (one score, or one per seed)."""
    scores = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if scores.ndim != 1 or not len(scores):
        raise ValueError(f"A result must be a number or a list of numbers; got {value!r}.")
    return scores


def summarize(results):
    """The mean over tasks and its spread over seeds.

    Args:
        results: dict, task -> score, or task -> list of scores (one per
            seed / run).

    Returns:
        `(mean, std)`: the mean over tasks of each task's mean; when every
        task has the same number n > 1 of scores, std is the standard
        deviation (ddof 0) over the n runs of the task-averaged score (the
        paper's "ALL" row), else None.

    >>> summarize({"a": [0.5, 0.7], "b": [0.1, 0.3]})
    (0.4, 0.1)
    >>> summarize({"a": 0.5, "b": [0.1, 0.3]})
    (0.35, None)
    """
    if not results:
        raise ValueError("No results to summarize.")
    scores = [_scores(value) for value in results.values()]
    mean = float(np.mean([s.mean() for s in scores]))
    runs = {len(s) for s in scores}
    std = None
    if len(runs) == 1 and runs.pop() > 1:
        std = float(np.std(np.mean(np.stack(scores), axis=0)))
    return round(mean, 12), None if std is None else round(std, 12)


def _cell(mean, std, scale, digits):
    text = f"{mean * scale:.{digits}f}"
    if std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text


def metric_table(results, metrics=None, scale=100.0, digits=1):
    """A Markdown table of per-task scores with their mean ("ALL").

    Args:
        results: dict, task -> score or list of scores (one per seed); a
            task's cell shows the mean (and "± std" over its scores, ddof 0,
            when there are several).
        metrics: None, or a dict task -> metric name for tasks that are not
            CrossFit's (e.g. the synthetic tasks); CrossFit tasks default to
            `TASK_METRICS`. A task with no known metric shows "-".
        scale: multiplies every score (100: percentages, as the papers).
        digits: decimals shown.

    Returns:
        The table as a string, one row per task in `results` order, then the
        "ALL" row of `summarize`.

    >>> print(metric_table({"glue-cola": [0.1, 0.3], "quoref": [0.4, 0.4]}))
    | task | metric | score |
    | --- | --- | --- |
    | glue-cola | M-Corr | 20.0 ± 10.0 |
    | quoref | QA-F1 | 40.0 ± 0.0 |
    | ALL | - | 30.0 ± 5.0 |
    """
    metrics = dict(metrics or {})
    lines = ["| task | metric | score |", "| --- | --- | --- |"]
    for task, value in results.items():
        scores = _scores(value)
        metric = metrics.get(task, TASK_METRICS.get(task))
        name = METRIC_ABBREVIATIONS.get(metric, metric) if metric else "-"
        std = float(np.std(scores)) if len(scores) > 1 else None
        lines.append(f"| {task} | {name} | {_cell(float(scores.mean()), std, scale, digits)} |")
    mean, std = summarize(results)
    lines.append(f"| ALL | - | {_cell(mean, std, scale, digits)} |")
    return "\n".join(lines)
