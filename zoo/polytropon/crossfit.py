"""CrossFit (Ye et al., 2021, "CrossFit: A Few-shot Learning Challenge for
Cross-task Generalization in NLP"): the task partition, per-task metrics and
a reader of the few-shot data files. Pure Python (no keras, no numpy).

Polytropon's second benchmark (papers/polytropon-combining-modular-skills.txt,
Section 4.1) is CrossFit's partition 1, RANDOM: 120 training tasks (multitask
pre-training), 20 development tasks (hyper-parameters) and 20 evaluation
tasks (few-shot adaptation), drawn at random from the 160 tasks of the "NLP
Few-shot Gym". `RANDOM_PARTITION` holds the three lists as CrossFit's
repository does (keys "train", "dev", "test"; "test" is the paper's T_eval):

    INK-USC/CrossFit, dataloader/custom_tasks_splits/random.json
    (commit 56285ca2c63b4553ed4bb75c7352cca755805757; named default.json at
    76f165ba, same lists). Its 20 "test" tasks are exactly the 20 tasks of
    the Polytropon paper's Table 1.

`TASK_METRICS` maps each of the 160 tasks to one of CrossFit's seven metric
names, copied from `METRICS` in INK-USC/CrossFit dataloader/metrics.py (same
commit); zoo/polytropon/metrics.py implements the metrics.

The data (NOT bundled: CrossFit builds it from Hugging Face datasets, about 3
hours, `cd tasks && python _build_gym.py --build`) is one directory per task
holding, for each of the five sampling seeds `SEEDS`, three TSV files:

    <data_dir>/<task>/<task>_<k>_<seed>_train.tsv   k-shot training set
    <data_dir>/<task>/<task>_<k>_<seed>_dev.tsv     k-shot development set
    <data_dir>/<task>/<task>_<k>_<seed>_test.tsv    the evaluation set

k is 16 for 82 tasks (classification-style: k examples per label) and 32 for
the other 78 (`shots(task)`; from the file names in CrossFit's
tasks/_md5sum.py). The test file is the same for all five seeds.

Each line is `input<TAB>output[<TAB>output...]`: tasks with several correct
answers (QA: kilt_nq, web_questions, ropes, duorc, ...) write the
alternatives as further TAB-separated fields (e.g. tasks/kilt_nq.py joins
them with "\t"). " [SEP] " occurs only inside some INPUTS (e.g. ropes:
"question: ... [SEP] situation: ... [SEP] background: ..."), never between
answers, so it is left alone. Lines are read as CrossFit reads them
(dataloader/fewshot_gym_singletask.py): `line.strip().split("\t")`, the
first field is the input and the rest the list of answers; a line without
any answer is skipped.

    inputs, outputs = load_task("data", "ag_news", seed=100, split="train")
    inputs[0]    # "Wall St. Bears Claw Back Into the Black ..."
    outputs[0]   # ["Business"]  (a list: every correct answer)

NOTE 1: CrossFit's single-task evaluation keeps only the first
  `CROSSFIT_TEST_LIMIT` = 10,000 test examples (`self.data[:10000]`); pass
  `limit=CROSSFIT_TEST_LIMIT` to `load_task` to do the same.
NOTE 2: CrossFit and the Polytropon code (microsoft/mttl,
  mttl/dataloader/xfit_dataset_readers.py) feed the model
  `" [<task>] <input>"`; `with_task_prefix` builds it. mttl pre-trains on the
  train and dev files of all five seeds of every training task
  (`load_partition`'s default) and trains on a random one of the answers.
"""

import json
import numbers
import os
import re

from zoo.extras import MissingDataError


# Sampling seeds of the few-shot files (CrossFit's tasks/*.py).
SEEDS = (13, 21, 42, 87, 100)
SPLITS = ("train", "dev", "test")
CROSSFIT_TEST_LIMIT = 10000

# The seven metric names, as CrossFit spells them.
METRIC_NAMES = (
    "Classification-F1", "ACC", "QA-F1", "EM", "Rouge-L",
    "Matthew-Correlation", "Pearson-Correlation",
)

