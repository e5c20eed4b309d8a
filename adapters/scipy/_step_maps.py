"""One step of a catalogue method as a map y_{n+1} = Phi(t_n, y_n, h_n, p), differentiated
exactly for discrete forward and adjoint sensitivities.  Every map has

* ``tangent(t, y, h, p, dy, dp)``: the step and dPhi/dy dy + dPhi/dp dp for m directions at
  once (forward mode carries dy = dy_n/dp, dp = I: P directions, no n x n step Jacobian);
* ``pullback(t, y, h, p)``: the step and ybar -> (ybar^T dPhi/dy, ybar^T dPhi/dp), O(states +
  parameters) per step (reverse mode);
* ``__call__``: the step and its full Jacobians (dense), for the reversible pair.

Runge-Kutta (explicit or implicit): the stage equations Y_i = y + h sum_j a_ij f(t_j, Y_j, p)
are solved by full Newton to round-off; their derivatives follow from the implicit function
theorem, (I - h [a_ij J_j]) dY = 1 dy + h A [P_j] dp, independent of how the forward solve's
Newton iteration went.  Rosenbrock: the stages are differentiated forward (or run backwards
with transposed solves); W's dependence on y adds dJ k terms, one complex step of ``jac`` and
``jac_p`` per stage (symmetry of second derivatives); without complex-capable ``jac`` and
``jac_p`` the whole step is differentiated by complex step or central differences.  Matrices
are sparse (SuperLU) when the user's ``jac`` returns a sparse matrix, dense (LAPACK)
otherwise.  Reversible: the McCallum & Foster pair step, chained from its base step maps.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.polynomial.polynomial import polyvander
from scipy.sparse import identity as sp_identity
from scipy.sparse import issparse
from scipy.sparse import kron as sp_kron

from stiffcore.catalogue import ButcherTableau, RosenbrockTableau, get_method
from stiffcore.reversible import reversible_step, reversible_step_back

from ._derivatives import _STEP, Derivatives, differentiate
from ._linalg import Factorised, SingularMatrixError, shifted

EPS = np.finfo(float).eps


class StepFailed(ArithmeticError):
    pass


def newton_to_roundoff(residual, matrix, x, failure: str, max_iter: int = 60):
    """x with residual(x) = 0 by Newton (``matrix(x)`` = d residual / dx, dense or sparse), to
    round-off.

    The factorised matrix is kept while each increment shrinks at least tenfold, and rebuilt
    at the current x when it does not (a Jacobian costs far more than an iteration on
    mechanisms).  Done when the increment is tiny, or when a step on a fresh matrix no longer
    shrinks it once far below x (round-off); otherwise StepFailed(``failure``)."""
    previous, lu = np.inf, None
    for _ in range(max_iter):
        fresh = lu is None
        if fresh:
            try:
                lu = Factorised(matrix(x))
            except SingularMatrixError:
                break
        dx = lu.solve(-residual(x))
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


def factorised(matrix, where: str) -> Factorised:
    """The factors of a step's matrix; a singular one fails the step, saying where."""
    try:
        return Factorised(matrix)
    except SingularMatrixError as exc:
        raise StepFailed(f"{exc} {where}") from None


def _imag(matrix):
    return matrix.imag if issparse(matrix) else np.imag(matrix)


