"""The pieces the static neuron views are drawn with, in plain HTML and CSS (no script): a colour scale around a
centre (white there, orange above it, blue below it, full strength at ``scale`` away), its legend, token spans
coloured on it, an example (caption and spans), and radio-button tabs that switch with CSS alone.

Token text, captions, notes and tab names are HTML-escaped; a soft-prompt token (``<P0>``) is set in small
monospace, the ``mark`` token is outlined. Where styles are stripped (some viewers) every tab shows, one after
another.

>>> html = example(["good", "<P0>"], [2.0, -1.0], center=0.0, scale=2.0, mark="<P0>", caption="example 0")
>>> colour(2.0, 0.0, 2.0), "&lt;P0&gt;" in html, 'class="slv-p slv-mark"' in html
('rgba(230,85,13,1.00)', True, True)
"""

from __future__ import annotations

import html as htmllib
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["example", "tabs", "legend", "subheading", "token_spans", "colour", "neuron_scale", "ABOVE", "BELOW"]

ABOVE, BELOW = (230, 85, 13), (49, 130, 189)  # orange above the centre (the baseline), blue below it
_CSS = (".slv-tabs > input {{ display: none }} .slv-tabs > label {{ display: inline-block; padding: 1px 7px; "
        "margin: 0 2px 4px 0; border: 1px solid #ccc; border-radius: 3px; cursor: pointer; font: 12px monospace }} "
        ".slv-tab {{ display: none; margin: 4px 0 10px }} .slv-ex {{ margin: 3px 0 6px; white-space: pre-wrap; "
        "line-height: 1.7; font-size: 13px }} .slv-cap {{ color: #555; font-size: 12px }} .slv-p {{ font: 11px "
        "monospace; color: #444 }} .slv-mark {{ outline: 2px solid #222 }} .slv-legend {{ font-size: 12px; color: "
        "#444; margin: 2px 0 6px }} .slv-bar {{ display: inline-block; width: 9em; height: .8em; vertical-align: "
        "middle; margin: 0 4px; background: linear-gradient(90deg, rgb{below}, #fff, rgb{above}) }} {shown}")


def tabs(view_id: str, names: Sequence[str], bodies: Sequence[str]) -> str:
    """Radio-button tabs (CSS only, no script), one per name with its body: the first open; without styles every
    tab shows in order. ``view_id`` must be unique in the page (it scopes the styles).

    >>> html = tabs("v1", ["L0.N1", "L1.N3"], ["first", "second"])
    >>> html.count('type="radio"'), html.count(" checked"), "<script" in html
    (2, 1, False)
    """
    shown = " ".join(f"#{view_id}-r{j}:checked ~ #{view_id}-t{j} {{ display: block }} #{view_id}-r{j}:checked + "
                     f"label {{ background: #333; color: #fff }}" for j in range(len(names)))
    css = _CSS.format(below=BELOW, above=ABOVE, shown=shown).replace(".slv-tabs", f"#{view_id}") \
        .replace(".slv-tab ", f"#{view_id} .slv-tab ")
    radios = "".join(f'<input type="radio" name="{view_id}" id="{view_id}-r{j}"{" checked" if j == 0 else ""}>'
                     f'<label for="{view_id}-r{j}">{htmllib.escape(n)}</label>' for j, n in enumerate(names))
    panes = "".join(f'<div class="slv-tab" id="{view_id}-t{j}">{b}</div>' for j, b in enumerate(bodies))
    return f'<style>{css}</style><div class="slv-tabs" id="{view_id}">{radios}{panes}</div>'


def colour(value: float, center: float, scale: float) -> str:
    """The CSS colour of ``value``: transparent at ``center``, orange above it and blue below it, opaque from
    ``scale`` away on.

    >>> colour(0.5, 0.0, 1.0), colour(-3.0, 0.0, 1.0), colour(1.0, 1.0, 0.0)
    ('rgba(230,85,13,0.50)', 'rgba(49,130,189,1.00)', 'rgba(49,130,189,0.00)')
    """
    t = max(-1.0, min(1.0, (value - center) / scale)) if scale > 0 else 0.0
    r, g, b = ABOVE if t > 0 else BELOW
    return f"rgba({r},{g},{b},{abs(t):.2f})"


def token_spans(tokens: Sequence[str], values: Sequence[float], center: float, scale: float,
                mark: str | None = None) -> str:
    """One ``<span>`` per token, coloured by its value (:func:`colour`), the value in its tooltip.

    >>> token_spans(["a<b"], [1.0], 0.0, 1.0)
    '<span title="1" style="background: rgba(230,85,13,1.00)">a&lt;b</span>'
    """
    spans = []
    for tok, v in zip(tokens, values):
        cls = ("slv-p" if tok.startswith("<P") and tok.endswith(">") else "") + (" slv-mark" if tok == mark else "")
        shown = tok.replace("\n", "\u23ce")
        spans.append(f'<span{f" class={chr(34)}{cls.strip()}{chr(34)}" if cls else ""} title="{v:.4g}" style="'
                     f'background: {colour(v, center, scale)}">{htmllib.escape(shown)}</span>')
    return "".join(spans)


def example(tokens: Sequence[str], values: Sequence[float], center: float, scale: float, mark: str | None = None,
            caption: str = "") -> str:
    """One example: its caption (when given) above its :func:`token_spans`.

    >>> example(["a"], [0.0], 0.0, 1.0, caption="x & y")[:57]
    '<div class="slv-ex"><div class="slv-cap">x &amp; y</div><'
    """
    cap = f'<div class="slv-cap">{htmllib.escape(caption)}</div>' if caption else ""
    return f'<div class="slv-ex">{cap}{token_spans(tokens, values, center, scale, mark)}</div>'


def subheading(text: str) -> str:
    """A bold line between examples (e.g. "most active").

    >>> subheading("least active")
    '<div class="slv-cap"><b>least active</b></div>'
    """
    return f'<div class="slv-cap"><b>{htmllib.escape(text)}</b></div>'


def legend(center: float, scale: float, note: str) -> str:
    """The colour bar from ``center - scale`` to ``center + scale``, and ``note`` (what the centre is).

    >>> legend(0.5, 2.0, "white: 0.5")
    '<div class="slv-legend">-1.5<span class="slv-bar"></span>2.5 &nbsp;white: 0.5</div>'
    """
    return (f'<div class="slv-legend">{center - scale:.3g}<span class="slv-bar"></span>{center + scale:.3g}'
            f" &nbsp;{htmllib.escape(note)}</div>")


def neuron_scale(values: Sequence[Tensor], center: float) -> float:
    """One colour scale for a neuron across every example shown: the largest finite distance from the centre.

    >>> neuron_scale([torch.tensor([0.1, 0.2]), torch.tensor([1.0, float("inf"), -2.0])], 0.0)
    2.0
    """
    finite = [v[torch.isfinite(v)] for v in values]
    return max([float((v - center).abs().max()) for v in finite if len(v)] + [1e-6])
