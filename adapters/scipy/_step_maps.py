"""One step of a catalogue method as a map y_{n+1} = Phi(t_n, y_n, h_n, p), with its
exact Jacobians dPhi/dy and dPhi/dp, for discrete forward and adjoint sensitivities.

* Runge-Kutta (explicit or implicit): the stage equations Y_i = y + h sum_j a_ij
  f(t_j, Y_j, p) are solved by full Newton to round-off; their derivatives follow from the
  implicit function theorem, (I - h [a_ij J_j]) dY = 1 dy + h A [P_j] dp, so they do not
  depend on how the forward solve's Newton iteration went.
* Rosenbrock: the step is explicit given J(y), so its derivative (which involves dJ/dy)
  is taken by complex-step differentiation of the whole step when the user supplies an
  analytic ``jac``, else by central differences.  Its adjoint (reverse mode) runs the stages
  backwards with transposed solves; the dJ terms are vector-Hessian-vector products, one
  complex-step evaluation of ``jac`` and ``jac_p`` per stage: O(stages) Jacobian evaluations
  per step instead of a complex step in each of the n + P directions.
* One-step maps have ``pullback`` (the step and ybar -> (ybar^T dPhi/dy, ybar^T dPhi/dp)) for
  reverse mode; Runge-Kutta maps (and Rosenbrock without complex-capable ``jac`` and
  ``jac_p``) form the Jacobians for it.
* Reversible: the McCallum & Foster pair step, chained from its base step maps.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import lu_factor, lu_solve

from stiffcore.catalogue import ButcherTableau, RosenbrockTableau, get_method
from stiffcore.reversible import reversible_step, reversible_step_back

from ._derivatives import _STEP, Derivatives, differentiate

EPS = np.finfo(float).eps


class StepFailed(ArithmeticError):
    pass


def newton_to_roundoff(residual, matrix, x, failure: str, max_iter: int = 60):
    """x with residual(x) = 0 by Newton (``matrix(x)`` = d residual / dx), to round-off.

    The factorised matrix is kept while each increment shrinks at least tenfold, and rebuilt
    at the current x when it does not (a Jacobian costs far more than an iteration on
    mechanisms).  Done when the increment is tiny, or when a step on a fresh matrix no longer
    shrinks it once far below x (round-off); otherwise StepFailed(``failure``)."""
    previous, lu = np.inf, None
    for _ in range(max_iter):
        fresh = lu is None
        if fresh:
            lu = lu_factor(matrix(x), check_finite=False)
        dx = lu_solve(lu, -residual(x), check_finite=False)
        x = x + dx
        if not np.all(np.isfinite(x)):
            break
        size, scale = np.max(np.abs(dx)), max(np.max(np.abs(x)), 1e-300)
        if size <= 4 * EPS * scale or (fresh and size > 0.5 * previous and size <= 1e-10 * scale):
            return x
        if size > 0.1 * previous:
            lu = None
        previous = size
    raise StepFailed(failure)


class RungeKuttaStepMap:
    """Phi for a Runge-Kutta tableau; derivatives by the implicit function theorem.

    The unknowns are the stage values Y_i = y + h sum_j a_ij f(t_j, Y_j, p), and the new
    state is read off without the cancellation of y + h b.F at large |h lambda|: Y_s for
    stiffly accurate methods, y + b A^-1 (Y - y) when A is invertible, y + h b.F otherwise.
    """

    def __init__(self, tableau: ButcherTableau, derivs: Derivatives) -> None:
        self.tab, self.d = tableau, derivs
        self.explicit = tableau.is_explicit
        self.stiffly_accurate = tableau.is_stiffly_accurate and not tableau.is_explicit
        invertible = not tableau.is_explicit and abs(np.linalg.det(tableau.a)) > 1e-12
        self.weights = tableau.b @ np.linalg.inv(tableau.a) if invertible and not self.stiffly_accurate else None

    def _stages(self, t, y, h, p):
        a, c = self.tab.a, self.tab.c
        s, n = c.size, y.size
        if self.explicit:
            Y, F = np.empty((s, n)), np.empty((s, n))
            for i in range(s):
                Y[i] = y + h * (a[i, :i] @ F[:i])
                F[i] = self.d.f(t + c[i] * h, Y[i], p)
            return Y
        def residual(v):
            Y = v.reshape(s, n)
            return (Y - y - h * (a @ np.array([self.d.f(t + c[i] * h, Y[i], p) for i in range(s)]))).ravel()

        return newton_to_roundoff(residual, lambda v: self._matrix(t, v.reshape(s, n), h, p), np.tile(y, s),
                                  f"stage equations did not converge to round-off at t = {t}, h = {h}").reshape(s, n)

    def _matrix(self, t, Y, h, p, jacobians=None):
        """I - h [a_ij J(Y_j)] as an (s n) x (s n) matrix."""
        a, c = self.tab.a, self.tab.c
        s, n = Y.shape
        J = jacobians or [self.d.dfdy(t + c[j] * h, Y[j], p) for j in range(s)]
        M = np.eye(s * n)
        for i in range(s):
            for j in range(s):
                if a[i, j]:
                    M[i * n:(i + 1) * n, j * n:(j + 1) * n] -= h * a[i, j] * J[j]
        return M

    def _combine(self, y_part, Y_part, F_part, h):
        """The new state (or its derivative) from the stage values, see the class docstring."""
        if self.stiffly_accurate:
            return Y_part[-1]
        if self.weights is not None:
            return (1 - self.weights.sum()) * y_part + np.tensordot(self.weights, Y_part, axes=1)
        return y_part + h * np.tensordot(self.tab.b, F_part, axes=1)

    def __call__(self, t, y, h, p, derivatives: bool = True):
        a, c = self.tab.a, self.tab.c
        Y = self._stages(t, y, h, p)
        s, n = Y.shape
        F = None if (self.stiffly_accurate or self.weights is not None) else \
            np.array([self.d.f(t + c[i] * h, Y[i], p) for i in range(s)])
        y_new = self._combine(y, Y, F, h)
        if not derivatives:
            return y_new, None, None
        J = [self.d.dfdy(t + c[j] * h, Y[j], p) for j in range(s)]
        P = [self.d.dfdp(t + c[j] * h, Y[j], p) for j in range(s)]
        n_p = P[0].shape[1]
        rhs = np.zeros((s * n, n + n_p))
        for i in range(s):
            rhs[i * n:(i + 1) * n, :n] = np.eye(n)
            rhs[i * n:(i + 1) * n, n:] = h * sum(a[i, j] * P[j] for j in range(s) if a[i, j])
        dY = lu_solve(lu_factor(self._matrix(t, Y, h, p, J)), rhs).reshape(s, n, n + n_p)
        dy = np.hstack([np.eye(n), np.zeros((n, n_p))])
        dF = None if F is None else np.array([J[j] @ dY[j] + np.hstack([np.zeros((n, n)), P[j]]) for j in range(s)])
        dPhi = self._combine(dy, dY, dF, h)
        return y_new, dPhi[:, :n], dPhi[:, n:]

    def pullback(self, t, y, h, p):
        return pullback_from_jacobians(self, t, y, h, p)

    def vjp(self, t, y, h, p, ybar):
        return self.pullback(t, y, h, p)[1](ybar)


def pullback_from_jacobians(step_map, t, y, h, p):
    """(y_new, ybar -> (ybar^T dPhi/dy, ybar^T dPhi/dp)) through the full step Jacobians."""
    y_new, Py, Pp = step_map(t, y, h, p)
    return y_new, lambda ybar: (Py.T @ ybar, Pp.T @ ybar)


class RosenbrockStepMap:
    """Phi for a Rosenbrock tableau (transformed form); derivatives by complex step."""

    def __init__(self, tableau: RosenbrockTableau, derivs: Derivatives, autonomous: bool = False) -> None:
        self.tab, self.d = tableau, derivs
        self.a, self.C, self.m, _ = tableau.transformed()
        self.autonomous = autonomous
        self.exact = derivs.jac is not None and derivs.complex_ok
        self._adjoint = None
        if not self.exact:
            warnings.warn("stiffcore: Rosenbrock sensitivities need d(df/dy)/dy; without an analytic jac= "
                          "that accepts complex input they come from central differences (about 8 digits)",
                          RuntimeWarning, stacklevel=4)

    def _time_step(self, t):
        """The difference step of f_t = df/dt, or None when the method or the user leaves it out."""
        return None if self.autonomous or not np.any(self.tab.d) else np.sqrt(EPS) * max(1.0, abs(t))

    def _stages(self, t, y, h, p):
        """(k, J at the step start, LU of W = I / (h gamma) - J, dt of f_t)."""
        tab = self.tab
        f0 = self.d.f(t, y, p)
        J = self.d.dfdy(t, y, p)
        W = np.eye(y.size) / (h * tab.gamma_diag) - J
        lu = lu_factor(W)
        dt = self._time_step(t)
        f_t = 0.0 if dt is None else (self.d.f(t + dt, y, p) - f0) / dt
        k = np.empty((tab.stages, y.size), dtype=np.result_type(y, p, W))
        for i in range(tab.stages):
            fi = f0 if i == 0 else self.d.f(t + tab.c[i] * h, y + self.a[i, :i] @ k[:i], p)
            k[i] = lu_solve(lu, fi + (self.C[i, :i] @ k[:i]) / h + h * tab.d[i] * f_t)
        return k, J, lu, dt

    def step(self, t, y, h, p):
        return y + self.m @ self._stages(t, y, h, p)[0]

    def _adjoint_ok(self, t, y, p) -> bool:
        """The adjoint needs jac and jac_p that carry a complex y through (checked once)."""
        if self._adjoint is None:
            probe = y + 1j * _STEP
            self._adjoint = bool(self.exact and self.d.jac_p is not None
                                 and np.iscomplexobj(self.d.dfdy(t, probe, p))
                                 and np.iscomplexobj(self.d.dfdp(t, probe, p)))
        return self._adjoint

    def pullback(self, t, y, h, p):
        """(y_new, ybar -> (ybar^T dPhi/dy, ybar^T dPhi/dp)): the step, keeping what running it
        backwards needs (its stages, J and W's factors), so the adjoint does not re-solve it."""
        if not self._adjoint_ok(t, y, p):
            return pullback_from_jacobians(self, t, y, h, p)
        k, J, lu, dt = self._stages(t, y, h, p)
        return y + self.m @ k, lambda ybar: self._backwards(t, y, h, p, k, J, lu, dt, ybar)

    def vjp(self, t, y, h, p, ybar):
        return self.pullback(t, y, h, p)[1](ybar)

    def _backwards(self, t, y, h, p, k, J, lu, dt, ybar):
        """(ybar^T dPhi/dy, ybar^T dPhi/dp) by running the step backwards.

        k_i = W^-1 g_i with g_i = f(t_i, Y_i) + sum_j C_ij k_j / h + h d_i f_t, Y_i = y + sum_j
        a_ij k_j and W = I / (h gamma) - J(y, p): the cotangent of g_i is W^-T kbar_i, and W's
        dependence on (y, p) adds the gradient of sum_i gbar_i^T J(y, p) k_i, which is
        d/de [J(y + e k_i)^T gbar_i] (symmetry of second derivatives): a complex step of jac
        (and of jac_p for p) in the direction k_i."""
        tab, d = self.tab, self.d
        P0 = d.dfdp(t, y, p)                                            # stage 0 and f_t are at (t, y)
        kbar = np.outer(self.m, ybar)
        gbar = np.empty_like(kbar)
        y_out, p_out, ft_bar = ybar.copy(), np.zeros(p.size), np.zeros(y.size)
        for i in range(tab.stages - 1, -1, -1):
            gbar[i] = lu_solve(lu, kbar[i], trans=1)
            kbar[:i] += np.outer(self.C[i, :i] / h, gbar[i])
            ft_bar += h * tab.d[i] * gbar[i]
            ti, Yi = t + tab.c[i] * h, y + self.a[i, :i] @ k[:i]
            Ybar = (J if i == 0 else d.dfdy(ti, Yi, p)).T @ gbar[i]
            p_out += (P0 if i == 0 else d.dfdp(ti, Yi, p)).T @ gbar[i]
            y_out += Ybar
            kbar[:i] += np.outer(self.a[i, :i], Ybar)
        for i in range(tab.stages):
            curvature = gbar[i] @ self._curvature(t, y, p, k[i])
            y_out += curvature[:y.size]
            p_out += curvature[y.size:]
        if dt is not None:  # f_t = (f(t + dt, y, p) - f(t, y, p)) / dt
            y_out += (d.dfdy(t + dt, y, p) - J).T @ ft_bar / dt
            p_out += (d.dfdp(t + dt, y, p) - P0).T @ ft_bar / dt
        return y_out, p_out

    def __call__(self, t, y, h, p, derivatives: bool = True):
        if derivatives and self._adjoint_ok(t, y, p):
            return self._tangent(t, y, h, p)
        y_new = self.step(t, y, h, p)
        if not derivatives:
            return y_new, None, None
        n = y.size
        D = differentiate(lambda x: self.step(t, x[:n], h, x[n:]), np.concatenate([y, p]), complex_step=self.exact)
        return y_new, D[:, :n], D[:, n:]

    def _curvature(self, t, y, p, k):
        """d/de [df/dy, df/dp](y + e k): the dJ k terms of W's derivative for every direction at
        once (symmetry of second derivatives), by one complex step of jac and jac_p."""
        size = np.max(np.abs(k))
        if size == 0:
            return 0.0
        probe = y + 1j * _STEP * (k / size)
        return np.hstack([np.imag(self.d.dfdy(t, probe, p)), np.imag(self.d.dfdp(t, probe, p))]) * (size / _STEP)

    def _tangent(self, t, y, h, p):
        """(y_new, dPhi/dy, dPhi/dp) by differentiating the stages forward in all n + P directions
        at once: dk_i = W^-1 (dg_i + dJ k_i), O(stages) Jacobian evaluations per step."""
        tab, d = self.tab, self.d
        k, J, lu, dt = self._stages(t, y, h, p)
        n = y.size
        seed = np.hstack([np.eye(n), np.zeros((n, p.size))])            # d(y, p) / d(y, p), the y rows
        dk = np.empty((tab.stages, n, n + p.size))
        P0 = d.dfdp(t, y, p)                                            # stage 0 and f_t are at (t, y)
        dft = 0.0 if dt is None else (np.hstack([d.dfdy(t + dt, y, p), d.dfdp(t + dt, y, p)])
                                      - np.hstack([J, P0])) / dt
        for i in range(tab.stages):
            ti, Yi = t + tab.c[i] * h, y + self.a[i, :i] @ k[:i]
            dY = seed + np.tensordot(self.a[i, :i], dk[:i], axes=1)
            dF = (J if i == 0 else d.dfdy(ti, Yi, p)) @ dY
            dF[:, n:] += P0 if i == 0 else d.dfdp(ti, Yi, p)
            dg = dF + np.tensordot(self.C[i, :i] / h, dk[:i], axes=1) + h * tab.d[i] * dft
            dk[i] = lu_solve(lu, dg + self._curvature(t, y, p, k[i]))
        D = seed + np.tensordot(self.m, dk, axes=1)
        return y + self.m @ k, D[:, :n], D[:, n:]


def step_map(method, derivs: Derivatives, autonomous: bool = False):
    m = get_method(method)
    if isinstance(m.coefficients, RosenbrockTableau):
        return RosenbrockStepMap(m.coefficients, derivs, autonomous)
    if isinstance(m.coefficients, ButcherTableau):
        return RungeKuttaStepMap(m.coefficients, derivs)
    raise ValueError(f"sensitivities need a one-step method; {m.id!r} is {m.family}")


class ReversiblePairMap:
    """The reversible pair step (y, z) at t0 -> (y1, z1) at t1 around a base step map, with
    its tangent and adjoint.  Steps are always given as (t0, t1), so the forward and the
    backward pass take base steps of exactly t1 - t0 and t0 - t1: with an h passed
    separately, t0 + h - t0 != h in floating point and reconstruction would drift."""

    def __init__(self, base, coupling: float) -> None:
        self.base, self.lam = base, coupling

    def _psi(self, p):
        return lambda t0, t1, x: self.base(t0, x, t1 - t0, p, derivatives=False)[0]

    def forward(self, t0, t1, y, z, p):
        return reversible_step(self._psi(p), t0, t1, y, z, self.lam)

    def backward(self, t0, t1, y1, z1, p):
        return reversible_step_back(self._psi(p), t0, t1, y1, z1, self.lam)

    def jacobians(self, t0, t1, y, z, p):
        """(y1, z1) and the blocks needed for tangents and adjoints of the pair step."""
        lam = self.lam
        psi_z, A1, P1 = self.base(t0, z, t1 - t0, p)
        y1 = lam * y + (1 - lam) * z + (psi_z - z)
        psi_y, A2, P2 = self.base(t1, y1, t0 - t1, p)
        z1 = z + y1 - psi_y
        return y1, z1, (A1, P1, A2, P2)

    def tangent(self, blocks, dy, dz, dp):
        A1, P1, A2, P2 = blocks
        lam = self.lam
        dy1 = lam * dy + (A1 @ dz - lam * dz) + P1 @ dp
        dz1 = dz + dy1 - A2 @ dy1 - P2 @ dp
        return dy1, dz1

    def adjoint(self, blocks, ybar1, zbar1):
        A1, P1, A2, P2 = blocks
        lam = self.lam
        ytot = ybar1 + zbar1 - A2.T @ zbar1
        ybar0 = lam * ytot
        zbar0 = zbar1 + A1.T @ ytot - lam * ytot
        pbar = P1.T @ ytot - P2.T @ zbar1
        return ybar0, zbar0, pbar
