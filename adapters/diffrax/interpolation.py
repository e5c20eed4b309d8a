"""Output between step ends: the method's own continuous extension as a diffrax interpolation."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from stiffcore.reversible import reversible_output, reversible_output_slope


def _theta(t0, t, t1):
    """(t - t0) / (t1 - t0), and 0 with zero derivatives on a zero-length step (vmap pads with them)."""
    empty = t0 == t1
    return jnp.where(empty, 0, t - t0) / jnp.where(empty, 1, t1 - t0)


class PolynomialInterpolation(diffrax.AbstractLocalInterpolation):
    """``y(t0 + theta (t1 - t0)) = y0 + sum_k coeffs[k - 1] theta^k``, k = 1..degree.

    ``coeffs`` has the structure of ``y0`` with a leading axis of length degree; the
    adapters fill it from :func:`stiffcore.catalogue.dense.dense_matrix` (the collocation
    polynomial, Steinebach's Rosenbrock extension, or cubic Hermite)."""

    t0: jax.Array
    t1: jax.Array
    y0: PyTree
    coeffs: PyTree

    def _powers(self, t, leaf, derivative=False):
        """theta^k (or d/dt theta^k), k = 1..degree, by products: no 0 ** 0 in a derivative."""
        theta = _theta(self.t0, t, self.t1).astype(leaf.dtype)
        powers = jnp.cumprod(jnp.full(leaf.shape[0], theta))
        if not derivative:
            return powers
        k = jnp.arange(1, leaf.shape[0] + 1, dtype=leaf.dtype)
        span = jnp.where(self.t1 == self.t0, 1, self.t1 - self.t0).astype(leaf.dtype)
        return k * jnp.concatenate([jnp.ones(1, leaf.dtype), powers[:-1]]) / span

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jax.tree_util.tree_map(lambda a, b: a - b, self.evaluate(t1), self.evaluate(t0))
        return jax.tree_util.tree_map(lambda y, c: y + jnp.tensordot(self._powers(t0, c), c, axes=1),
                                      self.y0, self.coeffs)

    def derivative(self, t, left=True):
        del left
        return jax.tree_util.tree_map(lambda c: jnp.tensordot(self._powers(t, c, derivative=True), c, axes=1),
                                      self.coeffs)


class ReversibleInterpolation(diffrax.AbstractLocalInterpolation):
    """Output inside a :class:`~adapters.diffrax.reversible.Reversible` step: the base solver's
    own interpolation ``base`` of its forward step from z0, shifted onto y by
    :func:`stiffcore.reversible.reversible_output` (``gap`` is y0 - z0).  Exact at both step
    ends and as accurate between them as the base's interpolation."""

    t0: jax.Array
    t1: jax.Array
    base: diffrax.AbstractLocalInterpolation
    gap: PyTree
    coupling: jax.Array

    def evaluate(self, t0, t1=None, left=True):
        if t1 is not None:
            end, start = self.evaluate(t1, left=left), self.evaluate(t0, left=left)
            return jax.tree_util.tree_map(lambda a, b: a - b, end, start)
        theta = _theta(self.t0, t0, self.t1)
        return jax.tree_util.tree_map(lambda p, g: reversible_output(p, theta.astype(g.dtype), g, self.coupling),
                                      self.base.evaluate(t0, left=left), self.gap)

    def derivative(self, t, left=True):
        h = jnp.where(self.t1 == self.t0, 1, self.t1 - self.t0)
        return jax.tree_util.tree_map(lambda p, g: reversible_output_slope(p, h.astype(g.dtype), g, self.coupling),
                                      self.base.derivative(t, left=left), self.gap)
