"""The JAX backend's announcement to stiffcore's plugin registry (entry point ``jax``).

The hooks serve two backends: ``jax`` runs this adapter's solvers, ``diffrax``
(:mod:`.native_backend`) runs diffrax's own stiff solvers (``ImplicitEuler`` as backward
Euler, ``Kvaerno3/4/5``), so their gradient decay is checked against the core too.
Gradients are ``jax.grad`` through ``diffrax.diffeqsolve`` (its default adjoint).  Loading
either entry point imports the adapter package, hence JAX, diffrax and equinox; without
them discovery lists the backends as unavailable, naming the import error.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from stiffcore.catalogue import method_ids
from stiffcore.plugins import Backend, hookimpl, hooks_from_linear_gradient

OURS = tuple(m for m in method_ids(one_step=True, implicit=True) if not m.startswith("kvaerno"))
ROOT_TOL = dict(rtol=1e-10, atol=1e-14)   # with full Newton: stage equations to round-off
NATIVE_ROOT_TOL = dict(rtol=1e-10, atol=1e-12)


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _solver(method_id: str, native: bool, tight: bool = True, linear: bool = True):
    import diffrax
    import optimistix as optx

    from . import NATIVE, diffrax_solver

    cls = getattr(diffrax, NATIVE[method_id]) if native else diffrax_solver(method_id)
    if tight and issubclass(cls, diffrax.AbstractImplicitSolver):
        # ours: full Newton (fixed grids take large steps on which a chord iteration may
        # stall).  On y' = lambda y up to |z| = 1e8 the residual's round-off (eps |z| |y|)
        # never meets Cauchy termination, so those stop on the increments; on ROBER's grid
        # the increments' rate is round-off noise at the end (it reads as divergence, which a
        # fixed step rightly reports as a failure), while the residual test converges: 3e-14
        # from SciPy's gradient.  diffrax's own solvers iterate on stage derivatives, whose
        # round-off floor defeats Optimistix's Newton termination at these tolerances:
        # VeryChord converges.
        finder = (diffrax.VeryChord(**NATIVE_ROOT_TOL) if native
                  else optx.Newton(**ROOT_TOL, cauchy_termination=not linear))
        return cls(root_finder=finder, root_find_max_steps=50)
    return cls()


@functools.lru_cache(maxsize=None)
def _compiled_gradient(method_id: str, h: float, y0: float, n_steps: int, native: bool):
    """jit(vmap(grad)) of y_N with respect to lambda, compiled once per configuration."""
    jax = _jax()
    import diffrax
    import jax.numpy as jnp

    solver = _solver(method_id, native)

    def y_n(lam):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: a * y), solver, 0.0, n_steps * h, h,
                                  jnp.array([y0]), args=lam, max_steps=n_steps + 1, throw=False)
        return sol.ys[-1, 0], sol.result == diffrax.RESULTS.successful

    return jax.jit(jax.vmap(jax.grad(y_n, has_aux=True)))


def _linear_gradient(method_id: str, z, h: float, y0: float, n_steps: int, native: bool):
    z = np.asarray(z, dtype=float)
    grads, ok = _compiled_gradient(method_id, float(h), float(y0), int(n_steps), native)(z.ravel() / h)
    if not np.all(ok):  # errors do not raise under vmap: report them here
        bad = z.ravel()[~np.asarray(ok)]
        raise RuntimeError(f"{'diffrax' if native else 'jax'}/{method_id}: the solve failed at z = {bad[:3]} "
                           f"(h = {h}, {n_steps} steps)")
    return np.asarray(grads).reshape(z.shape)


def make_hooks(native: bool):
    one_step_gradient, n_step_gradient = hooks_from_linear_gradient(
        lambda method_id, z, h, y0, n_steps: _linear_gradient(method_id, z, h, y0, n_steps, native))

    def rober_gradient(method_id, times, steps=None, rtol=None):
        """d/d(log k) of sum(y(times)^2) on ROBER, on the grid ``steps`` or adaptively at ``rtol``."""
        jax = _jax()
        import diffrax
        import jax.numpy as jnp

        from stiffcore.problems import ROBER

        rober = ROBER.log_parameterised()
        t_end = float(np.asarray(times, dtype=float)[-1])
        times = jnp.asarray(times, dtype=float)
        if steps is not None:
            solver = _solver(method_id, native, linear=False)
            control = dict(stepsize_controller=diffrax.StepTo(ts=jnp.asarray(steps, dtype=float)), dt0=None)
        else:
            solver = _solver(method_id, native, tight=False)
            control = dict(stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-4), dt0=1e-6)

        def loss(q):
            sol = diffrax.diffeqsolve(diffrax.ODETerm(rober.rhs), solver, 0.0, t_end, y0=jnp.asarray(rober.y0),
                                      args=q, saveat=diffrax.SaveAt(ts=times), max_steps=100_000, **control)
            return (sol.ys**2).sum()

        return np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(rober.params)))

    return one_step_gradient, n_step_gradient, rober_gradient


@functools.lru_cache(maxsize=None)
def _compiled_reversible(base_id: str, h: float, y0: float, n_steps: int, coupling: float):
    """(run, gradient, back): the jitted forward solve (y_n, z_n), d y_n / d lambda and one
    backward step, compiled once per configuration; lambda is an argument."""
    jax = _jax()
    import diffrax
    import jax.numpy as jnp

    from stiffcore.reversible import reversible_step_back

    from .reversible import Reversible

    solver = Reversible(_solver(base_id, native=False) if base_id in OURS else _explicit(base_id), coupling)
    term = diffrax.ODETerm(lambda t, y, a: a * y)

    def run(lam):
        # steps=True: the backward pass must see the very step times diffrax accumulated
        sol = diffrax.diffeqsolve(term, solver, 0.0, n_steps * h, h, jnp.array([y0]), args=lam,
                                  saveat=diffrax.SaveAt(steps=True, solver_state=True), max_steps=n_steps)
        return sol.ys[n_steps - 1, 0], (sol.solver_state, sol.ts[:n_steps])

    def back(lam, t0, t1, y, w):
        psi = solver.base_map(term, lam, lambda v: v)
        return reversible_step_back(lambda a, b, v: psi(a, b, v)[0], t0, t1, y, w, coupling)

    return jax.jit(run), jax.jit(jax.grad(lambda lam: run(lam)[0])), jax.jit(back)


def reversible_run(base_id, z, h, y0, n_steps, coupling, perturbation=0.0):
    """Forward n reversible steps on y' = lambda y (gradient by jax.grad), then rebuild y0 from
    y_n * (1 + perturbation) with the core's backward step around the same base step."""
    import jax.numpy as jnp

    run, gradient, back = _compiled_reversible(base_id, float(h), float(y0), int(n_steps), float(coupling))
    lam = jnp.asarray(z / h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unstable configurations are measured on purpose
        y_n, (z_n, ts) = run(lam)
        dy = gradient(lam)
    times = np.concatenate([[0.0], np.asarray(ts)])
    y, w = jnp.array([float(y_n) * (1 + perturbation)]), jnp.asarray(z_n).reshape(1)
    for k in reversed(range(n_steps)):
        y, w = back(lam, times[k], times[k + 1], y, w)
    return dict(y_n=float(y_n), y0_rebuilt=float(y[0]), dy_dlambda=float(dy))


def _explicit(method_id):
    import diffrax

    from stiffcore.catalogue import get_method

    return getattr(diffrax, get_method(method_id).name)()


def install() -> None:
    from . import SOLVERS  # noqa: F401  (the classes are the registration: nothing to add to diffrax)


@hookimpl
def stiffcore_backend() -> Backend:
    one, n, rober = make_hooks(native=False)
    return Backend(name="jax", methods=OURS, one_step_gradient=one, n_step_gradient=n, rober_gradient=rober,
                   reversible_run=reversible_run, reversible_bases=OURS, install=install,
                   requires=("jax", "diffrax", "equinox"),
                   description="stiffcore.adapters.diffrax solvers, gradients by jax.grad (implicit stages by the IFT)")
