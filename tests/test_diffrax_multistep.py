"""``FBDF`` and ``QNDF`` as diffrax solvers: diffrax's contract (jit, vmap and grad together,
``SaveAt(ts)`` between steps, backwards in time, PyTree states, ``jump_ts``, events),
accuracy on problems we did not write, and exact gradients of the discrete solution."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
diffrax = pytest.importorskip("diffrax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
from helpers import (  # noqa: E402
    HIRES_T1, HIRES_Y0, OREGO_T1, OREGO_Y0, hires, orego, step_end_reference, weighted_error,
)
from scipy.integrate import solve_ivp  # noqa: E402

import stiffcore.adapters.diffrax as adapter  # noqa: E402
import stiffcore.adapters.scipy  # noqa: E402,F401  (registers FBDF/QNDF with solve_ivp)
from stiffcore.adapters.diffrax.backend import multistep_gradient  # noqa: E402
from stiffcore.predictions import multistep_gradient as predicted_gradient  # noqa: E402
from stiffcore.problems import ROBER, VANDERPOL  # noqa: E402

NAMES = ["FBDF", "QNDF"]
LOG_ROBER = ROBER.log_parameterised()
ROBER_TERM = diffrax.ODETerm(LOG_ROBER.rhs)


def _solve(name, term, t1, y0, rtol, atol, t0=0.0, ts=None, args=None, **kw):
    return diffrax.diffeqsolve(term, getattr(adapter, name)(**kw.pop("solver", {})), t0, t1, None, y0, args=args,
                               saveat=diffrax.SaveAt(ts=ts) if ts is not None else diffrax.SaveAt(t1=True),
                               stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, **kw),
                               max_steps=200_000)


def test_exported_beside_the_one_step_solvers():
    assert issubclass(adapter.FBDF, diffrax.AbstractImplicitSolver)
    assert issubclass(adapter.QNDF, diffrax.AbstractAdaptiveSolver)
    assert "Shampine & Reichelt" in adapter.QNDF.__doc__ and "max_order" in adapter.FBDF.__doc__


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8])
def test_rober_saveat_ts_between_steps_honours_the_tolerance(name, rtol):
    """Twelve log-spaced outputs, most between steps (the step's interpolating polynomial):
    weighted error at most 25x the tolerance (measured 3.7, 7.5, 16 for FBDF), and about the
    steps SciPy's FBDF takes (the same controller, driven through PIDController)."""
    ts = np.concatenate([[0.0], np.logspace(-5, 5, 12)])
    atol = rtol * 1e-4
    sol = jax.jit(lambda p: _solve(name, ROBER_TERM, 1e5, jnp.asarray(ROBER.y0), rtol, atol, ts=ts, args=p))(
        jnp.asarray(LOG_ROBER.params))
    ref = step_end_reference(ROBER.fun(), ROBER.y0, ts, ROBER.jac_fun())
    assert weighted_error(np.asarray(sol.ys), ref, rtol, atol) <= 25
    scipy = solve_ivp(ROBER.fun(), (0.0, 1e5), ROBER.y0, method=name, rtol=rtol, atol=atol, jac=ROBER.jac_fun())
    steps = int(sol.stats["num_accepted_steps"])
    assert abs(steps - (scipy.t.size - 1)) <= 0.15 * scipy.t.size, (steps, scipy.t.size)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("problem", ["HIRES", "OREGO", "VDP"])
def test_ivp_test_set_problems_at_their_end_time(name, problem):
    """HIRES, OREGO (the IVP test set) and Van der Pol at mu = 1e3: the final state within 25x
    the tolerance (OREGO, whose relaxation jumps amplify every local error: 200x; SciPy's BDF
    63x)."""
    rtol = 1e-6
    if problem == "VDP":
        term = diffrax.ODETerm(VANDERPOL.rhs)
        f_np, y0, t1, jac, atol, args, bound = (VANDERPOL.fun(), VANDERPOL.y0, VANDERPOL.t_span[1],
                                                VANDERPOL.jac_fun(), rtol, jnp.asarray(VANDERPOL.params), 25)
    else:
        g, y0, t1 = {"HIRES": (hires, HIRES_Y0, HIRES_T1), "OREGO": (orego, OREGO_Y0, OREGO_T1)}[problem]
        term = diffrax.ODETerm(lambda t, y, a: g(t, y, xp=jnp))
        f_np, jac, atol, args, bound = g, None, 1e-4 * rtol, None, 25 if problem == "HIRES" else 200
    sol = _solve(name, term, t1, jnp.asarray(y0), rtol, atol, args=args)
    ref = step_end_reference(f_np, y0, [t1], jac)[-1]
    assert weighted_error(np.asarray(sol.ys[-1]), ref, rtol, atol) <= bound


@pytest.mark.parametrize("name", NAMES)
def test_rober_to_1e8(name):
    rtol, atol = 1e-6, 1e-10
    sol = _solve(name, ROBER_TERM, 1e8, jnp.asarray(ROBER.y0), rtol, atol, args=jnp.asarray(LOG_ROBER.params))
    ref = step_end_reference(ROBER.fun(), ROBER.y0, [1e8], ROBER.jac_fun())[-1]
    assert abs(float(sol.ys[-1].sum()) - 1) < 1e-9
    assert weighted_error(np.asarray(sol.ys[-1]), ref, rtol, atol) <= 25


@pytest.mark.parametrize("name", NAMES)
def test_jit_vmap_grad_together_match_scipys_discrete_sensitivities(name):
    """ROBER's log-k gradient of a loss on SaveAt(ts) outputs at rtol 1e-8, under jit(vmap(grad))
    over two parameter sets: each row equals SciPy's discrete forward sensitivities of its own
    FBDF/QNDF solve to 1e-6 (measured 1e-8) and the unbatched gradient."""
    from stiffcore.adapters.scipy import solve_ivp_sensitivity

    rtol, atol = 1e-8, 1e-12
    times = np.array([1e-2, 1.0, 1e2, 1e4])

    def loss(p):
        return _solve(name, ROBER_TERM, times[-1], jnp.asarray(ROBER.y0), rtol, atol, ts=times, args=p).ys[:, 1].sum()

    params = jnp.stack([jnp.asarray(LOG_ROBER.params), jnp.asarray(LOG_ROBER.params) + 0.01])
    batched = np.asarray(jax.jit(jax.vmap(jax.grad(loss)))(params))
    for p, row in zip(params, batched):
        res = solve_ivp_sensitivity(LOG_ROBER.rhs, (0.0, times[-1]), ROBER.y0, np.asarray(p), method=name,
                                    t_eval=times, rtol=rtol, atol=atol, jac=LOG_ROBER.jac, jac_p=LOG_ROBER.jac_p)
        expected = res.sensitivities[1].sum(axis=-1)
        assert np.allclose(row, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    assert np.allclose(np.asarray(jax.grad(loss)(params[0])), batched[0], rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_backwards_in_time_with_a_pytree_state(name):
    term = diffrax.ODETerm(lambda t, y, a: {"u": -a * y["u"], "v": -100 * (y["v"] - y["u"])})
    y1 = {"u": jnp.array(1.0), "v": jnp.array([2.0, 3.0])}
    sol = diffrax.diffeqsolve(term, getattr(adapter, name)(), 1.0, 0.0, None, y1, args=0.7,
                              stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-11))
    assert abs(float(sol.ys["u"][-1]) - np.exp(0.7)) < 1e-6
    assert np.all(np.isfinite(np.asarray(sol.ys["v"])))


@pytest.mark.parametrize("name", NAMES)
def test_jump_ts_restarts_the_history(name):
    """y' = -y + 10 for t >= 0.5: PIDController(jump_ts=[0.5]) lands there and the solver
    restarts its history at order 1 from f just after the jump (made_jump): accurate to the
    tolerance in fewer steps than stepping blind through the jump."""
    term = diffrax.ODETerm(lambda t, y, a: -y + jnp.where(t >= 0.5, 10.0, 0.0))
    exact = np.exp(-1.0) + 10 * (1 - np.exp(-0.5))
    jump = _solve(name, term, 1.0, jnp.array([1.0]), 1e-8, 1e-10, jump_ts=jnp.array([0.5]))
    blind = _solve(name, term, 1.0, jnp.array([1.0]), 1e-8, 1e-10)
    assert abs(float(jump.ys[-1, 0]) - exact) < 100 * 1e-8 * exact
    assert int(jump.stats["num_steps"]) < int(blind.stats["num_steps"])


@pytest.mark.parametrize("name", NAMES)
def test_diffrax_event_is_located_on_the_interpolating_polynomial(name):
    import optimistix as optx
    from scipy.optimize import brentq

    term = diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -9.81 - 0.7 * y[1]]))
    event = diffrax.Event(lambda t, y, args, **kwargs: y[0], root_finder=optx.Newton(rtol=1e-10, atol=1e-10))
    sol = diffrax.diffeqsolve(term, getattr(adapter, name)(), 0.0, 10.0, 0.01, jnp.array([10.0, 0.0]), event=event,
                              stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12))
    exact = brentq(lambda s: 10.0 - 9.81 / 0.7 * s + 9.81 / 0.49 * (1 - np.exp(-0.7 * s)), 0.1, 10.0, xtol=1e-14)
    assert abs(float(sol.ts[-1]) - exact) < 1e-6 and abs(float(sol.ys[-1][0])) < 1e-7


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("linear", ["SparseLU", "GMRES"])
def test_sparse_and_matrix_free_linear_solvers_give_the_same_solution(name, linear):
    solver = {"SparseLU": adapter.SparseLU(jac_sparsity=np.ones((3, 3))),
              "GMRES": lx.GMRES(rtol=1e-12, atol=1e-14)}[linear]
    kw = dict(args=jnp.asarray(LOG_ROBER.params), ts=np.array([1.0, 100.0]))
    dense = _solve(name, ROBER_TERM, 100.0, jnp.asarray(ROBER.y0), 1e-7, 1e-11, **kw)
    other = _solve(name, ROBER_TERM, 100.0, jnp.asarray(ROBER.y0), 1e-7, 1e-11, solver={"linear_solver": solver},
                   **kw)
    assert weighted_error(np.asarray(other.ys), np.asarray(dense.ys), 1e-7, 1e-11) < 5


