"""Rosenbrock methods from the catalogue as SciPy solvers.

Each step factorises W = I/(h gamma) - J once and solves the stages of the transformed
form (Hairer & Wanner IV.7, eq. 7.25), whose coefficients come from
``RosenbrockTableau.transformed()``.  The Jacobian is evaluated at every new step (the
methods' order relies on it); after a rejection it is reused.  Non-autonomous problems
get f_t by a forward difference; pass ``autonomous=True`` to skip it.
"""

from __future__ import annotations

import numpy as np

from stiffcore.catalogue.dense import dense_matrix

from ._base import EPS, StepFailure, StepResult, StiffSolver


class Rosenbrock(StiffSolver):
    """Rosenbrock method from the stiffcore catalogue (see the class docstring)."""

    def __init__(self, *args, autonomous: bool = False, **kwargs):
        self.autonomous = bool(autonomous)
        super().__init__(*args, **kwargs)

    def _setup(self) -> None:
        tab = self.method.coefficients
        self.a, self.C, self.m, m_hat = tab.transformed()
        self.error_weights = None if m_hat is None else self.m - m_hat
        self.gamma, self.c, self.d = tab.gamma_diag, tab.c, tab.d
        self.dense_matrix = dense_matrix(self.method)
        self._jac_point = None

    def _attempt(self, t, y, h, f0):
        if f0 is None:
            f0 = self.eval_f(t, y)
        if self._jac_point is None or self._jac_point[0] != t or self._jac_point[1] is not y:
            if not self.jacobian.is_constant or self.J is None:
                self.refresh_jacobian(t, y, f0)
            self._jac_point = (t, y)
        f_t = 0.0
        if not self.autonomous and np.any(self.d):
            dt = np.sqrt(EPS) * max(1.0, abs(t)) * self.direction
            if self.direction * (t + dt - self.t_bound) > 0:
                dt = -dt  # a backward difference at the very end: fun is never called past t_bound
            f_t = (self.eval_f(t + dt, y) - f0) / dt
        shift = 1 / (h * self.gamma)
        C_over_h = self.C / h  # once per step, not a division per stage (small systems pay per operation)
        k = np.empty((self.c.size, self.n))
        for i, (a_row, C_row, c, d) in enumerate(zip(self.a, C_over_h, self.c, self.d)):
            rhs = f0 if i == 0 else self.fun(self.stage_time(t, h, c), y + a_row[:i] @ k[:i]) + C_row[:i] @ k[:i]
            if d:
                rhs = rhs + (h * d) * f_t
            k[i] = self.solve_shifted(shift, rhs)
        if not np.isfinite(k).all():  # one check per step: non-finite f or overflow shows up here
            raise StepFailure(f"fun returned non-finite values (or a stage overflowed) in the step from t = {t}",
                              shrink=0.25)
        y_new = y + self.m @ k
        f_new = self.eval_f(self.stage_time(t, h, 1.0), y_new)
        error = None if self.error_weights is None else self.error_weights @ k
        dense = None if self.dense_matrix is None else self.dense_matrix @ k  # the method's own extension
        return StepResult(y_new, f_new, error, dense)

    def _interpolation_filter(self, h, raw):
        """(I - h gamma J)^-1 raw: the step's own matrix, already factorised."""
        return self.solve_damped(h * self.gamma, raw)

    def _accepted(self, t, y, h, result) -> None:
        self.lu.clear()  # W depends on J(y), which changes every step
