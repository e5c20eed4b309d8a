"""Newton matrices I - h (A (x) J) of a stage block, factorised once and solved many times.

Dense (:class:`DenseNewton`): one batched LU of the (B, m n, m n) matrix.  Split
(:class:`SplitNewton`): where J = [[J_cc, 0], [J_qc, 0]], components q that no derivative
depends on (quadratures, as CVODES calls them: the parameter adjoints of torchdiffeq's
adjoint system), only the core block I - h (A (x) J_cc) is factorised, and the quadrature
part of the solution follows without a solve, x_q = b_q + h (A (x) J_qc) x_c.  The cost
is then that of the core system, whatever the number of quadratures.
"""

from __future__ import annotations

import torch


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


def factor_newton(a_block: torch.Tensor, h, jacobians: list, t):
    """The factorised Newton matrix of a stage block, split where the Jacobians are."""
    if isinstance(jacobians[0], SplitJacobian):
        return SplitNewton(a_block, h, jacobians, t)
    return DenseNewton(a_block, h, jacobians, t)
