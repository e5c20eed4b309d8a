"""The torch backend's hooks (announced in :mod:`stiffcore.adapters.backends`, entry point
``torch``, and imported on the suite's first call).

Loading it imports the adapter package (which registers the method strings), hence torch
and torchdiffeq.  Every gradient here is
torch autograd through ``torchdiffeq.odeint`` with this adapter's methods: the discrete
map's own derivative (implicit stages by the implicit function theorem).
"""

from __future__ import annotations

import warnings

import numpy as np

from stiffcore.plugins import hooks_from_linear_gradient


def _linear_gradient(method_id: str, z, h: float, y0: float, n_steps: int):
    """d y_N / d lambda for every lambda = z / h in one solve: a batch of independent scalar
    systems (``batch_dims=1``: each its own Newton iteration and LU), so one autograd pass
    through one odeint call serves the whole grid."""
    import torch
    from torchdiffeq import odeint

    z = np.asarray(z, dtype=float)
    t = torch.tensor([0.0, n_steps * h], dtype=torch.float64)
    lam = torch.tensor(z.reshape(-1, 1) / h, dtype=torch.float64, requires_grad=True)
    y_start = torch.full(lam.shape, float(y0), dtype=torch.float64)
    ys = odeint(lambda s, y: lam * y, y_start, t, method=method_id, rtol=1e-10, atol=1e-14,
                options={"step_size": h, "newton_tol": 1e-9, "batch_dims": 1,
                         "jac": lambda s, y: lam.unsqueeze(-1).expand(-1, 1, 1)})
    # the systems are independent: the gradient of the sum is d y_N,i / d lambda_i
    return torch.autograd.grad(ys[-1].sum(), lam)[0].detach().numpy().reshape(z.shape)


one_step_gradient, n_step_gradient = hooks_from_linear_gradient(_linear_gradient)


def multistep_gradient(method_id: str, z, h: float = 1.0, y0: float = 1.0, n_steps: int | None = None):
    """d y_N / d lambda of the fixed-order formula ``method_id`` (bdf1..5, ndf1..4) on
    y' = lambda y for every lambda = z / h at once (``batch_dims=1``): the exact starting
    values y_j = e^{j lambda h} y0 (j < s, the formula's steps) as the ``fbdf``/``qndf``
    history, carrying their own dependence on lambda, then the solver's fixed steps of
    order k to y_N and one autograd pass."""
    import torch

    from stiffcore.catalogue import VARIABLE_ORDER, get_method

    from .multistep import MULTISTEP_SOLVERS

    method = get_method(method_id)
    k, s = method.order, method.stages
    family = next(f for f in VARIABLE_ORDER.values() if f.members[k - 1] == method.id)
    n_steps = s + 4 if n_steps is None else n_steps
    z = np.asarray(z, dtype=float)
    lam = torch.tensor(z.reshape(-1, 1) / h, dtype=torch.float64, requires_grad=True)
    values = [torch.exp(j * h * lam) * y0 for j in range(s)]
    solver = MULTISTEP_SOLVERS[family.id](lambda t, y: lam * y, values[-1].detach(), rtol=1e-10, atol=1e-14,
                                          step_size=h, newton_tol=1e-9, batch_dims=1,
                                          jac=lambda t, y: lam.detach().unsqueeze(-1))
    y_n = solver._steps_from_history((s - 1) * h, values, h, n_steps * h, k)
    # the systems are independent: the gradient of the sum is d y_N,i / d lambda_i
    return torch.autograd.grad(y_n.sum(), lam)[0].detach().numpy().reshape(z.shape)


def reversible_run(base_id: str, z, h: float, y0: float, n_steps: int, coupling: float,
                   perturbation: float = 0.0, gradient: bool = True) -> dict:
    """Forward n reversible steps on y' = lambda y for every lambda = z / h at once (one
    diagonal system; gradients by autograd if ``gradient``, else no graph is kept), then
    rebuild y0 from y_n * (1 + perturbation) with the backward steps the memory-flat
    backward pass uses."""
    import torch

    from stiffcore.reversible import reversible_step_back

    from .reversible import ReversibleSolver

    lam = torch.tensor(np.atleast_1d(np.asarray(z, dtype=float)) / h, dtype=torch.float64, requires_grad=gradient)
    with warnings.catch_warnings(), torch.set_grad_enabled(gradient):
        warnings.simplefilter("ignore", RuntimeWarning)  # unstable configurations are measured on purpose
        # the Jacobian diag(lambda) given (the jac option): autodiff would build it each step
        solver = ReversibleSolver(lambda s, y: lam * y, torch.full(lam.shape, float(y0), dtype=torch.float64),
                                  step_size=h, base=base_id, coupling=coupling, jac=lambda s, y: torch.diag(lam))
        solver.recording = True
        ys = solver.integrate(torch.tensor([0.0, n_steps * h], dtype=torch.float64))
    # the components are independent: d y_i / d lambda_i
    dy = torch.autograd.grad(ys[-1].sum(), lam)[0] if gradient else torch.full_like(lam, float("nan"))
    times = solver.step_times()
    with torch.no_grad():
        y = solver.final_state.y.detach() * (1 + perturbation)
        w = solver.final_state.z.detach()
        for k in range(times.numel() - 1, 0, -1):
            y, w = reversible_step_back(solver._base_step, times[k - 1], times[k], y, w, solver.coupling)
    return dict(y_n=ys[-1].detach().numpy(), y0_rebuilt=y.reshape(-1).numpy(), dy_dlambda=dy.numpy())


def rober_gradient(method_id: str, times, steps=None, rtol=None):
    """d/d(log k) of sum(y(times)^2) on ROBER, on the step grid ``steps`` or adaptively at ``rtol``."""
    import torch
    from torchdiffeq import odeint

    from stiffcore.problems import ROBER

    rober = ROBER.log_parameterised()
    logk = torch.tensor(rober.params, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor(rober.y0, dtype=torch.float64)
    times = np.asarray(times, dtype=float)
    if steps is not None:
        grid = np.asarray(steps, dtype=float)
        t = torch.tensor(grid, dtype=torch.float64)
        # one step per grid interval, stage equations solved to round-off (tolerances only scale Newton's norm)
        ys = odeint(lambda s, y: rober.rhs(s, y, logk), y0, t, method=method_id, rtol=1e-10, atol=1e-14,
                    options={"step_size": float(np.max(np.diff(grid))) * 2, "newton_tol": 1e-9})
        ys = ys[torch.as_tensor(np.searchsorted(grid, times))]
    else:
        t = torch.tensor(np.concatenate([[0.0], times]), dtype=torch.float64)
        ys = odeint(lambda s, y: rober.rhs(s, y, logk), y0, t, method=method_id, rtol=rtol, atol=rtol * 1e-4)[1:]
    return torch.autograd.grad((ys**2).sum(), logk)[0].numpy()


def install() -> None:
    from . import register

    register()
