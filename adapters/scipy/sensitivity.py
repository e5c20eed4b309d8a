"""``solve_ivp_sensitivity``: parameter gradients of a ``solve_ivp`` solution, exact for the
discrete method.

The solve runs in two passes.  The first is an ordinary adaptive (or fixed-step) solve with
the chosen stiffcore method; it fixes the step sequence, landing exactly on every
``t_eval``.  The second replays that step sequence with stage equations solved to round-off
and differentiates each step exactly (see ``_step_maps``).  Step sizes are treated as fixed
during differentiation: the result is the derivative of the discrete solution map for the
accepted steps, not of the step-size controller.

* ``mode="forward"``: the discrete tangent dy/dp at every output time.
* ``mode="reverse"``: the discrete adjoint gradient of a scalar ``loss(Y)`` of the outputs;
  every step's pullback is kept when they fit in ``PULLBACK_MEMORY``, otherwise states are
  checkpointed every ``checkpoint_every`` steps (default sqrt of the step count) and
  recomputed segment by segment; with ``method="Reversible"`` the states are instead
  rebuilt backwards by the reversible step, so memory does not grow with the step count.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.integrate import solve_ivp
from scipy.integrate._ivp.ivp import OdeResult

from stiffcore.catalogue import get_method
from stiffcore.reversible import DEFAULT_COUPLING, check_coupling

from ._derivatives import Derivatives, differentiate
from ._linalg import blas_threads_for
from ._multistep_sensitivity import MultistepReplay
from ._multistep_sensitivity import forward as multistep_forward
from ._multistep_sensitivity import outputs as multistep_outputs
from ._multistep_sensitivity import reverse as multistep_reverse
from ._step_maps import ReversiblePairMap, StepFailed, step_map


def _outputs(t_eval, t_span):
    if t_eval is None:
        return None
    t_eval = np.asarray(t_eval, dtype=float).ravel()
    t0, t1 = map(float, t_span)
    lo, hi = min(t0, t1), max(t0, t1)
    if np.any(t_eval < lo) or np.any(t_eval > hi):
        raise ValueError("Values in `t_eval` are not within `t_span`.")
    d = np.diff(t_eval)
    if (t1 > t0 and np.any(d <= 0)) or (t1 < t0 and np.any(d >= 0)):
        raise ValueError("Values in `t_eval` are not properly sorted.")
    return t_eval


def _loss_gradient(loss, Y):
    """dL/dY by complex step when ``loss`` is analytic, else central differences (warned)."""
    flat = Y.ravel()
    try:
        analytic = np.iscomplexobj(loss((flat + 0j).reshape(Y.shape)))
    except (TypeError, ValueError):
        analytic = False
    if not analytic:
        warnings.warn("stiffcore: loss_grad not given and loss does not accept complex input; "
                      "dL/dY by central differences (about 8 digits)", RuntimeWarning, stacklevel=3)
    grad = differentiate(lambda v: np.atleast_1d(loss(v.reshape(Y.shape))), flat, complex_step=analytic)
    return grad.reshape(Y.shape)


def solve_ivp_sensitivity(fun, t_span, y0, p, method="RadauIIA5", t_eval=None, mode="forward", loss=None,
                          loss_grad=None, jac=None, jac_p=None, checkpoint_every=None, autonomous=False,
                          base="backward_euler", coupling=DEFAULT_COUPLING, **options):
    """Solve ``y' = fun(t, y, p)`` and differentiate the discrete solution with respect to ``p``.

    Parameters
    ----------
    fun : callable ``fun(t, y, p) -> (n,)``; complex-safe for exact derivatives without jac.
    t_span, y0, t_eval, **options : as for ``solve_ivp`` (``rtol``, ``atol``, ``first_step``,
        ``max_step``, ``adaptive`` ...).  Outputs are the states at ``t_eval`` (all step
        ends when None).
    p : array_like, the parameters.
    method : a stiffcore method name or id (``"RadauIIA5"``, ``"Rodas5P"``, ``"Reversible"``,
        ``"FBDF"``, ``"QNDF"`` ...).  For FBDF/QNDF the result also has ``orders`` (each step's).
    mode : ``"forward"`` (dy/dp at the outputs) or ``"reverse"`` (gradient of ``loss``).
    loss : callable ``loss(Y) -> float`` of the (n, len(t)) outputs, for ``mode="reverse"``.
    loss_grad : callable ``loss_grad(Y) -> (n, len(t))``; complex step of ``loss`` if absent.
    jac, jac_p : callables ``(t, y, p) -> df/dy (n, n)``, ``-> df/dp (n, P)``; complex-step
        differentiation of ``fun`` (exact) or central differences (warned) if absent.
    checkpoint_every : int, states kept every this many steps in reverse mode (default: every
        step's pullback in one pass when they fit in 256 MB, else sqrt of the step count).
    autonomous : bool, skip the f_t term of Rosenbrock methods.
    base, coupling : for ``method="Reversible"``.

    Returns
    -------
    OdeResult with ``t``, ``y``, ``sensitivities`` (n, P, len(t)) in forward mode, ``loss``,
    ``grad`` (P,) and ``grad_y0`` (n,) in reverse mode, ``t_steps`` (the step sequence),
    ``nfev``, ``njev``, ``nlu`` of the step-selecting solve, ``status``, ``message``, ``success``.
    """
    from . import solver_class

    if mode not in ("forward", "reverse"):
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    if mode == "reverse" and loss is None:
        raise ValueError("mode='reverse' needs loss=callable(Y) -> float")
    p = np.asarray(p, dtype=float).ravel()
    y0 = np.asarray(y0, dtype=float).ravel()
    t_out = _outputs(t_eval, t_span)
    reversible = method == "Reversible"
    method_id = None if _is_variable_order(method) else get_method(base if reversible else method).id
    if reversible:
        coupling = check_coupling(coupling)
        options.update(base=base, coupling=coupling)
    derivs = Derivatives(fun, y0.size, p, jac, jac_p)
    try:
        f0 = derivs.f(float(t_span[0]), y0, p)
    except Exception as exc:  # noqa: BLE001 - report what fun(t, y, p) itself raised
        raise ValueError(f"fun(t, y, p) failed at t0 with p of shape {p.shape}: {exc}") from exc
    if np.shape(f0) != y0.shape:
        raise ValueError(f"fun(t, y, p) returned shape {np.shape(f0)}, expected {y0.shape} (is p the right size?)")
    derivs.check_jacobians(float(t_span[0]), y0)

    if _is_variable_order(method):
        return _multistep_sensitivity(fun, t_span, y0, p, method, t_out, mode, loss, loss_grad, jac, jac_p,
                                      checkpoint_every, derivs, options)
    # Pass 1: the step sequence.
    cls = solver_class("Reversible" if reversible else method_id)
    sol_jac = None if jac is None else (lambda t, y: jac(t, y, p))
    if get_method(method_id).family == "rosenbrock":
        options["autonomous"] = autonomous
    first = solve_ivp(lambda t, y: fun(t, y, p), t_span, y0, method=cls, jac=sol_jac, tstops=t_out, **options)
    counts = dict(nfev=first.nfev, njev=first.njev, nlu=first.nlu)
    if first.status != 0:  # report the partial solution, as solve_ivp does, without derivatives
        return OdeResult(t=first.t, y=first.y, t_steps=first.t, status=first.status, message=first.message,
                         success=False, **counts)
    steps = first.t
    if t_out is None:
        out_index = np.arange(steps.size)
    else:
        out_index = _indices_of(steps, t_out)
    # Pass 2: replay and differentiate.
    replay = sensitivity_on_steps(fun, steps, y0, p, method=method, out_index=out_index, mode=mode, loss=loss,
                                  loss_grad=loss_grad, jac=jac, jac_p=jac_p, checkpoint_every=checkpoint_every,
                                  autonomous=autonomous, base=base, coupling=coupling, derivatives=derivs)
    replay.update(counts)
    if replay.status == 0:
        replay.message = first.message
    return replay


def sensitivity_on_steps(fun, steps, y0, p, method="RadauIIA5", out_index=None, mode="forward", loss=None,
                         loss_grad=None, jac=None, jac_p=None, checkpoint_every=None, autonomous=False,
                         base="backward_euler", coupling=DEFAULT_COUPLING, derivatives=None, orders=None,
                         restarts=None):
    """Differentiate the discrete solution of ``method`` on a given step sequence ``steps``
    (t_0, t_1, ..., t_N), with outputs at ``steps[out_index]`` (default: every step end).

    The second pass of :func:`solve_ivp_sensitivity`, usable on its own when the steps are
    fixed in advance (for example to compare backends on one step grid).  ``"FBDF"`` and
    ``"QNDF"`` also need each step's order in ``orders`` (and in ``restarts`` whether it
    starts a new history at order 1: the first step, and the first after a jump).
    """
    if mode not in ("forward", "reverse"):
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    if mode == "reverse" and loss is None:
        raise ValueError("mode='reverse' needs loss=callable(Y) -> float")
    steps = np.asarray(steps, dtype=float)
    y0 = np.asarray(y0, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    # negative indices count from the end, as in numpy; out of range raises IndexError
    out_index = np.arange(steps.size) if out_index is None else np.arange(steps.size)[np.asarray(out_index)]
    derivs = derivatives or Derivatives(fun, y0.size, p, jac, jac_p)
    if _is_variable_order(method):
        if orders is None:
            raise ValueError(f"method={method!r} needs orders=[the order of each step]")
        restarts = [True] + [False] * (len(orders) - 1) if restarts is None else restarts
        replay = MultistepReplay(method, derivs, steps, orders, restarts)
        return _replay_multistep(replay, y0, p, out_index, mode, loss, loss_grad, checkpoint_every)
    reversible = method == "Reversible"
    method_id = get_method(base if reversible else method).id
    base_map = step_map(method_id, derivs, autonomous)
    result = OdeResult(t=steps[out_index], t_steps=steps, status=0, message="", success=True)

    def replay():
        if reversible:
            run = _reversible_forward if mode == "forward" else _reversible_reverse
            run(result, ReversiblePairMap(base_map, check_coupling(coupling)), steps, out_index, y0, p, loss, loss_grad)
        elif mode == "forward":
            _forward(result, base_map, steps, out_index, y0, p)
        else:
            _reverse(result, base_map, steps, out_index, y0, p, loss, loss_grad, checkpoint_every)

    return _checked(result, replay, rows=y0.size * get_method(method_id).stages)


def _checked(result, replay, rows):
    """``result`` after ``replay()`` filled it: a step that failed to converge, or a NaN or inf
    among the outputs (a NaN loss made NaN gradients that were reported as a success), becomes
    status -1 with the reason.  ``rows``: of the largest dense system a step solves (BLAS
    threads, :func:`blas_threads_for`)."""
    try:
        with blas_threads_for(rows):
            replay()
    except StepFailed as exc:
        result.update(status=-1, success=False, message=f"sensitivity replay failed: {exc}")
        return result
    bad = _non_finite(result)
    if bad:
        result.update(status=-1, success=False, message=f"the {bad} is not finite (NaN or inf)")
    return result


def _checkpoint_interval(every, n_steps: int) -> int:
    every = every or max(1, math.isqrt(max(n_steps, 1)))
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
    return every


def _is_variable_order(method) -> bool:
    from . import VARIABLE_ORDER_CLASSES

    return isinstance(method, str) and method.lower() in VARIABLE_ORDER_CLASSES


def _multistep_sensitivity(fun, t_span, y0, p, method, t_out, mode, loss, loss_grad, jac, jac_p, every, derivs,
                           options):
    """solve_ivp_sensitivity for FBDF/QNDF: pass 1 drives the solver itself, to record each
    step's order and restarts beside its times; pass 2 replays them."""
    from . import solver_class

    solver = solver_class(method)(lambda t, y: fun(t, y, p), float(t_span[0]), y0, float(t_span[1]), tstops=t_out,
                                  jac=None if jac is None else (lambda t, y: jac(t, y, p)), **options)
    steps = [solver.t]
    while solver.status == "running":
        message = solver.step()
        steps.append(solver.t)
    counts = dict(nfev=solver.nfev, njev=solver.njev, nlu=solver.nlu)
    steps = np.array(steps)
    if solver.status == "failed":
        return OdeResult(t=steps, y=None, t_steps=steps, status=-1, message=message, success=False, **counts)
    out_index = np.arange(steps.size) if t_out is None else _indices_of(steps, t_out)
    replay = MultistepReplay(method, derivs, steps, solver.orders, solver.restarts)
    result = _replay_multistep(replay, y0, p, out_index, mode, loss, loss_grad, every)
    result.update(counts, orders=np.array(solver.orders))
    if result.status == 0:
        result.message = "The solver successfully reached the end of the integration interval."
    return result


def _indices_of(steps, t_out):
    index = np.searchsorted(steps, t_out) if steps[-1] >= steps[0] else \
        steps.size - 1 - np.searchsorted(steps[::-1], t_out)
    if not np.allclose(steps[index], t_out, rtol=0, atol=0):
        raise RuntimeError("internal error: the step sequence missed an output time")
    return index


def _replay_multistep(replay, y0, p, out_index, mode, loss, loss_grad, every):
    steps = replay.steps
    result = OdeResult(t=steps[out_index], t_steps=steps, status=0, message="", success=True)
    if mode == "reverse":
        every = _checkpoint_interval(every, steps.size - 1)

    def run():
        if mode == "forward":
            result.y, result.sensitivities = multistep_forward(replay, y0, p, out_index)
            return
        Y, checkpoints = multistep_outputs(replay, y0, p, out_index, every)
        seeds = _seed(out_index, _finish_loss(result, Y, loss, loss_grad))
        result.grad, result.grad_y0 = multistep_reverse(replay, p, seeds, checkpoints, every)
        result.checkpoints = len(checkpoints)

    return _checked(result, run, rows=y0.size)


def _non_finite(result) -> str:
    """Which of loss, grad, grad_y0, sensitivities is NaN or inf ('' if none): a NaN loss made
    NaN gradients that were reported as a success."""
    for name in ("loss", "grad", "grad_y0", "sensitivities"):
        value = result.get(name)
        if value is not None and not np.all(np.isfinite(value)):
            return name
    return ""


def _forward(result, phi, steps, out_index, y0, p):
    n, P = y0.size, p.size
    wanted = set(out_index.tolist())
    Y, S = [], []
    y, s = y0, np.zeros((n, P))
    if 0 in wanted:
        Y.append(y), S.append(s)
    for k in range(steps.size - 1):  # s_new = dPhi/dy s + dPhi/dp: P directions, no n x n matrix
        y, s = phi.tangent(steps[k], y, steps[k + 1] - steps[k], p, s, None)
        if k + 1 in wanted:
            Y.append(y), S.append(s)
    result.y = np.array(Y).T
    result.sensitivities = np.moveaxis(np.array(S), 0, -1)


def _seed(out_index, G):
    """Map step index -> dL/dy at that output."""
    seeds: dict = {}
    for col, k in enumerate(out_index.tolist()):
        seeds[k] = seeds.get(k, 0) + G[:, col]
    return seeds


def _finish_loss(result, Y, loss, loss_grad):
    result.y = Y
    result.loss = float(np.real(loss(Y)))
    G = np.asarray(loss_grad(Y) if loss_grad is not None else _loss_gradient(loss, Y), dtype=float)
    if G.shape != Y.shape:
        raise ValueError(f"loss_grad returned shape {G.shape}, expected {Y.shape}")
    return G


#: Reverse mode keeps every step's pullback in one pass when they fit in this many bytes (a
#: dense upper bound), instead of checkpoints every sqrt(N) steps and a second replay.
PULLBACK_MEMORY = 2**28


def _reverse(result, phi, steps, out_index, y0, p, loss, loss_grad, every):
    n_steps, n = steps.size - 1, y0.size
    if every is None and n_steps * phi.pullback_bytes(n, p.size) <= PULLBACK_MEMORY:
        every = max(n_steps, 1)                  # everything fits: one pass, no recomputation
    every = _checkpoint_interval(every, n_steps)
    keep_all = every >= n_steps
    wanted = set(out_index.tolist())
    checkpoints, outputs, kept = {0: y0}, {}, []
    y = y0
    if 0 in wanted:
        outputs[0] = y
    for k in range(n_steps):
        if keep_all:
            y, back = phi.pullback(steps[k], y, steps[k + 1] - steps[k], p)
            kept.append(back)
        else:
            y, _, _ = phi(steps[k], y, steps[k + 1] - steps[k], p, derivatives=False)
        if (k + 1) % every == 0:
            checkpoints[k + 1] = y
        if k + 1 in wanted:
            outputs[k + 1] = y
    Y = np.array([outputs[k] for k in out_index.tolist()]).T
    seeds = _seed(out_index, _finish_loss(result, Y, loss, loss_grad))
    ybar = np.array(seeds.get(n_steps, np.zeros(n)), dtype=float)
    pbar = np.zeros(p.size)
    for start in range((n_steps - 1) // every * every, -1, -every):
        stop = min(start + every, n_steps)
        pullbacks = kept
        if not keep_all:  # recompute the segment, keeping what each step's adjoint needs
            y, pullbacks = checkpoints[start], []
            for k in range(start, stop):
                y, back = phi.pullback(steps[k], y, steps[k + 1] - steps[k], p)
                pullbacks.append(back)
        for k in range(stop - 1, start - 1, -1):
            ybar, dp = pullbacks[k - start](ybar)
            pbar += dp
            ybar = ybar + seeds.get(k, 0)
    result.grad, result.grad_y0 = pbar, ybar
    result.checkpoints = len(checkpoints)


def _reversible_forward(result, pair, steps, out_index, y0, p, loss, loss_grad):
    n, P = y0.size, p.size
    wanted = set(out_index.tolist())
    y, z = y0, y0.copy()
    sy, sz = np.zeros((n, P)), np.zeros((n, P))
    Y, S = ([y], [sy]) if 0 in wanted else ([], [])
    for k in range(steps.size - 1):
        y, z, blocks = pair.jacobians(steps[k], steps[k + 1], y, z, p)
        sy, sz = pair.tangent(blocks, sy, sz, np.eye(P))
        if k + 1 in wanted:
            Y.append(y), S.append(sy)
    result.y = np.array(Y).T
    result.sensitivities = np.moveaxis(np.array(S), 0, -1)


def _reversible_reverse(result, pair, steps, out_index, y0, p, loss, loss_grad):
    """Adjoint sweep that rebuilds each state with the reversible backward step: no stored
    trajectory, so memory does not depend on the number of steps."""
    n_steps = steps.size - 1
    out_list = out_index.tolist()
    Y = np.empty((y0.size, len(out_list)))
    y, z = y0, y0.copy()
    for col, k in enumerate(out_list):
        if k == 0:
            Y[:, col] = y0
    for k in range(n_steps):
        y, z = pair.forward(steps[k], steps[k + 1], y, z, p)
        for col, kk in enumerate(out_list):
            if kk == k + 1:
                Y[:, col] = y
    seeds = _seed(out_index, _finish_loss(result, Y, loss, loss_grad))
    ybar, zbar, pbar = np.array(seeds.get(n_steps, np.zeros(y0.size)), dtype=float), np.zeros(y0.size), np.zeros(p.size)
    for k in range(n_steps - 1, -1, -1):
        y, z = pair.backward(steps[k], steps[k + 1], y, z, p)
        _, _, blocks = pair.jacobians(steps[k], steps[k + 1], y, z, p)
        ybar, zbar, dp = pair.adjoint(blocks, ybar, zbar)
        pbar += dp
        ybar = ybar + seeds.get(k, 0)
    result.grad, result.grad_y0 = pbar, ybar + zbar
    result.reconstruction_error = float(np.max(np.abs(y - y0)) / max(np.max(np.abs(y0)), 1e-300))


def diagnose(fun, t_span, y0, p, method="RadauIIA5", jac=None, jac_p=None, param_names=None, coupling=None,
             output_times=None, loss_grad=None, log_params=False, **options):
    """Solve with ``method``, then build stiffcore's gradient diagnosis from the accepted steps:
    df/dy and df/dp at every step start (the user's callables, else complex step or
    differences), the states for scaling advice.  With ``output_times`` and
    ``loss_grad(Y) -> dL/dY`` (Y: the states there, (n, M) as ``sol.y`` and as
    :func:`solve_ivp_sensitivity` takes them) the steps stop at those times and
    each parameter also gets its predicted dL/dp; ``log_params=True`` says ``p`` are already
    logarithms of rates (no log-parameterisation advice).  Returns
    :class:`stiffcore.diagnostics.Diagnosis`."""
    from stiffcore.diagnostics import cotangents_on_steps
    from stiffcore.diagnostics import diagnose as core_diagnose
    from stiffcore.diagnostics import refuse_variable_order

    from . import solver_class

    refuse_variable_order(method)
    p = np.asarray(p, dtype=float).ravel()
    y0 = np.asarray(y0, dtype=float).ravel()
    derivs = Derivatives(fun, y0.size, p, jac, jac_p)
    reversible = method == "Reversible"
    if reversible:
        options["coupling"] = check_coupling(DEFAULT_COUPLING if coupling is None else coupling)
        coupling = options["coupling"]
    if output_times is not None:
        if loss_grad is None:
            raise ValueError("output_times need loss_grad, the loss's dL/dY at those times")
        options["tstops"] = output_times
    sol = solve_ivp(lambda t, y: fun(t, y, p), t_span, y0, method=solver_class(method),
                    jac=None if jac is None else (lambda t, y: jac(t, y, p)), **options)
    if sol.status != 0:
        raise RuntimeError(f"diagnose: the solve failed: {sol.message}")
    cotangents = None
    if output_times is not None:
        cotangents = cotangents_on_steps(sol.t, sol.y.T, output_times, lambda Y: np.asarray(loss_grad(Y.T)).T)
    t, Y = sol.t[:-1], sol.y[:, :-1].T
    base = get_method(options.get("base", "backward_euler") if reversible else method).id
    jacobians = np.array([derivs.dfdy_dense(ti, yi, p) for ti, yi in zip(t, Y)])
    return core_diagnose(base, t, np.diff(sol.t), jacobians=jacobians,
                         param_jacobians=np.array([derivs.dfdp(ti, yi, p) for ti, yi in zip(t, Y)]),
                         param_names=param_names, params=p, states=sol.y.T, coupling=coupling,
                         output_cotangents=cotangents, log_params=log_params)


def diagnose_problem(problem, method="RadauIIA5", rtol=1e-6, times=None):
    """(report, measured d/dp of sum(y(times)^2)) for a :mod:`stiffcore.problems` problem."""
    opts = dict(method=method, jac=problem.jac, jac_p=problem.jac_p, rtol=rtol, atol=rtol * 1e-4)
    report = diagnose(problem.rhs, problem.t_span, problem.y0, problem.params, param_names=problem.param_names,
                      output_times=times, loss_grad=lambda Y: 2 * Y, log_params=problem.log_params, **opts)
    res = solve_ivp_sensitivity(problem.rhs, problem.t_span, problem.y0, problem.params, t_eval=times,
                                mode="reverse", loss=lambda Y: (Y**2).sum(), loss_grad=lambda Y: 2 * Y, **opts)
    return report, res.grad
