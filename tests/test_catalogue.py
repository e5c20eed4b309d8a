"""The catalogue's coefficients against their claims: order conditions, embedded
orders, stiff accuracy, dense output, and honest errors for bad data."""

import numpy as np
import pytest
from helpers import fitted_order, order_defects, rosenbrock_dense, rosenbrock_step
from scipy.integrate import solve_ivp

from stiffcore.catalogue.dense import dense_matrix, interpolation_order
from stiffcore.catalogue import (
    METHODS, ButcherTableau, RosenbrockTableau, UnknownMethodError, get_method, method_ids,
)
from stiffcore.catalogue.multistep import bdf_coefficients
from stiffcore.catalogue.trees import density, stage_weights, trees

RK = [m for m in METHODS.values() if isinstance(m.coefficients, ButcherTableau)]
ROS = [m for m in METHODS.values() if isinstance(m.coefficients, RosenbrockTableau)]

REQUIRED = (
    "euler heun midpoint rk4 bosh3 tsit5 dopri5 backward_euler trapezoid implicit_midpoint sdirk2 trbdf2 "
    "kvaerno3 kvaerno4 kvaerno5 radau_iia3 radau_iia5 gauss_legendre4 gauss_legendre6 lobatto_iiic2 "
    "rosenbrock23 ros3p rodas4 rodas5p bdf1 bdf2 bdf3 bdf4 bdf5"
).split()


def test_catalogue_has_every_required_method():
    assert set(REQUIRED) <= set(METHODS)
    for m in METHODS.values():
        assert m.reference and m.name and m.order >= 1


@pytest.mark.parametrize("method", RK, ids=lambda m: m.id)
def test_runge_kutta_order_conditions(method):
    tab = method.coefficients
    defects = order_defects(tab.a, tab.b, method.order)
    worst = max(abs(d) for _, d in defects)
    assert worst < 1e-13, f"{method.id}: order condition violated by {worst}"


@pytest.mark.parametrize("method", [m for m in RK if m.has_error_estimate], ids=lambda m: m.id)
def test_embedded_order_conditions(method):
    tab = method.coefficients
    defects = order_defects(tab.a, tab.b_embedded, method.embedded_order, b0=tab.b0_embedded)
    assert max(abs(d) for _, d in defects) < 1e-12
    # and the estimate is a real estimate: it differs from b
    assert np.max(np.abs(tab.b_embedded - tab.b)) + abs(tab.b0_embedded) > 1e-3


@pytest.mark.parametrize("method", [m for m in RK if m.order < 6], ids=lambda m: m.id)
def test_claimed_order_is_not_understated(method):
    """At order p + 1 some condition fails, so the claim is the method's real order."""
    tab = method.coefficients
    defects = order_defects(tab.a, tab.b, method.order + 1)
    assert max(abs(d) for _, d in defects) > 1e-8


def _stability_taylor(method, n):
    """Taylor coefficients of R(z) at 0 from P/Q (ascending series division)."""
    stab = method.stability
    p = np.zeros(n + 1)
    q = np.zeros(n + 1)
    p[: min(n + 1, len(stab.numerator))] = stab.numerator[: n + 1]
    q[: min(n + 1, len(stab.denominator))] = stab.denominator[: n + 1]
    r = np.zeros(n + 1)
    for k in range(n + 1):
        r[k] = (p[k] - q[1 : k + 1] @ r[k - 1 :: -1][:k]) / q[0] if k else p[0] / q[0]
    return r


@pytest.mark.parametrize("method", [m for m in METHODS.values() if m.is_one_step], ids=lambda m: m.id)
def test_stability_function_matches_exponential_to_order(method):
    from math import factorial

    p = method.order
    r = _stability_taylor(method, p)
    expected = np.array([1 / factorial(k) for k in range(p + 1)])
    np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-14)


