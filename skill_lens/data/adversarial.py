"""Text corruptions (offline, seeded) and AdvGLUE loading.

Every corruption maps a list of texts to a new list of the same length and order, so
text ``i`` of the output is the corrupted version of text ``i`` of the input (labels keep
their pairing). Text ``i`` is corrupted with its own ``random.Random(f"{seed}:{i}")``:
string seeds are hashed with SHA-512, so results never depend on ``PYTHONHASHSEED``.
All functions are linear in the text length and work on Python ``str`` characters:
a letter keeps its combining marks (an ``e`` + U+0301 moves or disappears as one unit),
and only letters (``str.isalpha``) are edited by :func:`typos`.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

TYPO_KINDS = ("swap", "delete", "insert", "keyboard")
DEFAULT_DISTRACTORS = (  # the "distraction" sets of Naik et al. (2018) stress tests
    "and true is true.",
    "and false is not true.",
    "and true is true and true is true and true is true and true is true and true is true.",
)
ADV_GLUE_FIELDS = {  # task -> (first text field, second text field or None)
    "sst2": ("sentence", None), "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
    "mnli-mm": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
}  # fmt: skip
_HF_CONFIGS = {"mnli-mm": "adv_mnli_mismatched"}


def _qwerty() -> dict[str, str]:
    """Neighbours on a staggered QWERTY layout (keys closer than one key width)."""
    rows = [("qwertyuiop", 0.0), ("asdfghjkl", 0.25), ("zxcvbnm", 0.75)]
    keys = [(ch, r, i + off) for r, (row, off) in enumerate(rows) for i, ch in enumerate(row)]
    return {
        ch: "".join(o for o, r2, x2 in keys if o != ch and abs(r2 - r) <= 1 and abs(x2 - x) < 1.0 + (r2 == r))
        for ch, r, x in keys
    }


QWERTY_NEIGHBOURS = _qwerty()


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate/strength must be in [0, 1], got {rate!r}; pass a fraction such as 0.1")


def _count(rate: float, n: int) -> int:
    return int(rate * n + 0.5)  # round half up (Python's round() rounds 0.5 to 0)


def _apply(texts: Sequence[str], one: Callable[[str, random.Random], str], seed: int, stream: str = "") -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string; wrap it: [text]")
    prefix = f"{seed}:{stream + ':' if stream else ''}"
    return [one(t, random.Random(f"{prefix}{i}")) for i, t in enumerate(texts)]


def _neighbour(ch: str, rng: random.Random) -> str | None:
    base = unicodedata.normalize("NFD", ch)[0].lower()
    options = QWERTY_NEIGHBOURS.get(base)
    out = rng.choice(options) if options else None
    return out.upper() if out and ch.isupper() else out


def _case_like(cluster: str, ref: str) -> str:
    head = cluster[0].upper() if ref[0].isupper() else cluster[0].lower()
    return head + cluster[1:]


def _typos_one(text: str, rng: random.Random, rate: float, kinds: Sequence[str]) -> str:
    starts = [p for p, c in enumerate(text) if c.isalpha()]
    k = _count(rate, len(starts))
    if k == 0:
        return text
    ends = []  # letter j spans text[starts[j]:ends[j]]: the letter and its combining marks
    for p in starts:
        e = p + 1
        while e < len(text) and unicodedata.category(text[e]).startswith("M"):
            e += 1
        ends.append(e)
    done: set[int] = set()  # letters already edited (a swap edits two)
    pieces = list(text)
    for j in sorted(rng.sample(range(len(starts)), k)):
        if j in done:
            continue
        done.add(j)
        p, e, kind = starts[j], ends[j], rng.choice(kinds)
        if kind == "swap":
            ok = [i for i in (j + 1, j - 1) if 0 <= i < len(starts) and i not in done
                  and ends[min(i, j)] == starts[max(i, j)] and text[starts[i]:ends[i]] != text[p:e]]  # fmt: skip
            if ok:
                lo, hi = min(j, ok[0]), max(j, ok[0])
                done.add(ok[0])
                first, second = text[starts[lo] : ends[lo]], text[starts[hi] : ends[hi]]
                if first[0].isupper() != second[0].isupper():  # case stays with the position: Ca -> Ac
                    first, second = _case_like(first, second), _case_like(second, first)
                pieces[starts[lo] : ends[hi]] = [second + first] + [""] * (ends[hi] - starts[lo] - 1)
                continue
            kind = "delete"
        if kind == "keyboard":
            sub = _neighbour(text[p], rng)
            kind = "delete" if sub is None else kind
            pieces[p:e] = [sub] + [""] * (e - p - 1) if sub else pieces[p:e]
        if kind == "insert":
            pieces[e - 1] += _neighbour(text[p], rng) or text[p]
        if kind == "delete":
            pieces[p:e] = [""] * (e - p)
    return "".join(pieces)


def typos(texts: Sequence[str], rate: float = 0.1, kinds: Sequence[str] = TYPO_KINDS, seed: int = 0) -> list[str]:
    """Character typos: ``round(rate * n_letters)`` distinct letters of each text are edited.

    ``n_letters`` counts the characters with ``str.isalpha()`` (any script); a letter's
    combining marks travel with it. The chosen letters are edited left to right, each with a
    kind drawn from ``kinds``: ``delete``; ``insert`` (a QWERTY neighbour, or a copy for
    non-QWERTY letters, after it); ``keyboard`` (replaced by a QWERTY neighbour of the same
    case; accents are dropped); ``swap`` (with the next, else the previous, adjacent and
    different letter not yet edited; a chosen partner counts as edited, case stays with the
    position). A swap or keyboard edit that cannot apply there becomes a deletion. Each edit
    is one Damerau operation, so the distance is at most ``round(rate * n_letters)``.

    >>> typos(["The quick brown fox jumps"], rate=0.2, seed=0)
    ['The qwuick brown fox jumnsp']
    >>> typos(["unchanged"], rate=0.0)
    ['unchanged']
    """
    _check_rate(rate)
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in TYPO_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown typo kinds {bad or kinds!r}; choose a non-empty subset of {TYPO_KINDS}")
    return _apply(texts, lambda t, rng: _typos_one(t, rng, rate, kinds), seed)


def _words(text: str) -> tuple[str, list[str], list[str]]:
    """Split into leading whitespace, words, and the whitespace after each word."""
    matches = list(re.finditer(r"(\S+)(\s*)", text))
    lead = text[: matches[0].start()] if matches else text
    return lead, [m.group(1) for m in matches], [m.group(2) for m in matches]


def _word_deletions_one(text: str, rng: random.Random, rate: float) -> str:
    lead, words, seps = _words(text)
    k = _count(rate, len(words))
    if k == 0:
        return text
    drop = set(rng.sample(range(len(words)), k))
    kept = [i for i in range(len(words)) if i not in drop]
    tail = seps[-1] if words else ""
    return lead + "".join(words[i] + (seps[i] if n < len(kept) - 1 else tail) for n, i in enumerate(kept))


def word_deletions(texts: Sequence[str], rate: float = 0.1, seed: int = 0) -> list[str]:
    """Delete ``round(rate * n_words)`` distinct whitespace-separated words of each text.

    The whitespace after each kept word is kept; the text's trailing whitespace stays.

    >>> word_deletions(["one two three four"], rate=0.5, seed=0)
    ['three four']
    """
    _check_rate(rate)
    return _apply(texts, lambda t, rng: _word_deletions_one(t, rng, rate), seed)


def _word_swaps_one(text: str, rng: random.Random, rate: float) -> str:
    lead, words, seps = _words(text)
    k = min(_count(rate, len(words)) // 2, len(words) // 2)
    if k == 0:
        return text
    # k non-overlapping adjacent pairs, uniformly: pick k of n-k slots, shift the j-th by j
    for j, slot in enumerate(sorted(rng.sample(range(len(words) - k), k))):
        i = slot + j
        words[i], words[i + 1] = words[i + 1], words[i]
    return lead + "".join(w + s for w, s in zip(words, seps))


def word_swaps(texts: Sequence[str], rate: float = 0.1, seed: int = 0) -> list[str]:
    """Swap adjacent words: ``round(rate * n_words) // 2`` disjoint adjacent pairs per text.

    ``rate`` is thus the fraction of words that move (each swap moves two). Separators stay.

    >>> word_swaps(["one two three four"], rate=1.0, seed=0)
    ['two one four three']
    """
    _check_rate(rate)
    return _apply(texts, lambda t, rng: _word_swaps_one(t, rng, rate), seed)


def _distractor_fn(sentences: Sequence[str], position: str, rate: float) -> Callable[[str, random.Random], str]:
    if position not in ("start", "end"):
        raise ValueError(f"position must be 'start' or 'end', got {position!r}")
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences must be a non-empty list of distractor sentences, e.g. ['and true is true.']")
    sentences = list(sentences)

    def one(text: str, rng: random.Random) -> str:
        if rng.random() >= rate:
            return text
        s = rng.choice(sentences)
        return s if not text else f"{s} {text}" if position == "start" else f"{text} {s}"

    return one


def distractor(
    texts: Sequence[str], sentences: Sequence[str] = DEFAULT_DISTRACTORS, position: str = "end", seed: int = 0, rate: float = 1.0
) -> list[str]:
    """Add an irrelevant sentence (drawn from ``sentences``) at the start or end of texts.

    Each text independently gets a distractor with probability ``rate`` (1 = every text).

    >>> distractor(["the film is great"], sentences=["and true is true."])
    ['the film is great and true is true.']
    >>> distractor(["x", ""], sentences=["Nothing."], position="start")
    ['Nothing. x', 'Nothing.']
    """
    _check_rate(rate)
    return _apply(texts, _distractor_fn(sentences, position, rate), seed)


def _one_fn(method: str, strength: float) -> Callable[[str, random.Random], str]:
    kinds = {"typos": TYPO_KINDS, "keyboard": ("keyboard",), "swap_chars": ("swap",),
             "delete_chars": ("delete",), "insert_chars": ("insert",)}  # fmt: skip
    if method in kinds:
        return lambda t, rng: _typos_one(t, rng, strength, kinds[method])
    if method == "word_deletion":
        return lambda t, rng: _word_deletions_one(t, rng, strength)
    if method == "word_swap":
        return lambda t, rng: _word_swaps_one(t, rng, strength)
    if method == "distractor":
        return _distractor_fn(DEFAULT_DISTRACTORS, "end", strength)
    raise ValueError(f"unknown corruption method {method!r}; valid methods: {', '.join(METHODS)}")


METHODS = ("typos", "keyboard", "swap_chars", "delete_chars", "insert_chars", "word_deletion", "word_swap", "distractor")


def corrupt(texts: Sequence[str], method: str, strength: float = 0.1, seed: int = 0) -> list[str]:
    """Apply the corruption ``method`` (one of :data:`METHODS`) with ``strength`` in [0, 1].

    Character methods call :func:`typos` with that kind (strength = fraction of letters),
    word methods use strength as their rate, ``distractor`` as the fraction of texts.

    >>> corrupt(["one two three four"], "word_deletion", 0.5) == word_deletions(["one two three four"], 0.5)
    True
    >>> corrupt(["a"], "shout", 0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: unknown corruption method 'shout'; valid methods: typos, keyboard, ...
    """
    _check_rate(strength)
    return _apply(texts, _one_fn(method, strength), seed)


def corrupt_pairs(
    texts_a: Sequence[str], texts_b: Sequence[str], method: str, strength: float = 0.1, seed: int = 0, which: str = "both"
) -> tuple[list[str], list[str]]:
    """Perturb sentence pairs: only the first (``which="a"``), second (``"b"``) or both texts.

    The untouched side is returned as a copy; ``"a"`` alone equals ``corrupt(texts_a, ...)``.

    >>> corrupt_pairs(["one two", "x"], ["three four", "y"], "word_swap", 1.0, which="b")
    (['one two', 'x'], ['four three', 'y'])
    """
    if len(texts_a) != len(texts_b):
        raise ValueError(f"texts_a has {len(texts_a)} texts but texts_b has {len(texts_b)}; pass aligned pairs")
    if which not in ("a", "b", "both"):
        raise ValueError(f"which must be 'a', 'b' or 'both', got {which!r}")
    _check_rate(strength)
    fn = _one_fn(method, strength)
    a = _apply(texts_a, fn, seed) if which != "b" else list(texts_a)
    b = _apply(texts_b, fn, seed, stream="b" if which == "both" else "") if which != "a" else list(texts_b)
    return a, b


def edit_fraction(a: str, b: str) -> float:
    """Optimal-string-alignment (Damerau) distance / ``max(len(a), len(b))``; 0.0 if both empty.

    Insertions, deletions, substitutions and adjacent transpositions cost 1 each. Exact, but
    quadratic in the length of the part between the common prefix and suffix: meant for
    checking texts of up to a few thousand characters.

    >>> edit_fraction("kitten", "sitting"), edit_fraction("abcd", "abdc"), edit_fraction("", "")
    (0.42857142857142855, 0.25, 0.0)
    """
    n = max(len(a), len(b))
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1
    x, y = a[p : len(a) - s], b[p : len(b) - s]
    prev2, prev = None, list(range(len(y) + 1))
    for i in range(1, len(x) + 1):
        cur = [i] + [0] * len(y)
        for j in range(1, len(y) + 1):
            cost = x[i - 1] != y[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and j > 1 and x[i - 1] == y[j - 2] and x[i - 2] == y[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(y)] / n if n else 0.0


def load_adv_glue(name: str = "sst2", path: str | Path | None = None) -> dict:
    """Load an AdvGLUE dev task as ``{"texts", "texts_b", "labels", "idx"}`` (plain lists).

    ``path`` is a local JSON file with one key per task (``sst2``, ``qqp``, ``mnli``,
    ``mnli-mm``, ``qnli``, ``rte``), each a list of records; with ``path=None`` the task is
    read from the Hugging Face hub (``datasets.load_dataset("adv_glue", "adv_<name>")``,
    split ``validation``). ``texts_b`` is ``None`` for single-sentence tasks (sst2).

    >>> load_adv_glue("cola", path="x.json")
    Traceback (most recent call last):
    ValueError: unknown AdvGLUE task 'cola'; valid tasks: sst2, qqp, mnli, mnli-mm, qnli, rte
    """
    if name not in ADV_GLUE_FIELDS:
        raise ValueError(f"unknown AdvGLUE task {name!r}; valid tasks: {', '.join(ADV_GLUE_FIELDS)}")
    field_a, field_b = ADV_GLUE_FIELDS[name]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"AdvGLUE file {path} not found; pass the dev JSON path or path=None for the hub")
        data = json.loads(path.read_text(encoding="utf-8"))
        if name not in data:
            raise ValueError(f"{path} has no task {name!r} (it has {sorted(data)}); pick one of those")
        records = data[name]
    else:
        import datasets

        config = _HF_CONFIGS.get(name, f"adv_{name}")
        records = list(datasets.load_dataset("adv_glue", config, split="validation"))
    return {
        "texts": [r[field_a] for r in records],
        "texts_b": [r[field_b] for r in records] if field_b else None,
        "labels": [int(r["label"]) for r in records],
        "idx": [r.get("idx", i) for i, r in enumerate(records)],
    }