# INK-USC/CrossFit dataloader/custom_tasks_splits/random.json, in its order.
_RANDOM_TRAIN = (
    "glue-mrpc", "math_qa", "quarel", "e2e_nlg_cleaned",
    "tweet_eval-stance_atheism", "lama-squad", "tab_fact", "aqua_rat",
    "tweet_eval-emoji", "glue-wnli", "codah", "tweet_eval-offensive", "wiki_qa",
    "blimp-ellipsis_n_bar_1", "openbookqa", "sms_spam", "acronym_identification",
    "blimp-determiner_noun_agreement_with_adj_irregular_1", "ethos-national_origin",
    "spider", "definite_pronoun_resolution", "hellaswag", "superglue-wsc",
    "numer_sense", "ade_corpus_v2-dosage", "blimp-ellipsis_n_bar_2", "kilt_ay2",
    "squad-no_context", "google_wellformed_query", "xsum", "wiqa",
    "tweet_eval-stance_abortion", "reddit_tifu-tldr", "ade_corpus_v2-effect",
    "qa_srl", "ethos-religion", "commonsense_qa", "jeopardy", "biomrc",
    "superglue-multirc", "ethos-race", "eli5-askh", "glue-qqp", "paws",
    "ethos-directed_vs_generalized", "glue-sst2", "mocha", "tweet_eval-hate",
    "glue-rte", "blimp-anaphor_number_agreement", "lama-conceptnet",
    "hate_speech_offensive", "superglue-wic", "boolq", "kilt_hotpotqa",
    "quartz-no_knowledge", "aslg_pc12", "sick", "tweet_eval-stance_climate",
    "tweet_eval-sentiment", "crows_pairs", "glue-mnli", "medical_questions_pairs",
    "break-QDMR-high-level", "qasc", "imdb", "ethos-gender", "trec-finegrained",
    "adversarialqa", "onestop_english", "web_questions", "duorc",
    "yelp_review_full", "swag", "proto_qa", "scitail", "tweet_eval-stance_feminist",
    "limit", "common_gen", "scicite", "blimp-irregular_past_participle_adjectives",
    "social_i_qa", "anli", "kilt_zsre", "cosmos_qa", "superglue-record",
    "squad-with_context", "emotion", "blimp-existential_there_quantifiers_1",
    "race-middle", "kilt_wow", "sciq", "wino_grande", "rotten_tomatoes",
    "superglue-cb", "poem_sentiment", "ropes", "reddit_tifu-title", "piqa",
    "climate_fever", "lama-google_re", "search_qa", "wiki_auto", "mc_taco",
    "blimp-wh_questions_object_gap", "hotpot_qa", "emo", "kilt_nq", "kilt_trex",
    "quartz-with_knowledge", "dbpedia_14", "yahoo_answers_topics", "app_reviews",
    "superglue-copa", "blimp-anaphor_gender_agreement", "hate_speech18", "gigaword",
    "multi_news", "aeslc", "quail",
)

_RANDOM_DEV = (
    "cos_e", "kilt_fever", "eli5-asks", "trec", "eli5-eli5", "art",
    "empathetic_dialogues", "tweet_qa", "wikisql", "lama-trex",
    "tweet_eval-stance_hillary", "discovery", "tweet_eval-emotion", "liar",
    "wiki_bio", "dream", "ade_corpus_v2-classification", "health_fact", "samsum",
    "financial_phrasebank",
)

_RANDOM_TEST = (
    "quoref", "wiki_split", "ethos-disability", "yelp_polarity", "superglue-rte",
    "glue-cola", "ethos-sexual_orientation", "blimp-sentential_negation_npi_scope",
    "ai2_arc", "amazon_polarity", "race-high",
    "blimp-sentential_negation_npi_licensor_present", "tweet_eval-irony",
    "break-QDMR", "crawl_domain", "freebase_qa", "glue-qnli", "hatexplain",
    "ag_news", "circa",
)

