"""Gradients on real kinetic mechanisms: every stiffcore gradient path against CasADi's CVODES
forward sensitivities and finite differences, with time, peak memory and error.

    python benchmarks/mechanism_gradients.py [--mechanisms gri30,h2o2] [--skip-torch] [--skip-jax]

Paths: SciPy ``solve_ivp_sensitivity`` (forward, reverse), torch backprop through ``odeint``
(``recompute_steps`` on), JAX ``jit(grad)`` through ``diffeqsolve`` (warm; its compile time in
its own column).  Mechanisms come from Cantera (the ``bench`` extra; never a library dependency): GRI-Mech 3.0
(53 species, 325 rate constants) and h2o2 (10 species, 29), isothermal at 1500 K and 1 atm,
exported by :func:`stiffcore.problems.cantera.from_cantera`.  The loss is sum(y^2) over 20
log-spaced output times; the parameters are the forward rate constants.  Each row runs in a
fresh process, so ``peak MiB`` (VmHWM) is that configuration's own.  The error is
||g - g_ref|| / ||g_ref|| against SciPy RadauIIA5's discrete adjoint at rtol 1e-10 (checked
against CVODES at rtol 1e-10 in the same table).  A second table: SciPy forward and reverse
sensitivities against the number of parameters P at fixed n (GRI, the first P rate
constants) and against n at fixed P = 1 (1D Brusselator, sparse jac).  A third: the memory torch
backpropagation holds a step on GRI, with and without ``recompute_steps``.  Writes
``benchmarks/out/mechanism_gradients.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import compiled_and_warm, figure_tools, process_status_kib, save, stream_row  # noqa: E402

RTOL, ATOL = 1e-6, 1e-10
MECHANISMS = {"gri30": ("gri30.yaml", "CH4:1, O2:2, N2:7.52", (-5, -1)),
              "h2o2": ("h2o2.yaml", "H2:2, O2:1, N2:3.76", (-7, -3))}


def mechanism(name):
    import cantera as ct

    from stiffcore.problems.cantera import from_cantera

    file, mixture, (lo, hi) = MECHANISMS[name]
    gas = ct.Solution(file)
    gas.TPX = 1500.0, 101325.0, mixture
    return from_cantera(gas, (0.0, 10.0 ** hi), name=name), np.logspace(lo, hi, 20)


def loss(Y):
    return (Y ** 2).sum()


# --- one configuration, in its own process ---------------------------------------------------
def run_scipy(problem, times, method, mode, rtol=RTOL, atol=ATOL):
    from stiffcore.adapters.scipy import solve_ivp_sensitivity

    start = time.perf_counter()
    r = solve_ivp_sensitivity(problem.rhs, problem.t_span, problem.y0, problem.params, method=method, mode=mode,
                              t_eval=times, loss=loss, loss_grad=lambda Y: 2 * Y, jac=problem.jac,
                              jac_p=problem.jac_p, rtol=rtol, atol=atol)
    seconds = time.perf_counter() - start
    grad = r.grad if mode == "reverse" else np.einsum("it,ipt->p", 2 * r.y, r.sensitivities)
    return seconds, grad, len(r.t_steps) - 1


def run_solve(problem, times, method):
    from scipy.integrate import solve_ivp

    from stiffcore.adapters.scipy import solver_class

    p = problem.params
    start = time.perf_counter()
    s = solve_ivp(lambda t, y: problem.rhs(t, y, p), problem.t_span, problem.y0, method=solver_class(method),
                  jac=lambda t, y: problem.jac(t, y, p), t_eval=times, rtol=RTOL, atol=ATOL)
    return time.perf_counter() - start, None, s.t.size


def resident_bytes() -> int:
    """This process's resident set after a collection and ``malloc_trim`` (freed heap handed
    back, so what remains is what is held)."""
    import ctypes
    import gc
    import os

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_torch(problem, times, method, **options):
    """Backpropagation through ``odeint``: (seconds of solve and backward, gradient, accepted
    steps, bytes the graph holds after the forward pass)."""
    import torch
    from torchdiffeq import odeint

    import stiffcore.adapters.torchdiffeq  # noqa: F401

    torch.set_num_threads(1)

    class Kinetics(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor(problem.params, dtype=torch.float64))
            self.steps = 0

        def callback_accept_step(self, t, y, h):
            self.steps += 1

        def forward(self, t, y):
            return problem.rhs(t, y, self.p)

    func = Kinetics()
    t = torch.tensor(np.r_[0.0, times], dtype=torch.float64)
    y0 = torch.tensor(problem.y0, dtype=torch.float64)
    before = resident_bytes()
    start = time.perf_counter()
    sol = odeint(func, y0, t, method=method, rtol=RTOL, atol=ATOL, options=options)
    forward_s = time.perf_counter() - start
    graph = resident_bytes() - before
    start = time.perf_counter()
    ((sol[1:] ** 2).sum()).backward()
    return forward_s + time.perf_counter() - start, func.p.grad.numpy(), func.steps, graph


def run_jax(problem, times, method):
    """The diffrax adapter: jit(grad) of the loss through diffeqsolve (discretise-then-optimise,
    diffrax's RecursiveCheckpointAdjoint); the time of a warm call, the compile time apart."""
    import diffrax
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from stiffcore.adapters import diffrax as adapter

    term = diffrax.ODETerm(lambda t, y, p: problem.rhs(t, y, p))

    def solve(p):
        sol = diffrax.diffeqsolve(term, getattr(adapter, method)(), 0.0, float(times[-1]), None,
                                  jnp.asarray(problem.y0), args=p, saveat=diffrax.SaveAt(ts=jnp.asarray(times)),
                                  max_steps=100_000, stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL))
        return jnp.sum(sol.ys ** 2), sol.stats["num_accepted_steps"]

    compile_s, seconds, (grad, steps) = compiled_and_warm(jax.jit(jax.grad(solve, has_aux=True)),
                                                          jnp.asarray(problem.params))
    return seconds, np.asarray(grad), int(steps), compile_s


