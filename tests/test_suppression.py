"""Suppression curves: clean at fraction 0, exact at fraction 1, seeded, counts, cross-task, errors."""

import json

import pytest
import torch

from skill_lens.store.artifacts import ArtifactError
from skill_lens.store.checkpoint import Checkpoint
from skill_lens.intervening.curve import SuppressionCurve
from skill_lens.intervening.suppression import CurveOptions, evaluate_with, suppression_curve
from skill_lens.intervening.interventions import InterventionError, gaussian_noise, mean_ablate, scale, zero_ablate
from skill_lens.prompting.input_cache import InputCache
from skill_lens.probing.scores import select_top
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import FAMILIES, tiny_model, tiny_task
from skill_lens.prompting.evaluation import evaluate, prompted


@pytest.fixture(scope="module")
def task():
    return tiny_task(n_train=32, n_dev=16, n_test=8)


@pytest.fixture(scope="module")
def pm(task):
    model = tiny_model("causal")
    return prompted(model, task, SoftPrompt.init(model, 3, seed=0))


def _scores(seed=0):
    return torch.rand(2, 64, generator=torch.Generator().manual_seed(seed))


def test_fraction_zero_is_the_clean_model_and_one_zeroes_everything(pm, task):
    c = suppression_curve(pm, task, _scores(), fractions=[0, 1.0], method="zero", controls=2)
    clean = evaluate(pm, task.dev)
    rows = {(r["fraction"], r["set"], r["draw"]): r for r in c.rows}
    for key in [(0.0, "skill", 0), (0.0, "random", 0), (0.0, "random", 1)]:
        assert rows[key]["accuracy"] == clean["accuracy"]  # the curve runs cached inputs: float tolerance
        assert rows[key]["logit_diff"] == pytest.approx(clean["logit_diff"], abs=1e-5)
        assert rows[key]["n_neurons"] == 0
    everything = torch.ones(2, 64, dtype=torch.bool)
    full = evaluate_with(pm, task.dev, lambda b: zero_ablate(pm.model, everything, positions="prompt", batch=b))
    assert rows[(1.0, "skill", 0)]["logit_diff"] == pytest.approx(full["logit_diff"], abs=1e-5)
    assert rows[(1.0, "skill", 0)]["n_neurons"] == 128
    assert c.summary()[0]["gap"] == 0.0


@pytest.mark.parametrize("method", ["gaussian-token", "gaussian-example", "zero", "mean"])
def test_prompt_hooks_on_cached_inputs_give_the_same_numbers(pm, task, method):
    """Suppression curves keep the inputs' keys/values: prompt-position hooks see the prompt part only."""
    mask = select_top(_scores(), 0.3)
    base = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(1))

    def make(b, gen):
        if method.startswith("gaussian"):
            return gaussian_noise(pm.model, mask, 2.0, seed=gen, per=method.split("-")[1], positions="prompt",
                                  batch=b)
        if method == "zero":
            return zero_ablate(pm.model, mask, positions="prompt", batch=b)
        return mean_ablate(pm.model, mask, base, positions="prompt", batch=b)

    plain_gen, cached_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    plain = evaluate_with(pm, task.dev, lambda b: make(b, plain_gen), batch_size=5)
    cache = InputCache()
    for _ in range(2):  # each pass takes every input from the cache (the first one fills it, in batches)
        cached_gen.manual_seed(5)
        cached = evaluate_with(pm, task.dev, lambda b: make(b, cached_gen), batch_size=5, input_cache=cache)
        assert cached["accuracy"] == plain["accuracy"]
        assert cached["logit_diff"] == pytest.approx(plain["logit_diff"], abs=1e-5)
    assert cache.hits == 2 * len(task.dev) and cache.misses == 0 and len(cache) == len(task.dev)
    assert cached["logit_diff"] != pytest.approx(evaluate(pm, task.dev)["logit_diff"], abs=1e-3)  # hooks did act


