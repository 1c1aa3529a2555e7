"""The look of skill_lens' self-contained HTML pages (the report): one stylesheet, and a Content-Security-Policy
that forbids any network access and any script, so a page opens offline and fetches nothing.

>>> "default-src 'none'" in CSP, "font-family" in CSS
(True, True)
"""

from __future__ import annotations

__all__ = ["CSP", "CSS"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"  # no script at all
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: .8em 0; } figure img { max-width: 100%; } figcaption, .note { color: #666; font-size: .9em; }
.caption { font-weight: 600; margin-top: .8em; } .example { white-space: pre-wrap; }
p.reading { background: #f6f8fa; border-left: 3px solid #4c72b0; padding: .4em .8em; }
ul.columns { color: #555; font-size: .85em; margin-top: .2em; } ul.columns li { margin: .1em 0; }
"""