def run_casadi(problem, times, rtol=RTOL, atol=ATOL):
    """CVODES forward sensitivities (CasADi's jacobian of the outputs with respect to p)."""
    import casadi as ca

    kinetics = problem.rhs.__self__                            # from_cantera's kinetics object
    net = kinetics.network
    y, p = ca.SX.sym("y", problem.y0.size), ca.SX.sym("p", problem.params.size)
    r = p[kinetics.reaction.tolist()] * ca.DM(kinetics.factor)
    padded = ca.vertcat(y, 1)
    for column in net.reactants.T:
        r = r * padded[column.tolist()]
    rhs = ca.mtimes(ca.DM(net.stoichiometry), r)
    F = ca.integrator("F", "cvodes", {"x": y, "p": p, "ode": rhs}, 0.0, list(times),
                      {"abstol": atol, "reltol": rtol, "max_num_steps": 1_000_000})
    q = ca.MX.sym("q", problem.params.size)
    Y = F(x0=problem.y0, p=q)["xf"]
    S = ca.Function("S", [q], [ca.jacobian(Y, q), Y])
    start = time.perf_counter()
    jac, Yv = S(problem.params)
    seconds = time.perf_counter() - start
    jac, Yv = np.asarray(jac), np.asarray(Yv)                    # (n * outputs, P), column-major Y
    return seconds, (2 * Yv.ravel(order="F")) @ jac, None


def run_differences(problem, times, chosen):
    """Central differences of tight SciPy RadauIIA5 solves for the parameters ``chosen`` (all
    of them would be 2P solves)."""
    from scipy.integrate import solve_ivp

    from stiffcore.adapters.scipy import solver_class

    def L(q):
        s = solve_ivp(lambda t, y: problem.rhs(t, y, q), problem.t_span, problem.y0, method=solver_class("RadauIIA5"),
                      jac=lambda t, y: problem.jac(t, y, q), t_eval=times, rtol=1e-11, atol=1e-15)
        return loss(s.y)

    start = time.perf_counter()
    grad = np.full(problem.params.size, np.nan)
    for j in chosen:
        e = np.zeros(problem.params.size)
        e[j] = 1e-5 * problem.params[j]
        grad[j] = (L(problem.params + e) - L(problem.params - e)) / (2 * e[j])
    return time.perf_counter() - start, grad, None


