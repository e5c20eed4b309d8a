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
- Everything else: the cubic Hermite interpolant of ``(y1 - y0, h f0, h f1)``, third
  order, so it is below the error of a step only for methods of order <= 3
  (:func:`interpolation_order` says which is used).
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
