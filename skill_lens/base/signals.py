"""SIGTERM as an interruption: a job stopped by ``kill`` or a scheduler unwinds like one stopped by Ctrl-C.

Inside :func:`sigterm_interrupts`, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) where the
process is, so every ``finally`` and ``except BaseException`` on the way out runs: atomic writes remove
their temporaries, a step's staged outputs are dropped, its checkpoint stays to resume from.

>>> import os, signal
>>> try:
...     with sigterm_interrupts():
...         os.kill(os.getpid(), signal.SIGTERM)
... except Terminated:
...     print("unwound")
unwound
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["Terminated", "sigterm_interrupts"]


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (inside :func:`sigterm_interrupts`)."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Raise :class:`Terminated` on SIGTERM inside the block (main thread only; the old handler comes back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
