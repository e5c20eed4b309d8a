"""``Reversible(base_solver, coupling)``: the McCallum & Foster scheme around any one-step
diffrax solver, ours or diffrax's own (explicit or implicit).

The step is the core's framework-agnostic :func:`stiffcore.reversible.reversible_step` on
raveled states, with the base solver's step (taken forwards and backwards) as the map.
The solver state carries the second state z; outputs between steps come from the base's
own interpolation of its forward step (:class:`.interpolation.ReversibleInterpolation`).
On its first step the solver evaluates h * eig(J) at the initial state (Ritz values from
Arnoldi on JVPs above 500 unknowns) and, through ``jax.debug.callback``, warns
(``RuntimeWarning``) when the core predicts growth above 1.0011 per step for a decaying mode.
"""

from __future__ import annotations

import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from diffrax._root_finder import use_stepsize_tol  # diffrax exports no public name for it
from jax.flatten_util import ravel_pytree

from stiffcore.reversible import (
    DEFAULT_COUPLING, EIGEN_CHECK_MAX_N, check_coupling, instability_warning, reversible_step,
)
from stiffcore.spectrum import arnoldi, ritz_values, start_vector

from .interpolation import ReversibleInterpolation

#: diffrax solvers that are not one-step maps of y alone, so they cannot serve as a base.
_NOT_ONE_STEP = ("LeapfrogMidpoint", "ReversibleHeun", "SemiImplicitEuler")


