import json
import math

import pytest
import torch

from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.studies.robustness import (RobustnessError, adversarial_split, adversarial_task, clean_vs_adversarial,
                                   neuron_robustness, overlaps, patch_repair, source_name)
from skill_lens.data.tasks import Split, Task
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import prompted


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def task():
    return tiny_task()


@pytest.fixture(scope="module")
def pm(model, task):
    return prompted(model, task, SoftPrompt.init(model, 2, seed=0))


def pair_task() -> Task:
    words = zip("good bad fine dull".split(), "dull fine bad good".split())
    texts = [f"the movie was {w} and the plot was {v}" for w, v in words]
    return Task.from_lists("pairs", ["no", "yes"], train=(texts, [0, 1, 0, 1], texts[::-1]),
                           dev=(texts, [1, 0, 1, 0], texts), test=(texts[:2], [0, 1], texts[2:]))


# ------------------------------------------------------------------ sources


@pytest.mark.parametrize("spec", ["typos:0.1", "word_deletion:0.2", "word_swap:0.4", "distractor:1.0"])
def test_perturbed_split_is_deterministic_paired_and_perturbed(task, spec):
    a, b = adversarial_split(spec, task, seed=1), adversarial_split(spec, task, seed=1)
    assert a == b
    assert a.labels == task.dev.labels and len(a) == len(task.dev)
    assert sum(x != y for x, y in zip(a.texts, task.dev.texts)) > len(a) // 2
    other = adversarial_split(spec, task, seed=2)
    assert other.texts != a.texts or spec.startswith("distractor")  # distractor draws from 3 sentences only


def test_perturbed_split_keeps_per_example_pairing(task):
    adv = adversarial_split("word_swap:1.0", task, seed=0)
    for clean, pert in zip(task.dev.texts, adv.texts):
        assert sorted(clean.split()) == sorted(pert.split())  # the same words, reordered: example i stays i


def test_test_split_and_sentence_pairs():
    t = pair_task()
    adv = adversarial_split("word_swap:1.0", t, split="test")
    assert adv.labels == t.test.labels and len(adv.texts_b) == 2
    assert adv.texts != t.test.texts and adv.texts_b != t.test.texts_b


def test_adversarial_task_perturbs_dev_and_test_only(task):
    t = adversarial_task(task, "typos:0.2", seed=3)
    assert t.train == task.train
    assert t.dev == adversarial_split("typos:0.2", task, "dev", seed=3)
    assert t.test == adversarial_split("typos:0.2", task, "test", seed=3)
    assert t.dev.texts != task.dev.texts and t.name == "tiny_sentiment+typos_0.2"


def test_source_names():
    assert source_name("advglue:sst2") == "advglue_sst2"
    assert source_name("typos") == "typos_0.1"
    assert source_name("word_deletion:0.25") == "word_deletion_0.25"


def test_bad_sources_and_splits(task):
    with pytest.raises(RobustnessError, match="unknown adversarial source"):
        adversarial_split("shouting:0.5", task)
    with pytest.raises(RobustnessError, match="pass the task"):
        adversarial_split("typos:0.1")
    with pytest.raises(RobustnessError, match="strength must be in"):
        adversarial_split("typos:2", task)
    with pytest.raises(RobustnessError, match="cannot read the strength"):
        adversarial_split("typos:lots", task)
    with pytest.raises(RobustnessError, match="is empty"):
        adversarial_split("typos:0.1", Task.from_lists("e", ["a", "b"], train=(["x"], [0]), dev=([], []),
                                                       test=([], [])))


def test_adversarial_labels_must_fit_the_task(pm, task):
    three = Split(["good film", "bad film", "a film"], [0, 1, 2])
    with pytest.raises(RobustnessError, match=r"labels \[0, 1, 2\] but task tiny_sentiment has 2 labels"):
        neuron_robustness(pm, task, three, ks=[0.1], curve_fractions=())
    with pytest.raises(RobustnessError, match="is empty"):
        neuron_robustness(pm, task, Split([], []), ks=[0.1], curve_fractions=())
    with pytest.raises(RobustnessError, match="only one label"):
        neuron_robustness(pm, task, Split(["good", "fine"], [1, 1]), ks=[0.1], curve_fractions=())
    with pytest.raises(RobustnessError, match="is empty"):
        clean_vs_adversarial(pm, task.dev, Split([], []))


# ------------------------------------------------------------------ overlaps and neuron analysis


def test_overlap_of_identical_and_reversed_rankings():
    s = torch.rand(3, 50, generator=torch.Generator().manual_seed(0))
    same = overlaps(s, s.clone(), [1, 0.02, 0.1, 0.2])
    assert same["total"] == [1.0] * 4 and all(row == [1.0] * 4 for row in same["per_layer"])
    rev = overlaps(s, -s, [0.02, 0.1, 0.2])
    assert rev["total"] == [0.0] * 3 and rev["chance"] == [0.02, 0.1, 0.2]
    half = overlaps(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), torch.tensor([[4.0, 1.0, 3.0, 2.0]]), [0.5])
    assert half["total"] == [0.5] and half["per_layer"] == [[0.5]]


