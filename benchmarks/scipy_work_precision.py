"""Work-precision of the SciPy adapter on ROBER and POLLU against SciPy's own stiff solvers.

For rtol = 1e-5 ... 1e-10 (atol = 1e-4 rtol) and each method: achieved error (max relative
error of the final state on components above atol, against the problem's reference), best
of 3 wall times, nfev, nlu, and the time ratio against SciPy's Radau measured in the same
run.  "ratio@acc" compares at equal achieved accuracy: SciPy Radau's time interpolated (in
log-log) to the error our method achieved.  Writes benchmarks/out/scipy_work_precision.png.

    python benchmarks/scipy_work_precision.py [--quick]
"""

from __future__ import annotations

import argparse
import time
import numpy as np
from _common import figure_tools, stream_row
from scipy.integrate import solve_ivp

import stiffcore.adapters.scipy  # noqa: F401  (registers the method strings)
from stiffcore.problems import POLLU, ROBER
from stiffcore.report import table

OURS = ["RadauIIA5", "Rodas5P", "Rodas4", "TRBDF2", "Kvaerno5"]
THEIRS = ["Radau", "BDF", "LSODA"]
ROSENBROCK = {"Rodas5P", "Rodas4"}


def run(problem, method, rtol, repeats):
    best, sol = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        # ROBER and POLLU are autonomous: Rosenbrock methods may skip the f_t difference
        extra = {"autonomous": True} if method in ROSENBROCK else {}
        sol = solve_ivp(problem.fun(), problem.t_span, problem.y0, method=method, rtol=rtol, atol=1e-4 * rtol,
                        jac=problem.jac_fun(), **extra)
        best = min(best, time.perf_counter() - start)
    ref = problem.reference[1]
    mask = np.abs(ref) > 1e-4 * rtol
    err = float(np.max(np.abs(sol.y[:, -1] - ref)[mask] / np.abs(ref[mask]))) if sol.status == 0 else np.inf
    return dict(err=err, time=best, nfev=sol.nfev, nlu=sol.nlu, steps=sol.t.size - 1)


def time_at_error(curve, err):
    """SciPy Radau's time interpolated to ``err`` on its own (log error, log time) curve."""
    errs = np.log([c["err"] for c in curve])
    times = np.log([c["time"] for c in curve])
    order = np.argsort(errs)
    return float(np.exp(np.interp(np.log(err), errs[order], times[order])))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="rtol 1e-6, 1e-8 only, one repeat")
    args = parser.parse_args()
    rtols = [1e-6, 1e-8] if args.quick else [1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    repeats = 1 if args.quick else 3
    results = {}
    for problem in (ROBER, POLLU):
        for method in THEIRS + OURS:
            for rtol in rtols:
                r = results[problem.name, method, rtol] = run(problem, method, rtol, repeats)
                stream_row([problem.name, method, rtol, r["err"], r["time"], r["steps"]])
        rows = []
        radau_curve = [results[problem.name, "Radau", r] for r in rtols]
        for method in OURS + THEIRS:
            for rtol in rtols:
                r = results[problem.name, method, rtol]
                same = r["time"] / results[problem.name, "Radau", rtol]["time"]
                at_acc = r["time"] / time_at_error(radau_curve, r["err"]) if np.isfinite(r["err"]) else np.inf
                rows.append([method, rtol, r["err"], r["time"], r["steps"], r["nfev"], r["nlu"], same, at_acc])
        print(f"\n{problem.name.upper()} (t in {problem.t_span}), times are best of {repeats}")
        print(table(["method", "rtol", "error", "time s", "steps", "nfev", "nlu", "ratio@rtol", "ratio@acc"], rows))
    tools = figure_tools()
    if tools is None:
        return
    plt, out = tools
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, problem in zip(axes, (ROBER, POLLU)):
        for method in OURS + THEIRS:
            pts = [results[problem.name, method, r] for r in rtols]
            ax.loglog([p["err"] for p in pts], [p["time"] for p in pts], "o-" if method in OURS else "s--",
                      label=method)
        ax.set_xlabel("achieved relative error")
        ax.set_ylabel("wall time (s)")
        ax.set_title(problem.name.upper())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scipy_work_precision.png", dpi=110)
    print(f"\nwrote {out / 'scipy_work_precision.png'}")


if __name__ == "__main__":
    main()
