"""Figures (skill_lens.views.plots) and views (skill_lens.views.viz: static HTML, circuitsvis for the picker) on tiny
models and synthetic data."""

import base64
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from browser import dump_dom, needs_chromium
from skill_lens import plots
from skill_lens.probing.capture import activations
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.evaluation import hard_prompt_model, prompted
from skill_lens.data.tasks import Split
from skill_lens.views.viz import (View, circuitsvis_script, neuron_activations_view, neuron_picker,
                            reset_notebook_bundle, script_json, tokens_view, top_examples_view)

EVIL = ["<script>alert(1)</script>", "</script><img src=x onerror=alert(1)>"]


# ------------------------------------------------------------------ plots
def test_predictivity_by_layer_boxes_and_prompt_line():
    pred = torch.rand(5, 3, 20, generator=torch.Generator().manual_seed(0))
    fig = plots.predictivity_by_layer(pred, prompt_accuracy=0.8)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.get_xticks()) == 5
    assert len([l for l in ax.get_lines() if list(l.get_ydata()) == [0.8, 0.8]]) == 1
    flat = [tuple(np.round(l.get_ydata(), 6)) for l in ax.get_lines()]
    for layer_median in np.median(pred.amax(1).double().numpy(), axis=1):  # one box per layer, max over positions
        assert (round(layer_median, 6),) * 2 in flat
    with pytest.raises(ValueError, match="layers"):
        plots.predictivity_by_layer(torch.rand(5))


def test_predictivity_by_layer_takes_a_probe_result():
    class Result:  # anything with .scores(split, aggregate) -> [L, d_mlp]
        def scores(self, split="dev", aggregate="max"):
            return torch.full((3, 4), 0.7)
    assert len(plots.predictivity_by_layer(Result()).axes[0].get_xticks()) == 3


@pytest.mark.parametrize("form", ["dict", "rows", "long_df", "summary_df"])
def test_suppression_curves_skill_vs_random_with_spread(form):
    f = [0.0, 0.05, 0.1]
    rows = [{"fraction": x, "set": s, "draw": d, "accuracy": a}
            for x, sk in zip(f, (0.9, 0.6, 0.5)) for s, d, a in [("skill", 0, sk), ("random", 0, 0.9 - x),
                                                                 ("random", 1, 0.85 - x)]]
    curve = {"dict": {"fractions": f, "skill": [0.9, 0.6, 0.5], "random": [[0.9, 0.85], [0.85, 0.8], [0.8, 0.75]]},
             "rows": {"fractions": f, "rows": rows, "method": "zero"},
             "long_df": pd.DataFrame(rows),
             "summary_df": pd.DataFrame({"fraction": f, "skill_accuracy": [0.9, 0.6, 0.5],
                                         "random_accuracy_mean": [0.875, 0.825, 0.775],
                                         "random_accuracy_std": [0.025] * 3})}[form]
    ax = plots.suppression_curves(curve).axes[0]
    lines = {l.get_label(): l for l in ax.get_lines()}
    skill = next(l for k, l in lines.items() if k.startswith("skill"))
    rand = next(l for k, l in lines.items() if k.startswith("random"))
    assert list(skill.get_ydata()) == [0.9, 0.6, 0.5]
    np.testing.assert_allclose(rand.get_ydata(), [0.875, 0.825, 0.775])
    assert len(ax.collections) == 1  # the random draws' band


def test_suppression_curves_rejects_what_it_cannot_read():
    with pytest.raises(ValueError, match="fractions"):
        plots.suppression_curves({"skill": [1, 2]})
    with pytest.raises(ValueError, match="no accuracy series"):
        plots.suppression_curves({"fractions": [0, 1], "skill": [1, 2, 3]})


