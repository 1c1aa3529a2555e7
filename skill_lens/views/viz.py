"""Inline views of skill neurons, working offline: static HTML, and circuitsvis for browsing.

Each function returns a :class:`~skill_lens.views.view.View`: it renders in Jupyter (``_repr_html_``),
``view.html()`` (or ``str(view)``) is a self-contained HTML fragment, ``view.save(path)`` a standalone page.

* :func:`neuron_activations_view` -- chosen neurons over the tokens of a few texts: one tab per neuron
  (in the order given: best first for ``skill.top(k)`` or a scored set), every example on **one colour
  scale per neuron** with a legend; given the probe's ``result``, white is the neuron's train baseline at
  the position the probe read (outlined), orange above it and blue below, which is the probe's own rule;
  captions give each example's label and the model's prediction. Prompt tokens are ``<P0>``, ``<P1>`` ...
* :func:`top_examples_view` -- the examples of a split where each neuron is most and least active, alike;
* :func:`tokens_view` -- the same tabs from activations you already have;
* :func:`neuron_picker` -- any neuron of any layer over a few texts (circuitsvis: layer and neuron drop-downs).

The first three are plain HTML and CSS (tabs are radio buttons, :mod:`skill_lens.views.static_html`): they
render without any script, also in GitHub's notebook viewer, a static docs page or the report; where styles
are stripped every tab shows, one after another. The picker uses circuitsvis' JavaScript bundle, inlined from
the installed package and embedded once per notebook session (:mod:`skill_lens.views.view`; after clearing
the output that carried it, call :func:`~skill_lens.views.view.reset_notebook_bundle`). What the views show is
read by :mod:`skill_lens.views.view_data`. ``View``, ``circuitsvis_script``, ``script_json``,
``reset_notebook_bundle``, ``neuron_label`` and ``POSITIONS`` can be imported from here too.

Safety: token text and captions are HTML-escaped; data embedded in ``<script>`` is JSON with ``<``,
``>`` and ``&`` escaped.

>>> v = tokens_view([(["a", " good", "<P0>"], [[0.1, 1.0], [2.0, 0.0], [0.5, -1.0]])], ["L0.N1", "L1.N3"])
>>> html = v.html()
>>> "<P0>" in html, "&lt;P0&gt;" in html, "<script" in html
(False, True, False)
"""

from __future__ import annotations

import html as htmllib
import uuid
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from skill_lens.data.tasks import Split
from skill_lens.model.loading import describe
from skill_lens.views.static_html import example, legend, neuron_scale, subheading, tabs
# View and the bundle's functions, neuron_label and POSITIONS are imported from here too (before they had modules)
from skill_lens.views.view import Panel, View, circuitsvis_script, reset_notebook_bundle, script_json  # noqa: F401
from skill_lens.views.view_data import (POSITIONS, SCORES, example_scores, neuron_label, neuron_labels,  # noqa: F401
                                        predictions, probe_marks, ranked_pairs, token_activations)

__all__ = ["neuron_activations_view", "top_examples_view", "neuron_picker", "tokens_view"]


def tokens_view(examples: Iterable[tuple[Sequence[str], Any]], labels: Sequence[str],
                captions: Sequence[str] | None = None, title: str = "", *, centers: Sequence[float] | None = None,
                notes: Sequence[str] | None = None, marks: Sequence[str | None] | None = None) -> View:
    """One tab per neuron (``labels``, in order) showing every example ``(tokens [S], values [S, K])`` coloured
    by that neuron's values on **one scale** across the examples, with a legend.

    ``centers[k]`` (default 0) is white, values above it orange and below it blue, as far as the largest
    distance from it among the examples; ``notes[k]`` says what the centre is; the token ``marks[k]``
    (e.g. ``"<P3>"``) is outlined.

    >>> v = tokens_view([(["x", "y"], [[1.0], [0.0]])], ["L0.N0"], captions=["example 0"], centers=[0.5])
    >>> v, v.data["scales"]
    (View(1 neuron x 1 example, title=''), [0.5])
    """
    rows = []
    for i, (tokens, values) in enumerate(examples):
        v = torch.as_tensor(values, dtype=torch.float32).reshape(len(tokens), -1)
        if v.shape[1] != len(labels):
            raise ValueError(f"example {i} has {v.shape[1]} values per token but {len(labels)} labels")
        rows.append((list(tokens), torch.nan_to_num(v, nan=0.0, posinf=3e38, neginf=-3e38)))
    K = len(labels)
    centers = [0.0] * K if centers is None else [float(c) for c in centers]
    notes = ["white: 0"] * K if notes is None else list(notes)
    marks = [None] * K if marks is None else list(marks)
    scales, bodies = [], []
    for j in range(K):
        scales.append(neuron_scale([v[:, j] for _, v in rows], centers[j]))
        bodies.append(legend(centers[j], scales[j], notes[j]) + "".join(
            example(toks, v[:, j].tolist(), centers[j], scales[j], marks[j], captions[i] if captions else "")
            for i, (toks, v) in enumerate(rows)))
    vid = uuid.uuid4().hex[:12]
    summary = f"{K} neuron{'s' * (K != 1)} x {len(rows)} example{'s' * (len(rows) != 1)}"
    return View([], title, _id=vid, body=tabs(f"slt{vid}", [str(x) for x in labels], bodies),
                data={"summary": summary, "labels": [str(x) for x in labels], "examples": rows,
                      "centers": centers, "scales": scales, "captions": list(captions or [])})