# INK-USC/CrossFit dataloader/metrics.py METRICS (sorted here).
TASK_METRICS = {
    "acronym_identification": "EM",
    "ade_corpus_v2-classification": "Classification-F1",
    "ade_corpus_v2-dosage": "EM",
    "ade_corpus_v2-effect": "EM",
    "adversarialqa": "QA-F1",
    "aeslc": "Rouge-L",
    "ag_news": "Classification-F1",
    "ai2_arc": "ACC",
    "amazon_polarity": "Classification-F1",
    "anli": "Classification-F1",
    "app_reviews": "Pearson-Correlation",
    "aqua_rat": "ACC",
    "art": "ACC",
    "aslg_pc12": "EM",
    "biomrc": "QA-F1",
    "blimp-anaphor_gender_agreement": "ACC",
    "blimp-anaphor_number_agreement": "ACC",
    "blimp-determiner_noun_agreement_with_adj_irregular_1": "ACC",
    "blimp-ellipsis_n_bar_1": "ACC",
    "blimp-ellipsis_n_bar_2": "ACC",
    "blimp-existential_there_quantifiers_1": "ACC",
    "blimp-irregular_past_participle_adjectives": "ACC",
    "blimp-sentential_negation_npi_licensor_present": "ACC",
    "blimp-sentential_negation_npi_scope": "ACC",
    "blimp-wh_questions_object_gap": "ACC",
    "boolq": "ACC",
    "break-QDMR": "EM",
    "break-QDMR-high-level": "EM",
    "circa": "Classification-F1",
    "climate_fever": "Classification-F1",
    "codah": "Classification-F1",
    "common_gen": "Rouge-L",
    "commonsense_qa": "ACC",
    "cos_e": "Rouge-L",
    "cosmos_qa": "ACC",
    "crawl_domain": "EM",
    "crows_pairs": "ACC",
    "dbpedia_14": "Classification-F1",
    "definite_pronoun_resolution": "ACC",
    "discovery": "Classification-F1",
    "dream": "ACC",
    "duorc": "QA-F1",
    "e2e_nlg_cleaned": "Rouge-L",
    "eli5-askh": "Rouge-L",
    "eli5-asks": "Rouge-L",
    "eli5-eli5": "Rouge-L",
    "emo": "Classification-F1",
    "emotion": "Classification-F1",
    "empathetic_dialogues": "Rouge-L",
    "ethos-directed_vs_generalized": "Classification-F1",
    "ethos-disability": "Classification-F1",
    "ethos-gender": "Classification-F1",
    "ethos-national_origin": "Classification-F1",
    "ethos-race": "Classification-F1",
    "ethos-religion": "Classification-F1",
    "ethos-sexual_orientation": "Classification-F1",
    "financial_phrasebank": "Classification-F1",
    "freebase_qa": "EM",
    "gigaword": "Rouge-L",
    "glue-cola": "Matthew-Correlation",
    "glue-mnli": "ACC",
    "glue-mrpc": "ACC",
    "glue-qnli": "ACC",
    "glue-qqp": "ACC",
    "glue-rte": "ACC",
    "glue-sst2": "ACC",
    "glue-wnli": "ACC",
    "google_wellformed_query": "ACC",
    "hate_speech18": "Classification-F1",
    "hate_speech_offensive": "Classification-F1",
    "hatexplain": "Classification-F1",
    "health_fact": "Classification-F1",
    "hellaswag": "ACC",
    "hotpot_qa": "QA-F1",
    "imdb": "Classification-F1",
    "jeopardy": "EM",
    "kilt_ay2": "EM",
    "kilt_fever": "ACC",
    "kilt_hotpotqa": "EM",
    "kilt_nq": "EM",
    "kilt_trex": "EM",
    "kilt_wow": "Rouge-L",
    "kilt_zsre": "EM",
    "lama-conceptnet": "EM",
    "lama-google_re": "EM",
    "lama-squad": "EM",
    "lama-trex": "EM",
    "liar": "Classification-F1",
    "limit": "EM",
    "math_qa": "ACC",
    "mc_taco": "ACC",
    "medical_questions_pairs": "ACC",
    "mocha": "Pearson-Correlation",
    "multi_news": "Rouge-L",
    "numer_sense": "EM",
    "onestop_english": "Classification-F1",
    "openbookqa": "ACC",
    "paws": "Classification-F1",
    "piqa": "ACC",
    "poem_sentiment": "Classification-F1",
    "proto_qa": "EM",
    "qa_srl": "EM",
    "qasc": "ACC",
    "quail": "ACC",
    "quarel": "ACC",
    "quartz-no_knowledge": "ACC",
    "quartz-with_knowledge": "ACC",
    "quoref": "QA-F1",
    "race-high": "ACC",
    "race-middle": "ACC",
    "reddit_tifu-title": "Rouge-L",
    "reddit_tifu-tldr": "Rouge-L",
    "ropes": "QA-F1",
    "rotten_tomatoes": "Classification-F1",
    "samsum": "Rouge-L",
    "scicite": "Classification-F1",
    "sciq": "ACC",
    "scitail": "Classification-F1",
    "search_qa": "EM",
    "sick": "Classification-F1",
    "sms_spam": "Classification-F1",
    "social_i_qa": "ACC",
    "spider": "EM",
    "squad-no_context": "EM",
    "squad-with_context": "QA-F1",
    "superglue-cb": "ACC",
    "superglue-copa": "ACC",
    "superglue-multirc": "EM",
    "superglue-record": "QA-F1",
    "superglue-rte": "ACC",
    "superglue-wic": "ACC",
    "superglue-wsc": "ACC",
    "swag": "ACC",
    "tab_fact": "Classification-F1",
    "trec": "Classification-F1",
    "trec-finegrained": "Classification-F1",
    "tweet_eval-emoji": "Classification-F1",
    "tweet_eval-emotion": "Classification-F1",
    "tweet_eval-hate": "Classification-F1",
    "tweet_eval-irony": "Classification-F1",
    "tweet_eval-offensive": "Classification-F1",
    "tweet_eval-sentiment": "Classification-F1",
    "tweet_eval-stance_abortion": "Classification-F1",
    "tweet_eval-stance_atheism": "Classification-F1",
    "tweet_eval-stance_climate": "Classification-F1",
    "tweet_eval-stance_feminist": "Classification-F1",
    "tweet_eval-stance_hillary": "Classification-F1",
    "tweet_qa": "QA-F1",
    "web_questions": "EM",
    "wiki_auto": "Classification-F1",
    "wiki_bio": "Rouge-L",
    "wiki_qa": "Classification-F1",
    "wiki_split": "Rouge-L",
    "wikisql": "EM",
    "wino_grande": "ACC",
    "wiqa": "ACC",
    "xsum": "Rouge-L",
    "yahoo_answers_topics": "Classification-F1",
    "yelp_polarity": "Classification-F1",
    "yelp_review_full": "Pearson-Correlation",
}

