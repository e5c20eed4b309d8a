"""The JAX backend's hooks (announced in :mod:`stiffcore.adapters.backends`, entry point
``jax``, and imported on the suite's first call).

The hooks serve two backends: ``jax`` runs this adapter's solvers, ``diffrax``
(:mod:`.native_backend`) runs diffrax's own stiff solvers (``ImplicitEuler`` as backward
Euler, ``Kvaerno3/4/5``), so their gradient decay is checked against the core too.
Gradients are ``jax.grad`` through the solvers' own ``init``/``step`` (the calls
``diffeqsolve`` makes each step) on the test equation's fixed steps, a compiled scan that
compiles about 3x faster than ``diffeqsolve`` and its controller; ROBER (check d) goes
through ``diffrax.diffeqsolve`` and its default adjoint.  The first call imports the
adapter package, hence JAX, diffrax and equinox.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from stiffcore.plugins import hooks_from_linear_gradient

from ..backends import JAX_METHODS as OURS
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


#: Step-count capacity of the compiled test-equation solves: h, y0 and the number of steps
#: are traced arguments, so one compile per method serves every configuration the
#: conformance suite asks for (it was one compile per (h, y0, n), about 14 per method).
MAX_LINEAR_STEPS = 16
MAX_REVERSIBLE_STEPS = 1000
#: z values per reversible run (the suite's longest list is 6 stable candidates)
REVERSIBLE_BATCH = 8
LINEAR_BATCH = 32   # z values per compiled call (padded): the suite's grids have 5 and 21


def _fixed_steps(solver, term, args, h, y0, n, capacity: int):
    """(y_n, solver state, every step successful) after n fixed steps of h (n traced, at most
    ``capacity``) by the solver's own init and step: a scan of ``capacity`` steps in which
    those past n have zero length and are discarded, so reverse-mode differentiation works
    and one compilation serves every n.  Step k runs from k h to (k + 1) h exactly, the
    times the reversible rebuild takes back."""
    jax = _jax()
    import diffrax
    import jax.numpy as jnp

    def body(carry, k):
        y, state, ok = carry
        active = k < n
        t0, t1 = jnp.minimum(k, n) * h, jnp.minimum(k + 1, n) * h
        y1, _, _, state1, result = solver.step(term, t0, t1, y, args, state, made_jump=False)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        ok = ok & (~active | (result == diffrax.RESULTS.successful))
        return (keep(y1, y), jax.tree_util.tree_map(keep, state1, state), ok), None

    state = solver.init(term, 0.0, h, y0, args)
    (y, state, ok), _ = jax.lax.scan(body, (y0, state, jnp.array(True)), jnp.arange(capacity, dtype=float))
    return y, state, ok


@functools.lru_cache(maxsize=None)
def _compiled_gradient(method_id: str, native: bool):
    """jit(vmap(grad)) of y_N with respect to lambda on y' = lambda y, for any h, y0 and
    N <= MAX_LINEAR_STEPS (traced), compiled once per method."""
    jax = _jax()
    import diffrax
    import jax.numpy as jnp

    solver = _solver(method_id, native)
    term = diffrax.ODETerm(lambda t, y, a: a * y)

    def y_n(lam, h, y0, n):
        y, _, ok = _fixed_steps(solver, term, lam, h, jnp.array([y0]), n, MAX_LINEAR_STEPS)
        return y[0], ok

    return jax.jit(jax.vmap(jax.grad(y_n, has_aux=True), in_axes=(0, None, None, None)))


def _linear_gradient(method_id: str, z, h: float, y0: float, n_steps: int, native: bool):
    if not 1 <= n_steps <= MAX_LINEAR_STEPS:
        raise ValueError(f"n_steps must be in 1..{MAX_LINEAR_STEPS} for the jax hooks, got {n_steps}")
    z = np.asarray(z, dtype=float)
    # one batch size for every call (padded with the last z), so the compile is reused
    lam = np.resize(z.ravel() / h, -(-z.size // LINEAR_BATCH) * LINEAR_BATCH)
    lam[z.size:] = lam[z.size - 1]
    grads, ok = (np.asarray(a)[:z.size] for a in
                 _compiled_gradient(method_id, native)(lam, float(h), float(y0), float(n_steps)))
    if not np.all(ok):  # errors do not raise under vmap: report them here
        bad = z.ravel()[~np.asarray(ok)]
        raise RuntimeError(f"{'diffrax' if native else 'jax'}/{method_id}: the solve failed at z = {bad[:3]} "
                           f"(h = {h}, {n_steps} steps)")
    return np.asarray(grads).reshape(z.shape)


@functools.lru_cache(maxsize=None)
def _compiled_multistep(method_id: str):
    """jit(vmap(grad)) of y_N with respect to lambda for the fixed-order formula ``method_id``
    on y' = lambda y: the exact starting values as the FBDF/QNDF difference table, then the
    solvers' own corrector step (:func:`.multistep.corrector_step`) at the fixed step h."""
    jax = _jax()
    import jax.numpy as jnp
    import optimistix as optx

    from stiffcore import multistep as ms
    from stiffcore.catalogue import VARIABLE_ORDER, get_method

    from .multistep import _tables, corrector_step

    method = get_method(method_id)
    k, s = method.order, method.stages
    family = next(f for f in VARIABLE_ORDER.values() if f.members[k - 1] == method.id)
    tables = _tables(family, jnp.float64)
    history = jnp.asarray(ms.history_matrix(s))
    # a linear corrector: Newton meets it at once, and a residual at round-off (eps |z| |y| up
    # to |z| = 1e8) never meets Cauchy termination, so stop on the increments
    finder = optx.Newton(**ROOT_TOL, cauchy_termination=False)

    def y_n(lam, h, y0, n_steps):
        table = history @ (jnp.exp(jnp.arange(s) * lam * h) * y0)[:, None]

        def step(table, j):
            _, table, result, _ = corrector_step(tables, lambda t, y: lam * y, (s + j) * h, table, h, k, finder, 50)
            return table, result == optx.RESULTS.successful

        table, ok = jax.lax.scan(step, table, jnp.arange(n_steps - s + 1))
        return table[0, 0], jnp.all(ok)

    return jax.jit(jax.vmap(jax.grad(y_n, has_aux=True), in_axes=(0, None, None, None)), static_argnums=3)


