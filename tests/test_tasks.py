"""Tasks: packaged corpora, local files, hf: (faked hub), seeded disjoint splits, binary subtasks, clear errors."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from skill_lens.data.tasks import Split, Task, TaskError
from skill_lens.data.sources import list_tasks, load_task

SIZES = {"train_size": 60, "dev_size": 20, "test_size": 20}


def texts(split):
    return set(zip(split.texts, split.texts_b or [None] * len(split)))


def assert_disjoint(task):
    assert not texts(task.train) & texts(task.dev)
    assert not texts(task.train) & texts(task.test)
    assert not texts(task.dev) & texts(task.test)


def records(n=60, pair=False, labels=("neg", "pos")):
    rows = [{"text": f"text {i}", "label": labels[i % len(labels)]} for i in range(n)]
    return [{**r, "text_b": f"second {i}"} for i, r in enumerate(rows)] if pair else rows


def write(path, rows, fmt):
    df = pd.DataFrame(rows)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif fmt == "json":
        path.write_text(json.dumps({"data": rows}))
    else:
        df.to_parquet(path)
    return path


# ---------------------------------------------------------------- packaged corpora
def test_rotten_tomatoes_loads_both_classes_with_the_sizes_asked():
    task = load_task("rotten_tomatoes", **SIZES, seed=3)
    assert task.label_words == ["negative", "positive"] and "{text}" in task.hard_prompt
    assert [len(s) for s in task.splits().values()] == [60, 20, 20]
    for s in task.splits().values():
        assert s.counts(2) == [len(s) // 2] * 2  # the pool is balanced, the samples stratified
        assert all(isinstance(t, str) and t for t in s.texts)
    assert_disjoint(task)
    assert task.describe()["splits"]["dev"]["label_counts"] == {"negative": 10, "positive": 10}


def test_full_named_tasks_have_disjoint_splits_and_balanced_pools():
    full = load_task("rotten_tomatoes")
    assert_disjoint(full)
    assert full.train.counts(2)[0] == full.train.counts(2)[1] > 4000
    assert len(full.test) > 900 and len(full.dev) > 900
    subj = load_task("rotten_tomatoes_subjectivity", **SIZES)
    assert subj.label_words == ["review", "plot"] and subj.train.counts(2) == [30, 30]
    assert list_tasks() == ["rotten_tomatoes", "rotten_tomatoes_subjectivity", "tweets", "tweets_pn", "tweets_neutral"]


def test_tweets_and_their_binary_subtasks():
    tweets = load_task("tweets", seed=1)
    assert tweets.label_names == ["negative", "neutral", "positive"] and min(tweets.train.counts(3)) > 4000
    assert not any("&amp;" in t for t in tweets.train.texts)
    pn = load_task("tweets_pn", seed=1)
    assert pn.name == "tweets_pn" and pn.source == "tweets_pn" and pn.label_words == ["negative", "positive"]
    pos = {t for t, y in zip(tweets.train.texts, tweets.train.labels) if y == 2}
    assert all((t in pos) == bool(y) for t, y in zip(pn.train.texts, pn.train.labels))
    assert pn.train.counts(2)[0] == pn.train.counts(2)[1] == len(pos)
    neutral = load_task("tweets_neutral", train_size=100, seed=1)
    assert neutral.label_names == ["not_neutral", "neutral"] and neutral.train.counts(2) == [50, 50]
    assert_disjoint(neutral)
    same = load_task("tweets", binary="neutral-vs-rest", label_words=["other", "neutral"], train_size=100, seed=1)
    assert same.train == neutral.train and same.label_words == ["other", "neutral"] and same.source == "tweets"


def test_splits_are_identical_across_processes_and_hash_seeds():
    code = ("from skill_lens.data.sources import load_task; t = load_task('rotten_tomatoes', train_size=50, seed=7); "
            "print(t.fingerprint(), t.train.texts[0][:30])")
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": h},
                              stdout=subprocess.PIPE, text=True) for h in ("0", "12345")]  # in parallel
    outs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    task = load_task("rotten_tomatoes", train_size=50, seed=7)
    assert outs[0] == outs[1] == f"{task.fingerprint()} {task.train.texts[0][:30]}\n"
    assert load_task("rotten_tomatoes", train_size=50, seed=8).fingerprint() != task.fingerprint()


# ---------------------------------------------------------------- local files
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_local_formats_load_the_same_task(tmp_path, fmt):
    path = write(tmp_path / f"toy.{fmt}", records(pair=True), fmt)
    task = load_task(f"{fmt}:{path}", dev_size=10, test_size=10, seed=2)
    (tmp_path / "ref").mkdir()
    ref_path = write(tmp_path / "ref" / "toy.csv", records(pair=True), "csv")
    reference = load_task(f"csv:{ref_path}", dev_size=10, test_size=10, seed=2)
    assert task.fingerprint() == reference.fingerprint()
    assert task.name == "toy" and task.label_names == ["neg", "pos"] and "{text_b}" in task.hard_prompt
    assert [len(s) for s in task.splits().values()] == [40, 10, 10]
    assert all(b == t.replace("text", "second") for t, b in zip(task.train.texts, task.train.texts_b))
    assert_disjoint(task)


def test_several_files_directories_and_train_test_siblings(tmp_path):
    rows = records(50)
    test_rows = [{"text": f"held out {i}", "label": "pos" if i % 2 else "neg"} for i in range(8)]
    a, b = write(tmp_path / "a.csv", rows, "csv"), write(tmp_path / "b.csv", test_rows, "csv")
    explicit = load_task(f"csv:train={a},test={b}", dev_size=6)
    assert explicit.test.texts == [r["text"] for r in test_rows] and len(explicit.dev) == 6
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "train.csv", rows, "csv"), write(tmp_path / "d" / "test.csv", test_rows, "csv")
    write(tmp_path / "d" / "dev.csv", test_rows[:4], "csv")
    folder = load_task(f"csv:{tmp_path / 'd'}")
    assert len(folder.train) == 50 and len(folder.dev) == 4 and len(folder.test) == 8
    write(tmp_path / "x_train.csv", rows, "csv"), write(tmp_path / "x_test.csv", test_rows, "csv")
    sibling = load_task(f"csv:{tmp_path / 'x_train.csv'}")
    assert sibling.name == "x" and sibling.test.texts == explicit.test.texts and len(sibling.train) == 45
    assert_disjoint(sibling)


def test_label_kinds_and_column_options(tmp_path):
    rows = [{"s": f"t{i}", "y": i % 3} for i in range(30)]
    path = write(tmp_path / "ints.jsonl", rows, "jsonl")
    task = load_task(f"jsonl:{path}", text_column="s", label_column="y", label_words=["a", "b", "c"])
    assert task.label_names == ["0", "1", "2"] and task.label_words == ["a", "b", "c"]
    path = write(tmp_path / "b.csv", [{"sentence": f"x{i}", "label": i % 2} for i in range(30)], "csv")
    binary = load_task(f"csv:{path}")
    assert binary.label_words == ["no", "yes"] and binary.train.texts[0].startswith("x")


def test_ethics_files_load_with_csv(shared_data):
    justice = load_task(f"csv:{shared_data / 'ethics_justice_train.csv'}", text_column="scenario", seed=0)
    assert justice.name == "ethics_justice" and len(justice.test) == 2704 and justice.train.texts_b is None
    assert justice.fingerprint() == load_task(f"csv:{shared_data / 'ethics_justice_train.csv'}").fingerprint()
    deon = load_task(f"csv:{shared_data / 'ethics_deontology_train.csv'}", text_column="scenario",
                     text_b_column="excuse", label_words=["unreasonable", "reasonable"], **SIZES)
    assert [len(s) for s in deon.splits().values()] == [60, 20, 20] and deon.train.texts_b is not None
    assert all(s.counts(2)[0] > 0 and s.counts(2)[1] > 0 for s in deon.splits().values())
    full = load_task(f"csv:{shared_data / 'ethics_deontology_train.csv'}", text_b_column="excuse")
    assert len(full.train) + len(full.dev) == 18164 and len(full.test) == 3596
    assert_disjoint(full)


# ---------------------------------------------------------------- binary subtasks
def three_class():
    rows = lambda n, off: ([f"{k} {i + off}" for i in range(n) for k in ("neg", "neu", "pos")], [0, 1, 2] * n)
    return Task.from_lists("s", ["negative", "neutral", "positive"], train=rows(10, 0), dev=rows(4, 100),
                           test=rows(4, 200), hard_prompt="Tweet: {text}\nSentiment:")


def test_binarize_schemes():
    pn = three_class().binarize("positive-vs-negative")
    assert pn.label_names == ["negative", "positive"] and pn.hard_prompt == "Tweet: {text}\nSentiment:"
    assert all(t.startswith("pos" if y else "neg") for t, y in zip(pn.train.texts, pn.train.labels))
    assert len(pn.train) == 20 and pn.train.counts(2) == [10, 10]
    neutral = three_class().binarize("neutral-vs-rest", seed=1)
    assert neutral.label_words == ["no", "yes"] and neutral.train.counts(2) == [10, 10]
    assert all(t.startswith("neu") == bool(y) for t, y in zip(neutral.train.texts, neutral.train.labels))
    assert neutral.hard_prompt == "Tweet: {text}\nIs it neutral? Answer:"
    assert three_class().binarize("one-vs-rest:neutral").fingerprint() != neutral.fingerprint()  # seed 0 vs 1
    assert three_class().binarize("one-vs-rest:neutral", seed=1).train == neutral.train
    with pytest.raises(TaskError, match="valid schemes: .*positive-vs-negative.*one-vs-rest:neutral"):
        three_class().binarize("positive-vs-sad")


def test_split_take_is_seeded_and_stratified():
    s = Split([str(i) for i in range(100)], [int(i < 10) for i in range(100)])
    a = s.take(20, seed=4)
    assert a == s.take(20, seed=4) and a != s.take(20, seed=5)
    assert a.counts(2) == [18, 2] and len(set(a.texts)) == 20
    assert s.take(2, seed=0).counts(2) == [1, 1] and s.take(None, 0) is s and s.take(500, 0) is s


# ---------------------------------------------------------------- hf: with a faked hub
def fake_hub(monkeypatch, calls, dd):
    import datasets

    def load_dataset(path, config=None):
        calls.append((path, config))
        return dd

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hf_known_dataset_uses_class_names_and_drops_unlabelled_test(monkeypatch):
    import datasets

    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    part = lambda n, off, lab=None: datasets.Dataset.from_dict(
        {"sentence": [f"s{i + off}" for i in range(n)], "label": [lab if lab is not None else i % 2 for i in range(n)]},
        features=feats)
    calls = []
    fake_hub(monkeypatch, calls, datasets.DatasetDict(
        {"train": part(80, 0), "validation": part(10, 1000), "test": part(10, 2000, lab=-1)}))
    task = load_task("hf:sst2", test_size=8)
    assert calls == [("nyu-mll/glue", "sst2")]
    assert task.label_names == ["negative", "positive"] and task.hard_prompt.startswith("Sentence: {text}")
    assert task.dev.texts[0] == "s1000" and len(task.dev) == 10 and len(task.test) == 8
    assert all(t.startswith("s") and int(t[1:]) < 80 for t in task.test.texts)
    assert_disjoint(task)


def test_hf_pairs_generic_names_and_failures(monkeypatch):
    import datasets

    rows = lambda n: {"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)],
                      "label": [i % 3 for i in range(n)]}
    calls = []
    fake_hub(monkeypatch, calls, datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows(60)),
                                                      "validation_matched": datasets.Dataset.from_dict(rows(9))}))
    mnli = load_task("hf:mnli")
    assert calls[-1] == ("nyu-mll/glue", "mnli") and mnli.label_words == ["yes", "maybe", "no"]
    assert mnli.train.texts_b[0] == "h0" and len(mnli.dev) == 9 and "{text_b}" in mnli.hard_prompt
    load_task("hf:owner/data/cfg", text_column="premise", text_b_column="hypothesis")
    load_task("hf:glue_like/cfg", text_column="premise")
    assert calls[-2:] == [("owner/data", "cfg"), ("glue_like", "cfg")]

    fake_hub(monkeypatch, calls, datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows(60))}))
    adv = load_task("hf:adv_sst2", text_column="premise", label_words=["a", "b", "c"])  # no train split: carved
    assert calls[-1] == ("AI-Secure/adv_glue", "adv_sst2") and [len(s) for s in adv.splits().values()] == [48, 6, 6]
    assert_disjoint(adv)

    def broken(path, config=None):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(TaskError, match="no network"):
        load_task("hf:imdb")


# ---------------------------------------------------------------- errors
def test_errors_name_the_problem(tmp_path):
    with pytest.raises(TaskError, match="rotten_tomatoes.*csv:PATH.*hf:NAME"):
        load_task("rotten_potatoes")
    with pytest.raises(TaskError, match="does not exist"):
        load_task(f"csv:{tmp_path / 'missing.csv'}")
    path = write(tmp_path / "t.csv", records(), "csv")
    with pytest.raises(TaskError, match=r"no label column 'y'.*\['text', 'label'\]"):
        load_task(f"csv:{path}", label_column="y")
    nocol = write(tmp_path / "n.csv", [{"body": "x", "label": 0}], "csv")
    with pytest.raises(TaskError, match=r"no text column.*\['body', 'label'\]"):
        load_task(f"csv:{nocol}")
    empty = tmp_path / "e_test.csv"
    empty.write_text("text,label\n")
    with pytest.raises(TaskError, match="test split .* is empty"):
        load_task(f"csv:train={path},test={empty}")
    with pytest.raises(TaskError, match="train split .* is empty"):
        load_task(f"csv:{empty}")
    with pytest.raises(TaskError, match="dev split .*only one class.*dev_size"):
        load_task(f"csv:{path}", dev_size=1)
    ints = write(tmp_path / "i.csv", [{"text": f"t{i}", "label": i % 3} for i in range(30)], "csv")
    with pytest.raises(TaskError, match=r"labels \[2\] are outside"):
        load_task(f"csv:{ints}", label_words=["no", "yes"])
    with pytest.raises(TaskError, match=r"2 labels .*got 3 label words"):
        load_task(f"csv:{path}", label_words=["a", "b", "c"])
    with pytest.raises(TaskError, match="named task"):
        load_task("rotten_tomatoes", text_column="text")
    with pytest.raises(TaskError, match="train=PATH"):
        load_task(f"csv:training={path}")
    with pytest.raises(TaskError, match="valid schemes"):
        load_task(f"csv:{path}", binary="neutral-vs-rest")


# ---------------------------------------------------------------- sizes and labels checked before use
@pytest.mark.parametrize("option,value", [("train_size", -5), ("train_size", 0), ("dev_size", 0), ("test_size", -1),
                                          ("dev_size", 2.5), ("train_size", True)])
def test_sizes_must_be_positive_whole_numbers(tmp_path, option, value):
    path = write(tmp_path / "t.csv", records(), "csv")
    flag = "--" + option.replace("_", "-")
    with pytest.raises(TaskError, match=rf"{option} \({flag}\) must be a whole number of at least 1 .*got {value!r}"):
        load_task(f"csv:{path}", **{option: value})
    with pytest.raises(TaskError, match=rf"{option} \({flag}\) must be"):  # before any data is read
        load_task(f"csv:{tmp_path / 'missing.csv'}", **{option: value})


def test_asking_for_more_examples_than_a_split_has_is_an_error_unless_clamped(tmp_path):
    path = write(tmp_path / "t.csv", records(60), "csv")  # 6 test, 6 dev carved, 48 train
    with pytest.raises(TaskError, match=r"train_size=100 asks for more train examples .*: 48 available.*"
                                        r"--train-size 48.*clamp=True"):
        load_task(f"csv:{path}", train_size=100)
    with pytest.raises(TaskError, match=r"dev_size=100 .*54 available"):  # carving cannot make more either
        load_task(f"csv:{path}", dev_size=100)
    assert len(load_task(f"csv:{path}", train_size=48).train) == 48  # exactly what there is: fine
    clamped = load_task(f"csv:{path}", train_size=100, test_size=5, clamp=True)
    assert [len(s) for s in clamped.splits().values()] == [48, 6, 5]
    assert clamped.describe()["clamped"] == {"train": {"requested": 100, "available": 48}}
    assert "clamped" not in load_task(f"csv:{path}", train_size=10).describe()
    assert clamped.fingerprint() == load_task(f"csv:{path}", test_size=5).fingerprint()


def test_a_binary_subtask_smaller_than_asked_is_an_error_naming_what_it_has(tmp_path):
    path = write(tmp_path / "three.csv", records(90, labels=("neg", "neu", "pos")), "csv")
    with pytest.raises(TaskError, match=r"dev_size=12 asks for more dev examples than csv:.*three.csv has: 8 "
                                        r"available"):  # 12 carved of three classes, 8 are neg or pos
        load_task(f"csv:{path}", binary="pos-vs-neg", dev_size=12)
    task = load_task(f"csv:{path}", binary="pos-vs-neg", dev_size=12, clamp=True)
    assert len(task.dev) == 8 and task.describe()["clamped"] == {"dev": {"requested": 12, "available": 8}}


@pytest.mark.parametrize("fmt,labels,shown", [
    ("jsonl", (0, 1, "negative", "positive"), r"numbers \[0, 1\] and names \['negative', 'positive'\]"),
    ("csv", (0, 1, "negative", "positive"), r"numbers \['0', '1'\] and names \['negative', 'positive'\]"),
    ("jsonl", ("negative", "positive", "positive "), r"several ways .*\['positive', 'positive '\]"),
    ("csv", ("negative", "positive", "Positive"), r"several ways .*\['Positive', 'positive'\]"),
    ("jsonl", ("neg", "NEG", "pos", " pos"), r"several ways .*\[' pos', 'pos'\]; \['NEG', 'neg'\]"),
])
def test_label_columns_hold_one_type_and_one_spelling_per_label(tmp_path, fmt, labels, shown):
    path = write(tmp_path / f"t.{fmt}", records(40, labels=labels), fmt)
    with pytest.raises(TaskError, match=rf"the 'label' column .*{shown}"):
        load_task(f"{fmt}:{path}")


def test_labels_across_files_must_agree_in_type(tmp_path):
    a = write(tmp_path / "a.jsonl", records(40), "jsonl")
    b = write(tmp_path / "b.jsonl", [{"text": f"held {i}", "label": i % 2} for i in range(8)], "jsonl")
    with pytest.raises(TaskError, match=r"mixes numbers \[0, 1\] and names \['neg', 'pos'\]"):
        load_task(f"jsonl:train={a},test={b}")


def test_split_take_refuses_sizes_below_one():
    s = Split(["a", "b", "c"], [0, 1, 0])
    for n in (0, -2):
        with pytest.raises(TaskError, match=f"at least 1 .*got {n}"):
            s.take(n, seed=0)
