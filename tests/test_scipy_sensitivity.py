"""Discrete forward and adjoint sensitivities of the SciPy adapter."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from stiffcore import one_step_gradient as predicted_one_step
from stiffcore.adapters.scipy import sensitivity_on_steps, solve_ivp_sensitivity
from stiffcore.adapters.backends import IMPLICIT as METHODS
from stiffcore.adapters.scipy.backend import one_step_gradient
from stiffcore.problems import ROBER, VANDERPOL
from stiffcore.problems.large import brusselator_1d

# ROBER in log k: p = log k, so d/dp = k d/dk
LOG_ROBER = ROBER.log_parameterised()  # p = log k, so d/dp = k d/dk
FUN, JAC, JAC_P, Q = LOG_ROBER.rhs, LOG_ROBER.jac, LOG_ROBER.jac_p, LOG_ROBER.params
T_EVAL = np.logspace(-5, 5, 20)


def loss(Y):
    return (Y**2).sum()


@pytest.fixture(scope="module")
def finite_difference_gradient():
    """Central differences of tight SciPy Radau solves (the issue's reference)."""
    def L(q):
        s = solve_ivp(lambda t, y: FUN(t, y, q), (0, 1e5), ROBER.y0, method="Radau", t_eval=T_EVAL,
                      rtol=1e-12, atol=1e-18, jac=lambda t, y: JAC(t, y, q))
        return loss(s.y)

    out = []
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1e-5
        out.append((L(Q + e) - L(Q - e)) / 2e-5)
    return np.array(out)


@pytest.mark.parametrize("method", ["RadauIIA5", "Rodas5P", "Kvaerno5"])
def test_rober_log_k_gradient_matches_finite_differences(method, finite_difference_gradient):
    r = solve_ivp_sensitivity(FUN, (0, 1e5), ROBER.y0, Q, method=method, t_eval=T_EVAL, rtol=1e-10, atol=1e-14,
                              jac=JAC, jac_p=JAC_P, mode="reverse", loss=loss)
    assert r.status == 0
    np.testing.assert_allclose(r.grad, finite_difference_gradient, rtol=1e-5)
    np.testing.assert_array_equal(r.t, T_EVAL)


VDP = VANDERPOL.rhs  # fun(t, y, p) with p = [mu]
MU = np.array([10.0])


@pytest.mark.parametrize("method", ["RadauIIA5", "Rodas5P"])
def test_reverse_mode_keeps_every_pullback_when_they_fit(method, monkeypatch):
    """By default every step's pullback is kept in one pass (no second replay); with too little
    memory for that, checkpoints and recomputed segments give the same gradient."""
    from stiffcore.adapters.scipy import sensitivity

    common = dict(method=method, t_eval=np.linspace(0.1, 1.0, 10), jac=VANDERPOL.jac, jac_p=VANDERPOL.jac_p,
                  rtol=1e-6, atol=1e-10, mode="reverse", loss=loss)
    kept = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU, **common)
    monkeypatch.setattr(sensitivity, "PULLBACK_MEMORY", 0)
    segmented = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU, **common)
    assert kept.checkpoints <= 2 < segmented.checkpoints
    np.testing.assert_allclose(kept.grad, segmented.grad, rtol=1e-12)
    np.testing.assert_allclose(kept.grad_y0, segmented.grad_y0, rtol=1e-12)


@pytest.mark.parametrize("method", ["RadauIIA5", "Rodas4", "TRBDF2", "GaussLegendre4", "LobattoIIIC2"])
def test_forward_and_reverse_modes_agree_to_round_off(method):
    fixed = method in ("GaussLegendre4", "LobattoIIIC2")
    opts = dict(first_step=0.01, adaptive=False) if fixed else dict(rtol=1e-6, atol=1e-10)
    te = np.linspace(0.1, 1.0, 10)
    common = dict(method=method, t_eval=te, jac=VANDERPOL.jac, jac_p=VANDERPOL.jac_p, **opts)
    fwd = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU, **common)
    rev = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU, mode="reverse", loss=loss, checkpoint_every=7, **common)
    assert fwd.status == 0 and rev.status == 0
    g_fwd = np.einsum("it,ipt->p", 2 * fwd.y, fwd.sensitivities)
    np.testing.assert_allclose(rev.grad, g_fwd, rtol=1e-10)
    np.testing.assert_allclose(fwd.y, rev.y, rtol=1e-14)
    assert rev.loss == pytest.approx(loss(rev.y))
    assert rev.checkpoints <= len(rev.t_steps) // 7 + 2


