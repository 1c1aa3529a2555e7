"""Inline views of skill neurons, working offline: static HTML, and circuitsvis for browsing.

Each function returns a :class:`View`: it renders in Jupyter (``_repr_html_``), ``view.html()`` (or
``str(view)``) is a self-contained HTML fragment, ``view.save(path)`` a standalone page.

* :func:`neuron_activations_view` -- chosen neurons over the tokens of a few texts: one tab per neuron
  (in the order given: best first for ``skill.top(k)`` or a scored set), every example on **one colour
  scale per neuron** with a legend; given the probe's ``result``, white is the neuron's train baseline at
  the position the probe read (outlined), orange above it and blue below, which is the probe's own rule;
  captions give each example's label and the model's prediction. Prompt tokens are ``<P0>``, ``<P1>`` ...
* :func:`top_examples_view` -- the examples of a split where each neuron is most and least active, alike;
* :func:`tokens_view` -- the same tabs from activations you already have;
* :func:`neuron_picker` -- any neuron of any layer over a few texts (circuitsvis: layer and neuron drop-downs).

The first three are plain HTML and CSS (tabs are radio buttons): they render without any script, also
in GitHub's notebook viewer, a static docs page or the report; where styles are stripped every tab
shows, one after another. The picker uses circuitsvis' JavaScript bundle, inlined from the installed
package (no CDN, no network; circuitsvis' own ``RenderedHTML`` probes the internet and falls back to
unpkg). In a notebook the bundle (about 1.3 MB) is embedded once per kernel session: the first view
displayed that needs it carries it and defines ``window.CircuitsVis`` for the page, later ones carry
only their panels (:meth:`View.fragment`). After clearing the output that carried it, call
:func:`reset_notebook_bundle` and display the view again. Google Colab shows every output in its own
frame, so there every such view carries the bundle.

Safety: token text and captions are HTML-escaped; data embedded in ``<script>`` is JSON with ``<``,
``>`` and ``&`` escaped.

>>> v = tokens_view([(["a", " good", "<P0>"], [[0.1, 1.0], [2.0, 0.0], [0.5, -1.0]])], ["L0.N1", "L1.N3"])
>>> html = v.html()
>>> "<P0>" in html, "&lt;P0&gt;" in html, "<script" in html
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
from skill_lens.probing.neurons import NeuronSet, neuron_pairs

__all__ = ["neuron_activations_view", "top_examples_view", "neuron_picker", "tokens_view", "View", "neuron_label",
           "circuitsvis_script", "script_json", "reset_notebook_bundle", "POSITIONS"]

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

    >>> v = View([_Panel("ColoredTokens", {"tokens": ["a"], "values": [1.0]})])   # what neuron_picker makes
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
    """A view: static HTML (``body``) and/or circuitsvis panels with captions; renders inline in Jupyter
    and as self-contained HTML. ``data`` keeps what it shows (tokens, values, centres) for inspection."""

    panels: list[_Panel]
    title: str = ""
    note: str = ""
    _id: str = field(default_factory=lambda: uuid.uuid4().hex[:12], repr=False)
    body: str = ""
    data: dict = field(default_factory=dict, repr=False)

    def fragment(self) -> str:
        """The view's HTML *without* the circuitsvis library (put :func:`circuitsvis_script` once before it
        when :attr:`panels` is not empty)."""
        parts = [f'<div class="skill-lens-view" id="slv-{self._id}">']
        if self.title:
            parts.append(f"<h4>{htmllib.escape(self.title)}</h4>")
        if self.note:
            parts.append(f'<p class="note">{htmllib.escape(self.note)}</p>')
        if self.body:
            parts.append(self.body)
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
        """Self-contained HTML: the circuitsvis library inline (when the view has circuitsvis panels), then the view."""
        return (circuitsvis_script() + "\n" if self.panels else "") + self.fragment()

    def _repr_html_(self) -> str:
        """In a notebook: :meth:`html` for the session's first view needing circuitsvis, :meth:`fragment` otherwise."""
        if not self.panels or (_NOTEBOOK["bundle_shown"] and not _outputs_in_own_frames()):
            return self.fragment()
        _NOTEBOOK["bundle_shown"] = True
        return self.html()

    def __repr__(self) -> str:
        if not self.panels:
            return f"View({self.data.get('summary', 'static HTML')}, title={self.title!r})"
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


