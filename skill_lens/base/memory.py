"""Memory a job will need, checked before any work: a count that cannot fit is refused with the estimate.

>>> check_fits(1024, "3 control sets", "pass fewer --controls")
>>> check_fits(1 << 60, "10^9 control sets", "pass fewer --controls")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
skill_lens.base.memory.MemoryLimitError: 10^9 control sets would need about 1.0 EiB of memory, more than the ... available; pass fewer --controls.
"""

from __future__ import annotations

import os

__all__ = ["MemoryLimitError", "available_bytes", "check_fits", "human_bytes"]


class MemoryLimitError(ValueError):
    """A job would need more memory than the machine has available."""


def available_bytes() -> int:
    """Memory available to a new job now (``MemAvailable`` on Linux; physical memory elsewhere).

    >>> available_bytes() > 0
    True
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: refuse nothing


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    >>> human_bytes(1536), human_bytes(3 * 2**30)
    ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} EiB"


def check_fits(nbytes: float, what: str, fix: str) -> None:
    """Refuse, before any work, ``what`` needing ``nbytes`` when less is available; ``fix`` says what to change."""
    avail = available_bytes()
    if nbytes > avail:
        raise MemoryLimitError(f"{what} would need about {human_bytes(nbytes)} of memory, more than the "
                               f"{human_bytes(avail)} available; {fix}.")