def test_heatmap_labels_values_and_colorbar():
    fig = plots.heatmap([[1.0, 0.25, 0.5], [0.25, 1.0, 0.0], [0.5, 0.0, 1.0]], ["a", "b", "c"], "Spearman")
    ax = fig.axes[0]
    assert len(fig.axes) == 2 and ax.get_title() == "Spearman"
    assert [t.get_text() for t in ax.texts][:3] == ["1.00", "0.25", "0.50"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert len(plots.heatmap(np.zeros((20, 20))).axes[0].texts) == 0  # too big to annotate
    with pytest.raises(ValueError, match="labels"):
        plots.heatmap(np.zeros((2, 2)), ["only one"])


def test_overlap_curves_total_per_layer_and_chance():
    ks = [1, 5, 10, 20]
    ax = plots.overlap_curves(ks, {"total": [0.1, 0.3, 0.4, 0.5], "per_layer": np.random.rand(3, 4)},
                              chance=0.05).axes[0]
    assert len(ax.get_lines()) == 3 + 1 + 1
    assert len(plots.overlap_curves({"k": ks, "overlap": [0.1] * 4}).axes[0].get_lines()) == 1
    with pytest.raises(ValueError, match="one per k"):
        plots.overlap_curves(ks, [0.1, 0.2])


def test_pruning_tradeoff_points_and_prune_summary():
    ax = plots.pruning_tradeoff(pd.DataFrame({"name": ["full", "50%", "10%"], "accuracy": [0.9, 0.89, 0.8],
                                              "speedup": [1.0, 1.3, 2.0]})).axes[0]
    assert len(ax.collections[0].get_offsets()) == 3 and [t.get_text() for t in ax.texts] == ["full", "50%", "10%"]
    ax = plots.pruning_tradeoff({"accuracy": {"unpruned": 0.9, "pruned": 0.8},
                                 "seconds": {"unpruned": 2.0, "pruned": 1.0}}).axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[1.0, 0.9], [2.0, 0.8]])
    ax = plots.pruning_tradeoff({"accuracy": {"unpruned": 0.9, "pruned": 0.5, "pruned_retuned": 0.8,
                                              "unpruned_retuned": 0.92},
                                 "seconds": {"unpruned": 2.0, "pruned": 1.0}}).axes[0]  # each at its model's speed
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[1.0, 0.9], [2.0, 0.5], [2.0, 0.8], [1.0, 0.92]])
    with pytest.raises(ValueError, match="accuracy"):
        plots.pruning_tradeoff([{"speedup": 1}])


def test_figure_to_png_base64():
    png = base64.b64decode(plots.figure_to_png_base64(plots.heatmap([[1.0]])))
    assert png.startswith(b"\x89PNG") and len(png) > 1000


# ------------------------------------------------------------------ views
@pytest.fixture(scope="module")
def setup():
    model, task = tiny_model(), tiny_task()
    return prompted(model, task, SoftPrompt.init(model, 3, seed=1)), task


def _assert_offline(html: str) -> None:
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert not re.search(r"""from\s*["']https?:""", html) and "unpkg" not in html
    assert html.count("<script>") >= 2 and "var CircuitsVis" in html


def _alphas(html: str) -> list[float]:
    """The colour strength of every token span, in order."""
    return [float(a) for a in re.findall(r"background: rgba\(\d+,\d+,\d+,([\d.]+)\)", html)]


def test_neuron_view_values_match_the_probe(setup):
    pm, task = setup
    pairs = [(1, 5), (0, 7), (1, 60)]
    texts = task.dev.texts[:4]
    v = neuron_activations_view(pm, texts, ["L1.N5", "L0.N7", "L1.N60"])
    assert v.data["labels"] == ["L1.N5", "L0.N7", "L1.N60"] and len(v.data["examples"]) == 4
    ref = activations(pm, task.dev, pairs)[:4]  # [n, K, P] at the prompt positions
    for i, (toks, vals) in enumerate(v.data["examples"]):
        assert toks[-3:] == ["<P0>", "<P1>", "<P2>"]
        assert "".join(toks[:-3]).split() == texts[i].split()
        torch.testing.assert_close(vals[-3:].T, ref[i], rtol=1e-4, atol=1e-5)
    html = v.html()
    assert "<script" not in html and "&lt;P0&gt;" in html and html.count('class="slv-legend"') == 3
    assert str(v) == html


def test_one_colour_scale_per_neuron_across_examples():
    v = tokens_view([(["a", "b"], [[0.1], [0.2]]), (["c", "d"], [[1.0], [2.0]])], ["L0.N0"])
    assert _alphas(v.html()) == [0.05, 0.1, 0.5, 1.0]  # not each example stretched to its own maximum
    assert v.data["scales"] == [2.0] and "-2<span" in v.html() and "</span>2 " in v.html()  # the legend's ends


