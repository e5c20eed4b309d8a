"""``method="reversible"`` and :func:`odeint_reversible`, its memory-flat backward pass.

The reversible scheme of McCallum & Foster (arXiv 2410.11648) wraps any one-step base
method; the steps are the core's framework-agnostic :func:`stiffcore.reversible.reversible_step`.
Through ``torchdiffeq.odeint`` it backpropagates like any method (storing the graph);
through :func:`odeint_reversible` the backward pass rebuilds each state with
:func:`~stiffcore.reversible.reversible_step_back`, keeping the graphs of the two base steps
that takes, and propagates the cotangent with :func:`~stiffcore.reversible.reversible_step_vjp`:
exact gradients of the discrete map, peak memory independent of the number of steps (one
float per step is kept: its time), time O(n) with two base steps per step.
"""

from __future__ import annotations

import warnings

import torch

from stiffcore.catalogue import get_method
from stiffcore.reversible import (
    DEFAULT_COUPLING, EIGEN_CHECK_MAX_N, check_coupling, instability_warning, reversible_step, reversible_step_back,
    reversible_step_vjp,
)
from stiffcore.spectrum import arnoldi, ritz_values, start_vector

from ._solver import OPTIONS, StiffSolver
from ._linalg import SplitJacobian
from ._steps import Point, Step

DEFAULT_BASE = "backward_euler"


class PairState:
    """The reversible scheme's state: time, the solution y and the second state z."""

    def __init__(self, t, y, z):
        self.t, self.y, self.z = t, y, z


class ReversibleSolver(StiffSolver):
    """``method="reversible"``: options ``base`` (a one-step catalogue id or display name,
    explicit or implicit; default ``"backward_euler"``) and ``coupling`` (lambda in (0, 1),
    default 0.999), plus the options of the base method.  Adaptive when the base has an
    embedded estimate (it controls the forward base step), else ``step_size`` is required.
    A warning names the growth per step when the core predicts that h * eig(J) at the
    start or end of the solve lies where the pair is unstable.
    """

    method_id = "reversible"

    @classmethod
    def valid_options(cls) -> tuple:
        return OPTIONS + ("base", "coupling")

    def _method(self, options):
        base = options.get("base", DEFAULT_BASE)
        if not isinstance(base, str):
            raise TypeError(f"option base must be a catalogue method id such as 'backward_euler', got {base!r}")
        if base == "reversible":
            raise ValueError("option base cannot be 'reversible'; choose a one-step catalogue method")
        method = get_method(base)
        if not method.is_one_step:
            raise ValueError(f"option base must be a one-step method; {method.id!r} is {method.family} "
                             "(its steps cannot be taken backwards on their own)")
        self.coupling = check_coupling(options.get("coupling", DEFAULT_COUPLING))
        self.recording = False
        return method

    def _start(self, t0, y0):
        point = Point(self.field, t0, y0)
        self._check_finite(point.f, t0, "func returned")
        self._start_point = point
        self._times = torch.empty(1024, dtype=self.t_dtype, device=self.device)
        self._times[0] = t0
        self.n_recorded = 0
        self.output_steps = [0]
        return PairState(t0, y0, y0)

    def _start_f(self, state):
        return self._start_point.f

    def _base_step(self, t_from, t_to, v, errors=None):
        step = self.stepper.step(Point(self.field, t_from, v), (t_to - t_from).to(self.dtype))
        if errors is not None:
            errors.append(step.error)
        return step.y

    def _attempt(self, state, h):
        errors: list = []
        y1, z1 = reversible_step(lambda a, b, v: self._base_step(a, b, v, errors), state.t, state.t + h,
                                 state.y, state.z, self.coupling)
        self._check_finite(torch.stack([y1, z1]), state.t, "the step produced", failure=True)
        return PairState(state.t + h, y1, z1), Step(y1, errors[0])

    def integrate_until_event(self, t0, event_fn):
        raise NotImplementedError("method 'reversible' does not locate events (its output between steps needs the "
                                  "second state's base step); use its base method with event_fn, or integrate to a "
                                  "time grid")

    def _restart(self, state):
        """Past a discontinuity the pair's f is the base step's business: nothing to refresh."""
        return state

    def _on_step(self, state) -> None:
        if self.n_steps == 1:
            self._first_h = state.t - self._start_point.t
        if not self.recording:
            return
        self.n_recorded += 1
        if self.n_recorded == self._times.numel():
            self._times = torch.cat([self._times, torch.empty_like(self._times)])
        self._times[self.n_recorded] = state.t

    def _on_output(self, state) -> None:
        if self.recording:
            self.output_steps.append(self.n_recorded)

    def integrate(self, t):
        out = super().integrate(t)
        if len(t) > 1:  # h * eig(J) at both ends, with the first and the last step size
            start = self._start_point
            self._warn_if_unstable(start.t, start.y, self.step_size or self._first_h)
            self._warn_if_unstable(self.final_state.t, self.final_state.y, self.step_size or self.h)
        return out

    def step_times(self) -> torch.Tensor:
        """Times of the recorded steps, t0 first."""
        return self._times[: self.n_recorded + 1]

    def _warn_if_unstable(self, t, y, h) -> None:
        with torch.no_grad():
            y = y.detach()
            if self.field.n <= EIGEN_CHECK_MAX_N:
                J = self.field.jacobian(t, y)
                J = J.core if isinstance(J, SplitJacobian) else J  # the other eigenvalues are zero
                eig = torch.linalg.eigvals(J.cpu()).numpy()
            else:
                # above EIGEN_CHECK_MAX_N: Ritz values from Arnoldi on J v (batch elements are
                # independent, so the whole (B, n) state is one block-diagonal operator)
                f0 = self.field(t, y)

                def matvec(v):
                    return self.field.directional_derivative(t, y, f0, v.reshape(y.shape)).reshape(-1)

                v0 = torch.as_tensor(start_vector(y.numel()), dtype=y.dtype, device=y.device)
                eig = ritz_values(arnoldi(matvec, v0))
            z = float(h) * eig
        message = instability_warning(self.method.id, z, self.coupling, n_steps=max(self.n_steps, 1))
        if message:
            warnings.warn(f"at t = {float(t):.6g}: {message}", RuntimeWarning, stacklevel=4)


