"""DIRK Newton on long stiff spans: steps, failed Newton attempts, f evaluations and CPU time.

ROBER to t = 1e8 (atol 1e-10) and Van der Pol with mu = 1e3 over two relaxation periods
(t to 3000, atol 1e-6), each at rtol 1e-4 and 1e-6 with the analytic Jacobian, for the SciPy
adapter's diagonally implicit methods, with SciPy's own Radau and BDF in the same run as
anchors (their rows have no failure count: SciPy does not expose one).  A healthy DIRK fails
in a few percent of its attempts and takes fewer steps at the looser tolerance; issue #14 saw
Kvaerno5 fail in 1,093 of 1,881 attempts on ROBER and TRBDF2 take more steps at rtol 1e-4
than at 1e-6 on Van der Pol.  Writes benchmarks/out/dirk_newton.png.

    python benchmarks/dirk_newton.py
"""

from __future__ import annotations

import time

import numpy as np
from _common import figure_tools, save, stream_row
from scipy.integrate import solve_ivp

import stiffcore.adapters.scipy as adapter
from stiffcore.problems import ROBER
from stiffcore.report import table

MU = 1e3


def vdp(t, y):
    return [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]]


def vdp_jac(t, y):
    return [[0.0, 1.0], [-2 * MU * y[0] * y[1] - 1.0, MU * (1 - y[0] ** 2)]]


PROBLEMS = {
    "ROBER to 1e8": dict(fun=ROBER.fun(), jac=ROBER.jac_fun(), span=(0.0, 1e8), y0=ROBER.y0, atol=1e-10),
    "Van der Pol mu=1e3": dict(fun=vdp, jac=vdp_jac, span=(0.0, 3000.0), y0=np.array([2.0, 0.0]), atol=1e-6),
}
METHODS = ["Kvaerno3", "Kvaerno4", "Kvaerno5", "TRBDF2"]
ANCHORS = ["Radau", "BDF"]


def run_ours(problem, name, rtol):
    cls = getattr(adapter, name)
    start = time.process_time()
    solver = cls(problem["fun"], problem["span"][0], problem["y0"], problem["span"][1], rtol=rtol,
                 atol=problem["atol"], jac=problem["jac"])
    while solver.status == "running":
        solver.step()
    cpu = time.process_time() - start
    return solver.status, solver.n_accepted, solver.n_failed, solver.nfev, cpu


def run_scipy(problem, name, rtol):
    start = time.process_time()
    sol = solve_ivp(problem["fun"], problem["span"], problem["y0"], method=name, rtol=rtol, atol=problem["atol"],
                    jac=problem["jac"])
    return ("finished" if sol.success else "failed"), sol.t.size - 1, "-", sol.nfev, time.process_time() - start


def main() -> None:
    headers = ["problem", "rtol", "method", "status", "steps", "failed Newton", "nfev", "CPU s"]
    rows = []
    for pname, problem in PROBLEMS.items():
        for rtol in (1e-4, 1e-6):
            for name in METHODS + ANCHORS:
                run = run_ours if name in METHODS else run_scipy
                status, steps, failed, nfev, cpu = run(problem, name, rtol)
                rows.append([pname, f"{rtol:.0e}", name, status, steps, failed, nfev, f"{cpu:.2f}"])
                stream_row(rows[-1])
    print()
    print(table(headers, rows))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, len(PROBLEMS), figsize=(10, 4))
        for ax, pname in zip(axes, PROBLEMS):
            for k, rtol in enumerate(("1e-04", "1e-06")):
                mine = [r for r in rows if r[0] == pname and r[1] == rtol]
                x = np.arange(len(mine)) + 0.4 * k
                ax.bar(x, [r[4] for r in mine], width=0.4, label=f"rtol {rtol}")
            ax.set_xticks(np.arange(len(mine)) + 0.2, [r[2] for r in mine], rotation=30, ha="right")
            ax.set_yscale("log")
            ax.set_ylabel("accepted steps")
            ax.set_title(pname)
            ax.legend()
        fig.suptitle("SciPy adapter DIRKs against SciPy's Radau and BDF")
        save(fig, out, "dirk_newton.png")


if __name__ == "__main__":
    main()