def test_the_baseline_is_white_and_the_probed_position_outlined(setup):
    pm, task = setup
    from skill_lens.probing.probe import probe

    result = probe(pm, task)
    per = result.per_position("dev")
    v = neuron_activations_view(pm, task.dev.texts[:2], ["L1.N5"], result=result)
    best = int(per[1, :, 5].argmax())
    assert v.data["centers"] == [pytest.approx(float(result.baseline[1, best, 5]))]
    assert 'class="slv-p slv-mark" title=' in v.html() and f">&lt;P{best}&gt;</span>" in v.html()
    marked = re.findall(r'class="slv-p slv-mark"[^>]*>([^<]*)<', v.html())
    assert marked == [f"&lt;P{best}&gt;"] * 2  # once per example
    assert f"L1.N5 {float(per[1, best, 5]):.3f}" in v.html() and "train baseline" in v.html()


def test_captions_give_the_label_and_the_models_prediction(setup):
    pm, task = setup
    texts, labels = task.dev.texts[:4], task.dev.labels[:4]
    predicted = pm.label_logits(pm.encode(texts)).argmax(-1).tolist()
    v = neuron_activations_view(pm, texts, "L0.N1", labels=labels, label_names=task.label_names)
    assert v.data["captions"] == [f"example {i} · label {task.label_names[y]} · predicted {task.label_names[p]}"
                                  for i, (y, p) in enumerate(zip(labels, predicted))]


def test_neurons_are_shown_in_rank_order(setup):
    pm, task = setup
    from skill_lens.probing.neurons import NeuronSet

    scores = torch.rand(2, 64, generator=torch.Generator().manual_seed(3))
    skill = NeuronSet.from_scores(scores, top=4)
    ranked = [label for label, _ in skill.top(4)]
    assert ranked != [NeuronSet.label(*p) for p in skill.pairs()]  # the test means something
    assert neuron_activations_view(pm, ["good"], skill).data["labels"] == ranked
    assert neuron_activations_view(pm, ["good"], skill.top(2)).data["labels"] == ranked[:2]
    assert top_examples_view(pm, task.dev, skill, k=1).data["labels"] == ranked


def test_a_split_brings_its_second_texts_and_labels(setup):
    pm, task = setup
    pairs = Split(task.dev.texts[:2], task.dev.labels[:2], task.dev.texts[2:4])
    v = neuron_activations_view(pm, pairs, "L0.N1", label_names=task.label_names)
    alone = neuron_activations_view(pm, pairs.texts, "L0.N1", labels=pairs.labels, label_names=task.label_names)
    for (toks, _), (first_only, _), text_b in zip(v.data["examples"], alone.data["examples"], pairs.texts_b):
        assert len(toks) > len(first_only) and text_b.split()[-1] in "".join(toks)  # the second text is shown
    predicted = pm.label_logits(pm.encode(pairs.texts, pairs.texts_b)).argmax(-1).tolist()
    assert v.data["captions"] == [f"example {i} · label {task.label_names[y]} · predicted {task.label_names[p]}"
                                  for i, (y, p) in enumerate(zip(pairs.labels, predicted))]
    with pytest.raises(ValueError, match="3 labels for 2 texts"):
        neuron_activations_view(pm, pairs, "L0.N1", labels=[0, 1, 0])
    with pytest.raises(TypeError):  # display settings are named: nothing lands in the wrong one
        neuron_activations_view(pm, pairs.texts, "L0.N1", "input")


@pytest.mark.parametrize("family", ["mlm", "seq2seq", "gpt2"])
def test_neuron_view_other_families(family):
    model, task = tiny_model(family), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    v = neuron_activations_view(pm, task.dev.texts[:2], [(0, 1)], positions="prompt")
    assert [toks for toks, _ in v.data["examples"]] == [["<P0>", "<P1>"]] * 2
    allv = neuron_activations_view(pm, task.dev.texts[:1], [(0, 1)], positions="all")
    n_special = 0 if family == "gpt2" else 1  # GPT-2 adds no BOS; the MLM and T5 add <s>, <mask>, </s>
    assert len(allv.data["examples"][0][0]) >= len(task.dev.texts[0].split()) + 2 + n_special


