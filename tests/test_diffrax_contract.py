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


# --- issue 20: what diffrax's own users rely on ---------------------------------------------------
FAMILIES = ["RadauIIA5", "TRBDF2", "Rodas5P", "ROS3P"]   # fully implicit, DIRK, Rosenbrock, fixed-only
IMPLICIT = [n for n in SOLVERS if issubclass(adapter.SOLVERS[n], diffrax.AbstractImplicitSolver)]


def _tol(name) -> float:
    """Global relative error at rtol 1e-6 (or constant steps of 0.01): orders <= 3 reach 1e-4."""
    return 1e-4 if get_method(name).order <= 3 else 1e-5


def _pytree_decay(t, y, args):
    return jax.tree_util.tree_map(lambda v: -args * v, y)


@pytest.mark.parametrize("name", FAMILIES)
def test_pytree_and_complex_states(name):
    """A nested PyTree of mixed shapes, and a complex state on y' = (-1/2 + 2i) y (Newton and
    the error norm on its real and imaginary parts), under jit."""
    y0 = {"a": jnp.arange(1.0, 4.0), "b": (jnp.array(2.0), jnp.ones((2, 2)))}
    sol = jax.jit(lambda y: diffrax.diffeqsolve(diffrax.ODETerm(_pytree_decay), _solver(name), 0.0, 1.0, 0.01, y,
                                                args=0.5, stepsize_controller=_controller(name)))(y0)
    for leaf, start in zip(jax.tree_util.tree_leaves(sol.ys), jax.tree_util.tree_leaves(y0)):
        np.testing.assert_allclose(leaf[-1], start * np.exp(-0.5), rtol=_tol(name))
    lam = -0.5 + 2j
    z0 = jnp.array([1.0 + 0j, 0.5j])
    sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: lam * y), _solver(name), 0.0, 1.0, 0.01, z0,
                              stepsize_controller=_controller(name), saveat=diffrax.SaveAt(ts=jnp.array([0.3, 1.0])))
    assert sol.ys.dtype == z0.dtype
    np.testing.assert_allclose(sol.ys, np.exp(lam * np.array([0.3, 1.0]))[:, None] * np.asarray(z0), rtol=_tol(name))


@pytest.mark.parametrize("name", [n for n in IMPLICIT if get_method(n).order >= 3] + ["TRBDF2"])
@pytest.mark.parametrize("root_finder", [lambda: __import__("optimistix").Newton(rtol=1e-10, atol=1e-12),
                                         lambda: __import__("optimistix").Chord(rtol=1e-10, atol=1e-12),
                                         lambda: diffrax.VeryChord(rtol=1e-10, atol=1e-12)],
                         ids=["Newton", "Chord", "VeryChord"])
def test_custom_root_finders_with_their_own_tolerances(name, root_finder):
    """optimistix's Newton and Chord (and VeryChord) as root_finder, with constant steps (where
    their own tolerances are required) and with a PID controller."""
    solver = adapter.SOLVERS[name](root_finder=root_finder())
    term = diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -4.0 * y[0] - 0.5 * y[1]]))
    ref = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 2.0, 0.01, jnp.array([1.0, 0.0]),
                              stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12)).ys[-1]
    for controller, dt0 in ((diffrax.ConstantStepSize(), 1e-3), (diffrax.PIDController(rtol=1e-7, atol=1e-9), 0.01)):
        sol = diffrax.diffeqsolve(term, solver, 0.0, 2.0, dt0, jnp.array([1.0, 0.0]), stepsize_controller=controller,
                                  max_steps=4096)
        tol = {1: 5e-3, 2: 1e-4}.get(get_method(name).order, 1e-5)
        np.testing.assert_allclose(sol.ys[-1], ref, atol=tol, err_msg=f"{name} {type(controller).__name__}")


