"""A one-line progress bar for training loops (no dependency; redraws at most 5 times a second)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """``update(epoch, **figures)`` redraws ``[####....] epoch/total figures  ms/epoch``.

    On a terminal the line is redrawn in place; otherwise (a log file, CI) one line is
    written every ``log_every`` seconds, so logs stay short.
    """

    def __init__(self, total: int, stream=None, width: int = 24, log_every: float = 10.0) -> None:
        self.total, self.width, self.log_every = total, width, log_every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = self.last_draw = time.perf_counter()
        self.first = None  # (epoch, time) of the first update: the rate leaves out start-up and compilation

    def update(self, epoch: int, force: bool = False, **figures) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (epoch, now)
        if not force and now - self.last_draw < (0.2 if self.tty else self.log_every):
            return
        self.last_draw = now
        done = epoch + 1
        filled = int(self.width * done / max(self.total, 1))
        per_epoch = (now - self.first[1]) / max(epoch - self.first[0], 1)
        shown = "  ".join(f"{k} {v:.3e}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}  {shown}  "
                f"{1e3 * per_epoch:.1f} ms/epoch  {now - self.start:.0f} s")
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
