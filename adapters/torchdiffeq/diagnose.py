"""Gradient diagnostics from a real torch solve (:func:`stiffcore.diagnostics.diagnose`).

One call solves with the adapter's method, records the accepted steps, evaluates df/dy
and df/dp at every step start with ``torch.func`` and returns the core's report.
"""

from __future__ import annotations

import torch

from stiffcore.catalogue import get_method
from stiffcore.diagnostics import refuse_variable_order


def diagnose(func, y0, t, params, *, method="radau_iia5", rtol=1e-6, atol=1e-10, param_names=None, options=None,
             loss_grad=None, log_params=False):
    """Solve ``y' = func(t, y, params)`` with ``method`` on the output times ``t`` and report
    stiffness along the solve and, per parameter, the gradient it keeps of the exact flow's.  With
    ``loss_grad(Y) -> dL/dY`` (Y: the states at ``t[1:]``, (M, n)) each parameter also gets its
    predicted dL/dp (the steps land on every output time).

    ``params`` is a 1-D tensor (``log_params=True``: already logarithms of rates, so no
    log-parameterisation advice); ``y0`` a 1-D tensor (one system).  Returns
    :class:`stiffcore.diagnostics.Diagnosis`.
    """
    import numpy as np

    from stiffcore.diagnostics import cotangents_on_steps
    from stiffcore.diagnostics import diagnose as core_diagnose

    from . import SOLVERS

    refuse_variable_order(method)
    m = get_method(method)
    if m.id not in SOLVERS:
        raise ValueError(f"method {m.id!r} is not a torchdiffeq method of this adapter; choose one of {list(SOLVERS)}")
    if not (isinstance(params, torch.Tensor) and params.ndim == 1):
        raise TypeError("params must be a 1-D tensor of the parameters func(t, y, params) uses")
    if not (isinstance(y0, torch.Tensor) and y0.ndim == 1):
        raise TypeError("diagnose takes one system: y0 must be a 1-D tensor")
    params = params.detach()
    solver = SOLVERS[m.id](lambda s, y: func(s, y, params), y0.detach(), rtol=rtol, atol=atol, **dict(options or {}))
    times, states = [], []
    on_step = solver._on_step

    def record(state):  # the start of every accepted step, and the final state
        on_step(state)
        times.append(state.t.detach().clone())
        states.append(state.y.detach().reshape(-1).clone())

    solver._on_step = record
    with torch.no_grad():
        solver.integrate(t.detach())
    steps = torch.stack([t[0].detach()] + times)
    Y = torch.stack([y0.detach()] + states)
    jac_y = torch.func.vmap(torch.func.jacrev(lambda s, y: func(s, y, params), argnums=1))(steps[:-1], Y[:-1])
    jac_p = torch.func.vmap(torch.func.jacrev(lambda s, y, p: func(s, y, p), argnums=2), in_dims=(0, 0, None))(
        steps[:-1], Y[:-1], params)
    coupling = getattr(solver, "coupling", None)
    boundaries, states = steps.cpu().numpy(), Y.cpu().numpy()
    cotangents = None
    if loss_grad is not None:
        cotangents = cotangents_on_steps(boundaries, states, t[1:].detach().cpu().numpy(), loss_grad)
    return core_diagnose(solver.method.id, boundaries[:-1], np.diff(boundaries),
                         jacobians=jac_y.cpu().numpy(), param_jacobians=jac_p.cpu().numpy(),
                         param_names=param_names, params=params.cpu().numpy(), states=states,
                         coupling=coupling, output_cotangents=cotangents, log_params=log_params)


def diagnose_problem(problem, method="radau_iia5", rtol=1e-6, times=None):
    """(report, measured d/dp of sum(y(times)^2)) for a :mod:`stiffcore.problems` problem."""
    import numpy as np
    from torchdiffeq import odeint

    dtype = torch.float64
    y0 = torch.tensor(problem.y0, dtype=dtype)
    times = torch.tensor(np.concatenate([[problem.t_span[0]], times]), dtype=dtype)
    p = torch.tensor(problem.params, dtype=dtype)
    report = diagnose(problem.rhs, y0, times, p, method=get_method(method).id, rtol=rtol, atol=1e-4 * rtol,
                      param_names=problem.param_names, loss_grad=lambda Y: 2 * Y, log_params=problem.log_params)
    p.requires_grad_(True)
    ys = odeint(lambda s, y: problem.rhs(s, y, p), y0, times, method=get_method(method).id, rtol=rtol,
                atol=1e-4 * rtol)
    return report, torch.autograd.grad((ys[1:] ** 2).sum(), p)[0].numpy()
