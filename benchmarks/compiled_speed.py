"""Our adapters against the compiled stiff solvers users can install (#19), one process per
ecosystem, as ratios at equal achieved accuracy.

Problems: ROBER (50 log-spaced outputs to 1e5, parameters k1..k3), POLLU (50 outputs to 60,
its first three rate constants: diffsol-jax's compiler panics on the sensitivities of all 25)
and HIRES (IVP test set, 50 outputs to 321.8122, its rate constants 1.71, 280 and 8.32),
atol = 1e-4 rtol.  Accuracy is the weighted error at the outputs,
max |y - y_ref| / (atol + rtol |y_ref|), against SciPy Radau at rtol 1e-13 restarted at every
output; work-precision curves use it times rtol (the error at rtol 1), comparable across rtols.

- scipy: ``solve_ivp`` with our Rodas5P, RadauIIA5 and FBDF, SciPy's LSODA, and CVODE
  (scikit-sundae), all with the same Python right-hand side and analytic Jacobian (HIRES: none,
  every solver differences its own).  Best of 3 wall times, rtol 1e-4 ... 1e-10.
- jax: our Rodas5P, FBDF and RadauIIA5 under ``diffrax.diffeqsolve`` (``SaveAt(ts)``, default
  adjoint) against ``diffsol-jax`` (Rust BDF, forward sensitivities): warm ``jit`` solve and
  ``jit(grad)`` of sum(y^2) over the outputs w.r.t. the parameters (diffrax's default adjoint),
  and the same gradient in forward mode (``adjoint=diffrax.ForwardMode()``, ``jax.jacfwd``), which
  is what diffsol-jax's forward sensitivities compute, best of 5; compile time of solve + each
  gradient; accepted steps.
- torch: our rodas5p and fbdf through ``torchdiffeq.odeint`` (the adapter's method strings),
  solve and backprop gradient, best of 3; accepted steps, so the time per accepted step can be
  set against JAX's (the #19 target: within 3x).

Each ecosystem runs in its own process (``--ecosystem`` runs one and prints its JSON); the
parent prints every row, then the ratios: ours / anchor at the same rtol and at equal accuracy
(the anchor's time interpolated in log-log along its own curve to our error; "-" where its
curve does not reach it).  Writes benchmarks/out/compiled_speed_<problem>.png.

    pip install -e ".[all,bench]"      # scikit-sundae, diffsol-jax
    python benchmarks/compiled_speed.py [--quick] [--only scipy|jax|torch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import figure_tools, save

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import HIRES_RATES, HIRES_T1, HIRES_Y0, hires, step_end_reference  # noqa: E402  (the tests')

from stiffcore.problems import POLLU, ROBER  # noqa: E402
from stiffcore.problems import pollu, rober  # noqa: E402  (their mass-action networks)

ANCHORS = {"scipy": "CVODE", "jax": "diffsol-jax"}
def mass_action(network, fixed=()):
    """rhs(t, y, p, xp) of a mass-action network whose first len(p) rate constants are the
    parameters p and the rest ``fixed``.  For JAX it is written species by species in scalar
    operations: diffsol-jax lowers a traced function to DiffSL, which takes no matrix constants,
    so every JAX method gets this same function; numpy and torch get the network's own."""
    S, fixed = network.stoichiometry, np.asarray(fixed, dtype=float)

    def rhs(t, y, p, xp):
        if xp.__name__ != "jax.numpy":
            join = getattr(xp, "concatenate", None) or xp.cat
            return network.rhs(t, y, join([p, xp.asarray(fixed, dtype=p.dtype)]))
        rates = []
        for j, reactants in enumerate(network.reactants):
            r = p[j] if j < len(p) else float(fixed[j - len(p)])
            for i in reactants[reactants < network.n]:
                r = r * y[i]
            rates.append(r)
        return xp.stack([sum((float(S[i, j]) * rates[j] for j in np.flatnonzero(S[i])), 0.0 * y[0])
                         for i in range(network.n)])

    return rhs


