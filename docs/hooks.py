"""mkdocs hook: a nav entry that is a glob (``notebooks/*.ipynb``) becomes the sorted list of its files.

So a new notebook appears in the site without editing mkdocs.yml (``docs/notebooks`` links to
``notebooks/``).
"""

from __future__ import annotations

import glob
import os


def _expand(entries, docs_dir):
    out = []
    for entry in entries:
        if isinstance(entry, dict):
            out.append({k: _expand(v, docs_dir) if isinstance(v, list) else _glob(v, docs_dir) for k, v in entry.items()})
        elif isinstance(entry, str) and "*" in entry:
            out.extend(_glob(entry, docs_dir))
        else:
            out.append(entry)
    return out


def _glob(pattern, docs_dir):
    if not isinstance(pattern, str) or "*" not in pattern:
        return pattern
    found = sorted(os.path.relpath(p, docs_dir) for p in glob.glob(os.path.join(docs_dir, pattern)))
    if not found:
        raise ValueError(f"the nav pattern {pattern!r} matches no file under {docs_dir}; fix the pattern in mkdocs.yml")
    return found


def on_config(config, **kwargs):
    config["nav"] = _expand(config["nav"], config["docs_dir"])
    return config
