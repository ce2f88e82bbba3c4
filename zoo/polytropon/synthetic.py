"""An offline few-shot text benchmark whose tasks are compositions of latent
skills. Pure Python and NumPy, generated in-process from a seed.

Not from the Polytropon paper: a stand-in for CrossFit (crossfit.py) that
needs no download and whose ground-truth task-skill structure is known, so
that a learned allocation Z can be compared with it and the EXPERT baseline
can be given it.

Words are single lower-case letters (the first `num_letters` of the
alphabet). A primitive is a string-to-string function on a sequence of
letters separated by single spaces (`PRIMITIVES`, in this order):

    reverse     a b c -> c b a
    shift       every letter to the next one, the last wrapping to "a"
    drop_first  a b c -> b c
    duplicate   a b c -> a a b b c c
    sort        c a b -> a b c
    rotate      a b c -> b c a   (the first letter moved to the end)
    swap_pairs  a b c d e -> b a d c e
    drop_last   a b c -> a b
    next_vowel  every vowel to the next vowel of the alphabet (a->e->i->...)
    mirror      a b c -> a b c c b a

`make_synthetic_benchmark(num_primitives=P, skills_per_task=K)` uses the
first P primitives; a task applies K distinct ones in order (its name joins
them with "+", "reverse+shift" = shift(reverse(x))). The input is the letter
sequence alone; only the task id says which composition to apply. Candidate
compositions are kept only when

* every primitive matters: the composition differs from each of its
  (K-1)-primitive sub-compositions (and from the identity) on a fixed probe
  set of 256 inputs (e.g. "reverse+sort" is just "sort" and is dropped);
* it is a new function: two compositions equal on the probes (e.g.
  "reverse+shift" and "shift+reverse") count once (a seeded choice);
* its outputs fit: output length <= `max_output_length` for some input
  length >= `min_length` (input lengths of the task are capped so that every
  output fits), and no output is empty.

Then `num_heldout_tasks` and `num_train_tasks` of them are drawn (redrawn
until every one of the P primitives occurs in some training task, so that a
held-out task is a NEW composition of skills all seen in training). Training
tasks have `examples_per_task` training examples; held-out tasks have
`few_shot` training and `few_shot` development examples (CrossFit's k-shot
train / dev); every task has `eval_examples` test examples and training tasks
`eval_examples` development examples. Inputs are distinct within a task
(no test input of a task is one of its training inputs).

Task ids: training tasks 0..T-1, held-out tasks T..T+H-1 (new rows of the
allocation, as in Polytropon's few-shot adaptation). `task_skill_matrix`
(T+H, P) is 1 where a task uses a primitive.

The metric is CrossFit's "ACC" (metrics.accuracy: the whole output string,
case-insensitive): exact-match accuracy. CrossFit's "EM" would be wrong here:
its SQuAD normalisation deletes the word "a" (an article).

NOTE: the benchmark is ours; the defaults (6 primitives, pairs, 12 training
and 4 held-out tasks, 10 letters, 3-8 input letters) are not paper settings.
"""

import dataclasses
import itertools

import numpy as np

from zoo.polytropon.metrics import accuracy

METRIC = "ACC"
VOWELS = "aeiou"


def _reverse(tokens, letters):
    return tokens[::-1]


def _shift(tokens, letters):
    return [letters[(letters.index(t) + 1) % len(letters)] for t in tokens]


def _drop_first(tokens, letters):
    return tokens[1:]


def _duplicate(tokens, letters):
    return [t for t in tokens for _ in range(2)]


def _sort(tokens, letters):
    return sorted(tokens)


def _rotate(tokens, letters):
    return tokens[1:] + tokens[:1]


def _swap_pairs(tokens, letters):
    out = list(tokens)
    for i in range(0, len(out) - 1, 2):
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _drop_last(tokens, letters):
    return tokens[:-1]