@pytest.mark.parametrize("name", NAMES)
def test_max_order_is_honoured_and_constant_steps_need_tolerances(name):
    """max_order=1 is backward Euler with an error estimate: many more steps; ConstantStepSize
    without root-finder tolerances is diffrax's own error, and with them the order rises."""
    term = diffrax.ODETerm(lambda t, y, a: -y)
    low = _solve(name, term, 1.0, jnp.array([1.0]), 1e-6, 1e-9, solver={"max_order": 1})
    high = _solve(name, term, 1.0, jnp.array([1.0]), 1e-6, 1e-9)
    assert int(low.stats["num_steps"]) > 3 * int(high.stats["num_steps"])
    with pytest.raises(ValueError, match="tolerances"):
        diffrax.diffeqsolve(term, getattr(adapter, name)(), 0.0, 1.0, 0.1, jnp.array([1.0]))
    fixed = diffrax.diffeqsolve(term, getattr(adapter, name)(root_finder=diffrax.VeryChord(rtol=1e-8, atol=1e-10)),
                                0.0, 1.0, 0.01, jnp.array([1.0]))
    # the order rises from 1 (backward Euler: 1.8e-3 here); the first steps' error stays (4.5e-5)
    assert abs(float(fixed.ys[-1, 0]) - np.exp(-1.0)) < 1e-4


