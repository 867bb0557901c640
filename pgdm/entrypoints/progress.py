"""Progress bars that suit where stderr goes: tqdm bars on a terminal, a few plain lines in a log or CI.

On a terminal a bar redraws itself in place. Written to a file or a pipe, every redraw would be kept, so
:func:`progress_bar` returns :class:`LineProgress` there instead: one line when the work is done and at most one
line every ``interval`` seconds before that; nested bars (the per-batch step bar) print nothing.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """The part of tqdm's interface the commands use (``update``, ``set_postfix_str``, ``close``), printing plain
    lines ``LABEL: DONE/TOTAL UNIT, ELAPSED[, POSTFIX]`` to stderr: at most one per ``interval`` seconds, and the last."""

    def __init__(self, total: int, desc: str, unit: str, interval: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n, self.printed, self.postfix = 0, 0, ""
        self.started = self.last = time.perf_counter()
        self.closed = False

    def update(self, count: int = 1) -> None:
        self.n += count
        now = time.perf_counter()
        if self.n >= self.total or now - self.last >= self.interval:
            self._print(now)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        """Print where the work stopped, if that was not printed yet (an early stop)."""
        if self.n != self.printed:
            self._print(time.perf_counter())
        self.closed = True

    def _print(self, now: float) -> None:
        if self.total == 0 or self.closed:
            return
        line = f"{self.desc}: {self.n}/{self.total} {self.unit}, {now - self.started:.1f} s"
        print(line + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)
        self.last, self.printed = now, self.n


def progress_bar(total: int, desc: str, unit: str = "it", *, disable: bool = False, nested: bool = False, **tqdm_options):
    """A tqdm bar when stderr is a terminal, else a :class:`LineProgress` (nothing for a ``nested`` bar).

    ``disable``: no output at all. ``tqdm_options`` go to tqdm (``leave``, ``smoothing``...).
    """
    if disable or (nested and not _stderr_is_a_terminal()):
        return tqdm(total=total, disable=True)
    if _stderr_is_a_terminal():
        return tqdm(total=total, desc=desc, unit=unit, **tqdm_options)
    return LineProgress(total, desc, unit)


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
