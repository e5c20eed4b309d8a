"""diffrax's own stiff solvers as a stiffcore backend (announced in
:mod:`stiffcore.adapters.backends`, entry point ``diffrax``): the same hooks as
:mod:`.backend`, run on ``diffrax.ImplicitEuler`` (backward Euler) and
``diffrax.Kvaerno3/4/5``, so the conformance suite checks their gradient decay too."""

from __future__ import annotations

from .backend import install, make_hooks

one_step_gradient, n_step_gradient, _ = make_hooks(native=True)

__all__ = ["install", "n_step_gradient", "one_step_gradient"]