# Tasks whose files are <task>_16_<seed>_*.tsv (CrossFit tasks/_md5sum.py);
# every other task's are <task>_32_<seed>_*.tsv.
_SIXTEEN_SHOT_TASKS = (
    "ade_corpus_v2-classification", "ag_news", "amazon_polarity", "anli",
    "app_reviews", "art", "blimp-anaphor_gender_agreement",
    "blimp-anaphor_number_agreement",
    "blimp-determiner_noun_agreement_with_adj_irregular_1",
    "blimp-ellipsis_n_bar_1", "blimp-ellipsis_n_bar_2",
    "blimp-existential_there_quantifiers_1",
    "blimp-irregular_past_participle_adjectives",
    "blimp-sentential_negation_npi_licensor_present",
    "blimp-sentential_negation_npi_scope", "blimp-wh_questions_object_gap", "boolq",
    "circa", "climate_fever", "crows_pairs", "dbpedia_14", "discovery", "emo",
    "emotion", "ethos-directed_vs_generalized", "ethos-disability", "ethos-gender",
    "ethos-national_origin", "ethos-race", "ethos-religion",
    "ethos-sexual_orientation", "financial_phrasebank", "glue-cola", "glue-mnli",
    "glue-mrpc", "glue-qnli", "glue-qqp", "glue-rte", "glue-sst2", "glue-wnli",
    "google_wellformed_query", "hate_speech18", "hate_speech_offensive",
    "hatexplain", "health_fact", "imdb", "liar", "mc_taco",
    "medical_questions_pairs", "mocha", "onestop_english", "paws", "piqa",
    "poem_sentiment", "rotten_tomatoes", "scicite", "scitail", "sick", "sms_spam",
    "superglue-cb", "superglue-rte", "superglue-wic", "superglue-wsc", "tab_fact",
    "trec", "trec-finegrained", "tweet_eval-emoji", "tweet_eval-emotion",
    "tweet_eval-hate", "tweet_eval-irony", "tweet_eval-offensive",
    "tweet_eval-sentiment", "tweet_eval-stance_abortion",
    "tweet_eval-stance_atheism", "tweet_eval-stance_climate",
    "tweet_eval-stance_feminist", "tweet_eval-stance_hillary", "wiki_auto",
    "wiki_qa", "yahoo_answers_topics", "yelp_polarity", "yelp_review_full",
)


