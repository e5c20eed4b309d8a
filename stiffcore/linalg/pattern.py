"""Jacobian sparsity patterns and the column grouping that compresses them.

Columns that share no row can be probed by one Jacobian-vector product with the sum of
their unit vectors; a colouring of the column-intersection graph therefore recovers a
sparse n x n Jacobian from ``colours`` products instead of n (Curtis, Powell & Reid 1974,
"On the estimation of sparse Jacobian matrices").  The colouring is SciPy's, the one its
own ``solve_ivp`` uses for ``jac_sparsity``.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np


class JacobianPattern:
    """Where df/dy may be nonzero, in CSR order, with a column colouring.

    ``sparsity`` is anything SciPy can make a sparse matrix of (a dense 0/1 or boolean array,
    a SciPy sparse matrix): entry (i, j) nonzero where df_i/dy_j may be.  Hashable by content,
    so it can be a static field of a jitted module.
    """

    def __init__(self, sparsity) -> None:
        from scipy.optimize._numdiff import group_columns  # SciPy's colouring (private, stable since 1.0)
        from scipy.sparse import csr_matrix

        try:
            S = csr_matrix(sparsity, dtype=bool)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"jac_sparsity must be a 2-D array or SciPy sparse matrix: {exc}") from None
        if S.ndim != 2 or S.shape[0] != S.shape[1]:
            raise ValueError(f"jac_sparsity must be square (n, n), got shape {S.shape}")
        S.eliminate_zeros()
        S.sort_indices()
        self.n = S.shape[0]
        self.indptr = S.indptr.astype(np.int64)
        self.indices = S.indices.astype(np.int64)
        self.rows = np.repeat(np.arange(self.n), np.diff(self.indptr))
        self.groups = np.asarray(group_columns(S), dtype=np.int64) if self.n else np.zeros(0, np.int64)
        self.colours = int(self.groups.max()) + 1 if self.n else 0
        # the CSR entries of the transpose are these entries in (column, row) order
        self.transpose_order = np.lexsort((self.rows, self.indices))
        self.digest = hashlib.blake2b(self.indptr.tobytes() + self.indices.tobytes(), digest_size=16).digest()
        self._newton: dict[int, JacobianPattern] = {}
        self._layouts: dict[int, tuple] = {}

    @functools.cached_property
    def symmetric(self) -> bool:
        """Whether df_i/dy_j is in the pattern exactly where df_j/dy_i is."""
        return structurally_symmetric(self.matrix(np.ones(self.nnz, dtype=bool)))

    @property
    def nnz(self) -> int:
        return self.indices.size

    def __eq__(self, other) -> bool:
        return isinstance(other, JacobianPattern) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"JacobianPattern(n={self.n}, nnz={self.nnz}, colours={self.colours})"

    def seeds(self, dtype=np.float64) -> np.ndarray:
        """(colours, n): row g is the sum of the unit vectors of the columns coloured g."""
        S = np.zeros((self.colours, self.n), dtype=dtype)
        S[self.groups, np.arange(self.n)] = 1
        return S

    def entries(self, compressed):
        """The CSR entries from the compressed Jacobian ``compressed[g] = J @ seeds[g]``, shape
        (colours, n), in any array library that indexes like NumPy."""
        return compressed[self.groups[self.indices], self.rows]

    def matrix(self, entries):
        """The SciPy CSR matrix with these entries."""
        from scipy.sparse import csr_matrix

        return csr_matrix((entries, self.indices, self.indptr), shape=(self.n, self.n))

    def newton(self, stages: int = 1) -> JacobianPattern:
        """The pattern of I - h (A (x) J) for a block of ``stages`` coupled stages (stage-major):
        every stage block carries J's pattern, and the diagonal is always present."""
        if stages not in self._newton:
            from scipy.sparse import identity, kron

            S = self.matrix(np.ones(self.nnz, dtype=bool))
            block = kron(np.ones((stages, stages), dtype=bool), S, format="csr") if stages > 1 else S
            self._newton[stages] = JacobianPattern(block + identity(self.n * stages, dtype=bool, format="csr"))
        return self._newton[stages]

    def newton_layout(self, stages: int = 1):
        """How the entries of ``newton(stages)`` follow from J's: for each, the stage blocks
        (i, j), the index k of J's entry at the same (row, column) within the block (-1 where
        J has none) and whether it lies on the diagonal.  Entry = [diag] - h a_ij J_j[k]."""
        if stages in self._layouts:
            return self._layouts[stages]
        P = self.newton(stages)
        i, r = np.divmod(P.rows, self.n)
        j, c = np.divmod(P.indices, self.n)
        from scipy.sparse import csr_matrix

        lookup = csr_matrix((np.arange(1, self.nnz + 1), self.indices, self.indptr), shape=(self.n, self.n))
        k = np.asarray(lookup[r, c]).ravel().astype(np.int64) - 1
        # kept: torch's Rosenbrock steps ask for it every step, and the lookup costs O(nnz log)
        self._layouts[stages] = (i, j, k, P.rows == P.indices)
        return self._layouts[stages]

    def misses(self, row: int, values: np.ndarray, tol: float = 0.0) -> list[int]:
        """Columns where row ``row`` of a Jacobian (``values``, dense) is nonzero but the
        pattern has no entry."""
        allowed = np.zeros(self.n, dtype=bool)
        allowed[self.indices[self.indptr[row]:self.indptr[row + 1]]] = True
        return [int(j) for j in np.flatnonzero((np.abs(values) > tol) & ~allowed)]

    def describe_misses(self, row: int, values: np.ndarray, tol: float = 0.0) -> str:
        """A message naming the entries that ``jac_sparsity`` misses in ``row``."""
        cols = self.misses(row, values, tol)
        named = ", ".join(f"df[{row}]/dy[{j}] = {values[j]:.3g}" for j in cols[:5])
        more = f" and {len(cols) - 5} more" if len(cols) > 5 else ""
        return (f"jac_sparsity misses nonzero Jacobian entries: {named}{more}; add them to the pattern "
                f"(row {row}, column{'s' if len(cols) > 1 else ''} {', '.join(map(str, cols[:5]))})")


