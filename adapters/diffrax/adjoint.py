"""``ReversibleAdjoint()``: exact gradients of a :class:`Reversible` solve in memory
independent of the number of steps (McCallum & Foster, arXiv 2410.11648).

The forward pass runs diffrax's own loop without storing states; the solver state also
records the accepted step times (one float per step, the only thing that grows).  The
backward pass walks the steps from last to first, rebuilding (y_k, z_k) from
(y_{k+1}, z_{k+1}) with the core's :func:`~stiffcore.reversible.reversible_step_back` and
pulling cotangents through the same two base-step evaluations with
:func:`~stiffcore.reversible.reversible_step_vjp`: two base steps and their VJPs per step,
time O(n).  Outputs at ``SaveAt(ts=...)`` are the base's interpolation of its forward step
shifted onto y (:class:`~adapters.diffrax.interpolation.ReversibleInterpolation`), so their
cotangents enter the two states of the step they fall in and, through the forward base
step's dense information, the VJP that step already takes.
"""

from __future__ import annotations

import functools as ft

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from stiffcore.reversible import reversible_step_back, reversible_step_vjp

from .interpolation import ReversibleInterpolation
from .reversible import Reversible


class _Recording(diffrax.AbstractAdaptiveSolver):
    """A :class:`Reversible` whose state is (z, step times, accepted steps).  diffrax keeps a
    solver state only for accepted steps, so writing t1 at index count + 1 records exactly
    the accepted grid."""

    solver: Reversible
    interpolation_cls = ReversibleInterpolation

    @property
    def term_structure(self):
        return self.solver.term_structure

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        raise NotImplementedError("_Recording's state is built by ReversibleAdjoint")

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        z, times, count = solver_state
        y1, error, dense_info, z1, result = self.solver.step(terms, t0, t1, y0, args, z, made_jump)
        return y1, error, dense_info, (z1, times.at[count + 1].set(t1), count + 1), result


class ReversibleAdjoint(diffrax.AbstractAdjoint):
    """Backpropagate through ``diffeqsolve(..., solver=Reversible(base), adjoint=ReversibleAdjoint())``
    by reconstructing the states backwards: exact gradients of the reversible discrete map
    with respect to ``y0``, ``args`` and parameters inside the terms (equinox modules), memory
    flat in the number of steps (8 bytes per step for the step times), time O(n).

    Supports ``SaveAt(t0=..., t1=..., ts=...)`` (and ``solver_state``/``controller_state``/
    ``made_jump``, which are not differentiable) with ``ConstantStepSize`` or adaptive
    controllers; needs a finite ``max_steps`` (the size of the step-time record).  Refuses
    events, ``SaveAt(dense=True)``, ``SaveAt(steps=True)``, ``SaveAt(fn=...)``, ``SaveAt(subs=...)``
    and solvers other than :class:`Reversible`.  Like ``BacksolveAdjoint`` it is reverse-mode
    only (no ``jax.jvp``).  The reconstruction inherits the reversible scheme's growth: where
    the core predicts growth above 1 per step (``stiffcore reversible``), rebuilt states and
    so gradients lose digits over long solves; ``Reversible`` warns at t0 and the backward
    pass warns when the growth at t1 over the steps taken costs more than 3 digits.
    """

    def loop(self, *, args, terms, solver, stepsize_controller, event, saveat, t0, t1, dt0, max_steps, throw,
             init_state, passed_solver_state, passed_controller_state, progress_meter):
        del throw
        _check_supported(solver, event, saveat, max_steps)
        y = init_state.y
        z0 = jax.lax.stop_gradient(init_state.solver_state) if not passed_solver_state else eqxi.nondifferentiable(
            init_state.solver_state, name="With adjoint=ReversibleAdjoint(), solver_state")
        times = jnp.full(max_steps + 1, jnp.inf, dtype=jnp.result_type(init_state.tprev)).at[0].set(init_state.tprev)
        init_state = eqx.tree_at(lambda s: (s.y, s.solver_state), init_state,
                                 (object(), (z0, times, jnp.asarray(0))))
        init_state = eqx.tree_at(lambda s: s.controller_state, init_state,
                                 replace_fn=jax.lax.stop_gradient, is_leaf=lambda x: x is None)
        final_state, aux_stats = _reversible_loop(
            (y, args, terms), self=self, solver=_Recording(solver), stepsize_controller=stepsize_controller,
            saveat=saveat, t0=t0, t1=t1, dt0=dt0, max_steps=max_steps, init_state=init_state, event=None,
            progress_meter=progress_meter, z_is_y0=not passed_solver_state)
        z_final = final_state.solver_state[0]
        final_state = eqx.tree_at(lambda s: s.solver_state, final_state, z_final)
        return _only_outputs_differentiable(final_state), aux_stats