# ------------------------------------------------------------------ static HTML: tabs, tokens, legend
ABOVE, BELOW = (230, 85, 13), (49, 130, 189)  # orange above the centre (the baseline), blue below it
_CSS = (".slv-tabs > input {{ display: none }} .slv-tabs > label {{ display: inline-block; padding: 1px 7px; "
        "margin: 0 2px 4px 0; border: 1px solid #ccc; border-radius: 3px; cursor: pointer; font: 12px monospace }} "
        ".slv-tab {{ display: none; margin: 4px 0 10px }} .slv-ex {{ margin: 3px 0 6px; white-space: pre-wrap; "
        "line-height: 1.7; font-size: 13px }} .slv-cap {{ color: #555; font-size: 12px }} .slv-p {{ font: 11px "
        "monospace; color: #444 }} .slv-mark {{ outline: 2px solid #222 }} .slv-legend {{ font-size: 12px; color: "
        "#444; margin: 2px 0 6px }} .slv-bar {{ display: inline-block; width: 9em; height: .8em; vertical-align: "
        "middle; margin: 0 4px; background: linear-gradient(90deg, rgb{below}, #fff, rgb{above}) }} {shown}")


def _tabs(view_id: str, names: Sequence[str], bodies: Sequence[str]) -> str:
    """Radio-button tabs (CSS only, no script): the first open; without styles every tab shows in order."""
    shown = " ".join(f"#{view_id}-r{j}:checked ~ #{view_id}-t{j} {{ display: block }} #{view_id}-r{j}:checked + "
                     f"label {{ background: #333; color: #fff }}" for j in range(len(names)))
    css = _CSS.format(below=BELOW, above=ABOVE, shown=shown).replace(".slv-tabs", f"#{view_id}") \
        .replace(".slv-tab ", f"#{view_id} .slv-tab ")
    radios = "".join(f'<input type="radio" name="{view_id}" id="{view_id}-r{j}"{" checked" if j == 0 else ""}>'
                     f'<label for="{view_id}-r{j}">{htmllib.escape(n)}</label>' for j, n in enumerate(names))
    tabs = "".join(f'<div class="slv-tab" id="{view_id}-t{j}">{b}</div>' for j, b in enumerate(bodies))
    return f'<style>{css}</style><div class="slv-tabs" id="{view_id}">{radios}{tabs}</div>'


def _colour(value: float, center: float, scale: float) -> str:
    t = max(-1.0, min(1.0, (value - center) / scale)) if scale > 0 else 0.0
    r, g, b = ABOVE if t > 0 else BELOW
    return f"rgba({r},{g},{b},{abs(t):.2f})"


def _tokens_html(tokens: Sequence[str], values: Sequence[float], center: float, scale: float,
                 mark: str | None) -> str:
    spans = []
    for tok, v in zip(tokens, values):
        cls = ("slv-p" if tok.startswith("<P") and tok.endswith(">") else "") + (" slv-mark" if tok == mark else "")
        shown = tok.replace("\n", "\u23ce")
        spans.append(f'<span{f" class={chr(34)}{cls.strip()}{chr(34)}" if cls else ""} title="{v:.4g}" style="'
                     f'background: {_colour(v, center, scale)}">{htmllib.escape(shown)}</span>')
    return "".join(spans)


def _legend(center: float, scale: float, note: str) -> str:
    return (f'<div class="slv-legend">{center - scale:.3g}<span class="slv-bar"></span>{center + scale:.3g}'
            f" &nbsp;{htmllib.escape(note)}</div>")