def _problem():
    # A nonlinear autonomous system with a smooth solution (Brusselator, non-stiff).
    f = lambda y: np.array([1 + y[0] ** 2 * y[1] - 4 * y[0], 3 * y[0] - y[0] ** 2 * y[1]])  # noqa: E731
    jac = lambda y: np.array([[2 * y[0] * y[1] - 4, y[0] ** 2], [3 - 2 * y[0] * y[1], -y[0] ** 2]])  # noqa: E731
    y0 = np.array([1.5, 3.0])
    return f, jac, y0


def _reference(f, y0, t):
    sol = solve_ivp(lambda _, y: f(y), (0, t), y0, method="DOP853", rtol=1e-13, atol=1e-13)
    return sol.y[:, -1]


@pytest.mark.parametrize("method", ROS, ids=lambda m: m.id)
def test_rosenbrock_convergence_order(method):
    """Rosenbrock order conditions, checked by convergence of the transformed-form step."""
    f, jac, y0 = _problem()
    T = 1.0
    ref = _reference(f, y0, T)
    hs, err, err_emb = [], [], []
    for n in (16, 32, 64):
        h = T / n
        y, ye = y0.copy(), y0.copy()
        for _ in range(n):
            y_next, _, _ = rosenbrock_step(method.coefficients, f, jac, y, h)
            _, ye_next, _ = rosenbrock_step(method.coefficients, f, jac, ye, h)
            y, ye = y_next, ye_next
        hs.append(h)
        err.append(np.max(np.abs(y - ref)))
        err_emb.append(np.max(np.abs(ye - ref)))
    assert fitted_order(hs, err) > method.order - 0.3
    assert fitted_order(hs, err_emb) > method.embedded_order - 0.3


def _dense_at(method, y0, k, theta):
    """The core's continuous extension y0 + sum_k (D k)_k theta^k."""
    coeffs = dense_matrix(method) @ k
    return y0 + sum(c * theta ** (i + 1) for i, c in enumerate(coeffs))


@pytest.mark.parametrize("method", [m for m in ROS if m.has_dense_output], ids=lambda m: m.id)
def test_rosenbrock_dense_output(method):
    """The published interpolants (Steinebach's for Rodas, ode23s's for Rosenbrock23): exact at
    theta = 0, 1, of their stated order in between, and Steinebach's nested form where given."""
    f, jac, y0 = _problem()
    errs, hs = [], []
    for h in (0.1, 0.05, 0.025):
        y1, _, k = rosenbrock_step(method.coefficients, f, jac, y0, h)
        np.testing.assert_allclose(_dense_at(method, y0, k, 1.0), y1, rtol=1e-14)
        np.testing.assert_allclose(_dense_at(method, y0, k, 0.0), y0, rtol=1e-14)
        if method.coefficients.dense_transformed is not None:
            for theta in (0.3, 0.7):
                np.testing.assert_allclose(_dense_at(method, y0, k, theta),
                                           rosenbrock_dense(method.coefficients, y0, y1, k, theta), rtol=1e-12)
        mid = _dense_at(method, y0, k, 0.5)
        errs.append(np.max(np.abs(mid - _reference(f, y0, h / 2))))
        hs.append(h)
    assert interpolation_order(method) >= 2
    assert fitted_order(hs, errs) > interpolation_order(method) + 0.5  # local error O(h^(q+1))


@pytest.mark.parametrize("mid", ["radau_iia3", "radau_iia5", "gauss_legendre4", "gauss_legendre6"])
def test_collocation_dense_output_is_the_collocation_polynomial(mid):
    tab = get_method(mid).coefficients
    np.testing.assert_allclose(tab.weights_at(tab.c), tab.a, atol=1e-14)
    np.testing.assert_allclose(tab.weights_at(1.0), tab.b, atol=1e-14)


FULLY_IMPLICIT = [m.id for m in RK if m.family == "fully_implicit"]


