"""The diffrax adapter on ROBER and POLLU against diffrax's own Kvaerno5 and Kvaerno4.

ROBER (t in [0, 1e5], 50 log-spaced outputs) and POLLU (t in [0, 60], 20 outputs), rtol
1e-6 and 1e-8, atol = 1e-4 rtol, PIDController: accepted and rejected steps, achieved error
at the final time against the problem's reference (max relative error over components above
atol), and jit-compiled, warm wall times (best of 5) of the solve and of the gradient of
sum(y^2) with respect to log k.  "x K5" / "x K4" divide by Kvaerno5's / Kvaerno4's time in
the same run and rtol.  Writes benchmarks/out/diffrax_benchmark.png.

    python benchmarks/diffrax_benchmark.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import figure_tools, save  # noqa: E402

from stiffcore.adapters.diffrax import RadauIIA5, Rodas4, Rodas5P  # noqa: E402
from stiffcore.problems import POLLU, ROBER  # noqa: E402
from stiffcore.report import table  # noqa: E402

SOLVERS = {"RadauIIA5": RadauIIA5, "Rodas5P": Rodas5P, "Rodas4": Rodas4,
           "Kvaerno5": diffrax.Kvaerno5, "Kvaerno4": diffrax.Kvaerno4}
PROBLEMS = {"ROBER": (ROBER, np.logspace(-5, 5, 50)), "POLLU": (POLLU, np.linspace(3.0, 60.0, 20))}


def best_time(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))  # compile
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def run(problem, ts, name, rtol, repeats):
    logp = problem.log_parameterised()
    solver = SOLVERS[name]()
    t_end = float(ts[-1])
    ts = jnp.asarray(ts)

    def solve(q):
        return diffrax.diffeqsolve(diffrax.ODETerm(logp.rhs), solver, 0.0, t_end, 1e-6, jnp.asarray(problem.y0),
                                   args=q, saveat=diffrax.SaveAt(ts=ts), max_steps=200_000,
                                   stepsize_controller=diffrax.PIDController(rtol=rtol, atol=1e-4 * rtol))

    q = jnp.asarray(logp.params)
    solve_jit = jax.jit(solve)
    grad_jit = jax.jit(jax.grad(lambda q: (solve(q).ys ** 2).sum()))
    sol = solve_jit(q)
    ref = problem.reference[1]
    mask = np.abs(ref) > 1e-4 * rtol
    err = float(np.max(np.abs(np.asarray(sol.ys[-1]) - ref)[mask] / np.abs(ref[mask])))
    return dict(problem=problem.name, method=name, rtol=rtol, steps=int(sol.stats["num_accepted_steps"]),
                rejected=int(sol.stats["num_rejected_steps"]), err=err,
                solve=best_time(solve_jit, q, repeats=repeats), grad=best_time(grad_jit, q, repeats=repeats))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="rtol 1e-6 only, best of 2")
    args = parser.parse_args()
    rtols = [1e-6] if args.quick else [1e-6, 1e-8]
    repeats = 2 if args.quick else 5
    results = []
    for label, (problem, ts) in PROBLEMS.items():
        for rtol in rtols:
            for name in SOLVERS:
                results.append(run(problem, ts, name, rtol, repeats))
                print(results[-1], flush=True)
    rows = []
    for r in results:
        base = {k: next(x for x in results if x["problem"] == r["problem"] and x["rtol"] == r["rtol"]
                        and x["method"] == k) for k in ("Kvaerno5", "Kvaerno4")}
        rows.append([r["problem"], f"{r['rtol']:g}", r["method"], r["steps"], r["rejected"], f"{r['err']:.2g}",
                     f"{1e3 * r['solve']:.2f}", f"{1e3 * r['grad']:.2f}",
                     f"{r['solve'] / base['Kvaerno5']['solve']:.2f} / {r['grad'] / base['Kvaerno5']['grad']:.2f}",
                     f"{r['solve'] / base['Kvaerno4']['solve']:.2f} / {r['grad'] / base['Kvaerno4']['grad']:.2f}"])
    print("\nwarm jit timings, best of %d (ms); ratios solve / gradient" % repeats)
    print(table(["problem", "rtol", "method", "steps", "rejected", "error", "solve ms", "grad ms", "x K5", "x K4"],
                rows))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, len(PROBLEMS), figsize=(11, 4))
        for ax, label in zip(axes, PROBLEMS):
            for name in SOLVERS:
                sel = [r for r in results if r["problem"] == PROBLEMS[label][0].name and r["method"] == name]
                ax.loglog([r["err"] for r in sel], [1e3 * (r["solve"] + r["grad"]) for r in sel], "o-", label=name)
            ax.set(xlabel="achieved error", ylabel="solve + gradient (ms)", title=label)
        axes[0].legend()
        save(fig, out, "diffrax_benchmark.png")


if __name__ == "__main__":
    main()
