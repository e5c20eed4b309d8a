"""Van der Pol oscillator y'' - mu (1 - y^2) y' + y = 0 as a first-order system.

y1' = y2, y2' = mu (1 - y1^2) y2 - y1; stiff for large mu (Hairer & Wanner II, IV.1).
"""

from __future__ import annotations

import numpy as np

from ._arrays import stack_last
from .base import Problem


def _rhs(t, y, p):
    y1, y2 = y[..., 0], y[..., 1]
    return stack_last([y2, p[0] * (1 - y1 * y1) * y2 - y1], y)


def _jac(t, y, p):
    y1, y2 = y
    return np.array([[0.0, 1.0], [-2 * p[0] * y1 * y2 - 1, p[0] * (1 - y1 * y1)]])


def _jac_p(t, y, p):
    y1, y2 = y
    return np.array([[0.0], [(1 - y1 * y1) * y2]])


VANDERPOL = Problem(
    name="vanderpol",
    description="Van der Pol oscillator with stiffness parameter mu = 1000, y0 = [2, 0], t in [0, 2]",
    y0=np.array([2.0, 0.0]),
    t_span=(0.0, 2.0),
    params=np.array([1000.0]),
    param_names=("mu",),
    species=("y", "dy/dt"),
    rhs=_rhs,
    jac=_jac,
    jac_p=_jac_p,
)
