"""Progress bars that stay readable in a log file.

Why: tqdm redraws its bar with carriage returns, which a terminal shows as one moving line and a
log file (``defectnas search ... 2> search.log``, a CI job, ``nohup``) keeps as one ever-growing
line of every redraw. :func:`progress` is tqdm on a terminal; on anything else it prints the
bar's status as whole lines, at most every :data:`LOG_EVERY_S` seconds and once at the end.
``quiet`` turns it off (the ``--quiet`` flag of every command).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable

from tqdm.auto import tqdm

LOG_EVERY_S = 30.0  # seconds between two status lines when stderr is not a terminal


class LineProgress(tqdm):
    """tqdm writing whole status lines (no carriage returns): the first, then at most one every
    ``mininterval`` seconds however often the bar is redrawn (``set_postfix`` redraws at every
    call), and the last one when it closes."""

    _printed_at: float | None = None
    _closing = False

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        text = (self.__str__() if msg is None else msg).strip()
        if not text:  # tqdm "clears" a bar by displaying "" (then writes a carriage return unless told False)
            return False
        now = time.monotonic()
        if not self._closing and self._printed_at is not None and now - self._printed_at < self.mininterval:
            return True  # a redraw within the interval: nothing written
        self.fp.write(text + "\n")
        self.fp.flush()
        self._printed_at, self._shown_n = now, self.n
        return True

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        """Sets the postfix without writing a line: the next update's line carries it, beside the
        count it belongs to. (Written at once, in a loop that sets it after each step, the line
        showed the count before that step: ``0/264 [00:31<?, ?it/s, loss=0.9560]``; and a line
        written by an update before the postfix was set showed the previous values.)"""
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def clear(self, nolock: bool = False) -> None:
        """Nothing to erase: lines already written stay (tqdm's clear writes a carriage return)."""

    def close(self) -> None:
        if not self.disable and getattr(self, "_shown_n", None) != self.n:
            self._closing = True
            self.display()  # the final count, once, even when the last redraw was skipped
        self.leave = False  # tqdm's own close would print the final line again, or a carriage return
        super().close()


def progress(iterable: Iterable | None = None, *, quiet: bool = False, **kwargs: Any) -> tqdm:
    """A progress bar over ``iterable`` (or updated by hand with ``total=``): tqdm's keyword
    arguments, plus ``quiet`` (no output at all)."""
    if quiet:
        return tqdm(iterable, disable=True, **kwargs)
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, **kwargs)
    return LineProgress(iterable, mininterval=kwargs.pop("mininterval", LOG_EVERY_S), **kwargs)
