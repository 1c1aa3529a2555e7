"""The :class:`View` every neuron view returns, and how its circuitsvis panels get their library.

A view renders in Jupyter (``_repr_html_``); ``view.html()`` (or ``str(view)``) is a self-contained HTML
fragment and ``view.save(path)`` a standalone page. A static view (``body``: plain HTML and CSS, as
:func:`~skill_lens.views.viz.tokens_view` makes) needs nothing more. A view with circuitsvis panels (as
:func:`~skill_lens.views.viz.neuron_picker` makes) needs circuitsvis' JavaScript bundle, inlined from the
installed package (no CDN, no network; circuitsvis' own ``RenderedHTML`` probes the internet and falls back
to unpkg). In a notebook the bundle (about 1.3 MB) is embedded once per kernel session: the first view
displayed that needs it carries it and defines ``window.CircuitsVis`` for the page, later ones carry only
their panels (:meth:`View.fragment`). After clearing the output that carried it, call
:func:`reset_notebook_bundle` and display the view again. Google Colab shows every output in its own
frame, so there every such view carries the bundle.

Safety: titles, notes and captions are HTML-escaped; data embedded in ``<script>`` is JSON with ``<``,
``>`` and ``&`` escaped (:func:`script_json`).

>>> v = View([Panel("ColoredTokens", {"tokens": ["a"], "values": [1.0]})], "one token")
>>> v, v.fragment().count("CircuitsVis.render"), "var CircuitsVis" in v.fragment(), "var CircuitsVis" in v.html()
(View(1 panel(s) of ColoredTokens, title='one token'), 1, False, True)
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
from typing import Any

from skill_lens.store.artifacts import atomic_write

__all__ = ["View", "Panel", "circuitsvis_script", "script_json", "reset_notebook_bundle"]


# ------------------------------------------------------------------ circuitsvis' bundle
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

    >>> v = View([Panel("ColoredTokens", {"tokens": ["a"], "values": [1.0]})])   # what neuron_picker makes
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


# ------------------------------------------------------------------ the view
@dataclass
class Panel:
    """One circuitsvis component of a :class:`View`, rendered by the bundle in the page.

    >>> Panel("ColoredTokens", {"tokens": ["a"], "values": [1.0]}, caption="one token")
    Panel(component='ColoredTokens', props={'tokens': ['a'], 'values': [1.0]}, caption='one token')
    """

    component: str  # a circuitsvis React component: ColoredTokensMulti, TopkSamples, TextNeuronActivations
    props: dict
    caption: str = ""  # plain text, escaped when rendered


@dataclass
class View:
    """A view: static HTML (``body``) and/or circuitsvis panels with captions; renders inline in Jupyter
    and as self-contained HTML. ``data`` keeps what it shows (tokens, values, centres) for inspection."""

    panels: list[Panel]
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