@pytest.mark.parametrize("mid", FULLY_IMPLICIT)
def test_eigen_split_solves_the_coupled_stage_system(mid):
    """The split systems I - h gamma_i J give (I - h A (x) J)^-1 b to round-off, for mild and
    stiff h J (eigenvalues from -1e-2 to -1e6) and a J with complex eigenvalues."""
    from stiffcore.catalogue.schemes import runge_kutta_scheme

    block = runge_kutta_scheme(mid).blocks[0]
    split, A = block.split, block.a_block
    m, n = A.shape[0], 5
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    for scale in (1e-2, 1.0, 1e6):
        J = Q @ np.diag(-scale * np.logspace(0, 1, n)) @ Q.T + np.diag(np.ones(n - 1), 1) - np.diag(np.ones(n - 1), -1)
        b = rng.normal(size=(m, n))
        coupled = np.linalg.solve(np.eye(m * n) - np.kron(A, J), b.ravel()).reshape(m, n)
        rhs = split.to_systems(list(b))
        systems = [np.linalg.solve(np.eye(n) - gamma * J, u) for gamma, u in zip(split.gammas, rhs)]
        np.testing.assert_allclose(np.array(split.from_systems(systems)), coupled, rtol=1e-10,
                                   atol=1e-12 * np.abs(coupled).max())
    # one system per real eigenvalue and per conjugate pair; a pair's columns are conjugates
    real = [i for i, partner in split.systems if partner is None]
    pairs = [(i, partner) for i, partner in split.systems if partner is not None]
    assert len(real) + 2 * len(pairs) == m
    for i, partner in pairs:
        assert np.array_equal(split.V[:, partner], split.V[:, i].conj())


def test_eigen_split_shares_radau_iia5s_real_system_with_its_error_filter():
    """The real eigenvalue of Radau IIA5's A is its estimate's b0 (RADAU5's gamma0), exactly,
    so the filter I - h b0 J is the real system's matrix."""
    from stiffcore.catalogue.schemes import runge_kutta_scheme

    for mid in ("radau_iia5", "gauss_legendre6"):
        scheme = runge_kutta_scheme(mid)
        real = [g for g in scheme.blocks[0].split.gammas if isinstance(g, float)]
        assert real == [scheme.defect_filter] == [get_method(mid).coefficients.b0_embedded]


def test_eigen_split_refuses_what_it_cannot_split():
    """One stage has nothing to split; a defective A (a Jordan block) has no eigenbasis."""
    from stiffcore.catalogue.eigen_split import eigen_split

    assert eigen_split(np.array([[0.5]])) is None
    assert eigen_split(np.array([[0.5, 1.0], [0.0, 0.5]])) is None


DERIVED = ["kvaerno3", "kvaerno4", "kvaerno5", "trbdf2"]


def _dense_weights(tab, theta):
    return tab.dense @ theta ** np.arange(1, tab.dense.shape[1] + 1)


@pytest.mark.parametrize("mid", DERIVED)
def test_derived_continuous_extensions_have_their_order(mid):
    """Kvaerno's extensions, solved from the continuous order conditions, meet every one up
    to their stated order at every theta, and miss some of the next order's."""
    tab, q = get_method(mid).coefficients, interpolation_order(mid)
    for theta in (0.1, 0.37, 0.5, 0.81, 1.0):
        bt = _dense_weights(tab, theta)
        for p in range(1, q + 1):
            for t in trees(p):
                assert bt @ stage_weights(tab.a, t) == pytest.approx(theta ** p / float(density(t)), abs=1e-12), (p, t)
    bt = _dense_weights(tab, 0.5)
    assert max(abs(bt @ stage_weights(tab.a, t) - 0.5 ** (q + 1) / float(density(t))) for t in trees(q + 1)) > 1e-6


@pytest.mark.parametrize("method", [m for m in RK if m.coefficients.dense is not None], ids=lambda m: m.id)
def test_continuous_extensions_stay_bounded_on_stiff_modes(method):
    """On y' = lambda y the output y0 (1 + z b(theta).(I - zA)^-1 1) stays bounded for
    Re z <= 0 out to |z| = 1e10, as the step does: cubic Hermite grows like |z| there (its
    h f terms), which is why Kvaerno's derived extensions impose the bound."""
    tab = method.coefficients
    s = tab.stages
    worst = 0.0
    for z in np.concatenate([-np.logspace(-2, 10, 49), np.logspace(-2, 10, 49) * np.exp(0.9j * np.pi)]):
        Y = np.linalg.solve(np.eye(s) - z * tab.a, np.ones(s))
        for theta in np.linspace(0.0, 1.0, 21):
            worst = max(worst, abs(1 + z * _dense_weights(tab, theta) @ Y))
    limit = 1.05 if method.id in DERIVED else 10.0
    assert worst <= limit, (method.id, worst)


