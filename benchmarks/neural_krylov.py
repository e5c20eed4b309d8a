"""A neural ODE with a 10^4..10^5-dimensional state, trained with matrix-free Newton-Krylov.

The model is a reaction-diffusion equation on a periodic 1-D grid of n cells whose reaction
term is a small network shared by every cell (a neural PDE closure):

    y' = D Lap(y) + g_theta(y),    g_theta: R -> R, an MLP 1-16-1 (tanh), cell by cell,

fitted to data from the Fisher-KPP reaction g(y) = y (1 - y).  Diffusion makes it stiff
(D / dx^2 = 1e-3 n^2: 1e5 at n = 10^4) and couples every cell, so the Jacobian is n x n;
Rodas5P solves each stage by GMRES on Jacobian-vector products, preconditioned by the
diffusion part (I - h gamma D Lap)^-1 applied by FFT.  No n x n array is formed anywhere:
not in the solve, not in the gradient (diffrax: lineax transposes GMRES and the
preconditioner; torch: the implicit function theorem with GMRES on J^T w).

For each backend and n (each in a fresh process): time of one training step (solve,
gradient, Adam update) after a first step that compiles/warms up, peak resident memory,
and the loss before and after the steps.

    pip install -e ".[all,bench]"
    python benchmarks/neural_krylov.py [--sizes 10000 30000 100000] [--steps 3] [--only jax]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

DIFFUSION, T_END, RTOL, ATOL, HIDDEN, LR = 1e-3, 0.5, 1e-4, 1e-6, 16, 2e-2
T_OBS = np.linspace(0.0, T_END, 6)


def initial_state(n: int) -> np.ndarray:
    x = np.arange(n) / n
    return 0.5 + 0.3 * np.sin(2 * np.pi * x) + 0.1 * np.cos(6 * np.pi * x)


def laplacian_symbol(n: int) -> np.ndarray:
    """Eigenvalues of the periodic second difference D Lap for the rfft modes."""
    k = np.arange(n // 2 + 1)
    return DIFFUSION * n * n * (2 * np.cos(2 * np.pi * k / n) - 2)


def init_params(rng) -> list[np.ndarray]:
    return [rng.normal(size=(1, HIDDEN)) * 0.5, np.zeros(HIDDEN), rng.normal(size=(HIDDEN, 1)) * 0.1, np.zeros(1)]


def run_jax(n: int, steps: int) -> dict:
    import diffrax
    import jax
    import jax.numpy as jnp
    import lineax as lx
    import optax

    jax.config.update("jax_enable_x64", True)
    from stiffcore.adapters.diffrax import Rodas5P

    symbol = jnp.asarray(laplacian_symbol(n))

    def lap(y):
        return DIFFUSION * n * n * (jnp.roll(y, 1) + jnp.roll(y, -1) - 2 * y)

    def mlp(params, y):
        w1, b1, w2, b2 = params
        return (jnp.tanh(y[:, None] @ w1 + b1) @ w2 + b2)[:, 0]

    def preconditioner(t, y, h_gamma):
        return lx.FunctionLinearOperator(lambda v: jnp.fft.irfft(jnp.fft.rfft(v) / (1 - h_gamma * symbol), n=n),
                                         jax.ShapeDtypeStruct(y.shape, y.dtype))

    solver = Rodas5P(linear_solver=lx.GMRES(rtol=1e-7, atol=1e-9, restart=20, max_steps=200),
                     preconditioner=preconditioner)

    def solve(field, args):
        return diffrax.diffeqsolve(diffrax.ODETerm(field), solver, 0.0, T_END, None, jnp.asarray(initial_state(n)),
                                   args=args, saveat=diffrax.SaveAt(ts=jnp.asarray(T_OBS)),
                                   stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL), max_steps=512)

    data = solve(lambda t, y, a: lap(y) + y * (1 - y), None).ys

    @jax.jit
    def loss_and_grad(params):
        def loss(p):
            return jnp.mean((solve(lambda t, y, a: lap(y) + mlp(a, y), p).ys - data) ** 2)
        return jax.value_and_grad(loss)(params)

    params = [jnp.asarray(p) for p in init_params(np.random.default_rng(0))]
    optimiser = optax.adam(LR)
    state = optimiser.init(params)
    losses, times = [], []
    for _ in range(steps + 1):
        start = time.perf_counter()
        value, grads = jax.block_until_ready(loss_and_grad(params))
        updates, state = optimiser.update(grads, state)
        params = optax.apply_updates(params, updates)
        times.append(time.perf_counter() - start)
        losses.append(float(value))
    return dict(first=times[0], step=float(np.mean(times[1:])), losses=losses)


def run_torch(n: int, steps: int) -> dict:
    import torch
    from torchdiffeq import odeint

    import stiffcore.adapters.torchdiffeq  # noqa: F401  (registers the methods)

    torch.manual_seed(0)
    symbol = torch.as_tensor(laplacian_symbol(n))

    def lap(y):
        return DIFFUSION * n * n * (torch.roll(y, 1, -1) + torch.roll(y, -1, -1) - 2 * y)

    def preconditioner(t, y, h_gamma):
        return lambda v: torch.fft.irfft(torch.fft.rfft(v) / (1 - h_gamma * symbol), n=n)

    options = dict(linear_solver="gmres", preconditioner=preconditioner, krylov_rtol=1e-7, krylov_restart=20,
                   krylov_maxiter=10)
    y0, ts = torch.as_tensor(initial_state(n)), torch.as_tensor(T_OBS)
    with torch.no_grad():
        data = odeint(lambda t, y: lap(y) + y * (1 - y), y0, ts, method="rodas5p", rtol=RTOL, atol=ATOL,
                      options=options)
    params = [torch.tensor(p, requires_grad=True) for p in init_params(np.random.default_rng(0))]

    def field(t, y):
        w1, b1, w2, b2 = params
        return lap(y) + (torch.tanh(y[..., None] @ w1 + b1) @ w2 + b2)[..., 0]

    optimiser = torch.optim.Adam(params, lr=LR)
    losses, times = [], []
    for _ in range(steps + 1):
        start = time.perf_counter()
        optimiser.zero_grad()
        loss = torch.mean((odeint(field, y0, ts, method="rodas5p", rtol=RTOL, atol=ATOL, options=options) - data) ** 2)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    return dict(first=times[0], step=float(np.mean(times[1:])), losses=losses)


def run_case(case):
    from _common import process_status_kib

    backend, n, steps = case
    out = (run_jax if backend == "jax" else run_torch)(n, steps)
    out["peak"] = process_status_kib("VmHWM") / 1024
    return out


def main() -> None:
    from _common import figure_tools, save, stream_row

    from stiffcore.report import table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--steps", type=int, default=3, help="training steps timed after the first")
    parser.add_argument("--only", default="", help="run only this backend (jax or torch)")
    args = parser.parse_args()
    headers = ["backend", "n", "first step s", "step s", "peak MiB", "loss first", "loss last"]
    print("  ".join(headers), flush=True)
    rows, curves = [], {}
    for backend in ("jax", "torch"):
        if args.only and args.only != backend:
            continue
        for n in args.sizes:
            with mp.get_context("spawn").Pool(1) as pool:
                r = pool.apply(run_case, ((backend, n, args.steps),))
            row = [backend, n, r["first"], r["step"], r["peak"], r["losses"][0], r["losses"][-1]]
            stream_row(row)
            rows.append(row)
            curves.setdefault(backend, []).append((n, r["step"], r["peak"]))
    print(table(headers, rows))
    print("\nexponents from the two largest sizes (target <= 1.2):")
    for backend, pts in curves.items():
        if len(pts) >= 2:
            (n1, t1, m1), (n2, t2, m2) = pts[-2:]
            print(f"  {backend:6s} time n^{np.log(t2 / t1) / np.log(n2 / n1):.2f}, "
                  f"memory n^{np.log(m2 / m1) / np.log(n2 / n1):.2f}")
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for backend, pts in curves.items():
            ns, ts_, ms = zip(*pts)
            axes[0].loglog(ns, ts_, "o-", label=backend)
            axes[1].loglog(ns, ms, "o-", label=backend)
        axes[0].set(xlabel="state size n", ylabel="training step (s)")
        axes[1].set(xlabel="state size n", ylabel="peak resident memory (MiB)")
        axes[0].legend()
        save(fig, out, "neural_krylov.png")


if __name__ == "__main__":
    main()
