"""Headless Chromium for the tests that render HTML (the report, views, notebook outputs); they skip without it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    for c in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and os.path.exists(c):
            return c
    return None


needs_chromium = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install -y "
                                    "chromium); the browser rendering test needs it")


def browse(url: str, tmp_path: Path, *extra: str, budget_ms: int = 10000) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``url`` with its own profile in ``tmp_path`` and ``extra`` flags."""
    flags = [chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--virtual-time-budget={budget_ms}"]
    return subprocess.run([*flags, *extra, url], capture_output=True, text=True, timeout=180)


def dump_dom(body_html: str, tmp_path: Path) -> str:
    """The DOM after ``body_html`` ran in a page of its own (scripts executed)."""
    page = tmp_path / "page.html"
    page.write_text(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>{body_html}</body></html>')
    return browse(page.as_uri(), tmp_path, "--dump-dom").stdout