def test_sensitivity_is_the_derivative_of_the_discrete_map():
    """Finite differences of the replayed discrete solution (same steps) agree to ~1e-8."""
    te = np.array([0.5, 1.0])
    for method in ("Rodas5P", "Kvaerno5", "RadauIIA5"):
        common = dict(method=method, t_eval=te, first_step=0.02, adaptive=False, jac=VANDERPOL.jac,
                      jac_p=VANDERPOL.jac_p, autonomous=True)
        base = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU, **common)
        hi = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU * (1 + 1e-6), **common)
        lo = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU * (1 - 1e-6), **common)
        fd = (hi.y - lo.y) / (2e-6 * MU[0])
        np.testing.assert_allclose(base.sensitivities[:, 0, :], fd, rtol=1e-6, atol=1e-9)


def test_without_jacobians_complex_step_is_exact():
    te = np.array([1.0, 10.0])
    with_j = solve_ivp_sensitivity(FUN, (0, 10), ROBER.y0, Q, method="RadauIIA5", t_eval=te, jac=JAC, jac_p=JAC_P)
    without = solve_ivp_sensitivity(FUN, (0, 10), ROBER.y0, Q, method="RadauIIA5", t_eval=te)
    np.testing.assert_allclose(without.sensitivities, with_j.sensitivities, rtol=1e-9, atol=1e-18)


def test_non_analytic_fun_falls_back_to_differences_with_a_warning():
    def fun(t, y, p):  # float() refuses complex input
        return np.array([-float(p[0]) * float(y[0])])

    with pytest.warns(RuntimeWarning, match="central differences"):
        r = solve_ivp_sensitivity(fun, (0, 1), [1.0], [2.0], method="RadauIIA5", t_eval=[1.0], rtol=1e-10, atol=1e-12)
    assert r.sensitivities[0, 0, 0] == pytest.approx(-np.exp(-2.0), rel=1e-5)


@pytest.mark.parametrize("base", ["backward_euler", "radau_iia5"])
def test_reversible_reverse_mode_rebuilds_states_and_matches_forward(base):
    lam = np.array([-0.002, -50.0])  # z = -0.001 and -25: both outside the unstable band
    fun = lambda t, y, p: p * y  # noqa: E731
    jac = lambda t, y, p: np.diag(p)  # noqa: E731
    jac_p = lambda t, y, p: np.diag(y)  # noqa: E731
    opts = dict(method="Reversible", base=base, coupling=0.999, first_step=0.5, t_eval=[10.0], jac=jac, jac_p=jac_p)
    fwd = solve_ivp_sensitivity(fun, (0, 10), [1.0, 1.0], lam, **opts)
    rev = solve_ivp_sensitivity(fun, (0, 10), [1.0, 1.0], lam, mode="reverse", loss=loss, **opts)
    np.testing.assert_allclose(rev.grad, np.einsum("it,ipt->p", 2 * fwd.y, fwd.sensitivities), rtol=1e-10)
    assert rev.reconstruction_error < 1e-12
    from stiffcore import predict_reversible

    for i, l in enumerate(lam):
        yN, dy = predict_reversible(base, l * 0.5, h=0.5, n_steps=20, coupling=0.999)
        assert fwd.y[i, 0] == pytest.approx(yN, rel=1e-12)
        assert fwd.sensitivities[i, i, 0] == pytest.approx(dy, rel=1e-9)


# Methods whose stage values stay O(y0) while R(z) = O(1/z) compute y1 (and so its derivative)
# with relative error ~ eps*|z| through their own arithmetic; the rest reach 1e-10 everywhere.
CANCELLING = {"trbdf2", "kvaerno3", "kvaerno4", "kvaerno5", "trapezoid", "lobatto_iiic2", "ros3p", "rosenbrock23"}


