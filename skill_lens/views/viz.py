"""Inline views of skill neurons with circuitsvis, working offline.

Each function returns a :class:`View`: it renders in Jupyter (``_repr_html_``), and ``view.html()``
(or ``str(view)``) is a self-contained HTML fragment with circuitsvis' JavaScript bundle inlined
from the installed package (no CDN, no network; circuitsvis' own ``RenderedHTML`` probes the
internet and falls back to unpkg). ``view.save(path)`` writes a standalone page.

In a notebook the bundle (about 1.3 MB) is embedded once per kernel session: the first view
displayed carries it and defines ``window.CircuitsVis`` for the page, later views carry only their
panels (:meth:`View.fragment`) and use it. After clearing the output that carried it (or to save a
cell's output on its own), call :func:`reset_notebook_bundle` and display the view again. Google
Colab shows every output in its own frame, so there every view carries the bundle.

* :func:`neuron_activations_view` -- chosen neurons over the tokens of a few texts, one panel per
  text with a neuron selector (prompt tokens are shown as ``<P0>``, ``<P1>`` ...);
* :func:`top_examples_view` -- the examples of a split where each neuron is most and least active;
* :func:`neuron_picker` -- any neuron of any layer over a few texts (layer and neuron drop-downs);
* :func:`tokens_view` -- the same panels from activations you already have.

Safety: circuitsvis writes token text with ``innerHTML``, so tokens are HTML-escaped before they are
handed over, and all data embedded in ``<script>`` is JSON with ``<``, ``>`` and ``&`` escaped.

>>> v = tokens_view([(["a", " good", "<P0>"], [[0.1, 1.0], [2.0, 0.0], [0.5, -1.0]])], ["L0.N1", "L1.N3"])
>>> html = v.html()
>>> "<P0>" in html, "u0026lt;P0" in html, "https://unpkg" in html
(False, True, False)
"""

from __future__ import annotations

import functools
import html as htmllib
import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from skill_lens.store.artifacts import atomic_write
from skill_lens.probing.capture import capture_neurons
from skill_lens.model.loading import describe
from skill_lens.probing.neurons import NeuronSet

__all__ = ["View", "tokens_view", "neuron_activations_view", "top_examples_view", "neuron_picker",
           "neuron_label", "circuitsvis_script", "script_json", "reset_notebook_bundle", "POSITIONS"]

POSITIONS = ("input+prompt", "all", "input", "prompt")


# ------------------------------------------------------------------ HTML plumbing
@functools.lru_cache(maxsize=1)
def _circuitsvis_js() -> str:
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.exists():
        raise FileNotFoundError(f"circuitsvis {circuitsvis.__version__} has no bundled {path}; "
                                "reinstall circuitsvis from a wheel (pip install --force-reinstall circuitsvis).")
    js = path.read_text(encoding="utf-8")
    # Inside <script>, "</script" ends the element and "<!--" changes parsing; both only occur in
    # string literals of the bundle, where "<\/" and "<\!" mean the same characters.
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def circuitsvis_script() -> str:
    """``<script>`` defining ``window.CircuitsVis`` from the installed bundle (about 1.3 MB, no network).

    >>> s = circuitsvis_script()
    >>> s.startswith("<script>") and "CircuitsVis" in s and s.lower().count("</script") == 1
    True
    """
    return f"<script>{_circuitsvis_js()}</script>"


# Whether this kernel session has displayed a view carrying the bundle (see the module docstring).
_NOTEBOOK = {"bundle_shown": False}


def _outputs_in_own_frames() -> bool:
    """Whether each notebook output is a separate page (Google Colab), which cannot share the library."""
    return "google.colab" in sys.modules


def reset_notebook_bundle() -> None:
    """Make the next view displayed in a notebook carry the circuitsvis bundle again.

    The first view displayed in a kernel session embeds the bundle; later ones reuse it from the
    page. Call this after clearing that first output (or when a cell's output must stand alone).

    >>> v = tokens_view([(["a"], [[1.0]])], ["L0.N0"])
    >>> reset_notebook_bundle()
    >>> "var CircuitsVis" in v._repr_html_(), "var CircuitsVis" in v._repr_html_()
    (True, False)
    """
    _NOTEBOOK["bundle_shown"] = False


def script_json(obj: Any) -> str:
    """JSON safe to place inside ``<script>``: ``<``, ``>``, ``&`` and line separators are ``\\u`` escapes.

    >>> script_json({"t": "</script><img src=x onerror=alert(1)>"})
    '{"t":"\\\\u003c/script\\\\u003e\\\\u003cimg src=x onerror=alert(1)\\\\u003e"}'
    """
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


_NO_BUNDLE_HINT = ("the circuitsvis library is defined by the first view displayed in this notebook; "
                   "if that output is gone, call skill_lens.views.viz.reset_notebook_bundle() and display this view again")


