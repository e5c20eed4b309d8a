"""Accuracy and speed of R(z), R'(z) for every one-step catalogue method.

Compares the float evaluation with the 60-digit reference on |z| in [1e-6, 1e10] along the
negative real axis and rays at 30, 60, 80 degrees into the left half-plane, and times the
vectorised evaluation.  Prints a table and writes benchmarks/out/stability_accuracy.png.

    python benchmarks/stability_accuracy.py
"""

from __future__ import annotations

import time
import numpy as np
from _common import figure_tools

from stiffcore.catalogue import METHODS
from stiffcore.report import table


def max_rel_error(stab, z):
    got = stab.derivative(z)
    worst = 0.0
    scale_exp = stab.decay_exponent
    for zi, g in zip(z, got):
        ref = complex(stab.exact(zi, derivative=True))
        if abs(ref) > 1e-6 * min(1.0, abs(zi) ** scale_exp):  # skip zeros of R'
            worst = max(worst, abs(g - ref) / abs(ref))
    return worst


def main() -> None:
    rows, curves = [], {}
    for m in METHODS.values():
        if not m.is_one_step:
            continue
        stab = m.stability
        top = 10 if m.is_implicit else 3
        abs_z = np.logspace(-6, top, 49)
        errs = {a: max_rel_error(stab, -abs_z * np.exp(1j * np.radians(a)) if a else -abs_z) for a in (0, 30, 60, 80)}
        zz = -np.logspace(-6, top, 100_000)
        t = time.perf_counter()
        stab.derivative(zz)
        per_point = (time.perf_counter() - t) / zz.size
        rows.append([m.id, *errs.values(), per_point * 1e9])
        curves[m.id] = max(errs.values())
    print(table(["method", "max rel err (real)", "30 deg", "60 deg", "80 deg", "ns / point"], rows))
    print(f"\nworst over all methods and rays: {max(curves.values()):.2e} (target 1e-10)")
    tools = figure_tools()
    if tools is None:
        return
    plt, out = tools
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(list(curves), [max(v, 1e-18) for v in curves.values()])
    ax.set_yscale("log")
    ax.axhline(1e-10, color="r", label="target 1e-10")
    ax.set_ylabel("max relative error of R'(z)")
    ax.tick_params(axis="x", rotation=90)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "stability_accuracy.png", dpi=110)
    print(f"wrote {out / 'stability_accuracy.png'}")


if __name__ == "__main__":
    main()
