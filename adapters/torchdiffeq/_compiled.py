"""A Rosenbrock step attempt as one compiled graph (option ``compile_step``).

Eager torch spends a small stiff system's step on per-operation overhead: a Rodas5P step on
ROBER is about 1,500 ATen calls (the Jacobian, one LU, ten triangular solves, the weighted
sums, the interpolation defects), 2-3 ms of Python and dispatch for a few microseconds of
arithmetic.  Here the whole attempt, from (t, y, f(t, y), h) to the new state, its error
estimate (the embedded one raised to the interpolation defects, as the eager solver does)
and f at its end, is one function compiled by TorchInductor; the adaptive loop stays outside
and reads one number per attempt.  The step's arithmetic is the eager stepper's own
(:meth:`~._steps.Rosenbrock.stages`, :func:`~._steps.raised_to_interpolation_error`),
so results agree with it to round-off and gradients are those of the same discrete map
(AOTAutograd differentiates the compiled graph; the LU solves keep :class:`~._steps._FactoredSolve`'s
backward).

One compiled function serves every solve: it is specialised (and recompiled) per state shape,
dtype, device, method, f and grad mode, up to :data:`RECOMPILE_LIMIT` specialisations; the
first attempt of a new one compiles (10-40 s on 2 cores; the backward graph compiles at the
first backward pass).

Reference: Ansel et al., "PyTorch 2: faster machine learning through dynamic Python bytecode
transformation and graph compilation", ASPLOS 2024 (TorchDynamo, AOTAutograd, TorchInductor).
"""

from __future__ import annotations

import functools

import torch

from stiffcore.catalogue.dense import dense_matrix

from ._linalg import StepFailure, blockwise, format_time
from ._steps import Point, Rosenbrock, Step, _FactoredSolve, raised_to_interpolation_error

class CompileStepUnavailable(Exception):
    """torch.compile cannot build the step on this machine.  Not a RuntimeError, so callers that
    catch a failed solve (max_num_steps, a training epoch's NaN loss) do not mistake it for one."""


#: compiled specialisations of the step kept per process (TorchDynamo's own default is 8)
RECOMPILE_LIMIT = 64
#: f evaluations of one attempt beside the stages: the two interpolation defects and f at the end
EXTRA_EVALUATIONS = 3


class CompiledRosenbrock:
    """``Rosenbrock`` with each attempt run by one compiled function (see the module docstring).

    Used where the Jacobian is dense, from ``jac="autodiff"`` (``torch.func.jacrev``) or a
    callable ``jac``; a field it cannot compile (torchdiffeq's adjoint system, whose Jacobian is
    split; an f autograd cannot see through, which falls back to differences) steps eagerly.
    """

    def __init__(self, eager: Rosenbrock, control_interpolation: bool):
        self.eager, self.method, self.field = eager, eager.method, eager.field
        self.control = control_interpolation
        self.dense = dense_matrix(self.method).tolist()
        self._checked = False

    def step(self, p: Point, h) -> Step:
        field = self.field
        field.probe_once(p.t, p.y)   # f that detaches y falls back to differences
        if field.adjoint is not None or field.jac == "finite_difference":
            return self.eager.step(p, h)
        if callable(field.jac) and not self._checked:
            field.jacobian(p.t, p.y)   # once, eagerly: names a callable jac of the wrong shape
        self._checked = True
        nonautonomous = self.eager.needs_time_derivative(p)
        y1, error, stages, f1, singular = _compiled_attempt()(self, p.t, p.y, p.f, h, nonautonomous)
        if bool(singular):   # one read per attempt, as the eager LU's check
            raise StepFailure(f"the Newton matrix I - h a J is singular at t = {format_time(p.t)} "
                              f"with h = {format_time(h)}")
        field.nfev += len(self.eager.c) - 1 + int(nonautonomous) + (EXTRA_EVALUATIONS if self.control else 1)
        field.njev += 1
        # no stiff_filter: the error estimate already holds the interpolation defects where asked
        return Step(y1, error, lambda: stages, None, f_end=f1)


def _attempt(stepper: CompiledRosenbrock, t, y, f0, h, nonautonomous: bool):
    """(y1, error, stacked stages, f(t + h, y1), whether an LU was singular) of one attempt;
    the function torch.compile traces."""
    eager, field = stepper.eager, stepper.field

    def f(tt, v):
        return field._evaluate(tt, v).reshape(field.batch, field.n)

    # f traced once outside the Jacobian's transform first: TorchDynamo then guards the arrays
    # f captures (NumPy ones become tensors) at this level, not inside jacrev, whose guard on
    # them fails on the frame that made it (torch 2.13: "dispatch key set mismatch")
    f(t, y)
    J = _jacobian(field, f, t, y)
    h_gamma = blockwise(h * eager.gamma)
    M = torch.eye(field.n, dtype=y.dtype, device=y.device) / h_gamma - J
    lu, pivots, info = torch.linalg.lu_factor_ex(M.detach())

    def solve(rhs):
        return _FactoredSolve.apply(M, rhs[..., None], lu, pivots)[..., 0]

    f_t = None
    if nonautonomous:
        f_t = torch.func.jvp(lambda tt: f(tt, y), (t,), (torch.ones_like(t),))[1]
    k = eager.stages(f, t, y, f0, h, solve, f_t)
    y1, error = eager.solution_and_error(y, k)
    stages = torch.stack(k)
    if stepper.control:
        hd, hg = h.detach(), h_gamma.detach()[..., 0]
        coeffs = torch.tensordot(torch.tensor(stepper.dense, dtype=y.dtype, device=y.device), stages.detach(), dims=1)
        error = raised_to_interpolation_error(
            error, y, coeffs, hd, lambda theta, u: f(t + theta * hd, u),
            lambda v: torch.linalg.lu_solve(lu, pivots, v[..., None])[..., 0] / hg)
    return y1, error, stages, f(t + h, y1), (info > 0).any()


def _jacobian(field, f, t, y):
    """df/dy on the (B, n) layout: a callable ``jac``, or rows by reverse mode (batch elements
    are independent, so row j of every element's J is d(sum_b f_b[j]) / dy)."""
    if callable(field.jac):
        return field.jac(t, y.reshape(field.shape)).reshape(field.batch, field.n, field.n).to(y.dtype)
    return torch.func.jacrev(lambda v: f(t, v).sum(0))(y).permute(1, 0, 2)


@functools.cache
def _compiled_attempt():
    """:func:`_attempt` compiled (once per process; TorchDynamo specialises it per input kind),
    with a failure to compile named (TorchInductor needs a C++ compiler on CPU)."""
    compiled = torch.compile(_attempt, dynamic=False)

    def run(*args):
        try:
            # scoped to this call: each problem (f), grad mode and shape is an entry of the one
            # cache, and at TorchDynamo's default of 8 a process solving a few problems fell
            # back to piecemeal tracing, slower than eager (HIRES after ROBER and POLLU: 1.3x)
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(*args)
        except torch._dynamo.exc.BackendCompilerFailed as exc:
            raise CompileStepUnavailable("option compile_step=True could not compile the step here (TorchInductor "
                                         f"needs a working C++ compiler on CPU and Triton on CUDA): {exc}") from exc
    return run
