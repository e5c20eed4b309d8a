"""stiffcore's stiff methods for ``scipy.integrate.solve_ivp``.

Importing this module registers the method strings (catalogue display names) with
``solve_ivp`` without touching SciPy's own names::

    import stiffcore.adapters.scipy
    solve_ivp(fun, t_span, y0, method="Rodas5P", rtol=1e-8, atol=1e-12, jac=jac)
    solve_ivp(fun, t_span, y0, method="BackwardEuler", first_step=1e-3, adaptive=False)

The classes (``RadauIIA5``, ``Rodas5P``, ... , ``Reversible``) can be passed as
``method=`` too.  Methods with an embedded error estimate step adaptively by default;
every method takes fixed steps with ``first_step=h, adaptive=False``.
"""

from __future__ import annotations

from stiffcore.catalogue import get_method, method_ids

from ._base import StiffSolver
from .reversible import Reversible
from .rosenbrock import Rosenbrock
from .runge_kutta import ExplicitRungeKutta, ImplicitRungeKutta
from .sensitivity import diagnose, sensitivity_on_steps, solve_ivp_sensitivity

#: The catalogue methods offered as solve_ivp methods (Reversible is added below).
SOLVER_IDS = tuple(method_ids(one_step=True, implicit=True))

_FAMILY_CLASS = {"rosenbrock": Rosenbrock, "explicit": ExplicitRungeKutta,
                 "diagonally_implicit": ImplicitRungeKutta, "fully_implicit": ImplicitRungeKutta}
_CLASSES: dict = {}


def solver_class(method) -> type:
    """The SciPy solver class of a one-step catalogue method (id or display name)."""
    if method == "Reversible":
        return Reversible
    m = get_method(method)
    if m.family not in _FAMILY_CLASS:
        raise ValueError(f"{m.id!r} is a {m.family} method; SciPy already has BDF (method='BDF')")
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
globals().update(SOLVERS)  # RadauIIA5, Rodas5P, ... importable from this module


def register() -> list:
    """Make the method strings known to ``solve_ivp`` (never replacing SciPy's own)."""
    from scipy.integrate._ivp import ivp

    added = [name for name in SOLVERS if name not in ivp.METHODS]
    for name in added:
        ivp.METHODS[name] = SOLVERS[name]
    return added


register()

__all__ = ["SOLVERS", "SOLVER_IDS", "StiffSolver", "diagnose", "register", "sensitivity_on_steps", "solve_ivp_sensitivity", "solver_class", *SOLVERS]
