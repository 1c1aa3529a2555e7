"""Progress bars: tqdm, silenced when ``SKILL_LENS_QUIET=1`` (the test suite sets it)."""

from __future__ import annotations

import importlib.util
import os
from typing import Iterable, TypeVar

if importlib.util.find_spec("ipywidgets") is not None:  # notebook widgets where they can be drawn
    from tqdm.auto import tqdm
else:  # tqdm.auto would warn "IProgress not found" in every notebook; text bars work everywhere
    from tqdm.std import tqdm

T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get("SKILL_LENS_QUIET", "") not in ("", "0")


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled when quiet.

    >>> list(progress(range(3), disable=True))
    [0, 1, 2]
    """
    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def say(msg: str) -> None:
    """Print a status line (through tqdm so bars stay intact), unless quiet."""
    if not quiet():
        tqdm.write(msg)