@pytest.mark.parametrize("name", FAMILIES)
def test_subsaveat_dense_evaluate_and_derivative(name):
    """SubSaveAt with ts, t1, fn and steps at once; SaveAt(dense=True): Solution.evaluate and
    Solution.derivative between steps, forwards and backwards in time."""
    subs = [diffrax.SubSaveAt(ts=jnp.linspace(0.0, 1.0, 7)), diffrax.SubSaveAt(t1=True, fn=lambda t, y, a: y.sum()),
            diffrax.SubSaveAt(steps=True)]
    sol = diffrax.diffeqsolve(DECAY, _solver(name), 0.0, 1.0, 0.05, jnp.array([1.0, 2.0]), args=0.8,
                              stepsize_controller=_controller(name), saveat=diffrax.SaveAt(subs=subs))
    ts_out, t1_out, steps_out = sol.ys
    np.testing.assert_allclose(ts_out, np.exp(-0.8 * np.linspace(0, 1, 7))[:, None] * [1.0, 2.0], rtol=_tol(name))
    np.testing.assert_allclose(t1_out, [3 * np.exp(-0.8)], rtol=_tol(name))
    finite = np.isfinite(np.asarray(sol.ts[2]))
    assert finite.sum() > 1 and sol.ts[2][finite][-1] == 1.0
    np.testing.assert_allclose(steps_out[finite], np.exp(-0.8 * np.asarray(sol.ts[2])[finite])[:, None] * [1, 2],
                               rtol=_tol(name))
    for t0, t1, dt0 in ((0.0, 1.0, 0.05), (1.0, 0.0, -0.05)):
        sol = diffrax.diffeqsolve(DECAY, _solver(name), t0, t1, dt0, jnp.array([1.0, 2.0]), args=0.8,
                                  stepsize_controller=_controller(name), saveat=diffrax.SaveAt(dense=True))
        for t in (0.13, 0.5, 0.91):
            exact = np.exp(-0.8 * (t - t0)) * np.array([1.0, 2.0])
            np.testing.assert_allclose(sol.evaluate(t), exact, rtol=_tol(name), err_msg=f"{name} {t0}->{t1}")
            np.testing.assert_allclose(sol.derivative(t), -0.8 * exact, rtol=1e-3, err_msg=f"{name} {t0}->{t1}")


@pytest.mark.parametrize("name", FAMILIES)
def test_constant_step_size_and_step_to_take_exactly_the_given_steps(name):
    grid = jnp.array([0.0, 0.1, 0.15, 0.4, 0.7, 1.0])
    for controller, dt0 in ((diffrax.ConstantStepSize(), 0.125), (diffrax.StepTo(grid), None)):
        sol = diffrax.diffeqsolve(DECAY, _solver(name, fixed=True), 0.0, 1.0, dt0, jnp.array([1.0]), args=0.8,
                                  stepsize_controller=controller, saveat=diffrax.SaveAt(steps=True))
        steps = np.asarray(sol.ts)[np.isfinite(np.asarray(sol.ts))]
        expected = np.linspace(0.125, 1.0, 8) if dt0 else np.asarray(grid[1:])
        np.testing.assert_allclose(steps, expected, rtol=1e-12)
        assert sol.stats["num_steps"] == expected.size
        np.testing.assert_allclose(np.asarray(sol.ys)[: steps.size, 0], np.exp(-0.8 * steps),
                                   rtol=5e-3 if get_method(name).order <= 2 else 1e-3)


def _kinked(t, y, args):
    """y' = -y + 10 after t = 0.5: f jumps there."""
    return -y + jnp.where(t > 0.5, 10.0, 0.0)


