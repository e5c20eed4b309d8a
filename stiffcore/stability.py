"""Linear stability of catalogue methods: R(z), R'(z), classification and stiff decay.

For a one-step method applied to y' = lambda y, y_{n+1} = R(z) y_n with z = h lambda,
and parameter sensitivities are governed by R'(z) (Fronk & Petzold 2025, arXiv
2508.01519).  For a Runge-Kutta method with matrix A and weights b (a Rosenbrock
method uses alpha + gamma),

    R(z) = P(z) / Q(z),  Q(z) = det(I - z A),  P(z) = det(I - z A + z 1 b^T)

(Hairer & Wanner II, IV.3, Prop. 3.2).  The coefficients of P and Q come from the
characteristic polynomials of A and A - 1 b^T, computed in 60-digit arithmetic, and
R'(z) = N(z) / Q(z)^2 with N = P'Q - PQ' formed as a polynomial so that the
cancellations of its leading terms happen exactly, not in floating point.  All
classification (A-/L-stability, R(-inf), decay exponent) is computed from these
polynomials.

For BDF-k the analogue of R is the principal root xi(z) of rho(xi) = z sigma(xi),
followed continuously from xi(0) = 1, and xi'(z) = sigma(xi) / (rho'(xi) - z sigma'(xi)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import mpmath
import numpy as np

from .catalogue import ButcherTableau, Method, MultistepCoefficients, RosenbrockTableau, get_method

#: Working precision of the exact polynomial algebra.
_DPS = 60
#: Published coefficients carry a finite number of digits, so a quantity that is zero for
#: the exact method (R(-inf) of an L-stable method, E(y) on the imaginary axis of a Gauss
#: method) comes out as round-off of the data.  Classification treats values below this
#: fraction of their scale as zero; evaluation keeps them, because they are part of the
#: method the adapters actually run (Kvaerno4's 10-digit gamma gives R(-inf) = 7e-11).
TABLEAU_TOL = 1e-10


def as_z(z) -> np.ndarray:
    """Validate z = h*lambda: finite real or complex values (scalar or array)."""
    arr = np.asarray(z)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"z must be a real or complex number or array, got {z!r}")
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)] if arr.ndim else arr
        raise ValueError(f"z = h*lambda must be finite, got {np.ravel(bad)[:3]}")
    return arr


def _charpoly(matrix: np.ndarray) -> list:
    """Coefficients c_0..c_s (c_0 = 1) of det(I - z M) = sum_k c_k z^k, in mpmath.

    Faddeev-LeVerrier: the coefficients of det(x I - M) = x^s + c_1 x^{s-1} + ... + c_s
    are exactly those of det(I - z M) in ascending powers of z.
    """
    with mpmath.workdps(_DPS):
        m = mpmath.matrix(matrix.tolist())
        s = m.rows
        coeffs = [mpmath.mpf(1)]
        mk = mpmath.zeros(s, s)
        eye = mpmath.eye(s)
        for k in range(1, s + 1):
            mk = m * (mk + coeffs[-1] * eye)
            trace = sum(mk[i, i] for i in range(s))
            coeffs.append(-trace / k)
        # coefficients that vanish exactly for the given (float) matrix come out as 60-digit
        # round-off; make them exact zeros so degrees are right
        scale = max(abs(c) for c in coeffs)
        return [c if abs(c) > mpmath.mpf(10) ** (20 - _DPS) * scale else mpmath.mpf(0) for c in coeffs]


def _poly_mul(p: list, q: list) -> list:
    out = [mpmath.mpf(0)] * (len(p) + len(q) - 1)
    for i, pi in enumerate(p):
        for j, qj in enumerate(q):
            out[i + j] += pi * qj
    return out


def _poly_deriv(p: list) -> list:
    return [k * p[k] for k in range(1, len(p))] or [mpmath.mpf(0)]


def _trim(p: list) -> list:
    while len(p) > 1 and p[-1] == 0:
        p = p[:-1]
    return p


def _to_float(p: list) -> np.ndarray:
    return np.array([float(x) for x in p])


def _horner(coeffs: np.ndarray, x):
    out = np.zeros_like(x) + coeffs[-1]
    for c in coeffs[-2::-1]:
        out = out * x + c
    return out


def _eval_ratio(num: np.ndarray, den: np.ndarray, den_power: int, z: np.ndarray):
    """num(z) / den(z)**den_power, evaluated in 1/z for |z| > 1 so that large z neither
    overflows nor loses the small leading-order terms."""
    z = np.asarray(z)
    dtype = np.result_type(z.dtype, float)
    zz = z.astype(dtype)
    big = np.abs(zz) > 1
    out = np.empty_like(zz)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # at a pole R is inf: say so
        _fill_ratio(out, zz, big, num, den, den_power)
    return out if z.ndim else out[()]


def _fill_ratio(out, zz, big, num, den, den_power):
    small = ~big
    out[small] = _horner(num, zz[small]) / _horner(den, zz[small]) ** den_power
    if np.any(big):
        w = 1 / zz[big]
        shift = (len(num) - 1) - den_power * (len(den) - 1)
        out[big] = zz[big] ** shift * (_horner(num[::-1], w) / _horner(den[::-1], w) ** den_power)


def _abs_sq_poly(p: list) -> list:
    """Coefficients in y of |p(iy)|^2 for real y."""
    with mpmath.workdps(_DPS):
        pi = [c * (1j) ** k for k, c in enumerate(p)]
        pc = [c * (-1j) ** k for k, c in enumerate(p)]
        return [mpmath.re(x) for x in _poly_mul(pi, pc)]


@dataclass(frozen=True)
class Classification:
    a_stable: bool
    l_stable: bool
    r_at_infinity: float
    decay_exponent: float


class StabilityFunction:
    """R(z) = P(z)/Q(z) of a one-step method, with exact polynomial coefficients.

    Coefficients are ascending in z.  ``derivative(z)`` is R'(z); both accept real
    or complex scalars or arrays.
    """

    def __init__(self, matrix, weights) -> None:
        matrix = np.asarray(matrix, dtype=float)
        weights = np.asarray(weights, dtype=float)
        with mpmath.workdps(_DPS):
            q = _trim(_charpoly(matrix))
            p = _trim(_charpoly(matrix - np.outer(np.ones(len(weights)), weights)))
            n = _trim(self._sub(_poly_mul(_poly_deriv(p), q), _poly_mul(p, _poly_deriv(q))))
        self._p_mp, self._q_mp = p, q
        self.numerator = _to_float(p)
        self.denominator = _to_float(q)
        self.derivative_numerator = _to_float(n)

    @staticmethod
    def _sub(a: list, b: list) -> list:
        """a - b, with coefficients that cancel to mpmath round-off set exactly to zero."""
        size = max(len(a), len(b))
        a = a + [mpmath.mpf(0)] * (size - len(a))
        b = b + [mpmath.mpf(0)] * (size - len(b))
        eps = mpmath.mpf(10) ** (-(_DPS - 10))
        return [x - y if abs(x - y) > eps * (abs(x) + abs(y)) else mpmath.mpf(0) for x, y in zip(a, b)]

    # --- evaluation ---------------------------------------------------------------
    def __call__(self, z):
        return _eval_ratio(self.numerator, self.denominator, 1, as_z(z))

    def derivative(self, z):
        """R'(z) = (P'Q - PQ')/Q^2."""
        return _eval_ratio(self.derivative_numerator, self.denominator, 2, as_z(z))

    def exact(self, z, derivative: bool = False):
        """R(z) or R'(z) at one point in 60-digit arithmetic (a reference for tests)."""
        with mpmath.workdps(_DPS):
            zz = mpmath.mpmathify(complex(z) if np.iscomplexobj(z) else float(z))
            p, q = mpmath.polyval(self._p_mp[::-1], zz), mpmath.polyval(self._q_mp[::-1], zz)
            if not derivative:
                return p / q
            dp = mpmath.polyval(_poly_deriv(self._p_mp)[::-1], zz)
            dq = mpmath.polyval(_poly_deriv(self._q_mp)[::-1], zz)
            return (dp * q - p * dq) / q**2

    # --- classification -----------------------------------------------------------
    @property
    def poles(self) -> np.ndarray:
        q = self.denominator
        return np.roots(q[::-1]) if len(q) > 1 else np.array([], dtype=complex)

    @property
    def r_at_infinity(self) -> float:
        """lim R(z) as z -> -inf (inf for explicit methods), as the coefficients give it."""
        dp, dq = len(self.numerator) - 1, len(self.denominator) - 1
        if dp < dq:
            return 0.0
        if dp > dq:
            return math.copysign(math.inf, self.numerator[-1] * (-1) ** (dp - dq))
        return float(self.numerator[-1] / self.denominator[-1])

    @property
    def decay_exponent(self) -> float:
        """e such that |R'(z)| ~ |z|^e as z -> -inf (negative: gradients decay)."""
        return float((len(self.derivative_numerator) - 1) - 2 * (len(self.denominator) - 1))

    @cached_property
    def a_stable(self) -> bool:
        """|R(z)| <= 1 on Re z <= 0: no poles in the closed left half-plane and
        E(y) = |Q(iy)|^2 - |P(iy)|^2 >= 0 for all real y (Hairer & Wanner II, IV.3)."""
        poles = self.poles
        if np.any(poles.real <= 1e-12 * np.abs(poles)):
            return False
        with mpmath.workdps(_DPS):
            qq, pp = _abs_sq_poly(self._q_mp), _abs_sq_poly(self._p_mp)
            size = max(len(qq), len(pp))
            qq += [mpmath.mpf(0)] * (size - len(qq))
            pp += [mpmath.mpf(0)] * (size - len(pp))
            e = [a - b if abs(a - b) > TABLEAU_TOL * (abs(a) + abs(b)) else mpmath.mpf(0) for a, b in zip(qq, pp)]
            ex = _trim(e[0::2])  # E is even in y: a polynomial in x = y^2 >= 0
            if len(ex) == 1:
                return bool(ex[0] >= 0)
            roots = np.roots(_to_float(ex)[::-1])
            pos = np.sort(roots.real[(np.abs(roots.imag) < 1e-9 * (1 + np.abs(roots))) & (roots.real > 0)])
            probes = np.concatenate([[0.0], (pos[:-1] + pos[1:]) / 2, [2 * pos[-1] + 1 if pos.size else 1.0]])
            scale = max(abs(c) for c in qq)
            return all(mpmath.polyval(ex[::-1], mpmath.mpf(float(x))) >= -TABLEAU_TOL * scale * mpmath.mpf(1 + x) ** (len(ex) - 1)
                       for x in probes)

    @property
    def l_stable(self) -> bool:
        """A-stable with R(-inf) = 0 to the precision of the published coefficients."""
        return self.a_stable and abs(self.r_at_infinity) <= TABLEAU_TOL

    def classify(self) -> Classification:
        return Classification(self.a_stable, self.l_stable, self.r_at_infinity, self.decay_exponent)


