"""Catalogue methods as diffrax solvers (equinox modules), one class per method.

Implicit Runge-Kutta methods are ``AbstractImplicitSolver``s with diffrax's
``root_finder`` convention (a ``VeryChord`` whose tolerances default to the step-size
controller's, as Kvaerno's do); Rosenbrock methods need no root finder.  Methods with an
embedded estimate are also ``AbstractAdaptiveSolver``s (usable with ``PIDController``).
States of any PyTree structure are raveled to one vector inside a step.  The solver state
carries f(t, y) at the step's end (first same as last).  Output between step ends is the
method's own continuous extension (:mod:`stiffcore.catalogue.dense`): the collocation
polynomial for Radau IIA and Gauss-Legendre, Steinebach's for Rodas4/Rodas5P, cubic
Hermite for the rest.

Each class's docstring (order, stability, reference) is filled in from the catalogue.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jax.flatten_util import ravel_pytree

from stiffcore.catalogue import get_method
from stiffcore.catalogue.dense import (
    HERMITE, controls_interpolation, dense_matrix, interpolation_defects, interpolation_order,
)

from ._steps import LinearSolve, Step, implicit_rk_step, rosenbrock_step
from .interpolation import PolynomialInterpolation
from .linear_solvers import KRYLOV, SparseLU, check_pattern
from .root_finders import VeryChord, fixed_chord

#: The default linear solver: LU of the materialised Newton matrix (small systems).
DENSE_LU = lx.AutoLinearSolver(well_posed=None)


def _flat_field(terms, args, y0):
    """f on the solver's flat real state in diffrax's solver time, that state, and the
    function back to y0's structure.

    diffrax integrates t1 < t0 as t -> -t, wrapping the term (and BacksolveAdjoint wraps it in
    its adjoint system); the derivative in solver time is ``vf_prod`` with the control of one
    unit of it.  A complex state is carried as its real and imaginary parts, so Newton's
    Jacobians, the error norm and every method's arithmetic stay real (and f need not be
    holomorphic)."""
    flat, unravel_y = ravel_pytree(y0)
    # in the state's (real) precision: diffrax's strict dtype promotion refuses a float64
    # control against a float32 vector field
    real = jnp.finfo(flat.dtype).dtype
    unit = jax.tree_util.tree_map(lambda c: jnp.asarray(c, dtype=real), terms.contr(0.0, 1.0))
    if jnp.iscomplexobj(flat):
        n = flat.size
        as_real = lambda v: jnp.concatenate([v.real, v.imag])  # noqa: E731
        unravel = lambda w: unravel_y(jax.lax.complex(w[:n], w[n:]))  # noqa: E731
    else:
        as_real, unravel = (lambda v: v), unravel_y

    def f(t, v):
        return as_real(ravel_pytree(terms.vf_prod(t, unravel(v), args, unit))[0].astype(flat.dtype))

    return f, as_real(flat), unravel


def _check_ode_term(terms) -> None:
    """Refuse what is not an ODE (a ControlTerm's Brownian increments, a MultiTerm): these are
    ODE solvers, and diffrax's wrappers (backwards time, BacksolveAdjoint) hold an ODETerm."""
    inner = terms
    while not isinstance(inner, diffrax.ODETerm) and hasattr(inner, "term"):
        inner = inner.term
    if not isinstance(inner, diffrax.ODETerm):
        raise ValueError(f"stiffcore's diffrax solvers integrate ODEs: terms must be a diffrax.ODETerm, got "
                         f"{type(terms).__name__}")


class _CatalogueSolver(diffrax.AbstractSolver):
    """Shared by every catalogue solver: orders from the catalogue, FSAL state, dense output."""

    method_id: ClassVar[str] = ""
    # any term, as diffrax's own implicit solvers take (BacksolveAdjoint wraps the ODETerm);
    # init refuses what is not an ODE
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = PolynomialInterpolation
    #: With an own continuous extension and a step-size controller: accept a step only when the
    #: output between its ends (SaveAt(ts), dense) meets the tolerance too; one extra f per step.
    control_interpolation: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.method_id and issubclass(cls, diffrax.AbstractAdaptiveSolver) != get_method(cls.method_id).adaptive:
            raise TypeError(f"{cls.__name__}: subclass AbstractAdaptiveSolver exactly when the catalogue's "
                            f"{cls.method_id!r} can choose its steps")
        if cls.method_id and not cls.__dict__.get("__doc__"):
            m = get_method(cls.method_id)
            steps = m.steps_summary("diffrax.ConstantStepSize")
            cls.__doc__ = (f"{m.name} ({m.family.replace('_', ' ')}, order {m.order}, {m.stages} stages); {steps}; "
                           f"output between steps of order {interpolation_order(m)}.\n\nReference: {m.reference}.")

    def order(self, terms):
        return get_method(self.method_id).order

    def error_order(self, terms):
        method = get_method(self.method_id)
        return method.error_order + 1 if method.adaptive else None

    def init(self, terms, t0, t1, y0, args):
        _check_ode_term(terms)
        f, flat, _ = _flat_field(terms, args, y0)
        # no step size can repair a non-finite y0: say so (a controller would shrink h to max_steps)
        flat = eqx.error_if(flat, ~jnp.all(jnp.isfinite(flat)), "y0 has non-finite (nan or inf) values")
        solver = self._linear().solver
        if isinstance(solver, SparseLU):  # once per solve: a pattern that misses an entry is named
            flat = check_pattern(f, t0, flat, solver.jac_sparsity)
        return f(t0, flat)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f, flat, unravel = _flat_field(terms, args, y0)
        f0 = jax.lax.cond(made_jump, lambda: f(t0, flat), lambda: solver_state)
        h = jnp.asarray(t1 - t0, dtype=flat.dtype)
        step = self._advance(f, jnp.asarray(t0, dtype=flat.dtype), flat, h, f0)
        f1 = f(t1, step.y1)
        result = step.result
        error = step.error
        if not get_method(self.method_id).adaptive:
            error = None  # (ROS3P's published estimate cannot choose steps: see its catalogue entry)
        coeffs = self._dense_coefficients(flat, step, h * f0, h * f1)
        if (error is not None and step.stiff_filter is not None and self.control_interpolation
                and controls_interpolation(self.method_id)):
            error = _with_interpolation_error(f, t0, flat, h, coeffs, step.stiff_filter, error)
        if error is not None:
            # as diffrax's own implicit solvers do: a failed step has an infinite error, so an
            # adaptive controller rejects it (and diffrax then ignores the result) while a
            # constant step size accepts it and the solve stops with the failure.  Where no
            # smaller step can help (the state or f at the step's start is not finite, or h is
            # at round-off in t), a zero error makes the controller keep the failed step, so the
            # solve stops with its reason instead of shrinking h until max_steps.
            hopeless = (~jnp.all(jnp.isfinite(flat)) | ~jnp.all(jnp.isfinite(f0))
                        | (jnp.abs(h) <= 64 * jnp.finfo(flat.dtype).eps * jnp.maximum(jnp.abs(t0), 1.0)))
            error = jnp.where(result == optx.RESULTS.successful, error, jnp.where(hopeless, 0.0, jnp.inf))
        dense_info = dict(y0=y0, coeffs=jax.vmap(unravel)(coeffs))
        return (unravel(step.y1), None if error is None else unravel(error), dense_info, f1,
                diffrax.RESULTS.promote(result))

    def _dense_coefficients(self, y0, step: Step, hf0, hf1):
        D = dense_matrix(self.method_id)
        if D is None:
            D, increments = HERMITE, jnp.stack([step.y1 - y0, hf0, hf1])
        else:
            increments = step.increments
        return jnp.asarray(D, dtype=y0.dtype) @ increments

    def _advance(self, f, t0, y0, h, f0) -> Step:
        raise NotImplementedError

    def _linear(self) -> LinearSolve:
        raise NotImplementedError


class ImplicitRungeKuttaSolver(_CatalogueSolver, diffrax.AbstractImplicitSolver):
    """An implicit Runge-Kutta method from the catalogue; stages by ``root_finder``.

    ``linear_solver`` (a lineax solver), where given, replaces the root finder's own: dense LU
    by default, :class:`~adapters.diffrax.linear_solvers.SparseLU` for a sparse Jacobian,
    ``lineax.GMRES`` matrix-free (Newton-Krylov: a chord root finder becomes
    ``optimistix.Newton`` with its tolerances; ``preconditioner`` then applies to the error
    filter only, as Optimistix passes no options to the Newton solves)."""

    root_finder: optx.AbstractRootFinder = diffrax.with_stepsize_controller_tols(VeryChord)()
    root_find_max_steps: int = 10
    linear_solver: lx.AbstractLinearSolver | None = None
    preconditioner: Callable | None = None
    #: Solve a fully implicit method's stages as the n x n systems of A's eigenvalues
    #: (:mod:`.split_stages`; VeryChord with a direct linear solver).  Off by default: on
    #: jaxlib 0.10's CPU runtime a jit(vmap(...)) solve with it hung at 0% CPU unless
    #: ``jax.config.update("jax_cpu_enable_async_dispatch", False)`` (docs/diffrax.md).
    split_stages: bool = eqx.field(default=False, static=True)

    def _root_finder(self):
        return with_linear_solver(self.root_finder, self.linear_solver)

    def _linear(self) -> LinearSolve:
        solver = self.linear_solver or getattr(self.root_finder, "linear_solver", None) or DENSE_LU
        return LinearSolve(solver, self.preconditioner)

    def _advance(self, f, t0, y0, h, f0) -> Step:
        step = implicit_rk_step(get_method(self.method_id), f, t0, y0, h, f0, self._root_finder(),
                                self.root_find_max_steps, self._linear(), self.split_stages)
        return _nonfinite_fails(step)


class RosenbrockSolver(_CatalogueSolver):
    """A Rosenbrock method from the catalogue: one solve with I - h gamma J per stage.

    ``linear_solver`` is a lineax solver: dense LU by default (one factorisation per step),
    :class:`~adapters.diffrax.linear_solvers.SparseLU` for a sparse Jacobian, or a Krylov
    solver (``lineax.GMRES``) on Jacobian-vector products with the optional
    ``preconditioner(t, y, h_gamma)`` (a lineax operator approximating (I - h gamma J)^-1).
    A linear solve that fails (GMRES out of iterations, a singular matrix) fails the step:
    an adaptive controller rejects it, a constant step size stops with that result."""

    linear_solver: lx.AbstractLinearSolver = DENSE_LU
    preconditioner: Callable | None = None

    def _linear(self) -> LinearSolve:
        return LinearSolve(self.linear_solver, self.preconditioner)

    def _advance(self, f, t0, y0, h, f0) -> Step:
        return _nonfinite_fails(rosenbrock_step(get_method(self.method_id), f, t0, y0, h, f0, self._linear()))


def with_linear_solver(root_finder, linear_solver):
    """``root_finder`` solving its Newton systems with ``linear_solver`` (None: its own); a
    ``diffrax.VeryChord`` with diffrax 0.7.2's termination mended (:mod:`.root_finders`)."""
    root_finder = fixed_chord(root_finder)
    if linear_solver is None or not hasattr(root_finder, "linear_solver"):
        return root_finder
    if isinstance(linear_solver, KRYLOV) and isinstance(root_finder, (diffrax.VeryChord, optx.Chord)):
        # a chord method keeps the linear solver's state between iterations; a Krylov
        # solver's state is the operator itself (functions inside), which VeryChord's
        # stop_gradient cannot take, and matrix-free there is no factorisation to keep:
        # Newton-Krylov, with the chord's tolerances and norm
        rf = root_finder
        return optx.Newton(rtol=rf.rtol, atol=rf.atol, norm=rf.norm, linear_solver=linear_solver)
    return eqx.tree_at(lambda r: r.linear_solver, root_finder, linear_solver)


def _with_interpolation_error(f, t0, y0, h, coeffs, stiff_filter, error):
    """The step's estimate raised, component by component, to the continuous extension's
    error at a quarter and three quarters of the step: defects filtered by the step's own matrix
    (:func:`stiffcore.catalogue.dense.value_and_scaled_slope`).  Estimates carry no gradient."""
    y0, h, coeffs = (jax.lax.stop_gradient(x) for x in (y0, h, coeffs))
    for e in interpolation_defects(y0, coeffs, h, lambda theta, u: f(t0 + theta * h, u), stiff_filter):
        error = jnp.where(jnp.abs(e) > jnp.abs(error), e, error)
    return jax.lax.stop_gradient(error)


def _nonfinite_fails(step: Step) -> Step:
    """A step whose solution is NaN or inf (f failed, or the stages overflowed) fails."""
    finite = jnp.all(jnp.isfinite(step.y1))
    ok = step.result == optx.RESULTS.successful
    return step._replace(result=optx.RESULTS.where(ok & ~finite, optx.RESULTS.nonfinite, step.result))


# --- the methods ---------------------------------------------------------------------------
# Each is one declaration; the catalogue holds the coefficients, order and reference.

class BackwardEuler(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "backward_euler"


class ImplicitMidpoint(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "implicit_midpoint"


class Trapezoid(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "trapezoid"


class SDIRK2(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "sdirk2"


class TRBDF2(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "trbdf2"


class RadauIIA3(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "radau_iia3"


class RadauIIA5(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "radau_iia5"


class GaussLegendre4(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "gauss_legendre4"


class GaussLegendre6(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "gauss_legendre6"


class LobattoIIIC2(ImplicitRungeKuttaSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "lobatto_iiic2"


class Rosenbrock23(RosenbrockSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "rosenbrock23"


class ROS3P(RosenbrockSolver):  # fixed steps: its embedded estimate is degenerate
    method_id = "ros3p"


class Rodas4(RosenbrockSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "rodas4"


class Rodas5P(RosenbrockSolver, diffrax.AbstractAdaptiveSolver):
    method_id = "rodas5p"


SOLVERS: dict[str, type[_CatalogueSolver]] = {
    cls.__name__: cls for cls in (
        BackwardEuler, ImplicitMidpoint, Trapezoid, SDIRK2, TRBDF2, RadauIIA3, RadauIIA5, GaussLegendre4,
        GaussLegendre6, LobattoIIIC2, Rosenbrock23, ROS3P, Rodas4, Rodas5P)
}


def solver_class(method_id: str) -> type:
    """The diffrax solver class of an implicit one-step catalogue method."""
    m = get_method(method_id)
    cls = SOLVERS.get(m.name)
    if cls is None:
        raise ValueError(f"{m.id!r} has no stiffcore diffrax solver; these do: {', '.join(SOLVERS)}")
    return cls
