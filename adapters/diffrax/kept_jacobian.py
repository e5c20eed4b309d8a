"""A Jacobian kept across steps, for the simplified Newton of the multistep solvers.

A BDF corrector needs I - c J only roughly: one Jacobian serves many steps (refreshed after
a Newton failure and every :data:`stiffcore.multistep.JACOBIAN_AGE` steps, as in CVODE and
SciPy's BDF), and while c is unchanged the matrix is bitwise the same, so
:class:`~.linear_solvers.SparseLU` finds its factors again by the matrix's entries instead of
factorising (Shampine & Reichelt 1997, sec. 2.3; Hindmarsh et al. 2005, sec. 2.1).

J is kept as its products with a few probe directions, what the linear solver needs and
no more: the unit vectors for a dense LU (the n x n J^T), the colour groups of SparseLU's
pattern (the colours x n compressed Jacobian).  The Newton iterations on a kept J carry no
gradient (f's captured arrays are closure-converted and stopped); the root they find is
differentiated by the implicit function theorem at the root itself
(:func:`differentiable_root`), so gradients stay those of the discrete solution.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .linear_solvers import KRYLOV, SparseLU, implicit_adjoint


def keeps_jacobian(root_finder) -> bool:
    """Whether a solve with this root finder can keep J across steps: a chord method that takes
    its linearisation from outside (diffrax's ``VeryChord``, ``options=dict(init_state=...)``)
    with a direct linear solver.  Others (``optx.Newton``, Newton-Krylov) linearise themselves."""
    return isinstance(root_finder, diffrax.VeryChord) and not isinstance(root_finder.linear_solver, KRYLOV)


def probe_count(linear_solver, n: int) -> int:
    """How many products of J are kept (the rows of :func:`probe_directions`)."""
    return linear_solver.jac_sparsity.newton(1).colours if isinstance(linear_solver, SparseLU) else n


def probe_directions(linear_solver, n: int, dtype) -> np.ndarray:
    """(k, n) directions whose products with J are kept: SparseLU's colour groups, else the
    unit vectors."""
    if isinstance(linear_solver, SparseLU):
        return linear_solver.jac_sparsity.newton(1).seeds(dtype)
    return np.eye(n, dtype=dtype)


def without_gradient(f: Callable, t, y) -> Callable:
    """f(t, y) with every array it captures stopped: nothing computed from it carries a
    gradient, so loops over it need no reverse mode."""
    converted, consts = jax.closure_convert(f, t, y)
    consts = [jax.lax.stop_gradient(c) for c in consts]
    return lambda t_, y_: converted(t_, y_, *consts)


def jacobian_products(f: Callable, t, y, directions) -> jax.Array:
    """J(t, y) d for each row d of ``directions``, by forward-mode products."""
    return jax.vmap(lambda d: jax.jvp(lambda v: f(t, v), (y,), (d,))[1])(jnp.asarray(directions, y.dtype))


def newton_model(products, c, linear_solver) -> Callable:
    """y -> (I - c J) y with the kept J: the linear model whose linearisation the chord
    method factorises (a dense J^T, or SparseLU's compressed Jacobian scattered on its pattern)."""
    if isinstance(linear_solver, SparseLU):
        pattern = linear_solver.jac_sparsity.newton(1)
        positions, columns = _padded_rows(pattern)
        # row by row on padded rows (gathers only: XLA's scatter-add on the CPU took 3 ms per
        # product at 2,048 unknowns, more than the whole Newton solve)
        J = jnp.concatenate([pattern.entries(products), jnp.zeros(1, products.dtype)])[positions]
        return lambda y: y - c * jnp.sum(J * y[columns], axis=1)
    return lambda y: y - c * (products.T @ y)


@functools.lru_cache(maxsize=8)   # once per pattern: every step's trace (and its retry) asks again
def _padded_rows(pattern):
    """(positions, columns), each (n, widest row): row r's CSR entry indices and columns, padded
    with the index nnz (an appended zero entry) and column 0."""
    counts = np.diff(pattern.indptr)
    width = int(counts.max(initial=0))
    slot = np.arange(pattern.nnz) - pattern.indptr[pattern.rows]
    positions = np.full((pattern.n, width), pattern.nnz)
    columns = np.zeros((pattern.n, width), dtype=np.int64)
    positions[pattern.rows, slot] = np.arange(pattern.nnz)
    columns[pattern.rows, slot] = pattern.indices
    return positions, columns


def only_if(pred, fn: Callable, operand):
    """``fn(operand)`` where ``pred``, else ``operand``: a ``lax.cond`` written as a loop of at
    most one pass, because under ``vmap`` a batched cond runs both branches (a Jacobian and a
    second Newton solve on every step), while the loop runs only when some element needs it.
    Not reverse-differentiable: for values that carry no gradient."""
    return jax.lax.while_loop(lambda c: c[0], lambda c: (jnp.zeros((), bool), fn(c[1])), (pred, operand))[1]


class GivenRoot(optx.AbstractRootFinder):
    """A root finder handed the root as its starting point: no iterations.  Under Optimistix's
    implicit adjoint the root then gets the derivative the implicit function theorem gives it,
    however it was found."""

    rtol: float = 0.0
    atol: float = 0.0
    norm: Callable = optx.max_norm

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        return None

    def step(self, fn, y, args, options, state, tags):
        return y, state, None

    def terminate(self, fn, y, args, options, state, tags):
        return jnp.ones((), bool), optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


def differentiable_root(residual: Callable, root, args: Any, root_finder):
    """``root`` (found without gradient) with its implicit-function-theorem derivative through
    ``residual(y, args)``, solved with the root finder's linear solver."""
    return optx.root_find(residual, GivenRoot(), jax.lax.stop_gradient(root), args=args, throw=False,
                          adjoint=implicit_adjoint(root_finder)).value
