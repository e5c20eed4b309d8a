"""The stage block of a fully implicit method by simplified Newton in A's eigenbasis.

Solving the m stage equations with the root finder as given factorises the (m n x m n)
Jacobian of the whole block, materialised from m n products of the residual.  Here the
Newton matrix is I - h (A (x) J) with one J = df/dy for every stage, as RADAU5 takes it,
solved as the independent n x n systems I - h gamma_i J of A's eigenvalues
(:mod:`stiffcore.catalogue.eigen_split`; a complex one for a conjugate pair): J from n
forward-mode products (or SparseLU's colour groups), and for Radau IIA5 one real and one
complex LU instead of one of size 3n.  The real system of Radau IIA is also its error
estimate's filter I - h b0 J.

The iteration is the user's own ``VeryChord`` (its tolerances, norm and kappa; diffrax's
termination mended, :mod:`.root_finders`), handed the split solve as its linear solver, and
runs without gradient; the root it finds
is then differentiated by the implicit function theorem through the exact stage equations
(:func:`~.kept_jacobian.differentiable_root`), so gradients are those of the discrete
solution as with any other root finder.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from stiffcore.catalogue.eigen_split import EigenSplit

from .kept_jacobian import (differentiable_root, jacobian_products, keeps_jacobian, newton_model, probe_directions,
                            without_gradient)
from .linear_solvers import SparseLU


def splits(root_finder, split: EigenSplit | None) -> bool:
    """Whether a stage block is solved in A's eigenbasis: a block with a split, and a chord
    root finder that takes its linearisation from outside with a direct linear solver (a
    Newton root finder linearises itself; a Krylov solver factorises nothing)."""
    return split is not None and keeps_jacobian(root_finder)


def system_operator(inner, products, c) -> lx.AbstractLinearOperator:
    """I - c J, J kept as ``products`` with the inner solver's probe directions, as a lineax
    operator (complex for complex c): SparseLU probes it with its colour groups, a dense
    solver gets the matrix."""
    n = products.shape[1]
    if isinstance(inner, SparseLU):
        return lx.FunctionLinearOperator(newton_model(products, c, inner), jax.ShapeDtypeStruct((n,), c.dtype))
    return lx.MatrixLinearOperator(jnp.eye(n, dtype=c.dtype) - c * products.T)


class SplitStageSolve(lx.AbstractLinearSolver):
    """I - h (A (x) J) on (m, n) stage rows as the n x n systems I - h gamma_i J of the split,
    factorised beforehand by a direct lineax solver (``factors``, one ``inner`` state per
    system).  It solves only that operator, whatever operator ``init`` is handed (the chord
    method's linearisation model), and carries no gradient (the root it helps find is
    differentiated afterwards)."""

    split: EigenSplit = eqx.field(static=True)
    inner: lx.AbstractLinearSolver
    factors: tuple

    @classmethod
    def factorise(cls, split: EigenSplit, inner, products, h) -> SplitStageSolve:
        systems = (system_operator(inner, products, (h * gamma).astype(jnp.result_type(products.dtype, type(gamma))))
                   for gamma in split.gammas)
        return cls(split, inner, tuple(inner.init(op, {}) for op in systems))

    def init(self, operator, options: dict[str, Any]):
        del operator, options
        return self.factors

    def compute(self, state, vector, options):
        del options
        solved = [self.inner.compute(s, u, {}) for s, u in zip(state, self.split.to_systems(list(vector)))]
        result = lx.RESULTS.successful
        for _, system_result, _ in solved:
            result = lx.RESULTS.where(result == lx.RESULTS.successful, system_result, result)
        return jnp.stack(self.split.from_systems([x for x, _, _ in solved])), result, {}

    def filter(self, gamma) -> Callable:
        """v -> (I - h gamma J)^-1 v with the factors of one of the systems."""
        state = self.factors[self.split.gammas.index(gamma)]
        return lambda v: self.inner.compute(state, v, {})[0]

    def transpose(self, state, options):
        raise NotImplementedError("SplitStageSolve carries no gradient; the root is differentiated at itself")

    def conj(self, state, options):
        raise NotImplementedError("SplitStageSolve carries no gradient; the root is differentiated at itself")

    def assume_full_rank(self) -> bool:
        return True


def split_stage_root(residual_of: Callable, args, guess, f, t_last, h, split: EigenSplit, root_finder,
                     max_steps: int):
    """The block's stages Y (m, n), carrying their implicit-function-theorem derivative through
    ``residual_of(f)``, with the root find's solution (no gradient), the gradient-free
    residual it solved, and the split's factorised solve (for the error filter).

    J is taken at the last stage's guess (time ``t_last``), where the coupled solve linearised
    that stage: at the step's start, as RADAU5 takes it, the chord converged too slowly on
    ROBER for Gauss-Legendre 6 (9,765 steps at rtol 1e-6 instead of 382)."""
    inner = root_finder.linear_solver
    t_, h_, guess_, args_ = jax.lax.stop_gradient((t_last, h, guess, args))
    f_ = without_gradient(f, t_, guess_[-1])
    products = jacobian_products(f_, t_, guess_[-1], probe_directions(inner, guess_.shape[1], guess_.dtype))
    solve = SplitStageSolve.factorise(split, inner, products, h_)
    chord = eqx.tree_at(lambda r: r.linear_solver, root_finder, solve)
    # the chord's starting state holds the split factors (``solve`` ignores the model it is handed)
    start = chord.init(lambda Y, _: (Y, None), guess_, None, {}, jax.eval_shape(lambda: guess_), None, frozenset())
    residual_ = residual_of(f_)
    sol = optx.root_find(residual_, chord, guess_, args=args_, options=dict(init_state=start), throw=False,
                         max_steps=max_steps)
    return differentiable_root(residual_of(f), sol.value, args, root_finder), sol, residual_, solve
