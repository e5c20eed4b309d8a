"""ROBER: Robertson's autocatalytic reaction (Robertson 1966; Hairer & Wanner II, IV.1)."""

from __future__ import annotations

import numpy as np

from .base import MassActionNetwork, Problem

# A -> B (k1);  2B -> B + C (k2);  B + C -> A + C (k3)
NETWORK = MassActionNetwork(
    3,
    reactants=[(0,), (1, 1), (1, 2)],
    stoichiometry=[[-1, 0, 1], [1, -1, -1], [0, 1, 0]],
)

ROBER = Problem(
    name="rober",
    description="Robertson's chemical kinetics, y0 = [1, 0, 0], t in [0, 1e5]",
    y0=np.array([1.0, 0.0, 0.0]),
    t_span=(0.0, 1e5),
    params=np.array([0.04, 3e7, 1e4]),
    param_names=("k1", "k2", "k3"),
    species=("A", "B", "C"),
    rhs=NETWORK.rhs,
    jac=NETWORK.jac,
    jac_p=NETWORK.jac_p,
    reference=(1e5, np.array([0.017865921142100075, 7.274751468436545e-08, 0.9821340061103889])),
    reference_note=("SciPy Radau at rtol 1e-13, atol (1e-15, 1e-23, 1e-15), analytic Jacobian; "
                    "agrees with LSODA and BDF at rtol 1e-13 to 1e-11 relative"),
)