def test_no_bounded_extension_beyond_the_stage_order_allows():
    from stiffcore.catalogue.runge_kutta import bounded_continuous_extension

    tab = get_method("kvaerno4").coefficients
    with pytest.raises(ValueError, match="no continuous extension of order 4"):
        bounded_continuous_extension(tab.a, tab.b, 4)


def test_closed_form_tableaus():
    s6 = np.sqrt(6)
    radau = get_method("radau_iia5").coefficients
    np.testing.assert_allclose(radau.a, [
        [(88 - 7 * s6) / 360, (296 - 169 * s6) / 1800, (-2 + 3 * s6) / 225],
        [(296 + 169 * s6) / 1800, (88 + 7 * s6) / 360, (-2 - 3 * s6) / 225],
        [(16 - s6) / 36, (16 + s6) / 36, 1 / 9]], rtol=1e-14, atol=1e-15)
    gl4 = get_method("gauss_legendre4").coefficients
    np.testing.assert_allclose(gl4.a, [[1 / 4, 1 / 4 - np.sqrt(3) / 6], [1 / 4 + np.sqrt(3) / 6, 1 / 4]], atol=1e-15)
    np.testing.assert_allclose(get_method("radau_iia3").coefficients.a, [[5 / 12, -1 / 12], [3 / 4, 1 / 4]], atol=1e-15)
    g = 1 - 1 / np.sqrt(2)
    np.testing.assert_allclose(get_method("sdirk2").coefficients.a, [[g, 0], [1 - g, g]])


def test_radau_iia5_error_estimate_is_radau5s():
    """b^ - b = gamma0 * e^T A with RADAU5's e = (-13 - 7 sqrt6, -13 + 7 sqrt6, -1)/3 (Hairer & Wanner IV.8)."""
    tab = get_method("radau_iia5").coefficients
    s6 = np.sqrt(6)
    e = np.array([-13 - 7 * s6, -13 + 7 * s6, -1]) / 3
    np.testing.assert_allclose(tab.b_embedded - tab.b, tab.b0_embedded * e @ tab.a, atol=1e-13)
    assert tab.b0_embedded == pytest.approx(1 / (3 + 3 ** (2 / 3) - 3 ** (1 / 3)), rel=1e-14)


def test_kvaerno_coefficients_match_diffrax():
    diffrax = pytest.importorskip("diffrax")
    for mid, cls in (("kvaerno3", diffrax.Kvaerno3), ("kvaerno4", diffrax.Kvaerno4), ("kvaerno5", diffrax.Kvaerno5)):
        theirs = cls.tableau
        ours = get_method(mid).coefficients
        for i, row in enumerate(theirs.a_lower, start=1):
            np.testing.assert_allclose(ours.a[i, :i], row, rtol=1e-15, atol=1e-15)
        np.testing.assert_allclose(np.diag(ours.a), theirs.a_diagonal, rtol=1e-15)
        np.testing.assert_allclose(ours.b, theirs.b_sol, rtol=1e-15)
        np.testing.assert_allclose(ours.b - ours.b_embedded, theirs.b_error, atol=1e-15)


@pytest.mark.parametrize("k", range(1, 6))
def test_bdf_order_conditions(k):
    """sum rho_j j^q = q sum sigma_j j^(q-1) for q = 0..k (order k), failing at q = k + 1."""
    coef = bdf_coefficients(k)
    j = np.arange(k + 1.0)
    for q in range(k + 1):
        lhs = coef.rho @ j**q
        rhs = q * (coef.sigma @ j ** (q - 1)) if q else 0.0
        assert lhs == pytest.approx(rhs, abs=1e-12)
    assert abs(coef.rho @ j ** (k + 1) - (k + 1) * coef.sigma @ j**k) > 1e-6


