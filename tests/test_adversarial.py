import json
import os
import subprocess
import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skill_lens.data import adversarial as adv
from skill_lens.data.adversarial import (
    METHODS,
    distractor,
    edit_fraction,
    load_adv_glue,
    corrupt,
    corrupt_pairs,
    typos,
    word_deletions,
    word_swaps,
)

WORDS = [f"w{i}" for i in range(100)]
HUNDRED = " ".join(WORDS)
SENTENCE = "The quick brown fox jumps over the lazy dog while typing several long sentences carefully"
LONG = (SENTENCE + " ") * 20
ODD = ["", "a", " ", "\n\t", "é", "e\u0301", "👍🏽", "東京は晴れ", "naïve café 👍🏽 e\u0301te\u0301", "a b", "👨‍👩‍👧 x"]


def _letters(text):
    return sum(c.isalpha() for c in text)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_output_and_seeds_differ(method):
    texts = [LONG, SENTENCE, "short text here"]
    assert corrupt(texts, method, 0.3, seed=7) == corrupt(texts, method, 0.3, seed=7)
    assert corrupt([LONG], method, 0.3, seed=7) != corrupt([LONG], method, 0.3, seed=8)


@pytest.mark.parametrize("method", METHODS)
def test_rate_zero_is_identity_and_order_kept(method):
    texts = [SENTENCE, "", "second text", LONG]
    assert corrupt(texts, method, 0.0, seed=3) == texts
    out = corrupt(texts, method, 0.5, seed=3)
    assert len(out) == len(texts)
    # pairing: each output is closest to its own input
    assert out[1] in ("",) + adv.DEFAULT_DISTRACTORS
    assert edit_fraction(out[0], texts[0]) < edit_fraction(out[0], texts[2])


def test_input_texts_are_not_mutated_and_string_input_rejected():
    texts = [SENTENCE, "abc"]
    before = list(texts)
    for m in METHODS:
        corrupt(texts, m, 1.0)
    assert texts == before
    with pytest.raises(TypeError, match="wrap it"):
        typos(SENTENCE)


def test_word_deletion_removes_exact_count():
    (out,) = word_deletions([HUNDRED], rate=0.5, seed=1)
    kept = out.split()
    assert len(kept) == 50
    assert kept == [w for w in WORDS if w in set(kept)]  # order kept, only deletions
    assert word_deletions(["a b c"], rate=1.0) == [""]
    assert word_deletions(["  a b  "], rate=0.5, seed=0)[0] in ("  a  ", "  b  ")


def test_word_swaps_move_the_requested_fraction():
    (out,) = word_swaps([HUNDRED], rate=0.4, seed=2)
    words = out.split()
    assert sorted(words) == sorted(WORDS)
    moved = [i for i, (a, b) in enumerate(zip(words, WORDS)) if a != b]
    assert len(moved) == 40
    for i in moved:  # every move is with an adjacent word
        assert WORDS.index(words[i]) in (i - 1, i + 1)


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
def test_typo_kinds_change_the_requested_amount(rate):
    n = _letters(SENTENCE)
    k = int(rate * n + 0.5)
    (deleted,) = typos([SENTENCE], rate, kinds=("delete",), seed=4)
    assert len(deleted) == len(SENTENCE) - k
    (inserted,) = typos([SENTENCE], rate, kinds=("insert",), seed=4)
    assert len(inserted) == len(SENTENCE) + k
    (keyed,) = typos([SENTENCE], rate, kinds=("keyboard",), seed=4)
    assert sum(a != b for a, b in zip(keyed, SENTENCE)) == k and len(keyed) == len(SENTENCE)
    (swapped,) = typos([SENTENCE], rate, kinds=("swap",), seed=4)
    assert sorted(swapped) == sorted(SENTENCE) or len(swapped) < len(SENTENCE)  # swaps, or fallback deletions
    for out in (deleted, inserted, keyed, swapped):
        assert 0 < round(edit_fraction(SENTENCE, out) * max(len(SENTENCE), len(out))) <= k
    (mixed,) = typos([SENTENCE], rate, seed=4)
    assert 0 < round(edit_fraction(SENTENCE, mixed) * max(len(SENTENCE), len(mixed))) <= k


def test_keyboard_typos_use_qwerty_neighbours_and_keep_case():
    (out,) = typos(["ABCDEFGH abcdefgh"], 1.0, kinds=("keyboard",), seed=0)
    for orig, new in zip("ABCDEFGH abcdefgh", out):
        if orig != " ":
            assert new.lower() in adv.QWERTY_NEIGHBOURS[orig.lower()]
            assert new.isupper() == orig.isupper()
    assert set(adv.QWERTY_NEIGHBOURS["s"]) == set("weadzx")


def test_swap_keeps_case_with_position():
    (out,) = typos(["Ca"], 1.0, kinds=("swap",), seed=0)
    assert out == "Ac"


def test_unicode_letters_stay_valid():
    text = "e\u0301te\u0301 naïve 東京は晴れ 👍🏽 Zoë"
    for seed in range(20):
        for kinds in (("delete",), ("swap",), ("insert",), ("keyboard",)):
            (out,) = typos([text], 0.5, kinds=kinds, seed=seed)
            out.encode("utf-8")
            assert "👍🏽" in out  # non-letters are never edited
            # a combining accent always stays attached to a letter
            for i, c in enumerate(out):
                if c == "\u0301":
                    assert i > 0 and out[i - 1].isalpha()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_odd_inputs_do_not_crash(method, strength):
    out = corrupt(ODD, method, strength, seed=1)
    assert len(out) == len(ODD) and all(isinstance(t, str) for t in out)
    assert out[0] in ("",) + adv.DEFAULT_DISTRACTORS


