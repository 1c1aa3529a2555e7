"""Objects made for notebooks: short reprs and HTML cards (no tensors), neurons in rank order, a run's
results by name, and TransformerLens's run_with_cache on a prompted model."""

from __future__ import annotations

import re

import pytest
import torch

from skill_lens.intervening.curve import SuppressionCurve
from skill_lens.model.layout import neuron_pairs
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.probing.neurons import NeuronSet
from skill_lens.prompting.tuning import TuneConfig
from skill_lens.store.artifacts import ArtifactError
from skill_lens.workflow import steps

MAX_REPR = 600


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = steps.tune(tmp_path_factory.mktemp("run") / "rt", tiny_model(), tiny_task(),
                     TuneConfig(prompt_length=2, steps=4, eval_every=2))
    steps.probe(run, permutations=19)
    steps.neurons(run, top=0.1)
    steps.perturb(run, method="zero", fractions=[0, 0.05, 0.1], controls=2)
    return run


def _objects(run):
    return {"run": run, "probe result": run.probe_result(), "prompted model": run.prompted(),
            "neuron set": run.neurons(), "suppression curve": run.curve("zero")}


def test_reprs_are_short_and_hold_no_tensors(run):
    for name, obj in _objects(run).items():
        text, page = repr(obj), obj._repr_html_()
        assert len(text) < MAX_REPR, (name, len(text), text)
        assert "tensor(" not in text and "tensor(" not in page, name
        assert len(page) < 4000 and page.startswith("<div"), (name, len(page))


def test_reprs_say_the_key_numbers(run):
    result, ns = run.probe_result(), run.neurons()
    best, score, _ = result.top(1)[0]
    assert f"{best} {score:.3f}" in repr(result)
    assert f"threshold {result.fwer_threshold():.3f}" in repr(result)
    assert f"{int(result.significant().sum()):,} neurons above" in repr(result)
    assert f"dev {run.meta['accuracy']['dev']:.3f}" in repr(run) and "perturb_zero" in repr(run)
    assert repr(ns).startswith(f"NeuronSet({len(ns)} neurons of 2x64, best first: {best} {score:.3f}")
    assert "2-token soft prompt after the input" in repr(run.prompted())
    assert re.search(r"largest gap: -?\d+\.\d points at \d+%", repr(run.curve("zero")))


def test_top_is_in_rank_order_with_scores_and_ties_in_layer_order():
    scores = torch.tensor([[0.7, 0.9, 0.7], [0.95, 0.1, 0.7]])
    ns = NeuronSet.from_scores(scores, top=5)
    assert ns.top(10) == [("L1.N0", 0.95), ("L0.N1", 0.9), ("L0.N0", 0.7), ("L0.N2", 0.7), ("L1.N2", 0.7)]
    assert ns.top(1) == [("L1.N0", 0.95)] and ns.pairs()[0] == (0, 0)  # pairs stay in layer order
    assert neuron_pairs(ns.top(2)) == [(1, 0), (0, 1)]  # what the views and interventions read
    with pytest.raises(ValueError, match="no scores to rank by"):
        NeuronSet.from_pairs(["L0.N1"], 2, 3).top(1)
    with pytest.raises(ValueError, match="at least 1"):
        ns.top(0)


def test_the_probe_results_top_agrees_with_the_selected_sets(run):
    result, ns = run.probe_result(), run.neurons()
    assert [label for label, _ in ns.top(5)] == [label for label, _, _ in result.top(5)]
    assert steps.top_neurons(result, 3) == result.top(3)


def test_a_runs_results_are_listed_and_read_back_checked(run, tmp_path):
    found = run.results()
    assert {"prompt", "predictivity", "neurons", "perturb_zero"} <= set(found) and "run" not in found
    curve = run.curve("zero")
    assert isinstance(curve, SuppressionCurve) and curve.fractions == [0.0, 0.05, 0.1]
    import json
    saved = json.loads(found["perturb_zero"].read_text())["summary"]
    assert [r["skill_accuracy"] for r in curve.summary()] == [r["skill_accuracy"] for r in saved]
    with pytest.raises(ArtifactError, match=r"no perturb_gaussian.json \(it has curves for zero\).*--method gaussian"):
        run.curve("gaussian")


def test_a_curve_from_another_probe_is_refused(run, tmp_path):
    import shutil

    from skill_lens.workflow.runs import Run

    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    other = Run.open(copy)
    other.use_model(run.model), other.use_task(run.task)
    steps.probe(other)  # a new predictivity: the old curve is stale
    with pytest.raises(ArtifactError, match="derived from another predictivity"):
        other.curve("zero")


def test_curve_table_fits_80_columns(run):
    assert max(len(line) for line in run.curve("zero").table().splitlines()) <= 80


def test_run_with_cache_is_the_prompted_forward_with_transformer_lens_cache(run):
    pm = run.prompted()
    texts = run.task.dev.texts[:3]
    batch = pm.encode(texts)
    logits, cache = pm.run_with_cache(texts)
    torch.testing.assert_close(logits, pm.label_logits(batch), atol=1e-5, rtol=1e-5)
    acts = cache["blocks.1.mlp.hook_post"]
    assert acts.shape == (3, batch.input_ids.shape[1], 64) and not acts.requires_grad
    # every hook point, under the names the bridge's own run_with_cache uses (the full unembedding does not
    # run: the label logits come from the verbalizer's rows of it)
    bare = pm.model.run_with_cache(batch.input_ids)[1]
    assert set(cache.keys()) == {k for k in bare.keys() if "unembed" not in k}
    only = pm.run_with_cache(batch, names_filter="blocks.0.mlp.hook_post")[1]
    assert "blocks.0.mlp.hook_post" in only.keys() and all(k.startswith("blocks.0.mlp") for k in only.keys())
    # the prompt is written: its positions differ from the bare model's
    assert not torch.allclose(bare["blocks.1.mlp.hook_post"][:, batch.prompt_slice], acts[:, batch.prompt_slice])
