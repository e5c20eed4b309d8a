"""Newton matrices I - h (A (x) J) of a stage block, factorised once and solved many times.

Dense (:class:`DenseNewton`): one batched LU of the (B, m n, m n) matrix.  Transformed
(:class:`TransformedNewton`): a block of several stages as the independent n x n systems
I - h gamma_i J of A's eigenvalues (:mod:`stiffcore.catalogue.eigen_split`, as RADAU5),
each dense or sparse, complex for a conjugate pair.  Sparse
(:class:`SparseNewton`): the Jacobian's entries on a sparsity pattern, factorised by SuperLU
on the host.  Split
(:class:`SplitNewton`): where J = [[J_cc, 0], [J_qc, 0]], components q that no derivative
depends on (quadratures, as CVODES calls them: the parameter adjoints of torchdiffeq's
adjoint system), only the core block I - h (A (x) J_cc) is factorised, and the quadrature
part of the solution follows without a solve, x_q = b_q + h (A (x) J_qc) x_c.  The cost
is then that of the core system, whatever the number of quadratures.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from stiffcore.linalg.sparse_lu import SingularMatrixError, sparse_solve


def format_time(x) -> str:
    """A time or step for a message: one number, or the range over a batch."""
    x = x.detach()
    if x.numel() == 1:
        return f"{float(x):.6g}"
    return f"{float(x.min()):.6g}..{float(x.max()):.6g}"


class StepFailure(Exception):
    """A step attempt failed (Newton divergence, non-finite values); retry with h * shrink."""

    def __init__(self, message: str, shrink: float = 0.5):
        super().__init__(message)
        self.shrink = shrink


def lu_factors(M: torch.Tensor, t, h) -> tuple:
    """LU factors of the Newton matrices ``M`` (batched), or a StepFailure naming the
    singular matrix (torch raised a bare "U[1,1] is zero"): a smaller step usually makes
    I - h a J regular again, and a fixed step reports the failure with this message."""
    lu, pivots, info = torch.linalg.lu_factor_ex(M)
    if bool((info > 0).any()):  # one read per factorisation
        raise StepFailure(f"the Newton matrix I - h a J is singular at t = {format_time(t)} with h = {format_time(h)}")
    return lu, pivots


def blockwise(h):
    """h shaped to scale (B, rows, cols) blocks: a scalar, or one step per batch element as
    torchode takes them (h of shape (B, 1) on the (B, n) layout)."""
    return h.reshape(-1, 1, 1)


def newton_matrix(a_block: torch.Tensor, h, jacobians: torch.Tensor) -> torch.Tensor:
    """I - h (A_BB (x) J): block (i, j) is delta_ij I - h a_ij J_j, with ``jacobians`` (B, m, n, n)."""
    batch, m, n, _ = jacobians.shape
    blocks = a_block[None, :, None, :, None] * jacobians.permute(0, 2, 1, 3)[:, None]  # (B, m, n, m, n)
    eye = torch.eye(m * n, dtype=jacobians.dtype, device=jacobians.device)
    return eye - blockwise(h) * blocks.reshape(batch, m * n, m * n)


class SplitJacobian:
    """df/dx = [[J_cc, 0], [J_qc, 0]] on the (B, n) layout: the core components x[..., lo:hi]
    (``core`` = J_cc, (B, nc, nc)) and every other component a quadrature (``coupling`` =
    J_qc, (B, nq, nc)); eig(df/dx) = eig(J_cc) and nq zeros."""

    def __init__(self, core: torch.Tensor, coupling: torch.Tensor, lo: int, hi: int):
        self.core, self.coupling, self.lo, self.hi = core, coupling, lo, hi

    def detach(self) -> SplitJacobian:
        return SplitJacobian(self.core.detach(), self.coupling.detach(), self.lo, self.hi)

    def core_part(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.lo:self.hi]

    def quadrature_part(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., :self.lo], x[..., self.hi:]], dim=-1)

    def assemble(self, core: torch.Tensor, quadrature: torch.Tensor) -> torch.Tensor:
        return torch.cat([quadrature[..., :self.lo], core, quadrature[..., self.lo:]], dim=-1)


class DenseNewton:
    """LU factors of I - h (A (x) J) for a block of m stages with Jacobians ``jacobians`` ((B, n, n) each)."""

    def __init__(self, a_block: torch.Tensor, h, jacobians: list, t):
        first = jacobians[0]
        # simplified Newton gives every stage the same J: a view, not m copies of it
        stacked = (first[:, None].expand(-1, len(jacobians), -1, -1) if all(J is first for J in jacobians)
                   else torch.stack(jacobians, dim=1))
        self.lu, self.pivots = lu_factors(newton_matrix(a_block, h, stacked), t, h)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """x with (I - h (A (x) J)) x = b, b of shape (B, m n) (stage-major)."""
        return torch.linalg.lu_solve(self.lu, self.pivots, b[..., None])[..., 0]

    def solve_transposed(self, b: torch.Tensor) -> torch.Tensor:
        return torch.linalg.lu_solve(self.lu, self.pivots, b[..., None], adjoint=True)[..., 0]


class SplitNewton:
    """I - h (A (x) J) for split Jacobians (:class:`SplitJacobian`): the core block by LU,
    the quadratures by one product with the coupling rows."""

    def __init__(self, a_block: torch.Tensor, h, jacobians: list, t):
        self.split = jacobians[0]
        self.core = DenseNewton(a_block, h, [J.core for J in jacobians], t)
        self.coupling = [J.coupling for J in jacobians]
        self.ha = blockwise(h) * a_block            # (B or 1, m, m)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        batch, m = b.shape[0], len(self.coupling)
        b = b.reshape(batch, m, -1)
        x_core = self.core.solve(self.split.core_part(b).reshape(batch, -1)).reshape(batch, m, -1)
        coupled = torch.stack([(C @ x_core[:, j, :, None])[..., 0] for j, C in enumerate(self.coupling)], dim=1)
        x_quad = self.split.quadrature_part(b) + torch.einsum("bij,bjq->biq", self.ha.expand(batch, -1, -1), coupled)
        return self.split.assemble(x_core, x_quad).reshape(batch, -1)


class TransformedNewton:
    """I - h (A (x) J) of an m-stage block solved through A's eigenbasis: ``system(gamma)``
    is the factorised I - h gamma J of one eigenvalue (a 1 x 1 block's Newton matrix, so the
    step's cache shares Radau IIA's real system with the error estimate's filter)."""

    def __init__(self, split, system):
        self.split = split
        self.systems = [system(gamma) for gamma in split.gammas]

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """x with (I - h (A (x) J)) x = b, b of shape (B, m n) (stage-major)."""
        rows = b.reshape(b.shape[0], self.split.V.shape[0], -1).unbind(1)
        solutions = [system.solve(u) for system, u in zip(self.systems, self.split.to_systems(rows))]
        return torch.stack(self.split.from_systems(solutions), dim=1).reshape(b.shape)


#: The fewest unknowns for which a dense block is split: below, the extra LU and the
#: transforms' dozen small ops cost more than the coupled LU saves (ROBER, n = 3: 0.32 ->
#: 0.45 s; a Brusselator line, n = 64: equal; n = 128: 1.1 -> 0.7 s; n = 400: 5.5 -> 2.8 s).
SPLIT_FROM = 64


def transforms(jacobian) -> bool:
    """Whether a block's Newton solves take :class:`TransformedNewton` with this Jacobian:
    sparse ones, and dense ones from :data:`SPLIT_FROM` unknowns (a complex LU each);
    matrix-free Newton factorises nothing, and a split Jacobian's quadratures are already
    solved without a factorisation."""
    return isinstance(jacobian, SparseJacobian) or (isinstance(jacobian, torch.Tensor)
                                                    and jacobian.shape[-1] >= SPLIT_FROM)


def factor_newton(a_block: torch.Tensor, h, jacobians: list, t):
    """The factorised Newton matrix of a stage block, split where the Jacobians are."""
    if isinstance(jacobians[0], SplitJacobian):
        return SplitNewton(a_block, h, jacobians, t)
    if isinstance(jacobians[0], SparseJacobian):
        return SparseNewton(a_block, h, jacobians, t)
    from ._krylov import JacobianAction, KrylovNewton

    if isinstance(jacobians[0], JacobianAction):
        return KrylovNewton(a_block, h, jacobians, t, jacobians[0].field.krylov)
    return DenseNewton(a_block, h, jacobians, t)


class SparseJacobian:
    """df/dy on a sparsity pattern (:class:`stiffcore.linalg.JacobianPattern`): ``entries``
    (B, nnz) in the pattern's CSR order, one row per batch element."""

    def __init__(self, pattern, entries: torch.Tensor):
        self.pattern, self.entries = pattern, entries

    def detach(self) -> SparseJacobian:
        return SparseJacobian(self.pattern, self.entries.detach())


class SparseNewton:
    """I - h (A (x) J) for sparse Jacobians, factorised by SuperLU on the host
    (:func:`stiffcore.linalg.sparse_solve`: torch has no sparse LU on the CPU).  Entries and
    right-hand sides cross to the host once per solve; the factors are kept across the
    solves of a step.  Batch elements are solved one after another."""

    def __init__(self, a_block: torch.Tensor, h, jacobians: list, t, entries: torch.Tensor | None = None):
        m = a_block.shape[0]
        first = jacobians[0]
        self.pattern = first.pattern.newton(m)
        if entries is None:
            entries = newton_entries(first.pattern, a_block, h, [J.entries for J in jacobians])
        self.entries = entries                       # (B, nnz), possibly in the autograd graph
        self._host = entries.detach().cpu().numpy()
        self.t, self.h = t, h

    def solve(self, b: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        rhs = b.detach().cpu().numpy()
        try:
            out = [sparse_solve(self.pattern, self._host[k if self._host.shape[0] > 1 else 0], rhs[k], transpose)
                   for k in range(rhs.shape[0])]
        except SingularMatrixError:
            raise StepFailure(f"the Newton matrix I - h a J is singular at t = {format_time(self.t)} with "
                              f"h = {format_time(self.h)}") from None
        return torch.as_tensor(np.stack(out), dtype=b.dtype, device=b.device)

    def solve_transposed(self, b: torch.Tensor) -> torch.Tensor:
        return self.solve(b, transpose=True)


@functools.lru_cache(maxsize=64)
def pattern_indices(pattern, name: str, device: torch.device, stages: int = 1) -> tuple[torch.Tensor, ...]:
    """A pattern's index arrays as tensors on ``device``, made once (a pattern never changes,
    and the sparse paths ask for them every Jacobian and every solve): ``"csr"`` (rows,
    columns, colour of each entry's column) or ``"newton"`` (the layout of
    ``pattern.newton(stages)``: block row, block column, J's entry or -1, diagonal)."""
    arrays = ((pattern.rows, pattern.indices, pattern.groups[pattern.indices]) if name == "csr"
              else pattern.newton_layout(stages))
    return tuple(torch.as_tensor(a, device=device) for a in arrays)


def newton_entries(pattern, a_block: torch.Tensor, h, stage_entries: list) -> torch.Tensor:
    """The entries of I - h (A (x) J) on ``pattern.newton(m)`` from each stage's J entries
    ((B, nnz) each), differentiable in them (:meth:`JacobianPattern.newton_layout`)."""
    i, j, k, diag = pattern_indices(pattern, "newton", a_block.device, a_block.shape[0])
    J = torch.stack(stage_entries, dim=1)                                  # (B, m, nnz)
    gathered = J[:, j, k.clamp(min=0)] * (k >= 0)                          # (B, nnzP)
    return diag.to(J.dtype) - blockwise(h)[..., 0] * a_block[i, j] * gathered


class _SparseSolve(torch.autograd.Function):
    """x = M^-1 b for a sparse M given by its entries: backward b_bar = M^-T x_bar and
    M_bar[k] = -b_bar[row_k] x[col_k] on the pattern (the adjoint of a sparse solve)."""

    @staticmethod
    def forward(ctx, entries, b, newton):
        x = newton.solve(b)
        ctx.newton = newton
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, x_bar):
        (x,) = ctx.saved_tensors
        newton = ctx.newton
        b_bar = newton.solve_transposed(x_bar)
        entries_bar = None
        if ctx.needs_input_grad[0]:
            rows, cols, _ = pattern_indices(newton.pattern, "csr", x.device)
            entries_bar = -b_bar[:, rows] * x[:, cols]
        return entries_bar, b_bar, None


def sparse_solve_differentiable(newton: SparseNewton, b: torch.Tensor) -> torch.Tensor:
    return _SparseSolve.apply(newton.entries, b, newton)
