"""Stiff test problems, written once for numpy, torch and jax arrays.

``ROBER``, ``POLLU``, ``VANDERPOL`` and :func:`test_equation`; rate constants are the
problems' parameters, so gradients with respect to k (or log k) are meaningful.
"""

from __future__ import annotations

from ..report import did_you_mean
from .base import MassActionNetwork, Problem
from .linear import test_equation
from .pollu import POLLU
from .rober import ROBER
from .vanderpol import VANDERPOL

PROBLEMS = {p.name: p for p in (ROBER, POLLU, VANDERPOL)}

__all__ = ["Problem", "MassActionNetwork", "ROBER", "POLLU", "VANDERPOL", "PROBLEMS", "get_problem",
           "test_equation"]


def get_problem(name: str) -> Problem:
    """A built-in problem by name, or a user model as ``module:function`` (see :mod:`.user`)."""
    if ":" in name:
        from .user import load_user_problem

        return load_user_problem(name)
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}.{did_you_mean(name, PROBLEMS)} Known problems: {', '.join(PROBLEMS)}"
                         " (or a model of your own as module:function)")
    return PROBLEMS[name]
