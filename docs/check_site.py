"""Check a built site: it loads nothing from the network, and its notebook pages show the real model's run.

``python docs/check_site.py site`` (``make docs`` runs it) exits 1 and lists each problem:

* a tag that fetches from the network (script, stylesheet, image, frame by URL); links a reader clicks
  (``<a href="https://...">``) are fine;
* a notebook page whose code mentions the test scaffolding (``tiny``, ``FAST``), whose outputs hold
  anything written to stderr (warnings, progress bars), or that does not show the real model's numbers
  (:data:`SHOWN`: the model's name on every page; the demo's accuracies and top neuron in the quick start).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# a tag that fetches what it names: <script src>, <link href> (stylesheets, icons), <img src>, ...
FETCHING = re.compile(r"<(script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?"
                      r"\b(?:src|href|data)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)", re.IGNORECASE)
CSS_IMPORT = re.compile(r"@import\s+(?:url\()?[\"']?((?:https?:)?//[^\"')\s]+)", re.IGNORECASE)


def remote_assets(site: Path) -> list[str]:
    """Every ``file: url`` the pages and stylesheets of ``site`` would fetch from the network.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "index.html").write_text('<a href="https://x.org">ok</a><script src="https://cdn.x/a.js"></script>')
    >>> remote_assets(d)
    ['index.html: https://cdn.x/a.js']
    """
    found = []
    for path in sorted(site.rglob("*.html")) + sorted(site.rglob("*.css")):
        text = path.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"<pre\b.*?</pre>|<code\b.*?</code>", "", text, flags=re.DOTALL)  # code shown, not run
        urls = [m.group(2) for m in FETCHING.finditer(text)] + [m.group(1) for m in CSS_IMPORT.finditer(text)]
        found += [f"{path.relative_to(site)}: {url}" for url in urls]
    return found


# What a notebook page must show: it ran on SmolLM2, and the quick start reproduces `skill-lens demo`
# (soft prompt dev accuracy 0.845, hard prompt 0.765, top neuron L24.N1152 at 0.865).
SHOWN = {"*": ["smollm2-135m"], "01_quickstart": ["0.845", "0.765", "L24.N1152", "0.865"]}
SCAFFOLDING = re.compile(r"\btiny|\bFAST\b|SKILL_LENS_NOTEBOOK")


def _text(fragment: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def notebook_problems(page: str, name: str) -> list[str]:
    """What is wrong with one rendered notebook page (its HTML): scaffolding in code, stderr, no real numbers.

    >>> cell = ('<div class="jp-Cell jp-CodeCell"><div class="jp-InputArea"><pre>model = tiny_model()</pre></div>'
    ...         '<div class="jp-Cell-outputWrapper"><div data-mime-type="application/vnd.jupyter.stderr">warn'
    ...         '</div></div></div>')
    >>> notebook_problems(cell, "02_x")  # doctest: +NORMALIZE_WHITESPACE
    ['02_x: code cell 1 shows test scaffolding: model = tiny_model()',
     '02_x: an output holds stderr: warn',
     "02_x: does not show 'smollm2-135m' (outputs of the real model's run)"]
    """
    page = re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.DOTALL)
    out, outputs = [], []
    for i, cell in enumerate(re.split(r'<div class="jp-Cell jp-CodeCell[^>]*>', page)[1:]):
        code, *shown = re.split(r'<div class="jp-Cell-outputWrapper[^>]*>', cell, maxsplit=1)
        shown = shown[0] if shown else ""
        outputs.append(_text(shown))
        if SCAFFOLDING.search(_text(code)):
            out.append(f"{name}: code cell {i + 1} shows test scaffolding: {_text(code).strip()[:80]}")
    for m in re.finditer(r'data-mime-type="application/vnd.jupyter.stderr"[^>]*>(.{0,400})', page, flags=re.DOTALL):
        out.append(f"{name}: an output holds stderr: {_text(m.group(1)).strip()[:120]}")
    text = "\n".join(outputs)  # in what ran, not in the code that asks for it
    out += [f"{name}: does not show {want!r} (outputs of the real model's run)"
            for want in SHOWN["*"] + SHOWN.get(name, []) if want not in text]
    return out


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "site")
    if not (site / "index.html").exists():
        print(f"{site}/index.html does not exist: build the site first (make docs)", file=sys.stderr)
        return 1
    found = [f"fetched from the network: {line}" for line in remote_assets(site)]
    for page in sorted((site / "notebooks").glob("*/index.html")):
        found += notebook_problems(page.read_text(encoding="utf-8"), page.parent.name)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
