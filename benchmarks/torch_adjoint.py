"""torchdiffeq's ``odeint_adjoint`` with stiffcore methods in the backward pass.

Field: an MLP 2 -> W -> 2 (tanh) minus 5 y, t in [0, 1], rtol = atol = 1e-8, float64; the
loss is sum(y(1)).  Rows: wall times of the forward and the backward pass (one run each,
after a warm-up solve), user-f calls in the backward pass, and the relative difference of
the parameter gradient from direct backprop through dopri5 at rtol 1e-12.  The backward
pass gets its Jacobian exactly from the user's f with the parameter adjoints split off
(docs/torch.md, "Gradients"); before that, finite differences over the whole augmented
state took 173 s for kvaerno5 at W = 1024.

    python benchmarks/torch_adjoint.py [--widths 16,1024] [--methods dopri5,kvaerno5,...]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchdiffeq
from _common import stream_row

import stiffcore.adapters.torchdiffeq  # noqa: F401  (registers the method strings)
from stiffcore.report import table

HEADERS = ("width", "parameters", "method", "forward s", "backward s", "backward f calls", "gradient rel. diff")


class Field(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, 2)).double()
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.net(y) - 5.0 * y


def row(width: int, method: str, reference: torch.Tensor | None):
    f = Field(width)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    start = time.perf_counter()
    y = torchdiffeq.odeint_adjoint(f, y0, t, method=method, rtol=1e-8, atol=1e-8)
    forward = time.perf_counter() - start
    f.calls = 0
    start = time.perf_counter()
    grads = torch.autograd.grad(y[-1].sum(), list(f.parameters()))
    backward = time.perf_counter() - start
    g = torch.cat([v.reshape(-1) for v in grads])
    diff = float("nan") if reference is None else float((g - reference).norm() / reference.norm())
    return (width, g.numel(), method, forward, backward, f.calls, diff)


def reference_gradient(width: int) -> torch.Tensor:
    f = Field(width)
    y = torchdiffeq.odeint(f, torch.tensor([1.0, 0.5], dtype=torch.float64),
                           torch.tensor([0.0, 1.0], dtype=torch.float64), method="dopri5", rtol=1e-12, atol=1e-12)
    return torch.cat([v.reshape(-1) for v in torch.autograd.grad(y[-1].sum(), list(f.parameters()))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,1024")
    parser.add_argument("--methods", default="dopri5,kvaerno5,rodas5p,radau_iia5,trbdf2,rosenbrock23")
    args = parser.parse_args()
    row(16, "kvaerno5", None)   # warm-up: first calls pay torch's one-off costs
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        reference = reference_gradient(width)
        for method in args.methods.split(","):
            rows.append(row(width, method, reference))
            stream_row(rows[-1])
    print(table(HEADERS, rows))


if __name__ == "__main__":
    main()
