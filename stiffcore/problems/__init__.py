"""Stiff test problems, written once for numpy, torch and jax arrays.

``ROBER``, ``POLLU``, ``VANDERPOL`` and :func:`test_equation`; rate constants are the
problems' parameters, so gradients with respect to k (or log k) are meaningful.
"""

from __future__ import annotations

import difflib

from .base import MassActionNetwork, Problem
from .linear import test_equation
from .pollu import POLLU
from .rober import ROBER
from .vanderpol import VANDERPOL

PROBLEMS = {p.name: p for p in (ROBER, POLLU, VANDERPOL)}

__all__ = ["Problem", "MassActionNetwork", "ROBER", "POLLU", "VANDERPOL", "PROBLEMS", "get_problem",
           "test_equation"]


def get_problem(name: str) -> Problem:
    if name not in PROBLEMS:
        close = difflib.get_close_matches(name, PROBLEMS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown problem {name!r}.{hint} Known problems: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]
