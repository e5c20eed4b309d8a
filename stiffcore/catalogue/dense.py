"""Continuous extensions as matrices on a step's increments, written once for every adapter.

A one-step method's output between t0 and t0 + h is ``y(t0 + theta h) = y0 + sum_k c_k
theta^k`` (k = 1..degree), with coefficient rows ``c = D @ increments``.  Which increments
``D`` acts on depends on the family:

- Runge-Kutta with a continuous extension (the collocation polynomial of Radau IIA,
  Gauss-Legendre, ...; Hairer, Norsett & Wanner I, II.7): the stage increments
  ``Z_j = h K_j``.
- Rosenbrock (Steinebach's dense output of Rodas4 and Rodas5P, Hairer & Wanner IV.7;
  ode23s's interpolant for Rosenbrock23, Shampine & Reichelt 1997): the transformed stage
  values ``k_j`` of :meth:`RosenbrockTableau.transformed`.
- DIRKs published without one (Kvaerno3/4/5, TR-BDF2): extensions derived from the
  continuous order conditions with the stiff output kept bounded
  (:func:`stiffcore.catalogue.runge_kutta.bounded_continuous_extension`), on the stage
  increments as above.
- Everything else: the cubic Hermite interpolant of ``(y1 - y0, h f0, h f1)``, third
  order, so it is below the error of a step only for methods of order <= 3
  (:func:`interpolation_order` says which is used).  Its ``h f`` terms grow like h lambda
  on stiff components, which is why no implicit method of order above 2 relies on it (the
  low-order ones without an extension, BackwardEuler, Trapezoid, ImplicitMidpoint, SDIRK2
  and LobattoIIIC2, still do, without interpolation control: :func:`controls_interpolation`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .method import Method
from .tableau import ButcherTableau, RosenbrockTableau

#: Cubic Hermite on (y1 - y0, h f0, h f1): c1 = h f0, c2 = 3 dy - 2 h f0 - h f1, c3 = -2 dy + h f0 + h f1.
HERMITE = np.array([[0.0, 1.0, 0.0], [3.0, -2.0, -1.0], [-2.0, 1.0, 1.0]])
HERMITE.setflags(write=False)


@lru_cache(maxsize=None)
def _matrix(method_id: str) -> np.ndarray | None:
    from . import get_method

    tab = get_method(method_id).coefficients
    if isinstance(tab, ButcherTableau) and tab.dense is not None:
        out = tab.dense.T.copy()                     # c_{k+1} = sum_j dense[j, k] Z_j
    elif isinstance(tab, RosenbrockTableau) and tab.dense is not None:
        # weights on the untransformed stages k = Gamma^-1 u (Hairer & Wanner IV.7, eq. 7.23)
        out = tab.dense.T @ np.linalg.inv(tab.gamma)
    elif isinstance(tab, RosenbrockTableau) and tab.dense_transformed is not None:
        # theta (y1 - y0) + theta (1 - theta) sum_r theta^(r-1) K_r, with y1 - y0 = m.k, K = H k
        H = tab.dense_transformed
        m = tab.transformed()[2]
        out = np.zeros((H.shape[0] + 1, tab.stages))
        out[0] = m
        out[:-1] += H
        out[1:] -= H
    else:
        return None
    out.setflags(write=False)
    return out


def dense_matrix(method: str | Method) -> np.ndarray | None:
    """``D`` with ``c = D @ increments`` (module docstring), or None where the method has no
    published continuous extension and adapters use :data:`HERMITE`."""
    return _matrix(method if isinstance(method, str) else method.id)


def interpolation_order(method: str | Method) -> int:
    """Order of the output between step ends: the continuous extension's degree (the
    collocation polynomial and Steinebach's extensions are of the degree's order at most,
    and never above the method's), or 3 for the Hermite fallback."""
    from . import get_method

    method = get_method(method)
    D = dense_matrix(method)
    return 3 if D is None else min(method.order, D.shape[0])