@pytest.mark.parametrize("name", ["RadauIIA5", "TRBDF2", "Rodas5P", "Rosenbrock23"])
def test_every_pid_controller_option(name):
    """pcoeff/icoeff/dcoeff, factormin/factormax, dtmax, dtmin with force_dtmin, step_ts (steps
    land on them), jump_ts (the solver restarts f there: made_jump) and norm."""
    import optimistix as optx

    exact = np.exp(-1.0) + 10 * (1 - np.exp(-0.5))
    base = dict(rtol=1e-8, atol=1e-10)
    jump = dict(jump_ts=jnp.array([0.5]))   # (undeclared: test_an_undeclared_jump_in_f below)
    variants = [
        dict(jump, pcoeff=0.3, icoeff=0.4, dcoeff=0.1), dict(jump, factormin=0.5, factormax=2.0),
        dict(jump, dtmax=0.02), dict(jump, dtmin=1e-3, force_dtmin=True), dict(jump, step_ts=jnp.array([0.25, 0.75])),
        dict(jump), dict(jump, norm=optx.max_norm),
    ]
    for options in variants:
        controller = diffrax.PIDController(**base, **options)
        sol = diffrax.diffeqsolve(diffrax.ODETerm(_kinked), _solver(name), 0.0, 1.0, 0.01, jnp.array([1.0]),
                                  stepsize_controller=controller, saveat=diffrax.SaveAt(steps=True, t1=True),
                                  max_steps=20_000)
        finite = np.isfinite(np.asarray(sol.ts))   # (steps=True pads to max_steps with inf)
        steps, y1 = np.asarray(sol.ts)[finite], float(np.asarray(sol.ys)[finite][-1, 0])
        if "dtmax" in options:
            assert np.max(np.diff(np.concatenate([[0.0], steps]))) <= 0.02 + 1e-12
        if "step_ts" in options:
            assert {0.25, 0.75} <= set(np.round(steps, 14).tolist())
        if "jump_ts" in options:
            assert np.min(np.abs(steps - 0.5)) < 1e-15   # (diffrax ends the step one ulp before a jump)
            assert abs(y1 - exact) < 1e-6 * exact, (name, options, y1 - exact)


@pytest.mark.parametrize("name", ["RadauIIA5", "TRBDF2", "SDIRK2", "Rodas5P"])
@pytest.mark.parametrize("options", [{}, dict(pcoeff=0.3, icoeff=0.4), dict(dtmax=0.02)])
def test_an_undeclared_jump_in_f(name, options):
    """Without jump_ts the controller shrinks h towards the jump and steps through it.  The
    implicit RKs used to end the solve there ("Nonlinear solve diverged"): their stage solves
    found stage states, whose increments at h ~ 1e-14 were round-off against rtol |Y|."""
    sol = diffrax.diffeqsolve(diffrax.ODETerm(_kinked), _solver(name), 0.0, 1.0, 0.01, jnp.array([1.0]),
                              stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10, **options),
                              max_steps=20_000)
    assert abs(float(sol.ys[-1, 0]) - (np.exp(-1.0) + 10 * (1 - np.exp(-0.5)))) < 10 * _tol(name)


@pytest.mark.parametrize("name", FAMILIES[:3])
def test_backsolve_adjoint_takes_our_solvers(name):
    """BacksolveAdjoint wraps the term in its adjoint system: our solvers integrate it (an ODE
    still), and the gradient matches the exact one on a mild decay."""
    def loss(k):
        sol = diffrax.diffeqsolve(DECAY, adapter.SOLVERS[name](), 0.0, 1.0, 0.01, jnp.array([1.0, 2.0]), args=k,
                                  stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
                                  adjoint=diffrax.BacksolveAdjoint())
        return sol.ys[-1].sum()

    np.testing.assert_allclose(jax.grad(loss)(0.8), -3 * np.exp(-0.8), rtol=1e-5)


