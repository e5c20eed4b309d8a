"""diffrax's own stiff solvers as a stiffcore backend (entry point ``diffrax``): the same
hooks as :mod:`.backend`, run on ``diffrax.ImplicitEuler`` (backward Euler) and
``diffrax.Kvaerno3/4/5``, so the conformance suite checks their gradient decay too."""

from __future__ import annotations

from stiffcore.plugins import Backend, hookimpl

from . import NATIVE
from .backend import make_hooks


@hookimpl
def stiffcore_backend() -> Backend:
    one, n, _ = make_hooks(native=True)
    return Backend(name="diffrax", methods=tuple(NATIVE), one_step_gradient=one, n_step_gradient=n,
                   requires=("jax", "diffrax", "equinox"),
                   description="diffrax's own ImplicitEuler and Kvaerno3/4/5, checked against the core")
