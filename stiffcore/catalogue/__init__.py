"""The method catalogue: every method as data, looked up by id or display name.

This is the single source of truth for coefficients.  Adapters read
:func:`get_method` and turn the coefficients into steps in their framework; they
never hold their own copy.
"""

from __future__ import annotations

from ..report import did_you_mean
from . import multistep, rosenbrock, runge_kutta
from .method import FAMILIES, Method
from .multistep import VARIABLE_ORDER, VariableOrderMethod
from .tableau import ButcherTableau, MultistepCoefficients, RosenbrockTableau

__all__ = [
    "FAMILIES", "Method", "ButcherTableau", "RosenbrockTableau", "MultistepCoefficients",
    "METHODS", "UnknownMethodError", "get_method", "method_ids", "VARIABLE_ORDER", "VariableOrderMethod",
    "get_variable_order",
]

METHODS: dict[str, Method] = {m.id: m for m in runge_kutta.METHODS + rosenbrock.METHODS + multistep.METHODS}
_BY_NAME = {m.name.lower(): m for m in METHODS.values()}


class UnknownMethodError(ValueError):
    """An id or display name that is not in the catalogue."""


def get_method(key: str | Method) -> Method:
    """The catalogue entry for a snake_case id (``"radau_iia5"``) or display name (``"RadauIIA5"``)."""
    if isinstance(key, Method):
        return key
    if not isinstance(key, str):
        raise TypeError(f"a method is named by a string id, got {type(key).__name__}: {key!r}")
    method = METHODS.get(key) or _BY_NAME.get(key.lower())
    if method is None:
        hint = did_you_mean(key, list(METHODS) + [m.name for m in METHODS.values()], cutoff=0.5)
        raise UnknownMethodError(f"unknown method {key!r}.{hint} Valid ids: {', '.join(METHODS)}")
    return method


def method_ids(family: str | None = None, *, one_step: bool | None = None, implicit: bool | None = None) -> list[str]:
    """Catalogue ids, optionally filtered by family, by being one-step and by being implicit.

    ``method_ids(one_step=True, implicit=True)`` is the set every adapter offers as solvers."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families are {', '.join(FAMILIES)}")
    return [
        m.id for m in METHODS.values()
        if (family is None or m.family == family) and (one_step is None or m.is_one_step == one_step)
        and (implicit is None or m.is_implicit == implicit)
    ]


def get_variable_order(key: str | VariableOrderMethod) -> VariableOrderMethod:
    """The variable-order family ``"fbdf"``/``"FBDF"`` or ``"qndf"``/``"QNDF"``."""
    if isinstance(key, VariableOrderMethod):
        return key
    if isinstance(key, str):
        for family in VARIABLE_ORDER.values():
            if key.lower() in (family.id, family.name.lower()):
                return family
    names = ", ".join(f.name for f in VARIABLE_ORDER.values())
    raise UnknownMethodError(f"unknown variable-order method {key!r}; the variable-order methods are {names}")
