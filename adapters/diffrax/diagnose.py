"""Gradient diagnostics from a real diffrax solve (:func:`stiffcore.diagnostics.diagnose`).

One call solves with ``SaveAt(steps=True)``, evaluates df/dy and df/dp at every accepted
step start with ``jax.jacfwd`` and returns the core's report.
"""

from __future__ import annotations

import numpy as np

from stiffcore.catalogue import get_method
from stiffcore.diagnostics import refuse_variable_order

def method_id(solver) -> str:
    """The catalogue id of a diffrax solver instance (ours or diffrax's own)."""
    from . import NATIVE
    from .reversible import Reversible

    if isinstance(solver, Reversible):
        solver = solver.base_solver
    name = type(solver).__name__
    refuse_variable_order(name)
    return get_method({cls: mid for mid, cls in NATIVE.items()}.get(name, name)).id


def diagnose(term, solver, t0, t1, dt0, y0, args, *, stepsize_controller=None, param_names=None,
             max_steps=100_000, output_times=None, loss_grad=None, log_params=False):
    """Solve ``term`` (an ``ODETerm`` whose ``args`` is a 1-D parameter array) with ``solver``
    and report stiffness along the solve and, per parameter, the gradient it keeps of the exact flow's.
    With ``output_times`` and ``loss_grad(Y) -> dL/dY`` (Y: the states there, (M, n)) the solve
    lands on those times and each parameter also gets its predicted dL/dp; ``log_params=True``
    says ``args`` are already logarithms of rates (no log-parameterisation advice).
    Returns :class:`stiffcore.diagnostics.Diagnosis`."""
    import diffrax
    import jax
    import jax.numpy as jnp

    from stiffcore.diagnostics import cotangents_on_steps
    from stiffcore.diagnostics import diagnose as core_diagnose

    from .reversible import Reversible

    args = jnp.asarray(args)
    if args.ndim != 1:
        raise ValueError(f"args must be the 1-D parameter array the vector field takes, got shape {args.shape}")
    y0 = jnp.asarray(y0)
    if y0.ndim != 1:
        raise ValueError(f"diagnose takes one system: y0 must be 1-D, got shape {y0.shape}")
    mid = method_id(solver)
    controller = stepsize_controller or diffrax.ConstantStepSize()
    if output_times is not None:
        if loss_grad is None:
            raise ValueError("output_times need loss_grad, the loss's dL/dY at those times")
        if not isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
            raise ValueError("output_times need an adaptive step-size controller (steps land on them via "
                             "ClipStepSizeController(step_ts=...))")
        controller = diffrax.ClipStepSizeController(controller, step_ts=jnp.asarray(output_times))
    sol = diffrax.diffeqsolve(term, solver, t0, t1, dt0, y0, args=args, saveat=diffrax.SaveAt(t0=True, steps=True),
                              stepsize_controller=controller, max_steps=max_steps)
    n = int(sol.stats["num_accepted_steps"])
    ts, ys = np.asarray(sol.ts[: n + 1]), sol.ys[: n + 1]
    jac_y = jax.vmap(jax.jacfwd(lambda t, y: term.vf(t, y, args), argnums=1))(jnp.asarray(ts[:-1]), ys[:-1])
    jac_p = jax.vmap(jax.jacfwd(lambda t, y, p: term.vf(t, y, p), argnums=2), in_axes=(0, 0, None))(
        jnp.asarray(ts[:-1]), ys[:-1], args)
    cotangents = None
    if output_times is not None:
        cotangents = cotangents_on_steps(ts, np.asarray(ys), output_times, loss_grad)
    return core_diagnose(mid, ts[:-1], np.diff(ts), jacobians=np.asarray(jac_y), param_jacobians=np.asarray(jac_p),
                         param_names=param_names, params=np.asarray(args), states=np.asarray(ys),
                         coupling=solver.coupling if isinstance(solver, Reversible) else None,
                         output_cotangents=cotangents, log_params=log_params)


def diagnose_problem(problem, method="RadauIIA5", rtol=1e-6, times=None):
    """(report, measured d/dp of sum(y(times)^2)) for a :mod:`stiffcore.problems` problem,
    with this adapter's solver of that name (or diffrax's own Kvaerno3/4/5, ImplicitEuler)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    from . import SOLVERS

    jax.config.update("jax_enable_x64", True)
    name = get_method(method).name
    cls = SOLVERS.get(name) or getattr(diffrax, {"BackwardEuler": "ImplicitEuler"}.get(name, name), None)
    if cls is None:
        raise ValueError(f"no diffrax solver for {method!r}; choose one of {sorted(SOLVERS)} or Kvaerno3/4/5")
    control = diffrax.PIDController(rtol=rtol, atol=1e-4 * rtol)
    term = diffrax.ODETerm(problem.rhs)
    t0, t1 = problem.t_span
    report = diagnose(term, cls(), t0, t1, 1e-6, problem.y0, problem.params, stepsize_controller=control,
                      param_names=problem.param_names, output_times=times, loss_grad=lambda Y: 2 * Y,
                      log_params=problem.log_params)

    def loss(p):
        sol = diffrax.diffeqsolve(term, cls(), t0, t1, 1e-6, jnp.asarray(problem.y0), args=p,
                                  saveat=diffrax.SaveAt(ts=jnp.asarray(times)), stepsize_controller=control,
                                  max_steps=100_000)
        return (sol.ys**2).sum()

    return report, np.asarray(jax.grad(loss)(jnp.asarray(problem.params)))