def test_a_model_wrapped_with_input_hooks_keeps_them_under_the_curve(pm, task):
    """A model given hooks that change input positions keeps them under the curve's input cache."""
    everything = torch.ones(2, 64, dtype=torch.bool)
    wrapped = pm.with_hooks(lambda b: scale(pm.model, everything, 3.0, positions="input", batch=b))
    c = suppression_curve(wrapped, task, _scores(), fractions=[0, 1.0], method="zero", controls=0)
    zeroed = evaluate_with(wrapped, task.dev, lambda b: zero_ablate(pm.model, everything, positions="prompt", batch=b))
    assert c.rows[0]["logit_diff"] == pytest.approx(evaluate(wrapped, task.dev)["logit_diff"], abs=1e-5)
    assert c.rows[1]["logit_diff"] == pytest.approx(zeroed["logit_diff"], abs=1e-5)
    assert c.rows[0]["logit_diff"] != pytest.approx(evaluate(pm, task.dev)["logit_diff"], abs=1e-3)


def test_counts_follow_select_top_and_controls_match_them(pm, task):
    for per_layer in (False, True):
        c = suppression_curve(pm, task.dev, _scores(), fractions=[0.1], method="zero", controls=3, per_layer=per_layer)
        n = int(select_top(_scores(), 0.1, per_layer=per_layer).sum())
        assert [r["n_neurons"] for r in c.rows] == [n] * 4
        assert [r["set"] for r in c.rows] == ["skill", "random", "random", "random"]


def test_curves_are_seeded_and_serialisable(pm, task):
    kw = dict(fractions=[0, 0.05], method="gaussian", controls=2, std=3.0)
    a, b = suppression_curve(pm, task, _scores(), **kw), suppression_curve(pm, task, _scores(), **kw)
    assert a.rows == b.rows
    assert suppression_curve(pm, task, _scores(), seed=1, **kw).rows != a.rows
    d = json.loads(json.dumps(a.to_dict()))
    assert d["method"] == "gaussian" and len(d["summary"]) == 2
    df = a.to_pandas()
    assert list(df["fraction"]) == [0.0, 0.05]
    assert {"skill_accuracy", "random_accuracy_mean", "random_accuracy_std", "gap"} <= set(df.columns)
    assert "fraction" in a.table()


def test_mean_method_uses_the_probe_baseline(pm, task):
    from skill_lens.probing.probe import probe

    base = probe(pm, task, splits=("dev",)).baseline
    c = suppression_curve(pm, task, _scores(), fractions=[0.5], method="mean", controls=1, baseline=base)
    assert c.rows[0]["n_neurons"] == 64
    with pytest.raises(InterventionError, match="needs the probe's baseline"):
        suppression_curve(pm, task, _scores(), method="mean")


def test_cross_task_neurons_of_a_on_split_of_b(pm, task):
    other = tiny_task(n_train=16, n_dev=8, n_test=8, seed=5)
    pm_b = prompted(pm.model, other, SoftPrompt.init(pm.model, 3, seed=9))
    c = suppression_curve(pm_b, other, _scores(1), fractions=[0, 0.1], method="zero", controls=1)
    assert c.meta["n_examples"] == 8


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family(family, task):
    model = tiny_model(family)
    pmf = prompted(model, task, SoftPrompt.init(model, 2))
    c = suppression_curve(pmf, task, _scores(), fractions=[0, 0.2], method="gaussian", controls=1, std=2.0)
    assert len(c.rows) == 4 and all(0 <= r["accuracy"] <= 1 for r in c.rows)


