"""Helpers for command-line tests: run ``skill-lens`` in-process, snapshot a directory, copy a run."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from pathlib import Path

from skill_lens.cli import main

FAST_TUNE = ["--prompt-length", "2", "--steps", "2", "--eval-every", "2", "--batch-size", "8",
             "--train-size", "48", "--dev-size", "32", "--test-size", "32"]


def cli(*argv) -> tuple[int, str, str]:
    """Run ``skill-lens ARGV`` in-process: ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` with a hash of its bytes: to show a failed step changed nothing."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a fixture's run (fixtures are shared: never modify them)."""
    shutil.copytree(src, dst)
    return dst
