"""stiffcore's stiff methods as diffrax solvers.

::

    import diffrax
    from stiffcore.adapters.diffrax import RadauIIA5, Rodas5P

    sol = diffrax.diffeqsolve(diffrax.ODETerm(f), Rodas5P(), t0, t1, dt0, y0, args=args,
                              stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-10))

Display names are shared with the SciPy adapter; coefficients come from the catalogue.
Every solver is an equinox module and works under ``jax.jit``, ``jax.vmap`` and
``jax.grad``; implicit stages are differentiated by the implicit function theorem
(Optimistix's implicit adjoint), so gradients through diffrax's default adjoint are those
of the discrete solution.  ``Reversible(base)`` with ``adjoint=ReversibleAdjoint()`` gives
exact gradients of the reversible discrete map in memory flat in the number of steps.
"""

from __future__ import annotations

import diffrax

from stiffcore.catalogue import get_method

from ..backends import DIFFRAX_NATIVE as NATIVE  # diffrax's own solvers, by catalogue id (checked too)
from .adjoint import ReversibleAdjoint
from .linear_solvers import SparseLU, detect_sparsity
from .multistep import FBDF, QNDF, VariableOrderSolver
from .reversible import Reversible
from .solvers import (
    ROS3P, SDIRK2, SOLVERS, TRBDF2, BackwardEuler, GaussLegendre4, GaussLegendre6, ImplicitMidpoint,
    ImplicitRungeKuttaSolver, LobattoIIIC2, RadauIIA3, RadauIIA5, Rodas4, Rodas5P, Rosenbrock23, RosenbrockSolver,
    Trapezoid, solver_class,
)

#: The catalogue methods offered as diffrax solvers: the implicit one-step methods that
#: diffrax does not ship (it has Kvaerno3/4/5).
SOLVER_IDS = tuple(cls.method_id for cls in SOLVERS.values())


def diffrax_solver(method_id: str) -> type:
    """The diffrax solver class of a catalogue method: ours, else diffrax's own (Kvaerno3/4/5)."""
    m = get_method(method_id)
    if m.name in SOLVERS:
        return SOLVERS[m.name]
    if m.id in NATIVE:
        return getattr(diffrax, NATIVE[m.id])
    offered = dict.fromkeys([*SOLVER_IDS, *NATIVE])
    raise ValueError(f"{m.id!r} has no diffrax solver; these methods do: {', '.join(offered)}")

__all__ = [
    "SparseLU", "detect_sparsity", "NATIVE", "SOLVERS", "SOLVER_IDS", "diffrax_solver", "solver_class",
    "ImplicitRungeKuttaSolver",
    "RosenbrockSolver", "Reversible", "ReversibleAdjoint", "FBDF", "QNDF", "VariableOrderSolver",
    "BackwardEuler", "GaussLegendre4", "GaussLegendre6", "ImplicitMidpoint", "LobattoIIIC2", "RadauIIA3",
    "RadauIIA5", "ROS3P", "Rodas4", "Rodas5P", "Rosenbrock23", "SDIRK2", "TRBDF2", "Trapezoid",
]
