"""A one-line progress bar on stderr (silent when quiet)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    """``42 s``, ``3m05s``, ``2h07m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """``[#####-----] round 12/30 | acc 0.914 | 1.52 MB sent | 3.1 s | eta 4 s``.

    The estimate is the mean time a round took since the first one ended (start-up
    left out), times the rounds left; shown from the second round on."""

    def __init__(self, total: int, *, quiet: bool = False, width: int = 24, stream=None) -> None:
        self.total, self.quiet, self.width = total, quiet, width
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self._tty = getattr(self.stream, "isatty", lambda: False)()
        self._last = 0.0
        self._first: tuple | None = None  # (round, time) of the first update
        self._bar_shown = False  # the bar is on the terminal's current line
        self._shown: tuple | None = None  # (done, text) of the bar last drawn

    def update(self, done: int, text: str = "") -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self._first is None:
            self._first = (done, now)
        if not self._tty and done < self.total and now - self._last < 2.0:
            return  # in logs, print a line every couple of seconds only
        self._last, self._shown = now, (done, text)
        filled = int(self.width * done / max(1, self.total))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] round {done}/{self.total} | {text} | {now - self.t0:.1f} s"
        first, since = self._first
        if first < done < self.total:
            line += f" | eta {_duration((now - since) / (done - first) * (self.total - done))}"
        self.stream.write(("\r" + line) if self._tty else line + "\n")
        self.stream.flush()
        self._bar_shown = self._tty

    #: Off a terminal (a log), how long a run may wait with no round ended before the
    #: last line is printed again with the time so far (no line at all told a reader of
    #: the log nothing of a run that waited minutes for a stopped host).
    LOG_STALL_S = 30.0

    def tick(self) -> None:
        """On a terminal, redraw the bar about once a second while no round ends, so that
        its clock goes on (it stood at "2.9 s" for the 150 s a run waited for a stopped
        host); in a log, print its line again after :attr:`LOG_STALL_S` of waiting."""
        if self._shown is None or self.quiet:
            return
        since = time.monotonic() - self._last
        if (self._bar_shown and since >= 1.0) or (not self._tty and since >= self.LOG_STALL_S):
            self.update(*self._shown)

    def close(self) -> None:
        if not self.quiet and self._tty and self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False

    def info(self, text: str) -> None:
        """A plain message line, suppressed when quiet unless it is a warning
        (``warning: ...``): a script that runs quietly still hears that nodes diverged,
        failed, or learned alone (errors show too)."""
        if not self.quiet or text.startswith("warning:"):
            self.notice(text)

    def notice(self, text: str) -> None:
        """A message line that a quiet run prints too (where remote nodes join)."""
        # on a terminal, over the bar (redrawn at the next update), not after it
        self.stream.write(("\r\x1b[K" if self._bar_shown else "") + text + "\n")
        self.stream.flush()
