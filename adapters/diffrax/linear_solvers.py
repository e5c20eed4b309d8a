"""Lineax linear solvers for large stiff systems: a sparse direct solve from coloured JVPs.

:class:`SparseLU` takes the Jacobian's sparsity pattern, assembles the Newton matrix
I - h (A (x) J) from a few Jacobian-vector products (one per colour of the pattern's
columns, :class:`stiffcore.linalg.JacobianPattern`) and solves with SuperLU on the host
(:func:`stiffcore.linalg.sparse_solve`, factors reused across the stage solves).  JAX has no
sparse direct solver on the CPU; the host callback keeps the cost and memory O(nnz), and
lineax differentiates the solve itself (the transposed solve reuses the factors).  No n x n
array is formed.  The matrix-free alternative is ``lineax.GMRES`` on the same operator.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.experimental import io_callback
from jax.flatten_util import ravel_pytree

from stiffcore.linalg import JacobianPattern, detect_pattern, detection_block, probe_points
from stiffcore.linalg.sparse_lu import SingularMatrixError, sparse_solve


def as_pattern(sparsity) -> JacobianPattern:
    return sparsity if isinstance(sparsity, JacobianPattern) else JacobianPattern(sparsity)


class SparseLU(lx.AbstractLinearSolver):
    """Sparse LU (SuperLU, on the host) of a Newton matrix whose Jacobian has the pattern
    ``jac_sparsity`` (n x n: a 0/1 array, a SciPy sparse matrix or a
    :class:`~stiffcore.linalg.JacobianPattern`; see :func:`stiffcore.linalg.banded_pattern`).
    An operator over m stacked stages of n unknowns gets the pattern of I - h (A (x) J).

    Under ``jax.vmap`` the batch is solved one element after another."""

    jac_sparsity: JacobianPattern = eqx.field(static=True, converter=as_pattern)

    def _pattern_for(self, operator) -> JacobianPattern:
        size, n = operator.in_size(), self.jac_sparsity.n
        if operator.out_size() != size or n == 0 or size % n:
            raise ValueError(f"SparseLU: jac_sparsity is {n} x {n}, but the linear system is "
                             f"{operator.out_size()} x {size} (a multiple of the state size {n} expected)")
        return self.jac_sparsity.newton(size // n)

    def init(self, operator: lx.AbstractLinearOperator, options: dict[str, Any]):
        del options
        pattern = self._pattern_for(operator)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), operator.in_structure())
        flat, unravel = ravel_pytree(zeros)
        dtype = flat.dtype
        mv = lambda seed: ravel_pytree(operator.mv(unravel(seed)))[0]  # noqa: E731
        compressed = jax.vmap(mv)(jnp.asarray(pattern.seeds(), dtype=dtype))
        return pattern.entries(compressed), eqxi.Static((pattern, False))

    def compute(self, state, vector, options):
        del options
        entries, static = state
        pattern, transpose = static.value
        b, unravel = ravel_pytree(vector)
        x = jax.pure_callback(_host_solve(pattern, transpose), jax.ShapeDtypeStruct(b.shape, b.dtype),
                              entries, b, vmap_method="sequential")
        ok = jnp.all(jnp.isfinite(x))
        return unravel(x), lx.RESULTS.where(ok, lx.RESULTS.successful, lx.RESULTS.singular), {}

    def transpose(self, state, options):
        entries, static = state
        pattern, transpose = static.value
        return (entries, eqxi.Static((pattern, not transpose))), options

    def conj(self, state, options):
        entries, static = state
        return (jnp.conj(entries), static), options

    def assume_full_rank(self) -> bool:
        return True


#: lineax's matrix-free (Krylov) solvers: with these the stage blocks take Newton-Krylov steps.
KRYLOV = (lx.GMRES, lx.BiCGStab, lx.CG)


def implicit_adjoint(root_finder) -> optx.ImplicitAdjoint:
    """Optimistix's implicit adjoint with the root finder's own direct linear solver (SparseLU,
    dense LU): the adjoint's default is a dense LU of the materialised Jacobian, O(n^3) per
    step in the backward pass whatever the forward solve used (FBDF with SparseLU on 2,048
    unknowns: a 103 s gradient beside a 3 s solve).  A Krylov solver keeps the default: lineax
    raises on GMRES's breakdown inside a backward pass (a 6 x 6 Radau block, restart 4), where
    the forward root find only reports it."""
    solver = getattr(root_finder, "linear_solver", None)
    if solver is None or isinstance(solver, KRYLOV):
        return optx.ImplicitAdjoint()
    return optx.ImplicitAdjoint(linear_solver=solver)


def _host_solve(pattern: JacobianPattern, transpose: bool):
    def solve(entries, b):
        try:
            return sparse_solve(pattern, np.asarray(entries), np.asarray(b), transpose).astype(b.dtype)
        except SingularMatrixError:
            return np.full(b.shape, np.nan, dtype=b.dtype)  # a failed solve: the step is rejected
    return solve


def check_pattern(f, t, y, pattern: JacobianPattern):
    """``y``, after checking ``pattern`` against f's Jacobian at (t, y): one probe J v by a JVP
    against the pattern's assembly, and for the first row that disagrees, that row by a VJP,
    so the error names its missing entries.  Costs colours + 1 JVPs and one VJP per solve."""
    if pattern.n != y.size:
        raise ValueError(f"jac_sparsity is {pattern.n} x {pattern.n}, but the state has {y.size} unknowns")
    fy = lambda u: f(t, u)  # noqa: E731
    v = jax.random.normal(jax.random.key(0), y.shape, y.dtype)
    exact = jax.jvp(fy, (y,), (v,))[1]
    entries = pattern.entries(jax.vmap(lambda s: jax.jvp(fy, (y,), (s,))[1])(jnp.asarray(pattern.seeds(), y.dtype)))
    rows = jnp.asarray(pattern.rows)
    assembled = jax.ops.segment_sum(entries * v[jnp.asarray(pattern.indices)], rows, num_segments=y.size)
    scale = jax.ops.segment_sum(jnp.abs(entries * v[jnp.asarray(pattern.indices)]), rows, num_segments=y.size)
    gap = jnp.abs(exact - assembled) > 1e-6 * (scale + jnp.abs(exact)) + jnp.finfo(y.dtype).tiny
    row = jnp.argmax(gap)
    values = jax.vjp(fy, y)[1](jnp.zeros_like(y).at[row].set(1))[0]

    def raise_if_missing(bad, row, values):
        if bad:
            raise ValueError(pattern.describe_misses(int(row), np.asarray(values)))

    # a side effect (not a pure callback, which XLA may drop): the error surfaces from the solve
    io_callback(raise_if_missing, None, *jax.lax.stop_gradient((jnp.any(gap), row, values)))
    return y


def detect_sparsity(vector_field, t0, y0, args=None, block: int | None = None) -> JacobianPattern:
    """The sparsity pattern of ``vector_field(t, y, args)``'s Jacobian, found once by JVPs
    with unit vectors (``block`` at a time, jitted) at y0 and at a point near it
    (:func:`stiffcore.linalg.probe_points`), for :class:`SparseLU` where no pattern is at
    hand.  Costs n JVPs once: O(n^2) time, O(nnz + block n) memory.  y0 may be a pytree; the
    pattern is that of the flat state."""
    flat0, unravel = ravel_pytree(y0)
    n = flat0.size
    block = block or detection_block(n)
    points = [jnp.asarray(p, flat0.dtype) for p in probe_points(np.asarray(flat0))]

    @jax.jit
    def columns(y, start):
        seeds = jax.nn.one_hot(start + jnp.arange(block), n, dtype=flat0.dtype)
        f = lambda u: ravel_pytree(vector_field(t0, unravel(u), args))[0]  # noqa: E731
        return jax.vmap(lambda s: jax.jvp(f, (y,), (s,))[1])(seeds)

    def both(start, stop):
        return sum(np.abs(np.asarray(columns(y, start))) for y in points)[: stop - start]

    return detect_pattern(both, n, block)
