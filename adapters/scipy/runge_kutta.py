"""Runge-Kutta methods from the catalogue as SciPy solvers.

Fully implicit methods (Radau IIA, Gauss-Legendre, Lobatto IIIC) solve their stage
equations by simplified Newton in the eigenbasis of A^-1, one real or complex n x n
system per eigenvalue (a conjugate pair shares one complex system), as RADAU5 does
(Hairer & Wanner IV.8).  Diagonally implicit methods solve stage by stage with the
matrix I/(h a_ii) - J.  Jacobians and factorisations are reused across steps until
Newton slows down.  Explicit methods (bases for ``Reversible``) step directly.
"""

from __future__ import annotations

import numpy as np

from stiffcore.catalogue.dense import MAX_PREDICTOR_THETA, dense_matrix, extrapolated_change
from stiffcore.catalogue.schemes import runge_kutta_scheme

from ._base import EPS, StepFailure, StepResult, StiffSolver, rms


class NewtonFailure(StepFailure):
    """Newton's iteration for the stage equations diverged or converged too slowly."""

SLOW_NEWTON = 1e-3  # recompute J for the next step when Newton contracted slower than this


class ImplicitRungeKutta(StiffSolver):
    """Implicit Runge-Kutta method from the stiffcore catalogue (see the class docstring)."""

    def _setup(self) -> None:
        tab = self.method.coefficients
        self.a, self.b, self.c = tab.a, tab.b, tab.c
        self.fully_implicit = self.method.family == "fully_implicit"
        self.error_weights = None if tab.b_embedded is None else tab.b - tab.b_embedded
        self.b0 = tab.b0_embedded
        scheme = runge_kutta_scheme(self.method)
        self.error_filter, self.defect_filter = scheme.error_filter, scheme.defect_filter
        self.stiffly_accurate = tab.is_stiffly_accurate and tab.a[-1, -1] != 0
        self.predictor = None
        self.jac_point = None
        self.dense_weights = dense_matrix(self.method)  # on the increments h K (DIRK); see below for FIRK
        self.b0_shift = None
        if self.fully_implicit:
            a_inv = np.linalg.inv(tab.a)
            # the eigenbasis of A (that of A^-1), from the catalogue's stepping scheme; these
            # systems are shifted by the eigenvalues mu = 1 / gamma of A^-1
            split = scheme.blocks[0].split
            if split is None:
                raise ValueError(f"{self.method.id!r}: A is too far from diagonalisable for the split stage solve")
            self.mu, self.V, self.V_inv = 1 / split.eigenvalues, split.V, split.V_inv
            self.blocks = [(i, partner, self.mu[i] if partner is not None else self.mu[i].real)
                           for i, partner in split.systems]
            self.solution_weights = tab.b @ a_inv          # y1 = y0 + (b A^-1) Z
            if tab.is_stiffly_accurate:                       # = Z_s exactly, without round-off
                self.solution_weights = np.eye(tab.stages)[-1]
            self.stage_weights = a_inv                       # h F = A^-1 Z
            if self.error_weights is not None:
                self.error_z_weights = -self.error_weights @ a_inv  # (b^ - b) A^-1
            D = self.dense_weights             # acts on increments h K = A^-1 Z
            self.dense_weights = None if D is None else D @ a_inv
            real = [m for _, p, m in self.blocks if p is None]
            # the real eigenvalue of A^-1 that 1 / b0 is, so the filter reuses the stages' LU
            self.b0_shift = next((m for m in real if self.b0 and abs(m * self.b0 - 1) < 1e-12), None)

    # --- one step -------------------------------------------------------------------------
    def _attempt(self, t, y, h, f0):
        if f0 is None:
            f0 = self.eval_f(t, y)
        if self.jac_stale:
            self.refresh_jacobian(t, y, f0)
            self.jac_point = (t, y)
        solve_stages = self._firk if self.fully_implicit else self._dirk
        try:
            return solve_stages(t, y, h, f0)
        except NewtonFailure:
            fresh = self.jac_point is not None and self.jac_point[0] == t and self.jac_point[1] is y
            if fresh or self.jacobian.is_constant:
                raise
            self.refresh_jacobian(t, y, f0)  # an old Jacobian may be to blame: retry once with a new one
            self.jac_point = (t, y)
            return solve_stages(t, y, h, f0)

    def _newton_scale(self, y):
        return self.atol + self.rtol * np.abs(y)

    def _converged(self, dz_norm, previous, k):
        """RADAU5's test: returns (done, failed, rate).  An increment far below the tolerance
        is converged whatever its rate (at round-off level the rate is noise near 1)."""
        rate = min(dz_norm / previous, 1.0) if previous else 0.0
        # round-off alone makes increments of about eps/rtol in the weighted norm
        if dz_norm <= max(1e-2 * self.newton_tol, 4 * EPS / np.min(self.rtol)):
            return True, False, rate
        if previous is None:
            return False, False, 0.0
        if rate >= 1 or rate ** (self.max_newton_iter - k) / (1 - rate) * dz_norm > self.newton_tol:
            return False, True, rate
        return dz_norm == 0 or rate / (1 - rate) * dz_norm < self.newton_tol, False, rate

    def _predicted_change(self, t, y, h, c):
        """Newton's starting guess for a stage at t + c h, as a change from y: the last step's
        extension extrapolated, or None (no extension, a rejected or first step, or a reach
        beyond :data:`MAX_PREDICTOR_THETA` of its steps)."""
        if self.predictor is None or t != self.t or y is not self.y:
            return None
        theta = 1 + c * h / self.predictor[0]
        return extrapolated_change(self.predictor[1], theta) if abs(theta) <= MAX_PREDICTOR_THETA else None

    def _firk(self, t, y, h, f0):
        s, n = self.c.size, self.n
        scale = self._newton_scale(y)
        z = np.zeros((s, n))  # RADAU5's guess: the last collocation polynomial extrapolated, else y
        predicted = [self._predicted_change(t, y, h, c) for c in self.c]
        if all(p is not None for p in predicted):
            z = np.array(predicted)
        w = self.V_inv @ z
        previous, rate = None, 0.0
        for k in range(self.max_newton_iter):
            f = np.array([self.fun(self.stage_time(t, h, self.c[i]), y + z[i]) for i in range(s)])
            if not np.all(np.isfinite(f)):  # one check per iteration, not per stage
                raise StepFailure(f"fun returned non-finite values at t = {t} + c h, h = {h}", shrink=0.25)
            g = self.V_inv @ f - (self.mu / h)[:, None] * w
            dw = np.empty_like(w)
            for i, partner, mu in self.blocks:
                rhs = g[i].real if partner is None else g[i]
                dw[i] = self.solve_shifted(mu / h, rhs)
                if partner is not None:
                    dw[partner] = dw[i].conjugate()
            dz = (self.V @ dw).real
            dz_norm = rms(dz / scale)
            if not np.isfinite(dz_norm):
                break
            done, failed, rate = self._converged(dz_norm, previous, k)
            if failed:
                break
            w += dw
            z = (self.V @ w).real
            if done:
                return self._firk_result(t, y, h, f0, z, rate, k + 1)
            previous = dz_norm
        raise NewtonFailure(f"Newton iteration did not converge (rate {rate:.3g}) at t = {t}")

    def _firk_result(self, t, y, h, f0, z, rate, iterations):
        y_new = y + self.solution_weights @ z
        f_new = self.eval_f(self.stage_time(t, h, 1.0), y_new)
        error = None
        if self.error_weights is not None:
            raw = self.error_z_weights @ z + h * self.b0 * f0
            error = self._stiff_filter(h, raw, self.error_filter) if self.error_filter else raw
            self._raw_error_z = self.error_z_weights @ z
        dense = None if self.dense_weights is None else self.dense_weights @ z
        return StepResult(y_new, f_new, error, dense, rate, iterations)

    def _stiff_filter(self, h, raw, gamma):
        """(I - h gamma J)^-1 raw, the stiff error estimate of Hairer & Wanner (IV.8, eq. 8.20)
        for gamma = b0, through the stages' own factorisation where 1 / b0 is an eigenvalue of A^-1."""
        if gamma == self.b0 and self.b0_shift is not None:
            shift = self.b0_shift / h
            return shift * self.solve_shifted(shift, raw)
        return self.solve_damped(h * gamma, raw)

    def _interpolation_filter(self, h, raw):
        """(I - h gamma J)^-1 raw with the scheme's gamma: b0 for Radau IIA, the diagonal for a DIRK."""
        if not self.defect_filter:
            return raw                  # explicit: nothing is stiff enough to filter
        return self._stiff_filter(h, raw, self.defect_filter)

    def _refine_error(self, t, y, h, result):
        # Shampine's refinement is made for gamma = b0, where y0 + err cancels a stiff
        # component's transient (fully implicit methods; a DIRK filters with its diagonal)
        if not (self.b0 and self.fully_implicit and self.error_filter) or result.error is None:
            return None
        try:
            f = self.eval_f(t, y + result.error)
        except StepFailure:
            return None
        return self._stiff_filter(h, self._raw_error_z + h * self.b0 * f, self.error_filter)

    def _dirk(self, t, y, h, f0):
        s, n = self.c.size, self.n
        scale = self._newton_scale(y)
        F = np.empty((s, n))
        worst, iterations = 0.0, 0
        Y = y
        for i in range(s):
            psi = y + h * (self.a[i, :i] @ F[:i])
            aii = self.a[i, i]
            if aii == 0:
                F[i] = f0 if (i == 0 and self.c[0] == 0) else self.eval_f(self.stage_time(t, h, self.c[i]), psi)
                Y = psi
                continue
            gamma = h * aii
            # Newton starts from the last step's extension extrapolated (RADAU5's predictor), else
            # from the previous stage's value.  psi + h a_ii K_(i-1), used alone before, is off by
            # h a_ii (K_i - K_(i-1)), which grows like h lambda on stiff modes: on ROBER half of
            # Kvaerno5's attempts failed in Newton with it (1,093 of 1,881; now 3 of 168).  It
            # stays as the second guess: on a smooth problem with a long first step (no
            # extension yet) it is the better one.
            predicted = self._predicted_change(t, y, h, self.c[i])
            guesses = [y + predicted if predicted is not None else Y, psi + gamma * (F[i - 1] if i else f0)]
            for guess in guesses:
                Y, rate, k = self._dirk_stage(t, h, self.c[i], psi, gamma, guess, scale)
                if Y is not None:
                    break
            if Y is None:
                # Newton's rate says how much shorter a step must be: it contracts about in
                # proportion to h, so a diverging iteration (rate >= 1) shrinks h further
                raise NewtonFailure(f"Newton iteration did not converge in stage {i + 1} (rate {rate:.3g}) at t = {t}",
                                    shrink=0.5 if rate < 1 else max(0.1, 0.5 / rate))
            F[i] = (Y - psi) / gamma
            worst = max(worst, rate)
            iterations = max(iterations, k)
        # stiffly accurate: the last stage is the solution, read off without the cancellation
        # of y + h b.F when |h lambda| is large
        y_new = Y if self.stiffly_accurate else y + h * (self.b @ F)
        f_new = self.eval_f(self.stage_time(t, h, 1.0), y_new)
        error = None
        if self.error_weights is not None:
            error = h * (self.error_weights @ F)
            if self.b0:
                error = error - h * self.b0 * f0
            if self.error_filter:
                # (I - h gamma J)^-1 on an estimate that grows on stiff modes (Hosea & Shampine
                # 1996, sec. 4; schemes.runge_kutta_scheme), reusing the stage factorisation
                error = self.solve_damped(h * self.error_filter, error)
        dense = None if self.dense_weights is None else self.dense_weights @ (h * F)
        return StepResult(y_new, f_new, error, dense, worst, iterations)

    def _dirk_stage(self, t, h, c, psi, gamma, Y, scale):
        """Simplified Newton for one DIRK stage ``Y = psi + gamma f(t + c h, Y)`` from the guess
        ``Y``: (Y, rate, iterations), with Y None where it diverged or was too slow."""
        previous, rate = None, 0.0
        for k in range(self.max_newton_iter):
            g = (psi - Y) / gamma + self.eval_f(self.stage_time(t, h, c), Y)
            dY = self.solve_shifted(1 / gamma, g)
            dy_norm = rms(dY / scale)
            if not np.isfinite(dy_norm):
                return None, np.inf, k + 1
            done, failed, rate = self._converged(dy_norm, previous, k)
            if failed:
                return None, rate, k + 1
            Y = Y + dY
            if done:
                return Y, rate, k + 1
            previous = dy_norm
        return None, rate, self.max_newton_iter

    def _growth_factor(self, err, result):
        """RADAU5's controller (Hairer & Wanner IV.8): a safety factor that shrinks with the
        Newton iterations spent, and h kept unchanged below a 1.2 increase unless the
        Jacobian is due anyway, so the factorisations carry over."""
        n_max = self.max_newton_iter
        safety = 0.9 * (2 * n_max + 1) / (2 * n_max + max(result.newton_iterations, 1))
        factor = 5.0 if err == 0 else min(5.0, safety * err ** (-1 / (self.error_order + 1)))
        return 1.0 if factor < 1.2 and not self._jacobian_due(result) else factor

    def _jacobian_due(self, result) -> bool:
        return (not self.jacobian.is_constant and result.newton_iterations > 2
                and result.newton_rate > SLOW_NEWTON)

    def _accepted(self, t, y, h, result) -> None:
        if self._jacobian_due(result):
            self.jac_stale = True
        self.predictor = None if result.dense is None else (h, result.dense)


class ExplicitRungeKutta(StiffSolver):
    """Explicit Runge-Kutta method from the catalogue (mainly a base for ``Reversible``)."""

    def _setup(self) -> None:
        tab = self.method.coefficients
        self.a, self.b, self.c = tab.a, tab.b, tab.c
        self.error_weights = None if tab.b_embedded is None else tab.b - tab.b_embedded

    def _attempt(self, t, y, h, f0):
        s = self.c.size
        F = np.empty((s, self.n))
        F[0] = self.eval_f(t, y) if f0 is None else f0
        for i in range(1, s):
            F[i] = self.eval_f(self.stage_time(t, h, self.c[i]), y + h * (self.a[i, :i] @ F[:i]))
        y_new = y + h * (self.b @ F)
        error = None if self.error_weights is None else h * (self.error_weights @ F)
        return StepResult(y_new, self.eval_f(self.stage_time(t, h, 1.0), y_new), error)
