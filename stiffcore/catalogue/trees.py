"""Rooted trees and the Runge-Kutta order conditions they index (Butcher 2016, ch. 3).

A tree is a sorted tuple of its children's trees (the leaf is ``()``).  A method with
matrix ``A`` has order ``p`` when ``b . Phi(t) = 1 / gamma(t)`` for every tree with at most
``p`` vertices; a continuous extension ``b(theta)`` has order ``p`` when
``b(theta) . Phi(t) = theta^|t| / gamma(t)`` for the same trees and every theta (Hairer,
Norsett & Wanner I, sec. II.6).  Used to derive continuous extensions
(:func:`stiffcore.catalogue.runge_kutta.bounded_continuous_extension`) and by the tests.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def trees(order: int) -> tuple:
    """Rooted trees with ``order`` vertices (1, 1, 2, 4, 9, 20, ... of them)."""
    if order == 1:
        return ((),)
    found = set()
    for smaller in trees(order - 1):
        found.update(_graft(smaller))
    return tuple(sorted(found))


def _graft(tree: tuple):
    """Every tree obtained by adding one leaf somewhere in ``tree``."""
    yield tuple(sorted(tree + ((),)))
    for i, child in enumerate(tree):
        for grown in _graft(child):
            yield tuple(sorted(tree[:i] + (grown,) + tree[i + 1:]))


def size(tree: tuple) -> int:
    """|t|, the number of vertices."""
    return 1 + sum(size(c) for c in tree)


def density(tree: tuple) -> Fraction:
    """gamma(t) = |t| * prod gamma(children)."""
    out = Fraction(size(tree))
    for c in tree:
        out *= density(c)
    return out


def stage_weights(a: np.ndarray, tree: tuple) -> np.ndarray:
    """Phi_i(t) = prod over children of (A Phi(child))_i."""
    out = np.ones(a.shape[0])
    for c in tree:
        out = out * (a @ stage_weights(a, c))
    return out
