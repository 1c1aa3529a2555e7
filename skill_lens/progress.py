"""Progress bars: tqdm, silenced when ``SKILL_LENS_QUIET=1`` (the test suite sets it)."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

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
