"""Large sparse stiff systems for the linear-solver benchmarks and tests, with their
Jacobian sparsity patterns; ``xp`` is numpy, ``jax.numpy`` or torch.

* :func:`bruss2d` -- the two-dimensional Brusselator with diffusion on a periodic m x m grid
  (Hairer & Wanner II, sec. IV.10, BRUSS-2D): 2 m^2 unknowns, u and v interleaved per grid
  point, a five-point Laplacian; the source switches on at t = 1.1.
* :func:`brusselator_1d` -- the one-dimensional Brusselator with its parameter A, sparse
  df/dy and df/dp (numpy), for sensitivities of a large sparse system.
* :func:`rober_copies` -- ``copies`` independent ROBER systems (3 copies unknowns), the
  block-diagonal benchmark that diffsol publishes.
"""

from __future__ import annotations

import numpy as np

BRUSS2D_ALPHA = 0.1
BRUSS2D_T_END = 11.5


def _roll(xp, x, shift: int, axis: int):
    if getattr(xp, "__name__", "") == "torch":
        return xp.roll(x, shift, dims=axis)
    return xp.roll(x, shift, axis=axis)


def bruss2d(m: int, xp=np, alpha: float = BRUSS2D_ALPHA):
    """f(t, y) of BRUSS-2D on an m x m periodic grid (2 m^2 unknowns), written in ``xp``:
    u' = 1 + u^2 v - 4.4 u + alpha Lap(u) + s(x, y, t), v' = 3.4 u - u^2 v + alpha Lap(v),
    s = 5 in the disc (x - 0.3)^2 + (y - 0.6)^2 <= 0.01 for t >= 1.1."""
    x = np.arange(m) / m
    X, Y = np.meshgrid(x, x, indexing="ij")
    disc = ((X - 0.3) ** 2 + (Y - 0.6) ** 2 <= 0.01).astype(float)
    scale = alpha * m * m  # alpha / dx^2

    def lap(U):
        return scale * (_roll(xp, U, 1, 0) + _roll(xp, U, -1, 0) + _roll(xp, U, 1, 1) + _roll(xp, U, -1, 1) - 4 * U)

    def f(t, y, alpha_scale=1.0):
        if getattr(xp, "__name__", "") == "torch":
            disc_xp = xp.as_tensor(disc, dtype=y.dtype, device=y.device)
        else:
            disc_xp = xp.asarray(disc, dtype=y.dtype)
        U = y.reshape(m, m, 2)
        u, v = U[..., 0], U[..., 1]
        source = 5.0 * disc_xp * (t >= 1.1)
        uuv = u * u * v
        du = 1.0 + uuv - 4.4 * u + alpha_scale * lap(u) + source
        dv = 3.4 * u - uuv + alpha_scale * lap(v)
        return xp.stack([du, dv], -1).reshape(-1)

    return f


def bruss2d_y0(m: int) -> np.ndarray:
    """u = 22 y (1 - y)^1.5, v = 27 x (1 - x)^1.5, interleaved."""
    x = np.arange(m) / m
    X, Y = np.meshgrid(x, x, indexing="ij")
    return np.stack([22 * Y * (1 - Y) ** 1.5, 27 * X * (1 - X) ** 1.5], -1).reshape(-1)


def bruss2d_sparsity(m: int):
    """The (2 m^2)^2 sparsity of BRUSS-2D's Jacobian (SciPy CSR)."""
    from scipy.sparse import csr_matrix, identity, kron

    ring = np.zeros((m, m))
    for k in (-1, 0, 1):
        ring[np.arange(m), (np.arange(m) + k) % m] = 1
    grid = kron(csr_matrix(ring), identity(m)) + kron(identity(m), csr_matrix(ring))
    return csr_matrix(kron(grid, np.ones((2, 2))) > 0)


def brusselator_1d(N):
    """(fun(t, y, p), jac, jac_p, y0) of the 1D Brusselator with diffusion (Hairer & Wanner
    II, sec. IV.10, BRUSS): 2 N unknowns, u and v interleaved, Dirichlet ends u = 1, v = 3,
    alpha = 0.02, parameter p = (A,); u' = A + u^2 v - 4 u + alpha u_xx, v' = 3 u - u^2 v +
    alpha v_xx.  ``jac`` is sparse (CSR, five diagonals), complex-safe."""
    from scipy import sparse

    c = 0.02 * (N + 1) ** 2
    x = np.arange(1, N + 1) / (N + 1)
    y0 = np.ravel(np.column_stack([1 + np.sin(2 * np.pi * x), np.full(N, 3.0)]))

    def lap(w, boundary):
        return c * (np.concatenate([[boundary], w[:-1]]) - 2 * w + np.concatenate([w[1:], [boundary]]))

    def fun(t, y, p):
        u, v = y[0::2], y[1::2]
        return np.ravel(np.column_stack([p[0] + u * u * v - 4 * u + lap(u, 1.0), 3 * u - u * u * v + lap(v, 3.0)]))

    def jac(t, y, p):
        u, v = y[0::2], y[1::2]
        diagonal = np.ravel(np.column_stack([2 * u * v - 4, -u * u])) - 2 * c
        upper, lower = np.zeros(2 * N - 1, dtype=y.dtype), np.zeros(2 * N - 1, dtype=y.dtype)
        upper[0::2], lower[0::2] = u * u, 3 - 2 * u * v
        coupling = np.full(2 * N - 2, c)                     # u_i - u_{i+1} and v_i - v_{i+1}
        return sparse.diags([coupling, lower, diagonal, upper, coupling], [-2, -1, 0, 1, 2], format="csr")

    def jac_p(t, y, p):
        out = np.zeros((2 * N, 1), dtype=y.dtype)
        out[0::2] = 1.0
        return out

    return fun, jac, jac_p, y0


def rober_copies(copies: int, xp=np):
    """f(t, y) of ``copies`` independent ROBER systems, y = (A, B, C) per copy."""
    def f(t, y, k1=0.04):
        Y = y.reshape(copies, 3)
        a, b, c = Y[:, 0], Y[:, 1], Y[:, 2]
        da = -k1 * a + 1e4 * b * c
        dc = 3e7 * b * b
        return xp.stack([da, -da - dc, dc], -1).reshape(-1)

    return f


def rober_copies_y0(copies: int) -> np.ndarray:
    return np.tile([1.0, 0.0, 0.0], copies)


def rober_copies_sparsity(copies: int):
    """Block-diagonal: ``copies`` dense 3 x 3 blocks (SciPy CSR)."""
    from scipy.sparse import csr_matrix, identity, kron

    return csr_matrix(kron(identity(copies), np.ones((3, 3))) > 0)
