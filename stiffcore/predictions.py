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


def _multistep(method: str | Method) -> Method:
    method = get_method(method)
    if method.is_one_step:
        raise ValueError(f"{method.id!r} is a one-step method; the multistep prediction needs a multistep "
                         "formula (bdf1..bdf5, ndf1..ndf4)")
    return method


def multistep_gradient(method: str | Method, z, h: float = 1.0, n_steps: int | None = None,
                       y0: float = 1.0) -> np.ndarray:
    """d y_N / d lambda of a k-step formula on y' = lambda y from exact starting values.

    y_j = e^{j z} y0 for j < k (they depend on lambda too: d y_j / d lambda = j h y_j), then
    ``sum_j (rho_j - z sigma_j) y_{n+j} = 0`` and its lambda-derivative, run in 60-digit
    arithmetic, so every root of rho - z sigma (not only the principal one) and every
    starting value's dependence on lambda is in the prediction.  ``n_steps`` = N counts from
    y_0 (default k + 4: five steps of the formula), N >= k."""
    import mpmath

    method = _multistep(method)
    coef = method.coefficients
    k = coef.steps
    n_steps = k + 4 if n_steps is None else n_steps
    _check_run(h, n_steps, y0)
    if n_steps < k:
        raise ValueError(f"n_steps must be at least the {k} starting values of {method.id}, got {n_steps}")
    z = as_z(z)
    out = np.empty(np.shape(z))
    rho = [mpmath.mpf(float(r)) for r in coef.rho]
    sigma = [mpmath.mpf(float(s)) for s in coef.sigma]
    with mpmath.workdps(60):
        hh, yy0 = mpmath.mpf(float(h)), mpmath.mpf(float(y0))
        for idx, zi in np.ndenumerate(np.asarray(z, dtype=float)):
            zm = mpmath.mpf(float(zi))
            ys = [mpmath.exp(j * zm) * yy0 for j in range(k)]
            ss = [j * hh * y for j, y in enumerate(ys)]
            for n in range(k, n_steps + 1):
                window, dwindow = ys[n - k:], ss[n - k:]
                lead = rho[k] - zm * sigma[k]
                y_new = -sum((rho[j] - zm * sigma[j]) * window[j] for j in range(k)) / lead
                # d/d lambda of sum_j (rho_j - z sigma_j) y_{n-k+j} = 0, with dz/dlambda = h
                ds = (hh * sum(sigma[j] * window[j] for j in range(k)) + hh * sigma[k] * y_new
                      - sum((rho[j] - zm * sigma[j]) * dwindow[j] for j in range(k))) / lead
                ys.append(y_new)
                ss.append(ds)
            out[idx] = float(ss[n_steps])
    return out if out.ndim else out[()]


def multistep_decay_exponent(method: str | Method, n_steps: int | None = None) -> float:
    """The exponent e of |d y_N / d lambda| ~ |z|^e as z -> -inf, from exact starting values.

    With sigma = zeta^k (BDF, NDF), y_n = -sum_{j<k} rho_j y_{n-k+j} / (rho_k - z): as z -> -inf
    each new value is the largest of its window over z.  The starting values y_1..y_{k-1}
    vanish like e^{j z} and y_0 is O(1), so y_n ~ z^-p(n) with p(n) = 1 + min of p over the
    window (p(0) = 0, p(1..k-1) = inf); d/d lambda = h d/dz adds one power."""
    method = _multistep(method)
    coef = method.coefficients
    k = coef.steps
    if np.any(coef.sigma[:-1] != 0) or np.any(coef.rho[:-1] == 0):
        raise ValueError(f"{method.id}: the exponent is derived for sigma = zeta^k and rho_j != 0 (BDF, NDF)")
    n_steps = k + 4 if n_steps is None else n_steps
    powers = [0.0] + [math.inf] * (k - 1)
    for n in range(k, n_steps + 1):
        powers.append(1 + min(powers[n - k:n]))
    return -(powers[n_steps] + 1)
