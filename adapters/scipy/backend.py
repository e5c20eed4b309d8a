"""The SciPy backend's hooks (announced in :mod:`stiffcore.adapters.backends`, entry
point ``scipy``, and imported on the suite's first call).

Loading it imports the adapter package (which registers the solve_ivp methods), hence
SciPy.  Every gradient here is the adapter's own discrete differentiation
(implicit function theorem for Runge-Kutta stages, complex step through Rosenbrock steps).
"""

from __future__ import annotations

import numpy as np

from stiffcore.plugins import hooks_from_linear_gradient


def _linear(lam: float):
    """y' = lam y as (fun, jac, jac_p) of fun(t, y, p) with p = [lam]."""
    return (lambda t, v, p: p[0] * v, lambda t, v, p: np.reshape(p[0], (1, 1)), lambda t, v, p: np.reshape(v, (1, 1)))


def _tangent_of_steps(method_id: str, z, h: float, y0: float, n_steps: int):
    from .sensitivity import sensitivity_on_steps

    z = np.asarray(z, dtype=float)
    out = np.empty(z.shape)
    steps = h * np.arange(n_steps + 1)
    for idx, zi in np.ndenumerate(z):
        fun, jac, jac_p = _linear(zi / h)
        res = sensitivity_on_steps(fun, steps, [y0], [zi / h], method=method_id, out_index=[n_steps],
                                   jac=jac, jac_p=jac_p, autonomous=True)
        out[idx] = res.sensitivities[0, 0, 0]
    return out


one_step_gradient, n_step_gradient = hooks_from_linear_gradient(_tangent_of_steps)


def multistep_gradient(method_id: str, z, h: float = 1.0, y0: float = 1.0, n_steps: int | None = None):
    """d y_N / d lambda of the fixed-order formula ``method_id`` (bdf1..5, ndf1..4) on
    y' = lambda y: exact starting values y_j = e^{j z} y0 (j < s, the formula's steps) as the
    FBDF/QNDF difference table and its tangent, then the adapter's own step and tangent
    maps (:mod:`._multistep_sensitivity`) at the fixed step h up to y_N."""
    from stiffcore import multistep as ms
    from stiffcore.catalogue import VARIABLE_ORDER, get_method

    from ._derivatives import Derivatives
    from ._multistep_sensitivity import MultistepReplay, forward

    method = get_method(method_id)
    k, s = method.order, method.stages
    family = next(f for f in VARIABLE_ORDER.values() if f.members[k - 1] == method.id)
    n_steps = s + 4 if n_steps is None else n_steps
    z = np.asarray(z, dtype=float)
    out = np.empty(z.shape)
    j = np.arange(s)
    steps = h * np.arange(s - 1, n_steps + 1)
    for idx, zi in np.ndenumerate(z):
        lam = zi / h
        fun, jac, jac_p = _linear(lam)
        values = np.exp(j * zi) * y0
        table = ms.table_from_history(values[:, None])
        tangent = ms.table_from_history((j * h * values)[:, None, None])
        replay = MultistepReplay(family, Derivatives(fun, 1, np.array([lam]), jac, jac_p), steps,
                                 [k] * (steps.size - 1), [False] * (steps.size - 1), given_table=True)
        _, sens = forward(replay, None, np.array([lam]), [steps.size - 1], table=table, tangent=tangent,
                          h_table=h)
        out[idx] = sens[0, 0, 0]
    return out


def reversible_run(base_id: str, z, h: float, y0: float, n_steps: int, coupling: float,
                   perturbation: float = 0.0, gradient: bool = True) -> dict:
    """The reversible scheme on y' = lambda y for every lambda = z / h at once (one diagonal
    system, one per-step loop): forward n steps (with the tangent if ``gradient``), then
    (y_n scaled by 1 + perturbation) back n steps."""
    from ._derivatives import Derivatives
    from ._step_maps import ReversiblePairMap, step_map

    lam = np.atleast_1d(np.asarray(z, dtype=float)) / h
    m = lam.size
    derivs = Derivatives(lambda t, v, p: p * v, m, lam, lambda t, v, p: np.diag(p), lambda t, v, p: np.diag(v))
    pair = ReversiblePairMap(step_map(base_id, derivs, autonomous=True), coupling)
    y, w = np.full(m, float(y0)), np.full(m, float(y0))
    dy, dw = np.zeros((m, m)), np.zeros((m, m))
    t = h * np.arange(n_steps + 1)
    for k in range(n_steps):
        if gradient:
            y, w, blocks = pair.jacobians(t[k], t[k + 1], y, w, lam)
            dy, dw = pair.tangent(blocks, dy, dw, np.eye(m))
        else:
            y, w = pair.forward(t[k], t[k + 1], y, w, lam)
    y_n = y.copy()
    y = y * (1 + perturbation)
    for k in reversed(range(n_steps)):
        y, w = pair.backward(t[k], t[k + 1], y, w, lam)
    return dict(y_n=y_n, y0_rebuilt=y, dy_dlambda=np.diag(dy).copy() if gradient else np.full(m, np.nan))


def rober_gradient(method_id: str, times, steps=None, rtol=None):
    """d/d(log k) of sum(y(times)^2) on ROBER, on the step grid ``steps`` or adaptively at ``rtol``."""
    from stiffcore.problems import ROBER

    from .sensitivity import sensitivity_on_steps, solve_ivp_sensitivity

    rober = ROBER.log_parameterised()
    common = dict(method=method_id, mode="reverse", loss=lambda Y: (Y**2).sum(), loss_grad=lambda Y: 2 * Y,
                  jac=rober.jac, jac_p=rober.jac_p, autonomous=True)
    times = np.asarray(times, dtype=float)
    if steps is not None:
        steps = np.asarray(steps, dtype=float)
        res = sensitivity_on_steps(rober.rhs, steps, rober.y0, rober.params, out_index=np.searchsorted(steps, times),
                                   **common)
    else:
        res = solve_ivp_sensitivity(rober.rhs, (0.0, times[-1]), rober.y0, rober.params, t_eval=times, rtol=rtol,
                                    atol=rtol * 1e-4, **common)
    if res.status != 0:
        raise RuntimeError(f"scipy backend: ROBER solve failed: {res.message}")
    return res.grad


def install() -> None:
    from . import register

    register()