def one(config: dict) -> dict:
    problem, times = mechanism(config["mechanism"])
    kind, compile_s, graph = config["kind"], None, None
    if kind == "solve":
        seconds, grad, steps = run_solve(problem, times, config["method"])
    elif kind == "scipy":
        seconds, grad, steps = run_scipy(problem, times, config["method"], config["mode"], *config.get("tol", ()))
    elif kind == "torch":
        times = times[times <= config.get("until", times[-1])]
        seconds, grad, steps, graph = run_torch(problem, times, config["method"], **config.get("options", {}))
    elif kind == "jax":
        seconds, grad, steps, compile_s = run_jax(problem, times, config["method"])
    elif kind == "casadi":
        seconds, grad, steps = run_casadi(problem, times, *config.get("tol", ()))
    else:
        seconds, grad, steps = run_differences(problem, times, config["chosen"])
    return dict(seconds=seconds, compile=compile_s, graph=graph, peak=process_status_kib("VmHWM") / 1024, steps=steps,
                grad=None if grad is None else np.asarray(grad, dtype=float).tolist())


def spawn(config: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(config)], capture_output=True, text=True)
    if out.returncode != 0:
        return dict(error=out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the tables -------------------------------------------------------------------------------
def mechanism_table(name: str, with_torch: bool, with_jax: bool) -> list:
    from stiffcore.report import table

    reference = spawn(dict(mechanism=name, kind="scipy", method="RadauIIA5", mode="reverse", tol=(1e-10, 1e-14)))
    g_ref = np.array(reference["grad"])
    params = mechanism(name)[0].params
    largest = np.argsort(-np.abs(g_ref * params))[:8].tolist()       # the 8 largest d/dlog p
    configs = [("solve", "SciPy RadauIIA5 solve", dict(kind="solve", method="RadauIIA5")),
               ("solve", "SciPy Rodas5P solve", dict(kind="solve", method="Rodas5P"))]
    for method in ("RadauIIA5", "Rodas5P"):
        for mode in ("forward", "reverse"):
            configs.append((mode, f"SciPy {method} {mode}", dict(kind="scipy", method=method, mode=mode)))
    if with_torch:
        for method in ("rodas5p", "radau_iia5"):
            configs.append(("reverse", f"torch {method} backprop", dict(kind="torch", method=method)))
    if with_jax:
        configs.append(("reverse", "JAX Rodas5P jit(grad), warm", dict(kind="jax", method="Rodas5P")))
    configs += [("forward", "CVODES (CasADi) fwd sens rtol 1e-6", dict(kind="casadi")),
                ("forward", "CVODES (CasADi) fwd sens rtol 1e-10", dict(kind="casadi", tol=(1e-10, 1e-14))),
                ("check", "central differences, 8 largest", dict(kind="differences", chosen=largest))]
    rows, solve_s = [], None
    for mode, label, config in configs:
        result = spawn(dict(mechanism=name, **config))
        if "error" in result:
            row = [name, label, "failed", None, None, None, None, result["error"][:60]]
        else:
            if label == "SciPy RadauIIA5 solve":
                solve_s = result["seconds"]
            err = None
            if result["grad"] is not None:
                g = np.array(result["grad"])
                mask = np.isfinite(g)
                err = float(np.linalg.norm(g[mask] - g_ref[mask]) / np.linalg.norm(g_ref[mask]))
            row = [name, label, result["seconds"], None if solve_s is None else result["seconds"] / solve_s,
                   result["compile"], result["peak"], result["steps"], err]
        stream_row(row)
        rows.append(row)
    print(table(["mechanism", "gradient path", "seconds", "x RadauIIA5 solve", "compile s", "peak MiB", "steps",
                 "rel. error vs ref"], rows))
    return rows


def torch_memory_table(name: str) -> list:
    """What torch backpropagation holds a step: the graph's bytes after the forward pass to
    1e-3 s and to the end, their difference over the difference in steps (the first step's
    graph, kept whatever the option, cancels), against 4 x the state and stages."""
    from stiffcore import get_method
    from stiffcore.report import table

    n = mechanism(name)[0].y0.size
    rows = []
    for method in ("rodas5p", "radau_iia5"):
        for recompute in (False, True):
            short, full = (spawn(dict(mechanism=name, kind="torch", method=method, until=until,
                                      options=dict(recompute_steps=recompute))) for until in (1e-3, 1.0))
            per_step = (full["graph"] - short["graph"]) / (full["steps"] - short["steps"])
            target = 4 * (1 + get_method(method).stages) * n * 8
            row = [name, method, recompute, full["steps"], full["graph"] / 2**20, per_step / 1024, target / 1024,
                   full["seconds"]]
            stream_row(row)
            rows.append(row)
    print(table(["mechanism", "method", "recompute_steps", "steps", "graph MiB", "KiB a step",
                 "target KiB (4 x state and stages)", "solve + backward s"], rows))
    return rows


def scaling_table() -> list:
    """SciPy forward vs reverse: against P at fixed n (GRI's first P rate constants) and
    against n at fixed P = 1 (1D Brusselator, sparse jac, parameter A)."""
    from stiffcore.adapters.scipy import solve_ivp_sensitivity
    from stiffcore.problems.large import brusselator_1d
    from stiffcore.report import table

    rows = []
    problem, times = mechanism("gri30")
    for P in (1, 10, 100, problem.params.size):
        chosen = np.arange(P)

        def fun(t, y, q):
            p = problem.params.astype(np.result_type(q, float)).copy()
            p[chosen] = q
            return problem.rhs(t, y, p)

        def jac(t, y, q):
            p = problem.params.astype(np.result_type(q, float)).copy()
            p[chosen] = q
            return problem.jac(t, y, p)

        def jac_p(t, y, q):
            return problem.jac_p(t, y, problem.params)[:, chosen]

        row = ["GRI n = 53", P]
        for mode in ("forward", "reverse"):
            start = time.perf_counter()
            solve_ivp_sensitivity(fun, problem.t_span, problem.y0, problem.params[chosen], method="RadauIIA5",
                                  mode=mode, t_eval=times, loss=loss, loss_grad=lambda Y: 2 * Y, jac=jac,
                                  jac_p=jac_p, rtol=RTOL, atol=ATOL)
            row.append(time.perf_counter() - start)
        stream_row(row)
        rows.append(row)
    for N in (32, 128, 512, 2048):
        fun, jac, jac_p, y0 = brusselator_1d(N)
        row = [f"Brusselator n = {2 * N}", 1]
        for mode in ("forward", "reverse"):
            start = time.perf_counter()
            solve_ivp_sensitivity(fun, (0.0, 10.0), y0, [1.0], method="RadauIIA5", mode=mode, t_eval=[10.0],
                                  loss=loss, loss_grad=lambda Y: 2 * Y, jac=jac, jac_p=jac_p, rtol=RTOL, atol=1e-9)
            row.append(time.perf_counter() - start)
        stream_row(row)
        rows.append(row)
    print(table(["problem", "P", "forward s", "reverse s"], rows))
    return rows


def plot(results: dict, scaling: list) -> None:
    tools = figure_tools()
    if tools is None:
        return
    plt, out = tools
    fig, axes = plt.subplots(1, len(results) + 1, figsize=(5 * (len(results) + 1), 4))
    for ax, (name, rows) in zip(axes, results.items()):
        done = [r for r in rows if isinstance(r[2], float)]
        ax.barh([r[1] for r in done], [r[2] for r in done])
        ax.set_xscale("log")
        ax.set_xlabel("seconds")
        ax.set_title(name)
    ax = axes[-1]
    gri = [r for r in scaling if r[0].startswith("GRI")]
    ax.loglog([r[1] for r in gri], [r[2] for r in gri], "o-", label="forward, GRI vs P")
    ax.loglog([r[1] for r in gri], [r[3] for r in gri], "s-", label="reverse, GRI vs P")
    ax.set_xlabel("parameters P")
    ax.set_ylabel("seconds")
    ax.legend()
    save(fig, out, "mechanism_gradients.png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mechanisms", default="gri30,h2o2")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-jax", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    results = {name: mechanism_table(name, not args.skip_torch, not args.skip_jax)
               for name in args.mechanisms.split(",")}
    if not args.skip_torch:
        torch_memory_table("gri30")
    plot(results, scaling_table())


if __name__ == "__main__":
    main()