def _neuron_scale(values: Sequence[Tensor], center: float) -> float:
    """One colour scale for a neuron across every example shown: the largest distance from the centre."""
    finite = [v[torch.isfinite(v)] for v in values]
    return max([float((v - center).abs().max()) for v in finite if len(v)] + [1e-6])


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
    """``[(layer, index)]`` in the order given (:func:`~skill_lens.probing.neurons.neuron_pairs`), at least one."""
    pairs = neuron_pairs(neurons, *shape, layout=layout)
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
        scales.append(_neuron_scale([v[:, j] for _, v in rows], centers[j]))
        lines = [_legend(centers[j], scales[j], notes[j])]
        for i, (toks, v) in enumerate(rows):
            cap = f'<div class="slv-cap">{htmllib.escape(captions[i])}</div>' if captions else ""
            lines.append(f'<div class="slv-ex">{cap}{_tokens_html(toks, v[:, j].tolist(), centers[j], scales[j], marks[j])}'
                         "</div>")
        bodies.append("".join(lines))
    vid = uuid.uuid4().hex[:12]
    summary = f"{K} neuron{'s' * (K != 1)} x {len(rows)} example{'s' * (len(rows) != 1)}"
    return View([], title, _id=vid, body=_tabs(f"slt{vid}", [str(x) for x in labels], bodies),
                data={"summary": summary, "labels": [str(x) for x in labels], "examples": rows,
                      "centers": centers, "scales": scales, "captions": list(captions or [])})


def _ranked(neurons: Any, shape: tuple[int, int], layout=None) -> list[tuple[int, int]]:
    """``[(layer, index)]``: a set with scores best first (:meth:`NeuronSet.top`), anything else in the order given."""
    if isinstance(neurons, NeuronSet) and neurons.scores is not None and len(neurons):
        neurons.check_compatible(*shape)
        return [NeuronSet.parse(label, layout) for label, _ in neurons.top(len(neurons))]
    return _pairs(neurons, shape, layout)


def _probe_marks(pm, pairs, result) -> tuple[list[float], list[str], list[str | None], list[str]]:
    """Per neuron: the colour centre, the legend's note, the outlined token and the tab name, from the probe's
    ``result`` (the train baseline at the position the probe scored the neuron) or 0 without one."""
    names = _labels(pm, pairs)
    if result is None:
        note = "white: 0 (pass result=the probe's result to centre each neuron on its baseline)"
        return [0.0] * len(pairs), [note] * len(pairs), [None] * len(pairs), names
    per, base = result.per_position("dev"), result.baseline
    info = describe(pm.model)
    if (base.shape[0], base.shape[-1]) != info.shape:
        raise ValueError(f"the probe result is of {base.shape[0]} layers x {base.shape[-1]} neurons, the model has "
                         f"{info.n_layers} x {info.d_mlp}; pass the result probed on this model")
    per = per if per.dim() == 3 else per[:, None]
    base = base.reshape(base.shape[0], -1, base.shape[-1])
    centers, notes, marks, tabs = [], [], [], []
    for (layer, idx), name in zip(pairs, names):
        p = int(per[layer, :, idx].argmax())
        mark = f"<P{p}>" if pm.prompt is not None and per.shape[1] == pm.prompt_length else None
        where = f"at {mark} (outlined)" if mark else "at the prediction position"
        centers.append(float(base[layer, p, idx]))
        notes.append(f"dev predictivity {float(per[layer, p, idx]):.3f} {where}; white = the train baseline there "
                     f"({centers[-1]:.3g}): the probe reads above it (orange) as one class, below (blue) as the other")
        marks.append(mark)
        tabs.append(f"{name} {float(per[layer, p, idx]):.3f}")
    return centers, notes, marks, tabs


def _predictions(pm, texts: Sequence[str], texts_b=None, batch_size: int = 16) -> list[int]:
    """The prompted model's predicted label per text."""
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tb = list(texts_b[start:start + batch_size]) if texts_b is not None else None
            out += pm.label_logits(pm.encode(list(texts[start:start + batch_size]), tb)).argmax(-1).tolist()
    return out


