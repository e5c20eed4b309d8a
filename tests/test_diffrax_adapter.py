"""The diffrax adapter: solver classes, exact discrete gradients, jit/vmap/grad, Reversible."""

import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
diffrax = pytest.importorskip("diffrax")
jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optimistix as optx  # noqa: E402

import stiffcore.adapters.diffrax as adapter  # noqa: E402
from stiffcore import one_step_gradient as predicted_one_step  # noqa: E402
from stiffcore.adapters.diffrax import backend  # noqa: E402
from stiffcore.adapters.diffrax.reversible import Reversible  # noqa: E402
from stiffcore.catalogue import get_method  # noqa: E402
from stiffcore.problems import ROBER  # noqa: E402

EPS = np.finfo(float).eps
LOG_ROBER = ROBER.log_parameterised()
TS = jnp.logspace(-5, 5, 20)
TIGHT = diffrax.VeryChord(rtol=1e-10, atol=1e-14)


def rober(t, y, logk):
    k1, k2, k3 = jnp.exp(logk)
    a, b, c = y
    r1, r2, r3 = k1 * a, k2 * b * b, k3 * b * c
    return jnp.stack([-r1 + r3, r1 - r2 - r3, r2])


def solve_rober(solver, logk, rtol=1e-8):
    return diffrax.diffeqsolve(diffrax.ODETerm(rober), solver, 0.0, 1e5, 1e-6, jnp.asarray(ROBER.y0), args=logk,
                               saveat=diffrax.SaveAt(ts=TS), max_steps=100_000,
                               stepsize_controller=diffrax.PIDController(rtol=rtol, atol=1e-4 * rtol))


def test_solver_classes_follow_diffrax_conventions():
    assert set(adapter.SOLVERS) == {"RadauIIA5", "RadauIIA3", "Rodas5P", "Rodas4", "ROS3P", "Rosenbrock23",
                                    "TRBDF2", "SDIRK2", "BackwardEuler", "Trapezoid", "ImplicitMidpoint",
                                    "GaussLegendre4", "GaussLegendre6", "LobattoIIIC2"}
    for name, cls in adapter.SOLVERS.items():
        m = get_method(name)
        solver = cls()
        assert isinstance(solver, eqx.Module) and isinstance(solver, diffrax.AbstractSolver)
        assert isinstance(solver, diffrax.AbstractAdaptiveSolver) == m.adaptive, name
        assert isinstance(solver, diffrax.AbstractImplicitSolver) == (m.family != "rosenbrock"), name
        assert solver.order(None) == m.order
        assert solver.error_order(None) == (m.error_order + 1 if m.adaptive else None)
        assert m.reference in cls.__doc__


@pytest.mark.parametrize("method", backend.OURS)
def test_one_step_gradient_is_h_R_prime_z_y0(method):
    z = -(10.0 ** np.arange(-2, 8.01, 1.0))
    got = backend.make_hooks(native=False)[0](method, z, h=0.5, y0=2.0)
    want = predicted_one_step(method, z, h=0.5, y0=2.0)
    assert np.all(np.abs(got - want) <= np.maximum(1e-10, 10 * EPS * np.abs(z)) * np.abs(want))


def test_implicit_gradient_does_not_depend_on_the_root_finder_tolerance():
    """Backward Euler on y' = -p y^3: h f_p / (1 - h f_y) at the returned y1, however loose the solve."""
    term = diffrax.ODETerm(lambda t, y, p: -p * y**3)
    for rtol in (1e-2, 1e-10):
        # (a fixed step: plain chord; VeryChord's divergence test is tuned for adaptive rejection)
        solver = adapter.BackwardEuler(root_finder=optx.Chord(rtol=rtol, atol=rtol))

        def y1(p):
            return diffrax.diffeqsolve(term, solver, 0.0, 0.02, 0.02, jnp.array([1.0]), args=p).ys[-1, 0]

        p = 5.0
        y, g = jax.value_and_grad(y1)(p)
        assert float(g) == pytest.approx(float(0.02 * -(y**3) / (1 + 0.02 * 3 * p * y**2)), rel=1e-12)


def test_rober_accuracy_and_log_k_gradient_match_scipy():
    from stiffcore.adapters.scipy.backend import rober_gradient as scipy_gradient

    want = scipy_gradient("rodas5p", np.asarray(TS), rtol=1e-10)
    logk = jnp.asarray(LOG_ROBER.params)
    for solver in (adapter.Rodas5P(), adapter.RadauIIA5(), adapter.Rodas4()):
        sol = jax.jit(lambda q, s=solver: solve_rober(s, q))(logk)
        ref = ROBER.reference[1]
        assert np.all(np.abs(np.asarray(sol.ys[-1]) - ref) <= 10 * (1e-8 * np.abs(ref) + 1e-12)), solver
        g = jax.jit(jax.grad(lambda q, s=solver: (solve_rober(s, q).ys ** 2).sum()))(logk)
        assert np.allclose(g, want, rtol=1e-5), (solver, g, want)


