"""Reversible outputs between step ends, in all three adapters (issue 21, item 1).

Problem: the forced, weakly damped oscillator of ``tests/test_reversible_outputs.py``
(y1' = -0.1 y1 + 2 y2 + sin t, y2' = -2 y1 - 0.1 y2 + 0.1 y1^2, y(0) = (1, 0), t in [0, 4]),
97 output times off every step grid; the reference is DOP853 at rtol = atol = 1e-13.
Columns: the maximum absolute error at the outputs of the base method alone, of the
reversible scheme around it, and (diffrax) of a linear interpolant of the reversible step
ends, which is what ``Reversible`` returned before; ``ratio`` is reversible over base.

- diffrax: ``PIDController(rtol=atol=1e-8)``, ``SaveAt(ts)``;
- SciPy: fixed steps h = 0.2, ``t_eval`` (``ends``: the reversible solve at its step ends);
- torch: rtol = atol = 1e-8; steps land on the outputs (the base column is torchdiffeq's own
  dopri5 for tsit5, which torchdiffeq lacks).

Writes benchmarks/out/reversible_outputs.png.

    python benchmarks/reversible_outputs.py [--adapter diffrax scipy torch]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from _common import figure_tools, save, stream_row
from scipy.integrate import solve_ivp

from stiffcore.report import table

T_END, Y0 = 4.0, np.array([1.0, 0.0])
OUTPUTS = np.linspace(0.013, T_END - 0.01, 97)
HEADERS = ("adapter", "base", "base error", "reversible error", "linear interp.", "ratio")


def oscillator(t, y, xp=np, sin=np.sin):
    return xp.stack([-0.1 * y[0] + 2 * y[1] + sin(t), -2 * y[0] - 0.1 * y[1] + 0.1 * y[0] ** 2])


def error(ys, ts, reference) -> float:
    return float(np.max(np.abs(np.asarray(ys) - reference(np.asarray(ts)).T)))


def diffrax_rows(reference):
    import diffrax
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from stiffcore.adapters.diffrax import RadauIIA5, Reversible, Rodas5P

    chord = diffrax.VeryChord(rtol=1e-8, atol=1e-8)
    term = diffrax.ODETerm(lambda t, y, a: oscillator(t, y, xp=jnp, sin=jnp.sin))
    bases = {"Tsit5": diffrax.Tsit5(), "Kvaerno5": diffrax.Kvaerno5(root_finder=chord),
             "RadauIIA5": RadauIIA5(root_finder=chord), "Rodas5P": Rodas5P()}

    def solve(solver, saveat):
        return diffrax.diffeqsolve(term, solver, 0.0, T_END, 0.01, jnp.asarray(Y0), saveat=saveat, max_steps=100_000,
                                   stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8))

    for name, base in bases.items():
        plain = error(solve(base, diffrax.SaveAt(ts=jnp.asarray(OUTPUTS))).ys, OUTPUTS, reference)
        rev = error(solve(Reversible(base), diffrax.SaveAt(ts=jnp.asarray(OUTPUTS))).ys, OUTPUTS, reference)
        steps = solve(Reversible(base), diffrax.SaveAt(t0=True, steps=True))
        t, y = np.asarray(steps.ts), np.asarray(steps.ys)
        kept = np.isfinite(t)
        linear = np.stack([np.interp(OUTPUTS, t[kept], y[kept, i]) for i in range(2)], axis=1)
        yield ("diffrax", name, plain, rev, error(linear, OUTPUTS, reference), rev / plain)


def scipy_rows(reference):
    import stiffcore.adapters.scipy  # noqa: F401  (registers the method strings)

    h = 0.2
    grid = h * np.arange(1, round(T_END / h) + 1)
    opts = dict(first_step=h, adaptive=False)
    for base in ("Kvaerno5", "RadauIIA5", "Rodas5P", "TRBDF2", "GaussLegendre4", "Trapezoid"):
        plain = solve_ivp(oscillator, (0, T_END), Y0, method=base, t_eval=OUTPUTS, **opts)
        rev = solve_ivp(oscillator, (0, T_END), Y0, method="Reversible", base=base, t_eval=OUTPUTS, **opts)
        ends = solve_ivp(oscillator, (0, T_END), Y0, method="Reversible", base=base, t_eval=grid, **opts)
        e_plain, e_rev = error(plain.y.T, OUTPUTS, reference), error(rev.y.T, OUTPUTS, reference)
        yield ("scipy", f"{base} (ends {error(ends.y.T, grid, reference):.2g})", e_plain, e_rev, "-", e_rev / e_plain)


def torch_rows(reference):
    import torch
    from torchdiffeq import odeint

    import stiffcore.adapters.torchdiffeq  # noqa: F401

    ts = torch.tensor(np.concatenate([[0.0], OUTPUTS]), dtype=torch.float64)
    y0 = torch.tensor(Y0, dtype=torch.float64)
    f = lambda t, y: oscillator(t, y, xp=torch, sin=torch.sin)  # noqa: E731
    for base in ("tsit5", "dopri5", "kvaerno5", "radau_iia5", "rodas5p"):
        plain = odeint(f, y0, ts, method="dopri5" if base == "tsit5" else base, rtol=1e-8, atol=1e-8)
        rev = odeint(f, y0, ts, method="reversible", options=dict(base=base), rtol=1e-8, atol=1e-8)
        e_plain, e_rev = error(plain.numpy(), ts.numpy(), reference), error(rev.numpy(), ts.numpy(), reference)
        yield ("torch", base, e_plain, e_rev, "-", e_rev / e_plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", nargs="+", choices=("diffrax", "scipy", "torch"),
                        default=["diffrax", "scipy", "torch"])
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)   # the growth warnings concern decaying modes not present here
    reference = solve_ivp(oscillator, (0, T_END), Y0, method="DOP853", rtol=1e-13, atol=1e-13, dense_output=True).sol
    producers = {"diffrax": diffrax_rows, "scipy": scipy_rows, "torch": torch_rows}
    rows = []
    for adapter in args.adapter:
        for row in producers[adapter](reference):
            stream_row(row)
            rows.append(row)
    print(table(HEADERS, rows))
    tools = figure_tools()
    if tools is None:
        return
    plt, out = tools
    fig, ax = plt.subplots(figsize=(11, 5))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r[2] for r in rows], 0.4, label="base method")
    ax.bar(x + 0.2, [r[3] for r in rows], 0.4, label="Reversible(base)")
    linear = [(k, r[4]) for k, r in enumerate(rows) if r[4] != "-"]
    ax.scatter([k for k, _ in linear], [v for _, v in linear], marker="x", color="red", zorder=3,
               label="Reversible, linear interpolation (before)")
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{r[0]} {r[1].split(' ')[0]}" for r in rows], fontsize=8, rotation=40, ha="right")
    ax.set_ylabel("max error at 97 outputs between steps")
    ax.set_title("Reversible outputs between steps: the base's own interpolation")
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9, bbox_to_anchor=(1.0, 1.25), ncol=3)
    save(fig, out, "reversible_outputs.png")


if __name__ == "__main__":
    main()