@dataclass
class _Panel:
    component: str  # a circuitsvis React component: ColoredTokensMulti, TopkSamples, TextNeuronActivations
    props: dict
    caption: str = ""  # plain text, escaped when rendered


@dataclass
class View:
    """circuitsvis panels with captions; renders inline in Jupyter and as self-contained HTML."""

    panels: list[_Panel]
    title: str = ""
    note: str = ""
    _id: str = field(default_factory=lambda: uuid.uuid4().hex[:12], repr=False)

    def fragment(self) -> str:
        """The panels' HTML *without* the circuitsvis library (put :func:`circuitsvis_script` once before it)."""
        parts = [f'<div class="skill-lens-view" id="slv-{self._id}">']
        if self.title:
            parts.append(f"<h4>{htmllib.escape(self.title)}</h4>")
        if self.note:
            parts.append(f'<p class="note">{htmllib.escape(self.note)}</p>')
        for i, p in enumerate(self.panels):
            div = f"slv-{self._id}-{i}"
            if p.caption:
                parts.append(f'<div class="caption">{htmllib.escape(p.caption)}</div>')
            parts.append(
                f'<div id="{div}" class="cv-panel"></div>\n<script>(function go(tries) {{\n'
                f'  var el = document.getElementById("{div}");\n'
                f'  if (!window.CircuitsVis) {{\n'
                f'    if (tries > 0) {{ setTimeout(function () {{ go(tries - 1); }}, 250); return; }}\n'
                f'    el.textContent = "(circuitsvis did not load)"; el.title = "{_NO_BUNDLE_HINT}"; return;\n'
                f'  }}\n'
                f'  CircuitsVis.render("{div}", CircuitsVis.{p.component}, {script_json(p.props)});\n'
                f"}})(20);</script>")
        parts.append("</div>")
        return "\n".join(parts)

    def html(self) -> str:
        """Self-contained HTML: the circuitsvis library inline, then the panels."""
        return circuitsvis_script() + "\n" + self.fragment()

    def _repr_html_(self) -> str:
        """In a notebook: :meth:`html` for the session's first view, :meth:`fragment` after it."""
        if _NOTEBOOK["bundle_shown"] and not _outputs_in_own_frames():
            return self.fragment()
        _NOTEBOOK["bundle_shown"] = True
        return self.html()

    def __repr__(self) -> str:
        kinds = sorted({p.component for p in self.panels})
        return f"View({len(self.panels)} panel(s) of {', '.join(kinds) or 'nothing'}, title={self.title!r})"

    def __str__(self) -> str:
        return self.html()

    def save(self, path) -> Path:
        """Write a standalone HTML page (atomically); returns its path."""
        path = Path(path)
        page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{htmllib.escape(self.title or "view")}'
                f"</title></head><body>\n{self.html()}\n</body></html>\n")
        with atomic_write(path) as f:
            f.write(page)
        return path


# ------------------------------------------------------------------ neurons
def neuron_label(layer: int, index: int, layout=None) -> str:
    """``"L{layer}.N{index}"``; with a model's ``layout`` (``describe(model).layout``) an expert's neuron is
    ``"L{layer}.E{expert}.N{j}"`` (see :mod:`skill_lens.model.anatomy`).

    >>> neuron_label(29, 692)
    'L29.N692'
    """
    return f"L{layer}.N{index}" if layout is None else layout.label(layer, index)


def _labels(pm, pairs) -> list[str]:
    layout = describe(pm.model).layout
    return [neuron_label(*p, layout=layout) for p in pairs]


def _pairs(neurons: Any, shape: tuple[int, int], layout=None) -> list[tuple[int, int]]:
    """``[(layer, index)]`` in the order given (:meth:`NeuronSet.pairs_of`), at least one."""
    pairs = NeuronSet.pairs_of(neurons, *shape, layout=layout)
    if not pairs:
        raise ValueError("no neurons given; pass labels like 'L3.N12', (layer, index) pairs or a NeuronSet")
    return pairs


# ------------------------------------------------------------------ activations
def _token_strings(tok, ids: list[int]) -> list[str]:
    pieces = [tok.decode([i]) for i in ids]
    # word-level tokenizers decode pieces without their separating spaces: put them back
    if len(ids) >= 2 and not any(p[:1].isspace() for p in pieces) and tok.decode(ids[:2]) == f"{pieces[0]} {pieces[1]}":
        pieces = [pieces[0]] + [" " + p for p in pieces[1:]]
    return pieces


def _keep_mask(batch, b: int, positions: str) -> Tensor:
    n = batch.input_ids.shape[1]
    prompt = torch.zeros(n, dtype=torch.bool, device=batch.input_ids.device)
    prompt[batch.prompt_slice] = True
    real = batch.attention_mask[b].bool()
    return {"all": real, "input": batch.input_mask[b], "prompt": prompt & real,
            "input+prompt": (batch.input_mask[b] | prompt) & real}[positions]