@pytest.mark.parametrize("name", SOLVERS + ["FBDF", "QNDF"])
def test_forward_mode_gives_the_reverse_mode_gradient_under_jit_and_vmap(name):
    """``adjoint=diffrax.ForwardMode()`` with ``jax.jacfwd`` (the cheap gradient for a few
    parameters: 2-3x faster than reverse mode on ROBER, benchmarks/compiled_speed.py) is the
    same discrete gradient as diffrax's default adjoint, through SaveAt(ts) outputs between
    steps, for a batch of parameters whose solves take different steps."""
    multistep = name in ("FBDF", "QNDF")
    adaptive = multistep or get_method(name).adaptive
    solver = getattr(adapter, name)() if multistep else _solver(name)
    rtol = 1e-6 if multistep else practical_rtol(name, 1e-6)
    controller = diffrax.PIDController(rtol=rtol, atol=1e-9) if adaptive else diffrax.ConstantStepSize()
    term = diffrax.ODETerm(lambda t, y, a: jnp.stack([-a[0] * y[0] + y[1], -a[1] * y[1]]))
    ts = jnp.array([0.05, 0.3, 0.7, 1.0])

    def loss(a, adjoint):
        sol = diffrax.diffeqsolve(term, solver, 0.0, 1.0, 0.01, jnp.array([1.0, 2.0]), args=a, adjoint=adjoint,
                                  saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=4096)
        return jnp.sum(sol.ys ** 2)

    a = jnp.array([[50.0, 1.0], [2.0, 300.0]]) if adaptive else jnp.array([[5.0, 1.0], [2.0, 3.0]])
    reverse = jax.jit(jax.vmap(jax.grad(lambda a_: loss(a_, diffrax.RecursiveCheckpointAdjoint()))))(a)
    forward = jax.jit(jax.vmap(jax.jacfwd(lambda a_: loss(a_, diffrax.ForwardMode()))))(a)
    assert np.all(np.isfinite(np.asarray(forward))), (name, forward)
    np.testing.assert_allclose(np.asarray(forward), np.asarray(reverse), rtol=1e-9, err_msg=name)


def test_terms_that_are_not_odes_are_refused_by_name():
    bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(1,), key=jax.random.PRNGKey(0))
    term = diffrax.MultiTerm(DECAY, diffrax.ControlTerm(lambda t, y, a: jnp.ones((1, 1)), bm))
    with pytest.raises(ValueError, match="integrate ODEs.*MultiTerm"):
        diffrax.diffeqsolve(term, adapter.Rodas5P(), 0.0, 1.0, 0.01, jnp.array([1.0]), args=0.5)


@pytest.mark.parametrize("name", ["RadauIIA5", "TRBDF2", "Rodas5P"])
def test_diffrax_event_is_located_on_our_interpolation(name):
    """diffrax.Event with a root finder: the solve ends at the event, located on the solver's
    own continuous extension (a falling body with drag lands at the exact time)."""
    import optimistix as optx
    from scipy.optimize import brentq

    term = diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -9.81 - 0.7 * y[1]]))
    event = diffrax.Event(lambda t, y, args, **kwargs: y[0], root_finder=optx.Newton(rtol=1e-10, atol=1e-10))
    sol = diffrax.diffeqsolve(term, _solver(name), 0.0, 10.0, 0.01, jnp.array([10.0, 0.0]), event=event,
                              stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-11))
    exact = brentq(lambda s: 10.0 - 9.81 / 0.7 * s + 9.81 / 0.49 * (1 - np.exp(-0.7 * s)), 0.1, 10.0, xtol=1e-14)
    assert abs(float(sol.ts[-1]) - exact) < 1e-6 and abs(float(sol.ys[-1][0])) < 1e-8


@pytest.mark.parametrize("name", FAMILIES)
def test_float32_states_under_strict_dtype_promotion(name):
    """jax's strict dtype promotion (diffrax's own test configuration): float32 times and a
    float32 or complex64 state under x64 take no implicit promotion inside our steps (the
    control of one unit of time was a float64 Python float against a float32 f)."""
    cls = adapter.SOLVERS[name]
    solver = cls(root_finder=diffrax.VeryChord(rtol=1e-5, atol=1e-6)) if name in IMPLICIT else cls()
    for y0, lam in ((jnp.ones(2, jnp.float32), -1.0), (jnp.ones(2, jnp.complex64), -1j)):
        with jax.numpy_dtype_promotion("strict"):
            sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: jnp.asarray(lam, y.dtype) * y), solver,
                                      jnp.float32(0), jnp.float32(1), jnp.float32(0.01), y0)
        assert sol.ys.dtype == y0.dtype
        np.testing.assert_allclose(np.asarray(sol.ys[-1]), np.exp(lam) * np.ones(2), rtol=1e-3)
