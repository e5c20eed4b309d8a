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

from stiffcore.catalogue.dense import (
    HERMITE, controls_interpolation, dense_matrix, value_and_scaled_slope,
)

from ._compiled import CompiledRosenbrock
from ._field import VectorField
from ._recompute import Recomputed, recomputable_parameters
from ._steps import Point, Step, StepFailure, raised_to_interpolation_error, stepper

OPTIONS = ("first_step", "step_size", "max_num_steps", "jac", "jac_sparsity", "linear_solver", "preconditioner",
           "krylov_rtol", "krylov_restart", "krylov_maxiter", "batch_dims", "newton_tol", "autonomous",
           "safety", "ifactor", "dfactor", "norm", "step_t", "jump_t", "perturb", "grid_constructor")
#: the interpolation error control needs rtol >= this many eps of the state's dtype (float64:
#: 2.2e-12, float32: 1.2e-3), where its defects are not round-off
DEFECT_RTOL_FLOOR = 1e4
#: recompute_steps=None turns recomputation on from this many unknowns (per batch element)
RECOMPUTE_FROM = 20
#: torchdiffeq's step callbacks, set on func by odeint: (t0, y0, dt) before each attempt,
#: after an accepted one, after a rejected one
CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


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
    no longer than it.  Methods without an embedded estimate take one step per output
    interval when it is not given (as torchdiffeq's fixed-grid solvers step on ``t``).
    ``grid_constructor``: fixed steps on ``grid_constructor(func, y0, t)`` (torchdiffeq's
    fixed-grid option; it must start at t[0] and end at t[-1]), plus the output times.
    ``perturb``: with fixed steps, each step evaluates f just after its start and just before
    its end (torchdiffeq's ``perturb``), for an f that jumps at the output times.
    ``step_t``, ``jump_t``: adaptive steps land on these times; at a ``jump_t`` f is
    discontinuous, so the step ending there sees f just before it and the next one starts from
    f just after it (stages beyond a step's end, Kvaerno4/5's, are held just before the jump).
    ``first_step``: the first adaptive step (default: Hairer's starting-step heuristic).
    ``max_num_steps``: attempted steps before giving up (default 2**31 - 1).
    ``jac``: ``"autodiff"`` (default, ``torch.func.jacrev``), ``"finite_difference"`` or a
    callable ``jac(t, y)``.  ``batch_dims``: leading dimensions of ``y0`` that are
    independent systems (one n x n Jacobian per batch element; default 0: the whole
    state is one system).  ``newton_tol``: Newton's stopping tolerance in the weighted RMS
    norm (default max(10 eps / rtol, min(0.03, rtol^0.5))).  ``autonomous``: skip the
    Rosenbrock df/dt term.  ``safety``, ``ifactor``, ``dfactor``: the controller (0.9, 5, 0.2).
    ``control_interpolation``: accept an adaptive step only when its continuous extension (the
    output between its ends: events, and as SciPy's and diffrax's adapters interpolate) also
    meets the tolerance, judged from filtered defects at a quarter and three quarters of the
    step (default True, as in the other adapters; two more f evaluations a step; off below
    rtol = 1e4 eps of the state's dtype, where the defects are round-off).  It also
    backs up an embedded estimate that underestimates: on ROBER at rtol 1e-8 rodas5p's
    estimate read 0.024 of the tolerance for a step whose true local error was 0.41, and
    without the control one output came out at 25x the tolerance.
    ``compile_step``: Rosenbrock methods only; run each step attempt as one ``torch.compile`` d
    function (:mod:`._compiled`): the same arithmetic without eager torch's per-operation
    overhead (ROBER, POLLU, HIRES: solves 3-5x and gradients 5-9x faster), but the first solve
    of each problem, shape, dtype and device compiles for 10-40 s (default False).
    ``recompute_steps``: backpropagation keeps each step's inputs only and recomputes the step
    in the backward pass (:mod:`._recompute`); None (default) does so from 20 unknowns when
    ``func`` is an ``nn.Module`` whose parameters are every tensor it differentiates, True
    insists (and refuses any other func), False keeps every step's graph.
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
        self.field = VectorField(func, y0, options.get("batch_dims", 0), options.get("jac"),
                                 options.get("jac_sparsity"), _krylov_options(options))
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
        self.grid_constructor = options.get("grid_constructor")
        if self.grid_constructor is not None and (self.step_size is not None or not callable(self.grid_constructor)):
            raise ValueError("option grid_constructor must be a callable grid_constructor(func, y0, t), and "
                             "step_size and grid_constructor are mutually exclusive")
        # fixed steps of step_size or on a grid, or (a method without an estimate) one per output interval
        self.fixed = self.step_size is not None or self.grid_constructor is not None or self._error_order() is None
        self.perturb = bool(options.get("perturb", False))
        self._stops_given = {name: options.get(name) for name in ("step_t", "jump_t")
                             if options.get(name) is not None}
        if self.fixed and self._stops_given:
            raise ValueError(f"options {sorted(self._stops_given)} place adaptive steps; with fixed steps put those "
                             "times in t (steps land on every output time) and pass perturb=True for jumps")
        if self.perturb and not self.fixed:
            raise ValueError("option perturb applies to fixed steps; adaptive steps take the discontinuities of f "
                             "as options={'jump_t': times}")
        recompute = options.get("recompute_steps")
        if recompute is not None and not isinstance(recompute, bool):
            raise TypeError(f"option recompute_steps must be True, False or None, got {recompute!r}")
        self.recompute_steps = (self.field.n >= RECOMPUTE_FROM) if recompute is None else recompute
        self._recompute_asked = recompute is True
        self._recompute = None   # the parameters a recomputed step differentiates, once known
        control = options.get("control_interpolation", True)
        if not isinstance(control, bool):
            raise TypeError(f"option control_interpolation must be True or False, got {control!r}")
        # adaptive one-step methods (FBDF/QNDF and the reversible pair take no such option), at
        # tolerances the defects resolve: they are differences of two O(h f) terms in the state's
        # precision, and float32 at its rtol floor (4 eps) read their round-off and the stages'
        # Newton error as 2-20x the tolerance whatever h (rodas5p, kvaerno5: steps to underflow)
        self.control_interpolation = (control and not self.fixed and "control_interpolation" in self.valid_options()
                                      and controls_interpolation(self.method)
                                      and min_rtol >= DEFECT_RTOL_FLOOR * torch.finfo(self.dtype).eps)
        self._dense_rows: dict = {}   # own extension (True) or Hermite (False), on the state's device
        if self._compile_step(options):
            self.stepper = CompiledRosenbrock(self.stepper, self.control_interpolation)
        self.n_steps = self.n_rejected = 0

    @classmethod
    def valid_options(cls) -> tuple:
        return OPTIONS + ("recompute_steps", "control_interpolation", "compile_step")   # one-step methods only

    def _compile_step(self, options) -> bool:
        """Option ``compile_step``, checked: Rosenbrock methods with a dense Jacobian (:mod:`._compiled`)."""
        compile_step = options.get("compile_step", False)
        if not isinstance(compile_step, bool):
            raise TypeError(f"option compile_step must be True or False, got {compile_step!r}")
        if not compile_step:
            return False
        if self.method.family != "rosenbrock":
            raise ValueError(f"option compile_step applies to Rosenbrock methods (rodas5p, ros3p, ...), whose step "
                             f"has no data-dependent iteration; {self.method_id!r} is {self.method.family}")
        dense = self.field.pattern is None and self.field.krylov is None and self.field.jac != "finite_difference"
        if not dense:
            raise ValueError("option compile_step compiles a step with a dense Jacobian from jac='autodiff' or a "
                             "callable jac; it takes neither jac_sparsity, linear_solver='gmres' nor "
                             "jac='finite_difference'")
        return True

    @classmethod
    def valid_callbacks(cls) -> set:
        return set(CALLBACKS)

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
    def integrate(self, t: torch.Tensor) -> torch.Tensor:
        t = self._check_times(t)
        state = self._begin(t[0], t[-1] - t[0])
        self._grid = self._grid_points(t)
        out = [self.y0]
        for i in range(1, len(t)):
            state = (self._fixed if self.fixed else self._adaptive)(state, t[i])
            out.append(self.field.unflat(state.y))
            self._on_output(state)
        self.final_state = state
        return torch.stack(out)

    def integrate_until_event(self, t0, event_fn):
        """(event time, stack of y0 and y there), torchdiffeq's event contract: steps until
        ``event_fn(t, y)`` changes sign between two step ends, then bisects the method's own
        continuous extension of that step (:mod:`stiffcore.catalogue.dense`) for the root, to a
        few ulps of t.  The state at the event carries the step's gradient, and
        ``torchdiffeq.odeint_event`` adds the event time's own (implicit function theorem)."""
        if self.fixed and self.step_size is None:
            raise ValueError(f"method {self.method_id!r} takes fixed steps: event handling needs "
                             "options={'step_size': h}")
        if self.grid_constructor is not None:
            raise ValueError("event handling takes fixed steps of options={'step_size': h}, not a grid_constructor")
        t0 = self._check_times(torch.as_tensor(t0).reshape(1))[0]
        state = self._begin(t0, None)
        self._grid = None
        with torch.no_grad():
            sign0 = torch.sign(event_fn(t0, self.y0))
        step_to = self._fixed_step if self.fixed else self._accepted_step
        while True:
            previous = state
            state, step = step_to(state)
            with torch.no_grad():
                crossed = bool(torch.sign(event_fn(state.t, self.field.unflat(state.y))) != sign0)
            if crossed:
                break
        extension = self._extension(previous, state, step)
        with torch.no_grad():
            lo, hi = previous.t, state.t
            ulps = 4 * torch.finfo(self.t_dtype).eps * torch.maximum(lo.abs(), hi.abs()).clamp(min=1.0)
            for _ in range(max(1, math.ceil(math.log2(float((hi - lo) / ulps))))):
                mid = (lo + hi) / 2
                same = torch.sign(event_fn(mid, extension(mid))) == sign0
                lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
            event_t = hi   # the first time found on the event's far side
        self.final_state = state
        return event_t, torch.stack([self.y0, extension(event_t)])

    def _begin(self, t0, span):
        """The first state, and the first step size for adaptive steps (``span`` None: unbounded)."""
        state = self._start(t0, self.field.flat(self.y0))
        self._stops = self._sorted_stops(t0)
        self._after_jump = None
        if not self.fixed:
            self.h = self._initial_step(state, span) if self.first_step is None else torch.as_tensor(
                self.first_step, dtype=self.t_dtype, device=self.device)
        return state

    def _sorted_stops(self, t0) -> list:
        """(time, is a jump) for the step_t and jump_t times after t0, in order."""
        stops = []
        for name, times in self._stops_given.items():
            times = torch.as_tensor(times, dtype=self.t_dtype, device=self.device).reshape(-1)
            if not bool(torch.all(torch.isfinite(times))):
                raise ValueError(f"option {name} contains NaN or inf")
            stops += [(v, name == "jump_t") for v in times[times > t0].unbind()]
        stops.sort(key=lambda stop: float(stop[0]))
        for (a, _), (b, _) in zip(stops, stops[1:]):
            if bool(a == b):
                raise ValueError(f"step_t and jump_t share the time {float(a):.6g}; give each time once")
        return stops

    def _coefficients(self, before, after, step):
        """Rows c_k of the output between two step ends, y(t0 + theta h) = y0 + sum_k c_k
        theta^k: the method's own continuous extension, or cubic Hermite where it has none."""
        h = (after.t - before.t).to(self.dtype)
        D = dense_matrix(self.method)
        own = D is not None and step.increments is not None
        if own not in self._dense_rows:   # once per solve: no host-to-device copy a step
            self._dense_rows[own] = torch.tensor(D if own else HERMITE, dtype=self.dtype, device=self.device)
        increments = step.increments() if own else torch.stack([after.y - before.y, h * before.f, h * after.f])
        return torch.tensordot(self._dense_rows[own], increments, dims=1)

    def _with_interpolation_error(self, before, after, step, error):
        """The step's estimate raised, component by component, to its continuous extension's
        error at a quarter and three quarters of the step: theta (I - h gamma J)^-1 times the
        defect h u' - h f(t0 + theta h, u) (:func:`stiffcore.catalogue.dense.value_and_scaled_slope`,
        as the SciPy and diffrax adapters judge it).  No gradient."""
        h = after.t - before.t
        with torch.no_grad():
            coeffs = self._coefficients(before, after, step)
        return raised_to_interpolation_error(error, before.y, coeffs, h.to(self.dtype),
                                             lambda theta, u: self.field(before.t + theta * h, u), step.stiff_filter)

    def _extension(self, before, after, step):
        """t -> y(t) on the (user's) state shape between two step ends (:meth:`_coefficients`)."""
        h = after.t - before.t
        coeffs = self._coefficients(before, after, step)

        def at(t):   # the core's evaluation of c = D @ increments, as every adapter's dense output
            return self.field.unflat(value_and_scaled_slope(before.y, coeffs, ((t - before.t) / h).to(self.dtype))[0])

        return at

    def _on_step(self, state) -> None:
        """Called after every accepted step (the reversible solver records step times here)."""

    def _on_output(self, state) -> None:
        """Called when a step lands on an output time."""

    def _check_times(self, t) -> torch.Tensor:
        """t in the time dtype: torchdiffeq's promotion of t's and y0's dtypes (float32 y0 with
        float64 t keeps float64 times, so outputs land on t exactly, and a float32 state)."""
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or len(t) < 1:
            raise ValueError("t must be a 1-D tensor of output times")
        if not torch.is_floating_point(t):
            raise TypeError(f"t must be a floating-point tensor, got {t.dtype}")
        self.t_dtype = torch.promote_types(t.dtype, self.dtype)
        if t.device != self.device:
            raise ValueError(f"t is on {t.device} but y0 is on {self.device}; move them to one device")
        if not bool(torch.all(torch.isfinite(t))):
            raise ValueError("t contains NaN or inf")
        if len(t) > 1 and not bool(torch.all(t[1:] > t[:-1])):
            raise ValueError("t must be strictly monotonic")
        return t.to(self.t_dtype)

    def _start(self, t0, y0):
        point = Point(self.field, t0, y0)
        self._check_finite(point.f, t0, "func returned")
        return point

    def _attempt(self, state, h):
        """(new state, the step) for a step of size h from ``state`` (h in the time dtype; the
        stages take it in the state's)."""
        params = self._recompute_parameters(state)
        if params is not None:
            step, new = self._recomputed_step(state, h, params)
        else:
            step = self.stepper.step(state, h.to(self.dtype))
            self._check_finite(step.y, state.t, "the step produced", failure=True)
            new = Point(self.field, state.t + h, step.y, step.f_end)
        self._check_finite(new.f, new.t, "func returned", failure=True)
        return new, step

    def _recompute_parameters(self, state):
        """The parameters a recomputed step differentiates (:mod:`._recompute`), or None to keep
        the step's graph: recomputation off, nothing to differentiate, or func differentiates
        through tensors that are not its parameters.  Decided once, on the first attempt, which
        itself keeps its graph (the field probes f on its first calls, and a recomputation
        would not repeat that)."""
        if not (self.recompute_steps and torch.is_grad_enabled()):
            return None
        if self._recompute is None:
            with torch.enable_grad():
                output = self.field(state.t, state.y.detach())
            params = recomputable_parameters(self.field.func, output)
            if params is None and self._recompute_asked:
                raise ValueError("option recompute_steps=True needs func to be an nn.Module whose parameters are "
                                 "every tensor f differentiates through (as odeint_adjoint's adjoint_params); "
                                 "this func reaches other tensors that require grad")
            self._recompute = params if params is not None else False
            return None
        return self._recompute if self._recompute is not False else None

    def _recomputed_step(self, state, h, params):
        """(step, new state) with no graph kept inside the step: backpropagation holds its
        inputs (t, y, f(t, y), h) and rebuilds the step and f at its end.  The recomputation
        sees the same discontinuity window; steps are deterministic in those inputs, so it
        reproduces the step exactly."""
        window, t = self.field.window, state.t

        def run(t, y, f, h):     # h in the time dtype, the stages take it in the state's
            with self.field.between(*window):
                step = self.stepper.step(Point(self.field, t, y, f), h.to(y.dtype))
                self._check_finite(step.y, t, "the step produced", failure=True)   # before f there
                return (step.y, self.field(t + h, step.y) if step.f_end is None else step.f_end), step

        first: list = []     # the step as run without a graph
        y1, f1 = Recomputed.apply(run, first, 4, t, state.y, state.f, h, *params)

        def increments():
            if not torch.is_grad_enabled():    # the interpolation error estimate: the first run's
                return first[0].increments()
            with self.field.between(*window):  # event location: the step once more, with its graph
                return self.stepper.step(Point(self.field, t, state.y, state.f), h.to(self.dtype)).increments()

        return Step(y1, first[0].error, increments, first[0].stiff_filter), Point(self.field, t + h, y1, f1)

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
        if self._grid is not None:   # the grid's points up to t_next, then t_next itself
            while self._grid and bool(self._grid[0] <= state.t):
                self._grid.pop(0)
            while self._grid and bool(self._grid[0] < t_next):
                state, _ = self._fixed_step(state, self._grid.pop(0))
            return self._fixed_step(state, t_next)[0]
        n = 1 if self.step_size is None else max(1, math.ceil(float((t_next - state.t) / self.step_size) * (1 - 1e-12)))
        h = (t_next - state.t) / n
        for k in range(n):
            state, _ = self._fixed_step(state, t_next if k == n - 1 else state.t + h)
        return state

    def _grid_points(self, t) -> list | None:
        """The grid_constructor's points as a list of times (None without one)."""
        if self.grid_constructor is None:
            return None
        grid = torch.as_tensor(self.grid_constructor(self.field.func, self.y0, t)).to(self.t_dtype).reshape(-1)
        if grid.numel() < 2 or bool(grid[0] != t[0]) or bool(grid[-1] != t[-1]) or not bool(
                torch.all(grid[1:] > grid[:-1])):
            raise ValueError("grid_constructor(func, y0, t) must return increasing times from t[0] to t[-1]")
        return list(grid.unbind())

    def _fixed_step(self, state, t_to=None):
        """One fixed step, to ``t_to`` (default: step_size on); (state, step)."""
        t_from = state.t
        h = self.step_size if t_to is None else t_to - t_from
        h = torch.as_tensor(h, dtype=self.t_dtype, device=self.device)
        self._count_step(t_from)
        self.field.callback("callback_step")(t_from, self.field.unflat(state.y), h)
        try:
            # perturb: f is evaluated just inside the step at both ends
            with self.field.between(*((t_from, t_from + h) if self.perturb else (None, None))):
                new, step = self._attempt(state, h)
        except StepFailure as failure:
            raise FloatingPointError(f"fixed step from t = {float(t_from):.6g} to {float(t_from + h):.6g} "
                                     f"failed: {failure}") from None
        if t_to is not None:
            new = self._land(new, t_to)
        if self.perturb:   # the next step starts from f just after this one's end
            new = self._restart(new)
        self.field.callback("callback_accept_step")(t_from, self.field.unflat(state.y), h)
        self.h = h
        self.n_steps += 1
        self._on_step(new)
        return new, step

    def _adaptive(self, state, t_next):
        while bool(state.t < t_next):
            state, _ = self._accepted_step(state, t_next)
        return state

    def _next_stop(self, t, t_next):
        """(where the next step must end at the latest, whether f jumps there)."""
        while self._stops and bool(self._stops[0][0] <= t):
            self._stops.pop(0)
        if self._stops and (t_next is None or bool(self._stops[0][0] <= t_next)):
            return self._stops[0]
        return t_next, False

    def _accepted_step(self, state, t_next=None):
        """Attempts from ``state`` until one is accepted, never past ``t_next`` (None: no
        bound) or the next step_t / jump_t; (state, step)."""
        q = self._error_order()
        target, jump = self._next_stop(state.t, t_next)
        reason = ""
        while True:
            t = state.t
            self._count_step(t)
            h = self.h
            landing = target is not None and bool(t + 1.01 * h >= target)
            if landing:
                h = target - t
            # a few ulps of t, as SciPy's solvers bound it (at t = 0 a step of 1e-15 is fine: a
            # first-order estimate needs it on a 1e-12 transient); a NaN h fails too
            finfo = torch.finfo(self.t_dtype)
            if not bool(h > 8 * finfo.eps * torch.clamp(t.abs(), min=finfo.tiny)):
                raise FloatingPointError(f"step size underflow at t = {float(t):.6g} (h = {float(h):.3g}, method "
                                         f"{self.method_id!r}){': ' + reason if reason else ''}")
            y_user = self.field.unflat(state.y)
            self.field.callback("callback_step")(t, y_user, h)
            try:
                with self.field.between(self._after_jump, target if landing and jump else None):
                    new, step = self._attempt(state, h)
                    error = step.error
                    if self.control_interpolation and step.stiff_filter is not None:
                        error = self._with_interpolation_error(state, new, step, error)
                    with torch.no_grad():  # step sizes are not differentiated: the step sequence is data
                        ratio = self.norm(self.field.unflat(error / torch.maximum(
                            self._scale(state.y.detach()), self._scale(new.y.detach()))))
                if not bool(torch.isfinite(ratio)):
                    raise StepFailure(f"non-finite error estimate at t = {float(t):.6g}", 0.25)
            except StepFailure as failure:
                reason = str(failure)
                self.n_rejected += 1
                self.field.callback("callback_reject_step")(t, y_user, h)
                self.h = h * failure.shrink
                continue
            exponent = -1.0 / (q + 1)
            if bool(ratio <= 1):
                self.field.callback("callback_accept_step")(t, y_user, h)
                self.h = self._next_step_size(h, ratio, landing, new)
                self._after_jump = None
                if landing:
                    new = self._land(new, target)
                    if jump:   # f jumps here: the next step starts from f just after it
                        new, self._after_jump = self._restart(new), new.t
                self.n_steps += 1
                self._on_step(new)
                return new, step
            self.n_rejected += 1
            self.field.callback("callback_reject_step")(t, y_user, h)
            reason = f"error estimate {float(ratio):.3g} times the tolerance"
            self.h = h * torch.clamp(self.safety * ratio ** exponent, self.dfactor, 1.0)

    def _next_step_size(self, h, ratio, landing: bool, new):
        """The step after an accepted step h with error ``ratio`` ending at ``new``; a step
        shortened to land on a stop does not shrink the next (``self.h`` is the one it was)."""
        factor = torch.clamp(self.safety * ratio.clamp(min=1e-10) ** (-1.0 / (self._error_order() + 1)),
                             self.dfactor, self.ifactor)
        return torch.maximum(h * factor, self.h) if landing else h * factor

    def _restart(self, state):
        """``state`` with f evaluated just after its time (past a discontinuity of f)."""
        with self.field.between(after=state.t):
            return Point(self.field, state.t, state.y)

    def _initial_step(self, state, span) -> torch.Tensor:
        """Hairer, Norsett & Wanner I (II.4): a first step from two f evaluations, at most
        ``span`` (None: unbounded), in the time dtype."""
        q = self._error_order()
        y0, f0 = state.y, self._start_f(state)
        with torch.no_grad():
            scale = self._scale(y0)
            d0, d1 = self.norm(y0 / scale), self.norm(f0 / scale)
            h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
            if span is not None:
                h0 = torch.minimum(h0, span.to(h0.dtype))
            f1 = self.field(state.t + h0, y0 + h0 * f0)
            d2 = self.norm((f1 - f0) / scale) / h0
            big = torch.maximum(d1, d2)
            h1 = torch.where(big <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / big) ** (1.0 / (q + 1)))
            h = torch.minimum(100 * h0, h1).to(self.t_dtype)
            return (h if span is None else torch.minimum(h, span)).detach()

    def _start_f(self, state):
        return state.f


def _krylov_options(options) -> dict | None:
    """GMRES's options for ``linear_solver="gmres"`` (None for LU), checked by name."""
    solver = options.get("linear_solver", "lu")
    if solver not in ("lu", "gmres"):
        raise ValueError(f"option linear_solver must be 'lu' or 'gmres', got {solver!r}")
    given = [k for k in ("preconditioner", "krylov_rtol", "krylov_restart", "krylov_maxiter") if k in options]
    if solver == "lu":
        if given:
            raise ValueError(f"options {given} apply to linear_solver='gmres' only")
        return None
    pre = options.get("preconditioner")
    if pre is not None and not callable(pre):
        raise ValueError("option preconditioner must be a callable preconditioner(t, y, h_gamma) returning a callable")
    restart, maxiter = options.get("krylov_restart", 30), options.get("krylov_maxiter", 10)
    for name, value in (("krylov_restart", restart), ("krylov_maxiter", maxiter)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"option {name} must be a positive integer, got {value!r}")
    return dict(preconditioner=pre, krylov_rtol=_positive("krylov_rtol", options.get("krylov_rtol", 1e-8)),
                krylov_restart=restart, krylov_maxiter=maxiter)