class Reversible(diffrax.AbstractAdaptiveSolver):
    """Algebraically reversible wrapper (McCallum & Foster, arXiv 2410.11648).

    ``base_solver``: any one-step diffrax solver (``RadauIIA5()``, ``diffrax.Kvaerno5()``,
    ``diffrax.Tsit5()``, ...); ``coupling``: lambda in (0, 1), default 0.999.  Adaptive with
    the base's error estimate of its forward step when the base has one.  The catalogue id
    of the base, for the core's growth rates, is ``base_id`` (from the class name).
    """

    base_solver: diffrax.AbstractSolver
    coupling: float = DEFAULT_COUPLING   # a float, or a JAX scalar to trace it (one compile, many couplings)

    interpolation_cls = ReversibleInterpolation

    def __check_init__(self):
        if not isinstance(self.base_solver, diffrax.AbstractSolver):
            raise TypeError(f"base_solver must be a diffrax solver instance, got {type(self.base_solver).__name__}")
        name = type(self.base_solver).__name__
        if isinstance(self.base_solver, Reversible) or name in _NOT_ONE_STEP:
            raise ValueError(f"base_solver must be a one-step method; {name} is not")
        check_coupling(self.coupling)
        finder = getattr(self.base_solver, "root_finder", None)
        if finder is not None and any(getattr(finder, tol, None) is use_stepsize_tol
                                      for tol in ("rtol", "atol")):
            raise ValueError(
                f"{name} takes its root-finder tolerances from the step-size controller, which diffeqsolve "
                f"cannot pass through Reversible; give them explicitly, e.g. "
                f"Reversible({name}(root_finder=diffrax.VeryChord(rtol=1e-8, atol=1e-10)))")

    @property
    def term_structure(self):
        return self.base_solver.term_structure

    @property
    def base_id(self) -> str | None:
        """The base's catalogue id, if the core knows the method (for growth rates)."""
        from stiffcore.catalogue import METHODS, get_method

        name = type(self.base_solver).__name__
        try:
            return get_method({"ImplicitEuler": "backward_euler"}.get(name, name)).id
        except ValueError:
            return next((m.id for m in METHODS.values() if m.name.lower() == name.lower()), None)

    def order(self, terms):
        return self.base_solver.order(terms)

    def error_order(self, terms):
        return self.base_solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        self.warn_if_unstable(terms, t0, y0, args, t1 - t0)
        return y0

    def func(self, terms, t0, y0, args):
        return self.base_solver.func(terms, t0, y0, args)

    def base_map(self, terms, args, unravel):
        """The base step as a map of raveled states, psi(t_from, t_to, v) -> (v1, error,
        dense_info, result): the map the reversible step is built from, forwards and backwards."""
        def psi(t_from, t_to, v):
            y = unravel(v)
            state = self.base_solver.init(terms, t_from, t_to, y, args)
            y1, error, dense_info, _, result = self.base_solver.step(terms, t_from, t_to, y, args, state, False)
            return ravel_pytree(y1)[0], error, dense_info, result
        return psi

    def interpolation(self, t0, t1, y0, z0, base_dense_info):
        """The output inside the step from (y0, z0): the base's interpolation of its forward
        step from z0 (``base_dense_info``), shifted onto y (:class:`ReversibleInterpolation`)."""
        base = self.base_solver.interpolation_cls(t0=t0, t1=t1, **base_dense_info)
        gap = jax.tree_util.tree_map(lambda a, b: a - b, y0, z0)
        return dict(base=base, gap=gap, coupling=jnp.asarray(self.coupling))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y, unravel = ravel_pytree(y0)
        z = ravel_pytree(solver_state)[0]
        psi = self.base_map(terms, args, unravel)
        records: list = []

        def step(t_from, t_to, v):
            v1, error, dense_info, result = psi(t_from, t_to, v)
            records.append((error, dense_info, result))
            return v1

        y1, z1 = reversible_step(step, t0, t1, y, z, self.coupling)
        (error, base_dense_info, result), (_, _, result_back) = records
        # a backward base step that failed (an implicit solve diverging) rejects the step, as
        # diffrax's own implicit solvers do with an infinite error, so the controller shrinks it
        back_ok = diffrax.is_okay(result_back)
        error = jax.tree_util.tree_map(lambda e: jnp.where(back_ok, e, jnp.inf), error)
        result = diffrax.RESULTS.where(diffrax.is_okay(result), result_back, result)
        dense_info = self.interpolation(t0, t1, y0, solver_state, base_dense_info)
        return unravel(y1), error, dense_info, unravel(z1), result

    def warn_if_unstable(self, terms, t, y, args, h, n_steps=None, where="at t0"):
        """Warn (``RuntimeWarning`` through ``jax.debug.callback``) where the core predicts growth
        of decaying modes for h * eig(J(t, y)); with ``n_steps``, growth weighed over the solve."""
        base = self.base_id
        if base is None:
            return
        flat, unravel = ravel_pytree(y)
        field = lambda v: ravel_pytree(terms.vf(t, unravel(v), args))[0]  # noqa: E731
        # above EIGEN_CHECK_MAX_N a dense eigensolve costs more than it saves: Arnoldi on JVPs
        # gives the extreme eigenvalues (the Hessenberg matrix travels to the host instead of J)
        small = flat.size <= EIGEN_CHECK_MAX_N
        if small:
            J = jax.jacfwd(field)(flat)
        else:
            v0 = jnp.asarray(start_vector(flat.size), dtype=flat.dtype)
            J = jnp.asarray(arnoldi(lambda v: jax.jvp(field, (flat,), (v,))[1], v0))

        def warn(J, h, n_steps, coupling):
            m = J.shape[-1]                    # n, or the Krylov dimension; a vmap adds a batch axis
            J = np.asarray(J).reshape(-1, m, m)
            eig = np.linalg.eigvals(J) if small else np.concatenate([ritz_values(H) for H in J])
            z = np.asarray(h) * eig
            n = None if n_steps is None else int(np.max(n_steps))
            message = instability_warning(base, z, float(np.max(coupling)), n_steps=n)
            if message:
                warnings.warn(f"{where}: {message}", RuntimeWarning, stacklevel=2)

        # the coupling travels as an argument: it may be a traced array (one compile for many couplings)
        jax.debug.callback(warn, J, jnp.asarray(h), n_steps, jnp.asarray(self.coupling))
