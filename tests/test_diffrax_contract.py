"""diffrax's documented contract, for every stiffcore solver class.

Written from diffrax's documentation of ``diffeqsolve``: solvers compose with ``jax.jit``,
``jax.vmap`` and ``jax.grad`` together; ``t1 < t0`` integrates backwards; ``SaveAt(ts)``
evaluates the solver's interpolation between step ends; ``ConstantStepSize`` takes the
solver's steps and a step that fails ends the solve with a ``RESULTS`` code (raised with
``throw=True``).
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
diffrax = pytest.importorskip("diffrax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from helpers import practical_rtol, rober_rtol, step_end_reference, weighted_error  # noqa: E402

import stiffcore.adapters.diffrax as adapter  # noqa: E402
from stiffcore.catalogue import get_method  # noqa: E402
from stiffcore.catalogue.dense import interpolation_order  # noqa: E402

SOLVERS = sorted(adapter.SOLVERS)
DECAY = diffrax.ODETerm(lambda t, y, a: -a * y)


def _controller(name, rtol=1e-6, atol=1e-9):
    """Adaptive where the method has an estimate; else constant steps (dt0)."""
    if get_method(name).adaptive:
        return diffrax.PIDController(rtol=rtol, atol=atol)
    return diffrax.ConstantStepSize()


def _solver(name, fixed=False):
    """With constant steps an implicit solver needs its own root-finder tolerances (diffrax refuses otherwise)."""
    cls = adapter.SOLVERS[name]
    if (fixed or not get_method(name).adaptive) and issubclass(cls, diffrax.AbstractImplicitSolver):
        return cls(root_finder=diffrax.VeryChord(rtol=1e-10, atol=1e-12))
    return cls()


@pytest.mark.parametrize("name", SOLVERS)
def test_grad_of_vmap_equals_the_gradients_one_by_one(name):
    """Batch elements take different numbers of steps, so the ones that finish first take
    zero-length steps while the others go on: those must not poison the gradient (they
    made it NaN for every Rosenbrock method)."""
    solver = _solver(name)
    adaptive = get_method(name).adaptive

    @jax.jit
    def final(a, t1):
        sol = diffrax.diffeqsolve(DECAY, solver, 0.0, t1, 0.01, jnp.array([1.0, 2.0]), args=a,
                                  stepsize_controller=_controller(name, rtol=practical_rtol(name, 1e-6)),
                                  max_steps=4096)
        return sol.ys[-1].sum()

    # adaptive: the rate sets the step count; fixed steps: the span does
    a = jnp.array([10.0, 100.0, 1000.0]) if adaptive else jnp.array([2.0, 3.0, 4.0])
    t1 = jnp.ones(3) if adaptive else jnp.array([0.3, 0.5, 1.0])
    batched = jax.grad(lambda a_, t1_: jax.vmap(final)(a_, t1_).sum(), argnums=(0, 1))(a, t1)
    single = [jax.grad(final, argnums=(0, 1))(a[i], t1[i]) for i in range(3)]
    for which in (0, 1):
        want = np.array([float(g[which]) for g in single])
        got = np.asarray(batched[which])
        assert np.all(np.isfinite(got)), (name, which, got)
        # under vmap a root find iterates until every element has converged, so elements take a
        # few more Newton iterations than alone: agreement to the root finder's accuracy
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-300, err_msg=name)


@pytest.mark.parametrize("name", SOLVERS)
def test_backwards_in_time(name):
    """y' = y from y(1) = e back to t = 0 is 1 (it went forwards to e^2 before)."""
    solver = _solver(name)
    term = diffrax.ODETerm(lambda t, y, args: y * (1 + 0 * t))
    ts = jnp.array([0.75, 0.5, 0.0])
    sol = diffrax.diffeqsolve(term, solver, 1.0, 0.0, -0.01, jnp.array([np.e]), saveat=diffrax.SaveAt(ts=ts),
                              stepsize_controller=_controller(name, rtol=practical_rtol(name, 1e-8), atol=1e-10),
                              max_steps=1000)
    exact = np.exp(np.asarray(ts))
    # rtol 1e-8 bounds local errors; second-order methods accumulate ~100x that globally
    tol = {1: 1e-2, 2: 1e-4}.get(get_method(name).order, 1e-6)
    np.testing.assert_allclose(np.asarray(sol.ys[:, 0]), exact, rtol=tol, err_msg=name)
    assert sol.result == diffrax.RESULTS.successful


def _rober(t, y, k):
    r1, r2, r3 = k[0] * y[0], k[1] * y[1] ** 2, k[2] * y[1] * y[2]
    return jnp.stack([-r1 + r3, r1 - r2 - r3, r2])


@pytest.fixture(scope="module")
def rober_reference():
    from stiffcore.problems import ROBER

    return lambda times: step_end_reference(ROBER.fun(), ROBER.y0, times, jac=ROBER.jac_fun())


