"""FBDF and QNDF as solve_ivp methods: the OdeSolver contract, accuracy on problems we did not
write (the IVP test set), the options every stiffcore SciPy solver takes, and exact discrete
sensitivities (forward and adjoint) through the difference table."""

import numpy as np
import pytest
from helpers import (
    HIRES_T1, HIRES_Y0, OREGO_T1, OREGO_Y0, hires, orego, step_end_reference, weighted_error,
)
from scipy.integrate import BDF, OdeSolver, solve_ivp
from scipy.integrate._ivp import ivp as scipy_ivp
from scipy.sparse import csr_matrix

import stiffcore.adapters.scipy as sc
from stiffcore.adapters.scipy import solve_ivp_sensitivity
from stiffcore.problems import POLLU, ROBER, VANDERPOL

NAMES = ["FBDF", "QNDF"]


def _final_error(problem, sol, rtol, atol):
    ref = problem.reference[1] if problem.reference is not None else \
        step_end_reference(problem.fun(), problem.y0, [problem.t_span[1]], problem.jac_fun())[-1]
    return weighted_error(sol.y[:, -1], ref, rtol, atol)


def test_registered_beside_scipys_bdf_without_shadowing_it():
    for name in NAMES:
        assert scipy_ivp.METHODS[name] is sc.SOLVERS[name] is getattr(sc, name)
        assert issubclass(sc.SOLVERS[name], OdeSolver)
        assert sc.solver_class(name.lower()) is sc.SOLVERS[name]
    assert scipy_ivp.METHODS["BDF"] is BDF
    assert "Shampine & Reichelt" in sc.QNDF.__doc__ and "max_order" in sc.FBDF.__doc__
    with pytest.raises(ValueError, match="fixed-order multistep formula.*'FBDF' and 'QNDF'"):
        sc.solver_class("bdf2")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("problem, rtol", [(ROBER, 1e-4), (ROBER, 1e-6), (ROBER, 1e-8), (POLLU, 1e-6),
                                           (POLLU, 1e-8), (VANDERPOL, 1e-6), (VANDERPOL, 1e-8)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_final_state_accuracy_on_rober_pollu_and_van_der_pol(name, problem, rtol):
    """Weighted error of the final state against the problems' references: measured at most
    17x the tolerance (ROBER, rtol 1e-8; SciPy's BDF: 13x), bounded by 25x here."""
    atol = rtol * (1e-4 if problem is not VANDERPOL else 1.0)
    sol = solve_ivp(problem.fun(), problem.t_span, problem.y0, method=name, rtol=rtol, atol=atol,
                    jac=problem.jac_fun())
    assert sol.status == 0, sol.message
    assert _final_error(problem, sol, rtol, atol) <= 25


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("f, y0, t1, atol_factor",
                         [(hires, HIRES_Y0, HIRES_T1, 1e-4), (orego, OREGO_Y0, OREGO_T1, 1e-4)], ids=["HIRES", "OREGO"])
def test_hires_and_orego_are_as_accurate_as_scipys_bdf(name, f, y0, t1, atol_factor):
    """HIRES and OREGO from the IVP test set, with finite-difference Jacobians: the weighted
    error at t_end within 25x the tolerance on HIRES; on OREGO, whose relaxation jumps amplify
    every local error (SciPy's BDF: 63x at rtol 1e-6, LSODA 18x), no worse than twice SciPy's BDF."""
    rtol = 1e-6
    atol = atol_factor * rtol
    ref = step_end_reference(f, y0, [t1])[-1]
    ours = solve_ivp(f, (0.0, t1), y0, method=name, rtol=rtol, atol=atol)
    theirs = solve_ivp(f, (0.0, t1), y0, method="BDF", rtol=rtol, atol=atol)
    err, err_bdf = weighted_error(ours.y[:, -1], ref, rtol, atol), weighted_error(theirs.y[:, -1], ref, rtol, atol)
    assert ours.status == 0 and err <= max(25, 2 * err_bdf), (err, err_bdf)


@pytest.mark.parametrize("name", NAMES)
def test_medical_akzo_nobel_with_a_sparsity_pattern_and_its_jump(name, medakzo_reference):
    """MEDAKZO (400 unknowns, banded; the boundary value switches off at t = 5): differences
    by colour of ``jac_sparsity``, and the switch as a jump (history restarted) or not."""
    f, y0, sparsity, ref = medakzo_reference
    rtol, atol = 1e-6, 1e-6
    with_jump = solve_ivp(f, (0, 20), y0, method=name, rtol=rtol, atol=atol, jac_sparsity=sparsity, jumps=[5.0])
    without = solve_ivp(f, (0, 20), y0, method=name, rtol=rtol, atol=atol, jac_sparsity=sparsity)
    assert with_jump.success and without.success
    assert 5.0 in with_jump.t
    assert weighted_error(with_jump.y[:, -1], ref, rtol, atol) <= 25
    assert weighted_error(without.y[:, -1], ref, rtol, atol) <= 25


@pytest.mark.parametrize("name", NAMES)
def test_a_cantera_mechanism_at_t_eval(name, gri_mech):
    """GRI-Mech 3.0 (53 species, eigenvalues to -5e8) with 30 log-spaced t_eval: within 3x of
    the step ends' own error, and no worse than twice SciPy's BDF at the outputs (measured:
    FBDF 25.5x the tolerance, QNDF 30.6x, SciPy's BDF 17.1x, LSODA 3.6x; the step ends 53x)."""
    problem, ts, reference = gri_mech
    rtol, atol = 1e-6, 1e-10
    kw = dict(rtol=rtol, atol=atol, jac=problem.jac_fun())
    out = solve_ivp(problem.fun(), problem.t_span, problem.y0, t_eval=ts, method=name, **kw)
    steps = solve_ivp(problem.fun(), problem.t_span, problem.y0, method=name, **kw)
    bdf = solve_ivp(problem.fun(), problem.t_span, problem.y0, t_eval=ts, method="BDF", **kw)
    at_steps = weighted_error(steps.y[:, 1:].T, reference(steps.t[1:]), rtol, atol)
    at_outputs = weighted_error(out.y.T, reference(ts), rtol, atol)
    of_bdf = weighted_error(bdf.y.T, reference(ts), rtol, atol)
    assert out.success and at_outputs <= 3 * max(at_steps, 1.0) and at_outputs <= 2 * of_bdf, \
        (at_outputs, at_steps, of_bdf)


@pytest.mark.parametrize("name", NAMES)
def test_rober_to_1e8_and_van_der_pol_at_mu_1e6(name):
    """Long spans and extreme stiffness: ROBER to t = 1e8 (y conserved, final state against
    SciPy's Radau at rtol 1e-11), Van der Pol with mu = 1e6 on [0, 2]."""
    rtol, atol = 1e-6, 1e-10
    ref = solve_ivp(ROBER.fun(), (0, 1e8), ROBER.y0, method="Radau", rtol=1e-11, atol=1e-15, jac=ROBER.jac_fun())
    sol = solve_ivp(ROBER.fun(), (0, 1e8), ROBER.y0, method=name, rtol=rtol, atol=atol, jac=ROBER.jac_fun())
    assert sol.success and weighted_error(sol.y[:, -1], ref.y[:, -1], rtol, atol) <= 25
    assert np.max(np.abs(sol.y.sum(axis=0) - 1)) < 1e-9
    mu = np.array([1e6])
    vdp = solve_ivp(VANDERPOL.fun(mu), (0, 2), VANDERPOL.y0, method=name, rtol=rtol, atol=rtol,
                    jac=VANDERPOL.jac_fun(mu))
    vdp_ref = step_end_reference(VANDERPOL.fun(mu), VANDERPOL.y0, [2.0], VANDERPOL.jac_fun(mu))[-1]
    assert vdp.success and weighted_error(vdp.y[:, -1], vdp_ref, rtol, rtol) <= 25


@pytest.mark.parametrize("name", NAMES)
def test_t_eval_between_steps_is_as_accurate_as_step_ends(name):
    """ROBER with 40 log-spaced t_eval (the interpolating polynomial of each step's order)
    against a reference restarted at every time: within 3x of the step ends' own error."""
    rtol, atol = 1e-6, 1e-10
    ts = np.geomspace(1e-5, 1e5, 40)
    kw = dict(method=name, rtol=rtol, atol=atol, jac=ROBER.jac_fun())
    out = solve_ivp(ROBER.fun(), (0.0, 1e5), ROBER.y0, t_eval=ts, **kw)
    steps = solve_ivp(ROBER.fun(), (0.0, 1e5), ROBER.y0, **kw)
    between = weighted_error(out.y.T, step_end_reference(ROBER.fun(), ROBER.y0, ts, ROBER.jac_fun()), rtol, atol)
    ends = weighted_error(steps.y[:, 1:].T, step_end_reference(ROBER.fun(), ROBER.y0, steps.t[1:], ROBER.jac_fun()),
                          rtol, atol)
    assert between <= 3 * max(ends, 1.0), (between, ends)


@pytest.mark.parametrize("name", NAMES)
def test_dense_output_on_hires_meets_the_tolerance(name):
    rtol, atol = 1e-6, 1e-10
    ts = np.linspace(1.0, HIRES_T1, 50)
    sol = solve_ivp(hires, (0.0, HIRES_T1), HIRES_Y0, method=name, rtol=rtol, atol=atol, dense_output=True)
    assert weighted_error(sol.sol(ts).T, step_end_reference(hires, HIRES_Y0, ts), rtol, atol) <= 25
    np.testing.assert_array_equal(sol.sol(sol.t[1:]), sol.y[:, 1:])  # exactly the steps' values at step ends


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("span", [(0.0, 5.0), (5.0, 0.0)])
def test_either_direction_and_never_past_t_bound(name, span):
    t0, t1 = span
    seen = []

    def f(t, y):
        seen.append(t)
        return np.array([-y[1], y[0]])

    y0 = np.array([np.cos(t0), np.sin(t0)])
    sol = solve_ivp(f, span, y0, method=name, rtol=1e-8, atol=1e-10)
    assert sol.status == 0 and sol.t[-1] == t1
    np.testing.assert_allclose(sol.y[:, -1], [np.cos(t1), np.sin(t1)], atol=1e-5)
    assert min(seen) >= min(span) and max(seen) <= max(span)


@pytest.mark.parametrize("name", NAMES)
def test_zero_length_span_and_empty_state(name):
    sol = solve_ivp(lambda t, y: -y, (1.0, 1.0), [2.0], method=name)
    assert sol.status == 0 and sol.y[0, -1] == 2.0
    sol = solve_ivp(lambda t, y: y, (0.0, 1.0), np.zeros(0), method=name)
    assert sol.status == 0 and sol.y.shape[0] == 0


@pytest.mark.parametrize("name", NAMES)
def test_terminal_event_is_located_on_the_interpolant(name):
    """y' = -y from 1 stops where y = 0.5, at t = ln 2."""
    event = lambda t, y: y[0] - 0.5  # noqa: E731
    event.terminal = True
    sol = solve_ivp(lambda t, y: -y, (0.0, 10.0), [1.0], method=name, events=event, rtol=1e-8, atol=1e-12)
    # a weighted error of 25 in y (the bound of the accuracy tests) is 2.5e-7 in t, where |y'| = 0.5
    assert sol.status == 1 and sol.t_events[0][0] == pytest.approx(np.log(2), abs=2.5e-7)
    assert sol.t[-1] == sol.t_events[0][0] and sol.y[0, -1] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("jac_kind", ["callable", "sparse", "sparsity", "banded", "gmres", "none"])
def test_every_linear_solver_option_gives_the_same_solution(name, jac_kind):
    """POLLU (20 species) through each Jacobian and linear-solver option of the stiffcore
    solvers: all within the tolerance of the reference."""
    jac = POLLU.jac_fun()
    pattern = csr_matrix(jac(0.0, POLLU.y0 + 1.0) != 0)
    options = {"callable": dict(jac=jac), "sparse": dict(jac=lambda t, y: csr_matrix(jac(t, y))),
               "sparsity": dict(jac_sparsity=pattern), "banded": dict(lband=19, uband=19),
               "gmres": dict(jac=jac, linear_solver="gmres"), "none": {}}[jac_kind]
    rtol, atol = 1e-6, 1e-10
    sol = solve_ivp(POLLU.fun(), POLLU.t_span, POLLU.y0, method=name, rtol=rtol, atol=atol, **options)
    assert sol.status == 0, sol.message
    assert _final_error(POLLU, sol, rtol, atol) <= 25


@pytest.mark.parametrize("name", NAMES)
def test_max_order_first_step_and_max_step_are_honoured(name):
    solver = sc.SOLVERS[name](ROBER.fun(), 0.0, ROBER.y0, 1e3, rtol=1e-6, atol=1e-10, jac=ROBER.jac_fun(),
                              max_order=2, first_step=1e-7, max_step=50.0)
    times = [solver.t]
    while solver.status == "running":
        solver.step()
        times.append(solver.t)
    assert solver.status == "finished"
    assert max(solver.orders) == 2 and solver.orders[0] == 1
    assert times[1] == pytest.approx(1e-7) and np.max(np.diff(times)) <= 50.0
    default = sc.SOLVERS[name](ROBER.fun(), 0.0, ROBER.y0, 1e3, rtol=1e-6, atol=1e-10, jac=ROBER.jac_fun())
    while default.status == "running":
        default.step()
    assert max(default.orders) == 5


@pytest.mark.parametrize("name", NAMES)
def test_fixed_steps_raise_the_order_once_the_history_allows(name):
    sol = sc.SOLVERS[name](lambda t, y: -y, 0.0, [1.0], 1.0, first_step=0.01, adaptive=False)
    while sol.status == "running":
        sol.step()
    assert sol.orders[:10] == [1, 1, 2, 2, 2, 3, 3, 3, 3, 4] and max(sol.orders) == 5  # k + 1 steps at order k
    # the two order-1 steps of the start leave 2 (h^2 / 2) e^-1 = 3.7e-5 in y(1); later steps add little
    assert sol.y[0] == pytest.approx(np.exp(-1.0), abs=6e-5)
    with pytest.raises(ValueError, match="with fixed steps needs first_step=h"):
        sc.SOLVERS[name](lambda t, y: -y, 0.0, [1.0], 1.0, adaptive=False)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [0, 6, 2.5, "3"])
def test_a_bad_max_order_is_named(name, bad):
    with pytest.raises(ValueError, match="max_order must be an integer in 1..5"):
        solve_ivp(lambda t, y: -y, (0, 1), [1.0], method=name, max_order=bad)


@pytest.mark.parametrize("name", NAMES)
def test_jumps_restart_the_history_at_order_one(name):
    """f switches from -y to -y + 5 at t = 1: steps land on it, the next starts a new history
    at order 1, and the solution stays within the tolerance of the exact one."""
    rhs = lambda t, y: -y + (5.0 if t > 1.0 else 0.0)  # noqa: E731
    exact = lambda t: np.where(t <= 1, np.exp(-t), 5 + (np.exp(-1) - 5) * np.exp(-(t - 1)))  # noqa: E731
    solver = sc.SOLVERS[name](rhs, 0.0, [1.0], 3.0, rtol=1e-8, atol=1e-10, jumps=[1.0])
    times = [0.0]
    while solver.status == "running":
        solver.step()
        times.append(solver.t)
    i = times.index(1.0)
    assert solver.restarts[0] and solver.restarts[i] and solver.orders[i] == 1 and sum(solver.restarts) == 2
    assert abs(solver.y[0] - exact(3.0)) <= 20 * (1e-10 + 1e-8 * abs(exact(3.0)))
    without = solve_ivp(rhs, (0.0, 3.0), [1.0], method=name, rtol=1e-8, atol=1e-10)
    assert without.nfev > solver.nfev  # stepping over the jump costs rejections


# --- discrete sensitivities -----------------------------------------------------------------

@pytest.fixture(scope="module")
def rober_log():
    return ROBER.log_parameterised()


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_adjoint_sensitivities_agree_and_match_radau(name, rober_log):
    r = rober_log
    ts = np.geomspace(1e-3, 1e3, 7)
    kw = dict(method=name, t_eval=ts, jac=r.jac, jac_p=r.jac_p, rtol=1e-8, atol=1e-12)
    fwd = solve_ivp_sensitivity(r.rhs, (0.0, 1e3), r.y0, r.params, mode="forward", **kw)
    rev = solve_ivp_sensitivity(r.rhs, (0.0, 1e3), r.y0, r.params, mode="reverse", loss=lambda Y: (Y**2).sum(),
                                loss_grad=lambda Y: 2 * Y, checkpoint_every=17, **kw)
    assert fwd.status == 0 and rev.status == 0 and fwd.orders.max() == 5
    np.testing.assert_allclose(np.einsum("it,ipt->p", 2 * fwd.y, fwd.sensitivities), rev.grad, rtol=1e-10)
    radau = solve_ivp_sensitivity(r.rhs, (0.0, 1e3), r.y0, r.params, mode="reverse", loss=lambda Y: (Y**2).sum(),
                                  loss_grad=lambda Y: 2 * Y, **dict(kw, method="RadauIIA5"))
    np.testing.assert_allclose(rev.grad, radau.grad, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_sensitivities_are_exact_for_the_discrete_solution(name):
    """Replaying a recorded step and order sequence (re-samplings and order changes
    included): the adjoint gradient and dL/dy0 equal central differences of the replayed
    solution with the same sequence, to 1e-7."""
    p = np.array([1.3, 0.7])
    fun = lambda t, y, p: np.array([-p[0] * y[0] + y[1] ** 2, p[1] * y[0] - 3 * y[1]])  # noqa: E731
    y0 = np.array([1.0, 0.2])
    solver = sc.SOLVERS[name](lambda t, y: fun(t, y, p), 0.0, y0, 4.0, rtol=1e-5, atol=1e-8)
    steps = [0.0]
    while solver.status == "running":
        solver.step()
        steps.append(solver.t)
    assert len(set(solver.orders)) >= 3 and len(set(np.round(np.diff(steps), 12))) > 3
    # out_index -1: the last step, counted from the end as in numpy
    common = dict(method=name, orders=solver.orders, restarts=solver.restarts, out_index=[len(steps) // 2, -1])
    weights = np.array([[1.0], [2.0]])
    loss = lambda Y: float(np.sum(Y**2 * weights))  # noqa: E731
    rev = sc.sensitivity_on_steps(fun, steps, y0, p, mode="reverse", loss=loss, loss_grad=lambda Y: 2 * Y * weights,
                                  **common)

    def replayed_loss(q, y):
        return loss(sc.sensitivity_on_steps(fun, steps, y, q, mode="forward", **common).y)

    eps = 1e-6
    fd_p = [(replayed_loss(p + eps * e, y0) - replayed_loss(p - eps * e, y0)) / (2 * eps) for e in np.eye(2)]
    fd_y0 = [(replayed_loss(p, y0 + eps * e) - replayed_loss(p, y0 - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(rev.grad, fd_p, rtol=1e-7)
    np.testing.assert_allclose(rev.grad_y0, fd_y0, rtol=1e-7)


def test_sensitivities_through_a_jump_restart_and_need_orders():
    fun = lambda t, y, p: -p[0] * y + (p[1] if t > 1.0 else 0.0)  # noqa: E731
    p = np.array([1.0, 5.0])
    res = solve_ivp_sensitivity(fun, (0.0, 3.0), [1.0], p, method="QNDF", t_eval=[3.0], jumps=[1.0],
                                rtol=1e-10, atol=1e-12)
    # y(3) = 5/a + (e^{-a} - 5/a) e^{-2a} with a = p0: dy/dp1 = (1 - e^{-2a}) / a
    assert res.status == 0 and res.sensitivities[0, 1, 0] == pytest.approx(1 - np.exp(-2.0), rel=1e-7)
    with pytest.raises(ValueError, match="needs orders="):
        sc.sensitivity_on_steps(fun, [0.0, 0.1], [1.0], p, method="FBDF")


def test_diagnose_refuses_a_variable_order_method_by_name():
    with pytest.raises(ValueError, match="diagnose analyses one-step methods.*'FBDF' changes order"):
        sc.diagnose(lambda t, y, p: -p * y, (0, 1), [1.0], [2.0], method="FBDF")


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy's, as h reaches 1e308
@pytest.mark.parametrize("name", NAMES + ["RadauIIA5", "Rodas5P"])
def test_an_infinite_t_bound_ends_with_an_error_instead_of_hanging(name):
    """y' = -y towards t_bound = inf: h grows until t + h overflows (both FBDF and the one-step
    solvers retried forever before, as SciPy's own Radau still does)."""
    with pytest.raises(ValueError, match="t \\+ h overflows.*t_bound = inf is not reached"):
        solve_ivp(lambda t, y: -y, (0.0, np.inf), [1.0], method=name)
