"""Variable-step, variable-order BDF (``fbdf``) and NDF (``qndf``) as torchdiffeq methods.

The quasi-constant step-size form of Shampine & Reichelt (1997, sec. 2.3) with the step
arithmetic of :mod:`stiffcore.multistep` (its constant tables become tensors here, applied
with ``tensordot``) and the controller every adapter shares (orders 1..5 from the
estimates of orders k-1, k, k+1 after k + 1 steps at one size; one Jacobian over many
steps; the factorised I - c J kept while c = h / alpha_k is unchanged).

Outputs between steps come from the interpolating polynomial of the step's order, as
SciPy's BDF and ode15s give them: landing every step on an output would re-sample the
history twice per output and hold the order down.  The last output, ``step_t`` and
``jump_t`` are landed on; after a ``jump_t`` the history restarts at order 1.

Gradients are those of the discrete solution for the accepted step and order sequence:
the table's re-sampling and update are linear maps autograd follows, and each corrector
y = b + c f(t, y) is differentiated by the implicit function theorem (Newton runs without
autograd; the backward pass solves with (I - c J(y))^T at the solution), so the
derivative flows through every past value the table holds.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from stiffcore import multistep as ms
from stiffcore.catalogue import get_variable_order

from ._linalg import StepFailure, factor_newton, format_time
from ._solver import OPTIONS, StiffSolver
from ._steps import MAX_FULL_NEWTON_ITER, Point, Step, _ImplicitStages


class HistoryPoint(Point):
    """A state of a multistep solve: (t, y) and the difference table ending there.

    ``table`` (ROWS, B, n) holds nabla^m y at the constant step ``h_table`` for the order
    ``order`` of the step that made it (None: a new history starts here); ``n_equal`` counts
    the steps taken at ``h_table``.  f(t, y) is evaluated only when asked: a step reads the
    table, not f at its start."""

    def __init__(self, field, t, y, table=None, h_table=None, order: int = 1, n_equal: int = 0, f=None):
        self.field, self.t, self.y = field, t, y
        self.table, self.h_table, self.order, self.n_equal = table, h_table, order, n_equal
        self._f, self._jac = f, {}

    @property
    def f(self) -> torch.Tensor:
        if self._f is None:
            self._f = self.field(self.t, self.y)
        return self._f


class VariableOrderSolver(StiffSolver):
    """Base class of the ``fbdf`` and ``qndf`` methods (see the module docstring).

    Options (``odeint(..., options={...})``): those of every stiffcore torch method
    (``first_step``, ``max_num_steps``, ``jac``, ``jac_sparsity``, ``linear_solver`` and GMRES's
    options, ``batch_dims``, ``newton_tol``, ``safety``/``ifactor``/``dfactor`` for the
    first steps and rejections, ``norm``, ``step_t``, ``jump_t``, ``step_size``,
    ``grid_constructor``), plus

    ``max_order``: the highest order used, 1..5 (default 5).

    Fixed steps (``step_size`` or ``grid_constructor``) raise the order by one after every
    k + 1 steps up to ``max_order`` (the starting procedure without error control).
    ``perturb`` is refused: f discontinuous at every step would restart the history at
    every step; name the discontinuities in ``jump_t`` instead.
    """

    family_id: ClassVar[str] = ""

    def __init__(self, func, y0, rtol=1e-7, atol=1e-9, **options):
        self.max_order = ms.check_max_order(options.get("max_order", ms.MAX_ORDER))
        self.order = 1
        if options.get("perturb"):
            raise ValueError(f"method {self.method_id!r} keeps a history across steps: perturb (f discontinuous "
                             "at every step end) would restart it every step; give the discontinuities as "
                             "options={'jump_t': times}")
        super().__init__(func, y0, rtol, atol, **options)
        family = self.method
        self._alpha = [float(a) for a in family.alpha]
        self._error_constants = [float(c) for c in family.error_constants]
        self._weights = ms.corrector_weights(family)
        self._tables: dict = {}
        self._reset_newton()

    @classmethod
    def valid_options(cls) -> tuple:
        return OPTIONS + ("max_order",)

    # --- StiffSolver hooks --------------------------------------------------------------
    def _method(self, options):
        return get_variable_order(self.family_id)

    def _make_stepper(self, options):
        eps = torch.finfo(self.dtype).eps
        self._roundoff = 4 * eps / max(float(self.rtol.min()), eps)
        return None

    def _error_order(self) -> int:
        return self.order

    def _reset_newton(self) -> None:
        self._J = self._newton = self._c = self._rate = None
        self._jac_age, self._jac_stale, self._iterations = 0, False, 1
        self._attempted_from = None
        self._rejected_before = 0

    def _start(self, t0, y0):
        self._reset_newton()
        self.order = 1
        point = HistoryPoint(self.field, t0, y0)
        self._check_finite(point.f, t0, "func returned")
        return point

    def _restart(self, state):
        """A new history at order 1 after a jump of f (f just after it starts the table),
        from a first step chosen afresh."""
        after = super()._restart(state)
        point = HistoryPoint(self.field, after.t, after.y, f=after.f)
        self.order = 1
        if not self.fixed:
            self.h = self._initial_step(point, None)
        return point

    # --- the tables as tensors ------------------------------------------------------------
    def _table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.dtype, like.device)
        if key not in self._tables:
            array = {"predictor": ms.PREDICTOR, "corrector": self._weights, "update": ms.UPDATE,
                     "new_value": ms.NEW_VALUE, "rescale": ms.RESCALE_POLYNOMIALS, "mask": ms.ORDER_MASK}[name]
            self._tables[key] = torch.tensor(array.tolist(), dtype=like.dtype, device=like.device)
        return self._tables[key]

    def _start_table(self, y, h_f) -> torch.Tensor:
        return torch.cat([y[None], h_f[None], y.new_zeros((ms.ROWS - 2, *y.shape))])

    def _resample(self, table, ratio, order: int) -> torch.Tensor:
        """The order-``order`` table at ``ratio`` (a 0-d tensor, differentiable) times its step."""
        low = ms.MAX_ORDER + 1
        powers = ratio ** torch.arange(low, dtype=table.dtype, device=table.device)
        rescale = torch.tensordot(powers, self._table("rescale", table), dims=1)
        masked = self._table("mask", table)[order][:low, None, None] * table[:low]
        return torch.cat([torch.tensordot(rescale, masked, dims=1), table[low:]])

    def _updated(self, table, y_new, order: int) -> torch.Tensor:
        return (torch.tensordot(self._table("update", table)[order], table, dims=1)
                + self._table("new_value", table)[order][:, None, None] * y_new)

    def _interpolate(self, state: HistoryPoint, t) -> torch.Tensor:
        """y(t) on the step that ended at ``state``: its order's interpolating polynomial."""
        if bool(t == state.t):
            return state.y
        s = ((t - state.t) / state.h_table).to(self.dtype)
        terms = ms.interpolation_terms(s, state.order)
        return sum(w * state.table[m] for m, w in enumerate(terms))

    # --- the step loop ------------------------------------------------------------------
    def integrate(self, t: torch.Tensor) -> torch.Tensor:
        if self.fixed:  # fixed steps land on every output
            return super().integrate(t)
        t = self._check_times(t)
        state = self._begin(t[0], t[-1] - t[0])
        self._grid = None
        out = [self.y0]
        for t_out in t[1:]:
            while bool(state.t < t_out):
                state, _ = self._accepted_step(state, t[-1])
            out.append(self.field.unflat(self._interpolate(state, t_out)))
        self.final_state = state
        return torch.stack(out)

    def _extension(self, before, after, step):
        return lambda t: self.field.unflat(self._interpolate(after, t))

    def _attempt(self, state: HistoryPoint, h):
        """One step of the current order from ``state`` (a retry re-samples ``state``'s table
        afresh, so rejected attempts leave nothing in the autograd graph)."""
        if state is self._attempted_from:   # a retry: Newton's last rate no longer holds
            self._rate = None
        self._attempted_from = state
        table, h_table, n_equal = state.table, state.h_table, state.n_equal
        if table is None:
            self.order = 1
            table, h_table, n_equal = self._start_table(state.y, h.to(self.dtype) * state.f), h, 0
        elif not ms.same_step(float(h), float(h_table), float(state.t)):
            table, h_table, n_equal = self._resample(table, (h / h_table).to(self.dtype), self.order), h, 0
        k = self.order
        t_new = state.t + h
        c = (h_table / self._alpha[k]).to(self.dtype)
        y_new = self._correct(t_new, c, table, k)
        self._check_finite(y_new, state.t, "the step produced", failure=True)
        table = self._updated(table, y_new, k)
        with torch.no_grad():
            error = self._error_constants[k] * table[k + 1].detach()
        return HistoryPoint(self.field, t_new, y_new, table, h_table, k, n_equal + 1), Step(y_new, error)

    def _correct(self, t_new, c, table, k: int) -> torch.Tensor:
        """y = b + c f(t_new, y) by Newton from the predictor, with the kept Jacobian: a
        failure with an old J refreshes it and tries again, with a fresh one the step shrinks;
        then the implicit function theorem attaches dy/d(table, c, parameters)."""
        y_pred = torch.tensordot(self._table("predictor", table)[k], table, dims=1)
        b = torch.tensordot(self._table("corrector", table)[k], table, dims=1)
        with torch.no_grad():
            y_pred, b_data, c_data = y_pred.detach(), b.detach(), c.detach()
            weights = 1 / self._scale(y_pred)
            if float(c_data) != self._c:   # a new matrix I - c J: its contraction rate is not known yet
                self._newton, self._c, self._rate = None, float(c_data), None
            while True:
                if self._J is None or (self._jac_age > 0 and (self._jac_stale or self._jac_age >= ms.JACOBIAN_AGE)):
                    self._J = self.field.jacobian(t_new.detach(), y_pred)
                    self._jac_age, self._jac_stale, self._newton, self._rate = 0, False, None, None
                if self._newton is None:
                    self._newton = factor_newton(self._one(y_pred), c_data, [self._J], t_new)
                converged, y = self._newton_iterations(t_new.detach(), y_pred, b_data, c_data, weights)
                if not converged and self._jac_age == 0 and self.fixed:  # no smaller step to fall back on
                    converged, y = self._full_newton(t_new.detach(), y, b_data, c_data, weights)
                if converged:
                    break
                if self._jac_age == 0:
                    raise StepFailure(f"Newton's iteration did not converge in {ms.NEWTON_MAXITER} iterations at "
                                      f"t = {format_time(t_new)} with h = {format_time(c_data * self._alpha[k])} "
                                      f"(order {k})")
                self._jac_stale = True
        return self._attach_gradient(t_new, y, b, c)

    def _newton_iterations(self, t_new, y, b, c, weights):
        """(converged, y): SciPy's test on the contraction rate (Hairer & Wanner II, IV.8),
        the rate carried between steps while the matrix is the same (never trusting one
        faster than 0.3 of the last, CVODE's crate); one device read per iteration."""
        previous, rate = None, self._rate
        for iteration in range(1, ms.NEWTON_MAXITER + 1):
            delta, size = self._newton_increment(t_new, y, b, c, weights)
            if not math.isfinite(size):
                raise StepFailure(f"non-finite values in the Newton iteration at t = {format_time(t_new)}", 0.25)
            if previous is not None:
                rate = size / previous if rate is None else max(0.3 * rate, size / previous)
                if rate >= 1 or rate ** (ms.NEWTON_MAXITER - iteration) / (1 - rate) * size > self.newton_tol:
                    return False, y
            y = y + delta
            self._iterations = iteration
            if size <= self._roundoff or (rate is not None and rate < 1 and rate / (1 - rate) * size < self.newton_tol):
                self._rate = rate
                return True, y
            previous = size
        return False, y

    def _newton_increment(self, t_new, y, b, c, weights):
        """(delta, its weighted norm as a float): one Newton increment for y = b + c f(t_new, y)
        with the current factorised I - c J (the one device read of an iteration)."""
        residual = c * self.field(t_new, y) - (y - b)
        delta = self._newton.solve(residual.reshape(residual.shape[0], -1)).reshape(y.shape)
        return delta, float(self.norm(self.field.unflat(delta * weights)))

    def _full_newton(self, t_new, y, b, c, weights):
        """(converged, y) by Newton with the Jacobian at every iterate, for a fixed step whose
        simplified Newton failed (a large step on a strongly nonlinear transient), to round-off."""
        for _ in range(MAX_FULL_NEWTON_ITER):
            self._J = self.field.jacobian(t_new, y)
            self._newton, self._rate = factor_newton(self._one(y), c, [self._J], t_new), None
            delta, size = self._newton_increment(t_new, y, b, c, weights)
            if not math.isfinite(size):
                break
            y = y + delta
            if size <= max(self._roundoff, 1e-2 * self.newton_tol):
                return True, y
        return False, y

    def _attach_gradient(self, t_new, y, b, c):
        """y out of Newton, carrying dy/d(b, c, parameters) = (I - c J(y))^-1 d(b + c f)."""
        if not torch.is_grad_enabled():
            return y
        residual = y - b - c * self.field(t_new, y)
        if not residual.requires_grad:
            return y
        t_data, c_data = t_new.detach(), c.detach()

        def newton():   # dG/dy at the solution, factorised only if a backward pass happens
            with torch.no_grad():
                return factor_newton(self._one(y), c_data, [self.field.jacobian(t_data, y)], t_data)

        return y + _ImplicitStages.apply(residual, newton)

    def _one(self, like) -> torch.Tensor:
        return torch.ones((1, 1), dtype=like.dtype, device=like.device)

    # --- after a step -------------------------------------------------------------------
    def _on_step(self, state: HistoryPoint) -> None:
        self._jac_age += 1
        k = self.order
        if self.fixed and state.n_equal > k and k < self.max_order:  # the starting procedure
            self.order, state.n_equal = k + 1, 0

    def _next_step_size(self, h, ratio, landing: bool, new: HistoryPoint):
        """After k + 1 steps at one size, the order and step of :func:`stiffcore.multistep.next_order_and_step`;
        until then (and when it keeps h) the step that was intended (a landing's shortening
        undone)."""
        rejected = self.n_rejected > self._rejected_before
        self._rejected_before = self.n_rejected
        k = self.order
        if new.n_equal <= k:
            return self.h
        candidates = ms.order_candidates(k, self.max_order)
        with torch.no_grad():
            scale = self._scale(new.y.detach())
            norms = torch.stack([self.norm(self.field.unflat(new.table[q + 1].detach() / scale)) for q in candidates])
        errors = {q: self._error_constants[q] * size for q, size in zip(candidates, norms.tolist())}
        order, factor = ms.next_order_and_step(k, errors, self._iterations, rejected)
        if factor is None:
            return self.h
        self.order, new.n_equal = order, 0
        return (new.h_table * factor).detach()

    # --- a given history (the conformance check's exact starting values) -----------------
    def _steps_from_history(self, t_last, values, h, t_end, order: int) -> torch.Tensor:
        """y at ``t_end`` after fixed steps of ``step_size`` at ``order`` (no order change),
        from the equally spaced history ``values`` (oldest first, each of y0's shape) at step
        h ending at ``t_last``; differentiable in ``values``."""
        if not self.fixed:
            raise ValueError("a given history is continued with fixed steps: pass options={'step_size': h}")
        times = self._check_times(torch.stack([torch.as_tensor(t_last), torch.as_tensor(t_end)]).to(self.dtype))
        flat = torch.stack([self.field.flat(v) for v in values])
        history = torch.as_tensor(ms.history_matrix(len(values)), dtype=flat.dtype, device=flat.device)
        self._reset_newton()
        self._stops, self._after_jump, self._grid = [], None, None
        self.order = self.max_order = ms.check_max_order(order, 'order')
        state = HistoryPoint(self.field, times[0], flat[-1], torch.tensordot(history, flat, dims=1),
                             torch.as_tensor(h, dtype=self.t_dtype, device=self.device), self.order)
        return self.field.unflat(self._fixed(state, times[1]).y)


class FBDF(VariableOrderSolver):
    """``fbdf``: BDF orders 1..5 in the quasi-constant step-size form (kappa = 0)."""

    family_id = method_id = "fbdf"


class QNDF(VariableOrderSolver):
    """``qndf``: the Klopfenstein-Shampine NDFs of orders 1..4 and BDF5, as MATLAB's ode15s
    (Shampine & Reichelt 1997)."""

    family_id = method_id = "qndf"


for _cls in (FBDF, QNDF):  # each class documents the options it takes
    _cls.__doc__ = f"{_cls.__doc__}\n\n    Reference: {get_variable_order(_cls.family_id).reference}.\n" + \
        VariableOrderSolver.__doc__

#: The method strings this module adds to torchdiffeq.
MULTISTEP_SOLVERS = {cls.method_id: cls for cls in (FBDF, QNDF)}
