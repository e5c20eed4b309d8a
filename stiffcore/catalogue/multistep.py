"""Backward differentiation formulas BDF1..BDF5, derived from their definition.

BDF-k: ``sum_{j=1}^{k} (1/j) nabla^j y_{n+k} = h f_{n+k}`` (Hairer, Norsett & Wanner I,
III.1, eq. 1.22'), so rho is built from binomial expansions of the backward
differences and sigma = zeta^k.
"""

from __future__ import annotations

from math import comb

import numpy as np

from .method import Method
from .tableau import MultistepCoefficients


def bdf_coefficients(k: int) -> MultistepCoefficients:
    """rho and sigma (ascending in zeta, so index j multiplies y_{n+j}) of BDF-k."""
    if not 1 <= k <= 6:
        raise ValueError(f"BDF-{k} is not zero-stable; k must be in 1..6")
    rho = np.zeros(k + 1)
    for j in range(1, k + 1):
        # nabla^j y_{n+k} = sum_i (-1)^i C(j, i) y_{n+k-i}
        for i in range(j + 1):
            rho[k - i] += (-1) ** i * comb(j, i) / j
    sigma = np.zeros(k + 1)
    sigma[k] = 1.0
    return MultistepCoefficients(rho=rho, sigma=sigma)


METHODS = tuple(
    Method(f"bdf{k}", f"BDF{k}", k, bdf_coefficients(k),
           "Curtiss & Hirschfelder (1952); Hairer, Norsett & Wanner I, III.1")
    for k in range(1, 6)
)
