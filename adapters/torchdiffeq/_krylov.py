"""Matrix-free Newton-Krylov for torch: restarted GMRES on Jacobian-vector products.

:class:`JacobianAction` is J at one point as products (forward mode, ``torch.func.jvp``)
and transposed products (reverse mode); :class:`KrylovNewton` solves the Newton systems
(I - h (A (x) J)) x = b of a stage block with :func:`gmres`, so no n x n array exists.
Batched over the (B, n) layout's B; convergence is read once per iteration (one scalar,
like Newton's own), so it runs on any device.  Saad & Schultz (1986), with Givens rotations.
"""

from __future__ import annotations

import torch

from ._linalg import StepFailure, blockwise, format_time


class JacobianAction:
    """v -> J v and w -> J^T w at (t, y) on the (B, n) layout (``differentiable`` keeps the
    products in the autograd graph of y and f's parameters)."""

    def __init__(self, field, t, y, differentiable: bool = False):
        self.field, self.t, self.y, self.differentiable = field, t, y, differentiable

    def detach(self) -> JacobianAction:
        return JacobianAction(self.field, self.t.detach(), self.y.detach())

    def _f(self, v):
        return self.field._evaluate(self.t, v).reshape(v.shape)

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        self.field.nfev += 1
        return torch.func.jvp(self._f, (self.y,), (v,))[1]

    def rmv(self, w: torch.Tensor) -> torch.Tensor:
        self.field.nfev += 1
        with torch.enable_grad():
            y = self.y.detach().requires_grad_(True)
            return torch.autograd.grad(self._f(y), y, w)[0]


def gmres(matvec, b: torch.Tensor, precondition=None, rtol: float = 1e-5, restart: int = 30,
          maxiter: int = 10) -> tuple[torch.Tensor, bool]:
    """x with A x = b for each row of b (B, N), right-preconditioned: (A P) u = b, x = P u.
    Stops when every row's residual is below rtol |b|; returns (x, converged)."""
    P = precondition or (lambda v: v)
    batch, dtype = b.shape[0], b.dtype
    x = torch.zeros_like(b)
    bnorm = torch.linalg.vector_norm(b, dim=1).clamp(min=torch.finfo(dtype).tiny)
    for _ in range(maxiter):
        r = b - matvec(x)
        beta = torch.linalg.vector_norm(r, dim=1)
        if bool((beta <= rtol * bnorm).all()):
            return x, True
        V = [r / beta.clamp(min=torch.finfo(dtype).tiny)[:, None]]
        H = torch.zeros(batch, restart + 1, restart, dtype=dtype, device=b.device)
        cs = torch.zeros(batch, restart, dtype=dtype, device=b.device)
        sn = torch.zeros_like(cs)
        g = torch.zeros(batch, restart + 1, dtype=dtype, device=b.device)
        g[:, 0] = beta
        k = 0
        for k in range(restart):
            w = matvec(P(V[k]))
            for i in range(k + 1):                                  # modified Gram-Schmidt
                H[:, i, k] = (w * V[i]).sum(1)
                w = w - H[:, i, k, None] * V[i]
            H[:, k + 1, k] = torch.linalg.vector_norm(w, dim=1)
            V.append(w / H[:, k + 1, k].clamp(min=torch.finfo(dtype).tiny)[:, None])
            for i in range(k):                                      # earlier rotations on the new column
                hi, hi1 = H[:, i, k].clone(), H[:, i + 1, k].clone()
                H[:, i, k] = cs[:, i] * hi + sn[:, i] * hi1
                H[:, i + 1, k] = -sn[:, i] * hi + cs[:, i] * hi1
            denom = torch.hypot(H[:, k, k], H[:, k + 1, k]).clamp(min=torch.finfo(dtype).tiny)
            cs[:, k], sn[:, k] = H[:, k, k] / denom, H[:, k + 1, k] / denom
            H[:, k, k], H[:, k + 1, k] = denom, 0.0
            g[:, k + 1] = -sn[:, k] * g[:, k]
            g[:, k] = cs[:, k] * g[:, k]
            if bool((g[:, k + 1].abs() <= rtol * bnorm).all()):     # one read per iteration
                break
        m = k + 1
        coeffs = torch.linalg.solve_triangular(H[:, :m, :m], g[:, :m, None], upper=True)[..., 0]
        x = x + P((torch.stack(V[:m], dim=-1) @ coeffs[..., None])[..., 0])
    r = b - matvec(x)
    return x, bool((torch.linalg.vector_norm(r, dim=1) <= rtol * bnorm).all())