# L-stable only: the others (|R(-inf)| = 1) crawl on ROBER (docs/stability.md)
@pytest.mark.parametrize("name", [n for n in SOLVERS if get_method(n).adaptive and get_method(n).stability.l_stable])
def test_outputs_between_steps_are_as_accurate_as_step_ends(name, rober_reference):
    """ROBER to 1e5 with 40 log-spaced SaveAt(ts): the interpolant is the method's own
    continuous extension (cubic Hermite was 127x the tolerance for Rodas5P).  Where the
    extension is of the method's order, the weighted error at the outputs is within 3x of
    the error at the step ends; where it is of lower order (Radau IIA5's collocation
    polynomial, Rodas4/5P's Steinebach extensions) it is within 3x of the step ends or of
    the tolerance, whichever is larger."""
    from stiffcore.problems import ROBER

    rtol = rober_rtol(name)
    atol = 1e-4 * rtol
    kw = dict(args=jnp.asarray(ROBER.params), max_steps=4096,
              stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
    solve = lambda saveat: diffrax.diffeqsolve(diffrax.ODETerm(_rober), _solver(name), 0.0, 1e5, 1e-6,  # noqa: E731
                                               jnp.asarray(ROBER.y0), saveat=saveat, **kw)
    ts = np.logspace(-4, 5, 40)
    out, steps = solve(diffrax.SaveAt(ts=jnp.asarray(ts))), solve(diffrax.SaveAt(steps=True))
    n = int(steps.stats["num_accepted_steps"])
    t_steps = np.asarray(steps.ts[:n])

    at_outputs = weighted_error(out.ys, rober_reference(ts), rtol, atol)
    at_steps = weighted_error(steps.ys[:n], rober_reference(t_steps), rtol, atol)
    floor = at_steps if interpolation_order(name) >= get_method(name).order else max(at_steps, 1.0)
    assert at_outputs <= 3 * floor, (name, at_outputs, at_steps)


@pytest.mark.parametrize("name", ["Rodas5P", "RadauIIA5"])
def test_interpolation_control_keeps_outputs_within_the_tolerance_on_hires(name):
    """HIRES (IVP test set), 50 SaveAt(ts): the method's own extension alone was 60x
    (Rodas5P) and 16x (RadauIIA5) the tolerance at the outputs, with the step ends at 1.1 and
    0.9; with interpolation control (the default) the outputs are within 3x of the step ends
    or the tolerance.  Without it Rodas5P's outputs stay far outside (the test can fail)."""
    from helpers import HIRES_T1, HIRES_Y0, hires

    rtol, atol = 1e-6, 1e-10
    ts = np.linspace(1.0, HIRES_T1, 50)
    term = diffrax.ODETerm(lambda t, y, args: hires(t, y, jnp))
    kw = dict(max_steps=4096, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
    ref = step_end_reference(hires, HIRES_Y0, ts)

    def outputs(solver):
        sol = diffrax.diffeqsolve(term, solver, 0.0, HIRES_T1, 1e-3, jnp.asarray(HIRES_Y0),
                                  saveat=diffrax.SaveAt(ts=jnp.asarray(ts)), **kw)
        return weighted_error(sol.ys, ref, rtol, atol)

    steps = diffrax.diffeqsolve(term, adapter.SOLVERS[name](), 0.0, HIRES_T1, 1e-3, jnp.asarray(HIRES_Y0),
                                saveat=diffrax.SaveAt(steps=True), **kw)
    n = int(steps.stats["num_accepted_steps"])
    at_steps = weighted_error(steps.ys[:n], step_end_reference(hires, HIRES_Y0, np.asarray(steps.ts[:n])), rtol, atol)
    at_outputs = outputs(adapter.SOLVERS[name]())
    assert at_outputs <= 3 * max(at_steps, 1.0), (name, at_outputs, at_steps)
    if name == "Rodas5P":
        assert outputs(adapter.SOLVERS[name](control_interpolation=False)) > 10 * max(at_steps, 1.0)


@pytest.mark.parametrize("name", ["Rodas5P", "RadauIIA5"])
def test_outputs_on_a_cantera_mechanism_are_as_accurate_as_step_ends(name, gri_mech):
    """GRI-Mech 3.0 (53 species, 325 reactions as 1,866 mass-action terms, eigenvalues to
    -5e8), 30 log-spaced SaveAt(ts), the rate constants as args: within 3x of the step ends
    or the tolerance (cubic Hermite was 63x)."""
    problem, ts, reference = gri_mech
    rtol, atol = 1e-6, 1e-10
    term = diffrax.ODETerm(problem.rhs)
    kw = dict(args=jnp.asarray(problem.params), max_steps=4096,
              stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
    solve = lambda saveat: diffrax.diffeqsolve(term, _solver(name), 0.0, problem.t_span[1], 1e-8,  # noqa: E731
                                               jnp.asarray(problem.y0), saveat=saveat, **kw)
    out, steps = solve(diffrax.SaveAt(ts=jnp.asarray(ts))), solve(diffrax.SaveAt(steps=True))
    n = int(steps.stats["num_accepted_steps"])
    at_steps = weighted_error(steps.ys[:n], reference(np.asarray(steps.ts[:n])), rtol, atol)
    at_outputs = weighted_error(out.ys, reference(ts), rtol, atol)
    assert out.result == diffrax.RESULTS.successful
    assert at_outputs <= 3 * max(at_steps, 1.0), (name, at_outputs, at_steps)


@pytest.mark.parametrize("name", ["TRBDF2", "RadauIIA5", "BackwardEuler", "Rodas5P", "Rosenbrock23"])
def test_a_failing_fixed_step_ends_the_solve(name):
    """Constant steps far too long: for implicit Runge-Kutta, y' = 1e3 e^y (which blows up at
    t ~ 4e-4) makes the root find fail; a Rosenbrock step is linear algebra and fails only
    when f or the stages become non-finite, as y' = -sqrt(y) does once a step overshoots
    zero.  The solve reports it (and raises with throw=True); it returned NaN as a success."""
    if get_method(name).family == "rosenbrock":
        term = diffrax.ODETerm(lambda t, y, args: -jnp.sqrt(y))
    else:
        term = diffrax.ODETerm(lambda t, y, args: jnp.exp(y) * 1e3)
    kw = dict(stepsize_controller=diffrax.ConstantStepSize(), max_steps=64)
    sol = diffrax.diffeqsolve(term, _solver(name, fixed=True), 0.0, 10.0, 1.0, jnp.array([1.0]), throw=False, **kw)
    assert sol.result != diffrax.RESULTS.successful, (name, sol.ys)
    with pytest.raises(Exception):
        diffrax.diffeqsolve(term, _solver(name, fixed=True), 0.0, 10.0, 1.0, jnp.array([1.0]), **kw)


@pytest.mark.timeout(120)
def test_hopeless_failures_stop_with_their_reason_not_max_steps():
    """A NaN y0 and y' = -sqrt(y) (NaN once a step overshoots y = 0 at t = 2) both ended with
    "maximum number of solver steps" after max_steps rejections: no smaller step can help a
    non-finite start, or a failure with h at round-off in t.  Now the first raises naming y0
    and the second stops with RESULTS.nonfinite long before max_steps."""
    import equinox as eqx

    controller = diffrax.PIDController(rtol=1e-6, atol=1e-9)
    with pytest.raises(eqx.EquinoxRuntimeError, match="y0 has non-finite"):
        diffrax.diffeqsolve(DECAY, adapter.Rodas5P(), 0.0, 1.0, 0.01, jnp.array([jnp.nan]), args=1.0,
                            stepsize_controller=controller, throw=False)
    sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: -jnp.sqrt(y)), adapter.Rodas5P(), 0.0, 3.0, 0.01,
                              jnp.array([1.0]), stepsize_controller=controller, throw=False, max_steps=4096)
    assert sol.result == diffrax.RESULTS.nonfinite and int(sol.stats["num_steps"]) < 1000


@pytest.mark.parametrize("name", ["Rodas5P", "RadauIIA5"])
def test_gradients_through_saveat_ts_match_a_tight_reference(name):
    """d/d(log k) of a loss over 20 SaveAt(ts) outputs of ROBER (t to 1e5), differentiating
    through the solve and the continuous extension, against SciPy's forward sensitivities of
    RadauIIA5 at rtol 1e-11 landing on every output.  The issue saw 1.7e-2 relative error
    through cubic Hermite; through the method's own extension it is 3e-8 to 6e-8 (Rodas5P)
    and 6e-10 to 3e-9 (RadauIIA5) at rtol 1e-8, measured."""
    from stiffcore.adapters.scipy import solve_ivp_sensitivity
    from stiffcore.problems import ROBER

    log_rober = ROBER.log_parameterised()
    ts = np.logspace(-4, 5, 20)
    weights = np.array([1.0, 1e4, 1.0])  # B is about 1e-5 of A and C
    ref = solve_ivp_sensitivity(log_rober.rhs, (0.0, 1e5), ROBER.y0, log_rober.params, method="RadauIIA5",
                                t_eval=ts, jac=log_rober.jac, jac_p=log_rober.jac_p, rtol=1e-11, atol=1e-17)
    expected = np.einsum("c,cpt->p", weights, ref.sensitivities)

    term = diffrax.ODETerm(lambda t, y, q_: _rober(t, y, jnp.exp(q_)))

    def loss(q):
        sol = diffrax.diffeqsolve(term, adapter.SOLVERS[name](), 0.0, 1e5, 1e-6, jnp.asarray(ROBER.y0), args=q,
                                  saveat=diffrax.SaveAt(ts=jnp.asarray(ts)), max_steps=8192,
                                  stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-12))
        return jnp.sum(sol.ys @ jnp.asarray(weights))

    got = np.asarray(jax.grad(loss)(jnp.asarray(log_rober.params)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