#: name -> (rhs(t, y, p, xp), y0, p0, output times, numpy jac(t, y, p) or None)
PROBLEMS = {
    "ROBER": (mass_action(rober.NETWORK), ROBER.y0, ROBER.params, np.logspace(-5, 5, 50), ROBER.jac),
    # three parameters: diffsol-jax's compiler panics on POLLU's sensitivity system with all 25
    "POLLU": (mass_action(pollu.NETWORK, POLLU.params[3:]), POLLU.y0, POLLU.params[:3], np.linspace(1.2, 60.0, 50),
              lambda t, y, p: POLLU.jac(t, y, np.r_[p, POLLU.params[3:]])),
    "HIRES": (lambda t, y, p, xp: hires(t, y, xp, p), HIRES_Y0, HIRES_RATES, np.linspace(HIRES_T1 / 50, HIRES_T1, 50),
              None),
}


def weighted_error(ys, ref, rtol):
    atol = 1e-4 * rtol
    return float(np.max(np.abs(np.asarray(ys) - ref) / (atol + rtol * np.abs(ref))))


def best_of(repeats, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


# --- scipy -------------------------------------------------------------------------------

def run_scipy(name, rtols, repeats, anchor_rtols=None):
    from scipy.integrate import solve_ivp

    import stiffcore.adapters.scipy  # noqa: F401  (registers the method strings)

    rhs, y0, p, ts, jac = PROBLEMS[name]
    fun = lambda t, y: rhs(t, y, p, np)  # noqa: E731
    jac_fun = None if jac is None else (lambda t, y: jac(t, y, p))
    ref = reference(name)
    rows = []
    for method in ["Rodas5P", "RadauIIA5", "FBDF", "LSODA", "CVODE"]:
        for rtol in rtols:
            if method == "Rodas5P" and rtol < 1e-8:
                continue  # fourth-order estimate: tens of thousands of steps below 1e-8
            atol = 1e-4 * rtol
            if method == "CVODE":
                from sksundae.cvode import CVODE

                def rhs_cv(t, y, yp):
                    yp[:] = fun(t, y)

                def jac_cv(t, y, yp, J):
                    J[:, :] = jac_fun(t, y)

                options = dict(rtol=rtol, atol=atol, max_num_steps=10_000_000)
                if jac_fun is not None:
                    options["jacfn"] = jac_cv
                seconds, sol = best_of(repeats, lambda: CVODE(rhs_cv, **options).solve(np.r_[0.0, ts], y0))
                ys = sol.y[1:]
            else:
                extra = {"autonomous": True} if method == "Rodas5P" else {}
                seconds, sol = best_of(repeats, lambda: solve_ivp(fun, (0.0, ts[-1]), y0, method=method, t_eval=ts,
                                                                  rtol=rtol, atol=atol, jac=jac_fun, **extra))
                ys = sol.y.T
            rows.append(dict(problem=name, method=method, rtol=rtol, error=weighted_error(ys, ref, rtol),
                             solve=seconds, grad=None, compile=None, steps=None))
    return rows


# --- jax ---------------------------------------------------------------------------------

def run_jax(name, rtols, repeats, anchor_rtols):
    import diffrax
    import jax
    import jax.numpy as jnp

    import stiffcore.adapters.diffrax as dfx

    rhs, y0, p0, ts, _ = PROBLEMS[name]
    f = lambda t, y, p: rhs(t, y, p, jnp)  # noqa: E731
    # the scalar form diffsol-jax needs is the same function as the one the other adapters get
    np.testing.assert_allclose(f(0.0, jnp.asarray(y0), jnp.asarray(p0)), rhs(0.0, y0, p0, np), rtol=1e-13, atol=1e-300)
    p0, ts_j, y0_j = jnp.asarray(p0), jnp.asarray(ts), jnp.asarray(y0)
    ref = reference(name)
    rows = []
    for method in ["Rodas5P", "FBDF", "RadauIIA5", "diffsol-jax"]:
        for rtol in anchor_rtols if method == "diffsol-jax" else rtols:
            atol = 1e-4 * rtol
            if method == "diffsol-jax":
                from diffsol_jax import ODEProblem

                problem = ODEProblem(f, y0_j, p0)
                outputs = lambda p: problem.solve(p, ts_j, rtol=rtol, atol=atol)[1]  # noqa: E731
                solved = lambda p: (outputs(p), None)  # noqa: E731  (it reports no step count)
            else:
                solver = getattr(dfx, method)()

                def solution(p, solver=solver, rtol=rtol, atol=atol, adjoint=diffrax.RecursiveCheckpointAdjoint()):
                    return diffrax.diffeqsolve(diffrax.ODETerm(f), solver, 0.0, float(ts[-1]), None, y0_j, args=p,
                                               saveat=diffrax.SaveAt(ts=ts_j), max_steps=200_000, adjoint=adjoint,
                                               stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))

                # forward mode (diffrax.ForwardMode, jax.jacfwd): the tangents of the few parameters ride
                # in the same steps, as diffsol-jax's forward sensitivities do
                forward = lambda p, solution=solution: solution(p, adjoint=diffrax.ForwardMode()).ys  # noqa: E731

                def solved(p, solution=solution):   # the outputs and the accepted steps, in one solve
                    sol = solution(p)
                    return sol.ys, sol.stats["num_accepted_steps"]

                outputs = lambda p, solved=solved: solved(p)[0]  # noqa: E731
            solve = jax.jit(solved)
            grad = jax.jit(jax.grad(lambda p, outputs=outputs: jnp.sum(outputs(p) ** 2)))
            ours = method != "diffsol-jax"
            grad_fwd = jax.jit(jax.jacfwd(lambda p, forward=forward: jnp.sum(forward(p) ** 2))) if ours else None
            try:
                (ys, accepted), solve_compile = first_call(solve, p0)
                grad_compile = first_call(grad, p0)[1]
                fwd_compile = first_call(grad_fwd, p0)[1] if ours else None
            except Exception as exc:   # an anchor's own failure is reported, not fatal
                print(f"# jax {name} {method} rtol {rtol:g} fails: {str(exc)[:200]}", file=sys.stderr)
                continue
            solve_s, _ = best_of(repeats, lambda: jax.block_until_ready(solve(p0)))
            grad_s, _ = best_of(repeats, lambda: jax.block_until_ready(grad(p0)))
            fwd_s = best_of(repeats, lambda: jax.block_until_ready(grad_fwd(p0)))[0] if ours else None
            rows.append(dict(problem=name, method=method, rtol=rtol, error=weighted_error(ys, ref, rtol),
                             solve=solve_s, grad=grad_s, grad_fwd=fwd_s,
                             compile=solve_compile + grad_compile if ours else None,
                             compile_fwd=solve_compile + fwd_compile if ours else None,
                             steps=None if accepted is None else int(accepted)))
    return rows