def _next_vowel(tokens, letters):
    vowels = [v for v in VOWELS if v in letters]
    return [vowels[(vowels.index(t) + 1) % len(vowels)] if t in vowels else t for t in tokens]


def _mirror(tokens, letters):
    return tokens + tokens[::-1]


# name -> function(list of letters, alphabet) -> list of letters.
PRIMITIVES = {
    "reverse": _reverse,
    "shift": _shift,
    "drop_first": _drop_first,
    "duplicate": _duplicate,
    "sort": _sort,
    "rotate": _rotate,
    "swap_pairs": _swap_pairs,
    "drop_last": _drop_last,
    "next_vowel": _next_vowel,
    "mirror": _mirror,
}
PRIMITIVE_NAMES = tuple(PRIMITIVES)

_NUM_PROBES = 256
_PROBE_SEED = 20220228  # fixed: the candidate filter does not depend on `seed`


def apply_primitives(primitives, text, letters):
    """Applies primitives (names, in order) to a space-separated text.

    >>> apply_primitives(("reverse", "shift"), "a b j", "abcdefghij")
    'a c b'
    >>> apply_primitives(("duplicate", "drop_first"), "c a b", "abcdefghij")
    'c a a b b'
    """
    tokens = text.split()
    for name in primitives:
        tokens = PRIMITIVES[name](tokens, letters)
    return " ".join(tokens)


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """One composition task.

    Attributes:
        name: the primitives joined by "+", in the order they apply.
        primitives: tuple of primitive names.
        task_id: int, the task's row of the allocation.
        letters: the alphabet (str).
        train, dev, test: tuples of `(input_text, output_text)`.
    """

    name: str
    primitives: tuple
    task_id: int
    letters: str
    train: tuple
    dev: tuple
    test: tuple

    def apply(self, text):
        """The task's output for an input text."""
        return apply_primitives(self.primitives, text, self.letters)

    def examples(self, split):
        """The `(input_text, output_text)` pairs of one split."""
        if split not in ("train", "dev", "test"):
            raise ValueError(f"`split` must be 'train', 'dev' or 'test'; got {split!r}.")
        return getattr(self, split)

    def score(self, predictions, split="test"):
        """Exact-match accuracy ("ACC") of predictions for one split."""
        return accuracy(predictions, [output for _, output in self.examples(split)])


def as_rows(tasks, split, shuffle_seed=None):
    """`(encoder_text, decoder_text, task_id)` rows of several tasks.

    Args:
        tasks: an iterable of `SyntheticTask`s.
        split: "train", "dev" or "test".
        shuffle_seed: None keeps task order (then example order); an int
            shuffles the rows with `numpy.random.default_rng(shuffle_seed)`.

    Returns:
        A list of tuples.
    """
    rows = [(i, o, task.task_id) for task in tasks for i, o in task.examples(split)]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(rows))
        rows = [rows[j] for j in order]
    return rows


@dataclasses.dataclass(frozen=True)
class SyntheticBenchmark:
    """The benchmark `make_synthetic_benchmark` returns.

    Attributes:
        primitives: tuple of the P primitive names used.
        letters: the alphabet, a str.
        train_tasks: tuple of T `SyntheticTask`s (ids 0..T-1).
        heldout_tasks: tuple of H `SyntheticTask`s (ids T..T+H-1).
        task_skill_matrix: int32 (T+H, P), 1 where task t uses primitive p.
    """

    primitives: tuple
    letters: str
    train_tasks: tuple
    heldout_tasks: tuple
    task_skill_matrix: np.ndarray

    @property
    def tasks(self):
        """Training then held-out tasks (index = task id)."""
        return self.train_tasks + self.heldout_tasks

    def vocabulary(self):
        """Every word of every input and output: the letters, sorted."""
        return sorted(self.letters)

    def as_rows(self, split="train", which="train", shuffle_seed=None):
        """`as_rows` of the "train", "heldout" or "all" tasks."""
        groups = {"train": self.train_tasks, "heldout": self.heldout_tasks, "all": self.tasks}
        if which not in groups:
            raise ValueError(f"`which` must be one of {tuple(groups)}; got {which!r}.")
        return as_rows(groups[which], split, shuffle_seed=shuffle_seed)