def _caption(base: str, gold: int | None, pred: int, names: Sequence[str]) -> str:
    name = lambda y: names[y] if 0 <= y < len(names) else str(y)  # noqa: E731
    return base + ("" if gold is None else f" · label {name(gold)}") + f" · predicted {name(pred)}"


def _texts(texts, labels) -> tuple[list[str], list[str] | None, list[int] | None]:
    """``(texts, second texts or None, gold labels or None)`` of a string, a few strings or a split."""
    if isinstance(texts, Split):
        texts, texts_b, labels = texts.texts, texts.texts_b, texts.labels if labels is None else labels
    else:
        texts, texts_b = [texts] if isinstance(texts, str) else list(texts), None
    if not texts:
        raise ValueError("no texts given; pass a few example strings (or a split, e.g. task.dev.subset(range(3)))")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} texts; pass one label per text")
    return list(texts), texts_b, labels


def neuron_activations_view(pm, texts: Sequence[str] | str | Split, neurons: Any, *, positions: str = "input+prompt",
                            title: str = "", result=None, labels: Sequence[int] | None = None,
                            label_names: Sequence[str] | None = None) -> View:
    """Activations of ``neurons`` over the tokens of ``texts``: one tab per neuron, every text on its scale.

    ``texts``: a string, a few strings, or a :class:`~skill_lens.data.tasks.Split` (e.g.
    ``task.dev.subset(range(3))``: its second texts for sentence pairs, its labels unless ``labels`` is given).
    ``neurons`` in the order to show: ``skill.top(4)`` (best first), labels, pairs, or a set (best first when
    it has scores). ``result`` (the probe's :class:`~skill_lens.probing.result.ProbeResult`) centres each
    neuron's colours on its train baseline at the position the probe scored it (outlined) and names its
    predictivity. Each caption gives the text's gold label (with ``labels``, named by ``label_names``)
    and the model's prediction. ``positions``: ``"input+prompt"`` (default), ``"all"`` (with special
    tokens), ``"input"`` or ``"prompt"``; padding is never shown. Prompt tokens are ``<P0>``, ``<P1>`` ...

    >>> from skill_lens.model.tiny import tiny_model
    >>> from skill_lens.prompting.prompted_model import PromptedModel
    >>> from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
    >>> model = tiny_model()
    >>> pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
    >>> v = neuron_activations_view(pm, ["the film was good", "bad"], ["L1.N5", "L0.N3"], labels=[1, 0])
    >>> v.data["labels"], v.data["examples"][0][0], v.data["captions"][0]  # doctest: +ELLIPSIS
    (['L1.N5', 'L0.N3'], ['the', ' film', ' was', ' good', '<P0>', '<P1>'], 'example 0 · label good · predicted ...')
    """
    texts, texts_b, labels = _texts(texts, labels)
    pairs = ranked_pairs(neurons, describe(pm.model).shape, describe(pm.model).layout)
    rows = token_activations(pm, texts, pairs, texts_b, positions)
    preds = predictions(pm, texts, texts_b)
    names = list(label_names) if label_names is not None else list(pm.verbalizer.words)
    caps = [_caption(f"example {i}", None if labels is None else int(labels[i]), p, names) for i, p in enumerate(preds)]
    centers, notes, marks, tab_names = probe_marks(pm, pairs, result)
    view = tokens_view(rows, tab_names, caps, title, centers=centers, notes=notes, marks=marks)
    view.data["labels"] = neuron_labels(pm, pairs)
    return view


