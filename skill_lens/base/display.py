"""Short displays of result objects in notebooks: a titled card of fields and a small table, escaped.

A result object's ``_repr_html_`` says what it is, its sizes and its key numbers in a few lines (no
tensors): :func:`card` lays them out the same way everywhere, :func:`table` renders a few rows that fit
a notebook's width. Text is HTML-escaped; the markup carries its own inline styles, so it reads the same
in Jupyter, on the docs site and in GitHub's notebook viewer.

>>> html = card("NeuronSet", [("neurons", "3 of 2 x 8")], table([["L0.N1", 0.75]], ["neuron", "score"]))
>>> html.startswith("<div") and "<b>NeuronSet</b>" in html and "0.750" in html
True
"""

from __future__ import annotations

import html
from typing import Any, Sequence

__all__ = ["card", "table", "fmt"]

_BOX = "font-family: system-ui, sans-serif; font-size: 13px; line-height: 1.35"
_CELL = "padding: 1px 8px; border-bottom: 1px solid #e5e5e5; text-align: {align}"


def fmt(x: Any, digits: int = 3) -> str:
    """A number as the reader wants it: floats with ``digits`` decimals, ints with thousands separators.

    >>> fmt(0.86499), fmt(46080), fmt(None), fmt("L24.N1152")
    ('0.865', '46,080', 'n/a', 'L24.N1152')
    """
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """A compact HTML table: numbers right-aligned (:func:`fmt`), text escaped.

    >>> table([["a<b", 1.5]], ["name", "value"])  # doctest: +ELLIPSIS
    '<table class="skill-lens-table" style=...><tr><th ...>name</th>...<td ...>a&lt;b</td><td ...>1.500</td></tr></table>'
    """
    def cell(tag: str, x: Any) -> str:
        num = isinstance(x, (int, float)) and not isinstance(x, bool)
        style = _CELL.format(align="right" if num else "left")
        return f'<{tag} style="{style}">{html.escape(fmt(x))}</{tag}>'

    head = "<tr>" + "".join(cell("th", h) for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell("td", x) for x in row) + "</tr>" for row in rows)
    # a class of its own: a docs theme's table styles (scroll boxes, widths) apply to tables without one
    return f'<table class="skill-lens-table" style="border-collapse: collapse; margin: 4px 0">{head}{body}</table>'


def card(title: str, fields: Sequence[tuple[str, Any]], extra: str = "") -> str:
    """``title`` in bold, then ``label: value`` lines (escaped), then ``extra`` HTML (a :func:`table`...).

    >>> card("Run", [("model", "smollm2-135m"), ("dev", 0.845)])  # doctest: +ELLIPSIS
    '<div style=...><b>Run</b><br><span style="color: #666">model</span> smollm2-135m<br>...0.845</div>'
    """
    lines = "".join(f'<br><span style="color: #666">{html.escape(k)}</span> {html.escape(fmt(v))}' for k, v in fields)
    return f'<div style="{_BOX}"><b>{html.escape(title)}</b>{lines}{extra}</div>'