def _check_supported(solver, event, saveat, max_steps):
    def refuse(what):
        raise NotImplementedError(f"adjoint=ReversibleAdjoint() does not support {what}")

    if not isinstance(solver, Reversible):
        raise TypeError(f"adjoint=ReversibleAdjoint() differentiates the reversible map: it needs "
                        f"solver=Reversible(<base solver>), got {type(solver).__name__}")
    if event is not None:
        refuse("events")
    if saveat.dense:
        refuse("SaveAt(dense=True)")
    if not isinstance(saveat.subs, diffrax.SubSaveAt):
        refuse("SaveAt(subs=...); save at t0/t1/ts directly")
    if saveat.subs.steps:
        refuse("SaveAt(steps=True); pass the times as SaveAt(ts=...)")
    if saveat.subs.fn is not diffrax.SaveAt(t1=True).subs.fn:
        refuse("SaveAt(fn=...); apply the function to the saved ys instead")
    if max_steps is None:
        raise ValueError("adjoint=ReversibleAdjoint() records the step times and needs a finite max_steps")


def _only_outputs_differentiable(final_state):
    """Everything but the saved ys is non-differentiable, as with diffrax's own custom adjoints."""
    ys = final_state.save_state.ys
    final_state = eqxi.nondifferentiable_backward(final_state, symbolic=False)
    return eqx.tree_at(lambda s: s.save_state.ys, final_state, ys)


@eqx.filter_custom_vjp
def _reversible_loop(y_args_terms, *, self, init_state, z_is_y0, **kwargs):
    y, args, terms = y_args_terms
    if z_is_y0:
        init_state = eqx.tree_at(lambda s: s.solver_state[0], init_state, y)
    init_state = eqx.tree_at(lambda s: s.y, init_state, y)
    return self._loop(args=args, terms=terms, init_state=init_state,
                      inner_while_loop=ft.partial(eqxi.while_loop, kind="lax"),
                      outer_while_loop=ft.partial(eqxi.while_loop, kind="lax"), **kwargs)


@_reversible_loop.def_fwd
def _reversible_loop_fwd(perturbed, y_args_terms, **kwargs):
    del perturbed
    final_state, aux_stats = _reversible_loop(y_args_terms, **kwargs)
    z, times, count = final_state.solver_state
    residuals = (final_state.y, z, times, count, final_state.save_state.ts, final_state.save_state.ys)
    return (final_state, aux_stats), residuals