RANDOM_PARTITION = {
    "train": _RANDOM_TRAIN,
    "dev": _RANDOM_DEV,
    "test": _RANDOM_TEST,
}
ALL_TASKS = tuple(sorted(TASK_METRICS))
PARTITIONS = {"random": RANDOM_PARTITION}

_FILE_PATTERN = re.compile(
    r"^(?P<task>.+)_(?P<k>\d+)_(?P<seed>\d+)_(?P<split>train|dev|test)\.tsv$"
)
_LAYOUT = "<data_dir>/<task>/<task>_<k>_<seed>_{train,dev,test}.tsv"
_HOW_TO_GET = (
    "build it with the INK-USC/CrossFit repository (cd tasks && python "
    "_build_gym.py --build --n_proc=10; it downloads from Hugging Face datasets)"
)


def _known_task(task):
    if task not in TASK_METRICS:
        raise ValueError(
            f"Unknown CrossFit task {task!r}; the 160 tasks are "
            f"`crossfit.ALL_TASKS` (e.g. 'ag_news', 'glue-cola')."
        )
    return task


def task_metric(task):
    """The CrossFit metric of `task`, one of `METRIC_NAMES`.

    >>> task_metric("glue-cola"), task_metric("quoref"), task_metric("ag_news")
    ('Matthew-Correlation', 'QA-F1', 'Classification-F1')
    """
    return TASK_METRICS[_known_task(task)]


def shots(task):
    """k of `task`'s few-shot files: 16 (per label) or 32.

    >>> shots("ag_news"), shots("quoref")
    (16, 32)
    """
    return 16 if _known_task(task) in _SIXTEEN_SHOT_TASKS else 32


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; got {split!r}.")
    return split


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer; got {seed!r}.")
    return int(seed)


def partition_tasks(group="train", partition="random"):
    """The task names of one group of a partition, in the partition's order.

    Args:
        group: "train" (T_train, multitask pre-training), "dev" (T_dev) or
            "test" (T_eval, few-shot adaptation), or "all" (the three).
        partition: "random" (`RANDOM_PARTITION`), a dict like it, or the
            path of a CrossFit split file (a JSON dict with these keys, e.g.
            dataloader/custom_tasks_splits/*.json).

    Returns:
        A tuple of task names.

    >>> [len(partition_tasks(g)) for g in ("train", "dev", "test", "all")]
    [120, 20, 20, 160]
    >>> partition_tasks("test")[:3]
    ('quoref', 'wiki_split', 'ethos-disability')
    """
    if isinstance(partition, str) and partition in PARTITIONS:
        partition = PARTITIONS[partition]
    elif isinstance(partition, (str, os.PathLike)):
        if not os.path.isfile(partition):
            raise ValueError(
                f"`partition` must be one of {tuple(PARTITIONS)}, a dict or "
                f"the path of a JSON split file; got {partition!r}."
            )
        with open(partition, encoding="utf-8") as file:
            partition = json.load(file)
    if not isinstance(partition, dict):
        raise ValueError(f"`partition` must name, hold or point to a dict; got {partition!r}.")
    groups = ("train", "dev", "test")
    if group == "all":
        return tuple(task for name in groups for task in partition.get(name, ()))
    if group not in groups or group not in partition:
        raise ValueError(
            f"`group` must be one of {groups + ('all',)} (and a key of the "
            f"partition); got {group!r}."
        )
    return tuple(partition[group])


