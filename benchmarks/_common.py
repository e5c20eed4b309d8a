"""Shared by the benchmark scripts: where figures go, how to get pyplot, memory readings."""

from __future__ import annotations

import time
from pathlib import Path

OUT = Path(__file__).parent / "out"


def figure_tools():
    """(pyplot, output folder), or None (with the reason printed) when matplotlib is missing."""
    from stiffcore.plotting import pyplot

    try:
        plt = pyplot()
    except RuntimeError as exc:
        print(exc)
        return None
    OUT.mkdir(exist_ok=True)
    return plt, OUT


def stream_row(row) -> None:
    """One finished row, printed at once (the table comes at the end): cells as the table
    formats them, two spaces apart, never wrapped, so a long run shows what it has done."""
    from stiffcore.report import fmt

    print("  ".join(fmt(cell) for cell in row), flush=True)


def save(fig, out: Path, name: str) -> None:
    """Lay out, write ``out/name`` and say where."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    print(f"wrote {out / name}")


def process_status_kib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in KiB, from /proc/self/status.

    VmHWM starts afresh at exec; ``getrusage``'s ru_maxrss does not: Linux carries the parent's
    peak over, so a child spawned by a large process reports the parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def compiled_and_warm(fn, *args):
    """(seconds of the first call, which compiles, seconds of a second, warm call, its result)
    of a jitted JAX function."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return compile_s, time.perf_counter() - start, out
