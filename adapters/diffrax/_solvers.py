"""Catalogue methods as diffrax solvers (equinox modules).

One class per family, subclassed per method with its catalogue id: implicit Runge-Kutta
methods are ``AbstractImplicitSolver``s with diffrax's ``root_finder`` convention (a
``VeryChord`` whose tolerances default to the step-size controller's, as Kvaerno's do);
Rosenbrock methods need no root finder.  Methods with an embedded estimate are also
``AbstractAdaptiveSolver``s (usable with ``PIDController``); the others take fixed steps.
States of any PyTree structure are raveled to one vector inside a step.  The solver state
carries f(t, y) at the step's end (first same as last); dense output is the cubic Hermite
interpolant.
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx
from jax.flatten_util import ravel_pytree

from stiffcore.catalogue import get_method

from ._steps import implicit_rk_step, rosenbrock_step


def _flat_field(terms, args, y0):
    """f on raveled states, and the unravel function."""
    flat, unravel = ravel_pytree(y0)

    def f(t, v):
        return ravel_pytree(terms.vf(t, unravel(v), args))[0].astype(flat.dtype)

    return f, flat, unravel


class _CatalogueSolver(diffrax.AbstractSolver):
    """Shared by every catalogue solver: orders from the catalogue, FSAL state, Hermite output."""

    method_id: ClassVar[str] = ""
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return get_method(self.method_id).order

    def error_order(self, terms):
        method = get_method(self.method_id)
        return method.error_order + 1 if method.has_error_estimate else None

    def init(self, terms, t0, t1, y0, args):
        f, flat, _ = _flat_field(terms, args, y0)
        return f(t0, flat)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f, flat, unravel = _flat_field(terms, args, y0)
        f0 = jax.lax.cond(made_jump, lambda: f(t0, flat), lambda: solver_state)
        h = jnp.asarray(t1 - t0, dtype=flat.dtype)
        y1, error, result = self._advance(f, jnp.asarray(t0, dtype=flat.dtype), flat, h, f0)
        f1 = f(t1, y1)
        k = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), unravel(h * f0), unravel(h * f1))
        dense_info = dict(y0=y0, y1=unravel(y1), k=k)
        return unravel(y1), None if error is None else unravel(error), dense_info, f1, diffrax.RESULTS.promote(result)

    def _advance(self, f, t0, y0, h, f0):
        raise NotImplementedError


class ImplicitRungeKuttaSolver(_CatalogueSolver, diffrax.AbstractImplicitSolver):
    """An implicit Runge-Kutta method from the catalogue (fixed steps without an estimate)."""

    root_finder: optx.AbstractRootFinder = diffrax.with_stepsize_controller_tols(diffrax.VeryChord)()
    root_find_max_steps: int = 10

    def _advance(self, f, t0, y0, h, f0):
        y1, error, result = implicit_rk_step(get_method(self.method_id), f, t0, y0, h, f0, self.root_finder,
                                             self.root_find_max_steps)
        if error is not None:
            # as diffrax's own implicit solvers do: a failed root find rejects the step (an
            # infinite error estimate), and the controller retries with a smaller one
            failed = result != optx.RESULTS.successful
            error = jnp.where(failed, jnp.inf, error)
            result = optx.RESULTS.where(failed, optx.RESULTS.successful, result)
        return y1, error, result


class RosenbrockSolver(_CatalogueSolver):
    """A Rosenbrock method from the catalogue: one LU of I/(h gamma) - J per step."""

    def _advance(self, f, t0, y0, h, f0):
        y1, error = rosenbrock_step(get_method(self.method_id), f, t0, y0, h, f0)
        finite = jnp.all(jnp.isfinite(y1))
        if error is not None:  # non-finite stages reject the step; without an estimate they fail the solve
            return y1, jnp.where(finite, error, jnp.inf), optx.RESULTS.successful
        return y1, error, optx.RESULTS.where(finite, optx.RESULTS.successful, optx.RESULTS.nonfinite)


def solver_class(method_id: str) -> type:
    """The diffrax solver class of an implicit one-step catalogue method."""
    m = get_method(method_id)
    if m.family == "rosenbrock":
        bases = (RosenbrockSolver,)
    elif m.family in ("diagonally_implicit", "fully_implicit"):
        bases = (ImplicitRungeKuttaSolver,)
    else:
        raise ValueError(f"{m.id!r} is a {m.family} method; diffrax solvers here are the implicit one-step methods")
    if m.has_error_estimate:
        bases = bases + (diffrax.AbstractAdaptiveSolver,)
    steps = (f"adaptive with its embedded estimate of order {m.embedded_order}" if m.has_error_estimate
             else "fixed steps only (diffrax.ConstantStepSize)")
    doc = (f"{m.name} ({m.family.replace('_', ' ')}, order {m.order}, {m.stages} stages); {steps}.\n\n"
           f"Reference: {m.reference}.\n\n" + (bases[0].__doc__ or ""))
    namespace = {"method_id": m.id, "__doc__": doc, "__module__": "stiffcore.adapters.diffrax"}
    return type(bases[0])(m.name, bases, namespace)
