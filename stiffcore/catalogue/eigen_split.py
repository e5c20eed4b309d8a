"""A fully implicit stage block split into independent n x n systems.

Simplified Newton on the m coupled stages of a block solves with I - h (A (x) J), an
(m n x m n) matrix.  With A = V diag(gamma) V^-1 it is

    I - h (A (x) J) = (V (x) I) diag_i(I - h gamma_i J) (V^-1 (x) I),

one n x n system per eigenvalue of A: a real one for each real eigenvalue, one complex
system for each conjugate pair (the partner's solution is its conjugate).  Radau IIA5
solves one real and one complex n x n system instead of a (3n x 3n) one: about a fifth of
the LU flops, and J is needed only n x n (Butcher 1976, "On the implementation of implicit
Runge-Kutta methods", BIT 16; Hairer & Wanner, Solving ODEs II, sec. IV.8, RADAU5).

The transforms are sums weighted by Python scalars and ``.real``, so NumPy, torch and JAX
arrays all go through :meth:`EigenSplit.to_systems` / :meth:`EigenSplit.from_systems`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The largest condition number of V accepted: beyond it the split loses more digits
#: than the coupled solve (A's eigenvectors nearly parallel).
MAX_CONDITION = 1e6


@dataclass(frozen=True, eq=False)   # compared and hashed by identity (JAX keeps it as static data)
class EigenSplit:
    """A = V diag(eigenvalues) V^-1 for a stage block, with the systems it splits into.

    ``systems`` lists (i, partner): i indexes a real eigenvalue (partner None) or the member
    of a conjugate pair with positive imaginary part (partner its conjugate); the columns of
    V for a pair are exact conjugates."""

    eigenvalues: np.ndarray                          # (m,) complex, of A
    V: np.ndarray                                    # (m, m) complex
    V_inv: np.ndarray                                # (m, m) complex
    systems: tuple[tuple[int, int | None], ...]

    @property
    def gammas(self) -> tuple:
        """gamma_i of each system's I - h gamma_i J: a float for a real system, else complex."""
        return tuple(self._scalar(self.eigenvalues[i], p) for i, p in self.systems)

    def to_systems(self, rows) -> list:
        """The systems' right-hand sides u_i = sum_r (V^-1)_ir b_r from the stage rows b_r."""
        return [_weighted([self._scalar(w, p) for w in self.V_inv[i]], rows) for i, p in self.systems]

    def from_systems(self, solutions) -> list:
        """The stage rows x_r = sum_i Re(V_ri v_i), a conjugate pair counted twice (v_i and
        its conjugate), from the systems' solutions v_i."""
        out = []
        for r in range(self.V.shape[0]):
            total = 0.0
            for (i, partner), v in zip(self.systems, solutions):
                if partner is None:
                    total = total + float(self.V[r, i].real) * v
                else:
                    total = total + (complex(2 * self.V[r, i]) * v).real
            out.append(total)
        return out

    @staticmethod
    def _scalar(value, partner):
        return float(value.real) if partner is None else complex(value)


def _weighted(weights, rows):
    total = 0.0
    for w, row in zip(weights, rows):
        if w:
            total = total + w * row
    return total


def eigen_split(a_block: np.ndarray, real_eigenvalue: float | None = None) -> EigenSplit | None:
    """The split of a block's A, or None where there is nothing to split (one stage) or it is
    unsafe (A not diagonalisable to :data:`MAX_CONDITION`).  ``real_eigenvalue``, where A has
    it to 1e-12, replaces the computed one exactly: Radau IIA's real eigenvalue is its
    estimate's b0, and one value lets the estimate's filter I - h b0 J reuse the real
    system's factorisation."""
    m = a_block.shape[0]
    if m < 2:
        return None
    eigenvalues, V = np.linalg.eig(np.asarray(a_block, dtype=float))
    if np.linalg.cond(V) > MAX_CONDITION:
        return None
    systems, used = [], set()
    for i in np.argsort(-eigenvalues.imag):  # pairs' positive members first, then real, then partners
        if i in used:
            continue
        used.add(i)
        if abs(eigenvalues[i].imag) <= 1e-12 * abs(eigenvalues[i]):
            eigenvalues[i], V[:, i] = eigenvalues[i].real, V[:, i].real
            if real_eigenvalue is not None and abs(eigenvalues[i] - real_eigenvalue) <= 1e-12 * abs(real_eigenvalue):
                eigenvalues[i] = real_eigenvalue
            systems.append((int(i), None))
            continue
        partner = min((j for j in range(m) if j not in used), key=lambda j: abs(eigenvalues[j] - eigenvalues[i].conj()))
        used.add(partner)
        eigenvalues[partner], V[:, partner] = eigenvalues[i].conj(), V[:, i].conj()
        systems.append((int(i), int(partner)))
    V_inv = np.linalg.inv(V)
    for a in (eigenvalues, V, V_inv):
        a.setflags(write=False)
    return EigenSplit(eigenvalues, V, V_inv, tuple(systems))
