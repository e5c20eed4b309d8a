"""POLLU: the air pollution model of Verwer (1994), 20 species and 25 reactions.

The rates, right-hand side, constants, initial values and reference solution are read
from ``pollu.json`` (the IVP test set's data); the mass-action network is parsed from
the rate and right-hand-side expressions, so the data file is the single source.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np

from .base import MassActionNetwork, Problem

_DATA = json.loads(resources.files(__package__).joinpath("pollu.json").read_text())


def _parse(data: dict) -> MassActionNetwork:
    n = len(data["species"])
    reactants = []
    for j, expr in enumerate(data["rates"], start=1):
        lhs, rhs = expr.split("=")
        factors = rhs.split("*")
        if lhs != f"r{j}" or factors[0] != f"k{j}":
            raise ValueError(f"POLLU rate {j} is not of the form r{j}=k{j}*...: {expr!r}")
        reactants.append(tuple(int(f[1:]) - 1 for f in factors[1:]))
    stoich = np.zeros((n, len(reactants)))
    for i, expr in enumerate(data["rhs"]):
        lhs, rhs = expr.split("=")
        if lhs != f"f{i + 1}":
            raise ValueError(f"POLLU right-hand side {i + 1} is out of order: {expr!r}")
        for sign, coeff, j in re.findall(r"([+-]?)(?:(\d+)\*)?r(\d+)", rhs):
            stoich[i, int(j) - 1] += (-1 if sign == "-" else 1) * (int(coeff) if coeff else 1)
    return MassActionNetwork(n, reactants, stoich)


NETWORK = _parse(_DATA)

POLLU = Problem(
    name="pollu",
    description=_DATA["problem"],
    y0=np.array(_DATA["y0"], dtype=float),
    t_span=tuple(_DATA["t_span"]),
    params=np.array(list(_DATA["rate_constants"].values()), dtype=float),
    param_names=tuple(_DATA["rate_constants"]),
    species=tuple(_DATA["species"]),
    rhs=NETWORK.rhs,
    jac=NETWORK.jac,
    jac_p=NETWORK.jac_p,
    reference=(_DATA["t_span"][1], np.array(_DATA["reference_t1"], dtype=float)),
    reference_note=_DATA["reference_note"],
)