#: Where the interpolation error is estimated: a quarter and three quarters into the step.
#: Mid-step alone missed errors shaped like theta (1 - theta) (1 - 2 theta), which vanish
#: there: Kvaerno4's extension on HIRES was 32x the tolerance with a mid-step estimate of 0.9
#: (1.0x with these two).  Symmetric errors, peaking mid-step, are seen at 56% of their peak.
DEFECT_THETAS = (0.25, 0.75)


def value_and_scaled_slope(y0, coeffs, theta: float):
    """``u = y0 + sum_k c_k theta^k`` and ``h u'`` at ``t0 + theta h`` (any framework's
    arrays; rows ``coeffs[k - 1] = c_k``).  Nothing divides by h, so a zero-length step
    stays finite (and differentiable) under ``jax.vmap``.

    The continuous extension's error there is estimated from its defect,
    ``h delta = h u' - h f(t0 + theta h, u)``, as ``theta (I - h gamma J)^-1 h delta``: the
    error e of the extension obeys e' = J e + delta, e(0) = 0, and the (I - h gamma J)^-1
    factor (a backward-Euler-like solve over theta h, with the step's own matrix) keeps stiff
    components, whose defect is large but whose error is damped, from dominating (Shampine's
    filtering of the ode23s estimate, Shampine & Reichelt 1997; Enright's defect control).
    Adapters take the largest of these at :data:`DEFECT_THETAS` and the embedded estimate,
    component by component, so steps are accepted only when the output between them meets
    the tolerance too."""
    u, slope = y0, 0.0 * y0
    for k in range(len(coeffs)):
        u = u + coeffs[k] * theta ** (k + 1)
        slope = slope + coeffs[k] * ((k + 1) * theta ** k)
    return u, slope


def interpolation_defects(y0, coeffs, h, f_at, stiff_filter):
    """The continuous extension's error estimates ``theta (I - h gamma J)^-1 (h u' - h f(t0 +
    theta h, u))`` at each theta of :data:`DEFECT_THETAS` (see :func:`value_and_scaled_slope`),
    one at a time, in any framework's arrays: ``f_at(theta, u)`` is f at t0 + theta h and
    ``stiff_filter`` the step's own (I - h gamma J)^-1.  Every adapter raises its step's
    estimate to these, component by component, with its framework's ``where``."""
    for theta in DEFECT_THETAS:
        u, h_slope = value_and_scaled_slope(y0, coeffs, theta)
        yield theta * stiff_filter(h_slope - h * f_at(theta, u))


#: Stage predictors extrapolate the previous step's extension at most this many of its own
#: steps ahead (beyond it, a polynomial's extrapolation is a worse guess than a stage value).
MAX_PREDICTOR_THETA = 3.0


def extrapolated_change(coeffs, theta):
    """``y(t_prev + theta h_prev) - y(t_prev + h_prev)`` from the previous step's coefficient
    rows (``coeffs[k - 1] = c_k``, any framework's arrays): the change from the last step end
    to a point ``theta`` previous steps along, for Newton's starting guess of a stage at
    ``theta = 1 + c_i h / h_prev`` (RADAU5's predictor, Hairer & Wanner IV.8; SciPy uses it
    for every implicit Runge-Kutta method with an extension)."""
    out = 0.0 * coeffs[0]
    for k in range(len(coeffs)):
        out = out + coeffs[k] * (theta ** (k + 1) - 1.0)
    return out


def controls_interpolation(method: str | Method) -> bool:
    """Whether adapters add the interpolation error estimate to the step's: every adaptive
    method with a continuous extension, and those of order >= 3 without one (explicit bases,
    on cubic Hermite).  Below order 3 cubic Hermite is more accurate than the steps and control
    only added steps (TRBDF2 before its derived extension: 2.5x on ROBER for the same error)."""
    from . import get_method

    method = get_method(method)
    return method.adaptive and (dense_matrix(method) is not None or 3 <= method.order)
