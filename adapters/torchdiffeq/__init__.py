"""stiffcore's stiff methods for torchdiffeq.

Importing this module (or ``stiffcore.install()``) adds the catalogue's snake_case ids
to torchdiffeq's solver table, next to torchdiffeq's own names, which stay untouched::

    import stiffcore.adapters.torchdiffeq
    from torchdiffeq import odeint
    y = odeint(func, y0, t, method="rodas5p", rtol=1e-6, atol=1e-10)
    y = odeint(func, y0, t, method="backward_euler", options={"step_size": 0.01})
    y = odeint(func, y0, t, method="reversible", options={"base": "kvaerno5", "coupling": 0.999})
    y = odeint(func, y0, t, method="rodas5p", options={"compile_step": True})   # torch.compile'd steps

With torchode installed the adaptive methods are registered there too
(``torchode.solve_ivp(f, y0, t_eval, method="radau_iia5")``, see :mod:`.torchode`).

Backpropagating through ``odeint`` gives the exact derivative of the discrete solution
(implicit stages by the implicit function theorem).  :func:`odeint_reversible` runs the
reversible method with a backward pass whose memory does not grow with the step count.
"""

from __future__ import annotations

import functools
import importlib
import inspect

from stiffcore.catalogue import get_method, method_ids
from stiffcore.report import did_you_mean

from ._compiled import CompileStepUnavailable
from ._solver import StiffSolver
from .multistep import MULTISTEP_SOLVERS
from .reversible import ReversibleSolver, odeint_reversible

#: The catalogue methods offered as torchdiffeq method strings, plus "reversible".
SOLVER_IDS = tuple(method_ids(one_step=True, implicit=True))


def _solver_class(method_id: str) -> type:
    m = get_method(method_id)
    adaptive = m.steps_summary("options={'step_size': h}")
    doc = (f"{m.name} ({m.family.replace('_', ' ')}, order {m.order}, {m.stages} stages); {adaptive}.\n\n"
           f"Reference: {m.reference}.\n\n" + (StiffSolver.__doc__ or ""))
    return type(f"{m.name}Solver", (StiffSolver,), {"method_id": m.id, "__doc__": doc, "__module__": __name__})


SOLVERS = {mid: _solver_class(mid) for mid in SOLVER_IDS}
SOLVERS.update(MULTISTEP_SOLVERS)
SOLVERS["reversible"] = ReversibleSolver


def register() -> list:
    """Add the method strings to ``torchdiffeq``'s table (used by ``odeint`` and
    ``odeint_adjoint``), never replacing its own, and to torchode's when it is installed;
    returns the torchdiffeq names added."""
    from torchdiffeq._impl.odeint import SOLVERS as TABLE

    from .torchode import register as register_torchode

    added = [name for name in SOLVERS if name not in TABLE]
    for name in added:
        TABLE[name] = SOLVERS[name]
    for name in ("torchdiffeq._impl.odeint", "torchdiffeq._impl.adjoint"):  # both check the method
        module = importlib.import_module(name)  # (the package's attribute `odeint` is the function)
        module._check_inputs = _with_method_hint(module._check_inputs)
    register_torchode()
    return added


def _with_method_hint(check_inputs):
    """torchdiffeq's input check, adding the closest known name to its "Invalid method"
    error (``odeint`` and ``odeint_adjoint`` reject a mistyped string there)."""
    if getattr(check_inputs, "adds_method_hint", False):
        return check_inputs

    @functools.wraps(check_inputs)
    def check(*args, **kwargs):
        try:
            return check_inputs(*args, **kwargs)
        except ValueError as err:
            given = inspect.signature(check_inputs).bind(*args, **kwargs).arguments
            method, table = given.get("method"), given.get("SOLVERS", {})
            hint = did_you_mean(method, table) if isinstance(method, str) and method not in table else ""
            if not hint:
                raise
            raise ValueError(f"{err}{hint}") from None

    check.adds_method_hint = True
    return check


register()

__all__ = ["SOLVERS", "SOLVER_IDS", "StiffSolver", "ReversibleSolver", "odeint_reversible", "register",
           "CompileStepUnavailable"]
