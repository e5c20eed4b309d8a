"""The ``OdeSolver`` skeleton shared by every stiffcore method in SciPy.

It owns what all methods do alike: option validation in SciPy's words, the Jacobian
and LU caches, step-size control with the method's embedded estimate (Hairer, Norsett &
Wanner I, II.4: h_new = h * min(5, max(0.2, 0.9 err^(-1/(q+1))))), fixed stepping, stops
that steps must land on, and failure messages.  A method subclass implements
``_setup()`` and ``_attempt(t, y, h, f0)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.integrate import OdeSolver
from scipy.sparse import issparse
from scipy.integrate._ivp.base import DenseOutput
from scipy.integrate._ivp.common import (
    select_initial_step, validate_first_step, validate_max_step, validate_tol, warn_extraneous,
)

from stiffcore.catalogue import Method, get_method
from stiffcore.linalg import banded_pattern
from stiffcore.catalogue.dense import (
    HERMITE, controls_interpolation, interpolation_defects,
)

from ._linalg import Jacobian, JacobianAction, KrylovFailure, KrylovSolve, ShiftedLU, SingularMatrixError

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 5.0
EPS = np.finfo(float).eps


def rms(x: np.ndarray) -> float:
    """SciPy's norm (root mean square) of a real array, the dot product np.linalg.norm takes,
    without its call overhead: norms are a tenth of a small system's step overhead (ROBER, FBDF)."""
    x = x.ravel()
    return math.sqrt(x.dot(x) / x.size)


class StepFailure(Exception):
    """A step attempt failed (Newton divergence, singular matrix, non-finite values);
    ``shrink`` is the factor to retry with."""

    def __init__(self, message: str, shrink: float = 0.5) -> None:
        super().__init__(message)
        self.shrink = shrink


@dataclass
class StepResult:
    y: np.ndarray
    f: np.ndarray                 # f(t + h, y) at the new point
    error: np.ndarray | None      # local error estimate (None without an embedded method)
    dense: np.ndarray | None = None   # polynomial coefficients, see PolynomialDense
    newton_rate: float = 0.0      # convergence rate of the last Newton iteration
    newton_iterations: int = 0


def exact_at_step_end(out, t, t_end, y_end):
    """``out`` (a dense output's values at times ``t``) with the step's own ``y_end`` where t is
    the step's end: a polynomial sums to it only to round-off (1e-12 relative seen on a
    linear problem), and ``OdeSolution(t_i)`` must return ``y_i`` itself, as SciPy's do."""
    if np.ndim(t) == 0:
        return y_end.copy() if t == t_end else out
    at_end = np.asarray(t) == t_end
    if at_end.any():
        out = out.copy()
        out[:, at_end] = y_end[:, None]
    return out


class PolynomialDense(DenseOutput):
    """y(t_old + theta h) = y_old + sum_k coeffs[k] theta^(k+1), and exactly ``y_new`` at the
    step's end when given."""

    def __init__(self, t_old, t, y_old, coeffs, y_new=None) -> None:
        super().__init__(t_old, t)
        self.h = t - t_old
        self.y_old = y_old
        self.coeffs = coeffs
        self.y_new = y_new

    def _call_impl(self, t):
        theta = (np.atleast_1d(t) - self.t_old) / self.h
        powers = theta[None, :] ** np.arange(1, self.coeffs.shape[0] + 1)[:, None]
        out = self.y_old[:, None] + self.coeffs.T @ powers
        out = out[:, 0] if np.ndim(t) == 0 else out
        return out if self.y_new is None else exact_at_step_end(out, t, self.t, self.y_new)


def hermite_coeffs(h, y_old, y_new, f_old, f_new) -> np.ndarray:
    """Cubic Hermite interpolant as PolynomialDense coefficients (theta, theta^2, theta^3)."""
    return HERMITE @ np.array([y_new - y_old, h * f_old, h * f_new])