def _encoder_only(batch):
    """A capture ``select`` keeping whole activations of the batch's own sequence (not a T5 decoder call)."""
    return lambda act, name: act if act.shape[1] == batch.input_ids.shape[1] else None


def _token_activations(pm, texts: Sequence[str], pairs, texts_b=None, positions: str = "input+prompt",
                       batch_size: int = 16) -> list[tuple[list[str], Tensor]]:
    """Per text: ``(token strings, activations [S, K])`` of ``pairs`` at the kept positions."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if positions == "prompt" and pm.prompt is None:
        raise ValueError("positions='prompt' needs a soft prompt; this model runs a hard prompt")
    pairs = _pairs(pairs, describe(pm.model).shape, describe(pm.model).layout)
    tok, out = pm.model.tokenizer, []
    for start in range(0, len(texts), batch_size):
        tb = list(texts_b[start:start + batch_size]) if texts_b is not None else None
        batch = pm.encode(list(texts[start:start + batch_size]), tb)
        acts = capture_neurons(pm, batch, pairs, _encoder_only(batch))  # [B, seq, K]
        for b in range(batch.size):
            keep = _keep_mask(batch, b, positions)
            ids = batch.input_ids[b].tolist()
            names, pieces = [], None
            for pos in keep.nonzero()[:, 0].tolist():
                if batch.prompt_slice.start <= pos < batch.prompt_slice.stop:
                    names.append(f"<P{pos - batch.prompt_slice.start}>")
                else:
                    pieces = pieces or dict(zip(range(len(ids)), _token_strings(tok, ids)))
                    names.append(pieces[pos])
            out.append((names, acts[b][keep].cpu()))
    return out


# ------------------------------------------------------------------ views
def _rounded(values: Tensor) -> list:
    """Nested lists of floats with 5 significant digits (a third of the JSON of full float32 reprs)."""
    flat = [float(f"{v:.5g}") for v in values.flatten().tolist()]
    return torch.tensor(flat, dtype=torch.float64).reshape(values.shape).tolist() if flat else values.tolist()


def tokens_view(examples: Iterable[tuple[Sequence[str], Any]], labels: Sequence[str],
                captions: Sequence[str] | None = None, title: str = "") -> View:
    """One panel per example from ``(tokens [S], values [S, K])``, with a selector over the ``K`` ``labels``.

    >>> tokens_view([(["x", "y"], [[1.0], [0.0]])], ["L0.N0"], captions=["example 0"])
    View(1 panel(s) of ColoredTokensMulti, title='')
    """
    panels = []
    for i, (tokens, values) in enumerate(examples):
        v = torch.as_tensor(values, dtype=torch.float32).reshape(len(tokens), -1)
        if v.shape[1] != len(labels):
            raise ValueError(f"example {i} has {v.shape[1]} values per token but {len(labels)} labels")
        v = torch.nan_to_num(v, nan=0.0, posinf=3e38, neginf=-3e38)
        props = {"tokens": [htmllib.escape(t, quote=False) for t in tokens], "values": _rounded(v),
                 "labels": [str(x) for x in labels]}
        panels.append(_Panel("ColoredTokensMulti", props, captions[i] if captions else ""))
    return View(panels, title)


def neuron_activations_view(pm, texts: Sequence[str] | str, neurons: Any, texts_b: Sequence[str] | None = None,
                            positions: str = "input+prompt", captions: Sequence[str] | None = None,
                            title: str = "") -> View:
    """Activations of ``neurons`` over the tokens of ``texts``: one panel per text, a selector per neuron.

    ``positions``: ``"input+prompt"`` (default), ``"all"`` (with special tokens), ``"input"`` or
    ``"prompt"``; padding is never shown. Prompt tokens are labelled ``<P0>``, ``<P1>`` ...

    >>> from skill_lens.model.tiny import tiny_model
    >>> from skill_lens.prompting.prompted_model import PromptedModel
    >>> from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
    >>> model = tiny_model()
    >>> pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
    >>> v = neuron_activations_view(pm, ["the film was good", "bad"], ["L1.N5", "L0.N3"])
    >>> v.panels[0].props["tokens"], v.panels[0].props["labels"]
    (['the', ' film', ' was', ' good', '&lt;P0&gt;', '&lt;P1&gt;'], ['L1.N5', 'L0.N3'])
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given; pass a few example strings")
    pairs = _pairs(neurons, describe(pm.model).shape, describe(pm.model).layout)
    rows = _token_activations(pm, texts, pairs, texts_b, positions)
    caps = list(captions) if captions is not None else [f"example {i}" for i in range(len(texts))]
    return tokens_view(rows, _labels(pm, pairs), caps, title)