@_reversible_loop.def_bwd
def _reversible_loop_bwd(residuals, grad_out, perturbed, y_args_terms, *, solver, z_is_y0, t0, **kwargs):
    del perturbed
    y_final, z_final, times, count, save_ts, ys = residuals
    y0, args, terms = y_args_terms
    reversible = solver.solver
    coupling = reversible.coupling
    flat_y0, unravel = ravel_pytree(y0)
    ravel = lambda tree: ravel_pytree(tree)[0]  # noqa: E731

    grad_ys = jax.tree_util.tree_map(lambda y, g: jnp.zeros_like(y) if g is None else g,
                                     ys, grad_out[0].save_state.ys, is_leaf=_is_none)
    outputs = jax.vmap(ravel)(grad_ys).astype(flat_y0.dtype)  # (n_saved, n)

    diff, static = eqx.partition((args, terms), eqx.is_inexact_array)

    def base(t_from, t_to, v, diff):
        """The base step and its dense information (the forward step's outputs depend on both)."""
        a, tm = eqx.combine(diff, static)
        v1, _, dense_info, _ = reversible.base_map(tm, a, unravel)(t_from, t_to, v)
        return v1, dense_info

    def output_cotangents(ta, tb, dense_info):
        """Outputs in (ta, tb] are y(theta) = P_theta + c(theta) (y_k - z_k) (the step's
        ReversibleInterpolation; c = 1 - theta (1 - lambda)): their cotangents as
        (sum c g, the cotangent of the base's dense information).  Outputs at t0 are y0."""
        inside = (save_ts > ta) & (save_ts <= tb)
        theta = jnp.where(inside, (save_ts - ta) / jnp.where(tb > ta, tb - ta, 1), 0).astype(flat_y0.dtype)
        weights = jnp.where(inside, 1 - theta * (1 - coupling), 0)
        ts = jnp.where(inside, save_ts, tb)

        def projected(info):   # sum over the outputs in this step of g . P_theta(info)
            interp = reversible.base_solver.interpolation_cls(t0=ta, t1=tb, **info)
            values = jax.vmap(lambda t: ravel(interp.evaluate(t)))(ts)
            return jnp.sum(jnp.where(inside[:, None], values * outputs, 0))

        return weights @ outputs, jax.grad(projected)(dense_info)

    def body(carry):
        k, y1, z1, a_y1, a_z1, a_diff = carry
        # under vmap a finished batch element still runs the body (its result is discarded):
        # k = -1 would read the inf padding of the time record and the base step would see NaN
        ta, tb = times[jnp.maximum(k, 0)], times[jnp.maximum(k, 0) + 1]
        vjps, dense = [], []

        def step(t_from, t_to, v):
            (out, dense_info), vjp = jax.vjp(ft.partial(base, t_from, t_to), v, diff)
            vjps.append(vjp)
            dense.append(dense_info)
            return out

        # the backward base step from y1 first, then the forward one from z0 (whose dense output is the step's)
        y0_k, z0_k = reversible_step_back(step, ta, tb, y1, z1, coupling)
        into_gap, a_dense = output_cotangents(ta, tb, dense[1])
        zero_dense = jax.tree_util.tree_map(jnp.zeros_like, dense[0])
        diff_cotangents = []

        def pull(vjp, a_dense):
            def pullback(v):
                a_v, a_d = vjp((v, a_dense))
                diff_cotangents.append(a_d)
                return a_v
            return pullback

        a_y0, a_z0 = reversible_step_vjp(a_y1, a_z1, pull(vjps[0], zero_dense), pull(vjps[1], a_dense), coupling)
        a_diff = jax.tree_util.tree_map(lambda a, b, c: a + b + c, a_diff, *diff_cotangents)
        return k - 1, y0_k, z0_k, a_y0 + into_gap, a_z0 - into_gap, a_diff

    # The reconstruction's growth compounds over the steps: warn with the digits it costs.
    steps = jnp.maximum(count, 1)
    reversible.warn_if_unstable(terms, times[count], y_final, args, (times[count] - times[0]) / steps,
                                n_steps=steps, where="ReversibleAdjoint, rebuilding from t1")
    zeros = jnp.zeros_like(flat_y0)
    carry = (count - 1, ravel(y_final), ravel(z_final), zeros, zeros, jax.tree_util.tree_map(jnp.zeros_like, diff))
    _, _, _, a_y, a_z, a_diff = jax.lax.while_loop(lambda c: c[0] >= 0, body, carry)
    a_y = a_y + jnp.where(save_ts == t0, 1.0, 0.0).astype(flat_y0.dtype) @ outputs
    if z_is_y0:
        a_y = a_y + a_z
    a_args, a_terms = a_diff
    return unravel(a_y), a_args, a_terms


def _is_none(x):
    return x is None