def test_bad_inputs(pm, task):
    with pytest.raises(InterventionError, match=r"fractions \[1.5, -0.1\] are outside \[0, 1\]"):
        suppression_curve(pm, task, _scores(), fractions=[0, 1.5, -0.1])
    with pytest.raises(InterventionError, match=r"fractions \(--fractions\) are empty"):
        CurveOptions(fractions=[])
    with pytest.raises(InterventionError, match="scores are \\[3, 64\\] but tiny-causal has 2 layers x 64"):
        suppression_curve(pm, task, torch.rand(3, 64))
    with pytest.raises(InterventionError, match=r"method \(--method\) must be one of 'gaussian', 'zero', 'mean'"):
        suppression_curve(pm, task, _scores(), method="dropout")
    with pytest.raises(InterventionError, match="controls"):
        suppression_curve(pm, task, _scores(), controls=-1)


def test_summary_of_hand_made_rows():
    rows = [{"fraction": 0.1, "set": "skill", "draw": 0, "n_neurons": 4, "accuracy": 0.5, "logit_diff": -1.0}]
    rows += [{"fraction": 0.1, "set": "random", "draw": d, "n_neurons": 4, "accuracy": a, "logit_diff": 1.0}
             for d, a in enumerate([0.75, 0.25 + 0.5])]
    s = SuppressionCurve(rows, [0.1], "zero").summary()[0]
    assert s["random_accuracy_mean"] == 0.75 and s["random_accuracy_std"] == 0.0 and s["gap"] == 0.25


