"""mkdocs hooks: a nav entry that is a glob (``notebooks/*.ipynb``) becomes the sorted list of its files, and
each notebook page shows the outputs of its run on the real model (``docs/executed.py``).

So a new notebook appears in the site without editing mkdocs.yml (``docs/notebooks`` links to
``notebooks/``). A notebook whose code differs from the code its executed copy ran stops the build, naming
the command that runs it again (``make docs-real NOTEBOOKS=NAME``): the site never shows outputs of other code.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import executed  # noqa: E402


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


def on_files(files, config, **kwargs):
    """Point every notebook page at the notebook merged with its real run's outputs (a temporary file)."""
    out = Path(tempfile.mkdtemp(prefix="skill_lens_docs_")) / "notebooks"
    for f in files:
        if f.src_uri.startswith("notebooks/") and f.src_uri.endswith(".ipynb"):
            f.abs_src_path = str(executed.merged(Path(f.src_uri).stem, out))
    return files
