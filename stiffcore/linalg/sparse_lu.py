"""Sparse direct solves with the factorisation reused across solves.

A Rosenbrock step solves with one Newton matrix once per stage, and an implicit stage
block once per Newton iteration: the factors are kept (a few, most recent first) and
found again by the matrix's entries, so a caller that only passes arrays (a JAX
callback) still factorises each matrix once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .pattern import JacobianPattern, structurally_symmetric

_FACTORS: OrderedDict = OrderedDict()
_KEEP = 4
# Every factorisation is made, used and freed on this one thread.  XLA calls host callbacks
# from several threads, and SciPy's SuperLU frees a factorisation's memory only on the thread
# that made it (its allocation tracking is per thread): factors made on one callback thread and
# evicted on another leaked ~3 MB each (BRUSS-2D, n = 2,048: 2.6 GB after 180 Rodas5P steps
# under jit, against 0.6 GB for dense LU).  One worker also serialises the cache.
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stiffcore-superlu")


class SingularMatrixError(ArithmeticError):
    """The Newton or Rosenbrock matrix is singular to working precision."""


def superlu(matrix, symmetric_structure: bool | None = None):
    """SuperLU factors of a sparse matrix, with the column ordering its structure calls for:
    minimum degree on A^T + A where the pattern is symmetric (grids, stencils, independent
    blocks: BRUSS-2D's Newton matrix at n = 8,192 then fills half as much and factorises in
    37 ms instead of 55 ms), SuperLU's default COLAMD otherwise (SuperLU users' guide,
    sec. 2.7).  Raises :class:`SingularMatrixError`."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    matrix = csc_matrix(matrix)
    if symmetric_structure is None:
        symmetric_structure = structurally_symmetric(matrix)
    try:
        return splu(matrix, permc_spec="MMD_AT_PLUS_A" if symmetric_structure else "COLAMD")
    except RuntimeError as exc:  # SuperLU: "Factor is exactly singular"
        raise SingularMatrixError(f"the Newton matrix is singular: {exc}") from None


def _factor(pattern: JacobianPattern, entries: np.ndarray):
    entries = np.ascontiguousarray(entries)
    key = (pattern.digest, entries.dtype.str, hashlib.blake2b(entries.tobytes(), digest_size=16).digest())
    lu = _FACTORS.get(key)
    if lu is None:
        lu = superlu(pattern.matrix(entries), pattern.symmetric)
        if len(_FACTORS) >= _KEEP:
            _FACTORS.popitem(last=False)
        _FACTORS[key] = lu
    else:
        _FACTORS.move_to_end(key)
    return lu


def sparse_solve(pattern: JacobianPattern, entries: np.ndarray, b: np.ndarray, transpose: bool = False) -> np.ndarray:
    """x with M x = b (or M^T x = b), M the CSR matrix of ``pattern`` with ``entries``;
    b of shape (n,) or (n, k).  Raises :class:`SingularMatrixError`."""
    return _WORKER.submit(_solve, pattern, entries, b, transpose).result()


def _solve(pattern, entries, b, transpose):
    lu = _factor(pattern, entries)
    return lu.solve(np.asarray(b, dtype=lu.U.dtype), trans="T" if transpose else "N")