@pytest.mark.filterwarnings("ignore:Complex dtype support")  # diffrax's own, before ours
@pytest.mark.parametrize("bad", [0, 6, 2.5, "3"])
def test_a_bad_max_order_or_a_complex_state_is_named(bad):
    with pytest.raises(ValueError, match="max_order must be an integer in 1..5"):
        adapter.FBDF(max_order=bad)
    with pytest.raises(ValueError, match="real states"):
        diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: -y), adapter.FBDF(), 0.0, 1.0, None,
                            jnp.ones(2, jnp.complex128),
                            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9))


@pytest.mark.parametrize("formula", ["bdf2", "bdf5", "ndf3"])
def test_conformance_hook_follows_the_k_step_recurrence(formula):
    """The JAX backend's multistep hook, through the solvers' own corrector step: d y_N / d
    lambda from exact starting values equals the core's 60-digit recurrence to round-off."""
    z = -np.logspace(-2, 8, 6)
    measured, predicted = multistep_gradient(formula, z), predicted_gradient(formula, z, 1.0)
    assert np.max(np.abs(measured - predicted) / np.abs(predicted)) < 1e-10


def test_diagnose_refuses_a_variable_order_method_by_name():
    from stiffcore.adapters.diffrax.diagnose import diagnose

    with pytest.raises(ValueError, match="diagnose analyses one-step methods.*'QNDF' changes order"):
        diagnose(diffrax.ODETerm(lambda t, y, a: -a * y), adapter.QNDF(), 0.0, 1.0, None, jnp.ones(1),
                 jnp.ones(1), stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9))