def task_file(data_dir, task, seed, split, k=None):
    """The path CrossFit gives one few-shot file (whether or not it exists).

    >>> task_file("data", "ag_news", 100, "train")
    'data/ag_news/ag_news_16_100_train.tsv'
    >>> task_file("data", "my_task", 13, "dev", k=8)
    'data/my_task/my_task_8_13_dev.tsv'
    """
    _check_split(split)
    _check_seed(seed)
    if k is None:
        k = shots(task)
    return os.path.join(os.fspath(data_dir), task, f"{task}_{k}_{seed}_{split}.tsv")


def _missing(data_dir, paths):
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    where = (
        f"the directory {os.fspath(data_dir)!r} does not exist"
        if not os.path.isdir(data_dir)
        else f"missing {len(paths)} file(s): {shown}"
    )
    return MissingDataError(
        f"CrossFit data not found: {where}. Expected the layout {_LAYOUT} "
        f"(k = 16 or 32, seeds {', '.join(map(str, SEEDS))}); {_HOW_TO_GET}."
    )


def _expected_path(data_dir, task, seed, split, k):
    """The file name to report when a file is missing."""
    if k is not None or task in TASK_METRICS:
        return task_file(data_dir, task, seed, split, k)
    return os.path.join(os.fspath(data_dir), task, f"{task}_<k>_{seed}_{split}.tsv")


def _locate(data_dir, task, seed, split, k):
    """The path of one few-shot file, or None when there is none."""
    if k is not None:
        path = task_file(data_dir, task, seed, split, k)
        return path if os.path.isfile(path) else None
    if task in TASK_METRICS:
        path = task_file(data_dir, task, seed, split)
        if os.path.isfile(path):
            return path
    directory = os.path.join(os.fspath(data_dir), task)
    if not os.path.isdir(directory):
        return None
    matches = []
    for name in sorted(os.listdir(directory)):
        match = _FILE_PATTERN.match(name)
        if (
            match
            and match["task"] == task
            and int(match["seed"]) == seed
            and match["split"] == split
        ):
            matches.append(os.path.join(directory, name))
    if len(matches) > 1:
        raise ValueError(
            f"Several k-shot files match {task!r}, seed {seed}, {split}: "
            f"{matches}; pass `k`."
        )
    return matches[0] if matches else None


def find_task_file(data_dir, task, seed, split, k=None):
    """The path of one few-shot file, or a `MissingDataError`.

    With `k=None`, k is `shots(task)` for CrossFit's tasks; for a task that
    is not one of them (or when that file is absent) the single file
    `<task>_<any k>_<seed>_<split>.tsv` of the task's directory is used.
    """
    _check_split(split)
    _check_seed(seed)
    path = _locate(data_dir, task, seed, split, k)
    if path is None:
        raise _missing(data_dir, [_expected_path(data_dir, task, seed, split, k)])
    return path


def read_tsv(path, limit=None):
    """Reads one CrossFit TSV file as CrossFit does.

    Args:
        path: the file (UTF-8).
        limit: None, or keep only the first `limit` examples.

    Returns:
        `(inputs, outputs)`: a list of input strings and a list of lists of
        answers (every correct answer of the example, at least one).
    """
    inputs, outputs = [], []
    with open(path, encoding="utf-8") as file:
        for line in file:
            fields = line.strip().split("\t")
            if len(fields) < 2:
                continue  # CrossFit skips a line with no answer ("empty line?")
            inputs.append(fields[0])
            outputs.append(fields[1:])
            if limit is not None and len(inputs) >= limit:
                break
    return inputs, outputs