def test_hard_prompt_view_and_bad_arguments(setup):
    pm, task = setup
    hard = hard_prompt_model(pm.model, task)
    assert not any("P0" in t for t in neuron_activations_view(hard, ["good"], "L0.N0").data["examples"][0][0])
    with pytest.raises(ValueError, match="soft prompt"):
        neuron_activations_view(hard, ["good"], "L0.N0", positions="prompt")
    with pytest.raises(ValueError, match="L2.N0 is not in a model with 2 layers x 64 neurons"):
        neuron_activations_view(pm, ["good"], "L2.N0")
    with pytest.raises(ValueError, match="'layer1-neuron5' is not a neuron label; write layer and index like"):
        neuron_activations_view(pm, ["good"], "layer1-neuron5")
    with pytest.raises(ValueError, match="no neurons"):
        neuron_activations_view(pm, ["good"], [])
    with pytest.raises(ValueError, match="positions"):
        neuron_activations_view(pm, ["good"], "L0.N0", positions="middle")


def test_top_examples_are_the_most_and_least_active(setup):
    pm, task = setup
    v = top_examples_view(pm, task.dev, ["L1.N5", "L0.N9"], k=3, label_names=task.label_names)
    assert v.data["labels"] == ["L1.N5", "L0.N9"] and len(v.data["chosen"]) == 2
    mean = activations(pm, task.dev, [(1, 5), (0, 9)]).mean(-1)  # [n, K]: mean over the prompt
    for j in range(2):
        top, bottom = v.data["chosen"][j]
        got = lambda idx: torch.stack([v.data["examples"][i][1][-3:, j].mean() for i in idx])  # noqa: E731
        torch.testing.assert_close(got(top), mean[:, j].topk(3).values, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got(bottom), mean[:, j].topk(3, largest=False).values, rtol=1e-4, atol=1e-5)
    html = v.html()
    assert "<script" not in html and html.count("most active (mean over the prompt)") == 2
    assert len(re.findall(r"example \d+ · label (negative|positive) · predicted (negative|positive) · ", html)) == 12
    with pytest.raises(ValueError, match="score"):
        top_examples_view(pm, task.dev, "L0.N0", score="median")


@needs_chromium
def test_the_static_views_tabs_switch_without_any_script_of_ours(setup, tmp_path):
    """Only CSS: the first neuron's tab shows, a click on the second neuron's label shows that one instead."""
    v = tokens_view([(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])], ["L0.N0", "L1.N1"])
    tid = re.search(r'id="(slt[0-9a-f]+)"', v.html()).group(1)
    probe_js = (f"<script>var t0 = document.getElementById('{tid}-t0'), t1 = document.getElementById('{tid}-t1');"
                "var s = [getComputedStyle(t0).display, getComputedStyle(t1).display];"
                f"document.querySelector('label[for={tid}-r1]').click();"
                "s.push(getComputedStyle(t0).display, getComputedStyle(t1).display);"
                "document.body.setAttribute('data-shown', s.join(','));</script>")
    dom = dump_dom(v.html() + probe_js, tmp_path)
    assert 'data-shown="block,none,none,block"' in dom
def test_neuron_picker_shapes_and_size_guard(setup):
    pm, task = setup
    p = neuron_picker(pm, task.dev.texts[:2]).panels[0].props
    assert p["firstDimensionLabels"] == ["L0", "L1"] and len(p["secondDimensionLabels"]) == 64
    assert np.array(p["activations"][0]).shape == (len(p["tokens"][0]), 2, 64)
    with pytest.raises(ValueError, match="max_values"):
        neuron_picker(pm, task.dev.texts[:2], max_values=100)


