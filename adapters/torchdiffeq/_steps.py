"""One step of a catalogue method in torch: explicit RK, implicit RK and Rosenbrock.

Each stepper maps a :class:`Point` (t, y, f(t, y) and, on demand, J = df/dy) and a step
h to :class:`Step` (the new state and a detached error estimate).  ``h`` and ``t`` are 0-d
tensors for torchdiffeq, or (B, 1) tensors (one step per batch element) for torchode.  Coefficients come from
the catalogue (``runge_kutta_scheme``, ``RosenbrockTableau.transformed``); scalar
coefficients enter as Python constants, states never leave torch.

Gradients are those of the discrete map.  Implicit stage equations are differentiated by
the implicit function theorem (:class:`_ImplicitStages`): Newton runs without autograd,
and the backward pass solves the transposed stage system with the Jacobian at the
solution, so the gradient does not depend on how far Newton converged.  Rosenbrock
steps are explicit given J, and J = jacrev(f) is itself differentiable, so plain
autograd is exact for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from stiffcore.catalogue import Method
from stiffcore.catalogue.dense import interpolation_defects
from stiffcore.catalogue.schemes import runge_kutta_scheme

from ._field import VectorField
from ._krylov import JacobianAction, KrylovNewton
from ._linalg import (
    SparseJacobian, SparseNewton, SplitJacobian, StepFailure, TransformedNewton, blockwise, factor_newton,
    format_time, lu_factors, newton_entries, sparse_solve_differentiable, transforms,
)

MAX_NEWTON_ITER = 7         # simplified Newton (Jacobian of the step's start)
MAX_FULL_NEWTON_ITER = 40   # the fallback with Jacobians at the iterate


class Point:
    """A state on the (B, n) layout with f there and, computed once when first asked, J."""

    def __init__(self, field: VectorField, t: torch.Tensor, y: torch.Tensor, f: torch.Tensor | None = None):
        self.field, self.t, self.y = field, t, y
        self.f = field(t, y) if f is None else f
        self._jac: dict = {}

    def jacobian(self, differentiable: bool) -> torch.Tensor:
        """J at this point; ``differentiable`` keeps it in the autograd graph (Rosenbrock)."""
        key = differentiable and torch.is_grad_enabled()
        if key not in self._jac:
            if key:
                self._jac[key] = self.field.jacobian(self.t, self.y)
            else:
                with torch.no_grad():
                    self._jac[key] = self.field.jacobian(self.t, self.y.detach()).detach()
        return self._jac[key]


@dataclass
class Step:
    y: torch.Tensor
    error: torch.Tensor | None          # detached local error estimate on the (B, n) layout
    #: the increments the method's continuous extension acts on (:mod:`stiffcore.catalogue.dense`:
    #: h K_j for Runge-Kutta, the transformed stages k_j for Rosenbrock), stacked (s, B, n) only
    #: when asked for: steps land on the outputs, and only event location and the interpolation
    #: error estimate look between them
    increments: Callable[[], torch.Tensor] | None = None
    #: v -> (I - h gamma J)^-1 v with the step's own matrix, no gradient: filters the defects of
    #: the interpolation error estimate (:func:`stiffcore.catalogue.dense.value_and_scaled_slope`)
    stiff_filter: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: f at the step's end, where the step computed it (else the solver evaluates it)
    f_end: torch.Tensor | None = None


_WEIGHTS: dict = {}


def _weighted(rows, vectors):
    """sum_j rows[j] * vectors[j] (0.0 if every weight is zero).

    Two or more terms become one stack and one matrix product (the weights cached as a
    tensor on the vectors' device), which keeps the op count, and so the autograd graph,
    small: per-op overhead dominates small stiff systems."""
    terms = [(float(w), v) for w, v in zip(rows, vectors) if w]
    if not terms:
        return 0.0
    if len(terms) == 1:
        return terms[0][0] * terms[0][1]
    like = terms[0][1]
    key = (tuple(w for w, _ in terms), like.dtype, like.device)
    if torch.compiler.is_compiling():   # a constant of the compiled graph, no cache to guard on
        weights = torch.tensor(key[0], dtype=like.dtype, device=like.device)
    else:
        weights = _WEIGHTS.get(key)
        if weights is None:
            weights = _WEIGHTS[key] = torch.tensor(key[0], dtype=like.dtype, device=like.device)
    return (weights @ torch.stack([v for _, v in terms]).flatten(1)).view_as(like)


def raised_to_interpolation_error(error, y0, coeffs, h, f_at, stiff_filter):
    """``error`` raised, component by component, to the continuous extension's error estimates
    at :data:`~stiffcore.catalogue.dense.DEFECT_THETAS` (:func:`stiffcore.catalogue.dense.interpolation_defects`:
    ``coeffs`` the extension's rows, ``f_at(theta, u)`` f at t0 + theta h); no gradient."""
    with torch.no_grad():
        for e in interpolation_defects(y0.detach(), coeffs, h, f_at, stiff_filter):
            error = torch.where(e.abs() > error.abs(), e, error)
    return error


def _without_gradient(fn):
    """``fn`` run without autograd on a detached input (error estimates carry no gradient)."""
    def run(v):
        with torch.no_grad():
            return fn(v.detach())
    return run


class _ImplicitStages(torch.autograd.Function):
    """Zero in value, the implicit function theorem in the backward pass.

    ``Y_out = Y* + _ImplicitStages.apply(G(Y*), newton)`` with Y* the (detached) Newton
    solution of G(Y) = 0 and G evaluated with autograd: then dY_out/dp = -M^-1 dG/dp with
    M = dG/dY at Y*, which ``newton()`` factorises (dense or sparse) only if a backward pass
    happens.
    """

    @staticmethod
    def forward(ctx, residual, newton):
        ctx.newton = newton
        return torch.zeros_like(residual)

    @staticmethod
    def backward(ctx, grad):
        w = ctx.newton().solve_transposed(grad.reshape(grad.shape[0], -1))
        return -w.reshape(grad.shape), None


class _FactoredSolve(torch.autograd.Function):
    """x = M^-1 b with M's LU factors computed outside autograd.

    Backward: b_bar = M^-T x_bar from the same factors and M_bar = -b_bar x^T.  Letting
    autograd differentiate ``lu_factor``/``lu_solve`` instead costs far more than the
    forward pass (its LU-solve backward rebuilds triangular factors: 17 s against 3.5 s
    forward for 1,000 Rodas5P steps with n = 3); this is one more triangular solve.
    """

    @staticmethod
    def forward(ctx, M, b, lu, pivots):
        x = torch.linalg.lu_solve(lu, pivots, b)
        ctx.save_for_backward(lu, pivots, x)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, x_bar):
        lu, pivots, x = ctx.saved_tensors
        b_bar = torch.linalg.lu_solve(lu, pivots, x_bar, adjoint=True)
        M_bar = -b_bar @ x.mT if ctx.needs_input_grad[0] else None
        return M_bar, b_bar, None, None


class ExplicitRungeKutta:
    """An explicit tableau (a base for the reversible scheme)."""

    def __init__(self, method: Method, field: VectorField, **_):
        self.method, self.field = method, field
        self.scheme = runge_kutta_scheme(method)

    def step(self, p: Point, h) -> Step:
        sch = self.scheme
        K = [p.f]
        for i in range(1, sch.stages):
            K.append(self.field(p.t + float(sch.c[i]) * h, p.y + h * _weighted(sch.a[i, :i], K)))
        y1 = p.y + h * _weighted(sch.b, K)
        error = None
        if sch.error_weights is not None:
            with torch.no_grad():
                error = h * _weighted(sch.error_weights, K)
        return Step(y1, error, lambda: h * torch.stack(K))


class ImplicitRungeKutta:
    """A diagonally or fully implicit tableau: stage blocks by simplified Newton, then the IFT."""

    def __init__(self, method: Method, field: VectorField, newton_tol: float, scale, roundoff: float):
        self.method, self.field = method, field
        self.scheme = runge_kutta_scheme(method)
        self.newton_tol = newton_tol
        # converged whatever the rate once increments reach round-off (about eps / rtol in
        # the weighted norm), where the rate is noise near 1
        self.converged_below = max(1e-2 * newton_tol, roundoff)
        self.scale = scale  # callable y -> atol + rtol |y|, the Newton norm's weights
        self._consts = {}

    def _tensor(self, array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """``array`` on like's device in like's precision (complex where it is)."""
        dtype = like.dtype.to_complex() if np.iscomplexobj(array) else like.dtype
        key = (array.tobytes(), array.shape, dtype, like.device)
        if key not in self._consts:
            self._consts[key] = torch.tensor(array.tolist(), dtype=dtype, device=like.device)
        return self._consts[key]

    def step(self, p: Point, h) -> Step:
        sch, f = self.scheme, self.field
        J0 = p.jacobian(differentiable=False)
        newtons: dict = {}   # factorised Newton matrices of this attempt, shared by blocks with equal A_BB

        def newton_of(a_block: np.ndarray):
            key = a_block.tobytes()
            if key not in newtons:
                A = self._tensor(a_block, p.y)
                newtons[key] = factor_newton(A, h.detach(), [J0] * a_block.shape[0], p.t)
            return newtons[key]

        def stage_newton(block):
            """The simplified Newton matrix of a stage block: split into n x n systems where
            it has several stages (:class:`TransformedNewton`)."""
            if block.split is not None and transforms(J0):
                return TransformedNewton(block.split, lambda gamma: newton_of(np.array([[gamma]])))
            return newton_of(block.a_block)

        K: list = [None] * sch.stages
        Y_last = None
        for block in sch.blocks:
            idx = block.stages
            psi = [p.y + h * _weighted(sch.a[i, :idx[0]], K[:idx[0]]) if idx[0] else p.y for i in idx]
            if not block.implicit:
                i = idx[0]
                K[i] = p.f if (i == 0 and sch.c[0] == 0) else f(p.t + float(sch.c[i]) * h, psi[0])
                Y_last = psi[0]
                continue
            guess = K[idx[0] - 1] if idx[0] else p.f
            Y = self._newton(p, h, block, psi, guess, stage_newton(block))
            Y = self._attach_gradient(p, h, block, psi, Y)
            # K_B = A_BB^-1 (Y_B - psi_B) / h, the stage derivatives without new f evaluations
            for r, i in enumerate(idx):
                K[i] = _weighted(block.a_block_inv[r], [(Y[k] - psi[k]) / h for k in range(len(idx))])
            Y_last = Y[-1]
        y1 = Y_last if sch.solution_is_last_stage else p.y + h * _weighted(sch.b, K)
        stiff_filter = None
        if sch.defect_filter:
            stiff_filter = _without_gradient(lambda v: newton_of(np.array([[sch.defect_filter]])).solve(v))
        return Step(y1, self._error(p, h, K, newton_of), lambda: h * torch.stack(K), stiff_filter)

    def _newton(self, p, h, block, psi, guess, newton):
        """Y_i = psi_i + h sum_j a_ij f(Y_j), i, j in the block: simplified Newton with the
        step's Jacobian; if that stalls, full Newton (Jacobians at the iterate) from the
        same guess, which rescues large fixed steps."""
        times = [p.t.detach() + float(self.scheme.c[i]) * h.detach() for i in block.stages]
        try:
            return self._iterate(p, h, block, psi, guess, times, lambda Y: newton, MAX_NEWTON_ITER)
        except StepFailure as failure:
            if failure.shrink < 0.5:   # non-finite values: a smaller step, not more Newton
                raise
        A = self._tensor(block.a_block, p.y)
        return self._iterate(p, h, block, psi, torch.zeros_like(guess), times,
                             lambda Y: factor_newton(A, h.detach(), self._stage_jacobians(times, Y.unbind(1)), p.t),
                             MAX_FULL_NEWTON_ITER, patient=True)

    def _iterate(self, p, h, block, psi, guess, times, newton_at, max_iter, patient=False):
        """Newton on the block's stage states; ``times`` are the stages' t + c_i h."""
        f = self.field
        with torch.no_grad():
            psi = torch.stack([v.detach() for v in psi], dim=1)                  # (B, m, n)
            A = self._tensor(block.a_block, p.y)
            hb = blockwise(h.detach())
            Y = psi + hb * A.sum(1)[None, :, None] * guess.detach()[:, None]
            floor = self.scale(p.y.detach())[:, None]   # atol + rtol |y0|: the norm's weights
            weights = 1.0 / floor
            previous = previous_size = None
            for k in range(max_iter):
                F = torch.stack([f(ti, Y[:, r]) for r, ti in enumerate(times)], dim=1)
                G = Y - psi - hb * torch.matmul(A, F)
                dY = -newton_at(Y).solve(G.reshape(G.shape[0], -1)).reshape(G.shape)
                # one read of the device per iteration: every decision below is taken on this
                # number (comparing tensors read it three or four times, one op each)
                norm = float(torch.sqrt(torch.mean((dY * weights) ** 2)))
                if not math.isfinite(norm):
                    raise StepFailure(f"non-finite values in the Newton iteration at t = {format_time(p.t)}", 0.25)
                Y = Y + dY
                if norm <= self.converged_below:
                    return list(Y.unbind(1))
                if patient:
                    # full Newton: done at round-off, seen component by component (relative to
                    # each component, atol + rtol |y0| as the floor near zero) as an increment at
                    # eps or one that stops shrinking far below its component.  The largest
                    # component's scale let ROBER's B (1e-8 beside A ~ 1) stop 1e-10 off, which
                    # moved torch's fixed-grid gradient by 4e-10 from SciPy's and JAX's.
                    size = (dY.abs() / (Y.abs() + floor)).max()
                    if size <= 4 * torch.finfo(Y.dtype).eps or (
                            previous is not None and size > 0.5 * previous_size and size <= 1e-12):
                        return list(Y.unbind(1))
                    previous_size = size
                if previous is not None:
                    rate = norm / previous
                    if not patient and (rate >= 1 or rate ** (max_iter - k) / (1 - rate) * norm > self.newton_tol):
                        break
                    if rate < 1 and rate / (1 - rate) * norm < self.newton_tol:
                        return list(Y.unbind(1))
                previous = norm
        raise StepFailure(f"Newton iteration did not converge at t = {format_time(p.t)} with h = {format_time(h)}")

    def _stage_jacobians(self, times, Y) -> list:
        """J(Y_j) at each stage, as plain data."""
        with torch.no_grad():
            return [self.field.jacobian(t.detach(), y.detach()) for t, y in zip(times, Y)]

    def _exact_newton(self, A, h, times, Y, t):
        """dG/dY at the stage states Y, factorised: block (i, j) = delta_ij I - h a_ij J(Y_j)."""
        return factor_newton(A, h.detach(), self._stage_jacobians(times, Y), t)

    def _attach_gradient(self, p, h, block, psi, Y):
        """Y out of Newton, carrying dY/d(psi, parameters) by the implicit function theorem."""
        if not torch.is_grad_enabled():
            return Y
        sch, f = self.scheme, self.field
        A = block.a_block
        times = [p.t + float(sch.c[i]) * h for i in block.stages]
        F = [f(t, y) for t, y in zip(times, Y)]
        if not any(v.requires_grad for v in (*F, *psi)):
            return Y
        G = torch.stack([Y[r] - psi[r] - h * _weighted(A[r], F) for r in range(len(Y))], dim=1)
        newton = lambda: self._exact_newton(self._tensor(A, Y[0]), h, times, Y, p.t)  # noqa: E731
        Y_out = torch.stack(Y, dim=1) + _ImplicitStages.apply(G, newton)
        return list(Y_out.unbind(1))

    def _error(self, p, h, K, newton_of):
        sch = self.scheme
        if sch.error_weights is None:
            return None
        with torch.no_grad():
            h = h.detach()
            err = h * _weighted(sch.error_weights, [k.detach() for k in K])
            if sch.error_b0:
                err = err - (h * float(sch.error_b0)) * p.f.detach()
            if sch.error_filter:
                err = newton_of(np.array([[sch.error_filter]])).solve(err)
        return err


class Rosenbrock:
    """A Rosenbrock method in the transformed form of Hairer & Wanner (IV.7, eq. 7.25)."""

    def __init__(self, method: Method, field: VectorField, autonomous: bool = False, **_):
        self.method, self.field = method, field
        tab = method.coefficients
        a, C, m, m_hat = tab.transformed()
        # plain floats: the stage loop is also traced by torch.compile (:mod:`._compiled`), which
        # would turn NumPy coefficients into tensors and each float() of them into a graph break
        self.a, self.C, self.m = a.tolist(), C.tolist(), m.tolist()
        self.error_weights = None if m_hat is None else (m - m_hat).tolist()
        self.gamma, self.c, self.d = float(tab.gamma_diag), tab.c.tolist(), tab.d.tolist()
        self.autonomous = autonomous

    def step(self, p: Point, h) -> Step:
        solve = self._stage_solver(p, h)
        f_t = self.field.time_derivative(p.t, p.y) if self.needs_time_derivative(p) else None
        k = self.stages(self.field, p.t, p.y, p.f, h, solve, f_t)
        y1, error = self.solution_and_error(p.y, k)
        # (I - h gamma J)^-1 = (I / (h gamma) - J)^-1 / (h gamma): the stages' own solve
        h_gamma = blockwise(h.detach() * self.gamma)[..., 0]
        return Step(y1, error, lambda: torch.stack(k), _without_gradient(lambda v: solve(v) / h_gamma))

    def needs_time_derivative(self, p: Point) -> bool:
        """Whether the stages take the df/dt term (a non-autonomous f, probed once)."""
        return not self.autonomous and any(self.d) and self.field.depends_on_time(p.t, p.y)

    def stages(self, f, t, y, f0, h, solve, f_t=None) -> list:
        """The transformed stages k_i = solve(f(t + c_i h, y + sum_j a_ij k_j) + sum_j C_ij k_j / h
        + h d_i df/dt), ``solve`` applying (I / (h gamma) - J)^-1 (Hairer & Wanner IV.7, eq. 7.25)."""
        k: list = []
        for i in range(len(self.c)):
            stage_f = f0 if i == 0 else f(t + self.c[i] * h, y + _weighted(self.a[i][:i], k))
            rhs = stage_f if i == 0 else stage_f + _weighted(self.C[i][:i], k) / h
            if f_t is not None and self.d[i]:
                rhs = rhs + (h * self.d[i]) * f_t
            k.append(solve(rhs))
        return k

    def solution_and_error(self, y, k) -> tuple:
        """(y1, the detached embedded error estimate or None) from the stages."""
        y1 = y + _weighted(self.m, k)
        error = None
        if self.error_weights is not None:
            with torch.no_grad():
                error = _weighted(self.error_weights, [v.detach() for v in k])
        return y1, error


    def _stage_solver(self, p: Point, h):
        """rhs -> (I / (h gamma) - J)^-1 rhs.  Dense J stays in the autograd graph through
        :class:`_FactoredSolve`; a split J (torchdiffeq's adjoint system, integrated without
        autograd) goes through its factorised core block."""
        J = p.jacobian(differentiable=True)
        h_gamma = h * self.gamma
        if isinstance(J, SplitJacobian):
            newton = factor_newton(self._gamma_block(p.y), h.detach(), [J], p.t)
            return lambda rhs: h_gamma * newton.solve(rhs)
        if isinstance(J, JacobianAction):
            return self._krylov_solver(p, h, J, h_gamma)
        if isinstance(J, SparseJacobian):
            # I/(h gamma) - J = (I - h gamma J)/(h gamma): the Newton entries of a one-stage block,
            # in the autograd graph through J's entries and h
            entries = newton_entries(J.pattern, self._gamma_block(p.y), h, [J.entries]) / blockwise(h_gamma)[..., 0]
            newton = SparseNewton(self._gamma_block(p.y), h.detach(), [J.detach()], p.t, entries=entries)
            return lambda rhs: sparse_solve_differentiable(newton, rhs)
        eye = torch.eye(self.field.n, dtype=p.y.dtype, device=p.y.device)
        M = eye / blockwise(h_gamma) - J
        lu = lu_factors(M.detach(), p.t, h)
        return lambda rhs: _FactoredSolve.apply(M, rhs[..., None], *lu)[..., 0]

    def _krylov_solver(self, p: Point, h, J, h_gamma):
        """rhs -> (I / (h gamma) - J)^-1 rhs by GMRES; the gradient by the implicit function
        theorem on G(x) = x / (h gamma) - J x - rhs (transposed GMRES on J^T products)."""
        newton = KrylovNewton(self._gamma_block(p.y), h.detach(), [J.detach()], p.t, J.field.krylov)
        hg = blockwise(h_gamma)[..., 0]

        class Transposed:   # M = dG/dx = (I - h gamma J) / (h gamma)
            @staticmethod
            def solve_transposed(g):
                return hg.detach() * newton.solve_transposed(g)

        def solve(rhs):
            x = hg.detach() * newton.solve(rhs)
            if not torch.is_grad_enabled():
                return x
            G = x / hg - J.mv(x) - rhs
            if not G.requires_grad:
                return x
            return x + _ImplicitStages.apply(G, lambda: Transposed)

        return solve

    def _gamma_block(self, like: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 1), self.gamma, dtype=like.dtype, device=like.device)


def stepper(method: Method, field: VectorField, newton_tol: float, scale, roundoff: float, autonomous: bool):
    """The stepper of a one-step catalogue method; ``roundoff`` is the Newton norm's floor."""
    if method.family == "rosenbrock":
        return Rosenbrock(method, field, autonomous=autonomous)
    if method.family == "explicit":
        return ExplicitRungeKutta(method, field)
    if method.family in ("diagonally_implicit", "fully_implicit"):
        return ImplicitRungeKutta(method, field, newton_tol, scale, roundoff)
    raise ValueError(f"{method.id!r} is a {method.family} method; torch steppers are one-step methods only")
