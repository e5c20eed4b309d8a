"""Variable-step, variable-order BDF (``FBDF``) and NDF (``QNDF``) as SciPy solvers.

The quasi-constant step-size form of Shampine & Reichelt (1997, sec. 2.3), with the step
arithmetic of :mod:`stiffcore.multistep` and the coefficients of the core catalogue: a
difference table at a constant step, re-sampled when the step changes; orders 1..5 chosen
from the error estimates of orders k-1, k, k+1 after k+1 steps at one size; one Jacobian
kept over many steps (refreshed when Newton fails to converge with an old one) and the LU of
I/c - J reused while c = h / alpha_k is unchanged; dense output from the interpolating
polynomial.  SciPy's own ``BDF`` is left untouched.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from scipy.integrate._ivp.base import DenseOutput
from scipy.integrate._ivp.common import select_initial_step

from stiffcore import multistep as ms
from stiffcore.catalogue import get_variable_order

from ._base import StepFailure, StiffSolver, rms


class DifferenceTableDense(DenseOutput):
    """y(t) on the last step from the order-k table at its end: Newton's backward formula
    P(t_new + s h) = sum_m B_m(s) D[m], s = (t - t_new) / h in [-1, 0]; exactly y_new at t_new."""

    def __init__(self, t_old, t, h, table, order) -> None:
        super().__init__(t_old, t)
        self.h, self.table, self.order = h, table, order

    def _call_impl(self, t):
        s = (np.asarray(t, dtype=float) - self.t) / self.h
        weights = ms.interpolation_weights(s, self.order)[..., :self.order + 1]
        return (weights @ self.table).T


class VariableOrderSolver(StiffSolver):
    """Base class of ``FBDF`` and ``QNDF`` (see the module docstring).

    Parameters beyond those of every stiffcore SciPy solver (``rtol``, ``atol``,
    ``first_step``, ``max_step``, ``jac``, ``jac_sparsity``, ``lband``/``uband``,
    ``linear_solver``, ``preconditioner``, ``tstops``, ``newton_tol``; events and
    ``dense_output`` through ``solve_ivp``):

    max_order : int, optional
        Highest order used, 1..5 (default 5).
    jumps : array_like, optional
        Times where ``fun`` is discontinuous: steps land on them and the history restarts
        at order 1 after each, since a difference table across a jump is meaningless.
    adaptive : bool, optional
        ``adaptive=False`` takes fixed steps of ``first_step``, raising the order by one
        after every k + 1 steps up to ``max_order`` (the starting procedure, no error control).

    The dense output is the interpolating polynomial of the step's order (what the error
    estimate controls); ``control_interpolation`` has no effect here.  After a solve,
    ``orders`` and ``restarts`` hold each accepted step's order and whether it started a
    new history (what the discrete sensitivities replay).
    """

    family_id: ClassVar[str] = ""

    def __init__(self, fun, t0, y0, t_bound, max_order=ms.MAX_ORDER, jumps=None, **options):
        self.max_order = ms.check_max_order(max_order)
        jumps = self._check_tstops(jumps, t0, t_bound) if jumps is not None else []
        self.jump_times = set(jumps)
        tstops = options.pop("tstops", None)
        merged = np.concatenate([np.ravel(np.asarray(tstops, dtype=float)) if tstops is not None else [], jumps])
        super().__init__(fun, t0, y0, t_bound, tstops=merged if merged.size else None, **options)

    # --- StiffSolver hooks --------------------------------------------------------------
    def _catalogue_entry(self):
        return get_variable_order(self.family_id)

    def _controls_interpolation(self) -> bool:
        return False

    def _check_adaptive(self, adaptive, first_step) -> bool:
        adaptive = True if adaptive is None else bool(adaptive)
        if not adaptive and first_step is None:
            raise ValueError(f"{type(self).__name__} with fixed steps needs first_step=h")
        return adaptive

    @property
    def error_order(self) -> int:
        return self.order

    def _setup(self) -> None:
        family = self.method
        self.order = 1
        self.error_constants = family.error_constants
        self.alpha = family.alpha
        self.corrector = ms.corrector_weights(family)
        self.table = None          # the difference table; None until the first step (or after a jump)
        self.h_table = 0.0         # the (signed) step the table is at
        self.n_equal_steps = 0
        self.newton_rate = None
        self.c = None              # h / alpha_k of the last Newton matrix
        self.jac_age = 0           # accepted steps since J was evaluated (0: during this step's attempts)
        self.orders: list[int] = []
        self.restarts: list[bool] = []

    # --- stepping -----------------------------------------------------------------------
    def _step_impl(self):
        t, y = self.t, self.y
        min_step = 10 * abs(math.nextafter(t, self.direction * math.inf) - t)
        h_abs = min(self.h_abs if self.adaptive else self.h_fixed, self.max_step)
        restart = self.table is None
        rejected, reason = False, None
        while True:
            if not h_abs >= min_step:
                detail = f" (last attempt at t = {t}: {reason})" if reason else ""
                return False, self.TOO_SMALL_STEP + detail
            t_new = self._next_time(t, h_abs)
            h = t_new - t
            self._table_at(t, y, h)
            try:
                y_new, iterations = self._correct(t_new, h)
            except StepFailure as failure:
                self.n_failed += 1
                if not self.adaptive:
                    return False, f"{failure} with the fixed step h = {h:g} at t = {t}"
                reason, rejected = str(failure), True
                h_abs = abs(h) * failure.shrink
                continue
            table = ms.update(self.table, y_new, self.order)
            if not self.adaptive:
                break
            scale = self.atol + self.rtol * np.maximum(np.abs(y), np.abs(y_new))
            err = self.error_constants[self.order] * rms(table[self.order + 1] / scale)
            if err <= 1:
                break
            factor = max(ms.MIN_FACTOR, ms.newton_safety(iterations) * err ** (-1 / (self.order + 1)))
            self.n_rejected += 1
            self.newton_rate = None  # Newton may have stopped early on a rate that no longer holds
            reason, rejected = f"error estimate {err:.3g} times the tolerance", True
            h_abs = abs(h) * factor
        self.n_accepted += 1
        self.orders.append(self.order)
        self.restarts.append(restart)
        self.table = table
        self.jac_age += 1
        self.last_step = (table, self.order, h)  # for the dense output (tables are never changed in place)
        self.n_equal_steps += 1
        self.y_old = y
        self.t, self.y = t_new, y_new
        self.h_abs = h_abs
        self._next_order_and_step(iterations, rejected)
        if t_new in self.jump_times:
            self._restart_after_jump()
        return True, None

    def _table_at(self, t, y, h) -> None:
        """The difference table at step h: a new order-1 table, or the current one re-sampled."""
        if self.table is None:
            self.table = ms.start_table(y, h * self.eval_f(t, y))
            self.order, self.n_equal_steps, self.h_table = 1, 0, h
        elif not ms.same_step(h, self.h_table, t):
            self.table = ms.resample(self.table, h / self.h_table, self.order)
            self.n_equal_steps, self.h_table = 0, h

    def _correct(self, t_new, h):
        """Solve y = b + c f(t_new, y) by Newton from the predictor (SciPy's ``newton_tol``
        test on the contraction rate, Hairer & Wanner II, IV.8); with an old Jacobian a
        failure refreshes it and tries again, with a fresh one the step is shrunk."""
        k = self.order
        # the table's step, not t_new - t: equal steps differ by round-off, and an exactly
        # unchanged c keeps the LU of I/c - J (and the Newton rate) for the next step
        c = self.h_table / self.alpha[k]
        if c != self.c:  # a new matrix I/c - J: its contraction rate is not known yet
            self.c, self.newton_rate = c, None
        y_pred = ms.PREDICTOR[k] @ self.table
        b = self.corrector[k] @ self.table
        scale = self.atol + self.rtol * np.abs(y_pred)
        while True:
            if self.J is None or (self.jac_age > 0 and (self.jac_stale or self.jac_age >= ms.JACOBIAN_AGE)):
                self.refresh_jacobian(t_new, y_pred, self.eval_f(t_new, y_pred))
                self.jac_age, self.newton_rate = 0, None
            converged, y, iterations = self._newton(t_new, y_pred, b, c, scale)
            if converged:
                return y, iterations
            if self.jac_age == 0 or self.jacobian.is_constant:  # J is this step's own: shrink the step
                raise StepFailure(f"Newton's iteration did not converge in {ms.NEWTON_MAXITER} iterations at "
                                  f"t = {t_new}, h = {h:.3g} (order {k})", shrink=0.5)
            self.jac_stale = True

    def _newton(self, t_new, y, b, c, scale):
        y = y.copy()
        previous, rate = None, self.newton_rate
        for iteration in range(1, ms.NEWTON_MAXITER + 1):
            f = self.eval_f(t_new, y)
            delta = self.solve_shifted(1 / c, f - (y - b) / c)
            size = rms(delta / scale)
            if not math.isfinite(size):  # a finite size is a finite delta, so y + delta stays finite
                raise StepFailure(f"the Newton iterate is not finite at t = {t_new}", shrink=0.25)
            if previous is not None:
                # never trust a contraction faster than 0.3 of the last one seen (CVODE's crate)
                rate = size / previous if rate is None else max(0.3 * rate, size / previous)
                if rate >= 1 or rate ** (ms.NEWTON_MAXITER - iteration) / (1 - rate) * size > self.newton_tol:
                    return False, y, iteration
            y += delta
            if size == 0 or (rate is not None and rate < 1 and rate / (1 - rate) * size < self.newton_tol):
                self.newton_rate = rate
                return True, y, iteration
            previous = size
        return False, y, ms.NEWTON_MAXITER

    def _next_order_and_step(self, iterations: int, rejected: bool) -> None:
        """After k + 1 steps at one size: the order among k-1, k, k+1 whose estimate allows
        the largest step, and that step (Shampine & Reichelt 1997, sec. 2.3)."""
        k = self.order
        if self.n_equal_steps <= k:
            return
        if not self.adaptive:
            if k < self.max_order:
                self.order, self.n_equal_steps = k + 1, 0
            return
        scale = self.atol + self.rtol * np.abs(self.y)
        errors = {q: self.error_constants[q] * rms(self.table[q + 1] / scale)
                  for q in ms.order_candidates(k, self.max_order)}
        order, factor = ms.next_order_and_step(k, errors, iterations, rejected)
        if factor is not None:
            self.order, self.n_equal_steps = order, 0
            self.h_abs = min(abs(self.h_table) * factor, self.max_step)

    def _restart_after_jump(self) -> None:
        """A new history at order 1 (``_table_at`` starts it) from a step chosen afresh."""
        self.table = None
        f = self.eval_f(self.t, self.y)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = select_initial_step(self.fun, self.t, self.y, self.t_bound, self.max_step, f, self.direction, 1,
                                    self.rtol, self.atol)
        self.h_abs = h if np.isfinite(h) and h > 0 else self.h_abs

    def _dense_output_impl(self):
        table, k, h = self.last_step
        return DifferenceTableDense(self.t_old, self.t, h, table[:k + 1], k)


class FBDF(VariableOrderSolver):
    """FBDF: BDF orders 1..5 in the quasi-constant step-size form (kappa = 0)."""

    family_id = "fbdf"


class QNDF(VariableOrderSolver):
    """QNDF: the Klopfenstein-Shampine NDFs of orders 1..4 and BDF5, as MATLAB's ode15s
    (Shampine & Reichelt 1997): up to 26% larger steps than BDF at orders 1..3 for the
    same error, at A(alpha) of 90, 90, 80, 66 and 51 degrees."""

    family_id = "qndf"


for _cls in (FBDF, QNDF):  # each class documents the options it takes
    _cls.__doc__ = f"{_cls.__doc__}\n\n    Reference: {get_variable_order(_cls.family_id).reference}.\n" + \
        VariableOrderSolver.__doc__