def load_task(data_dir, task, seed=100, split="train", k=None, limit=None):
    """One few-shot file of one task.

    Args:
        data_dir: the directory holding one sub-directory per task.
        task: the task name (e.g. "ag_news"); any name that follows the
            layout works, CrossFit's or not.
        seed: one of the sampling seeds `SEEDS` (13, 21, 42, 87, 100).
        split: "train", "dev" or "test".
        k: None (`shots(task)` for a CrossFit task, else whatever k the
            task's files have) or the k of the file name.
        limit: None, or keep only the first `limit` examples
            (`CROSSFIT_TEST_LIMIT` reproduces CrossFit's test evaluation).

    Returns:
        `(inputs, outputs)`: lists of equal length; `outputs[i]` is the list
        of correct answers of `inputs[i]`.

    Raises:
        MissingDataError: the file is not there (the message gives the
            expected layout and how to build the data).

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "web_questions"))
    >>> with open(task_file(root, "web_questions", 13, "dev"), "w") as f:
    ...     _ = f.write("who is it?\\tbob\\tbobby\\nwhere?\\tparis\\n")
    >>> load_task(root, "web_questions", seed=13, split="dev")
    (['who is it?', 'where?'], [['bob', 'bobby'], ['paris']])
    >>> load_task(root, "web_questions", seed=21, split="dev")
    Traceback (most recent call last):
    ...
    zoo.extras.MissingDataError: CrossFit data not found: missing 1 file(s): .../web_questions/web_questions_32_21_dev.tsv. Expected the layout <data_dir>/<task>/<task>_<k>_<seed>_{train,dev,test}.tsv (k = 16 or 32, seeds 13, 21, 42, 87, 100); build it with ...
    """
    return read_tsv(find_task_file(data_dir, task, seed, split, k), limit=limit)


def load_partition(
    data_dir,
    group="train",
    partition="random",
    seeds=SEEDS,
    splits=("train", "dev"),
    k=None,
):
    """Every task of one group of a partition, several seeds and splits
    concatenated per task (multitask pre-training data).

    The default, the train and dev files of all five seeds of each task,
    is what the Polytropon code pre-trains on ("we concatenate all D_train
    and D_dev from T_train", Section 4.1). A test file, the same for every
    seed, is read once (from the first seed) when `splits` has "test".

    Args:
        data_dir: the CrossFit data directory.
        group, partition: as in `partition_tasks`.
        seeds: the sampling seeds to read.
        splits: the splits to read, among "train", "dev" and "test".
        k: as in `load_task`.

    Returns:
        A dict, task name -> `(inputs, outputs)` (as `load_task`), in the
        partition's order; examples in seed order, then split order.

    Raises:
        MissingDataError: some files are missing (all are checked first; the
            message counts them and names the first three).
    """
    tasks = partition_tasks(group, partition)
    seeds = tuple(_check_seed(seed) for seed in seeds)
    splits = tuple(_check_split(split) for split in splits)
    if not seeds or not splits:
        raise ValueError("`seeds` and `splits` must not be empty.")
    plan, missing = {}, []
    for task in tasks:
        plan[task] = []
        for index, seed in enumerate(seeds):
            for split in splits:
                if split == "test" and index > 0:
                    continue  # the same test file for every seed
                path = _locate(data_dir, task, seed, split, k)
                if path is None:
                    missing.append(_expected_path(data_dir, task, seed, split, k))
                plan[task].append(path)
    if missing:
        raise _missing(data_dir, missing)
    data = {}
    for task, files in plan.items():
        inputs, outputs = [], []
        for path in files:
            more_inputs, more_outputs = read_tsv(path)
            inputs += more_inputs
            outputs += more_outputs
        data[task] = (inputs, outputs)
    return data


def with_task_prefix(task, inputs):
    """The model inputs CrossFit and mttl build: `" [<task>] <input>"`.

    >>> with_task_prefix("boolq", ["is it?"])
    [' [boolq] is it?']
    """
    return [f" [{task}] {text}" for text in inputs]