class RungeKuttaStepMap:
    """Phi for a Runge-Kutta tableau; derivatives by the implicit function theorem.

    The unknowns are the stage values Y_i = y + h sum_j a_ij f(t_j, Y_j, p), and the new
    state is read off without the cancellation of y + h b.F at large |h lambda|: Y_s for
    stiffly accurate methods, y + b A^-1 (Y - y) when A is invertible, y + h b.F otherwise.
    Differentiating the stage equations gives M dY = 1 dy + h (A x I) [df/dp]_j dp with
    M = I - h (A x I) blockdiag(J_j), J_j = df/dy at stage j; M is dense or sparse as the
    user's ``jac`` is, so tangents cost one solve with M per step for all P directions and the
    adjoint one transposed solve, never an n x n step Jacobian.
    """

    def __init__(self, tableau: ButcherTableau, derivs: Derivatives) -> None:
        self.tab, self.d = tableau, derivs
        self.explicit = tableau.is_explicit
        stiffly_accurate = tableau.is_stiffly_accurate and not tableau.is_explicit
        invertible = not tableau.is_explicit and abs(np.linalg.det(tableau.a)) > 1e-12
        # y_new = c_y y + sum_i w_i Y_i (+ h sum_i b_i F_i when use_f)
        s = tableau.c.size
        if stiffly_accurate:
            self.c_y, self.w, self.use_f = 0.0, np.eye(s)[-1], False
        elif invertible:
            self.w = tableau.b @ np.linalg.inv(tableau.a)
            self.c_y, self.use_f = 1.0 - self.w.sum(), False
        else:
            self.c_y, self.w, self.use_f = 1.0, np.zeros(s), True
        # Newton starts from the previous step's stage polynomial where its nodes are distinct
        # (the polynomial through them is fixed by a Vandermonde inverse formed once: scipy's
        # barycentric weights come from a random node order, which made replays differ in the
        # last bits from one call to the next)
        nodes = np.r_[0.0, tableau.c]
        self._extrapolates = not tableau.is_explicit and np.unique(nodes).size == nodes.size
        self._to_coefficients = np.linalg.inv(polyvander(nodes, s)) if self._extrapolates else None
        self._previous = None   # (start time, step, [y, Y_1..Y_s]) of the last step solved

    def _continues(self, t) -> bool:
        """Whether a step from t continues the last one solved (its t + h, up to rounding) and
        the tableau lets its stage polynomial be extrapolated."""
        if not self._extrapolates or self._previous is None:
            return False
        t_prev, h_prev, _ = self._previous
        return abs(t_prev + h_prev - t) <= 8 * EPS * max(abs(t), abs(h_prev))

    def _guess(self, t, y, h):
        """Stage values to start Newton from after the last step: the polynomial through its
        start and stage values at this step's stage times, shifted to pass through y (as RADAU5
        starts its Newton iteration, Hairer & Wanner IV.8)."""
        t_prev, h_prev, values = self._previous
        x = (np.r_[t, t + self.tab.c * h] - t_prev) / h_prev
        at = polyvander(x, self.tab.c.size) @ (self._to_coefficients @ values)
        return (at[1:] - at[0] + y).ravel()

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

        def matrix(v):
            Y = v.reshape(s, n)
            return self._matrix(h, [self.d.dfdy(t + c[j] * h, Y[j], p) for j in range(s)])

        failure = f"stage equations did not converge to round-off at t = {t}, h = {h}"
        cold = np.tile(y, s)
        continues = self._continues(t)
        try:
            Y = newton_to_roundoff(residual, matrix, self._guess(t, y, h) if continues else cold, failure)
        except StepFailed:
            if not continues:
                raise
            Y = newton_to_roundoff(residual, matrix, cold, failure)   # a wild extrapolation
        Y = Y.reshape(s, n)
        self._previous = (t, h, np.vstack([y, Y]))
        return Y

    def _new_state(self, t, y, h, p, Y):
        """y_new from the stage values (see the class docstring)."""
        y_new = self.c_y * y + self.w @ Y
        if self.use_f:
            c = self.tab.c
            y_new = y_new + h * self.tab.b @ np.array([self.d.f(t + c[i] * h, Y[i], p) for i in range(c.size)])
        return y_new

    def _matrix(self, h, J):
        """M = I - h [a_ij J_j], (s n) x (s n), sparse when the J_j are."""
        a = self.tab.a
        s, n = a.shape[0], J[0].shape[0]
        if issparse(J[0]):
            M = sp_identity(s * n)
            for j in range(s):
                if np.any(a[:, j]):
                    column = np.zeros((s, s))
                    column[:, j] = a[:, j]
                    M = M - h * sp_kron(column, J[j])
            return M.tocsc()
        M = np.identity(s * n)
        for i, j in zip(*np.nonzero(a)):
            M[i * n:(i + 1) * n, j * n:(j + 1) * n] -= (h * a[i, j]) * J[j]
        return M

    def _linearised(self, t, y, h, p):
        """The step and what differentiating it needs: (y_new, Y, [J_j], [P_j], factors of M)."""
        c = self.tab.c
        Y = self._stages(t, y, h, p)
        s = c.size
        J = [self.d.dfdy(t + c[j] * h, Y[j], p) for j in range(s)]
        P = [self.d.dfdp(t + c[j] * h, Y[j], p) for j in range(s)]
        lu = factorised(self._matrix(h, J), f"at t = {t}, h = {h}")
        return self._new_state(t, y, h, p, Y), Y, J, P, lu

    def tangent(self, t, y, h, p, dy, dp):
        """(y_new, dPhi/dy dy + dPhi/dp dp) for directions dy (n, m) and dp (P, m); dp = None is
        the identity (m = P: forward sensitivities)."""
        a, b = self.tab.a, self.tab.b
        y_new, Y, J, P, lu = self._linearised(t, y, h, p)
        s, n = Y.shape
        Pdp = [Pj if dp is None else Pj @ dp for Pj in P]
        rhs = np.concatenate([dy + h * sum(a[i, j] * Pdp[j] for j in range(s) if a[i, j]) for i in range(s)])
        dY = lu.solve(rhs).reshape(s, n, -1)
        d_new = self.c_y * dy + np.tensordot(self.w, dY, axes=1)
        if self.use_f:
            d_new = d_new + h * sum(b[i] * (J[i] @ dY[i] + Pdp[i]) for i in range(s))
        return y_new, d_new

    def pullback_bytes(self, n: int, P: int) -> int:
        """A dense upper bound on what one pullback keeps: [J_j], [df/dp_j] and M's factors."""
        s = self.tab.c.size
        return 8 * (s * n * (n + P) + (s * n) ** 2)

    def pullback(self, t, y, h, p):
        """(y_new, ybar -> (ybar^T dPhi/dy, ybar^T dPhi/dp)): one transposed solve with M."""
        y_new, Y, J, P, lu = self._linearised(t, y, h, p)
        return y_new, lambda ybar: self._backwards(h, J, P, lu, ybar)

    def _backwards(self, h, J, P, lu, ybar):
        a, b = self.tab.a, self.tab.b
        s = a.shape[0]
        Ybar = np.outer(self.w, ybar)
        p_out = np.zeros(P[0].shape[1])
        if self.use_f:
            for i in range(s):
                Ybar[i] += h * b[i] * (J[i].T @ ybar)
                p_out += h * b[i] * (P[i].T @ ybar)
        lam = lu.solve(Ybar.ravel(), transpose=True).reshape(Ybar.shape)
        weighted = h * a.T @ lam                                      # row j: h sum_i a_ij lambda_i
        p_out += sum(P[j].T @ weighted[j] for j in range(s))
        return self.c_y * ybar + lam.sum(axis=0), p_out

    def __call__(self, t, y, h, p, derivatives: bool = True):
        """(y_new, dPhi/dy, dPhi/dp), or (y_new, None, None) without derivatives."""
        if not derivatives:
            return self._new_state(t, y, h, p, self._stages(t, y, h, p)), None, None
        return _full_jacobians(self, t, y, h, p)


