"""What every backend must reproduce on the test equation y' = lambda y.

N fixed steps of size h from y0 give y_N = R(z)^N y0 with z = h lambda, hence

    d y_N / d lambda = N h R(z)^(N-1) R'(z) y0

(Fronk & Petzold 2025, arXiv 2508.01519, sec. 3).  The exact flow has
y(T) = e^{N z} y0 and dy/dlambda = N h e^{N z} y0; their ratio is the attenuation
the discretisation imposes on the gradient.  For BDF the principal root xi(z)
replaces R (exact starting values on the principal root assumed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .catalogue import Method, get_method
from .stability import as_z

_LN10 = math.log(10.0)


def _check_run(h: float, n_steps: int, y0: float) -> None:
    if not (isinstance(h, (int, float, np.floating)) and math.isfinite(h) and h > 0):
        raise ValueError(f"step size h must be a positive finite number, got {h!r}")
    if not (isinstance(n_steps, (int, np.integer)) and n_steps >= 1):
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if not np.isfinite(y0):
        raise ValueError(f"y0 must be finite, got {y0!r}")


@dataclass(frozen=True)
class GradientPrediction:
    """Discrete and exact values of y_N and d y_N / d lambda on the test equation."""

    method: str
    z: np.ndarray
    h: float
    n_steps: int
    y0: float
    y_n: np.ndarray
    dy_dlambda: np.ndarray
    exact_y: np.ndarray
    exact_dy_dlambda: np.ndarray

    @property
    def log10_attenuation(self) -> np.ndarray:
        """log10 |discrete gradient / exact gradient|, computed in logs so that
        neither e^{N z} nor R^N underflows."""
        stab = get_method(self.method).stability
        n = self.n_steps
        with np.errstate(divide="ignore"):
            log_r = (n - 1) * np.log(np.abs(stab(self.z))) if n > 1 else 0.0
            log_dr = np.log(np.abs(stab.derivative(self.z)))
        return (log_r + log_dr - n * np.real(self.z)) / _LN10

    @property
    def attenuation(self) -> np.ndarray:
        return 10.0 ** self.log10_attenuation


def one_step_gradient(method: str | Method, z, h: float = 1.0, y0: float = 1.0):
    """d y_1 / d lambda = h R'(z) y0 for one step: the quantity conformance check (a) compares."""
    _check_run(h, 1, y0)
    return h * get_method(method).stability.derivative(as_z(z)) * y0


def predict_test_equation(method: str | Method, z, h: float = 1.0, n_steps: int = 1,
                          y0: float = 1.0) -> GradientPrediction:
    """y_N and d y_N / d lambda after ``n_steps`` steps of size ``h`` at z = h lambda."""
    method = get_method(method)
    _check_run(h, n_steps, y0)
    z = as_z(z)
    stab = method.stability
    r, dr = stab(z), stab.derivative(z)
    n = n_steps
    with np.errstate(under="ignore", over="ignore"):
        y_n = r**n * y0
        dy = n * h * r ** (n - 1) * dr * y0
        exact_y = np.exp(n * z) * y0
        exact_dy = n * h * np.exp(n * z) * y0
    return GradientPrediction(method.id, z, float(h), n, float(y0), y_n, dy, exact_y, exact_dy)
