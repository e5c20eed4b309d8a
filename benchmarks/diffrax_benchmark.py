"""The diffrax adapter: stiff solvers against diffrax's Kvaerno5/Kvaerno4, and ReversibleAdjoint
against diffrax's adjoints on a neural ODE.

Part "stiff": ROBER (t in [0, 1e5], 50 log-spaced outputs) and POLLU (t in [0, 60], 20 outputs), rtol
1e-6 and 1e-8, atol = 1e-4 rtol, PIDController: accepted and rejected steps, achieved error
at the final time against the problem's reference (max relative error over components above
atol), and jit-compiled, warm wall times (best of 5) of the solve and of the gradient of
sum(y^2) with respect to log k.  "x K5" / "x K4" divide by Kvaerno5's / Kvaerno4's time in
the same run and rtol.  Writes benchmarks/out/diffrax_benchmark.png.

Part "memory": gradient of sum(y(1)^2) w.r.t. the weights of a neural ODE (MLP 2 -> 64 -> 64 -> 2,
tanh; ``--batch`` trajectories, default 1) over n = 1e3, 1e4, 1e5 constant steps on [0, 1]:
``Reversible(Tsit5())`` under ReversibleAdjoint, RecursiveCheckpointAdjoint (default
checkpoints, and checkpoints = n) and DirectAdjoint, all with max_steps = n, plus plain Tsit5
under the default adjoint for reference.  Memory is XLA's temporary allocation for the
compiled gradient (``memory_analysis()``; what the program allocates beyond its inputs and
outputs); time is warm, best of 2.  Writes benchmarks/out/diffrax_adjoint_memory.png.

    python benchmarks/diffrax_benchmark.py [--part stiff|memory|all] [--quick] [--batch B]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import figure_tools, save  # noqa: E402

from stiffcore.adapters.diffrax import RadauIIA5, Reversible, ReversibleAdjoint, Rodas4, Rodas5P  # noqa: E402
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


def stiff_part(quick: bool) -> None:
    rtols = [1e-6] if quick else [1e-6, 1e-8]
    repeats = 2 if quick else 5
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


REVERSIBLE_TSIT5 = Reversible(diffrax.Tsit5())
#: (label, solver, adjoint for n steps)
ADJOINTS = [
    ("ReversibleAdjoint", REVERSIBLE_TSIT5, lambda n: ReversibleAdjoint()),
    ("RecursiveCheckpoint (default)", REVERSIBLE_TSIT5, lambda n: diffrax.RecursiveCheckpointAdjoint()),
    ("RecursiveCheckpoint (checkpoints=n)", REVERSIBLE_TSIT5,
     lambda n: diffrax.RecursiveCheckpointAdjoint(checkpoints=n)),
    ("DirectAdjoint", REVERSIBLE_TSIT5, lambda n: diffrax.DirectAdjoint()),
    ("plain Tsit5, RecursiveCheckpoint", diffrax.Tsit5(), lambda n: diffrax.RecursiveCheckpointAdjoint()),
]


def adjoint_case(label, solver, adjoint, n, batch):
    """Compile the gradient for n steps; XLA's temporary allocation, compile time, warm time."""
    mlp = eqx.nn.MLP(2, 2, 64, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(mlp, eqx.is_array)
    term = diffrax.ODETerm(lambda t, y, net: jax.vmap(net)(y))
    y0 = jax.random.normal(jax.random.PRNGKey(1), (batch, 2))

    def loss(p):
        sol = diffrax.diffeqsolve(term, solver, 0.0, 1.0, 1.0 / n, y0, args=eqx.combine(p, static),
                                  adjoint=adjoint, max_steps=n)
        return jnp.sum(sol.ys ** 2)

    start = time.perf_counter()
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    compile_s = time.perf_counter() - start
    grads = compiled(params)
    flat = jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(grads)])
    return dict(adjoint=label, n=n, mib=compiled.memory_analysis().temp_size_in_bytes / 2 ** 20,
                compile=compile_s, time=best_time(compiled, params, repeats=2), grad=np.asarray(flat))


def memory_part(quick: bool, batch: int) -> None:
    import warnings

    steps = [1000, 10000] if quick else [1000, 10000, 100000]
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # growth warnings: the gradient column checks accuracy
        for n in steps:
            for label, solver, adjoint in ADJOINTS:
                results.append(adjoint_case(label, solver, adjoint(n), n, batch))
                r = results[-1]
                print(f"{n:>7} {label:<36} {r['mib']:9.3f} MiB  compile {r['compile']:6.1f} s  "
                      f"gradient {r['time']:8.3f} s", flush=True)
    rows = []
    for r in results:
        ours = next(x for x in results if x["n"] == r["n"] and x["adjoint"] == "ReversibleAdjoint")
        default = next(x for x in results if x["n"] == r["n"] and x["adjoint"] == "RecursiveCheckpoint (default)")
        differs = np.max(np.abs(r["grad"] - ours["grad"])) / np.max(np.abs(ours["grad"]))
        rows.append([f"{r['n']:.0e}", r["adjoint"], f"{r['mib']:.3f}", f"{r['time']:.3f}",
                     f"{r['time'] / default['time']:.2f}", f"{differs:.1e}"])
    print(f"\nNeural ODE gradient (MLP 2-64-64-2, batch {batch}), Reversible(Tsit5()) unless noted; "
          "XLA temporary MiB; warm seconds; time / RecursiveCheckpoint (default); "
          "max |grad - ReversibleAdjoint's| / max |grad|")
    print(table(["steps", "adjoint", "MiB", "seconds", "x RCA default", "grad differs"], rows))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for label, _, _ in ADJOINTS:
            sel = [r for r in results if r["adjoint"] == label]
            axes[0].loglog([r["n"] for r in sel], [max(r["mib"], 1e-3) for r in sel], "o-", label=label)
            axes[1].loglog([r["n"] for r in sel], [r["time"] for r in sel], "o-", label=label)
        axes[0].set(xlabel="steps", ylabel="XLA temporary memory (MiB)")
        axes[1].set(xlabel="steps", ylabel="gradient wall time (s)")
        axes[0].legend(fontsize=7)
        save(fig, out, "diffrax_adjoint_memory.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="rtol 1e-6 only, best of 2; up to 1e4 steps")
    parser.add_argument("--part", choices=["stiff", "memory", "all"], default="all")
    parser.add_argument("--batch", type=int, default=1, help="neural ODE trajectories per gradient")
    args = parser.parse_args()
    if args.part in ("stiff", "all"):
        stiff_part(args.quick)
    if args.part in ("memory", "all"):
        memory_part(args.quick, args.batch)


if __name__ == "__main__":
    main()
