"""One step of a catalogue method as a map y_{n+1} = Phi(t_n, y_n, h_n, p), with its
exact Jacobians dPhi/dy and dPhi/dp, for discrete forward and adjoint sensitivities.

* Runge-Kutta (explicit or implicit): the stage equations F_i = f(t + c_i h, y + h sum_j
  a_ij F_j, p) are solved by full Newton to round-off; their derivatives follow from the
  implicit function theorem, (I - h [a_ij J_i]) dF = [J_i] dy + [P_i] dp, so they do not
  depend on how the forward solve's Newton iteration went.
* Rosenbrock: the step is explicit given J(y), so its derivative (which involves dJ/dy)
  is taken by complex-step differentiation of the whole step when the user supplies an
  analytic ``jac``, else by central differences.
* Reversible: the McCallum & Foster pair step, chained from its base step maps.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import lu_factor, lu_solve

from stiffcore.catalogue import ButcherTableau, RosenbrockTableau, get_method
from stiffcore.reversible import reversible_step, reversible_step_back

from ._derivatives import _STEP, Derivatives

EPS = np.finfo(float).eps


class StepFailed(ArithmeticError):
    pass


class RungeKuttaStepMap:
    """Phi for a Runge-Kutta tableau; derivatives by the implicit function theorem."""

    def __init__(self, tableau: ButcherTableau, derivs: Derivatives) -> None:
        self.tab, self.d = tableau, derivs
        self.explicit = tableau.is_explicit

    def _stages(self, t, y, h, p):
        a, c = self.tab.a, self.tab.c
        s, n = c.size, y.size
        F = np.empty((s, n))
        if self.explicit:
            for i in range(s):
                F[i] = self.d.f(t + c[i] * h, y + h * (a[i, :i] @ F[:i]), p)
            return F
        F[:] = self.d.f(t, y, p)
        previous = np.inf
        for _ in range(60):
            Y = y + h * (a @ F)
            G = F - np.array([self.d.f(t + c[i] * h, Y[i], p) for i in range(s)])
            M = self._matrix(t, Y, h, p)
            dF = np.linalg.solve(M, -G.ravel()).reshape(s, n)
            F += dF
            size, scale = np.max(np.abs(dF)), max(np.max(np.abs(F)), 1e-300)
            # done at round-off: tiny, or no longer shrinking once far below the solution
            if size <= 4 * EPS * scale or (size > 0.5 * previous and size <= 1e-10 * scale):
                return F
            previous = size
        raise StepFailed(f"stage equations did not converge to round-off at t = {t}, h = {h}")

    def _matrix(self, t, Y, h, p):
        """I - h [a_ij J(Y_i)] as an (s n) x (s n) matrix."""
        a, c = self.tab.a, self.tab.c
        s, n = Y.shape
        M = np.eye(s * n)
        for i in range(s):
            J = self.d.dfdy(t + c[i] * h, Y[i], p)
            for j in range(s):
                if a[i, j]:
                    M[i * n:(i + 1) * n, j * n:(j + 1) * n] -= h * a[i, j] * J
        return M

    def __call__(self, t, y, h, p, derivatives: bool = True):
        a, b, c = self.tab.a, self.tab.b, self.tab.c
        F = self._stages(t, y, h, p)
        y_new = y + h * (b @ F)
        if not derivatives:
            return y_new, None, None
        s, n = F.shape
        Y = y + h * (a @ F)
        M = self._matrix(t, Y, h, p)
        rhs = np.vstack([np.hstack([self.d.dfdy(t + c[i] * h, Y[i], p), self.d.dfdp(t + c[i] * h, Y[i], p)])
                         for i in range(s)])
        dF = lu_solve(lu_factor(M), rhs).reshape(s, n, -1)
        dPhi = h * np.tensordot(b, dF, axes=1)
        return y_new, np.eye(n) + dPhi[:, :n], dPhi[:, n:]


class RosenbrockStepMap:
    """Phi for a Rosenbrock tableau (transformed form); derivatives by complex step."""

    def __init__(self, tableau: RosenbrockTableau, derivs: Derivatives, autonomous: bool = False) -> None:
        self.tab, self.d = tableau, derivs
        self.a, self.C, self.m, _ = tableau.transformed()
        self.autonomous = autonomous
        self.exact = derivs.jac is not None and derivs.complex_ok
        if not self.exact:
            warnings.warn("stiffcore: Rosenbrock sensitivities need d(df/dy)/dy; without an analytic jac= "
                          "that accepts complex input they come from central differences (about 8 digits)",
                          RuntimeWarning, stacklevel=4)

    def step(self, t, y, h, p):
        tab = self.tab
        f0 = self.d.f(t, y, p)
        J = self.d.dfdy(t, y, p)
        W = np.eye(y.size) / (h * tab.gamma_diag) - J
        lu = lu_factor(W)
        f_t = 0.0
        if not self.autonomous and np.any(tab.d):
            dt = np.sqrt(EPS) * max(1.0, abs(t))
            f_t = (self.d.f(t + dt, y, p) - f0) / dt
        k = np.empty((tab.stages, y.size), dtype=np.result_type(y, p, W))
        for i in range(tab.stages):
            fi = f0 if i == 0 else self.d.f(t + tab.c[i] * h, y + self.a[i, :i] @ k[:i], p)
            k[i] = lu_solve(lu, fi + (self.C[i, :i] @ k[:i]) / h + h * tab.d[i] * f_t)
        return y + self.m @ k

    def __call__(self, t, y, h, p, derivatives: bool = True):
        y_new = self.step(t, y, h, p)
        if not derivatives:
            return y_new, None, None
        n, P = y.size, p.size
        cols = []
        for j in range(n + P):
            if self.exact:
                e = np.zeros(n + P, dtype=complex)
                e[j] = 1j * _STEP
                cols.append(np.imag(self.step(t, y + e[:n], h, p + e[n:])) / _STEP)
            else:
                x = np.concatenate([y, p])
                step = np.cbrt(EPS) * max(1.0, abs(x[j]))
                e = np.zeros(n + P)
                e[j] = step
                hi = self.step(t, y + e[:n], h, p + e[n:])
                lo = self.step(t, y - e[:n], h, p - e[n:])
                cols.append((hi - lo) / (2 * step))
        D = np.array(cols).T
        return y_new, D[:, :n], D[:, n:]


def step_map(method, derivs: Derivatives, autonomous: bool = False):
    m = get_method(method)
    if isinstance(m.coefficients, RosenbrockTableau):
        return RosenbrockStepMap(m.coefficients, derivs, autonomous)
    if isinstance(m.coefficients, ButcherTableau):
        return RungeKuttaStepMap(m.coefficients, derivs)
    raise ValueError(f"sensitivities need a one-step method; {m.id!r} is {m.family}")


class ReversiblePairMap:
    """The reversible pair step (y, z) -> (y1, z1) around a base step map, with its adjoint."""

    def __init__(self, base, coupling: float) -> None:
        self.base, self.lam = base, coupling

    def _psi(self, p):
        return lambda t0, t1, x: self.base(t0, x, t1 - t0, p, derivatives=False)[0]

    def forward(self, t, y, z, h, p):
        return reversible_step(self._psi(p), t, t + h, y, z, self.lam)

    def backward(self, t, y1, z1, h, p):
        return reversible_step_back(self._psi(p), t, t + h, y1, z1, self.lam)

    def jacobians(self, t, y, z, h, p):
        """(y1, z1) and the blocks needed for tangents and adjoints of the pair step."""
        lam = self.lam
        psi_z, A1, P1 = self.base(t, z, h, p)
        y1 = lam * y + (1 - lam) * z + (psi_z - z)
        psi_y, A2, P2 = self.base(t + h, y1, -h, p)
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