@pytest.mark.parametrize("method", METHODS)
def test_very_long_input(method):
    big = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    (out,) = corrupt([big], method, 0.1, seed=0)
    assert 0.85 * len(big) < len(out) < 1.15 * len(big)
    assert out != big or method == "distractor"


def test_distractor_position_and_rate():
    texts = ["first", "second", ""]
    end = distractor(texts, sentences=["and true is true."])
    assert end == ["first and true is true.", "second and true is true.", "and true is true."]
    start = distractor(texts, sentences=["Yes."], position="start")
    assert start == ["Yes. first", "Yes. second", "Yes."]
    many = distractor([SENTENCE] * 400, rate=0.25, seed=0)
    assert 60 < sum(t != SENTENCE for t in many) < 140
    assert all(t == SENTENCE or t[len(SENTENCE) + 1 :] in adv.DEFAULT_DISTRACTORS for t in many)
    with pytest.raises(ValueError, match="position"):
        distractor(texts, position="middle")


def test_invalid_arguments_name_the_fix():
    with pytest.raises(ValueError, match="valid methods: typos, keyboard"):
        corrupt(["x"], "shout", 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        word_swaps(["x"], rate=1.5)
    with pytest.raises(ValueError, match="subset"):
        typos(["x"], kinds=("smash",))


def test_perturb_pairs_sides():
    a, b = [SENTENCE, "one two"], [LONG, "three four"]
    only_a = corrupt_pairs(a, b, "typos", 0.3, seed=5, which="a")
    assert only_a == (corrupt(a, "typos", 0.3, seed=5), b)
    only_b = corrupt_pairs(a, b, "typos", 0.3, seed=5, which="b")
    assert only_b == (a, corrupt(b, "typos", 0.3, seed=5))
    both_a, both_b = corrupt_pairs(a, b, "typos", 0.3, seed=5)
    assert both_a == only_a[0] and both_b != b and both_b != only_b[1]  # b side has its own stream
    with pytest.raises(ValueError, match="aligned"):
        corrupt_pairs(a, b[:1], "typos")


def test_edit_fraction():
    assert edit_fraction("abc", "abc") == 0.0
    assert edit_fraction("", "abc") == 1.0
    assert edit_fraction("ab", "ba") == 0.5  # one transposition
    assert edit_fraction("kitten", "sitting") == pytest.approx(3 / 7)
    assert edit_fraction("ca", "abc") == pytest.approx(3 / 3)  # OSA, not unrestricted Damerau


_SCRIPT = """
import json
from skill_lens.data.adversarial import METHODS, corrupt
texts = [{text!r}, "naïve café 東京 👍🏽", "one two three four five six"]
print(json.dumps({{m: corrupt(texts, m, 0.4, seed=11) for m in METHODS}}))
"""


def test_independent_of_python_hash_seed():
    outs = []
    for hash_seed in ("1", "987654"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(text=LONG)], env=env, capture_output=True, text=True, check=True)
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1]
    assert outs[0]["typos"][0] != LONG


texts_strategy = st.lists(st.text(max_size=60), max_size=4)


@settings(max_examples=60, deadline=None)
@given(texts=texts_strategy, method=st.sampled_from(METHODS), strength=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_property_no_crash_and_zero_is_identity(texts, method, strength, seed):
    out = corrupt(texts, method, strength, seed)
    assert len(out) == len(texts)
    for t in out:
        t.encode("utf-8")  # no lone surrogates introduced
    assert corrupt(texts, method, 0.0, seed) == texts
    a, b = corrupt_pairs(texts, texts[::-1], method, strength, seed)
    assert len(a) == len(b) == len(texts)


def test_adv_glue_sst2_local(shared_data):
    data = load_adv_glue("sst2", path=shared_data / "adv_glue_dev.json")
    assert len(data["texts"]) == len(data["labels"]) == 148
    assert data["texts_b"] is None
    assert set(data["labels"]) == {0, 1}
    assert all(isinstance(t, str) and t for t in data["texts"])


@pytest.mark.parametrize("name,n", [("qqp", 78), ("mnli", 121), ("mnli-mm", 162), ("qnli", 148), ("rte", 81)])
def test_adv_glue_pair_tasks_local(shared_data, name, n):
    data = load_adv_glue(name, path=shared_data / "adv_glue_dev.json")
    assert len(data["texts"]) == len(data["texts_b"]) == len(data["labels"]) == n
    assert set(data["labels"]) <= {0, 1, 2}
    assert data["texts"][0] != data["texts_b"][0]


def test_adv_glue_missing_file_and_hub_call(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="path=None"):
        load_adv_glue("sst2", path=tmp_path / "nope.json")
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    data = load_adv_glue("mnli-mm")
    assert calls == [("adv_glue", "adv_mnli_mismatched", "validation")]
    assert data == {"texts": ["p"], "texts_b": ["h"], "labels": [2], "idx": [0]}
