"""Work-precision of FBDF and QNDF (SciPy adapter) against the BDF codes users can install.

Problems: ROBER (to 1e5), POLLU, HIRES, OREGO (IVP test set) and Van der Pol (mu = 1e3), at
rtol = 1e-4 ... 1e-10 (atol = rtol times a per-problem factor).  Methods in the same run:
ours (FBDF, QNDF, and the one-step RadauIIA5 and Rodas5P), SciPy's BDF and LSODA, CVODE
(scikit-sundae, dense Jacobian by differences as the others without ``jac``) and pydiffsol's
BDF (the model in DiffSL; ROBER, HIRES, OREGO, Van der Pol).  Every method gets the same
analytic Jacobian where the problem has one (ROBER, POLLU, Van der Pol; pydiffsol and
CVODE form their own).  Reported per run: the final state's weighted error
max |y - y_ref| / (atol + rtol |y_ref|) against a reference from SciPy's Radau at rtol 1e-13,
best-of-3 wall time, steps.  The summary gives FBDF's time over SciPy BDF's at equal
accuracy (BDF's time interpolated in log-log to FBDF's error) and the largest weighted error.

    python benchmarks/multistep.py [--quick]   (--quick: rtol 1e-4 and 1e-8, one repeat)

Writes benchmarks/out/multistep.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import figure_tools, save, stream_row
from scipy.integrate import solve_ivp

import stiffcore.adapters.scipy  # noqa: F401  (registers FBDF, QNDF, RadauIIA5, Rodas5P)
from stiffcore.problems import POLLU, ROBER, VANDERPOL
from stiffcore.report import table

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import HIRES_T1, HIRES_Y0, OREGO_T1, OREGO_Y0, hires, orego  # noqa: E402  (the tests' problems)

OURS = ["FBDF", "QNDF", "RadauIIA5", "Rodas5P"]
THEIRS = ["BDF", "LSODA", "CVODE", "pydiffsol"]

#: (fun, y0, t_end, jac, atol factor, DiffSL model or None)
PROBLEMS = {
    "ROBER": (ROBER.fun(), ROBER.y0, 1e5, ROBER.jac_fun(), 1e-4, """
        u_i { y1 = 1.0, y2 = 0.0, y3 = 0.0 }
        F_i { -0.04 * y1 + 10000 * y2 * y3, 0.04 * y1 - 10000 * y2 * y3 - 30000000 * y2 * y2, 30000000 * y2 * y2 }"""),
    "POLLU": (POLLU.fun(), POLLU.y0, 60.0, POLLU.jac_fun(), 1e-4, None),
    "HIRES": (hires, HIRES_Y0, HIRES_T1, None, 1e-4, """
        u_i { y1 = 1.0, y2 = 0.0, y3 = 0.0, y4 = 0.0, y5 = 0.0, y6 = 0.0, y7 = 0.0, y8 = 0.0057 }
        F_i { -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007, 1.71 * y1 - 8.75 * y2,
              -10.03 * y3 + 0.43 * y4 + 0.035 * y5, 8.32 * y2 + 1.71 * y3 - 1.12 * y4,
              -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
              -280.0 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
              280.0 * y6 * y8 - 1.81 * y7, -280.0 * y6 * y8 + 1.81 * y7 }"""),
    "OREGO": (orego, OREGO_Y0, OREGO_T1, None, 1e-4, """
        u_i { y1 = 1.0, y2 = 2.0, y3 = 3.0 }
        F_i { 77.27 * (y2 + y1 * (1 - 0.000008375 * y1 - y2)), (y3 - (1 + y1) * y2) / 77.27, 0.161 * (y1 - y3) }"""),
    "VdP": (VANDERPOL.fun(), VANDERPOL.y0, 2.0, VANDERPOL.jac_fun(), 1.0, """
        u_i { y1 = 2.0, y2 = 0.0 }
        F_i { y2, 1000 * (1 - y1 * y1) * y2 - y1 }"""),
}


def reference(name):
    f, y0, t1, jac, factor, _ = PROBLEMS[name]
    return solve_ivp(f, (0.0, t1), y0, method="Radau", rtol=1e-13, atol=factor * 1e-13, jac=jac).y[:, -1]


def solve(name, method, rtol, atol):
    """(final state, steps) of one solve."""
    f, y0, t1, jac, _, diffsl = PROBLEMS[name]
    if method == "CVODE":
        from sksundae.cvode import CVODE

        def rhs(t, y, yp):
            yp[:] = f(t, y)

        sol = CVODE(rhs, rtol=rtol, atol=atol, max_num_steps=10_000_000).solve([0.0, t1], y0)
        return sol.y[-1], int(sol.nst) if hasattr(sol, "nst") else len(sol.t)
    if method == "pydiffsol":
        import pydiffsol as ds

        ode = ds.Ode("in_i { p = 1 }\n" + diffsl, matrix_type=ds.nalgebra_dense, ode_solver=ds.bdf)
        ode.rtol, ode.atol = rtol, atol
        return ode.solve_dense(np.array([1.0]), np.array([t1])).ys[:, -1], None
    extra = {"autonomous": True} if method == "Rodas5P" else {}
    sol = solve_ivp(f, (0.0, t1), y0, method=method, rtol=rtol, atol=atol, jac=jac, **extra)
    return (sol.y[:, -1] if sol.status == 0 else np.full(len(y0), np.nan)), sol.t.size - 1


def available(method) -> bool:
    module = {"CVODE": "sksundae", "pydiffsol": "pydiffsol"}.get(method)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rtols = [1e-4, 1e-8] if args.quick else [1e-4, 1e-6, 1e-8, 1e-10]
    repeats = 1 if args.quick else 3
    methods = [m for m in OURS + THEIRS if available(m)]
    missing = sorted(set(OURS + THEIRS) - set(methods))
    if missing:
        print(f"not installed (pip install 'stiffcore[bench]'): {', '.join(missing)}")
    rows, curves = [], {}
    print("problem  rtol  method  weighted error  seconds  steps", flush=True)
    for name, (_, _, _, _, factor, diffsl) in PROBLEMS.items():
        ref = reference(name)
        for rtol in rtols:
            atol = factor * rtol
            for method in methods:
                if method == "pydiffsol" and diffsl is None:
                    continue
                if method == "Rodas5P" and rtol < 1e-8:
                    continue  # fourth-order error estimate: 474,216 steps on OREGO at 1e-10 (minutes)
                best, y, steps = np.inf, None, None
                for _ in range(repeats):
                    start = time.perf_counter()
                    y, steps = solve(name, method, rtol, atol)
                    best = min(best, time.perf_counter() - start)
                err = float(np.max(np.abs(y - ref) / (atol + rtol * np.abs(ref))))
                row = [name, rtol, method, err, best, steps if steps is not None else "-"]
                rows.append(row)
                stream_row(row)
                # accuracy as err * rtol (the weighted error at rtol 1): comparable across rtols
                curves.setdefault((name, method), []).append((err * rtol, best))
    print()
    print(table(["problem", "rtol", "method", "weighted error", "seconds", "steps"], rows))
    summary(rows, curves, rtols)
    plot(curves)


def _time_at_error(curve, err):
    """A method's time interpolated (log-log) to ``err`` along its work-precision curve, or None
    outside the errors it reached."""
    pts = sorted((e, t) for e, t in curve if np.isfinite(e) and e > 0)
    if len(pts) < 2 or not pts[0][0] <= err <= pts[-1][0]:
        return None
    e, t = np.log(np.array(pts)).T
    return float(np.exp(np.interp(np.log(err), e, t)))


def summary(rows, curves, rtols):
    out = []
    for name in PROBLEMS:
        bdf = {r[1]: r[4] for r in rows if r[0] == name and r[2] == "BDF"}
        for method in ("FBDF", "QNDF"):
            for rtol, err, seconds in ((r[1], r[3], r[4]) for r in rows if r[0] == name and r[2] == method):
                at_acc = _time_at_error(curves[(name, "BDF")], err * rtol)
                out.append([name, method, rtol, err, seconds / bdf[rtol], "-" if at_acc is None else seconds / at_acc])
    print()
    print("FBDF/QNDF against SciPy's BDF: time ratios at the same rtol and at equal accuracy (err * rtol, on "
          "BDF's curve interpolated in log-log; '-' where BDF's curve does not reach that accuracy)")
    print(table(["problem", "method", "rtol", "weighted error", "time / BDF (same rtol)", "time / BDF (equal acc)"],
                out))


def plot(curves):
    tools = figure_tools()
    if tools is None:
        return
    plt, out = tools
    fig, axes = plt.subplots(1, len(PROBLEMS), figsize=(4.2 * len(PROBLEMS), 4), squeeze=False)
    for ax, name in zip(axes[0], PROBLEMS):
        for (problem, method), pts in sorted(curves.items()):
            if problem != name:
                continue
            e, t = np.array(pts).T
            ax.loglog(e, t, "o-" if method in OURS else "s--", label=method, markersize=4)
        ax.set_title(name)
        ax.set_xlabel("weighted error x rtol of the final state")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("seconds (best of 3)")
    axes[0][-1].legend(fontsize=7)
    save(fig, out, "multistep.png")


if __name__ == "__main__":
    main()