def test_stiffly_accurate_and_families():
    sa = {m.id for m in METHODS.values() if m.stiffly_accurate and m.family != "explicit"}
    assert {"backward_euler", "radau_iia5", "radau_iia3", "lobatto_iiic2", "kvaerno5", "trbdf2",
            "rodas4", "rodas5p", "sdirk2", "trapezoid"} <= sa
    assert not ({"implicit_midpoint", "gauss_legendre4", "ros3p", "rosenbrock23"} & sa)
    assert get_method("radau_iia5").family == "fully_implicit"
    assert get_method("kvaerno5").family == "diagonally_implicit"
    assert get_method("rodas5p").family == "rosenbrock"
    assert method_ids("multistep")[:5] == ["bdf1", "bdf2", "bdf3", "bdf4", "bdf5"]
    assert "bdf2" not in method_ids(one_step=True)


def test_lookup_by_display_name_and_unknown_id():
    assert get_method("RadauIIA5") is get_method("radau_iia5")
    assert get_method("rodas5P") is get_method("rodas5p")
    with pytest.raises(UnknownMethodError, match=r"radau5.*Did you mean 'radau_iia5'.*Valid ids: euler"):
        get_method("radau5")
    with pytest.raises(TypeError, match="string id"):
        get_method(5)
    with pytest.raises(ValueError, match="unknown family"):
        method_ids("implicit")


def test_malformed_tableaus_name_the_entry():
    with pytest.raises(ValueError, match=r"row 1 of a sums to 1.0 but c\[1\] = 0.5"):
        ButcherTableau(a=[[0, 0], [1, 0]], b=[0.5, 0.5], c=[0, 0.5])
    with pytest.raises(ValueError, match="b must have 2 entries"):
        ButcherTableau(a=[[0, 0], [1, 0]], b=[1.0])
    with pytest.raises(ValueError, match="square"):
        ButcherTableau(a=[[0, 0, 0], [1, 0, 0]], b=[1, 0, 0])
    with pytest.raises(ValueError, match="non-finite"):
        ButcherTableau(a=[[np.nan]], b=[1.0])
    with pytest.raises(ValueError, match="strictly lower"):
        RosenbrockTableau(alpha=[[0.5]], gamma=[[0.5]], b=[1.0])
    with pytest.raises(ValueError, match="one positive diagonal"):
        RosenbrockTableau(alpha=[[0, 0], [1, 0]], gamma=[[0.5, 0], [0, 0.4]], b=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"published c\[1\]"):
        RosenbrockTableau.from_transformed(0.5, a=[[0, 0], [1, 0]], C=[[0, 0], [0, 0]], m=[0.5, 0.5], c=[0, 0.9])
    with pytest.raises(ValueError, match="not zero-stable"):
        bdf_coefficients(7)


@pytest.mark.parametrize("method", [m for m in METHODS.values() if m.has_error_estimate], ids=lambda m: m.id)
def test_embedded_estimates_see_linear_problems_or_are_refused(method):
    """On y' = lambda y the estimate is (R(z) - R^(z)) y0: a pair with R^ == R estimates
    nothing (ROS3P: its estimate was exactly zero on y' = -y) and must not choose steps."""
    tab = method.coefficients
    matrix = tab.stability_matrix if isinstance(tab, RosenbrockTableau) else tab.a
    ones = np.ones(tab.stages)

    def R(weights, z):
        return 1 + z * weights @ np.linalg.solve(np.eye(tab.stages) - z * matrix, ones)
    b0 = getattr(tab, "b0_embedded", 0.0)
    gap = max(abs(R(tab.b, z) - R(tab.b_embedded, z) - b0 * z) for z in (-0.1, -1.0, -10.0))
    assert (gap < 1e-13) == (method.estimate_defect is not None), (method.id, gap)
    assert method.adaptive == (method.estimate_defect is None)
