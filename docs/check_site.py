"""Check a built site loads nothing from the network: no script, stylesheet, image or frame by URL.

``python docs/check_site.py site`` (``make docs`` runs it) exits 1 and lists each offending tag;
links a reader clicks (``<a href="https://...">``) are fine.
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


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "site")
    if not (site / "index.html").exists():
        print(f"{site}/index.html does not exist: build the site first (make docs)", file=sys.stderr)
        return 1
    found = remote_assets(site)
    for line in found:
        print(f"fetched from the network: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