# --- torch -------------------------------------------------------------------------------

def run_torch(name, rtols, repeats, anchor_rtols=None):
    import torch
    from torchdiffeq import odeint

    from stiffcore.adapters.torchdiffeq import SOLVERS

    torch.set_default_dtype(torch.float64)
    rhs, y0, p0, ts, _ = PROBLEMS[name]
    t = torch.as_tensor(np.r_[0.0, ts])
    y0_t = torch.as_tensor(y0)
    ref = reference(name)
    rows = []
    # "+compiled": options={"compile_step": True}, the step attempt as one torch.compile'd function
    for label in ["rodas5p", "rodas5p+compiled", "fbdf"]:
        method, options = label.split("+")[0], ({"compile_step": True} if label.endswith("+compiled") else {})
        for rtol in rtols:
            atol = 1e-4 * rtol

            def field(p):
                return lambda t, y: rhs(t, y, p, torch)

            def solve():
                with torch.no_grad():
                    return odeint(field(torch.as_tensor(p0)), y0_t, t, method=method, rtol=rtol, atol=atol,
                                  options=options)

            def gradient():
                p = torch.as_tensor(p0).clone().requires_grad_(True)
                ys = odeint(field(p), y0_t, t, method=method, rtol=rtol, atol=atol, options=options)
                return torch.autograd.grad((ys**2).sum(), p)[0]

            start = time.perf_counter()
            solve(), gradient()   # warm: the first call of a compiled step compiles it
            first = time.perf_counter() - start
            solve_s, ys = best_of(repeats, solve)
            grad_s, _ = best_of(repeats, gradient)   # the solve with its graph, then the backward pass
            solver = SOLVERS[method](field(torch.as_tensor(p0)), y0_t, rtol=rtol, atol=atol, **options)
            with torch.no_grad():
                solver.integrate(t)
            rows.append(dict(problem=name, method=label, rtol=rtol, error=weighted_error(ys[1:].numpy(), ref, rtol),
                             solve=solve_s, grad=grad_s, compile=max(first - solve_s - grad_s, 0.0),
                             steps=int(solver.n_steps)))
    return rows


