"""Accuracy between step ends: diffrax SaveAt(ts) and SciPy dense output against step ends.

For ROBER (t to 1e5, 50 log-spaced outputs) and HIRES (IVP test set, 50 outputs on
[0, 321.8122]) at rtol 1e-6 and 1e-8 (atol = 1e-4 rtol), each adaptive method prints the
error weighted by (atol + rtol |y_ref|), maximised over components and times:

- ``steps``: at the step ends (diffrax SaveAt(steps=True); SciPy sol.t);
- ``own``: at the outputs, through the method's own continuous extension (what the
  adapters now use: collocation polynomial, Steinebach's or ode23s's Rosenbrock extension,
  cubic Hermite where none is published);
- ``hermite``: at the outputs, through cubic Hermite on the same steps (what the diffrax
  adapter used before for every method).

The reference is SciPy's Radau at rtol 1e-13, restarted at every time asked for, so it
is as accurate at the outputs as at step ends (``tests/helpers.step_end_reference``, the
one the contract tests use).  Writes benchmarks/out/dense_output.png.

    python benchmarks/dense_output.py [--adapter diffrax scipy] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import figure_tools, save
from scipy.integrate import solve_ivp
from scipy.interpolate import CubicHermiteSpline

from stiffcore.problems import ROBER
from stiffcore.report import table

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import step_end_reference, weighted_error  # noqa: E402  (the tests' reference and error)

METHODS = ["Rodas5P", "Rodas4", "RadauIIA5", "Rosenbrock23", "TRBDF2"]


def hires(t, y, xp=np):
    """HIRES (Schafer 1975; the IVP test set's 8-species plant physiology problem)."""
    r = 280.0 * y[5] * y[7]
    return xp.stack([
        -1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007,
        1.71 * y[0] - 8.75 * y[1],
        -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4],
        8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3],
        -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6],
        -r + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6],
        r - 1.81 * y[6],
        -r + 1.81 * y[6],
    ])


PROBLEMS = {
    "ROBER": dict(f=lambda t, y, xp=np: ROBER.rhs(t, y, xp.asarray(ROBER.params)), y0=ROBER.y0, t1=1e5,
                  ts=np.logspace(-4, 5, 50), dt0=1e-6),
    "HIRES": dict(f=hires, y0=np.array([1.0, 0, 0, 0, 0, 0, 0, 0.0057]), t1=321.8122,
                  ts=np.linspace(1.0, 321.8122, 50), dt0=1e-3),
}


def reference(problem, times):
    return step_end_reference(problem["f"], problem["y0"], times)


def weighted(ys, ref, rtol, atol):
    return weighted_error(ys, ref, rtol, atol)


def solve_diffrax(problem, name, rtol, atol):
    import diffrax
    import jax
    import jax.numpy as jnp

    import stiffcore.adapters.diffrax as adapter

    jax.config.update("jax_enable_x64", True)
    term = diffrax.ODETerm(lambda t, y, args: problem["f"](t, y, jnp))
    kw = dict(stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=100_000)
    solve = lambda saveat: diffrax.diffeqsolve(term, adapter.SOLVERS[name](), 0.0, problem["t1"],  # noqa: E731
                                               problem["dt0"], jnp.asarray(problem["y0"]), saveat=saveat, **kw)
    out = solve(diffrax.SaveAt(ts=jnp.asarray(problem["ts"])))
    steps = solve(diffrax.SaveAt(steps=True))
    n = int(steps.stats["num_accepted_steps"])
    return np.asarray(out.ys), np.r_[0.0, np.asarray(steps.ts[:n])], np.vstack([problem["y0"], steps.ys[:n]])


def solve_scipy(problem, name, rtol, atol):
    import stiffcore.adapters.scipy  # noqa: F401  (registers the method strings)

    sol = solve_ivp(problem["f"], (0.0, problem["t1"]), problem["y0"], method=name, rtol=rtol, atol=atol,
                    dense_output=True)
    return sol.sol(problem["ts"]).T, sol.t, sol.y.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", nargs="+", default=["diffrax", "scipy"], choices=["diffrax", "scipy"])
    parser.add_argument("--quick", action="store_true", help="rtol 1e-6 only")
    args = parser.parse_args()
    rtols = [1e-6] if args.quick else [1e-6, 1e-8]
    rows, points = [], []
    for pname, problem in PROBLEMS.items():
        ref_out = reference(problem, problem["ts"])
        for adapter in args.adapter:
            solve = solve_diffrax if adapter == "diffrax" else solve_scipy
            for rtol in rtols:
                atol = 1e-4 * rtol
                for name in METHODS:
                    ys, t_steps, y_steps = solve(problem, name, rtol, atol)
                    e_steps = weighted(y_steps[1:], reference(problem, t_steps[1:]), rtol, atol)
                    e_own = weighted(ys, ref_out, rtol, atol)
                    slopes = np.array([problem["f"](t, y) for t, y in zip(t_steps, y_steps)])
                    hermite = CubicHermiteSpline(t_steps, y_steps, slopes)(problem["ts"])
                    e_hermite = weighted(hermite, ref_out, rtol, atol)
                    rows.append([pname, adapter, f"{rtol:.0e}", name, t_steps.size - 1, e_steps, e_own,
                                 e_own / e_steps, e_hermite, e_hermite / e_steps])
                    points.append((f"{pname} {adapter} {rtol:.0e}", name, e_own / e_steps, e_hermite / e_steps))
                    print(table(["problem", "adapter", "rtol", "method", "steps", "steps err", "own err", "own/steps",
                                 "hermite err", "hermite/steps"], rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(["problem", "adapter", "rtol", "method", "steps", "steps err", "own err", "own/steps",
                 "hermite err", "hermite/steps"], rows))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, ax = plt.subplots(figsize=(9, 4.5))
        labels = sorted({p[0] for p in points})
        for j, name in enumerate(METHODS):
            own = [next(p[2] for p in points if p[0] == lab and p[1] == name) for lab in labels]
            her = [next(p[3] for p in points if p[0] == lab and p[1] == name) for lab in labels]
            x = np.arange(len(labels)) + 0.15 * (j - 2)
            ax.scatter(x, own, marker="o", label=f"{name} own extension", color=f"C{j}")
            ax.scatter(x, her, marker="x", label=f"{name} Hermite", color=f"C{j}")
        ax.axhline(3, color="k", ls="--", lw=0.8, label="3x target")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("weighted error at outputs / at step ends")
        ax.set_title("Output error between steps relative to step ends")
        ax.legend(fontsize=7, ncol=2)
        save(fig, out, "dense_output.png")


if __name__ == "__main__":
    main()
