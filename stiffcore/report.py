"""Plain-text tables and JSON-safe values shared by the CLI and reports."""

from __future__ import annotations

import difflib
import math
from typing import Any, Sequence


def did_you_mean(name: str, candidates, cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest candidate, or "" (for unknown-name errors).

    Where no candidate is close as written, case is ignored, so a SciPy name finds a torch
    id ('RadauIIA5' -> 'radau_iia5') and back."""
    by_lower = {str(c).lower(): c for c in candidates}
    close = difflib.get_close_matches(str(name), list(map(str, candidates)), n=1, cutoff=cutoff) or [
        by_lower[c] for c in difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=cutoff)]
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


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns with a rule under the header."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda items: "  ".join(s.ljust(w) for s, w in zip(items, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


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
