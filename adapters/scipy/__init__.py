"""stiffcore's stiff methods for ``scipy.integrate.solve_ivp``.

Importing this module registers the method strings (catalogue display names) with
``solve_ivp`` without touching SciPy's own names::

    import stiffcore.adapters.scipy
    solve_ivp(fun, t_span, y0, method="Rodas5P", rtol=1e-8, atol=1e-12, jac=jac)
    solve_ivp(fun, t_span, y0, method="BackwardEuler", first_step=1e-3, adaptive=False)
    solve_ivp(fun, t_span, y0, method="QNDF", rtol=1e-6, atol=1e-10, jac=jac)  # variable order 1..5

The classes (``RadauIIA5``, ``Rodas5P``, ... , ``Reversible``) can be passed as
``method=`` too.  Methods with an embedded error estimate step adaptively by default;
every method takes fixed steps with ``first_step=h, adaptive=False``.
"""

from __future__ import annotations

import threading

from stiffcore.catalogue import get_method, method_ids
from stiffcore.report import did_you_mean

from ._base import StiffSolver
from .multistep import FBDF, QNDF, VariableOrderSolver
from .reversible import Reversible
from .rosenbrock import Rosenbrock
from .runge_kutta import ExplicitRungeKutta, ImplicitRungeKutta
from .sensitivity import diagnose, sensitivity_on_steps, solve_ivp_sensitivity

#: The catalogue methods offered as solve_ivp methods (Reversible is added below).
SOLVER_IDS = tuple(method_ids(one_step=True, implicit=True))

_FAMILY_CLASS = {"rosenbrock": Rosenbrock, "explicit": ExplicitRungeKutta,
                 "diagonally_implicit": ImplicitRungeKutta, "fully_implicit": ImplicitRungeKutta}
_CLASSES: dict = {}
#: The variable-order multistep solvers, by catalogue id.
VARIABLE_ORDER_CLASSES = {"fbdf": FBDF, "qndf": QNDF}


def solver_class(method) -> type:
    """The SciPy solver class of a one-step catalogue method (id or display name)."""
    if method == "Reversible":
        return Reversible
    if isinstance(method, str) and method.lower() in VARIABLE_ORDER_CLASSES:
        return VARIABLE_ORDER_CLASSES[method.lower()]
    m = get_method(method)
    if m.family not in _FAMILY_CLASS:
        raise ValueError(f"{m.id!r} is a fixed-order multistep formula; the variable-order solvers are "
                         "method='FBDF' and 'QNDF' (and SciPy's own 'BDF')")
    if m.id not in _CLASSES:
        cls = _FAMILY_CLASS[m.family]
        stab = m.stability.classify()
        stability = ", ".join(filter(None, ["A-stable" if stab.a_stable else "not A-stable",
                                            "L-stable" if stab.l_stable else "",
                                            f"|R'(z)| ~ |z|^{stab.decay_exponent:g}"]))
        adaptive = m.steps_summary("first_step=h, adaptive=False")
        doc = (f"{m.name}: {m.family.replace('_', ' ')} method of order {m.order}, {m.stages} stages "
               f"({stability}); {adaptive}.\n\nReference: {m.reference}.\n\n" + (cls.__doc__ or ""))
        _CLASSES[m.id] = type(m.name, (cls,), {"method_id": m.id, "__doc__": doc, "__module__": __name__})
    return _CLASSES[m.id]


SOLVERS = {get_method(mid).name: solver_class(mid) for mid in SOLVER_IDS}
SOLVERS["Reversible"] = Reversible
SOLVERS.update(FBDF=FBDF, QNDF=QNDF)
globals().update(SOLVERS)  # RadauIIA5, Rodas5P, ... importable from this module


class MethodTable(dict):
    """``solve_ivp``'s method table, printing a "did you mean" for a mistyped string.

    ``solve_ivp`` rejects an unknown string with "`method` must be one of {METHODS}": the
    table remembers (per thread) the last string it was asked for and did not hold, and its
    repr lists the names followed by the closest one.  Lookups behave as a plain dict's."""

    _missed = threading.local()

    def __contains__(self, key) -> bool:
        found = dict.__contains__(self, key)
        if isinstance(key, str):
            MethodTable._missed.name = None if found else key
        return found

    def __repr__(self) -> str:
        names = "{" + ", ".join(map(repr, self)) + "}"
        missed = getattr(MethodTable._missed, "name", None)
        hint = did_you_mean(missed, self) if missed is not None else ""
        return f"{names} ({hint.strip()})" if hint else names


def register() -> list:
    """Make the method strings known to ``solve_ivp`` (never replacing SciPy's own), in a
    table that suggests the closest name for a mistyped one."""
    from scipy.integrate._ivp import ivp

    if not isinstance(ivp.METHODS, MethodTable):
        ivp.METHODS = MethodTable(ivp.METHODS)
    added = [name for name in SOLVERS if name not in ivp.METHODS]
    for name in added:
        ivp.METHODS[name] = SOLVERS[name]
    return added


register()

__all__ = ["MethodTable", "VariableOrderSolver", "SOLVERS", "SOLVER_IDS", "StiffSolver", "diagnose", "register", "sensitivity_on_steps",
           "solve_ivp_sensitivity", "solver_class", *SOLVERS]