class BDFStability:
    """The principal root xi(z) of a linear multistep method and its derivative.

    On y' = lambda y with exact starting values on the principal root, y_n = xi(z)^n y_0,
    so xi plays the role of R.  ``__call__`` is xi(z) and ``derivative`` is xi'(z).
    """

    def __init__(self, coefficients: MultistepCoefficients) -> None:
        self.rho = coefficients.rho
        self.sigma = coefficients.sigma

    def _all_roots(self, z: np.ndarray) -> np.ndarray:
        """Roots of rho(xi) - z sigma(xi) for each z, as eigenvalues of batched companion matrices."""
        coeffs = self.rho[None, :] - z[:, None] * self.sigma[None, :]  # ascending in xi
        k = coeffs.shape[1] - 1
        companion = np.zeros((z.size, k, k), dtype=complex)
        companion[:, 1:, :-1] = np.eye(k - 1)
        companion[:, :, -1] = -coeffs[:, :-1] / coeffs[:, -1:]
        return np.linalg.eigvals(companion)

    def _principal(self, z: np.ndarray) -> np.ndarray:
        """Follow the root from xi(0) = 1 along each segment 0 -> z (geometric in |z|),
        every z at once, then polish with Newton."""
        xi = np.ones(z.size, dtype=complex)
        for s in np.geomspace(1e-10, 1, 300):
            roots = self._all_roots(s * z)
            pick = np.argmin(np.abs(roots - xi[:, None]), axis=1)
            xi = roots[np.arange(z.size), pick]
        f = np.polynomial.polynomial
        drho, dsigma = f.polyder(self.rho), f.polyder(self.sigma)
        for _ in range(3):
            g = f.polyval(xi, self.rho) - z * f.polyval(xi, self.sigma)
            dg = f.polyval(xi, drho) - z * f.polyval(xi, dsigma)
            xi = np.where(dg != 0, xi - g / np.where(dg != 0, dg, 1), xi)
        return xi

    def __call__(self, z):
        arr = as_z(z)
        flat = np.ravel(arr).astype(complex)
        out = self._principal(flat).reshape(arr.shape)
        if not np.iscomplexobj(arr) and np.all(np.abs(out.imag) <= 1e-14 * np.abs(out)):
            # On the real axis past a branch point the root is one of a conjugate pair;
            # |xi| and |xi'| do not depend on which.
            out = out.real
        return out if arr.ndim else out[()]

    def derivative(self, z):
        arr = as_z(z)
        xi = np.asarray(self(arr), dtype=complex)
        f = np.polynomial.polynomial
        num = f.polyval(xi, self.sigma)
        den = f.polyval(xi, f.polyder(self.rho)) - arr * f.polyval(xi, f.polyder(self.sigma))
        out = num / den
        if not np.iscomplexobj(arr) and np.all(np.abs(out.imag) <= 1e-14 * np.abs(out)):
            out = out.real
        return out if arr.ndim else out[()]

    @cached_property
    def a_alpha_degrees(self) -> float:
        """Largest alpha such that the sector |arg(-z)| < alpha lies in the stability region.

        From the boundary locus z(theta) = rho(e^{i theta}) / sigma(e^{i theta}):
        alpha is the smallest |arg(-z)| over locus points in the left half-plane.
        """
        f = np.polynomial.polynomial

        def angle(theta):
            w = np.exp(1j * np.asarray(theta))
            zb = f.polyval(w, self.rho) / f.polyval(w, self.sigma)
            ang = np.abs(np.arctan2(zb.imag, -zb.real))
            # Points on the imaginary axis (round-off near theta = 0) do not bound the sector.
            return np.where(zb.real < -1e-9 * np.abs(zb), ang, np.pi / 2)

        theta = np.linspace(1e-6, np.pi, 200001)
        vals = angle(theta)
        i = int(np.argmin(vals))
        lo, hi = theta[max(i - 1, 0)], theta[min(i + 1, theta.size - 1)]
        g = (math.sqrt(5) - 1) / 2
        for _ in range(80):  # golden-section refinement of the minimum
            a, b = hi - g * (hi - lo), lo + g * (hi - lo)
            if angle(a) < angle(b):
                hi = b
            else:
                lo = a
        return float(np.degrees(min(vals[i], angle((lo + hi) / 2))))

    @property
    def a_stable(self) -> bool:
        return self.a_alpha_degrees >= 90 - 1e-9

    @property
    def r_at_infinity(self) -> float:
        """The principal root tends to the roots of sigma: 0 for BDF."""
        return 0.0 if self.sigma[0] == 0 else math.nan

    @property
    def decay_exponent(self) -> float:
        """sigma has a root of multiplicity m at 0, so xi ~ |z|^(-1/m) and xi' ~ |z|^(-1-1/m)."""
        m = int(np.argmax(self.sigma != 0))
        return -(1 + 1 / m)

    @property
    def l_stable(self) -> bool:
        return self.a_stable and self.r_at_infinity == 0.0

    def classify(self) -> Classification:
        return Classification(self.a_stable, self.l_stable, self.r_at_infinity, self.decay_exponent)


def stability_of(method: Method | str):
    """The stability object of a catalogue method (also cached as ``method.stability``)."""
    method = get_method(method)
    coef = method.coefficients
    if isinstance(coef, MultistepCoefficients):
        return BDFStability(coef)
    if isinstance(coef, RosenbrockTableau):
        return StabilityFunction(coef.stability_matrix, coef.b)
    assert isinstance(coef, ButcherTableau)
    return StabilityFunction(coef.a, coef.b)


def stability_function(method: Method | str):
    """Shorthand for ``get_method(method).stability`` (cached per method)."""
    return get_method(method).stability