def test_chord_iterates_until_it_converges():
    """A chord whose rate is 0.6 (y^3 = 2 on the slope at y = 1) needs dozens of iterations:
    diffrax 0.7.2's VeryChord reported divergence after two; ours runs them and converges.
    A plain diffrax.VeryChord handed to a solver is given the same termination."""
    from stiffcore.adapters.diffrax.root_finders import VeryChord, fixed_chord

    sol = optx.root_find(lambda y, _: y ** 3 - 2, VeryChord(rtol=1e-8, atol=1e-8), jnp.array(1.0),
                         max_steps=200, throw=False)
    assert sol.result == optx.RESULTS.successful
    assert int(sol.stats["num_steps"]) > 10
    assert float(sol.value) == pytest.approx(2 ** (1 / 3), rel=1e-7)
    mended = fixed_chord(diffrax.VeryChord(rtol=1e-5, atol=1e-9, kappa=0.05))
    assert type(mended) is VeryChord and (mended.rtol, mended.atol, mended.kappa) == (1e-5, 1e-9, 0.05)
    # the placeholders that diffeqsolve fills from the step-size controller survive
    placeholder = diffrax.with_stepsize_controller_tols(diffrax.VeryChord)()
    assert fixed_chord(placeholder).rtol is placeholder.rtol


@pytest.mark.parametrize("name", ["RadauIIA5", "RadauIIA3", "GaussLegendre6"])
def test_split_stage_newton_matches_the_coupled_one_on_rober(name):
    """``split_stages=True`` solves the stages as the n x n systems of A's eigenvalues (one real
    and one complex for RadauIIA5); the default solves the coupled 3n system.  Both meet the
    tolerance at the outputs with about the same steps (RadauIIA5's split took 977 steps with
    the unmended chord), and the gradients, each exact for its own steps, agree.  Under
    jit(vmap(grad)) with a batch of two parameter sets too, with jaxlib's CPU async dispatch
    off: on (jaxlib 0.10) a vmapped split solve of BRUSS-2D hung at 0% CPU."""
    cls = getattr(adapter, name)

    def run(solver):
        sol = jax.jit(lambda q: solve_rober(solver, q, rtol=1e-6))(jnp.asarray(LOG_ROBER.params))
        g = jax.jit(jax.grad(lambda q: (solve_rober(solver, q, rtol=1e-6).ys[-1] ** 2).sum()))(
            jnp.asarray(LOG_ROBER.params))
        return sol, np.asarray(g)

    split, g_split = run(cls(split_stages=True))
    coupled, g_coupled = run(cls())
    assert int(split.stats["num_steps"]) <= 1.2 * int(coupled.stats["num_steps"])
    ref = ROBER.reference[1]
    for sol in (split, coupled):
        assert np.all(np.abs(np.asarray(sol.ys[-1]) - ref) <= 10 * (1e-6 * np.abs(ref) + 1e-10))
    np.testing.assert_allclose(g_split, g_coupled, rtol=1e-4)

    batch = jnp.stack([jnp.asarray(LOG_ROBER.params), jnp.asarray(LOG_ROBER.params) + 0.1])
    loss = lambda s: lambda q: (solve_rober(s, q, rtol=1e-6).ys[-1] ** 2).sum()  # noqa: E731
    async_dispatch = jax.config.read("jax_cpu_enable_async_dispatch")
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    try:
        g_batch = jax.jit(jax.vmap(jax.grad(loss(cls(split_stages=True)))))(batch)
    finally:
        jax.config.update("jax_cpu_enable_async_dispatch", async_dispatch)
    np.testing.assert_allclose(g_batch[0], g_split, rtol=1e-9)
    assert np.all(np.isfinite(g_batch[1])) and not np.allclose(g_batch[1], g_split)


def test_jit_vmap_grad_float32_and_pytree_states():
    term = diffrax.ODETerm(lambda t, y, a: {"u": -a * y["u"] + y["v"], "v": -y["v"]})
    y0 = {"u": jnp.array([1.0, 2.0]), "v": jnp.array([0.5, 0.5])}

    def final(a, y0, solver=adapter.Rodas5P(), rtol=1e-8, atol=1e-10):
        dtype = jax.tree_util.tree_leaves(y0)[0].dtype  # times in the state's precision
        sol = diffrax.diffeqsolve(term, solver, jnp.asarray(0.0, dtype), jnp.asarray(1.0, dtype),
                                  jnp.asarray(0.1, dtype), y0, args=a,
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
        return sol.ys["u"][-1].sum()

    batch = jax.vmap(final, in_axes=(0, None))(jnp.array([10.0, 100.0, 1000.0]), y0)
    single = jnp.stack([final(a, y0) for a in (10.0, 100.0, 1000.0)])
    assert np.allclose(batch, single, rtol=1e-12)
    g = jax.jit(jax.grad(final))(100.0, y0)
    eps = 1e-4
    assert float(g) == pytest.approx(float((final(100.0 + eps, y0) - final(100.0 - eps, y0)) / (2 * eps)), rel=1e-5)
    y32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), y0)
    out = final(jnp.float32(100.0), y32, adapter.RadauIIA5(), rtol=1e-4, atol=1e-6)
    assert out.dtype == jnp.float32 and abs(float(out) - float(single[1])) < 1e-3 * abs(float(single[1]))