def _positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _output_length(primitives, length, letters):
    return len(apply_primitives(primitives, " ".join(letters[0] * length), letters).split())


def _max_input_length(primitives, letters, min_length, max_length, max_output_length):
    """The longest input length whose output fits, or None (none fits, or an
    output of the shortest inputs is empty)."""
    if _output_length(primitives, min_length, letters) < 1:
        return None
    fitting = [
        length
        for length in range(min_length, max_length + 1)
        if _output_length(primitives, length, letters) <= max_output_length
    ]
    return max(fitting) if fitting else None


def _random_text(rng, letters, min_length, max_length):
    length = int(rng.integers(min_length, max_length + 1))
    return " ".join(letters[i] for i in rng.integers(len(letters), size=length))


def make_synthetic_benchmark(
    num_primitives=6,
    skills_per_task=2,
    num_train_tasks=12,
    num_heldout_tasks=4,
    examples_per_task=200,
    few_shot=16,
    eval_examples=50,
    num_letters=10,
    min_length=3,
    max_length=8,
    max_output_length=16,
    seed=0,
):
    """Builds the synthetic skill-composition benchmark (module docstring).

    Args:
        num_primitives: P, uses the first P of `PRIMITIVE_NAMES` (1..10).
        skills_per_task: K, primitives per task (distinct, ordered).
        num_train_tasks: T, tasks for multitask training.
        num_heldout_tasks: H (>= 0), new compositions for few-shot adaptation.
        examples_per_task: training examples of each training task.
        few_shot: training and development examples of each held-out task.
        eval_examples: test examples of every task and development examples
            of each training task.
        num_letters: the alphabet is its first `num_letters` letters (2..26).
        min_length, max_length: input lengths in letters (per task capped so
            that outputs fit).
        max_output_length: the longest output, in letters.
        seed: non-negative int; the same arguments give the same benchmark.

    Returns:
        A `SyntheticBenchmark`.

    Raises:
        ValueError: bad arguments, or fewer valid compositions than T + H
            (the message gives how many there are).

    >>> bench = make_synthetic_benchmark(seed=0)
    >>> len(bench.train_tasks), len(bench.heldout_tasks), bench.task_skill_matrix.shape
    (12, 4, (16, 6))
    >>> task = bench.heldout_tasks[0]
    >>> task.task_id, len(task.train), len(task.dev), len(task.test)
    (12, 16, 16, 50)
    >>> text, target = task.test[0]
    >>> task.apply(text) == target
    True
    >>> bench.vocabulary()
    ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j']
    >>> bench.as_rows("train", which="heldout")[0][2]
    12
    """
    num_primitives = _positive_int(num_primitives, "num_primitives")
    if num_primitives > len(PRIMITIVES):
        raise ValueError(
            f"`num_primitives` must be at most {len(PRIMITIVES)}; got {num_primitives}."
        )
    skills_per_task = _positive_int(skills_per_task, "skills_per_task")
    if skills_per_task > num_primitives:
        raise ValueError(
            f"`skills_per_task` ({skills_per_task}) must not exceed "
            f"`num_primitives` ({num_primitives})."
        )
    num_train_tasks = _positive_int(num_train_tasks, "num_train_tasks")
    num_heldout_tasks = _positive_int(num_heldout_tasks, "num_heldout_tasks", minimum=0)
    examples_per_task = _positive_int(examples_per_task, "examples_per_task")
    few_shot = _positive_int(few_shot, "few_shot")
    eval_examples = _positive_int(eval_examples, "eval_examples")
    num_letters = _positive_int(num_letters, "num_letters", minimum=2)
    if num_letters > 26:
        raise ValueError(f"`num_letters` must be at most 26; got {num_letters}.")
    min_length = _positive_int(min_length, "min_length")
    max_length = _positive_int(max_length, "max_length", minimum=min_length)
    max_output_length = _positive_int(max_output_length, "max_output_length")
    seed = _positive_int(seed, "seed", minimum=0)

    letters = "abcdefghijklmnopqrstuvwxyz"[:num_letters]
    names = PRIMITIVE_NAMES[:num_primitives]
    probe_rng = np.random.default_rng(_PROBE_SEED)
    probes = [_random_text(probe_rng, letters, min_length, max_length) for _ in range(_NUM_PROBES)]

    def signature(primitives):
        return tuple(apply_primitives(primitives, probe, letters) for probe in probes)

    identity = tuple(probes)
    candidates = []
    for combo in itertools.permutations(names, skills_per_task):
        cap = _max_input_length(combo, letters, min_length, max_length, max_output_length)
        if cap is None:
            continue
        own = signature(combo)
        subs = {signature(combo[:i] + combo[i + 1:]) for i in range(len(combo))}
        if own == identity or own in subs:
            continue
        candidates.append((combo, cap, own))

    rng = np.random.default_rng(seed)
    unique, seen = [], set()
    for index in rng.permutation(len(candidates)):
        combo, cap, own = candidates[index]
        if own not in seen:
            seen.add(own)
            unique.append((combo, cap))
    needed = num_train_tasks + num_heldout_tasks
    if len(unique) < needed:
        raise ValueError(
            f"Only {len(unique)} distinct compositions of {skills_per_task} of "
            f"{num_primitives} primitives fit; asked for {num_train_tasks} + "
            f"{num_heldout_tasks} tasks."
        )
    for _ in range(1000):
        order = rng.permutation(len(unique))
        heldout = [unique[i] for i in order[:num_heldout_tasks]]
        train = [unique[i] for i in order[num_heldout_tasks:needed]]
        if {name for combo, _ in train for name in combo} == set(names):
            break
    else:
        raise ValueError(
            f"Could not draw {num_train_tasks} training tasks that use all "
            f"{num_primitives} primitives; use more training tasks."
        )
    order_key = lambda item: [names.index(name) for name in item[0]]  # noqa: E731
    train, heldout = sorted(train, key=order_key), sorted(heldout, key=order_key)

    def build(task_id, combo, cap, sizes):
        task_rng = np.random.default_rng((seed, task_id))
        total = sum(sizes)
        texts, seen_texts = [], set()
        for _ in range(100 * total + 1000):
            text = _random_text(task_rng, letters, min_length, cap)
            if text not in seen_texts:
                seen_texts.add(text)
                texts.append(text)
                if len(texts) == total:
                    break
        if len(texts) < total:
            raise ValueError(
                f"Task {'+'.join(combo)}: not enough distinct inputs of "
                f"{min_length}-{cap} letters; use more letters or fewer examples."
            )
        pairs = tuple((text, apply_primitives(combo, text, letters)) for text in texts)
        a, b = sizes[0], sizes[0] + sizes[1]
        return SyntheticTask(
            name="+".join(combo),
            primitives=combo,
            task_id=task_id,
            letters=letters,
            train=pairs[:a],
            dev=pairs[a:b],
            test=pairs[b:],
        )

    train_tasks = tuple(
        build(i, combo, cap, (examples_per_task, eval_examples, eval_examples))
        for i, (combo, cap) in enumerate(train)
    )
    heldout_tasks = tuple(
        build(num_train_tasks + j, combo, cap, (few_shot, few_shot, eval_examples))
        for j, (combo, cap) in enumerate(heldout)
    )
    matrix = np.zeros((needed, num_primitives), np.int32)
    for task in train_tasks + heldout_tasks:
        for name in task.primitives:
            matrix[task.task_id, names.index(name)] = 1
    return SyntheticBenchmark(
        primitives=names,
        letters=letters,
        train_tasks=train_tasks,
        heldout_tasks=heldout_tasks,
        task_skill_matrix=matrix,
    )