def multistep_gradient(method_id: str, z, h: float = 1.0, y0: float = 1.0, n_steps: int | None = None):
    """d y_N / d lambda of the fixed-order formula ``method_id`` (bdf1..5, ndf1..4) on
    y' = lambda y from the exact starting values y_j = e^{j lambda h} y0 (j < s), through the
    diffrax FBDF/QNDF corrector step, for every lambda = z / h (vmapped)."""
    from stiffcore.catalogue import get_method

    n_steps = get_method(method_id).stages + 4 if n_steps is None else int(n_steps)
    z = np.asarray(z, dtype=float)
    grads, ok = _compiled_multistep(method_id)(z.ravel() / h, float(h), float(y0), n_steps)
    if not np.all(ok):  # errors do not raise under vmap: report them here
        raise RuntimeError(f"jax/{method_id}: the corrector failed at z = {z.ravel()[~np.asarray(ok)][:3]}")
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
def _compiled_reversible(base_id: str):
    """(base, run), compiled once per base: ``run(solver, lam, h, y0, n, perturbation)``
    takes n <= MAX_REVERSIBLE_STEPS forward steps with d y_n / d lambda, then the n backward
    steps from (y_n (1 + perturbation), z_n), and gives (y_n, d y_n / d lambda, rebuilt y0).
    The solver (its coupling a traced scalar) and every number are arguments, and it is
    vmapped over REVERSIBLE_BATCH values of lambda, so each call the suite makes reuses one
    compilation (the gradient is computed even where the suite does not read it: a second
    variant would cost a second compilation, more than the run)."""
    jax = _jax()
    import diffrax
    import equinox as eqx
    import jax.numpy as jnp

    from stiffcore.reversible import reversible_step_back

    base = _solver(base_id, native=False) if base_id in OURS else _explicit(base_id)
    term = diffrax.ODETerm(lambda t, y, a: a * y)

    def forward(solver, lam, h, y0, n):
        y, z, _ = _fixed_steps(solver, term, lam, h, jnp.array([y0]), n, MAX_REVERSIBLE_STEPS)
        return y[0], z

    def run(solver, lam, h, y0, n, perturbation):
        (y_n, z_n), dy = jax.value_and_grad(forward, argnums=1, has_aux=True)(solver, lam, h, y0, n)
        psi = solver.base_map(term, lam, lambda v: v)

        def back(i, state):
            k = n - 1 - i
            return reversible_step_back(lambda a, b, v: psi(a, b, v)[0], k * h, (k + 1) * h, *state, solver.coupling)
        rebuilt, _ = jax.lax.fori_loop(0, n.astype(int), back, (y_n[None] * (1 + perturbation), z_n.reshape(-1)))
        return y_n, dy, rebuilt[0]

    return base, eqx.filter_jit(eqx.filter_vmap(run, in_axes=(None, 0, None, None, None, None)))


def reversible_run(base_id, z, h, y0, n_steps, coupling, perturbation=0.0, gradient=True):
    """Forward n reversible steps on y' = lambda y for every lambda = z / h (vmapped; gradient
    by jax.grad, computed whatever ``gradient`` says), then rebuild y0 from
    y_n * (1 + perturbation) with the core's backward step around the same base step."""
    import jax.numpy as jnp

    from .reversible import Reversible

    if not 1 <= n_steps <= MAX_REVERSIBLE_STEPS:
        raise ValueError(f"n_steps must be in 1..{MAX_REVERSIBLE_STEPS} for the jax hooks, got {n_steps}")
    z = np.atleast_1d(np.asarray(z, dtype=float))
    if z.ndim != 1 or z.size > REVERSIBLE_BATCH:
        raise ValueError(f"z must be at most {REVERSIBLE_BATCH} values for the jax hooks, got shape {z.shape}")
    padded = np.concatenate([z, np.full(REVERSIBLE_BATCH - z.size, z[-1])])  # one shape: one compilation
    base, run = _compiled_reversible(base_id)
    solver = Reversible(base, jnp.asarray(float(coupling)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unstable configurations are measured on purpose
        y_n, dy, rebuilt = run(solver, jnp.asarray(padded / h), jnp.asarray(float(h)), jnp.asarray(float(y0)),
                               jnp.asarray(float(n_steps)), jnp.asarray(float(perturbation)))
    return dict(y_n=np.asarray(y_n)[: z.size], y0_rebuilt=np.asarray(rebuilt)[: z.size],
                dy_dlambda=np.asarray(dy)[: z.size])


def _explicit(method_id):
    import diffrax

    from stiffcore.catalogue import get_method

    return getattr(diffrax, get_method(method_id).name)()


def install() -> None:
    from . import SOLVERS  # noqa: F401  (the classes are the registration: nothing to add to diffrax)


one_step_gradient, n_step_gradient, rober_gradient = make_hooks(native=False)