def _scores(pm, split, pairs, score: str, batch_size: int) -> Tensor:
    """Per example and neuron, the activation reduced over positions: ``[n, K]``."""
    out = []
    for start in range(0, len(split), batch_size):
        batch = pm.encode_split(split, slice(start, start + batch_size))
        acts = capture_neurons(pm, batch, pairs, _encoder_only(batch))  # [B, seq, K]
        if score == "prompt_mean" and pm.prompt is not None:
            out.append(acts[:, batch.prompt_slice].mean(1))
        elif score in ("prompt_mean", "predict"):
            out.append(acts[torch.arange(batch.size, device=acts.device), batch.predict_pos])
        else:  # max over input and prompt tokens
            keep = torch.stack([_keep_mask(batch, b, "input+prompt") for b in range(batch.size)])
            out.append(acts.masked_fill(~keep[..., None], float("-inf")).amax(1))
    return torch.cat(out).cpu()  # collected on the CPU


def top_examples_view(pm, split, neurons: Any, k: int = 5, score: str = "prompt_mean", batch_size: int = 32,
                      label_names: Sequence[str] | None = None, title: str = "") -> View:
    """For each neuron, the ``k`` examples of ``split`` where it is most and least active.

    ``score`` ranks examples: ``"prompt_mean"`` (mean over the soft prompt's positions, where skill
    neurons are read; the prediction position for a hard prompt), ``"predict"`` or ``"max"`` (over all
    tokens). Each example starts with its gold label, e.g. ``[positive]``.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> v = top_examples_view(prompted(model, task, SoftPrompt.init(model, 2)), task.dev, "L1.N5", k=3)
    >>> p = v.panels[0].props
    >>> v.panels[0].component, len(p["tokens"]), len(p["tokens"][0]), len(p["tokens"][0][0])
    ('TopkSamples', 1, 2, 3)
    """
    if score not in ("prompt_mean", "predict", "max"):
        raise ValueError(f"score must be 'prompt_mean', 'predict' or 'max', got {score!r}")
    if split is None or len(split) == 0:
        raise ValueError("the split is empty; pass one with examples (e.g. task.dev)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    pairs = _pairs(neurons, describe(pm.model).shape, describe(pm.model).layout)
    scores = _scores(pm, split, pairs, score, batch_size)  # [n, K]
    k = min(k, len(split))
    chosen = [[scores[:, j].topk(k, largest=largest).indices.tolist() for largest in (True, False)]
              for j in range(len(pairs))]
    union = sorted({i for per in chosen for idx in per for i in idx})  # one more pass, for all neurons at once
    tb = [split.texts_b[i] for i in union] if split.texts_b is not None else None
    rows = dict(zip(union, _token_activations(pm, [split.texts[i] for i in union], pairs, tb, "input+prompt",
                                              batch_size)))
    names = label_names or [str(y) for y in sorted(set(split.labels))]
    gold = {i: f"[{names[split.labels[i]] if split.labels[i] < len(names) else split.labels[i]}] " for i in union}
    tokens = [[[[htmllib.escape(t, quote=False) for t in [gold[i], *rows[i][0]]] for i in idx] for idx in per]
              for per in chosen]
    values = [[[[0.0, *_rounded(rows[i][1][:, j])] for i in idx] for idx in per] for j, per in enumerate(chosen)]
    props = {"tokens": tokens, "activations": values, "zerothDimensionName": "Neuron",
             "firstDimensionName": "Examples", "zerothDimensionLabels": _labels(pm, pairs),
             "firstDimensionLabels": [f"top {k} (most active, by {score})", f"bottom {k} (least active)"]}
    return View([_Panel("TopkSamples", props)], title)


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
    pairs = _pairs([(l, i) for l in layers for i in idx], info.shape, info.layout)
    n_tokens = sum(len(pm.encode([t]).input_ids[0]) for t in texts)
    if n_tokens * len(pairs) > max_values:
        raise ValueError(f"this view would embed {n_tokens * len(pairs):,} values (> max_values={max_values:,}); "
                         "pass fewer texts, a few layers=[...] or neuron_indices=[...]")
    rows = _token_activations(pm, texts, pairs, texts_b, positions)
    return View([_Panel("TextNeuronActivations", {
        "tokens": [[htmllib.escape(t, quote=False) for t in toks] for toks, _ in rows],
        "activations": [_rounded(a.reshape(len(toks), len(layers), len(idx))) for toks, a in rows],
        "firstDimensionName": "Layer", "secondDimensionName": "Neuron",
        "firstDimensionLabels": [f"L{l}" for l in layers], "secondDimensionLabels": [info.layout.label(layers[0], i).split(".", 1)[1] for i in idx],
    })], title)
