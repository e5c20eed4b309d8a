"""df/dy and df/dp of a parameterised right-hand side fun(t, y, p) for the sensitivity
solvers: the user's callables when given, otherwise complex-step differentiation (exact to
round-off for analytic fun), otherwise central differences with a one-line warning."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.sparse import csr_matrix, issparse

_STEP = 1e-200  # complex-step increment: no subtractive cancellation, so it can be tiny


class Derivatives:
    """Jacobians of fun(t, y, p) with respect to y and p."""

    def __init__(self, fun, n: int, p: np.ndarray, jac=None, jac_p=None) -> None:
        self.fun, self.n, self.p = fun, n, p
        self.jac, self.jac_p = jac, jac_p
        self._check_real_call()
        self.complex_ok = self._accepts_complex()
        if (jac is None or jac_p is None) and not self.complex_ok:
            warnings.warn("stiffcore: fun does not accept complex input, so df/dy or df/dp come from central "
                          "differences (about 8 digits); pass jac= and jac_p= for exact sensitivities",
                          RuntimeWarning, stacklevel=3)

    def _check_real_call(self) -> None:
        """fun must take this y and p before anything is probed (a p of the wrong length used to
        surface as a warning about complex input)."""
        try:
            out = np.asarray(self.fun(0.0, np.full(self.n, 0.5), self.p))
        except (IndexError, ValueError, TypeError) as exc:
            raise ValueError(f"fun(t, y, p) fails for y of length {self.n} and p of length {self.p.size} "
                             f"({type(exc).__name__}: {exc}); check p") from exc
        if out.shape != (self.n,):
            raise ValueError(f"fun(t, y, p) must return shape ({self.n},) like y, got {out.shape}")

    def _accepts_complex(self) -> bool:
        """Probe fun with complex input; a fun that drops the imaginary part is not analytic."""
        y = np.zeros(self.n, dtype=complex) + 0.5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. ComplexWarning from float(complex)
            try:
                out = np.asarray(self.fun(0.0, y + 1j * _STEP, self.p + 0j))
            except (TypeError, ValueError):
                return False
        return np.iscomplexobj(out) and out.shape == (self.n,)

    def check_jacobians(self, t, y) -> None:
        """Call the user's jac and jac_p once at (t0, y0), so a wrong shape is named before any
        work, whichever method runs (Rosenbrock sensitivities never call jac_p: they
        differentiate the whole step)."""
        if self.jac is not None:
            self.dfdy(t, y, self.p)
        if self.jac_p is not None:
            self.dfdp(t, y, self.p)

    def f(self, t, y, p):
        return np.asarray(self.fun(t, y, p))

    def dfdy(self, t, y, p):
        """df/dy: dense, or sparse (CSR) when the user's ``jac`` returns a sparse matrix, so the
        replay's stage systems keep its structure."""
        if self.jac is not None:
            J = self.jac(t, y, p)
            J = csr_matrix(J) if issparse(J) else np.asarray(J)
            if J.shape != (self.n, self.n):
                raise ValueError(f"jac(t, y, p) must return df/dy of shape ({self.n}, {self.n}), got {J.shape}")
            return J
        return self._differentiate(lambda v: self.fun(t, v, p), y)

    def dfdp(self, t, y, p) -> np.ndarray:
        if self.jac_p is not None:
            Jp = np.asarray(self.jac_p(t, y, p))
            if Jp.shape not in ((self.n, p.size),) + (((self.n,),) if p.size == 1 else ()):
                raise ValueError(f"jac_p(t, y, p) must return df/dp of shape ({self.n}, {p.size}) for "
                                 f"{p.size} parameters, got {Jp.shape}")
            return Jp.reshape(self.n, p.size)
        return self._differentiate(lambda q: self.fun(t, y, q), p)

    def dfdy_dense(self, t, y, p) -> np.ndarray:
        J = self.dfdy(t, y, p)
        return J.toarray() if issparse(J) else J

    def _differentiate(self, g, x) -> np.ndarray:
        x = np.asarray(x)
        return differentiate(g, x, complex_step=self.complex_ok and not np.iscomplexobj(x))


def differentiate(g, x, complex_step: bool) -> np.ndarray:
    """d g / d x as an (len(g(x)), len(x)) matrix for a vector x: complex step (exact to
    round-off, needs an analytic g) or central differences (about 8 digits)."""
    x = np.asarray(x)
    cols = []
    for j in range(x.size):
        if complex_step:
            e = np.zeros(x.size, dtype=complex)
            e[j] = 1j * _STEP
            cols.append(np.imag(np.asarray(g(x + e))) / _STEP)
        else:
            step = np.cbrt(np.finfo(float).eps) * max(1.0, abs(x[j]))
            e = np.zeros(x.size, dtype=x.dtype)
            e[j] = step
            cols.append((np.asarray(g(x + e)) - np.asarray(g(x - e))) / (2 * step))
    return np.array(cols).T