def _full_jacobians(step_map, t, y, h, p):
    """(y_new, dPhi/dy, dPhi/dp) as dense matrices, from the tangent in all n + P directions."""
    n, m = y.size, p.size
    y_new, D = step_map.tangent(t, y, h, p, np.hstack([np.eye(n), np.zeros((n, m))]),
                                np.hstack([np.zeros((m, n)), np.eye(m)]))
    return y_new, D[:, :n], D[:, n:]


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
        """(k, J at the step start, factors of W = I / (h gamma) - J, dt of f_t)."""
        tab = self.tab
        f0 = self.d.f(t, y, p)
        J = self.d.dfdy(t, y, p)
        lu = factorised(shifted(1 / (h * tab.gamma_diag), J), f"at t = {t}, h = {h}")
        dt = self._time_step(t)
        f_t = 0.0 if dt is None else (self.d.f(t + dt, y, p) - f0) / dt
        k = np.empty((tab.stages, y.size), dtype=np.result_type(y, p, J.dtype))
        for i in range(tab.stages):
            fi = f0 if i == 0 else self.d.f(t + tab.c[i] * h, y + self.a[i, :i] @ k[:i], p)
            k[i] = lu.solve(fi + (self.C[i, :i] @ k[:i]) / h + h * tab.d[i] * f_t)
        return k, J, lu, dt

    def step(self, t, y, h, p):
        return y + self.m @ self._stages(t, y, h, p)[0]

    def _adjoint_ok(self, t, y, p) -> bool:
        """The stage-wise tangent and adjoint need jac and jac_p that carry a complex y through
        (checked once)."""
        if self._adjoint is None:
            probe = y + 1j * _STEP
            self._adjoint = bool(self.exact and self.d.jac_p is not None
                                 and np.iscomplexobj(self.d.dfdy(t, probe, p))
                                 and np.iscomplexobj(self.d.dfdp(t, probe, p)))
        return self._adjoint

    def pullback_bytes(self, n: int, P: int) -> int:
        """A dense upper bound on what one pullback keeps: the stages, J and W's factors (the
        full step Jacobians without complex-capable jac and jac_p)."""
        return 8 * (self.tab.stages * n + 2 * n * n + n * P)

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
            gbar[i] = lu.solve(kbar[i], transpose=True)
            kbar[:i] += np.outer(self.C[i, :i] / h, gbar[i])
            ft_bar += h * tab.d[i] * gbar[i]
            ti, Yi = t + tab.c[i] * h, y + self.a[i, :i] @ k[:i]
            Ybar = (J if i == 0 else d.dfdy(ti, Yi, p)).T @ gbar[i]
            p_out += (P0 if i == 0 else d.dfdp(ti, Yi, p)).T @ gbar[i]
            y_out += Ybar
            kbar[:i] += np.outer(self.a[i, :i], Ybar)
        for i in range(tab.stages):
            curvature = self._curvature(t, y, p, k[i])
            if curvature is not None:
                y_out += curvature[0].T @ gbar[i]
                p_out += curvature[1].T @ gbar[i]
        if dt is not None:  # f_t = (f(t + dt, y, p) - f(t, y, p)) / dt
            y_out += (d.dfdy(t + dt, y, p) - J).T @ ft_bar / dt
            p_out += (d.dfdp(t + dt, y, p) - P0).T @ ft_bar / dt
        return y_out, p_out

    def __call__(self, t, y, h, p, derivatives: bool = True):
        """(y_new, dPhi/dy, dPhi/dp), or (y_new, None, None) without derivatives."""
        if not derivatives:
            return self.step(t, y, h, p), None, None
        if self._adjoint_ok(t, y, p):
            return _full_jacobians(self, t, y, h, p)
        n, y_new = y.size, self.step(t, y, h, p)
        D = differentiate(lambda x: self.step(t, x[:n], h, x[n:]), np.concatenate([y, p]), complex_step=self.exact)
        return y_new, D[:, :n], D[:, n:]

    def _curvature(self, t, y, p, k):
        """(d/de df/dy(y + e k), d/de df/dp(y + e k)): the dJ k terms of W's derivative for every
        direction at once (symmetry of second derivatives), by one complex step of jac and
        jac_p; None when k = 0."""
        size = np.max(np.abs(k))
        if size == 0:
            return None
        probe = y + 1j * _STEP * (k / size)
        scale = size / _STEP
        return _imag(self.d.dfdy(t, probe, p)) * scale, np.imag(self.d.dfdp(t, probe, p)) * scale

    def tangent(self, t, y, h, p, dy, dp):
        """(y_new, dPhi/dy dy + dPhi/dp dp) for directions dy (n, m) and dp (P, m) (None: the
        identity), by differentiating the stages: dk_i = W^-1 (dg_i + dJ k_i), O(stages) Jacobian evaluations
        per step whatever m."""
        times_dp = (lambda M: M) if dp is None else (lambda M: M @ dp)
        if not self._adjoint_ok(t, y, p):
            y_new, Py, Pp = self(t, y, h, p)
            return y_new, Py @ dy + times_dp(Pp)
        tab, d = self.tab, self.d
        k, J, lu, dt = self._stages(t, y, h, p)
        dk = np.empty((tab.stages,) + dy.shape)
        P0 = d.dfdp(t, y, p)                                            # stage 0 and f_t are at (t, y)
        dft = 0.0 if dt is None else ((d.dfdy(t + dt, y, p) - J) @ dy + times_dp(d.dfdp(t + dt, y, p) - P0)) / dt
        for i in range(tab.stages):
            ti, Yi = t + tab.c[i] * h, y + self.a[i, :i] @ k[:i]
            dY = dy + np.tensordot(self.a[i, :i], dk[:i], axes=1)
            dF = (J if i == 0 else d.dfdy(ti, Yi, p)) @ dY + times_dp(P0 if i == 0 else d.dfdp(ti, Yi, p))
            dg = dF + np.tensordot(self.C[i, :i] / h, dk[:i], axes=1) + h * tab.d[i] * dft
            curvature = self._curvature(t, y, p, k[i])
            if curvature is not None:
                dg = dg + curvature[0] @ dy + times_dp(curvature[1])
            dk[i] = lu.solve(dg)
        return y + self.m @ k, dy + np.tensordot(self.m, dk, axes=1)


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