class KrylovNewton:
    """I - h (A (x) J) of an m-stage block by GMRES, J as :class:`JacobianAction` s (one per
    stage, or the step's for all).  ``preconditioner(t, y, h_gamma)`` returns a callable
    approximating (I - h_gamma J)^-1 on tensors of y's shape (h_gamma a 0-d tensor, or one
    per batch element shaped to broadcast against y); a block of m stages gets it stage by
    stage with h a_jj (block Jacobi); the transposed solves get its transpose."""

    def __init__(self, a_block: torch.Tensor, h, jacobians: list, t, options):
        self.A, self.h, self.J, self.t = a_block, h, jacobians, t
        self.m = a_block.shape[0]
        self.options = options
        self.precondition = self.precondition_transposed = None
        pre = options.get("preconditioner")
        if pre is not None:
            J0 = jacobians[0]
            shape = J0.field.shape
            # h gamma as the user's y broadcasts it: a 0-d tensor, or (B, 1, ...) with a step per element
            hb = h.reshape(()) if h.numel() == 1 else h.reshape(-1, *[1] * (len(shape) - 1))
            blocks = [pre(J0.t, J0.y.reshape(shape), hb * a_block[j, j]) for j in range(self.m)]
            self._blocks, self._shape, self._width = blocks, shape, J0.y.shape[1]
            self.precondition = self._block_jacobi(blocks)

    def _block_jacobi(self, blocks):
        shape, width = self._shape, self._width
        return lambda v: torch.cat([   # noqa: E731
            _checked(blocks[j](v[:, j * width:(j + 1) * width].reshape(shape)), shape).reshape(v.shape[0], -1)
            for j in range(self.m)], dim=1)

    def _transposed_preconditioner(self):
        """P^T for the backward pass's transposed systems: a preconditioner is linear, so its
        transpose is its vector-Jacobian product (at zero)."""
        if self.precondition_transposed is None and self.precondition is not None:
            zero = torch.zeros(self._shape, dtype=self.J[0].y.dtype, device=self.J[0].y.device)
            transposed = [torch.func.vjp(lambda v, P=P: _checked(P(v), self._shape), zero)[1] for P in self._blocks]
            self.precondition_transposed = self._block_jacobi([lambda w, T=T: T(w)[0] for T in transposed])
        return self.precondition_transposed

    def _stages(self, v):
        return v.reshape(v.shape[0], self.m, -1).unbind(1)

    def _apply(self, v: torch.Tensor, transpose: bool) -> torch.Tensor:
        stages = self._stages(v)
        hA = blockwise(self.h) * self.A                                     # (B or 1, m, m)
        if transpose:   # (I - h (A (x) J))^T w: stage j gets w_j - h J_j^T sum_i a_ij w_i
            mixed = torch.einsum("bij,bin->bjn", hA.expand(v.shape[0], -1, -1), torch.stack(stages, 1))
            out = [stages[j] - self.J[j % len(self.J)].rmv(mixed[:, j]) for j in range(self.m)]
        else:
            Jv = torch.stack([self.J[j % len(self.J)].mv(stages[j]) for j in range(self.m)], 1)
            out = list((torch.stack(stages, 1) - torch.einsum("bij,bjn->bin", hA.expand(v.shape[0], -1, -1), Jv))
                       .unbind(1))
        return torch.cat(out, dim=1)

    def _solve(self, b: torch.Tensor, transpose: bool) -> torch.Tensor:
        o = self.options
        with torch.no_grad():
            x, ok = gmres(lambda v: self._apply(v, transpose), b.detach(),
                          self._transposed_preconditioner() if transpose else self.precondition, o["krylov_rtol"],
                          o["krylov_restart"], o["krylov_maxiter"])
        if not ok:
            raise StepFailure(f"GMRES did not reach rtol {o['krylov_rtol']:g} in {o['krylov_maxiter']} restarts of "
                              f"{o['krylov_restart']} at t = {format_time(self.t)} with h = {format_time(self.h)}; "
                              "raise krylov_restart/krylov_maxiter or give a preconditioner")
        return x

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        return self._solve(b, transpose=False)

    def solve_transposed(self, b: torch.Tensor) -> torch.Tensor:
        return self._solve(b, transpose=True)


def _checked(out, shape):
    if not isinstance(out, torch.Tensor) or out.shape != shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the preconditioner's result has shape {got}; expected the state's {tuple(shape)}")
    return out
