"""Progress bars: tqdm on a terminal, one HTML line in Jupyter; silenced when ``SKILL_LENS_QUIET=1`` (the
test suite sets it).

In a Jupyter kernel a bar is drawn as an HTML ``<progress>`` line that updates in place and disappears
when done (``leave=True`` keeps it): no ipywidgets needed, nothing on the notebook's stderr. Hugging
Face's own bars (transformers' "Loading weights", datasets') are turned off while skill_lens loads
something (:func:`library_bars_off`): a load of seconds needs none.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.std import tqdm as _std_tqdm

__all__ = ["progress", "say", "quiet", "in_notebook", "library_bars_off", "NotebookBar"]

T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get("SKILL_LENS_QUIET", "") not in ("", "0")


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where stderr shows as a pink box and ``\\r`` does not redraw).

    >>> in_notebook()
    False
    """
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class NotebookBar(_std_tqdm):
    """tqdm drawn as one HTML line in a Jupyter output, updated in place (at most 4 times a second).

    Nothing is written to a stream; when closed the line is cleared, unless ``leave=True``.

    >>> bar = NotebookBar(range(3), desc="tune", disable=True)
    >>> list(bar)
    [0, 1, 2]
    """

    def __init__(self, *args, **kwargs):
        self._handle, self._shown = None, 0.0
        kwargs["file"] = io.StringIO()  # tqdm's own text goes nowhere
        kwargs.setdefault("mininterval", 0.25)
        super().__init__(*args, **kwargs)

    def _html(self) -> str:
        d = self.format_dict
        text = self.format_meter(**{**d, "bar_format": "{desc}{percentage:3.0f}% {n_fmt}/{total_fmt} "
                                                      "[{elapsed}<{remaining}{postfix}]" if d["total"] else
                                    "{desc}{n_fmt} [{elapsed}{postfix}]"})
        bar = f'<progress value="{d["n"]}" max="{d["total"]}" style="width: 12em"></progress> ' if d["total"] else ""
        return f'<div style="font: 12px monospace; color: #555">{bar}{html.escape(text)}</div>'

    def display(self, msg=None, pos=None):
        from IPython.display import HTML, display

        if self._handle is None:
            self._handle = display(HTML(self._html()), display_id=True)
        elif time.monotonic() - self._shown >= 0.25 or self.n == self.total:
            self._handle.update(HTML(self._html()))
        self._shown = time.monotonic()
        return True

    def close(self):
        if self.disable:
            return
        leave = self.leave
        super().close()
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(self._html() if leave else ""))


def progress(iterable: Iterable[T] | None = None, **kwargs) -> _std_tqdm:
    """``tqdm(iterable, **kwargs)`` (a :class:`NotebookBar` in Jupyter), disabled when quiet.

    >>> list(progress(range(3), disable=True))
    [0, 1, 2]
    """
    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("leave", False)
    if in_notebook():
        return NotebookBar(iterable, **kwargs)
    kwargs.setdefault("dynamic_ncols", True)
    return _std_tqdm(iterable, **kwargs)


def say(msg: str) -> None:
    """Print a status line (through tqdm so bars stay intact), unless quiet."""
    if not quiet():
        _std_tqdm.write(msg)


@contextlib.contextmanager
def library_bars_off() -> Iterator[None]:
    """Turn off transformers' and datasets' own progress bars inside the block (restored after).

    >>> with library_bars_off():
    ...     from transformers.utils import logging
    ...     logging.is_progress_bar_enabled()
    False
    """
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets = sys.modules.get("datasets")  # only if loaded: importing it costs seconds
    was_ds = datasets is not None and datasets.is_progress_bar_enabled()
    if datasets is not None:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
        if was_ds:
            datasets.enable_progress_bars()