def _caption(base: str, gold: int | None, pred: int, names: Sequence[str]) -> str:
    name = lambda y: names[y] if 0 <= y < len(names) else str(y)  # noqa: E731
    return base + ("" if gold is None else f" · label {name(gold)}") + f" · predicted {name(pred)}"


def neuron_activations_view(pm, texts: Sequence[str] | str, neurons: Any, texts_b: Sequence[str] | None = None,
                            positions: str = "input+prompt", captions: Sequence[str] | None = None,
                            title: str = "", *, result=None, labels: Sequence[int] | None = None,
                            label_names: Sequence[str] | None = None) -> View:
    """Activations of ``neurons`` over the tokens of ``texts``: one tab per neuron, every text on its scale.

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
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given; pass a few example strings")
    pairs = _ranked(neurons, describe(pm.model).shape, describe(pm.model).layout)
    rows = _token_activations(pm, texts, pairs, texts_b, positions)
    preds = _predictions(pm, texts, texts_b)
    names = list(label_names) if label_names is not None else list(pm.verbalizer.words)
    base = list(captions) if captions is not None else [f"example {i}" for i in range(len(texts))]
    caps = [_caption(c, None if labels is None else int(labels[i]), p, names) for i, (c, p) in enumerate(zip(base, preds))]
    centers, notes, marks, tabs = _probe_marks(pm, pairs, result)
    view = tokens_view(rows, tabs, caps, title, centers=centers, notes=notes, marks=marks)
    view.data["labels"] = _labels(pm, pairs)
    return view


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
                      label_names: Sequence[str] | None = None, title: str = "", *, result=None) -> View:
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
    if score not in ("prompt_mean", "predict", "max"):
        raise ValueError(f"score must be 'prompt_mean', 'predict' or 'max', got {score!r}")
    if split is None or len(split) == 0:
        raise ValueError("the split is empty; pass one with examples (e.g. task.dev)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    pairs = _ranked(neurons, describe(pm.model).shape, describe(pm.model).layout)
    scores = _scores(pm, split, pairs, score, batch_size)  # [n, K]
    k = min(k, len(split))
    chosen = [[scores[:, j].topk(k, largest=largest).indices.tolist() for largest in (True, False)]
              for j in range(len(pairs))]
    union = sorted({i for per in chosen for idx in per for i in idx})  # one more pass, for all neurons at once
    tb = [split.texts_b[i] for i in union] if split.texts_b is not None else None
    texts = [split.texts[i] for i in union]
    rows = dict(zip(union, _token_activations(pm, texts, pairs, tb, "input+prompt", batch_size)))
    preds = dict(zip(union, _predictions(pm, texts, tb)))
    names = list(label_names) if label_names is not None else [str(y) for y in sorted(set(split.labels))]
    centers, notes, marks, tabs = _probe_marks(pm, pairs, result)
    how = {"prompt_mean": "mean over the prompt", "predict": "at the prediction position", "max": "max over tokens"}
    bodies = []
    for j, per in enumerate(chosen):
        scale = _neuron_scale([rows[i][1][:, j] for idx in per for i in idx], centers[j])
        parts = [_legend(centers[j], scale, notes[j])]
        for side, idx in zip((f"most active ({how[score]})", "least active"), per):
            parts.append(f'<div class="slv-cap"><b>{side}</b></div>')
            for i in idx:
                cap = _caption(f"example {i}", split.labels[i], preds[i], names) + f" · {float(scores[i, j]):.3g}"
                parts.append(f'<div class="slv-ex"><div class="slv-cap">{htmllib.escape(cap)}</div>'
                             f"{_tokens_html(rows[i][0], rows[i][1][:, j].tolist(), centers[j], scale, marks[j])}</div>")
        bodies.append("".join(parts))
    vid = uuid.uuid4().hex[:12]
    summary = f"{len(pairs)} neuron{'s' * (len(pairs) != 1)} x {k} most and {k} least active examples"
    return View([], title, _id=vid, body=_tabs(f"slt{vid}", tabs, bodies),
                data={"summary": summary, "labels": _labels(pm, pairs), "chosen": chosen,
                      "scores": scores, "examples": rows, "centers": centers})


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
