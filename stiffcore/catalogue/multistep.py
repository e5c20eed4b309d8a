"""Backward differentiation formulas BDF1..BDF5 and the numerical differentiation formulas
NDF1..NDF4, derived from their definitions, and the two variable-order families built on them.

BDF-k: ``sum_{m=1}^{k} (1/m) nabla^m y_{n+1} = h f_{n+1}`` (Hairer, Norsett & Wanner I,
III.1, eq. 1.22'), so rho is built from binomial expansions of the backward differences and
sigma = zeta^k.  NDF-k (Klopfenstein 1971; Shampine & Reichelt 1997, sec. 2.3) adds
``- kappa_k gamma_k nabla^{k+1} y_{n+1}`` with gamma_k = sum_{j<=k} 1/j: the same order, a
smaller error constant, at a small cost in A(alpha) (NDF3..4) -- a (k+1)-step formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import comb

import numpy as np

from .method import Method
from .tableau import MultistepCoefficients

#: Highest order of the variable-order families: BDF6 is zero-stable but its A(alpha) of
#: 17.8 degrees makes it useless on stiff problems (Hairer & Wanner II, V.2).
MAX_ORDER = 5

#: Klopfenstein-Shampine kappa_k of NDF1..NDF5 (Shampine & Reichelt 1997, Table 1): chosen
#: for a smaller truncation error at an A(alpha) near BDF's; kappa_5 = 0 (NDF5 is BDF5).
NDF_KAPPA = (-0.1850, -1 / 9, -0.0823, -0.0415, 0.0)


def _nabla(k: int, steps: int) -> np.ndarray:
    """nabla^k y_{n+steps} as coefficients of y_n .. y_{n+steps} (ascending)."""
    out = np.zeros(steps + 1)
    for i in range(k + 1):
        out[steps - i] += (-1) ** i * comb(k, i)
    return out


def ndf_coefficients(k: int, kappa: float = 0.0) -> MultistepCoefficients:
    """rho and sigma (ascending in zeta, index j multiplies y_{n+j}) of NDF-k with ``kappa``;
    kappa = 0 gives BDF-k (k steps), kappa != 0 a (k + 1)-step formula."""
    if not 1 <= k <= 6:
        raise ValueError(f"BDF-{k} is not zero-stable; k must be in 1..6")
    steps = k if kappa == 0 else k + 1
    rho = sum(_nabla(m, steps) / m for m in range(1, k + 1))
    if kappa:
        rho = rho - kappa * sum(1 / j for j in range(1, k + 1)) * _nabla(k + 1, steps)
    sigma = np.zeros(steps + 1)
    sigma[steps] = 1.0
    return MultistepCoefficients(rho=rho, sigma=sigma)


def bdf_coefficients(k: int) -> MultistepCoefficients:
    """rho and sigma (ascending in zeta, so index j multiplies y_{n+j}) of BDF-k."""
    return ndf_coefficients(k, 0.0)


_NDF_REFERENCE = "Klopfenstein (1971); Shampine & Reichelt (1997), SIAM J. Sci. Comput. 18(1), sec. 2.3"

METHODS = tuple(
    Method(f"bdf{k}", f"BDF{k}", k, bdf_coefficients(k),
           "Curtiss & Hirschfelder (1952); Hairer, Norsett & Wanner I, III.1")
    for k in range(1, MAX_ORDER + 1)
) + tuple(
    Method(f"ndf{k}", f"NDF{k}", k, ndf_coefficients(k, NDF_KAPPA[k - 1]), _NDF_REFERENCE)
    for k in range(1, MAX_ORDER) if NDF_KAPPA[k - 1]
)


@dataclass(frozen=True)
class VariableOrderMethod:
    """A variable-step, variable-order family of orders 1..``max_order`` in the quasi-constant
    step-size form (Shampine & Reichelt 1997, sec. 2.3): order k solves

        (1 - kappa_k) gamma_k (y_{n+1} - y^(0)_{n+1}) + sum_{m=1}^{k} gamma_m nabla^m y_n = h f_{n+1},

    with the predictor y^(0)_{n+1} = sum_{m=0}^{k} nabla^m y_n.  The step arithmetic on the
    difference table is :mod:`stiffcore.multistep`; this record is the data.
    """

    id: str
    name: str
    kappa: tuple
    reference: str

    @property
    def max_order(self) -> int:
        return len(self.kappa)

    @property
    def members(self) -> tuple[str, ...]:
        """Catalogue ids of the constant-step formula of each order 1..max_order."""
        return tuple(f"ndf{k}" if kap else f"bdf{k}" for k, kap in enumerate(self.kappa, start=1))

    @cached_property
    def gamma(self) -> np.ndarray:
        """gamma_k = sum_{j<=k} 1/j for k = 0..max_order + 1 (gamma_0 = 0)."""
        return np.concatenate([[0.0], np.cumsum(1 / np.arange(1, self.max_order + 2))])

    @cached_property
    def kappa_padded(self) -> np.ndarray:
        """kappa_k for k = 0..max_order + 1 (0 outside 1..max_order)."""
        return np.concatenate([[0.0], self.kappa, [0.0]])

    @cached_property
    def alpha(self) -> np.ndarray:
        """alpha_k = (1 - kappa_k) gamma_k, the corrector's leading coefficient (index k)."""
        return (1 - self.kappa_padded) * self.gamma

    @cached_property
    def error_constants(self) -> np.ndarray:
        """C_k = kappa_k gamma_k + 1/(k + 1): the local error of order k is C_k nabla^{k+1} y_{n+1}
        (Shampine & Reichelt 1997, eq. (2))."""
        return self.kappa_padded * self.gamma + 1 / np.arange(1, self.max_order + 3)


VARIABLE_ORDER = {
    "fbdf": VariableOrderMethod("fbdf", "FBDF", (0.0,) * MAX_ORDER,
                                "BDF1..5 in the quasi-constant step-size form: Shampine & Reichelt (1997), "
                                "sec. 2.3; Byrne & Hindmarsh (1975)"),
    "qndf": VariableOrderMethod("qndf", "QNDF", NDF_KAPPA, _NDF_REFERENCE),
}