def structurally_symmetric(matrix) -> bool:
    """Whether a sparse matrix stores entry (i, j) exactly where it stores (j, i)."""
    from scipy.sparse import csr_matrix

    S = csr_matrix(matrix, dtype=bool)
    return S.shape[0] == S.shape[1] and (S != S.T).nnz == 0


def banded_pattern(n: int, lower: int, upper: int) -> JacobianPattern:
    """The pattern of a banded Jacobian: df_i/dy_j nonzero for -lower <= j - i <= upper
    (LSODA's ``lband``/``uband``)."""
    from scipy.sparse import diags

    if lower < 0 or upper < 0:
        raise ValueError(f"bandwidths must be >= 0, got lower={lower}, upper={upper}")
    offsets = [k for k in range(-lower, upper + 1) if abs(k) < max(n, 1)]
    return JacobianPattern(diags([np.ones(n - abs(k)) for k in offsets], offsets, shape=(n, n), dtype=float))


def detection_block(values_per_column: int) -> int:
    """Columns per call of :func:`detect_pattern`: at most 256, and few enough that a block of
    products holds about 2^22 values (32 MB in float64) however large the state."""
    return max(1, min(256, 2**22 // max(values_per_column, 1)))


def detect_pattern(columns, n: int, block: int | None = None) -> JacobianPattern:
    """The pattern of df/dy found once from exact Jacobian columns, ``block`` at a time:
    ``columns(start, stop)`` returns J[:, start:stop] transposed, shape (stop - start, n)
    (JVPs with unit vectors, or differences); ``block`` defaults to :func:`detection_block`.
    O(n / block) calls and O(nnz + block n) memory; an entry that is zero at the probe point
    but not elsewhere is missed, so probe where no component is special (:func:`probe_points`);
    the solvers' pattern check names any miss."""
    from scipy.sparse import coo_matrix

    block = block or detection_block(n)
    rows, cols = [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        C = np.asarray(columns(start, stop))
        if C.shape != (stop - start, n):
            raise ValueError(f"columns({start}, {stop}) returned shape {C.shape}; expected {(stop - start, n)}")
        k, i = np.nonzero(C != 0)   # NaN counts as nonzero: conservative
        rows.append(i)
        cols.append(k + start)
    rows, cols = np.concatenate(rows or [np.zeros(0, int)]), np.concatenate(cols or [np.zeros(0, int)])
    return JacobianPattern(coo_matrix((np.ones(rows.size, dtype=bool), (rows, cols)), shape=(n, n)))


def probe_points(y: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Where to probe for a pattern: y itself and y moved up by 1-10% of |y_j| plus a floor
    of 1% of max |y| (1e-3 for a zero state), so no component stays at a special value:
    entries that vanish at y (ROBER's dA'/dB = 1e4 C at C = 0, BRUSS-2D's du/dv = u^2 where
    u = 0) show at the second point, and a nonnegative state stays nonnegative."""
    y = np.asarray(y)
    floor = 0.01 * float(np.max(np.abs(y))) if y.size and np.any(y) else 1e-3
    u = np.random.default_rng(seed).uniform(0.01, 0.1, size=y.shape)
    return [y, y + u * (np.abs(y) + floor)]