def test_clean_vs_clean_gives_spearman_and_overlap_one(pm, task):
    r = neuron_robustness(pm, task, task.dev, ks=[0.01, 0.05, 0.2], curve_fractions=(0, 0.1), method="zero",
                          controls=1)
    assert r.spearman == pytest.approx(1.0)
    assert r.overlap["total"] == [1.0, 1.0, 1.0]
    assert all(row == [1.0, 1.0, 1.0] for row in r.overlap["per_layer"])
    assert torch.equal(r.clean_scores, r.adv_scores) and r.clean_scores.shape == (2, 64)
    assert r.accuracy["accuracy_drop"] == 0.0 and r.accuracy["consistency"] == 1.0
    a, b = (r.curves[k].summary() for k in ("clean_neurons", "adversarial_neurons"))
    assert a == b  # same neurons, same seeds, same data
    df = r.to_pandas()
    assert list(df.k) == [0.01, 0.05, 0.2] and (df.overlap == 1.0).all()
    json.dumps(r.to_dict())  # JSON-ready


def test_perturbed_data_change_the_scores(pm, task):
    r = neuron_robustness(pm, task, adversarial_split("word_deletion:0.4", task, seed=0), ks=[0.05],
                          curve_fractions=())
    assert not torch.equal(r.clean_scores, r.adv_scores)
    assert -1.0 <= r.spearman < 1.0 and len(r.spearman_per_layer) == 2


def test_adversarial_baseline_option(pm, task):
    big = Task.from_lists("big", task.label_names, task.label_words, train=task.train, dev=task.dev, test=task.test)
    adv = adversarial_split("typos:0.1", big, split="train")  # 64 examples: halves of 32
    r = neuron_robustness(pm, big, adv, ks=[0.05, 0.1], adv_baseline=True, min_half=16, curve_fractions=())
    assert r.adv_self["n_baseline"] == 32 and r.adv_self["n_eval"] == 32 and len(r.adv_self["overlap"]) == 2
    assert "adv_self_overlap" in r.to_pandas().columns
    skipped = neuron_robustness(pm, big, adv, ks=[0.05], adv_baseline=True, min_half=40, curve_fractions=())
    assert "skipped" in skipped.adv_self


# ------------------------------------------------------------------ accuracy and repair


def test_clean_vs_adversarial_counts_flips(pm, task):
    adv = adversarial_split("word_deletion:0.6", task, seed=0)
    r = clean_vs_adversarial(pm, task.dev, adv)
    assert r["paired"] and r["clean"]["n"] == r["adversarial"]["n"] == 32
    assert r["accuracy_drop"] == pytest.approx(r["right_to_wrong"] - r["wrong_to_right"])
    assert not clean_vs_adversarial(pm, task.dev, task.train)["paired"]


def test_patch_repair_with_clean_adversarial_changes_nothing(pm, task):
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, :8] = True
    r = patch_repair(pm, task.dev, task.dev, mask, batch_size=10)
    assert r.patched_accuracy == r.adversarial_accuracy == r.clean_accuracy
    assert math.isnan(r.recovered) and r.to_dict()["recovered"] is None
    assert r.fixed == r.broken == 0.0 and r.n == 32 and r.n_neurons == 16
    assert r.logit_diff["patched"] == pytest.approx(r.logit_diff["adversarial"])


def test_patch_repair_moves_adversarial_logits(pm, task):
    adv = adversarial_split("word_deletion:0.4", task, seed=0)
    none = patch_repair(pm, task.dev, adv, torch.zeros(2, 64, dtype=torch.bool))
    assert none.patched_accuracy == none.adversarial_accuracy and none.n_neurons == 0
    every = patch_repair(pm, task.dev, adv, torch.ones(2, 64, dtype=torch.bool))
    assert every.logit_diff["patched"] != pytest.approx(every.logit_diff["adversarial"])
    assert every.clean_accuracy == none.clean_accuracy and every.adversarial_accuracy == none.adversarial_accuracy


def test_patch_repair_needs_pairs_and_a_soft_prompt(pm, model, task):
    from skill_lens.prompting.evaluation import hard_prompt_model

    with pytest.raises(RobustnessError, match="paired splits"):
        patch_repair(pm, task.dev, task.train, torch.ones(2, 64, dtype=torch.bool))
    with pytest.raises(RobustnessError, match="hard prompt"):
        patch_repair(hard_prompt_model(model, task), task.dev, task.dev, torch.ones(2, 64, dtype=torch.bool))


# ------------------------------------------------------------------ AdvGLUE and CLI


def test_advglue_from_local_file(shared_data, pm, task):
    path = shared_data / "adv_glue_dev.json"
    adv = adversarial_split(f"advglue:sst2:{path}", task)
    assert len(adv) == 148 and set(adv.labels) == {0, 1} and adv.texts_b is None
    t = adversarial_task(task, f"advglue:sst2:{path}")
    assert t.dev == adv and len(t.test) == 0 and t.train == task.train
    with pytest.raises(RobustnessError, match="labels \\[0, 1, 2\\]"):
        adversarial_split(f"advglue:mnli:{path}", task)
    with pytest.raises(RobustnessError, match="has no task|unknown AdvGLUE task"):
        adversarial_split(f"advglue:cola:{path}", task)
    r = clean_vs_adversarial(pm, task.dev, adv)
    assert not r["paired"] and r["adversarial"]["n"] == 148


def test_advglue_missing_file(task, tmp_path):
    with pytest.raises(RobustnessError, match="not found"):
        adversarial_split(f"advglue:sst2:{tmp_path / 'nope.json'}", task)


def test_advglue_hub_failure_names_the_local_file_fix(task, monkeypatch):
    import skill_lens.studies.robustness as rob

    def offline(name, path):
        assert (name, path) == ("sst2", None)
        raise ConnectionError("no network")

    monkeypatch.setattr(rob, "load_adv_glue", offline)
    with pytest.raises(RobustnessError, match="pass a local file: advglue:sst2:PATH"):
        adversarial_split("advglue:sst2", task)
