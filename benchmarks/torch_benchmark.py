"""The torchdiffeq adapter: ROBER solve and gradient times, and reversible backprop memory.

Part 1 (ROBER, t in [0, 1e5], 50 log-spaced outputs, atol = 1e-4 rtol): steps, achieved
error at t = 1e5 against the problem's reference (max relative error over components above
atol), warm wall times (best of 3) of the solve and of the gradient of sum(y^2) with respect
to log k, for rodas5p, radau_iia5, kvaerno5, trbdf2, next to torchdiffeq's dopri5 capped at
20,000 steps.

Part 2 (neural ODE: MLP 2 -> 64 -> 64 -> 2, tanh, over t in [0, 1]): peak memory (RSS growth
of a fresh process) and time of the gradient for 1e3, 1e4, 1e5 fixed steps through
  direct     torchdiffeq.odeint(method="rk4") with plain backprop,
  adjoint    torchdiffeq.odeint_adjoint(method="rk4"),
  rev-direct odeint(method="reversible", base rk4) with plain backprop (the same discrete map
             as ours, graph stored),
  reversible odeint_reversible(base rk4): states rebuilt in the backward pass.

    python benchmarks/torch_benchmark.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
from _common import figure_tools, process_status_kib, save
from torchdiffeq import odeint, odeint_adjoint

from stiffcore.adapters.torchdiffeq import odeint_reversible
from stiffcore.problems import ROBER
from stiffcore.report import table

torch.set_default_dtype(torch.float64)
METHODS = ["rodas5p", "radau_iia5", "kvaerno5", "trbdf2"]
MEMORY_CASES = ["direct", "adjoint", "rev-direct", "reversible"]


def rober_field(logk):
    def f(t, y):
        k1, k2, k3 = logk.exp().unbind()
        a, b, c = y.unbind(-1)
        r1, r2, r3 = k1 * a, k2 * b * b, k3 * b * c
        return torch.stack([-r1 + r3, r1 - r2 - r3, r2], -1)
    return f


def rober_run(method, rtol, repeats):
    t = torch.cat([torch.zeros(1), torch.logspace(-5, 5, 50)])
    y0 = torch.tensor(ROBER.y0)
    ref = ROBER.reference[1]
    best_solve = best_grad = np.inf
    options = {"max_num_steps": 20000} if method == "dopri5" else {}
    for _ in range(repeats):
        logk = torch.log(torch.tensor(ROBER.params)).requires_grad_(True)
        start = time.perf_counter()
        try:
            ys = odeint(rober_field(logk), y0, t, method=method, rtol=rtol, atol=1e-4 * rtol, options=options)
        except (AssertionError, RuntimeError, FloatingPointError) as exc:
            return dict(method=method, rtol=rtol, steps="-", err=np.inf, solve=time.perf_counter() - start,
                        grad=np.nan, note=f"fails: {str(exc)[:40]}")
        mid = time.perf_counter()
        torch.autograd.grad((ys**2).sum(), logk)
        end = time.perf_counter()
        best_solve, best_grad = min(best_solve, mid - start), min(best_grad, end - mid)
    final = ys[-1].detach().numpy()
    mask = np.abs(ref) > 1e-4 * rtol
    err = float(np.max(np.abs(final - ref)[mask] / np.abs(ref[mask])))
    from stiffcore.adapters.torchdiffeq import SOLVERS

    solver = SOLVERS[method](rober_field(torch.log(torch.tensor(ROBER.params))), y0, rtol=rtol, atol=1e-4 * rtol)
    with torch.no_grad():
        solver.integrate(t)
    return dict(method=method, rtol=rtol, steps=f"{solver.n_steps} ({solver.n_rejected})", err=err,
                solve=best_solve, grad=best_grad, note="")


def mlp_field():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 2))


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp_field()

    def forward(self, t, y):
        return self.net(y)


def memory_case(case: str, n_steps: int) -> dict:
    """One gradient in this (fresh) process: peak RSS growth and wall time."""
    func = Field()
    y0 = torch.tensor([0.5, -0.3])
    t = torch.tensor([0.0, 1.0])
    opts = {"step_size": 1.0 / n_steps}
    params = list(func.parameters())
    # warm up the code paths on a tiny run so one-time costs stay out of the measurement
    odeint_reversible(func, y0, t, options={"base": "rk4", "step_size": 0.5}).sum().backward()
    odeint(func, y0, t, method="rk4", options={"step_size": 0.5}).sum().backward()
    before = process_status_kib("VmRSS")
    start = time.perf_counter()
    if case == "direct":
        out = odeint(func, y0, t, method="rk4", options=opts)
    elif case == "adjoint":
        out = odeint_adjoint(func, y0, t, method="rk4", options=opts)
    elif case == "rev-direct":
        out = odeint(func, y0, t, method="reversible", options={"base": "rk4", **opts})
    else:
        out = odeint_reversible(func, y0, t, options={"base": "rk4", **opts})
    grads = torch.autograd.grad(out[-1].pow(2).sum(), params)
    elapsed = time.perf_counter() - start
    peak = process_status_kib("VmHWM")
    return dict(case=case, n=n_steps, mib=max(peak - before, 0) / 1024, time=elapsed,
                grad_norm=float(sum(g.pow(2).sum() for g in grads).sqrt()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="rtol 1e-6, one repeat, up to 1e4 steps")
    parser.add_argument("--part", choices=["rober", "memory", "all"], default="all")
    parser.add_argument("--memory-case", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case[0], int(args.memory_case[1]))))
        return

    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)  # reversible rk4 on the MLP: measured, not judged here
    if args.part in ("rober", "all"):
        rober_table(args.quick)
    if args.part in ("memory", "all"):
        memory_table(args.quick)


def rober_table(quick: bool) -> None:
    repeats = 1 if quick else 3
    rows = []
    for rtol in ([1e-6] if quick else [1e-6, 1e-8]):
        for method in METHODS + ["dopri5"]:
            r = rober_run(method, rtol, repeats)
            rows.append([r["method"], f"{rtol:g}", r["steps"], f"{r['err']:.2g}", f"{r['solve']:.3f}",
                         f"{r['grad']:.3f}", f"{r['solve'] + r['grad']:.3f}", r["note"]])
            print(rows[-1], flush=True)
    print("\nROBER, t in [0, 1e5], 50 outputs, atol = 1e-4 rtol (warm, best of %d)" % repeats)
    print(table(["method", "rtol", "steps (rej)", "error", "solve s", "grad s", "total s", "note"], rows))



def memory_table(quick: bool) -> None:
    sizes = [1000, 10000] if quick else [1000, 10000, 100000]
    mem = []
    for n in sizes:
        # the same-map direct backprop is shown up to 1e4 steps (at 1e5 it takes ~10 minutes)
        for case in (c for c in MEMORY_CASES if not (c == "rev-direct" and n > 10000)):
            proc = subprocess.run([sys.executable, __file__, "--memory-case", case, str(n)], capture_output=True,
                                  text=True, check=True)
            mem.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(mem[-1], flush=True)
    print("\nNeural ODE gradient (MLP 2-64-64-2), rk4 base, fixed steps over [0, 1]")
    print(table(["steps", "case", "peak MiB", "time s", "|grad|"],
                [[m["n"], m["case"], f"{m['mib']:.1f}", f"{m['time']:.2f}", f"{m['grad_norm']:.6g}"] for m in mem]))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for case in MEMORY_CASES:
            sel = [m for m in mem if m["case"] == case]
            axes[0].loglog([m["n"] for m in sel], [max(m["mib"], 0.1) for m in sel], "o-", label=case)
            axes[1].loglog([m["n"] for m in sel], [m["time"] for m in sel], "o-", label=case)
        axes[0].set(xlabel="steps", ylabel="peak memory growth (MiB)", title="memory")
        axes[1].set(xlabel="steps", ylabel="gradient wall time (s)", title="time")
        axes[0].legend()
        save(fig, out, "torch_memory.png")


if __name__ == "__main__":
    main()
