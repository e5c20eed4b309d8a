"""Accuracy between step ends: diffrax SaveAt(ts) and SciPy dense output against step ends.

For ROBER (t to 1e5, 50 log-spaced outputs) and HIRES (IVP test set, 50 outputs on
[0, 321.8122]) at rtol 1e-6 and 1e-8 (atol = 1e-4 rtol), each adaptive method prints the
error weighted by (atol + rtol |y_ref|), maximised over components and times:

- ``steps``: at the step ends (diffrax SaveAt(steps=True); SciPy sol.t), with control;
- ``hermite``: at the outputs, cubic Hermite on the uncontrolled steps (what the diffrax
  adapter used before for every method);
- ``own``: at the outputs, the method's own continuous extension (collocation polynomial,
  Steinebach's or ode23s's Rosenbrock extension, cubic Hermite where none is published) on
  steps chosen by the embedded estimate alone (``control_interpolation=False``);
- ``control``: the same with interpolation control, the default (a step is accepted only
  when the extension's filtered mid-step defect meets the tolerance too);
- ``control/steps``: the issue's target is <= 3 (or the output within the tolerance, <= 1,
  where the step ends are far more accurate than asked);
- ``rms``: step ends and outputs (with control) in the controllers' own norm, RMS over
  components (SciPy's and diffrax's default): the tolerance a user asked for is <= 1 here.

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
from _common import figure_tools, save, stream_row
from scipy.integrate import solve_ivp
from scipy.interpolate import CubicHermiteSpline

from stiffcore.problems import ROBER
from stiffcore.report import table

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import HIRES_T1, HIRES_Y0, hires, step_end_reference, weighted_error  # noqa: E402  (the tests')

METHODS = {"diffrax": ["Rodas5P", "Rodas4", "RadauIIA5", "Rosenbrock23", "TRBDF2"],  # (Kvaerno: diffrax's own)
           "scipy": ["Rodas5P", "Rodas4", "RadauIIA5", "Rosenbrock23", "TRBDF2", "Kvaerno3", "Kvaerno4", "Kvaerno5"]}


PROBLEMS = {
    "ROBER": dict(f=lambda t, y, xp=np: ROBER.rhs(t, y, xp.asarray(ROBER.params)), y0=ROBER.y0, t1=1e5,
                  ts=np.logspace(-4, 5, 50), dt0=1e-6),
    "HIRES": dict(f=hires, y0=HIRES_Y0, t1=HIRES_T1, ts=np.linspace(1.0, HIRES_T1, 50), dt0=1e-3),
}


def reference(problem, times):
    return step_end_reference(problem["f"], problem["y0"], times)


def weighted(ys, ref, rtol, atol):
    return weighted_error(ys, ref, rtol, atol)


def weighted_rms(ys, ref, rtol, atol):
    """The controllers' own norm (SciPy's and diffrax's PIDController: RMS over components),
    maximised over times."""
    w = (np.asarray(ys) - ref) / (atol + rtol * np.abs(ref))
    return float(np.max(np.sqrt(np.mean(w ** 2, axis=1))))


def solve_diffrax(problem, name, rtol, atol, control):
    import diffrax
    import jax
    import jax.numpy as jnp

    import stiffcore.adapters.diffrax as adapter

    jax.config.update("jax_enable_x64", True)
    term = diffrax.ODETerm(lambda t, y, args: problem["f"](t, y, jnp))
    kw = dict(stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=100_000)
    solver = adapter.SOLVERS[name](control_interpolation=control)
    solve = lambda saveat: diffrax.diffeqsolve(term, solver, 0.0, problem["t1"],  # noqa: E731
                                               problem["dt0"], jnp.asarray(problem["y0"]), saveat=saveat, **kw)
    out = solve(diffrax.SaveAt(ts=jnp.asarray(problem["ts"])))
    steps = solve(diffrax.SaveAt(steps=True))
    n = int(steps.stats["num_accepted_steps"])
    return np.asarray(out.ys), np.r_[0.0, np.asarray(steps.ts[:n])], np.vstack([problem["y0"], steps.ys[:n]])


def solve_scipy(problem, name, rtol, atol, control):
    import stiffcore.adapters.scipy  # noqa: F401  (registers the method strings)

    sol = solve_ivp(problem["f"], (0.0, problem["t1"]), problem["y0"], method=name, rtol=rtol, atol=atol,
                    dense_output=True, control_interpolation=control)
    return sol.sol(problem["ts"]).T, sol.t, sol.y.T


COLUMNS = ["problem", "adapter", "rtol", "method", "steps", "steps (control)", "steps err", "hermite err",
           "own err", "control err", "control/steps", "rms: steps", "rms: control"]


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
                for name in METHODS[adapter]:
                    ys_off, t_off, y_off = solve(problem, name, rtol, atol, False)
                    ys, t_steps, y_steps = solve(problem, name, rtol, atol, True)
                    e_steps = weighted(y_steps[1:], reference(problem, t_steps[1:]), rtol, atol)  # (max norm)
                    slopes = np.array([problem["f"](t, y) for t, y in zip(t_off, y_off)])
                    e_hermite = weighted(CubicHermiteSpline(t_off, y_off, slopes)(problem["ts"]), ref_out, rtol, atol)
                    e_own = weighted(ys_off, ref_out, rtol, atol)
                    e_control = weighted(ys, ref_out, rtol, atol)
                    ref_steps = reference(problem, t_steps[1:])
                    rms_steps = weighted_rms(y_steps[1:], ref_steps, rtol, atol)
                    rms_control = weighted_rms(ys, ref_out, rtol, atol)
                    rows.append([pname, adapter, f"{rtol:.0e}", name, t_off.size - 1, t_steps.size - 1, e_steps,
                                 e_hermite, e_own, e_control, e_control / e_steps, rms_steps, rms_control])
                    points.append((f"{pname} {adapter} {rtol:.0e}", name, e_own / e_steps, e_control / e_steps))
                    stream_row(rows[-1])
    print()
    print(table(COLUMNS, rows))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, ax = plt.subplots(figsize=(9, 4.5))
        labels = sorted({p[0] for p in points})
        names = sorted({p[1] for p in points})
        for j, name in enumerate(names):
            mine = [(labels.index(p[0]), p[2], p[3]) for p in points if p[1] == name]
            x = np.array([m[0] for m in mine]) + 0.1 * (j - len(names) / 2)
            ax.scatter(x, [m[1] for m in mine], marker="x", color=f"C{j}", label=f"{name} own extension")
            ax.scatter(x, [m[2] for m in mine], marker="o", color=f"C{j}", label=f"{name} with control")
        ax.axhline(3, color="k", ls="--", lw=0.8, label="3x target")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("weighted error at outputs / at step ends")
        ax.set_title("Output error between steps relative to step ends")
        ax.legend(fontsize=6, ncol=2)
        save(fig, out, "dense_output.png")


if __name__ == "__main__":
    main()
