"""One step of a catalogue method in JAX on a flat state: implicit RK and Rosenbrock.

``f(t, y)`` maps flat vectors to flat vectors.  Both steps are written on increments
(``Z_j = h K_j`` for Runge-Kutta stages, the transformed ``k_j`` for Rosenbrock) so that
nothing divides by h: a zero-length step is the identity with finite derivatives.  That
matters under ``jax.vmap``, where batch elements that have finished keep taking steps of
length zero and their (discarded) values still enter the backward pass.

Implicit stage blocks are solved with an Optimistix root finder, whose implicit adjoint
differentiates the stage equations by the implicit function theorem, so reverse-mode
gradients through diffrax's default adjoint are those of the discrete map whatever the
Newton tolerance.  Rosenbrock steps are explicit given the Newton matrix I - h gamma J,
a lineax operator on Jacobian-vector products (:func:`newton_operator`) that the solver's
lineax ``linear_solver`` factorises (dense LU, :class:`~.linear_solvers.SparseLU`) or never
forms (``lineax.GMRES``); lineax differentiates the solves exactly.  The stepping scheme
(stage blocks, solution and error weights, error filter) is the catalogue's
:func:`~stiffcore.catalogue.schemes.runge_kutta_scheme`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import lineax as lx
import optimistix as optx

from stiffcore.catalogue import Method
from stiffcore.catalogue.schemes import runge_kutta_scheme

from .linear_solvers import implicit_adjoint
from .split_stages import split_stage_root, splits


class Step(NamedTuple):
    y1: jax.Array
    error: jax.Array | None        # local error estimate (None without an embedded method)
    result: optx.RESULTS
    increments: jax.Array          # (stages, n): what the method's dense matrix acts on
    stiff_filter: Callable | None = None   # v -> (I - h gamma J)^-1 v with the step's own matrix


def weighted(rows, vectors):
    """sum_j rows[j] * vectors[j] over the nonzero weights (0.0 if there are none)."""
    out = 0.0
    for w, v in zip(rows, vectors):
        if w:
            out = out + float(w) * v
    return out


def newton_operator(f, t, y, hg) -> lx.AbstractLinearOperator:
    """I - h gamma J(t, y) as a lineax operator: J by forward-mode products of f, so nothing
    n x n exists unless the linear solver materialises it (dense LU)."""
    J = lx.JacobianLinearOperator(lambda v, _: f(t, v), y, jac="fwd")
    return lx.IdentityLinearOperator(J.in_structure()) - hg * J


class LinearSolve(NamedTuple):
    """A linear solver with the preconditioner hook: ``preconditioner(t, y, h gamma)`` returns
    a lineax operator approximating (I - h gamma J)^-1 (Krylov solvers only)."""
    solver: lx.AbstractLinearSolver
    preconditioner: Callable | None = None

    def prepare(self, f, t, y, hg):
        """The operator, its solver state and the solve options at (t, y)."""
        op = newton_operator(f, t, y, hg)
        options = {}
        if self.preconditioner is not None:
            options["preconditioner"] = _checked_preconditioner(self.preconditioner(t, y, hg), y)
        return op, self.solver.init(op, options), options

    def solve(self, prepared, b, gradient: bool = True):
        op, state, options = prepared
        if not gradient:
            op, state, b = _no_gradient((op, state, b))
        sol = lx.linear_solve(op, b, self.solver, state=state, options=options, throw=False)
        # a Krylov solver out of iterations reports lineax's "maximum number of solver steps",
        # which would read as diffrax's own max_steps: report it as a linear-solve breakdown.
        # Non-finite input (f returned NaN) is not the solve's failure: the NaN reaches the
        # step's value, which then fails as nonfinite.
        result = lx.RESULTS.where(sol.result == lx.RESULTS.max_steps_reached, lx.RESULTS.breakdown, sol.result)
        result = lx.RESULTS.where(result == lx.RESULTS.nonfinite_input, lx.RESULTS.successful, result)
        return sol.value, result


def _no_gradient(tree):
    """stop_gradient on the arrays of a tree that also holds functions (lineax operators)."""
    return jax.tree_util.tree_map(lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, tree)


def _checked_preconditioner(P, y):
    if not isinstance(P, lx.AbstractLinearOperator):
        raise ValueError(f"preconditioner(t, y, h_gamma) must return a lineax linear operator, got {type(P).__name__}")
    want = jax.ShapeDtypeStruct(y.shape, y.dtype)
    for name, got in (("in", P.in_structure()), ("out", P.out_structure())):
        if not (isinstance(got, jax.ShapeDtypeStruct) and got.shape == want.shape):
            raise ValueError(f"the preconditioner's {name}_structure() is {got}; expected {want} "
                             f"(the flat state of {y.size} unknowns)")
    return P


def implicit_rk_step(method: Method, f, t0, y0, h, f0, root_finder, max_steps: int,
                     linear: LinearSolve, split_stages: bool = False) -> Step:
    """One implicit Runge-Kutta step on stage increments ``Z = h K``; ``linear`` solves the
    stiff filter of the error estimate (the root finder brings its own linear solver);
    ``split_stages`` solves a block of several stages in A's eigenbasis where the root finder
    allows it (:mod:`.split_stages`)."""
    sch = runge_kutta_scheme(method)
    Z: list = [None] * sch.stages
    Y_last, result = y0, optx.RESULTS.successful
    split_solve = None
    for block in sch.blocks:
        idx = block.stages
        psi = [y0 + weighted(sch.a[i, :idx[0]], Z[:idx[0]]) if idx[0] else y0 for i in idx]
        if not block.implicit:
            i = idx[0]
            Z[i] = h * (f0 if (i == 0 and sch.c[0] == 0) else f(t0 + float(sch.c[i]) * h, psi[0]))
            Y_last = psi[0]
            continue
        times = tuple(t0 + float(sch.c[i]) * h for i in idx)
        # predictor: the last increment (or h f0) spread over the block's rows
        slope = Z[idx[0] - 1] if idx[0] else h * f0
        guess = jnp.stack([p + float(block.a_block[r].sum()) * slope for r, p in enumerate(psi)])
        a_block = block.a_block

        def residual_of(f, times=times, a_block=a_block):
            def residual(Y, psi_h):
                # a closure over f: Optimistix closure-converts it, so arrays f captures (the
                # term's args, module parameters) get their implicit-function gradients too
                psi_B, h_ = psi_h
                F = jnp.stack([f(t, y) for t, y in zip(times, Y)])
                return Y - psi_B - h_ * (jnp.asarray(a_block, dtype=Y.dtype) @ F)
            return residual

        args = (jnp.stack(psi), h)
        if split_stages and splits(root_finder, block.split):   # n x n systems in A's eigenbasis
            Y, sol, residual, split_solve = split_stage_root(residual_of, args, guess, f, times[-1], h, block.split,
                                                             root_finder, max_steps)
            block_result = _accept_roundoff_roots(residual, sol, jax.lax.stop_gradient(args), root_finder)
        else:
            residual = residual_of(f)
            sol = optx.root_find(residual, root_finder, guess, args=args, throw=False,
                                 max_steps=max_steps, adjoint=implicit_adjoint(root_finder))
            block_result = _accept_roundoff_roots(residual, sol, args, root_finder)
            Y = sol.value
        result = optx.RESULTS.where(result == optx.RESULTS.successful, block_result, result)
        for r, i in enumerate(idx):  # Z_B = A_BB^-1 (Y_B - psi_B)
            Z[i] = weighted(block.a_block_inv[r], [Y[k] - psi[k] for k in range(len(idx))])
        Y_last = Y[-1]
    y1 = Y_last if sch.solution_is_last_stage else y0 + weighted(sch.b, Z)
    error, stiff_filter = None, None
    if sch.error_weights is not None:
        error = jax.lax.stop_gradient(weighted(sch.error_weights, Z))
        if sch.error_b0:
            error = error - jax.lax.stop_gradient(h * float(sch.error_b0) * f0)
        if split_solve is not None and sch.defect_filter in split_solve.split.gammas:  # Radau IIA's real system
            stiff_filter = split_solve.filter(sch.defect_filter)
        elif sch.defect_filter:  # filters the interpolation defects too; where nothing uses it, jit drops it
            stiff_filter = _stiff_filter(f, t0, y0, h * float(sch.defect_filter), linear)
        if sch.error_filter:
            error = stiff_filter(error)
    return Step(y1, error, result, jnp.stack(Z), stiff_filter)


def _accept_roundoff_roots(residual, sol, args, root_finder):
    """The root find's result, with a failure overruled where the residual at its value is far
    below the tolerance: at step sizes near round-off in t (h ~ 1e-14 beside a jump in f) the
    Newton increments are pure noise, eps |Y| against rtol |Y|, and the rate test reads noise as
    divergence, which ended the solve.  A residual 100x inside the tolerance is a root (the
    Newton matrix I - h A J of a dissipative step does not amplify it).  Evaluated only after a
    failure (``lax.cond``; under ``vmap`` both branches run: m more f calls per stage block)."""
    try:
        rtol, atol = jnp.asarray(root_finder.rtol), jnp.asarray(root_finder.atol)
    except (AttributeError, TypeError):   # a root finder without numeric tolerances: its word stands
        return sol.result

    def judged():
        Y = jax.lax.stop_gradient(sol.value)
        G = residual(Y, jax.lax.stop_gradient(args))
        small = jnp.sqrt(jnp.mean((G / (atol + rtol * jnp.abs(Y))) ** 2)) <= 1e-2
        return optx.RESULTS.where(small, optx.RESULTS.successful, sol.result)

    return jax.lax.cond(sol.result == optx.RESULTS.successful, lambda: sol.result, judged)


def _stiff_filter(f, t0, y0, hg, linear: LinearSolve):
    """v -> (I - h gamma J)^-1 v, so stiff components of an estimate are not overestimated
    (estimates only: no gradient flows through it)."""
    prepared = linear.prepare(f, t0, *_no_gradient((y0, hg)))
    return lambda v: linear.solve(prepared, v, gradient=False)[0]


def rosenbrock_step(method: Method, f, t0, y0, h, f0, linear: LinearSolve) -> Step:
    """One Rosenbrock step (Hairer & Wanner IV.7, eq. 7.25) multiplied through by h gamma:
    ``(I - h gamma J) k_i = h gamma f(Y_i) + gamma sum_j C_ij k_j + h^2 gamma d_i f_t``."""
    tab = method.coefficients
    a, C, m, m_hat = tab.transformed()
    g = float(tab.gamma_diag)
    prepared = linear.prepare(f, t0, y0, h * g)
    result = optx.RESULTS.successful
    f_t = None
    if np.any(tab.d):
        f_t = jax.jvp(lambda t: f(t, y0), (t0,), (jnp.ones_like(t0),))[1]
    k: list = []
    for i in range(tab.stages):
        stage_f = f0 if i == 0 else f(t0 + float(tab.c[i]) * h, y0 + weighted(a[i, :i], k))
        rhs = (h * g) * stage_f
        if i:
            rhs = rhs + g * weighted(C[i, :i], k)
        if f_t is not None and tab.d[i]:
            rhs = rhs + (h * h * g * float(tab.d[i])) * f_t
        k_i, solved = linear.solve(prepared, rhs)
        result = optx.RESULTS.where(result == optx.RESULTS.successful, optx.RESULTS.promote(solved), result)
        k.append(k_i)
    y1 = y0 + weighted(m, k)
    error = None if m_hat is None else jax.lax.stop_gradient(weighted(m - m_hat, k))
    return Step(y1, error, result, jnp.stack(k), lambda v: linear.solve(prepared, v, gradient=False)[0])
