"""Large stiff systems: time, peak memory and accuracy against size, with CVODE in the same run.

Problems (:mod:`stiffcore.problems.large`): BRUSS-2D on m x m periodic grids (2 m^2
unknowns, t in [0, 11.5]) and ROBER in independent copies (3 copies unknowns, t in [0, 40]).
Each case runs in a fresh process, so its peak resident memory is its own.  Rows:

* ``scipy Rodas5P sparse`` / ``scipy RadauIIA5 sparse`` / ``scipy FBDF sparse`` /
  ``scipy QNDF sparse``: ``jac_sparsity`` (SuperLU; FBDF/QNDF keep one factorisation over many steps);
* ``scipy Rodas5P gmres`` / ``scipy FBDF gmres``: matrix-free (difference quotients, no preconditioner);
* ``jax Rodas5P SparseLU`` / ``jax FBDF SparseLU`` / ``jax QNDF SparseLU`` / ``jax RadauIIA5
  SparseLU`` (``split``: ``split_stages=True``, its stages as one real and one complex n x n
  system): diffrax with
  :class:`~stiffcore.adapters.diffrax.SparseLU`
  (coloured JVPs, SuperLU on the host); solve time after compilation, compile time apart;
  ``+grad`` adds (in its own process, so the solve's memory stays its own) the gradient of
  sum(y(T)^2) with respect to a parameter (diffusion scale / k1) by diffrax's default adjoint;
* ``jax Rodas5P dense`` / ``jax RadauIIA5 dense`` (``split`` as above): the default dense LU,
  up to 2,048 unknowns;
* ``torch Rodas5P sparse`` / ``torch RadauIIA5 sparse`` / ``torch FBDF sparse`` / ``torch QNDF
  sparse`` (``jac_sparsity``; after a short warm-up solve), ``+grad`` (backward through the
  solve), ``torch Rodas5P gmres`` / ``torch FBDF gmres`` (matrix-free, unpreconditioned: up
  to 512 unknowns);
* ``CVODE sparse`` / ``CVODE band``: SUNDIALS CVODE (BDF) through scikit-sundae (band up
  to 2,048 unknowns: the periodic grid's band is the whole matrix);
* ``CasADi CVODES`` (CasADi's CVODES with its default linear solver, the model as SX
  expressions), ``+grad`` by CasADi's own sensitivities (CVODES adjoints);
* ``pydiffsol BDF sparse`` (diffsol's BDF, faer sparse LU, the model in DiffSL), ROBER only,
  ``+sens`` by forward sensitivities.

Accuracy: RMS of the error weighted by atol + rtol |y| at T, against CVODE at rtol 1e-10.
The time exponent is fitted from the two largest sizes.  Writes benchmarks/out/large_systems.png.

    pip install -e ".[all,bench]"
    python benchmarks/large_systems.py [--full] [--only TEXT]
    # --full adds m = 128 (32,768 unknowns); --only "scipy" runs the backends naming scipy;
    # --largest: BRUSS-2D at the largest size only
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

RTOL, ATOL = {"bruss2d": (1e-6, 1e-6), "rober": (1e-6, 1e-10)}, None
T_END = {"bruss2d": 11.5, "rober": 40.0}
#: the torch rows' method strings
TORCH_METHODS = {"Rodas5P": "rodas5p", "RadauIIA5": "radau_iia5", "FBDF": "fbdf", "QNDF": "qndf"}


def problem(name: str, size: int, xp=np):
    from stiffcore.problems import large

    if name == "bruss2d":
        return large.bruss2d(size, xp), large.bruss2d_y0(size), large.bruss2d_sparsity(size), [1.1]
    return large.rober_copies(size, xp), large.rober_copies_y0(size), large.rober_copies_sparsity(size), []


def bandwidth(S) -> int:
    rows, cols = S.nonzero()
    return int(np.max(np.abs(rows - cols)))


def run_case(case):
    """(seconds, peak RSS in MiB, y(T), steps, compile s, gradient s) of one case, in this process."""
    from _common import compiled_and_warm, process_status_kib

    name, size, backend = case
    rtol, atol = RTOL[name]
    t_end = T_END[name]
    compile_s = grad_s = None
    if backend.startswith("jax"):
        import diffrax
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        import stiffcore.adapters.diffrax as dfx

        f, y0, S, jumps = problem(name, size, jnp)
        cls = getattr(dfx, backend.split()[1])
        kw = dict(split_stages=True) if "split" in backend else {}
        solver = cls(linear_solver=dfx.SparseLU(S), **kw) if "SparseLU" in backend else cls(**kw)

        def solve(p):
            return diffrax.diffeqsolve(
                diffrax.ODETerm(lambda t, y, a: f(t, y, a)), solver, 0.0, t_end, None, jnp.asarray(y0), args=p,
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=jumps or None),
                saveat=diffrax.SaveAt(t1=True), max_steps=4096)  # the default adjoint keeps max_steps states

        p0 = 1.0 if name == "bruss2d" else 0.04
        def final(p):
            sol = solve(p)
            return sol.ys[-1], sol.stats["num_steps"]

        compile_s, seconds, (y, steps) = compiled_and_warm(jax.jit(final), p0)
        if "grad" in backend:
            _, grad_s, _ = compiled_and_warm(jax.jit(jax.grad(lambda p: jnp.sum(solve(p).ys[-1] ** 2))), p0)
        y, steps = np.asarray(y), int(steps)
    elif backend.startswith("torch"):
        import torch
        from torchdiffeq import odeint

        import stiffcore.adapters.torchdiffeq  # noqa: F401  (registers the methods)

        f, y0, S, jumps = problem(name, size, torch)
        method = TORCH_METHODS[backend.split()[1]]
        opts = dict(linear_solver="gmres") if "gmres" in backend else dict(jac_sparsity=S)
        if jumps:
            opts["jump_t"] = torch.tensor(jumps, dtype=torch.float64)
        p = torch.tensor(1.0 if name == "bruss2d" else 0.04, dtype=torch.float64, requires_grad=True)
        ts = torch.tensor([0.0, t_end], dtype=torch.float64)
        with torch.no_grad():   # warm-up (torch.func's first use, ~1 s), as JAX's compilation is kept apart
            odeint(lambda t, y: f(t, y, p), torch.tensor(y0), ts * 1e-3, method=method, rtol=rtol, atol=atol,
                   options=opts)
        with torch.no_grad():
            start = time.perf_counter()
            ys = odeint(lambda t, y: f(t, y, p), torch.tensor(y0), ts, method=method, rtol=rtol, atol=atol,
                        options=opts)
            seconds = time.perf_counter() - start
        y, steps = ys[-1].numpy(), None
        if "grad" in backend:
            start = time.perf_counter()
            ys = odeint(lambda t, y: f(t, y, p), torch.tensor(y0), ts, method=method, rtol=rtol, atol=atol,
                        options=opts)
            torch.autograd.grad((ys[-1] ** 2).sum(), p)
            grad_s = time.perf_counter() - start
    elif backend.startswith("scipy"):
        from scipy.integrate import solve_ivp

        import stiffcore.adapters.scipy as S_

        f, y0, S, jumps = problem(name, size)
        method = backend.split()[1]
        opts = dict(linear_solver="gmres") if "gmres" in backend else dict(jac_sparsity=S)
        # the source switching on: multistep histories restart there, one-step methods land on it
        opts.update(jumps=jumps) if method in ("FBDF", "QNDF") else opts.update(tstops=jumps)
        start = time.perf_counter()
        sol = solve_ivp(f, (0.0, t_end), y0, method=getattr(S_, method), rtol=rtol, atol=atol, **opts)
        seconds = time.perf_counter() - start
        y, steps = (sol.y[:, -1] if sol.success else np.full(y0.size, np.nan)), sol.t.size - 1
    elif backend.startswith("CasADi"):
        seconds, y, grad_s = _run_casadi(name, size, rtol, atol, t_end, "grad" in backend)
        steps = None
    elif backend.startswith("pydiffsol"):
        seconds, y, grad_s = _run_pydiffsol(size, rtol, atol, t_end, "sens" in backend)
        steps = None
    else:
        from sksundae.cvode import CVODE

        f, y0, S, jumps = problem(name, size)
        tight = backend == "reference"
        opts = (dict(linsolver="band", lband=bandwidth(S), uband=bandwidth(S)) if "band" in backend
                else dict(linsolver="sparse", sparsity=S))

        def rhs(t, y, yp):
            yp[:] = f(t, y)

        solver = CVODE(rhs, rtol=1e-10 if tight else rtol, atol=(1e-12 if name == "rober" else 1e-10) if tight
                       else atol, max_num_steps=1_000_000, **opts)
        start = time.perf_counter()
        steps, y = 0, y0
        for a, b in zip([0.0, *jumps], [*jumps, t_end]):  # restart at the source switching on, as the others do
            sol = solver.solve([a, b], y)
            y, steps = sol.y[-1], steps + int(sol.nst if hasattr(sol, "nst") else len(sol.t))
        seconds = time.perf_counter() - start
    peak = process_status_kib("VmHWM") / 1024
    return seconds, peak, np.asarray(y), steps, compile_s, grad_s


def _casadi_model(name: str, size: int):
    """(state, parameters, right-hand side) as CasADi SX: scalar expressions, which CasADi
    evaluates fastest.  Parameters: (diffusion scale, source on) for BRUSS-2D, (k1,) for ROBER."""
    import casadi as ca
    import scipy.sparse as sp

    from stiffcore.problems.large import BRUSS2D_ALPHA

    if name == "rober":
        y, p = ca.SX.sym("y", 3 * size), ca.SX.sym("p", 1)
        a, b, c = y[0::3], y[1::3], y[2::3]
        da, dc = -p[0] * a + 1e4 * b * c, 3e7 * b * b
        return y, p, ca.reshape(ca.horzcat(da, -da - dc, dc).T, 3 * size, 1)
    m, N = size, size * size
    ring = sp.diags([1.0, 1.0], [-1, 1], shape=(m, m)).tolil()
    ring[0, m - 1] = ring[m - 1, 0] = 1.0
    L = (sp.kron(ring, sp.identity(m)) + sp.kron(sp.identity(m), ring) - 4 * sp.identity(N)).tocsc()
    L = L * (BRUSS2D_ALPHA * m * m)
    L = ca.DM(ca.Sparsity(N, N, L.indptr.tolist(), L.indices.tolist()), L.data.tolist())
    x = np.arange(m) / m
    X, Y = np.meshgrid(x, x, indexing="ij")
    disc = ca.DM(((X - 0.3) ** 2 + (Y - 0.6) ** 2 <= 0.01).astype(float).ravel())
    y, p = ca.SX.sym("y", 2 * N), ca.SX.sym("p", 2)
    u, v = y[0::2], y[1::2]
    uuv = u * u * v
    du = 1 + uuv - 4.4 * u + p[0] * ca.mtimes(L, u) + 5.0 * p[1] * disc
    dv = 3.4 * u - uuv + p[0] * ca.mtimes(L, v)
    return y, p, ca.reshape(ca.horzcat(du, dv).T, 2 * N, 1)


def _run_casadi(name, size, rtol, atol, t_end, gradient):
    """CasADi's CVODES (its default linear solver); the gradient of sum(y(T)^2) by CasADi's
    own choice of sensitivities (CVODES adjoints for one scalar output)."""
    import casadi as ca

    y, p, rhs = _casadi_model(name, size)
    y0 = problem(name, size)[1]
    opts = {"abstol": atol, "reltol": rtol, "max_num_steps": 1_000_000}
    pieces = [(0.0, 1.1, 0.0), (1.1, t_end, 1.0)] if name == "bruss2d" else [(0.0, t_end, None)]
    integrators = [ca.integrator(f"F{i}", "cvodes", {"x": y, "p": p, "ode": rhs}, a, b, opts)
                   for i, (a, b, _) in enumerate(pieces)]

    def final(param):
        x = y0
        for F, (_, _, on) in zip(integrators, pieces):
            x = F(x0=x, p=param if on is None else ca.vertcat(param, on))["xf"]
        return x

    p0 = 1.0 if name == "bruss2d" else 0.04
    start = time.perf_counter()
    out = np.asarray(final(p0)).ravel()
    seconds = time.perf_counter() - start
    grad_s = None
    if gradient:
        a = ca.MX.sym("a")  # the integrators are MX functions
        G = ca.Function("G", [a], [ca.gradient(ca.sumsqr(final(a)), a)])
        start = time.perf_counter()
        G(p0)
        grad_s = time.perf_counter() - start
    return seconds, out, grad_s


def _run_pydiffsol(copies, rtol, atol, t_end, sensitivities):
    """pydiffsol's BDF with its sparse (faer) LU on ROBER copies, written in DiffSL as its own
    published benchmark does (blocked: all A, all B, all C); the gradient of sum(y(T)^2) from
    forward sensitivities."""
    import pydiffsol as ds

    g = copies
    code = f"""
        in_i {{ k1 = 0.04 }}
        u_i {{ (0:{g}): a = 1, ({g}:{2 * g}): b = 0, ({2 * g}:{3 * g}): c = 0, }}
        F_i {{
            -k1 * a_i + 10000 * b_i * c_i,
            k1 * a_i - 30000000 * b_i * b_i - 10000 * b_i * c_i,
            30000000 * b_i * b_i,
        }}
    """
    ode = ds.Ode(code, matrix_type=ds.faer_sparse if g > 1 else ds.nalgebra_dense, ode_solver=ds.bdf)
    ode.rtol, ode.atol = rtol, atol
    k1 = np.array([0.04])
    start = time.perf_counter()
    blocked = ode.solve_dense(k1, np.array([t_end])).ys[:, -1]
    seconds = time.perf_counter() - start
    grad_s = None
    if sensitivities:
        start = time.perf_counter()
        sol = ode.solve_fwd_sens(k1, np.array([t_end]))
        gradient = 2 * blocked @ np.asarray(sol.sens[0])[:, -1]  # noqa: F841  (the work being timed)
        grad_s = time.perf_counter() - start
    return seconds, blocked.reshape(3, g).T.ravel(), grad_s


def in_fresh_process(case):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_case, (case,))


def main() -> None:
    from _common import figure_tools, save, stream_row

    from stiffcore.report import table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="add BRUSS-2D m = 128 and ROBER x 10,000")
    parser.add_argument("--only", default="", help="run only backends containing this text (and CVODE sparse)")
    parser.add_argument("--largest", action="store_true", help="BRUSS-2D at its largest size only (no ROBER)")
    args = parser.parse_args()
    sizes = {"bruss2d": [16, 32, 64] + ([128] if args.full else []),
             "rober": [1, 100, 1000] + ([10_000] if args.full else [3000])}
    if args.largest:
        sizes = {"bruss2d": sizes["bruss2d"][-1:]}
    backends = ["CVODE sparse", "CVODE band", "scipy Rodas5P sparse", "scipy RadauIIA5 sparse", "scipy FBDF sparse",
                "scipy QNDF sparse", "scipy Rodas5P gmres", "scipy FBDF gmres",
                "jax Rodas5P SparseLU", "jax Rodas5P SparseLU +grad", "jax FBDF SparseLU", "jax FBDF SparseLU +grad",
                "jax QNDF SparseLU", "jax RadauIIA5 SparseLU", "jax RadauIIA5 SparseLU split", "jax Rodas5P dense",
                "jax RadauIIA5 dense", "jax RadauIIA5 dense split",
                "torch Rodas5P sparse",
                "torch Rodas5P sparse +grad", "torch RadauIIA5 sparse", "torch FBDF sparse", "torch FBDF sparse +grad",
                "torch QNDF sparse", "torch Rodas5P gmres", "torch FBDF gmres", "CasADi CVODES", "CasADi CVODES +grad",
                "pydiffsol BDF sparse", "pydiffsol BDF sparse +sens"]
    headers = ["problem", "n", "backend", "time s", "x CVODE", "peak MiB", "error", "steps", "compile s",
               "grad s", "grad/solve"]
    print("  ".join(headers), flush=True)
    rows, curves = [], {}
    for name, ms in sizes.items():
        for size in ms:
            n = problem(name, size)[1].size
            ref = in_fresh_process((name, size, "reference"))[2]
            rtol, atol = RTOL[name]
            cvode = None
            for backend in backends:
                if args.only not in backend and backend != "CVODE sparse":
                    continue
                if "dense" in backend and n > 2048 or "band" in backend and (name == "rober" or n > 2048) \
                        or "gmres" in backend and n > (512 if "torch" in backend else 2048) \
                        or "pydiffsol" in backend and name != "rober":  # BRUSS-2D needs index shifts DiffSL lacks
                    continue
                seconds, peak, y, steps, compile_s, grad_s = in_fresh_process((name, size, backend))
                err = float(np.sqrt(np.mean(((y - ref) / (atol + rtol * np.abs(ref))) ** 2)))
                cvode = seconds if backend == "CVODE sparse" else cvode
                row = [name, n, backend, seconds, seconds / cvode, peak, err, steps, compile_s, grad_s,
                       None if grad_s is None else grad_s / seconds]
                stream_row(row)
                rows.append(row)
                curves.setdefault((name, backend), []).append((n, seconds))
    print(table(headers, rows))
    print("\ntime exponent from the two largest sizes (target <= 1.2):")
    for (name, backend), pts in curves.items():
        if len(pts) >= 2:
            (n1, t1), (n2, t2) = pts[-2:]
            print(f"  {name:8s} {backend:24s} n {n1} -> {n2}: {np.log(t2 / t1) / np.log(n2 / n1):.2f}")
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, name in zip(axes, sizes):
            for (pname, backend), pts in curves.items():
                if pname == name:
                    ax.loglog(*zip(*pts), "o-", label=backend)
            ax.set(title=name, xlabel="unknowns n", ylabel="solve time (s)")
            ax.legend(fontsize=7)
        save(fig, out, "large_systems.png")


if __name__ == "__main__":
    main()