def test_views_escape_malicious_tokens_and_json():
    v = tokens_view([(EVIL + ["ok"], [[1.0], [2.0], [3.0]])], [EVIL[0]], captions=EVIL + ["x"])
    html = v.html()
    for evil in EVIL:
        assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # tokens, captions and tab names, escaped
    assert "<script" not in html.lower() and "<img" not in html
    cv = _cv([EVIL[1]])
    assert "\\u003c/script\\u003e\\u003cimg" in cv.html()  # data inside <script>: JSON with < and > escaped
    assert cv.html().lower().count("</script") == 2  # the library and the panel: none early
    assert "<!--" not in cv.html()
    assert "<" not in script_json({"a": EVIL}) and ">" not in script_json(EVIL)


def test_view_save_writes_a_standalone_page(tmp_path):
    path = _cv(["a"], title="t <b>").save(tmp_path / "v.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "t &lt;b&gt;" in page and "CircuitsVis.render" in page
    static = tokens_view([(["a"], [[1.0]])], ["L0.N0"], title="s").save(tmp_path / "s.html").read_text()
    assert "slv-legend" in static and "CircuitsVis" not in static  # a static view needs no library
    assert isinstance(View([], "x").fragment(), str)


# ------------------------------------------------------------------ the bundle once per notebook
def _cv(tokens, values=None, labels=("L0.N0",), title=""):
    """A circuitsvis view (as neuron_picker makes), cheap: one ColoredTokensMulti panel."""
    from skill_lens.views.view import Panel

    values = values or [[1.0] * len(labels) for _ in tokens]
    return View([Panel("ColoredTokensMulti", {"tokens": list(tokens), "values": values, "labels": list(labels)})],
                title)


def test_static_views_never_carry_the_bundle():
    v = tokens_view([(["a"], [[1.0]])], ["L0.N0"])
    reset_notebook_bundle()
    assert v._repr_html_() == v.fragment() == v.html() and _cv(["b"])._repr_html_().count("var CircuitsVis") == 1
    reset_notebook_bundle()


def _bundle_marker() -> str:
    """A distinctive piece of circuitsvis' bundle (from its middle), to count copies of it."""
    js = circuitsvis_script()
    return js[len(js) // 2:len(js) // 2 + 64]


def test_the_first_view_in_a_session_carries_the_bundle_later_ones_reuse_it():
    marker = _bundle_marker()
    a = _cv(["a"], title="a")
    b = _cv(["b"], [[2.0]], title="b")
    reset_notebook_bundle()
    first, second, again = a._repr_html_(), b._repr_html_(), a._repr_html_()
    assert first == a.html() and first.count(marker) == 1 and first.index(marker) < first.index("CircuitsVis.render")
    assert second == b.fragment() and again == a.fragment() and marker not in second + again
    assert "CircuitsVis.render" in second and "slv-" in second
    assert a.html().count(marker) == b.html().count(marker) == 1  # html(), str() and save() stay self-contained
    assert str(b) == b.html() and "\n" + b.fragment() in b.html()
    reset_notebook_bundle()
    assert b._repr_html_() == b.html()  # after a reset the next view carries it again
    reset_notebook_bundle()


def test_on_colab_every_view_carries_the_bundle(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))  # outputs in own iframes
    v = _cv(["a"])
    reset_notebook_bundle()
    assert v._repr_html_() == v._repr_html_() == v.html()
    reset_notebook_bundle()


@needs_chromium
def test_notebook_outputs_render_in_chromium_with_one_bundle(tmp_path):
    views = [_cv([f"t{i}", " x"], [[1.0, 0.0], [0.0, 2.0]], [f"L0.N{i}", "L1.N9"]) for i in range(3)]
    reset_notebook_bundle()
    outputs = [v._repr_html_() for v in views]  # as three cells of one notebook display them
    reset_notebook_bundle()
    assert sum(o.count(_bundle_marker()) for o in outputs) == 1
    dom = dump_dom("".join(f'<div class="output">{o}</div>' for o in outputs), tmp_path)
    assert dom.count('class="colored-tokens"') == 3  # every view rendered, the later ones with the first's library
    for i in range(3):
        assert f"L0.N{i}" in dom.split(f"slv-{views[i]._id}", 1)[1]
    assert ">(circuitsvis did not load)<" not in dom
    alone = dump_dom(f'<div class="output">{outputs[1]}</div>', tmp_path)  # a later output without the first
    assert 'class="colored-tokens"' not in alone and ">(circuitsvis did not load)<" in alone
