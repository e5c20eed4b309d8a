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

from .pattern import JacobianPattern

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


def _factor(pattern: JacobianPattern, entries: np.ndarray):
    from scipy.sparse.linalg import splu

    entries = np.ascontiguousarray(entries)
    key = (pattern.digest, entries.dtype.str, hashlib.blake2b(entries.tobytes(), digest_size=16).digest())
    lu = _FACTORS.get(key)
    if lu is None:
        try:
            lu = splu(pattern.matrix(entries).tocsc())
        except RuntimeError as exc:  # SuperLU: "Factor is exactly singular"
            raise SingularMatrixError(f"the Newton matrix is singular: {exc}") from None
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