def test_fixed_step_methods_are_not_adaptive_and_errors_surface_the_diffrax_way():
    term = diffrax.ODETerm(lambda t, y, a: -a * y)
    with pytest.raises(Exception, match="adaptive"):
        diffrax.diffeqsolve(term, adapter.ROS3P(), 0.0, 1.0, 0.1, jnp.array([1.0]), args=1.0,
                            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8))
    with pytest.raises(Exception, match="max_steps|maximum number of solver steps"):
        diffrax.diffeqsolve(term, adapter.Rodas5P(), 0.0, 1.0, 0.1, jnp.array([1.0]), args=1.0, max_steps=3,
                            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12))
    # a root find that cannot succeed on a fixed step fails the solve with diffrax's RESULTS
    stiff_root = diffrax.ODETerm(lambda t, y, a: -a * y**3)
    sol = diffrax.diffeqsolve(stiff_root, adapter.RadauIIA3(root_finder=optx.Newton(rtol=1e-12, atol=1e-14)), 0.0,
                              1.0, 1.0, jnp.array([1.0]), args=1e8, max_steps=2, throw=False)
    assert sol.result != diffrax.RESULTS.successful


def test_rosenbrock_uses_the_time_derivative():
    term = diffrax.ODETerm(lambda t, y, a: jnp.cos(t) * y)
    ts = jnp.linspace(0.0, 5.0, 6)
    sol = diffrax.diffeqsolve(term, adapter.Rodas5P(), 0.0, 5.0, 0.01, jnp.array([1.0]), saveat=diffrax.SaveAt(ts=ts),
                              stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-12))
    assert np.allclose(sol.ys[:, 0], np.exp(np.sin(ts)), rtol=1e-7)


# --- Reversible --------------------------------------------------------------------------
def test_reversible_reconstruction_after_1000_steps():
    from helpers import check_batched_reconstruction

    check_batched_reconstruction(backend, np.array((-1e-3, -1.2, -5.0, -1e3)))


def test_reversible_wraps_diffrax_solvers_and_warns_where_the_core_predicts_growth():
    term = diffrax.ODETerm(lambda t, y, a: a * y)
    base = diffrax.Kvaerno5(root_finder=diffrax.VeryChord(rtol=1e-10, atol=1e-12))
    with pytest.warns(RuntimeWarning, match="grows by"):
        diffrax.diffeqsolve(term, Reversible(base), 0.0, 1.0, 0.1, jnp.array([1.0]), args=-5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = diffrax.diffeqsolve(term, Reversible(diffrax.Tsit5(), 0.999), 0.0, 1.0, 1e-3, jnp.array([1.0]),
                                  args=-1e-3 / 1e-3 * 1e-3)
    assert float(sol.ys[-1, 0]) == pytest.approx(np.exp(-1e-3), rel=1e-9)


def test_reversible_warns_on_large_states_from_krylov_estimates():
    """520 unknowns (above EIGEN_CHECK_MAX_N): Ritz values of Arnoldi on JVPs inside the traced
    solve.  h = 0.1, diffrax's ImplicitEuler base, rates in [-500, -50] (z in [-50, -5],
    stable at coupling 0.999) plus one at -5 (z = -0.5, in the unstable band)."""
    from helpers import large_linear_system

    base = diffrax.ImplicitEuler(root_finder=diffrax.VeryChord(rtol=1e-10, atol=1e-12))
    stable = np.linspace(-500.0, -50.0, 520)
    term = diffrax.ODETerm(lambda t, y, A: A @ y)   # one compile for both spectra
    for rates, warns in ((np.r_[stable[:-1], -5.0], True), (stable, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            diffrax.diffeqsolve(term, Reversible(base), 0.0, 0.3, 0.1, jnp.ones(520),
                                args=jnp.asarray(large_linear_system(rates)))
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert any("grows by" in m for m in messages) == warns, messages


@pytest.mark.parametrize("bad, error, match", [
    (lambda: Reversible(diffrax.Tsit5(), 1.5), ValueError, "strictly between 0 and 1"),
    (lambda: Reversible(diffrax.LeapfrogMidpoint()), ValueError, "one-step"),
    (lambda: Reversible("rk4"), TypeError, "diffrax solver instance"),
    (lambda: Reversible(diffrax.Kvaerno5()), ValueError, "root-finder tolerances"),
])
def test_reversible_constructor_mistakes_raise_immediately(bad, error, match):
    with pytest.raises(error, match=match):
        bad()