@pytest.mark.parametrize("method", METHODS)
def test_one_step_gradient_equals_core_prediction(method):
    z = -(10.0 ** np.arange(-2, 8.01, 0.5))
    got = one_step_gradient(method, z, h=0.7, y0=1.3)
    want = predicted_one_step(method, z, h=0.7, y0=1.3)
    err = np.abs(got / want - 1)
    bound = 1e-10 if method not in CANCELLING else np.maximum(1e-10, 5e-15 * np.abs(z))
    assert np.all(err <= bound), (z[err > bound], err[err > bound])


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="sideways"), "mode must be"),
    (dict(mode="reverse"), "needs loss"),
    (dict(t_eval=[-1.0]), "not within"),
    (dict(t_eval=[2.0, 1.0]), "not properly sorted"),
    (dict(p=[1.0, 2.0, 3.0, 4.0]), "shape|p"),
    (dict(method="BDF2"), "one-step|BDF"),
    (dict(method="Reversible", coupling=0.0, first_step=0.1), "coupling"),
])
def test_bad_arguments(kwargs, match):
    args = dict(fun=FUN, t_span=(0, 10), y0=ROBER.y0, p=Q, method="RadauIIA5")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        solve_ivp_sensitivity(**args)


def test_a_nan_loss_is_a_failure_not_a_success():
    res = solve_ivp_sensitivity(ROBER.rhs, (0.0, 1.0), ROBER.y0, ROBER.params, method="RadauIIA5", t_eval=[1.0],
                                mode="reverse", loss=lambda Y: np.nan * Y.sum(), loss_grad=lambda Y: np.nan * Y,
                                jac=ROBER.jac, jac_p=ROBER.jac_p)
    assert not res.success and res.status == -1 and "not finite" in res.message


@pytest.mark.parametrize("method", ["Rodas5P", "RadauIIA5"])
def test_wrong_shaped_jacobians_are_named_before_any_work(method):
    """jac_p of shape (P, n) was reshaped silently into (n, P) (wrong numbers), and Rosenbrock
    sensitivities, which never call jac_p, ignored any shape; both are checked at t0 now."""
    fun = lambda t, y, p: -p * y  # noqa: E731
    good_jac = lambda t, y, p: -np.diag(p)  # noqa: E731
    transposed = lambda t, y, p: -np.diag(y)[:1]  # (1, 2) for n = 2 and P = 2  # noqa: E731
    with pytest.raises(ValueError, match=r"jac_p\(t, y, p\) must return df/dp of shape \(2, 2\)"):
        solve_ivp_sensitivity(fun, (0.0, 1.0), [1.0, 2.0], [1.0, 3.0], method=method, jac=good_jac, jac_p=transposed)
    with pytest.raises(ValueError, match=r"jac\(t, y, p\) must return df/dy of shape \(2, 2\)"):
        solve_ivp_sensitivity(fun, (0.0, 1.0), [1.0, 2.0], [1.0, 3.0], method=method,
                              jac=lambda t, y, p: np.ones(3), jac_p=lambda t, y, p: -np.diag(y))


def forced(t, y, p):
    """Non-autonomous and nonlinear in y and p: every term of the Rosenbrock adjoint is used."""
    return np.array([-p[0] * y[0] ** 2 + np.sin(p[1] * t) * y[1], p[0] * y[0] ** 2 - p[2] * y[0] * y[1] + np.cos(t)])


def forced_jac(t, y, p):
    return np.array([[-2 * p[0] * y[0], np.sin(p[1] * t)], [2 * p[0] * y[0] - p[2] * y[1], -p[2] * y[0]]])


def forced_jac_p(t, y, p):
    zero = 0 * y[0]
    return np.array([[-y[0] ** 2, t * np.cos(p[1] * t) * y[1], zero], [y[0] ** 2, zero, -y[0] * y[1]]])