_REFERENCES: dict = {}


def reference(name):
    if name not in _REFERENCES:
        rhs, y0, p, ts, jac = PROBLEMS[name]
        _REFERENCES[name] = step_end_reference(lambda t, y: rhs(t, y, p, np), y0, ts,
                                               jac=None if jac is None else (lambda t, y: jac(t, y, p)))
    return _REFERENCES[name]


RUNNERS = {"scipy": run_scipy, "jax": run_jax, "torch": run_torch}


def diffrax_loop_floor():
    """Seconds a step of ``diffeqsolve``'s loop costs with a trivial step (Tsit5 on y' = -y with
    PIDController, warm jit, best of 7): what no solver inside diffrax can go below."""
    import diffrax
    import jax
    import jax.numpy as jnp

    solve = jax.jit(lambda a: diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: -a * y), diffrax.Tsit5(), 0.0, 1.0,
                                                  0.01, jnp.ones(3), args=a, max_steps=1000,
                                                  stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12)))
    steps = int(jax.block_until_ready(solve(1.0)).stats["num_steps"])
    return best_of(7, lambda: jax.block_until_ready(solve(1.0)))[0] / steps


def run_ecosystem(ecosystem, quick):
    """All problems in this process; rows as JSON on the last line of stdout."""
    if ecosystem == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        print(f"# jax: diffrax's own loop costs {diffrax_loop_floor() * 1e6:.2f} us a step (Tsit5, PIDController, "
              "y' = -y, 3 unknowns): the floor under any diffrax solver's step", file=sys.stderr, flush=True)
    if ecosystem == "scipy":
        rtols = [1e-4, 1e-6, 1e-8] if quick else [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    else:
        rtols = [1e-6] if quick else [1e-6, 1e-8]
    # the anchor over a wider range, so its curve reaches our errors (equal-accuracy ratios)
    anchor_rtols = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8] if quick else [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    repeats = 1 if quick else (5 if ecosystem == "jax" else 3)
    rows = []
    for name in PROBLEMS:
        for row in RUNNERS[ecosystem](name, rtols, repeats, anchor_rtols):
            print(f"# {ecosystem} {name} {row['method']} rtol {row['rtol']:g}: error {row['error']:.3g}, "
                  f"{row['solve']:.4g} s", file=sys.stderr, flush=True)
            rows.append(dict(row, ecosystem=ecosystem))
    print(json.dumps(rows))


def first_call(fn, *args):
    """(fn(*args), seconds) of a jitted function's first call: its tracing and compilation."""
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def time_at_error(rows, problem, method, key, error):
    """``method``'s ``key`` time interpolated in log-log to ``error`` (x rtol) on its curve."""
    pts = sorted((r["error"] * r["rtol"], r[key]) for r in rows
                 if r["problem"] == problem and r["method"] == method and np.isfinite(r["error"]) and r[key])
    if len(pts) < 2 or not pts[0][0] <= error <= pts[-1][0]:
        return None
    e, t = np.log(np.array(pts)).T
    return float(np.exp(np.interp(np.log(error), e, t)))


def ratios(rows):
    """Ours / anchor at the same rtol and at equal accuracy, solve and gradient; torch's solve +
    gradient over JAX's (same problem, method, rtol), in all and per accepted step."""
    out = []
    for r in rows:
        anchor = ANCHORS.get(r["ecosystem"])
        if r["method"] == anchor or r["method"] == "LSODA":
            continue
        row = [r["ecosystem"], r["problem"], r["method"], r["rtol"], r["error"]]
        # our forward-mode gradient (JAX) against the anchor's gradient
        for key, anchor_key in (("solve", "solve"), ("grad", "grad"), ("grad_fwd", "grad")):
            if anchor is None or r.get(key) is None:
                row += [None, None]
                continue
            same = next((a for a in rows if a["ecosystem"] == r["ecosystem"] and a["problem"] == r["problem"]
                         and a["method"] == anchor and a["rtol"] == r["rtol"]), None)
            at_acc = time_at_error(rows, r["problem"], anchor, anchor_key, r["error"] * r["rtol"])
            row += [None if same is None else r[key] / same[anchor_key], None if at_acc is None else r[key] / at_acc]
        jax_twin = next((a for a in rows if a["ecosystem"] == "jax" and a["problem"] == r["problem"]
                         and a["method"].lower() == r["method"].split("+")[0] and a["rtol"] == r["rtol"]), None)
        if r["ecosystem"] == "torch" and jax_twin and jax_twin["steps"] and r["steps"]:
            total = lambda x: x["solve"] + x["grad"]  # noqa: E731
            row += [total(r) / total(jax_twin), (total(r) / r["steps"]) / (total(jax_twin) / jax_twin["steps"])]
        else:
            row += [None, None]
        out.append(row)
    return out


def plot(rows):
    tools = figure_tools()
    if tools is None:
        return
    plt, out = tools
    for problem in PROBLEMS:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        series = sorted({(r["ecosystem"], r["method"]) for r in rows if r["problem"] == problem})
        for k, (eco, method) in enumerate(series):
            pts = sorted((r["error"] * r["rtol"], r["solve"], r["grad"]) for r in rows
                         if r["problem"] == problem and r["ecosystem"] == eco and r["method"] == method)
            e, solve, grad = zip(*pts)
            style = "s--" if method in ANCHORS.values() or method == "LSODA" else "o-"
            look = dict(label=f"{eco} {method}", markersize=4, color=plt.cm.tab20(k % 20))
            axes[0].loglog(e, solve, style, **look)
            if all(g is not None for g in grad):
                axes[1].loglog(e, grad, style, **look)
            forward = sorted((r["error"] * r["rtol"], r.get("grad_fwd")) for r in rows if r["problem"] == problem
                             and r["ecosystem"] == eco and r["method"] == method and r.get("grad_fwd"))
            if forward:
                axes[1].loglog(*zip(*forward), "^:", **dict(look, label=f"{eco} {method} forward mode"))
        for ax, what in zip(axes, ("solve", "gradient")):
            ax.set(title=f"{problem}: {what}", xlabel="weighted error x rtol at the outputs", ylabel="seconds")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        save(fig, out, f"compiled_speed_{problem.lower()}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tolerances, one repeat")
    parser.add_argument("--only", choices=sorted(RUNNERS), help="one ecosystem")
    parser.add_argument("--ecosystem", choices=sorted(RUNNERS), help=argparse.SUPPRESS)  # a worker process
    args = parser.parse_args()
    if args.ecosystem:
        return run_ecosystem(args.ecosystem, args.quick)
    from stiffcore.report import table

    rows = []
    for ecosystem in [args.only] if args.only else ["scipy", "jax", "torch"]:
        command = [sys.executable, __file__, "--ecosystem", ecosystem] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    headers = ["ecosystem", "problem", "method", "rtol", "error", "solve s", "grad s", "fwd grad s", "compile s",
               "compile fwd s", "steps"]
    cells = [[r["ecosystem"], r["problem"], r["method"], r["rtol"], r["error"], r["solve"], r["grad"],
              r.get("grad_fwd"), r["compile"], r.get("compile_fwd"), r["steps"]] for r in rows]
    print(table(headers, cells, width=140))
    print()
    print("ours / anchor (scipy: CVODE, jax: diffsol-jax) at the same rtol and at equal accuracy; torch: "
          "solve + grad over JAX's, in all and per accepted step")
    print(table(["ecosystem", "problem", "method", "rtol", "error", "solve/rtol", "solve/acc", "grad/rtol",
                 "grad/acc", "fwd/rtol", "fwd/acc", "torch/jax", "per step"], ratios(rows), width=160))
    plot(rows)


if __name__ == "__main__":
    main()