#: GMRES's default relative residual tolerance.  A difference quotient J v carries noise of
#: about sqrt(eps) |y| relative, ~1e-6: a tolerance below it is never met (BRUSS-1D, n = 800:
#: 1e-8 failed every step at h > 1e-4), while 1e-5 gave Rodas5P the step count and error of an
#: exact sparse LU (80 steps, weighted error 0.69 against 0.69).
KRYLOV_RTOL = 1e-5


class StiffSolver(OdeSolver):
    """Base class of the catalogue's SciPy solvers.

    Parameters beyond SciPy's usual ones (``rtol``, ``atol``, ``first_step``, ``max_step``,
    ``jac``, ``jac_sparsity``, ``vectorized``):

    adaptive : bool, optional
        Step with the embedded error estimate (default where the method has one).
        ``adaptive=False`` takes fixed steps of ``first_step`` (required then).
    tstops : array_like, optional
        Times every step must land on exactly (steps are shortened to hit them).
    newton_tol : float, optional
        Stopping tolerance of Newton iterations in the weighted RMS norm
        (default ``max(10 eps / rtol, min(0.03, rtol ** 0.5))``, as SciPy's Radau).
    linear_solver : {"lu", "gmres"}, optional
        How the Newton/Rosenbrock systems ``(I - h gamma J) x = b`` are solved: ``"lu"``
        (default) factorises them, dense or sparse (``splu``) as ``jac``/``jac_sparsity``
        are; ``"gmres"`` never forms J: restarted GMRES on Jacobian-vector products
        (``jac`` as a LinearOperator or matrix, else a forward difference of ``fun``).
    preconditioner : callable, optional
        With ``"gmres"``: ``preconditioner(t, y, h_gamma)`` returns a matrix or
        LinearOperator approximating ``(I - h_gamma J)^-1`` (default: none).
    krylov_rtol, krylov_restart, krylov_maxiter : optional
        GMRES's residual tolerance relative to the right-hand side (default 1e-5, above
        the ~1e-6 noise of the difference quotient J v, which GMRES cannot get below),
        its restart length (30) and restarts (10).
    lband, uband : int, optional
        Jacobian bandwidths, as for LSODA: df_i/dy_j is nonzero only for
        -lband <= j - i <= uband.  A banded ``jac_sparsity``; the LU is then banded.
    control_interpolation : bool, optional
        For adaptive methods (see :func:`stiffcore.catalogue.dense.controls_interpolation`):
        accept a step only when the dense output's error estimates at a quarter and three
        quarters of the step meet the tolerance too (default True; two extra ``fun`` calls per
        step).  False when only the step ends matter.
    """

    method_id: ClassVar[str] = ""
    max_newton_iter: ClassVar[int] = 7

    def __init__(self, fun, t0, y0, t_bound, max_step=np.inf, rtol=1e-3, atol=1e-6, jac=None,
                 jac_sparsity=None, vectorized=False, first_step=None, adaptive=None, tstops=None,
                 newton_tol=None, control_interpolation=True, linear_solver="lu", preconditioner=None,
                 krylov_rtol=None, krylov_restart=30, krylov_maxiter=10, lband=None, uband=None, **extraneous):
        warn_extraneous(extraneous)
        super().__init__(fun, t0, y0, t_bound, vectorized)
        self.method = self._catalogue_entry()
        self.max_step = validate_max_step(max_step)
        self.rtol, self.atol = validate_tol(rtol, atol, self.n)
        self.adaptive = self._check_adaptive(adaptive, first_step)
        # the output between steps meets the tolerance too (catalogue.dense.value_and_scaled_slope)
        self.control_interpolation = bool(control_interpolation) and self.adaptive and self._controls_interpolation()
        self.f = np.asarray(self.fun(self.t, self.y))
        if self.f.shape != (self.n,):
            raise ValueError(f"fun(t0, y0) must return an array of y0's shape ({self.n},), got shape {self.f.shape}")
        if not np.all(np.isfinite(self.f)):
            raise ValueError(f"fun returned non-finite values at t0 = {t0}: {self.f}")
        self.newton_tol = (max(10 * EPS / np.min(self.rtol), min(0.03, np.min(self.rtol) ** 0.5))
                           if newton_tol is None else float(newton_tol))
        jac_sparsity = self._banded_sparsity(jac_sparsity, lband, uband)
        if linear_solver not in ("lu", "gmres"):
            raise ValueError(f"linear_solver must be 'lu' or 'gmres', got {linear_solver!r}")
        if preconditioner is not None and linear_solver != "gmres":
            raise ValueError("a preconditioner applies to linear_solver='gmres' only")
        matrix_free = linear_solver == "gmres"
        self.jacobian = Jacobian(self, jac, jac_sparsity, matrix_free=matrix_free)
        if matrix_free:
            self.lu = KrylovSolve(self, preconditioner, KRYLOV_RTOL if krylov_rtol is None else krylov_rtol,
                                  krylov_restart, krylov_maxiter)
        else:
            self.lu = ShiftedLU(self, self.jacobian.sparse)
        self.J = None
        self.jac_stale = True
        self.tstops = self._check_tstops(tstops, t0, t_bound)
        # accepted steps, attempts rejected by the error estimate, attempts that failed (Newton
        # did not converge, non-finite values): diagnostics beyond SciPy's nfev/njev/nlu
        self.n_accepted = self.n_rejected = self.n_failed = 0
        self.last: StepResult | None = None
        self._setup()
        if t_bound == t0 or self.n == 0:
            # a zero-length span or an empty state: OdeSolver.step finishes at once, as SciPy's solvers do
            self.h_abs = 0.0
        elif first_step is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                self.h_abs = select_initial_step(self.fun, t0, self.y, t_bound, self.max_step, self.f,
                                                 self.direction, self.error_order, self.rtol, self.atol)
            if not (np.isfinite(self.h_abs) and self.h_abs > 0):
                raise ValueError(self._no_first_step_reason(self.h_abs))
        else:
            self.h_abs = validate_first_step(first_step, t0, t_bound)
        self.h_fixed = self.h_abs
        self.rejected_last = False

    # --- option checks ---------------------------------------------------------------
    def _catalogue_entry(self) -> Method:
        """The catalogue record the solver steps with (FBDF/QNDF: their VariableOrderMethod)."""
        return get_method(self.method_id)

    def _controls_interpolation(self) -> bool:
        return controls_interpolation(self.method)

    def _check_adaptive(self, adaptive, first_step) -> bool:
        can = self.method.adaptive and self.supports_adaptive
        # the method's own reason, or (Reversible around an adaptive base) the scheme's
        reason = self.method.fixed_steps_reason or f"{type(self).__name__} takes fixed steps only"
        if adaptive is None:
            adaptive = can
        if adaptive and not can:
            raise ValueError(f"{type(self).__name__} cannot choose its steps: {reason}; pass first_step=h "
                             "and adaptive=False for fixed steps")
        if not adaptive and first_step is None:
            why = "with fixed steps" if can else f"takes fixed steps ({reason}) and"
            raise ValueError(f"{type(self).__name__} {why} needs first_step=h")
        return bool(adaptive)

    def _no_first_step_reason(self, h) -> str:
        zero = np.flatnonzero((np.broadcast_to(self.atol, self.y.shape) == 0) & (self.y == 0))
        if zero.size:
            return (f"cannot choose the first step (the heuristic gave h = {h}): atol = 0 and y0 is 0 in components "
                    f"{zero[:5].tolist()}, so their error scale atol + rtol |y| is 0; give atol > 0 (or first_step=h)")
        return f"cannot choose the first step (the heuristic gave h = {h}); give first_step=h"

    def _banded_sparsity(self, jac_sparsity, lband, uband):
        if lband is None and uband is None:
            return jac_sparsity
        if jac_sparsity is not None:
            raise ValueError("give either jac_sparsity or lband/uband, not both")
        lower, upper = (0 if b is None else b for b in (lband, uband))
        if not all(isinstance(b, (int, np.integer)) and b >= 0 for b in (lower, upper)):
            raise ValueError(f"lband and uband must be integers >= 0, got lband={lband}, uband={uband}")
        return banded_pattern(self.n, int(lower), int(upper))

    @staticmethod
    def _check_tstops(tstops, t0, t_bound):
        if tstops is None:
            return []
        stops = np.asarray(tstops, dtype=float).ravel()
        direction = np.sign(t_bound - t0) or 1
        inside = stops[(direction * (stops - t0) > 0) & (direction * (t_bound - stops) > 0)]
        return sorted(inside.tolist(), reverse=bool(direction < 0))

    supports_adaptive: ClassVar[bool] = True

    @property
    def error_order(self) -> int:
        """Order of the error estimate's leading term minus one (q in err ~ h^(q+1))."""
        return self.method.error_order

    # --- shared machinery ----------------------------------------------------------------
    def eval_f(self, t, y):
        f = self.fun(t, y)
        if not np.isfinite(f).all():
            raise StepFailure(f"fun returned non-finite values at t = {t}", shrink=0.25)
        return f

    def refresh_jacobian(self, t, y, f) -> None:
        self.J = self.jacobian(t, y, f)
        if isinstance(self.J, JacobianAction):
            pass  # matrix-free: non-finite products fail the linear solve
        elif not np.all(np.isfinite(self.J.data if issparse(self.J) else self.J)):
            raise StepFailure(f"the Jacobian has non-finite entries at t = {t}", shrink=0.25)
        self.jac_stale = False
        self.lu.clear()

    def solve_shifted(self, shift, rhs):
        try:
            return self.lu.solve(shift, self.J, rhs)
        except SingularMatrixError as exc:
            raise StepFailure(f"{exc} (shift {shift:.3g})") from None
        except KrylovFailure as exc:
            raise StepFailure(str(exc)) from None

    def solve_damped(self, h_gamma, raw):
        """(I - h gamma J)^-1 raw, through the LU of (1 / (h gamma)) I - J that the stages share."""
        return self.solve_shifted(1 / h_gamma, raw) / h_gamma

    def stage_time(self, t, h, c):
        """t + c h, kept within t_bound where the method's node allows it (c <= 1: only round-off
        in t + h, or Rodas4's c = 1 + 2e-14, could step past).  Kvaerno4/5 place a stage at
        c = 1.15 / 1.23: no step that lands on t_bound avoids evaluating past it, and clamping
        that stage's time costs the method its order on non-autonomous problems (measured: the
        fixed-step convergence test fails), so those evaluations stay, documented."""
        tc = t + c * h
        if c > 1 + 1e-12:
            return tc
        return min(tc, self.t_bound) if self.direction > 0 else max(tc, self.t_bound)

    def _next_time(self, t, h_abs):
        """t + h, shortened to land on the next stop or t_bound, or stretched onto it when
        it lies within a hair beyond (so round-off in t never leaves a sliver of a step)."""
        while self.tstops and self.direction * (self.tstops[0] - t) <= 0:
            self.tstops.pop(0)
        target = self.tstops[0] if self.tstops else self.t_bound
        t_new = t + self.direction * h_abs
        if not math.isfinite(t_new):
            # towards t_bound = inf a decaying solution lets h grow until t + h overflows; every
            # retry would grow it again, so the solve never ended (it hung, as SciPy's Radau does)
            raise ValueError(f"t + h overflows at t = {t:.6g} (h = {h_abs:.3g}): t_bound = {self.t_bound} is not "
                             "reached by finite steps; integrate to a finite time")
        if self.direction * (t_new - target) > -1e-8 * h_abs:
            t_new = target
        return t_new

    def _step_impl(self):
        t, y = self.t, self.y
        min_step = 10 * abs(math.nextafter(t, self.direction * math.inf) - t)
        h_abs = min(self.h_fixed if not self.adaptive else self.h_abs, self.max_step)
        reason = None
        while True:
            if not h_abs >= min_step:  # (a NaN step fails here too, instead of looping forever)
                detail = f" (last attempt at t = {t}: {reason})" if reason else ""
                return False, self.TOO_SMALL_STEP + detail
            t_new = self._next_time(t, h_abs)
            h = t_new - t
            try:
                result = self._attempt(t, y, h, self.f)
                if self.control_interpolation:
                    result.error = self._with_interpolation_error(t, y, h, result)
            except StepFailure as failure:
                reason = str(failure)
                self.n_failed += 1
                if not self.adaptive:
                    return False, f"{failure} with the fixed step h = {h:g} at t = {t}"
                h_abs = abs(h) * failure.shrink
                self.rejected_last = True
                continue
            if self.adaptive:
                scale = self.atol + self.rtol * np.maximum(np.abs(y), np.abs(result.y))
                err = rms(result.error / scale)
                if err > 1 and (self.n_accepted == 0 or self.rejected_last):
                    refined = self._refine_error(t, y, h, result)
                    if refined is not None:
                        err = rms(refined / scale)
                if not math.isfinite(err) or err > 1:
                    factor = MIN_FACTOR if not math.isfinite(err) else \
                        max(MIN_FACTOR, SAFETY * err ** (-1 / (self.error_order + 1)))
                    h_abs = abs(h) * factor
                    self.n_rejected += 1
                    self.rejected_last = True
                    reason = f"error estimate {err:.3g} times the tolerance"
                    continue
                factor = self._growth_factor(err, result)
                if self.rejected_last:
                    factor = min(1.0, factor)
                new = abs(h) * factor
                if abs(h) < h_abs and factor >= 1:
                    new = max(new, h_abs)  # a step shortened to land on a stop says nothing against h
                self.h_abs = new
            self.rejected_last = False
            self.n_accepted += 1
            self.last = result
            self.y_old, self.f_old = y, self.f
            self.t, self.y, self.f = t_new, result.y, result.f
            self._accepted(t, y, h, result)
            return True, None

    def _dense_output_impl(self):
        return PolynomialDense(self.t_old, self.t, self.y_old,
                               self._extension(self.t - self.t_old, self.y_old, self.f_old, self.last), self.y)

    @staticmethod
    def _extension(h, y, f, result):
        """Coefficient rows of the output between y and result.y: the method's own extension,
        or cubic Hermite on (y, f) and (result.y, result.f)."""
        return result.dense if result.dense is not None else hermite_coeffs(h, y, result.y, f, result.f)

    def _with_interpolation_error(self, t, y, h, result):
        """The step's error estimate, raised component by component to the continuous
        extension's error at a quarter and three quarters of the step (defects filtered by the
        step's own matrix; see :func:`stiffcore.catalogue.dense.value_and_scaled_slope`)."""
        coeffs, error = self._extension(h, y, self.f, result), result.error
        for e in interpolation_defects(y, coeffs, h, lambda theta, u: self.eval_f(t + theta * h, u),
                                       lambda defect: self._interpolation_filter(h, defect)):
            error = np.where(np.abs(e) > np.abs(error), e, error)
        return error

    # --- hooks for the method subclasses ------------------------------------------------
    def _interpolation_filter(self, h, raw):
        """(I - h gamma J)^-1 raw with a gamma of the method's own factorisations."""
        raise NotImplementedError

    def _growth_factor(self, err: float, result: StepResult) -> float:
        """Next step size over this one after an accepted step with error norm ``err``."""
        factor = MAX_FACTOR if err == 0 else min(MAX_FACTOR, SAFETY * err ** (-1 / (self.error_order + 1)))
        return 1.0 if 1.0 <= factor <= 1.2 else factor  # keep h: reuse the factorisations

    def _setup(self) -> None:
        """Precompute method coefficients."""

    def _attempt(self, t, y, h, f0) -> StepResult:
        raise NotImplementedError

    def _refine_error(self, t, y, h, result):
        """A better error estimate after a rejection (Radau IIA5); None to keep the first."""
        return None

    def _accepted(self, t, y, h, result) -> None:
        """Called after a step is accepted (for example to keep a Newton predictor)."""
