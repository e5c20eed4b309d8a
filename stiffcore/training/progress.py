"""Training progress through ``rich`` (imported here: ``import stiffcore`` stays light)."""

from __future__ import annotations

import sys
import time


def _figures(figures: dict) -> str:
    return "  ".join(f"{k} {v:.3e}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


class ProgressBar:
    """``update(epoch, **figures)`` shows epoch/total, the figures (loss, worst species),
    ms per epoch, elapsed time and an ETA.

    On a terminal it is a live rich progress bar; otherwise (a log file, CI) one line is
    written every ``log_every`` seconds, so logs stay short.  Until the first epoch ends the
    bar says so: that epoch includes JAX's compilation (seconds of otherwise silent work).
    """

    FIRST = "first epoch (includes compiling the solve)"

    def __init__(self, total: int, stream=None, log_every: float = 10.0) -> None:
        from rich.console import Console
        from rich.progress import TextColumn

        from ..report import progress_bar

        self.total, self.log_every = total, log_every
        self.console = Console(file=stream if stream is not None else sys.stderr, highlight=False)
        self.start = self.last_line = time.perf_counter()
        self.first = None  # (epoch, time) of the first update: the rate leaves out start-up and compilation
        self.bar = None
        if self.console.is_terminal:
            self.bar = progress_bar(self.console, TextColumn("{task.fields[figures]}"))
            self.task = self.bar.add_task(f"training: {self.FIRST}", total=total, figures="")
            self.bar.start()
        else:
            self.console.print(f"training {total} epochs: {self.FIRST} ...", soft_wrap=True)

    def update(self, epoch: int, force: bool = False, **figures) -> None:
        now = time.perf_counter()
        first = self.first is None
        if first:
            self.first = (epoch, now)
        per_epoch = (now - self.first[1]) / max(epoch - self.first[0], 1)
        shown = f"{_figures(figures)}  {1e3 * per_epoch:.1f} ms/epoch" if not first else _figures(figures)
        if self.bar is not None:
            self.bar.update(self.task, completed=epoch + 1, description="training", figures=shown)
        elif first or force or now - self.last_line >= self.log_every:
            self.last_line = now
            self.console.print(f"epoch {epoch + 1}/{self.total}  {shown}  {now - self.start:.0f} s", soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
