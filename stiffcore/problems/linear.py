"""The linear test equation y' = lambda y (Dahlquist), with its exact solution."""

from __future__ import annotations

import numpy as np

from .base import Problem


def test_equation(lam: float = -1.0, y0: float = 1.0, t1: float = 1.0) -> Problem:
    """y' = lambda y on [0, t1]; the parameter is lambda, the reference is y0 exp(lambda t1)."""
    return Problem(
        name="linear",
        description=f"y' = lambda y with lambda = {lam}",
        y0=np.array([float(y0)]),
        t_span=(0.0, float(t1)),
        params=np.array([float(lam)]),
        param_names=("lambda",),
        species=("y",),
        rhs=lambda t, y, p: p[0] * y,
        jac=lambda t, y, p: np.array([[p[0]]]),
        jac_p=lambda t, y, p: np.reshape(y, (1, 1)),
        reference=(float(t1), np.array([y0 * np.exp(lam * t1)])),
        reference_note="exact",
    )


test_equation.__test__ = False  # not a pytest test, despite the name