@pytest.mark.parametrize("method", ["rodas5p", "rodas4", "ros3p", "rosenbrock23"])
@pytest.mark.parametrize("autonomous", [False, True])
def test_rosenbrock_adjoint_step_equals_its_jacobians(method, autonomous):
    """The Rosenbrock step's tangent (all n + P directions through the stages) and adjoint
    (the stages backwards, transposed solves), each with one complex step of jac and jac_p per
    stage for the dJ terms, equal the complex step of the whole step in each direction, with
    O(stages) Jacobian evaluations instead of n + P whole steps (#18 item 1)."""
    from stiffcore.adapters.scipy._derivatives import Derivatives
    from stiffcore.adapters.scipy._step_maps import step_map
    from stiffcore.catalogue import get_method

    p = np.array([1.3, 2.0, 0.7])
    derivs = Derivatives(forced, 2, p, forced_jac, forced_jac_p)
    phi = step_map(method, derivs, autonomous=autonomous)
    from stiffcore.adapters.scipy._derivatives import differentiate

    y, ybar = np.array([0.8, 0.3]), np.array([0.6, -1.1])
    whole = differentiate(lambda x: phi.step(0.4, x[:2], 0.25, x[2:]), np.concatenate([y, p]), complex_step=True)
    calls = []
    jac = derivs.jac
    derivs.jac = lambda *a: calls.append(1) or jac(*a)
    y_adj, p_adj = phi.vjp(0.4, y, 0.25, p, ybar)
    adjoint_calls = len(calls)
    _, Py, Pp = phi(0.4, y, 0.25, p)
    # f_t is a difference quotient (dt ~ 1e-8): its derivative carries ~1e-8 relative round-off
    # in a term scaled by h d_i, which the two differentiations see differently
    rtol = 1e-12 if autonomous else 1e-9
    np.testing.assert_allclose(np.hstack([Py, Pp]), whole, rtol=rtol, atol=1e-14)
    np.testing.assert_allclose(np.concatenate([y_adj, p_adj]), ybar @ whole, rtol=rtol, atol=1e-14)
    stages = get_method(method).stages
    # stage Jacobians, the dJ terms, f_t's difference, the probe: not one whole step per direction
    assert adjoint_calls <= 2 * stages + 3 and len(calls) - adjoint_calls <= 2 * stages + 2


def test_rosenbrock_reverse_mode_uses_the_adjoint_and_agrees_with_forward():
    """Forced problem, Rodas5P, f_t included: the reverse gradient (stages run backwards)
    equals the forward sensitivities' (stages differentiated forward)."""
    p = np.array([1.3, 2.0, 0.7])
    common = dict(method="Rodas5P", t_eval=np.linspace(0.2, 2.0, 6), jac=forced_jac, jac_p=forced_jac_p,
                  rtol=1e-7, atol=1e-10)
    fwd = solve_ivp_sensitivity(forced, (0, 2), [0.8, 0.3], p, **common)
    rev = solve_ivp_sensitivity(forced, (0, 2), [0.8, 0.3], p, mode="reverse", loss=loss, checkpoint_every=5, **common)
    assert fwd.status == 0 and rev.status == 0
    np.testing.assert_allclose(rev.grad, np.einsum("it,ipt->p", 2 * fwd.y, fwd.sensitivities), rtol=1e-10)