def test_a_checkpointed_curve_resumes_where_it_stopped(pm, task, tmp_path, monkeypatch):
    import skill_lens.intervening.suppression as curves

    ckpt = tmp_path / "curve.checkpoint.safetensors"
    kwargs = dict(fractions=[0, 0.05, 0.2], method="gaussian", controls=2, seed=3, checkpoint=ckpt)
    full = suppression_curve(pm, task, _scores(), **kwargs)
    assert not ckpt.exists()  # removed once complete

    real, calls = curves.evaluate_with, []

    def dies_after_three(*args, **kw):  # a kill during the fourth evaluation
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(curves, "evaluate_with", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        suppression_curve(pm, task, _scores(), **kwargs)
    saved = Checkpoint(ckpt, {}).records()  # the rows done, one appended line each
    assert 0 < len(saved) < len(full.rows)
    calls.clear()
    monkeypatch.setattr(curves, "evaluate_with", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    resumed = suppression_curve(pm, task, _scores(), **kwargs)
    assert resumed.rows == full.rows
    # killed in f=0.05's second random draw: only that row and f=0.2's three are evaluated again
    assert len(saved) == 3 + 2 and len(calls) == 1 + 3


def test_a_checkpoint_of_another_curve_is_refused(pm, task, tmp_path):
    import skill_lens.intervening.suppression as curves

    ckpt = tmp_path / "curve.checkpoint.safetensors"
    Checkpoint(ckpt, {"model": "other"}, "suppression curve").save({}, {"rows": []})
    before = ckpt.read_bytes()
    with pytest.raises(ArtifactError, match=r"suppression curve checkpoint of other settings \(model: 'other' in the "
                                            r"checkpoint, 'tiny-causal' now; prompt: None in the checkpoint"):
        suppression_curve(pm, task, _scores(), fractions=[0, 0.1], method="zero", controls=1, checkpoint=ckpt)
    assert ckpt.read_bytes() == before  # left as it was
    # a checkpoint of the same curve with other options is refused too, naming them
    kwargs = dict(fractions=[0, 0.1], method="zero", controls=1, checkpoint=tmp_path / "c.safetensors")
    real = curves.evaluate_with
    calls = []

    def dies_after_one(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(curves, "evaluate_with", dies_after_one)
        with pytest.raises(KeyboardInterrupt):
            suppression_curve(pm, task, _scores(), **kwargs)
    with pytest.raises(ArtifactError, match=r"options: .* in the checkpoint"):
        suppression_curve(pm, task, _scores(), **{**kwargs, "controls": 2})


def test_a_neuron_set_is_perturbed_whole_against_random_sets_of_its_count_per_layer(pm, task):
    from skill_lens.probing.neurons import NeuronSet
    from skill_lens.probing.result import ProbeResult

    chosen = NeuronSet.from_pairs(["L0.N3", "L1.N7", "L1.N9", "L1.N11"], 2, 64)
    c = suppression_curve(pm, task, chosen, method="zero", controls=2)
    assert c.fractions == [0.0, 4 / 128] and c.meta["selection"] == "a given neuron set"
    point = [r for r in c.rows if r["fraction"] > 0]
    assert [(r["set"], r["n_neurons"]) for r in point] == [("skill", 4), ("random", 4), ("random", 4)]
    # the same as the hooks of that set by hand, and the same for its mask or its labels
    by_hand = evaluate_with(pm, task.dev, lambda b: zero_ablate(pm.model, chosen, positions="prompt", batch=b))
    assert point[0]["accuracy"] == by_hand["accuracy"]  # (the curve keeps the inputs' keys/values: float noise)
    assert point[0]["logit_diff"] == pytest.approx(by_hand["logit_diff"], abs=1e-5)
    for same in (chosen.mask, [NeuronSet.label(*p) for p in chosen.pairs()]):
        assert suppression_curve(pm, task, same, method="zero", controls=2).rows == c.rows
    # the merged neurons of two subtasks, e.g. one-vs-rest of a three-class task
    merged = NeuronSet.from_scores(_scores(1), 3) | NeuronSet.from_scores(_scores(2), 3)
    assert suppression_curve(pm, task, merged, method="zero", controls=0).rows[-1]["n_neurons"] == len(merged)
    with pytest.raises(InterventionError, match="perturbed whole"):
        suppression_curve(pm, task, chosen, fractions=[0, 0.1], method="zero")
    with pytest.raises(InterventionError, match="perturbed whole"):
        suppression_curve(pm, task, chosen, method="zero", per_layer=True)
    with pytest.raises(InterventionError, match="not a probe result; pass result.scores"):
        suppression_curve(pm, task, ProbeResult(torch.zeros(2, 1, 64), torch.rand(2, 1, 64)))
    with pytest.raises(InterventionError, match="not in a model with 2 layers"):
        suppression_curve(pm, task, ["L5.N0"])
    with pytest.raises(InterventionError, match="not a dict"):
        suppression_curve(pm, task, {"a": 1})
    with pytest.raises(InterventionError, match="int64 tensor"):
        suppression_curve(pm, task, torch.ones(2, 64, dtype=torch.long))
    with pytest.raises(TypeError):
        suppression_curve(pm, task, _scores(), [0, 0.1], "zero")  # the method is named


# accuracies and logit differences of main's suppression_curve before noise draws existed (commit 150310c)
_BEFORE_ACC = [0.5, 0.5, 0.5, 0.3125, 0.625, 0.1875, 0.5, 0.625, 0.5]
_BEFORE_LD = [-0.013233, -0.013233, -0.013233, -0.001421, 0.045589, -0.060381, 0.014032, 0.008617, 0.003533]


def test_one_noise_draw_keeps_the_rows_of_before(pm, task):
    c = suppression_curve(pm, task, _scores(), fractions=[0, 0.1, 0.3], method="gaussian", controls=2, std=3.0, seed=4)
    assert [r["accuracy"] for r in c.rows] == _BEFORE_ACC
    assert [r["logit_diff"] for r in c.rows] == pytest.approx(_BEFORE_LD, abs=1e-6)
    assert all(r["noise_draw"] == 0 and len(r["correct"]) == 16 for r in c.rows)
    assert all(r["correct"].count("1") / 16 == r["accuracy"] for r in c.rows)
    s = c.summary()[1]
    assert s["skill_accuracy"] == 0.3125 and s["gap"] == (0.625 + 0.1875) / 2 - 0.3125
    assert s["gap_ci_low"] <= s["gap"] <= s["gap_ci_high"] and s["gap_ci_low"] < s["gap_ci_high"]


def test_noise_draws_are_evaluated_per_set_and_the_gap_gets_an_interval(pm, task, tmp_path):
    kw = dict(fractions=[0, 0.1, 0.3], method="gaussian", controls=2, std=3.0, seed=4, draws=3, bootstrap=500)
    c = suppression_curve(pm, task, _scores(), **kw)
    assert len(c.rows) == 3 * 3 * 3
    first = [r for r in c.rows if r["noise_draw"] == 0]
    assert [r["accuracy"] for r in first] == _BEFORE_ACC  # draw 0 is the noise of draws=1
    skill = [r for r in c.rows if r["fraction"] == 0.3 and r["set"] == "skill"]
    assert [r["noise_draw"] for r in skill] == [0, 1, 2] and len({r["correct"] for r in skill}) > 1  # fresh noise
    for s, f in zip(c.summary(), c.fractions):
        rows = [r for r in c.rows if r["fraction"] == f]
        assert s["skill_accuracy"] == pytest.approx(sum(r["accuracy"] for r in rows if r["set"] == "skill") / 3)
        assert s["random_accuracy_mean"] == pytest.approx(sum(r["accuracy"] for r in rows if r["set"] == "random") / 6)
        assert s["gap_ci_low"] <= s["gap"] <= s["gap_ci_high"]
    assert c.summary()[0]["gap"] == 0 == c.summary()[0]["gap_ci_low"] == c.summary()[0]["gap_ci_high"]  # clean
    assert c.summary() == suppression_curve(pm, task, _scores(), **kw).summary()  # seeded
    assert {"gap_ci_low", "gap_ci_high"} <= set(c.to_pandas().columns) and "gap 95% CI" in c.table()
    assert c.meta["draws"] == 3 and c.meta["bootstrap"] == 500
    # a checkpoint of draws=1 is not resumed with draws=3
    import skill_lens.intervening.suppression as curves

    with pytest.raises(ArtifactError, match="options"):
        _one_row_then_resume(curves, pm, task, tmp_path / "c.safetensors", curves.evaluate_with)


def _one_row_then_resume(curves, pm, task, ck, real):
    calls = []

    def dies_after_one(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    kw = dict(fractions=[0, 0.1], method="gaussian", controls=1, checkpoint=ck)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(curves, "evaluate_with", dies_after_one)
        with pytest.raises(KeyboardInterrupt):
            suppression_curve(pm, task, _scores(), **kw)
    suppression_curve(pm, task, _scores(), **kw, draws=3)


def test_noise_draws_resume_from_a_checkpoint(pm, task, tmp_path, monkeypatch):
    import skill_lens.intervening.suppression as curves

    ck = tmp_path / "curve.checkpoint.safetensors"
    kw = dict(fractions=[0.1], method="gaussian", controls=1, std=3.0, draws=2, checkpoint=ck)
    full = suppression_curve(pm, task, _scores(), **kw)
    real, calls = curves.evaluate_with, []

    def dies_after_two(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(curves, "evaluate_with", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        suppression_curve(pm, task, _scores(), **kw)
    monkeypatch.setattr(curves, "evaluate_with", real)
    assert suppression_curve(pm, task, _scores(), **kw).rows == full.rows


def test_noise_draws_need_gaussian_noise(pm, task):
    with pytest.raises(InterventionError, match="only method 'gaussian' draws noise"):
        suppression_curve(pm, task, _scores(), method="zero", draws=2)
    with pytest.raises(InterventionError, match=r"draws \(--draws\) must be .* at least 1, got 0"):
        suppression_curve(pm, task, _scores(), draws=0)
    with pytest.raises(InterventionError, match="bootstrap"):
        suppression_curve(pm, task, _scores(), bootstrap=0)
    without = SuppressionCurve([{"fraction": 0.1, "set": "skill", "draw": 0, "n_neurons": 4, "accuracy": 0.5,
                                 "logit_diff": 0.0, "correct": "10"}], [0.1], "zero").summary()[0]
    assert without["gap"] != without["gap"] and without["gap_ci_low"] != without["gap_ci_low"]  # NaN: no controls