class _ReversibleBackprop(torch.autograd.Function):
    """Forward: the reversible solve without a graph.  Backward: rebuild each pair (keeping the
    two base steps' graphs) and propagate the cotangent through them."""

    @staticmethod
    def forward(ctx, solver: ReversibleSolver, t, y0, *params):
        solver.recording = True
        with torch.no_grad():
            ys = solver.integrate(t)
        ctx.solver, ctx.params = solver, params
        ctx.final = (solver.final_state.y, solver.final_state.z)
        ctx.times = solver.step_times().clone()
        ctx.output_steps = list(solver.output_steps)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        solver, params = ctx.solver, ctx.params
        field, lam, times = solver.field, solver.coupling, ctx.times
        outputs_at: dict = {}
        for i, k in enumerate(ctx.output_steps):
            outputs_at.setdefault(k, []).append(i)
        y, z = ctx.final
        n = times.numel() - 1
        a_y = sum(field.flat(grad_ys[i]) for i in outputs_at.get(n, [])) + torch.zeros_like(y)
        a_z = torch.zeros_like(z)
        grads = [torch.zeros_like(p) for p in params]
        for k in range(n, 0, -1):
            t0, t1 = times[k - 1], times[k]
            # rebuild (y_{k-1}, z_{k-1}) with the core's inverse step, keeping each base step's
            # graph: its vector-Jacobian product is all the adjoint needs
            taken: list = []

            def base_step(t_from, t_to, v):
                with torch.enable_grad():
                    v_in = v.detach().requires_grad_(True)
                    out = solver._base_step(t_from, t_to, v_in)
                taken.append((v_in, out))
                return out.detach()

            with torch.no_grad():
                y, z = reversible_step_back(base_step, t0, t1, y, z, lam)
            (y1_in, back), (z0_in, forward) = taken
            a_y, a_z = reversible_step_vjp(a_y, a_z, _vjp(back, y1_in, params, grads),
                                           _vjp(forward, z0_in, params, grads), lam)
            for i in outputs_at.get(k - 1, []):
                a_y = a_y + field.flat(grad_ys[i])
        return (None, None, field.unflat(a_y + a_z), *grads)


def _vjp(output, state_in, params, param_grads):
    """v -> (d output / d state_in)^T v, adding (d output / d params)^T v into ``param_grads``."""
    def vjp(v):
        got = torch.autograd.grad(output, (state_in, *params), v, allow_unused=True, retain_graph=False)
        for g, add in zip(param_grads, got[1:]):
            if add is not None:
                g.add_(add)
        return got[0] if got[0] is not None else torch.zeros_like(v)
    return vjp


def odeint_reversible(func, y0, t, *, rtol=1e-7, atol=1e-9, method="reversible", options=None,
                      adjoint_params=None):
    """``torchdiffeq.odeint`` with the reversible method and a memory-flat backward pass.

    Same signature as ``odeint`` (``method`` must be ``"reversible"``); gradients reach
    ``y0`` and ``adjoint_params`` (default: ``func.parameters()`` for an ``nn.Module``;
    pass the tensors a closure captures explicitly, as with ``odeint_adjoint``).
    ``t`` may decrease.  States are rebuilt backwards instead of stored: peak memory does
    not grow with the number of steps.
    """
    if method != "reversible":
        raise ValueError(f"odeint_reversible runs method='reversible' (got {method!r}); choose the base method "
                         "with options={'base': ...}")
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"odeint_reversible needs y0 as one tensor, got {type(y0).__name__}; concatenate tuples")
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError("t must be a 1-D tensor of output times")
    if adjoint_params is None:
        adjoint_params = tuple(func.parameters()) if isinstance(func, torch.nn.Module) else ()
    adjoint_params = tuple(adjoint_params)
    for p in adjoint_params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params must be tensors, got {type(p).__name__}")
    params = tuple(p for p in adjoint_params if p.requires_grad)
    run_func, run_t = func, t
    if len(t) > 1 and bool(t[0] > t[1]):
        run_func, run_t = (lambda s, y: -func(-s, y)), -t
    solver = ReversibleSolver(run_func, y0, rtol, atol, **dict(options or {}))
    return _ReversibleBackprop.apply(solver, run_t, y0, *params)