def _chord_every_step(solver_kw, rtol, atol):
    """A root finder that linearises at every step (optx.Chord: no Jacobian is kept)."""
    import optimistix as optx

    return dict(solver_kw, root_finder=optx.Chord(rtol=rtol, atol=atol, norm=optx.rms_norm))


def test_one_jacobian_and_factorisation_serve_many_steps(monkeypatch):
    """BRUSS-2D (128 unknowns) with SparseLU: the kept Jacobian and the factors found again by
    the matrix's entries factorise far less often than once per step attempt (measured 84 in 369),
    and the solution is as accurate as that of a chord method that linearises every step
    (weighted errors against Radau at 1e-12: 27.7 and 43.2; FBDF's global error on this grid
    is some 30x its rtol)."""
    import stiffcore.linalg.sparse_lu as sparse_lu
    from stiffcore.problems.large import bruss2d, bruss2d_sparsity, bruss2d_y0

    factorisations = []
    superlu = sparse_lu.superlu
    monkeypatch.setattr(sparse_lu, "superlu", lambda *a, **k: factorisations.append(1) or superlu(*a, **k))
    sparse_lu._FACTORS.clear()
    rhs, rtol = bruss2d(8, jnp), 1e-6
    term = diffrax.ODETerm(lambda t, y, a: rhs(t, y))
    kw = dict(solver={"linear_solver": adapter.SparseLU(bruss2d_sparsity(8))}, jump_ts=[1.1])
    kept = _solve("FBDF", term, 11.5, jnp.asarray(bruss2d_y0(8)), rtol, rtol, **kw)
    attempts = int(kept.stats["num_steps"])
    assert 0 < len(factorisations) < attempts / 2, (len(factorisations), attempts)
    every = _solve("FBDF", term, 11.5, jnp.asarray(bruss2d_y0(8)), rtol, rtol, jump_ts=[1.1],
                   solver=_chord_every_step(kw["solver"], rtol, rtol))
    f = bruss2d(8)
    y_switch = solve_ivp(f, (0.0, 1.1), bruss2d_y0(8), method="Radau", rtol=1e-12, atol=1e-12).y[:, -1]
    ref = solve_ivp(f, (1.1, 11.5), y_switch, method="Radau", rtol=1e-12, atol=1e-12).y[:, -1]
    errors = [weighted_error(np.asarray(sol.ys[-1]), ref, rtol, rtol) for sol in (kept, every)]
    assert errors[0] <= 1.5 * errors[1], errors


@pytest.mark.parametrize("name", NAMES)
def test_van_der_pol_relaxation_with_a_kept_jacobian(name):
    """Van der Pol at mu = 1e6 through its relaxation jump (the IVP test set's VDPOL, t in [0, 2]):
    the Jacobian changes sign on the jump, so a kept one fails Newton and is evaluated again
    before the step is rejected.  About the steps of a chord method that linearises every step
    (measured FBDF 1271 / 1264), and about the error of SciPy's BDF at t = 2 (weighted 7.6;
    FBDF 10.0, QNDF 9.6)."""
    mu, rtol = 1e6, 1e-6
    term = diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], mu * ((1 - y[0] ** 2) * y[1] - y[0])]))
    y0 = jnp.array([2.0, 0.0])
    kept = _solve(name, term, 2.0, y0, rtol, rtol)
    every = _solve(name, term, 2.0, y0, rtol, rtol, solver=_chord_every_step({}, rtol, rtol))
    assert abs(int(kept.stats["num_steps"]) - int(every.stats["num_steps"])) < 0.2 * int(every.stats["num_steps"])
    f_np = lambda t, y: np.array([y[1], mu * ((1 - y[0] ** 2) * y[1] - y[0])])  # noqa: E731
    jac = lambda t, y: np.array([[0.0, 1.0], [mu * (-2 * y[0] * y[1] - 1), mu * (1 - y[0] ** 2)]])  # noqa: E731
    ref = step_end_reference(f_np, np.array([2.0, 0.0]), [2.0], jac)[-1]
    scipy_bdf = solve_ivp(f_np, (0.0, 2.0), [2.0, 0.0], method="BDF", rtol=rtol, atol=rtol, jac=jac).y[:, -1]
    assert weighted_error(np.asarray(kept.ys[-1]), ref, rtol, rtol) < 3 * weighted_error(scipy_bdf, ref, rtol, rtol)
