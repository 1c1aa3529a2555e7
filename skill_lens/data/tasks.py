"""Classification tasks: a :class:`Task` holds train/dev/test :class:`Split` s, its label names, the label words
of its verbalizer and a hard prompt; :meth:`Task.binarize` makes a binary subtask. Everything is checked when it
is made: a split has as many labels as texts, texts are strings, labels are ids of the task's label set.

Tasks come from :func:`skill_lens.data.sources.load_task` (named corpora, local files, the Hugging Face hub)
or from lists (:meth:`Task.from_lists`).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import random
from dataclasses import dataclass, field, replace
from typing import Sequence

__all__ = ["Split", "Task", "TaskError", "SPLITS"]

SPLITS = ("train", "dev", "test")


class TaskError(ValueError):
    """A task cannot be loaded or built as asked; the message names the problem and the fix."""


def _check_texts(texts: Sequence, what: str) -> None:
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TaskError(f"{what} {bad} is {texts[bad]!r} ({type(texts[bad]).__name__}), not a string; "
                        "give every example a string (drop missing ones, str() numbers)")


def _check_labels(labels: Sequence, label_names: Sequence[str] | None = None, where: str = "") -> None:
    """Labels are integers (bools and numpy integers too), and with ``label_names`` in ``0..n_labels-1``."""
    n = None if label_names is None else len(label_names)
    for i, y in enumerate(labels):
        if not isinstance(y, numbers.Integral) or n is not None and not 0 <= y < n:
            expected = ("an integer index into the task's label names" if n is None
                        else f"an integer 0..{n - 1} indexing the label set {list(label_names)}")
            raise TaskError(f"{where}example {i} has label {y!r}, not {expected}; fix the labels (or the label names)")


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"skill_lens.tasks/{purpose}/{seed}")  # str seeds go through SHA-512: stable


def _by_class(labels: Sequence[int], rng: random.Random) -> list[list[int]]:
    """Shuffled example indices of each class, classes in label order."""
    groups: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    return [rng.sample(groups[y], len(groups[y])) for y in sorted(groups)]


def _stratified_order(labels: Sequence[int], rng: random.Random) -> list[int]:
    """All indices, classes interleaved in proportion to their sizes: every prefix is stratified."""
    keyed = [(r / len(idx), c, i) for c, idx in enumerate(_by_class(labels, rng)) for r, i in enumerate(idx)]
    return [i for _, _, i in sorted(keyed)]


@dataclass
class Split:
    """Texts (and second texts for sentence pairs) with integer labels.

    >>> s = Split(["a", "b", "c", "d"], [0, 1, 0, 1], ["w", "x", "y", "z"])
    >>> len(s), s.subset([3, 0]).texts_b, s.counts(3)
    (4, ['z', 'w'], [2, 2, 0])
    """

    texts: list[str]
    labels: list[int]
    texts_b: list[str] | None = None

    def __post_init__(self):
        if len(self.labels) != len(self.texts) or self.texts_b is not None and len(self.texts_b) != len(self.texts):
            raise TaskError("a split needs as many labels (and second texts) as texts")
        _check_texts(self.texts, "text")
        if self.texts_b is not None:
            _check_texts(self.texts_b, "second text (texts_b)")
        _check_labels(self.labels)
        self.labels = [int(y) for y in self.labels]  # numpy integers and bools: JSON-able for the fingerprint

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> "Split":
        """The examples at ``idx``, in that order."""
        b = None if self.texts_b is None else [self.texts_b[i] for i in idx]
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx], b)

    def take(self, n: int | None, seed: int) -> "Split":
        """A seeded, shuffled sample of ``n`` examples, stratified by label (all when n is None or >= len).

        >>> s = Split([str(i) for i in range(10)], [0] * 8 + [1] * 2)
        >>> sorted(s.take(3, seed=1).labels), s.take(3, seed=1) == s.take(3, seed=1), s.take(None, 0) is s
        ([0, 0, 1], True, True)
        """
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1):
            raise TaskError(f"a sample size must be a whole number of at least 1 (or None: all), got {n!r}")
        if n is None or n >= len(self):
            return self
        rng = _rng(seed, "take")
        idx = _stratified_order(self.labels, rng)[:n]
        rng.shuffle(idx)
        return self.subset(idx)

    def carve(self, n: int, seed: int, purpose: str) -> tuple["Split", "Split"]:
        """The first ``n`` of a seeded stratified order, and the rest in the original order.

        >>> dev, rest = Split([str(i) for i in range(6)], [0, 0, 0, 1, 1, 1]).carve(2, seed=0, purpose="dev")
        >>> sorted(dev.labels), len(rest)
        ([0, 1], 4)
        """
        order = _stratified_order(self.labels, _rng(seed, purpose))
        return self.subset(order[:n]), self.subset(sorted(order[n:]))

    def balanced(self, seed: int) -> "Split":
        """Every class downsampled to the size of the smallest one (original order kept)."""
        return _balance(self, seed)

    def counts(self, n_labels: int) -> list[int]:
        """How many examples carry each label ``0..n_labels-1``."""
        return [self.labels.count(y) for y in range(n_labels)]


def _balance(split: Split, seed: int) -> Split:
    """Downsample every class to the size of the smallest one (original order kept)."""
    groups = _by_class(split.labels, _rng(seed, "balance"))
    m = min(map(len, groups), default=0)
    return split.subset(sorted(i for idx in groups for i in idx[:m]))


def _schemes(names: list[str]) -> list[str]:
    return ([f"{a}-vs-{b}" for a in names for b in names if a != b] + [f"{a}-vs-rest" for a in names]
            + [f"one-vs-rest:{a}" for a in names])


@dataclass
class Task:
    """A classification task: label names, one verbalizer word per label, three splits, a hard prompt.

    >>> t = Task.from_lists("toy", ["negative", "positive"], train=(["bad", "good"], [0, 1]),
    ...                     dev=(["awful"], [0]), test=(["great"], [1]), hard_prompt="Review: {text}\\nSentiment:")
    >>> t.n_labels, t.label_words, list(t.splits()), len(t.train)
    (2, ['negative', 'positive'], ['train', 'dev', 'test'], 2)
    """

    name: str
    label_names: list[str]
    label_words: list[str]
    train: Split
    dev: Split
    test: Split
    hard_prompt: str = "{text}\nAnswer:"
    source: str = ""
    clamped: dict = field(default_factory=dict)  # split -> {"requested": n, "available": m} (load_task(clamp=True))

    def __post_init__(self):
        for split, s in self.splits().items():
            _check_labels(s.labels, self.label_names, f"the {split} split of {self.name!r}: ")

    @classmethod
    def from_lists(cls, name: str, label_names: list[str], label_words: list[str] | None = None, *,
                   train, dev, test, hard_prompt: str = "{text}\nAnswer:", source: str = "") -> "Task":
        """Build a task from ``(texts, labels)`` or ``(texts, labels, texts_b)`` tuples (or Splits).

        >>> Task.from_lists("pairs", ["no", "yes"], train=(["a"], [1], ["b"]), dev=([], []), test=([], [])).train
        Split(texts=['a'], labels=[1], texts_b=['b'])
        """
        for split, x in zip(SPLITS, (train, dev, test)):  # before Split's own check, to name the label set
            if not isinstance(x, Split) and len(x) > 1:
                _check_labels(list(x[1]), label_names, f"the {split} split of {name!r}: ")
        sp = [x if isinstance(x, Split) else Split(*(list(v) for v in x)) for x in (train, dev, test)]
        return cls(name, list(label_names), list(label_words or label_names), *sp, hard_prompt, source)

    @property
    def n_labels(self) -> int:
        """The number of labels."""
        return len(self.label_names)

    def splits(self) -> dict[str, Split]:
        """``{"train": ..., "dev": ..., "test": ...}``."""
        return {s: getattr(self, s) for s in SPLITS}

    def fingerprint(self) -> str:
        """SHA-256 over the name, label words and every split's texts and labels (stable across processes).

        >>> t = _toy()
        >>> t.fingerprint() == _toy().fingerprint(), t.fingerprint() == t.with_label_words("abc").fingerprint()
        (True, False)
        """
        data = [self.name, self.label_words] + [[s.texts, s.labels, s.texts_b] for s in self.splits().values()]
        return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()

    def describe(self) -> dict:
        """A JSON-able summary: name, source, labels, words, prompt, split sizes and label counts
        (and ``clamped``: the splits smaller than asked for, when :func:`load_task` clamped them).

        >>> _toy().describe()["splits"]["dev"]
        {'size': 2, 'label_counts': {'negative': 1, 'neutral': 0, 'positive': 1}}
        """
        out = {"name": self.name, "source": self.source, "label_names": self.label_names,
               "label_words": self.label_words, "hard_prompt": self.hard_prompt,
               "splits": {k: {"size": len(s), "label_counts": dict(zip(self.label_names, s.counts(self.n_labels)))}
                          for k, s in self.splits().items()}}
        return {**out, "clamped": self.clamped} if self.clamped else out

    def with_label_words(self, words: list[str]) -> "Task":
        """The same task with other verbalizer words.

        >>> _toy().with_label_words(["bad", "meh", "good"]).label_words
        ['bad', 'meh', 'good']
        """
        if len(words) != self.n_labels:
            raise TaskError(f"{self.name} has {self.n_labels} labels {self.label_names}; "
                            f"got {len(words)} label words {words}")
        return replace(self, label_words=list(words))

    def binarize(self, scheme: str, seed: int = 0) -> "Task":
        """A balanced binary subtask. ``"A-vs-B"``: keep labels A and B, 1 = A. ``"A-vs-rest"`` (or
        ``"one-vs-rest:A"``): 1 = A, 0 = every other label, asked as a yes/no question.

        >>> t = _toy().binarize("positive-vs-negative")
        >>> t.label_names, t.train.texts, t.train.labels
        (['negative', 'positive'], ['bad', 'good'], [0, 1])
        >>> _toy().binarize("neutral-vs-rest").label_words
        ['no', 'yes']
        """
        if scheme not in _schemes(self.label_names):
            raise TaskError(f"unknown binary scheme {scheme!r} for {self.name}; "
                            f"valid schemes: {', '.join(_schemes(self.label_names))}")
        a, _, b = scheme.removeprefix("one-vs-rest:").partition("-vs-")
        pos = self.label_names.index(a)
        if b in ("", "rest"):
            keep, names, words = range(self.n_labels), [f"not_{a}", a], ["no", "yes"]
            prompt = self.hard_prompt.rsplit("\n", 1)[0] + f"\nIs it {a}? Answer:"
        else:
            neg = self.label_names.index(b)
            keep, names, prompt = (neg, pos), [b, a], self.hard_prompt
            words = [self.label_words[neg], self.label_words[pos]]

        def convert(s: Split) -> Split:
            s = s.subset([i for i, y in enumerate(s.labels) if y in keep])
            return _balance(Split(s.texts, [int(y == pos) for y in s.labels], s.texts_b), seed)

        return replace(self, name=f"{self.name}_{scheme.replace(':', '_')}", label_names=names, label_words=words,
                       hard_prompt=prompt, **{k: convert(s) for k, s in self.splits().items()})


def _toy() -> Task:
    """A three-label task for doctests."""
    return Task.from_lists("toy", ["negative", "neutral", "positive"], train=(["bad", "ok", "good"], [0, 1, 2]),
                           dev=(["awful", "fine"], [0, 2]), test=(["meh", "great"], [1, 2]),
                           hard_prompt="{text}\nSentiment:")