def top_examples_view(pm, split, neurons: Any, *, k: int = 5, score: str = "prompt_mean",
                      label_names: Sequence[str] | None = None, title: str = "", result=None) -> View:
    """For each neuron (a tab, in the order given; best first for a scored set), the ``k`` examples of
    ``split`` where it is most and least active, on one colour scale for the neuron.

    ``score`` ranks examples: ``"prompt_mean"`` (mean over the soft prompt's positions, where skill
    neurons are read; the prediction position for a hard prompt), ``"predict"`` or ``"max"`` (over all
    tokens). Each example's caption gives its gold label (named by ``label_names``), the prediction and
    its score; ``result`` centres the colours on the neuron's probe baseline, as in
    :func:`neuron_activations_view`.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> v = top_examples_view(prompted(model, task, SoftPrompt.init(model, 2)), task.dev, "L1.N5", k=3)
    >>> v, [len(side) for side in v.data["chosen"][0]]
    (View(1 neuron x 3 most and 3 least active examples, title=''), [3, 3])
    """
    if split is None or len(split) == 0:
        raise ValueError("the split is empty; pass one with examples (e.g. task.dev)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    pairs = ranked_pairs(neurons, describe(pm.model).shape, describe(pm.model).layout)
    scores = example_scores(pm, split, pairs, score)  # [n, K]
    k = min(k, len(split))
    chosen = [[scores[:, j].topk(k, largest=largest).indices.tolist() for largest in (True, False)]
              for j in range(len(pairs))]
    union = sorted({i for per in chosen for idx in per for i in idx})  # one more pass, for all neurons at once
    tb = [split.texts_b[i] for i in union] if split.texts_b is not None else None
    texts = [split.texts[i] for i in union]
    rows = dict(zip(union, token_activations(pm, texts, pairs, tb)))
    preds = dict(zip(union, predictions(pm, texts, tb)))
    names = list(label_names) if label_names is not None else [str(y) for y in sorted(set(split.labels))]
    centers, notes, marks, tab_names = probe_marks(pm, pairs, result)
    bodies = []
    for j, per in enumerate(chosen):
        scale = neuron_scale([rows[i][1][:, j] for idx in per for i in idx], centers[j])
        parts = [legend(centers[j], scale, notes[j])]
        for side, idx in zip((f"most active ({SCORES[score]})", "least active"), per):
            parts.append(subheading(side))
            parts += [example(rows[i][0], rows[i][1][:, j].tolist(), centers[j], scale, marks[j],
                              _caption(f"example {i}", split.labels[i], preds[i], names) + f" · {float(scores[i, j]):.3g}")
                      for i in idx]
        bodies.append("".join(parts))
    vid = uuid.uuid4().hex[:12]
    summary = f"{len(pairs)} neuron{'s' * (len(pairs) != 1)} x {k} most and {k} least active examples"
    return View([], title, _id=vid, body=tabs(f"slt{vid}", tab_names, bodies),
                data={"summary": summary, "labels": neuron_labels(pm, pairs), "chosen": chosen,
                      "scores": scores, "examples": rows, "centers": centers})


def _rounded(values: Tensor) -> list:
    """Nested lists of floats with 5 significant digits (a third of the JSON of full float32 reprs)."""
    flat = [float(f"{v:.5g}") for v in values.flatten().tolist()]
    return torch.tensor(flat, dtype=torch.float64).reshape(values.shape).tolist() if flat else values.tolist()


def neuron_picker(pm, texts: Sequence[str] | str, layers: Sequence[int] | None = None,
                  neuron_indices: Sequence[int] | None = None, texts_b: Sequence[str] | None = None,
                  positions: str = "input+prompt", max_values: int = 500_000, title: str = "") -> View:
    """Browse any neuron: layer and neuron drop-downs over the tokens of ``texts``.

    ``layers`` (default all) and ``neuron_indices`` (default all ``d_mlp``) bound what is embedded;
    a :class:`ValueError` asks to narrow them when the view would hold more than ``max_values`` numbers.

    >>> from skill_lens.model.tiny import tiny_model
    >>> from skill_lens.prompting.prompted_model import PromptedModel
    >>> from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
    >>> model = tiny_model()
    >>> pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
    >>> p = neuron_picker(pm, ["good film", "bad plot"], layers=[1], neuron_indices=[3, 5]).panels[0].props
    >>> p["firstDimensionLabels"], p["secondDimensionLabels"], len(p["activations"][0][0][0])
    (['L1'], ['N3', 'N5'], 2)
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    info = describe(pm.model)
    layers = list(range(info.n_layers)) if layers is None else [int(l) for l in layers]
    idx = list(range(info.d_mlp)) if neuron_indices is None else [int(i) for i in neuron_indices]
    if not texts or not layers or not idx:
        raise ValueError("neuron_picker needs at least one text, one layer and one neuron index")
    pairs = ranked_pairs([(l, i) for l in layers for i in idx], info.shape, info.layout)
    n_tokens = sum(len(pm.encode([t]).input_ids[0]) for t in texts)
    if n_tokens * len(pairs) > max_values:
        raise ValueError(f"this view would embed {n_tokens * len(pairs):,} values (> max_values={max_values:,}); "
                         "pass fewer texts, a few layers=[...] or neuron_indices=[...]")
    rows = token_activations(pm, texts, pairs, texts_b, positions)
    return View([Panel("TextNeuronActivations", {
        "tokens": [[htmllib.escape(t, quote=False) for t in toks] for toks, _ in rows],
        "activations": [_rounded(a.reshape(len(toks), len(layers), len(idx))) for toks, a in rows],
        "firstDimensionName": "Layer", "secondDimensionName": "Neuron",
        "firstDimensionLabels": [f"L{l}" for l in layers], "secondDimensionLabels": [info.layout.label(layers[0], i).split(".", 1)[1] for i in idx],
    })], title)