@pytest.mark.parametrize("method", ["RadauIIA5", "Rodas5P", "FBDF"])
def test_a_sparse_jac_keeps_the_replay_sparse(method, monkeypatch):
    """A sparse jac: forward sensitivities and the reverse gradient equal those with the same
    Jacobian dense, and no dense LU is made anywhere (the replay used to call .toarray())."""
    from stiffcore.adapters.scipy import _linalg

    fun, jac, jac_p, y0 = brusselator_1d(20)
    y = y0 + 0.1 * np.sin(np.arange(y0.size))
    step = [np.imag(fun(0.0, y + 1e-30j * e, [1.0])) / 1e-30 for e in np.eye(y0.size)]
    np.testing.assert_allclose(jac(0.0, y, [1.0]).toarray(), np.array(step).T, rtol=1e-13, atol=1e-12)
    reverse = dict(mode="reverse", loss=loss, loss_grad=lambda Y: 2 * Y)

    def dense_lu(*args, **kwargs):
        raise AssertionError("a dense LU was made with a sparse jac")

    with monkeypatch.context() as patch:
        patch.setattr(_linalg, "lu_factor", dense_lu)
        sparse = solve_ivp_sensitivity(fun, (0, 5), y0, [1.0], method=method, jac=jac, jac_p=jac_p,
                                       t_eval=[2.0, 5.0], rtol=1e-6, atol=1e-9)
        grad = solve_ivp_sensitivity(fun, (0, 5), y0, [1.0], method=method, jac=jac, jac_p=jac_p,
                                     t_eval=[2.0, 5.0], rtol=1e-6, atol=1e-9, **reverse).grad
    assert sparse.status == 0
    # the same steps replayed with the Jacobian dense
    replay = dict(method=method, out_index=np.searchsorted(sparse.t_steps, [2.0, 5.0]), jac_p=jac_p,
                  jac=lambda t, y, p: jac(t, y, p).toarray(), orders=sparse.get("orders"))
    expected = sensitivity_on_steps(fun, sparse.t_steps, y0, [1.0], **replay)
    np.testing.assert_allclose(sparse.sensitivities, expected.sensitivities, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad, sensitivity_on_steps(fun, sparse.t_steps, y0, [1.0], **replay, **reverse).grad,
                               rtol=1e-7)
    # and the gradient is the solution's: central differences of tight solves
    solve = lambda A: solve_ivp(lambda t, y: fun(t, y, [A]), (0, 5), y0, t_eval=[2.0, 5.0], method="Radau",  # noqa: E731
                                rtol=1e-11, atol=1e-13).y
    difference = (loss(solve(1.0 + 1e-5)) - loss(solve(1.0 - 1e-5))) / 2e-5
    np.testing.assert_allclose(grad, difference, rtol=1e-3)


def test_replay_newton_starts_from_the_previous_steps_polynomial(monkeypatch):
    """RadauIIA5's replay starts each step's Newton iteration from the last step's stage
    polynomial: far fewer f evaluations than from y, the same gradient."""
    from stiffcore.adapters.scipy._step_maps import RungeKuttaStepMap

    calls = []

    def counted(t, y, p):
        calls.append(t)
        return VDP(t, y, p)

    common = dict(method="RadauIIA5", t_eval=np.linspace(0.1, 1.0, 10), jac=VANDERPOL.jac, jac_p=VANDERPOL.jac_p,
                  rtol=1e-8, atol=1e-10)
    steps = solve_ivp_sensitivity(VDP, (0, 1), VANDERPOL.y0, MU, **common).t_steps
    replay = dict(method="RadauIIA5", jac=VANDERPOL.jac, jac_p=VANDERPOL.jac_p)
    warm = sensitivity_on_steps(counted, steps, VANDERPOL.y0, MU, **replay)
    warm_calls = len(calls)
    monkeypatch.setattr(RungeKuttaStepMap, "_guess", lambda self, t, y, h: np.tile(y, self.tab.c.size))
    calls.clear()
    cold = sensitivity_on_steps(counted, steps, VANDERPOL.y0, MU, **replay)
    assert warm_calls < 0.7 * len(calls)
    np.testing.assert_allclose(warm.sensitivities, cold.sensitivities, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("method", ["RadauIIA5", "Rodas5P", "Kvaerno5", "GaussLegendre6"])
def test_the_same_replay_gives_the_same_bits(method):
    """A replay is a function of its inputs: repeated on y' = lam y (where Newton converges in
    one iteration, so its start shows in the last bits) it returns identical sensitivities.
    RadauIIA5's start once came from scipy's barycentric weights, computed in a random node
    order, and the conformance suite's serial and parallel reports differed."""
    lam = np.array([-20.0])
    replay = dict(method=method, jac=lambda t, y, p: p.reshape(1, 1), jac_p=lambda t, y, p: y.reshape(1, 1))
    runs = [sensitivity_on_steps(lambda t, y, p: p * y, np.linspace(0, 1, 11), [1.0], lam, **replay).sensitivities
            for _ in range(6)]
    for again in runs[1:]:
        np.testing.assert_array_equal(again, runs[0])
