"""Sparse Jacobians by forward differences, one difference of f per colour.

The columns of a colour share no row, so one evaluation of f at y + sum_j inc_j e_j (j in
the colour) gives every entry of those columns (Curtis, Powell & Reid 1974).  The work is
``colours`` evaluations of f and O(nnz) memory; nothing n x n is formed.

The increment of y_j is sqrt(eps) relative to max(|y_j|, atol_j / rtol), the size below
which the error test treats y_j as small: the round-off in column j, eps |f| / inc_j, then
weighs as sqrt(eps) rtol |f_i| / (atol_i + rtol |y_i|) in the error norm's scaling, far below
what a step can notice, while a component at zero is still moved by a size its tolerance
cares about (CVODE and RADAU5 floor the increment the same way, by the error weights and by
1e-5 respectively).
"""

from __future__ import annotations

import numpy as np

from .pattern import JacobianPattern


def difference_increments(y, rtol, atol) -> np.ndarray:
    """inc_j = sqrt(eps) max(|y_j|, atol_j / rtol)."""
    y = np.asarray(y)
    eps = np.finfo(y.dtype if np.issubdtype(y.dtype, np.floating) else float).eps
    return np.sqrt(eps) * np.maximum(np.abs(y), np.asarray(atol) / rtol)


def difference_jacobian(fun_columns, t, y, f, pattern: JacobianPattern, increments) -> np.ndarray:
    """The CSR entries of df/dy on ``pattern`` by one forward difference per colour.

    ``fun_columns(t, Y)`` evaluates f at each column of Y, shape (n, k) -> (n, k) (SciPy's
    ``fun_vectorized``); ``f = f(t, y)``.  Returns the entries for ``pattern.matrix``."""
    y = np.asarray(y)
    increments = np.asarray(increments, dtype=y.dtype)
    steps = pattern.seeds(y.dtype) * increments  # (colours, n): each colour's perturbation
    # y + step can differ from y by less than the increment in floating point: divide by the
    # increment actually taken, as CVODE does
    perturbed = y[None, :] + steps
    taken = (perturbed - y[None, :])[pattern.groups, np.arange(pattern.n)]
    differences = np.asarray(fun_columns(t, perturbed.T)).T - np.asarray(f)[None, :]  # (colours, n)
    return pattern.entries(differences) / taken[pattern.indices]
