"""Plain-text tables (rich), JSON-safe values and "did you mean" hints shared by the CLI and reports."""

from __future__ import annotations

import difflib
import io
import math
import textwrap
from typing import Any, Sequence


#: terminal width the tables are made to fit (wider content wraps inside its column)
WIDTH = 100


def did_you_mean(name: str, candidates, cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest candidate, or "" (for unknown-name errors).

    Where no candidate is close as written, case is ignored, so a SciPy name finds a torch
    id ('RadauIIA5' -> 'radau_iia5') and back."""
    names = [str(c) for c in candidates]
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=cutoff)
    if not close:
        by_lower = {n.lower(): n for n in names}
        close = [by_lower[c] for c in difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=cutoff)]
    return f" Did you mean {close[0]!r}?" if close else ""


def fmt(value: Any) -> str:
    """A compact, fixed-width-friendly rendering of one cell."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        if 1e-3 <= abs(value) < 1e4:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def wrap(text: str, width: int = WIDTH, indent: str = "  ") -> str:
    """A paragraph wrapped to ``width`` columns, continuation lines indented."""
    return textwrap.fill(text, width, subsequent_indent=indent, break_on_hyphens=False)


def progress_bar(console, *columns, transient: bool = False):
    """The CLI's rich progress bar on ``console``: description, bar, done/total, any extra
    ``columns``, elapsed time and ETA (conformance and training show the same one)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *columns, TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=transient)


def _rule_under_header():
    """rich's SIMPLE_HEAD box drawn in ASCII (logs and non-UTF-8 terminals)."""
    from rich.box import Box

    return Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int = WIDTH) -> str:
    """Rows under a header as plain text at most ``width`` columns wide.

    Rendered by ``rich`` (imported here, so ``import stiffcore`` stays light): columns are
    sized to their cells, and where they cannot all fit, long cells wrap inside their column
    rather than the line running past ``width``.  Cells are shown as text, never as markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=_rule_under_header(), show_edge=False, pad_edge=False, header_style="", collapse_padding=True)
    for k, header in enumerate(headers):  # the first column names the row: never broken
        grid.add_column(Text(header), overflow="fold", no_wrap=k == 0)
    for row in rows:
        grid.add_row(*(Text(fmt(c)) for c in row))
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, highlight=False)
    with console.capture() as captured:
        console.print(grid)
    return "\n".join(line.rstrip() for line in captured.get().rstrip("\n").splitlines())


def json_safe(value: Any) -> Any:
    """Floats that JSON cannot hold (inf, nan) become strings; numpy scalars become Python."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
