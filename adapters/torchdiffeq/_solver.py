"""The torchdiffeq-facing solver: options, the step loop and step-size control.

torchdiffeq builds a solver as ``SOLVERS[method](func=, y0=, rtol=, atol=, **options)``
and calls ``integrate(t)``.  Steps land exactly on every output time (no interpolation),
so outputs carry the method's full order and their gradients are those of the discrete
map.  Adaptive steps use the embedded estimate with the usual controller
h_new = h min(ifactor, max(dfactor, safety err^(-1/(q+1)))) (Hairer, Norsett & Wanner
I, II.4); a batch shares one step size.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import torch

from stiffcore.catalogue import get_method

from ._field import VectorField
from ._steps import Point, StepFailure, stepper

OPTIONS = ("first_step", "step_size", "max_num_steps", "jac", "batch_dims", "newton_tol", "autonomous",
           "safety", "ifactor", "dfactor", "norm")


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x.abs().pow(2).mean().sqrt()


def _positive(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"option {name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"option {name} must be a positive number, got {value!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"option {name} must be a positive finite number, got {value!r}")
    return value


class StiffSolver:
    """A catalogue method as a torchdiffeq solver (see the module docstring).

    Options (``odeint(..., options={...})``):

    ``step_size``: fixed steps; each output interval is split into the fewest equal steps
    no longer than it.  Required for methods without an embedded estimate.
    ``first_step``: the first adaptive step (default: Hairer's starting-step heuristic).
    ``max_num_steps``: attempted steps before giving up (default 2**31 - 1).
    ``jac``: ``"autodiff"`` (default, ``torch.func.jacrev``), ``"finite_difference"`` or a
    callable ``jac(t, y)``.  ``batch_dims``: leading dimensions of ``y0`` that are
    independent systems (one n x n Jacobian per batch element; default 0: the whole
    state is one system).  ``newton_tol``: Newton's stopping tolerance in the weighted RMS
    norm (default max(10 eps / rtol, min(0.03, rtol^0.5))).  ``autonomous``: skip the
    Rosenbrock df/dt term.  ``safety``, ``ifactor``, ``dfactor``: the controller (0.9, 5, 0.2).
    """

    method_id: ClassVar[str] = ""

    def __init__(self, func, y0, rtol=1e-7, atol=1e-9, **options):
        unknown = sorted(set(options) - set(self.valid_options()))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {self.method_id!r}; "
                             f"valid options: {', '.join(self.valid_options())}")
        if not isinstance(y0, torch.Tensor) or not torch.is_floating_point(y0):
            got = y0.dtype if isinstance(y0, torch.Tensor) else type(y0).__name__
            raise TypeError(f"y0 must be a real floating-point tensor (float32 or float64), got {got}")
        self.y0, self.dtype, self.device = y0, y0.dtype, y0.device
        self.method = self._method(options)
        self.field = VectorField(func, y0, options.get("batch_dims", 0), options.get("jac"))
        self.rtol = self._tolerance("rtol", rtol)
        self.atol = self._tolerance("atol", atol)
        self._check_tolerances()
        self.norm = options.get("norm") or _rms_norm
        self.step_size = _positive("step_size", options.get("step_size"))
        self.first_step = _positive("first_step", options.get("first_step"))
        max_steps = options.get("max_num_steps", 2**31 - 1)
        if not (isinstance(max_steps, int) and max_steps >= 1):
            raise ValueError(f"option max_num_steps must be a positive integer, got {max_steps!r}")
        self.max_num_steps = max_steps
        self.safety = _positive("safety", options.get("safety", 0.9))
        self.ifactor = _positive("ifactor", options.get("ifactor", 5.0))
        self.dfactor = _positive("dfactor", options.get("dfactor", 0.2))
        min_rtol = float(self.rtol.min())
        eps = torch.finfo(self.dtype).eps
        newton_tol = options.get("newton_tol")
        self.newton_tol = (max(10 * eps / max(min_rtol, eps), min(0.03, min_rtol ** 0.5)) if newton_tol is None
                           else _positive("newton_tol", newton_tol))
        self.stepper = self._make_stepper(options)
        if self.step_size is None and self._error_order() is None:
            raise ValueError(f"method {self.method_id!r} takes fixed steps ({self.method.fixed_steps_reason}); "
                             "give them with options={'step_size': h}")
        self.n_steps = self.n_rejected = 0

    @classmethod
    def valid_options(cls) -> tuple:
        return OPTIONS

    @classmethod
    def valid_callbacks(cls) -> set:
        return set()

    # --- set-up -------------------------------------------------------------------------
    def _method(self, options):
        return get_method(self.method_id)

    def _make_stepper(self, options):
        roundoff = 4 * torch.finfo(self.dtype).eps / max(float(self.rtol.min()), torch.finfo(self.dtype).eps)
        return stepper(self.method, self.field, self.newton_tol, self._scale, roundoff,
                       bool(options.get("autonomous", False)))

    def _error_order(self) -> int | None:
        return self.method.error_order if self.method.adaptive else None

    def _tolerance(self, name, value) -> torch.Tensor:
        tol = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        if tol.requires_grad:
            raise ValueError(f"{name} cannot require gradient")
        if not bool(torch.all(torch.isfinite(tol) & (tol >= 0))):
            raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
        try:
            return self.field.flat(torch.broadcast_to(tol, self.y0.shape))
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(tol.shape)} does not broadcast to y0's shape "
                             f"{tuple(self.y0.shape)}") from None

    def _check_tolerances(self) -> None:
        """As SciPy's solve_ivp: rtol below 100 eps (float64) is raised to it with a warning; and
        a zero error scale (atol = 0 where y0 = 0) is refused at once, since no step could be
        weighed.  (In float32 the floor is 4 eps: rtol 1e-6, 8 eps, is common there and works.)"""
        eps = torch.finfo(self.dtype).eps
        floor = (100 if self.dtype == torch.float64 else 4) * eps
        if bool(torch.any(self.rtol < floor)):
            warnings.warn(f"rtol below {floor:.3g} ({self.dtype}) is raised to it, as solve_ivp does (a smaller "
                          "rtol asks for less than round-off and only takes more steps)", UserWarning, stacklevel=4)
            self.rtol = torch.clamp(self.rtol, min=floor)
        zero = torch.nonzero(((self.atol == 0) & (self.field.flat(self.y0.detach()) == 0)).any(dim=0)).flatten()
        if zero.numel():
            raise ValueError(f"atol = 0 and y0 is 0 in component(s) {zero[:5].tolist()}, so their error scale "
                             "atol + rtol |y| is 0 and no step can be weighed; give atol > 0 there")

    def _scale(self, y: torch.Tensor) -> torch.Tensor:
        return self.atol + self.rtol * y.abs()

    # --- the step loop --------------------------------------------------------------------
    def integrate_until_event(self, t0, event_fn):
        raise NotImplementedError(f"method {self.method_id!r} does not support event_fn; integrate to a time grid "
                                  "and locate the event from the outputs")

    def integrate(self, t: torch.Tensor) -> torch.Tensor:
        self._check_times(t)
        state = self._start(t[0], self.field.flat(self.y0))
        if self.step_size is None:
            self.h = self._initial_step(state, t) if self.first_step is None else torch.as_tensor(
                self.first_step, dtype=self.dtype, device=self.device)
        out = [self.y0]
        for i in range(1, len(t)):
            state = (self._fixed if self.step_size is not None else self._adaptive)(state, t[i])
            out.append(self.field.unflat(state.y))
            self._on_output(state)
        self.final_state = state
        return torch.stack(out)

    def _on_step(self, state) -> None:
        """Called after every accepted step (the reversible solver records step times here)."""

    def _on_output(self, state) -> None:
        """Called when a step lands on an output time."""

    def _check_times(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or len(t) < 1:
            raise ValueError("t must be a 1-D tensor of output times")
        if t.dtype != self.dtype:
            raise TypeError(f"t has dtype {t.dtype} but y0 has {self.dtype}; pass t.to(y0.dtype) so output times "
                            "are not rounded silently")
        if t.device != self.device:
            raise ValueError(f"t is on {t.device} but y0 is on {self.device}; move them to one device")
        if not bool(torch.all(torch.isfinite(t))):
            raise ValueError("t contains NaN or inf")
        if len(t) > 1 and not bool(torch.all(t[1:] > t[:-1])):
            raise ValueError("t must be strictly monotonic")

    def _start(self, t0, y0):
        point = Point(self.field, t0, y0)
        self._check_finite(point.f, t0, "func returned")
        return point

    def _attempt(self, state, h):
        """(new state, error estimate or None) for a step of size h from ``state``."""
        step = self.stepper.step(state, h)
        self._check_finite(step.y, state.t, "the step produced", failure=True)
        new = Point(self.field, state.t + h, step.y)
        self._check_finite(new.f, new.t, "func returned", failure=True)
        return new, step.error

    @staticmethod
    def _land(state, t):
        """The state of a step that ends on the output time t, with t exactly."""
        state.t = t
        return state

    def _check_finite(self, value, t, what, failure=False) -> None:
        if not bool(torch.all(torch.isfinite(value))):
            message = f"{what} NaN or inf at t = {float(t):.6g} (method {self.method_id!r})"
            if failure:
                raise StepFailure(message, shrink=0.25)
            raise FloatingPointError(message)

    def _count_step(self, t) -> None:
        if self.n_steps + self.n_rejected >= self.max_num_steps:
            raise RuntimeError(f"max_num_steps = {self.max_num_steps} reached at t = {float(t):.6g} "
                               f"(method {self.method_id!r}); raise it or loosen rtol/atol")

    def _fixed(self, state, t_next):
        n = max(1, math.ceil(float((t_next - state.t) / self.step_size) * (1 - 1e-12)))
        h = (t_next - state.t) / n
        for k in range(n):
            t_from = state.t
            self._count_step(t_from)
            h_k = t_next - t_from if k == n - 1 else h
            try:
                state, _ = self._attempt(state, h_k)
            except StepFailure as failure:
                raise FloatingPointError(f"fixed step from t = {float(t_from):.6g} to {float(t_from + h_k):.6g} "
                                         f"failed: {failure}") from None
            if k == n - 1:
                state = self._land(state, t_next)
            self.n_steps += 1
            self._on_step(state)
        return state

    def _adaptive(self, state, t_next):
        q = self._error_order()
        reason = ""
        while bool(state.t < t_next):
            t = state.t
            self._count_step(t)
            h = self.h
            landing = bool(t + 1.01 * h >= t_next)
            if landing:
                h = t_next - t
            # a few ulps of t, as SciPy's solvers bound it (at t = 0 a step of 1e-15 is fine: a
            # first-order estimate needs it on a 1e-12 transient); a NaN h fails too
            finfo = torch.finfo(self.dtype)
            if not bool(h > 8 * finfo.eps * torch.clamp(t.abs(), min=finfo.tiny)):
                raise FloatingPointError(f"step size underflow at t = {float(t):.6g} (h = {float(h):.3g}, method "
                                         f"{self.method_id!r}){': ' + reason if reason else ''}")
            try:
                new, error = self._attempt(state, h)
                with torch.no_grad():  # step sizes are not differentiated: the step sequence is data
                    ratio = self.norm(self.field.unflat(error / torch.maximum(
                        self._scale(state.y.detach()), self._scale(new.y.detach()))))
                if not bool(torch.isfinite(ratio)):
                    raise StepFailure(f"non-finite error estimate at t = {float(t):.6g}", 0.25)
            except StepFailure as failure:
                reason = str(failure)
                self.n_rejected += 1
                self.h = h * failure.shrink
                continue
            exponent = -1.0 / (q + 1)
            if bool(ratio <= 1):
                factor = torch.clamp(self.safety * ratio.clamp(min=1e-10) ** exponent, self.dfactor, self.ifactor)
                proposal = h * factor
                self.h = torch.maximum(proposal, self.h) if landing else proposal
                state = self._land(new, t_next) if landing else new
                self.n_steps += 1
                self._on_step(state)
            else:
                self.n_rejected += 1
                reason = f"error estimate {float(ratio):.3g} times the tolerance"
                self.h = h * torch.clamp(self.safety * ratio ** exponent, self.dfactor, 1.0)
        return state

    def _initial_step(self, state, t) -> torch.Tensor:
        """Hairer, Norsett & Wanner I (II.4): a first step from two f evaluations."""
        q = self._error_order()
        y0, f0 = state.y, self._start_f(state)
        with torch.no_grad():
            scale = self._scale(y0)
            d0, d1 = self.norm(y0 / scale), self.norm(f0 / scale)
            span = t[-1] - t[0]
            h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
            h0 = torch.minimum(h0, span)
            f1 = self.field(t[0] + h0, y0 + h0 * f0)
            d2 = self.norm((f1 - f0) / scale) / h0
            big = torch.maximum(d1, d2)
            h1 = torch.where(big <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / big) ** (1.0 / (q + 1)))
            return torch.minimum(torch.minimum(100 * h0, h1), span).detach()

    def _start_f(self, state):
        return state.f
