"""Spectrum estimates of a Jacobian from matrix-vector products alone, for large states.

The reversible-stability warning needs h * eig(J).  Above a few hundred unknowns the dense
eigensolve costs more than the check saves, so the adapters run a few Arnoldi iterations on
Jacobian-vector products instead: the Ritz values (eigenvalues of the small Hessenberg
matrix) converge first to the extreme eigenvalues (Saad, "Numerical Methods for Large
Eigenvalue Problems", 2nd ed. 2011, ch. 6), the stiffest decaying and the fastest
oscillating modes, which are the ones that decide the warning.  The limit: an isolated slow
mode below a spectrum spanning several decades converges last (about sqrt(spread)
iterations), so 20 iterations place -0.1 below [-1e4, -10] near -45; the slowest modes'
loss n log10(1/coupling) is checked without eigenvalues for that reason.

:func:`arnoldi` uses only ``@`` (dot product of two 1-D arrays), ``*``, ``-`` and ``/`` on
the vectors, so numpy, torch and (traced) JAX arrays pass through unchanged; it returns
the Hessenberg matrix as nested lists of scalars of that framework, and
:func:`ritz_values` turns them into numpy eigenvalues.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

Vector = TypeVar("Vector")

#: Arnoldi iterations the adapters run: enough for the extreme eigenvalues of the
#: Jacobians we have tried (MLP fields, diffusion stencils, chemistry) to 2-3 digits,
#: which is more than the warning's thresholds resolve.
KRYLOV_STEPS = 20


def arnoldi(matvec: Callable[[Vector], Vector], v0: Vector, steps: int = KRYLOV_STEPS) -> list:
    """Hessenberg matrix ``H`` (``steps`` x ``steps``, nested lists) of ``steps`` Arnoldi
    iterations of ``matvec`` from ``v0``, with classical Gram-Schmidt applied twice (CGS2,
    orthogonal to working precision).  A breakdown (an invariant subspace found early) leaves
    the remaining rows zero rather than dividing by zero, so the Ritz values stay exact."""
    norm = (v0 @ v0) ** 0.5
    basis = [v0 / norm]
    H = [[0.0] * steps for _ in range(steps)]
    scale = None
    for j in range(steps):
        w = matvec(basis[j])
        if scale is None:
            scale = (w @ w) ** 0.5                    # the first image sets the size of "zero"
        for _ in range(2):                              # CGS2
            for i, v in enumerate(basis):
                c = v @ w
                H[i][j] = H[i][j] + c
                w = w - c * v
        beta = (w @ w) ** 0.5
        if j + 1 < steps:
            alive = beta > 1e-12 * scale                # breakdown: the next vector is zero
            H[j + 1][j] = beta * alive
            basis.append(w * alive / (beta + (1.0 - alive * 1.0)))
    return H


def ritz_values(H) -> np.ndarray:
    """Eigenvalues of the Hessenberg matrix from :func:`arnoldi` (any framework's scalars)."""
    H = np.asarray([[complex(x) for x in row] for row in H])
    return np.linalg.eigvals(H) if H.size else np.zeros(0, dtype=complex)


def start_vector(n: int, seed: int = 0) -> np.ndarray:
    """A fixed random start (reproducible warnings), with weight on every component."""
    return np.random.default_rng(seed).standard_normal(n)
