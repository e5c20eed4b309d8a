"""The core's variable-order BDF/NDF arithmetic and multistep predictions (stiffcore.multistep,
catalogue NDFs, predictions.multistep_gradient)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stiffcore import multistep as ms
from stiffcore.catalogue import VARIABLE_ORDER, get_method, get_variable_order, method_ids
from stiffcore.catalogue.multistep import NDF_KAPPA, ndf_coefficients
from stiffcore.predictions import multistep_decay_exponent, multistep_gradient, predict_test_equation

ratios = st.floats(0.05, 10.0)


@settings(max_examples=60, deadline=None)
@given(ratios, ratios)
def test_rescaling_composes(a, b):
    """Re-sampling the interpolating polynomial by a, then b, is re-sampling by a b."""
    np.testing.assert_allclose(ms.rescale_matrix(b) @ ms.rescale_matrix(a), ms.rescale_matrix(a * b),
                               rtol=1e-9, atol=1e-9 * max(a * b, 1 / (a * b)) ** 5)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), ratios, st.lists(st.floats(-2, 2), min_size=6, max_size=6), st.floats(-0.99, 0.0))
def test_tables_resample_and_interpolate_a_polynomial_exactly(degree, ratio, coeffs, s):
    """For a polynomial of degree <= k: the table of its values at spacing h, re-sampled by
    ``ratio``, is the table at spacing ratio h; the interpolation weights give its values."""
    poly = np.polynomial.Polynomial(coeffs[:degree + 1])
    h, t = 0.3, 1.0
    table = ms.table_from_history(np.array([poly(t - j * h) for j in range(degree, -1, -1)]))
    expected = ms.table_from_history(np.array([poly(t - j * ratio * h) for j in range(degree, -1, -1)]))
    resampled = ms.resample(table, ratio, degree)[:ms.MAX_ORDER + 1]
    scale = 1 + np.max(np.abs(expected))
    np.testing.assert_allclose(resampled, expected[:ms.MAX_ORDER + 1], atol=1e-9 * scale * max(ratio, 1) ** 5)
    assert ms.interpolation_weights(s, degree) @ table == pytest.approx(poly(t + s * h), abs=1e-10 * scale)


def test_rescale_by_one_is_the_identity_and_keeps_the_newest_value():
    np.testing.assert_allclose(ms.rescale_matrix(1.0), np.eye(ms.MAX_ORDER + 1), atol=1e-15)
    assert np.all(ms.rescale_matrix(3.7)[0] == np.eye(ms.MAX_ORDER + 1)[0])
    assert np.allclose(np.tril(ms.rescale_matrix(0.4), -1), 0)  # upper triangular


@pytest.mark.parametrize("family", sorted(VARIABLE_ORDER))
@pytest.mark.parametrize("k", range(1, 6))
def test_a_constant_step_of_the_family_is_its_catalogue_formula(family, k):
    """One step of the table arithmetic (corrector weights, update) at a constant step is the
    catalogue's rho/sigma formula of that order: one source of truth for the coefficients."""
    fam = get_variable_order(family)
    coef = get_method(fam.members[k - 1]).coefficients
    s = coef.steps
    rng = np.random.default_rng(k)
    values, lam, h = rng.standard_normal(k + 1), -3.0, 0.1  # y_{n-k} .. y_n, y' = lam y
    table = ms.table_from_history(values)
    c = h / fam.alpha[k]
    y_new = (ms.corrector_weights(fam)[k] @ table) / (1 - c * lam)
    window = np.concatenate([values[-s:], [y_new]])  # y_{n+1-s} .. y_{n+1}
    assert coef.rho @ window == pytest.approx(h * lam * coef.sigma @ window, abs=1e-12)
    updated = ms.update(table, y_new, k)
    np.testing.assert_allclose(updated[:k + 1], ms.table_from_history(np.append(values[1:], y_new))[:k + 1],
                               atol=1e-12)
    assert updated[k + 1] == pytest.approx(y_new - ms.PREDICTOR[k] @ table, abs=1e-12)  # the error estimate's row


def test_bdf_corrector_never_reads_the_oldest_difference():
    """BDF-k is k-step: D[k] (the only row holding y_{n-k}) has weight exactly 0."""
    weights = ms.corrector_weights("fbdf")
    assert all(weights[k, k] == 0 for k in range(1, 6))
    assert all(ms.corrector_weights("qndf")[k, k] != 0 for k in range(1, 5))


def test_ndf_catalogue_matches_shampine_and_reichelt():
    """Table 1 of Shampine & Reichelt (1997): kappa, and A(alpha) of NDF1..4 = 90, 90, 80, 66."""
    assert NDF_KAPPA == (-0.1850, -1 / 9, -0.0823, -0.0415, 0.0)
    angles = [get_method(f"ndf{k}").stability.a_alpha_degrees for k in range(1, 5)]
    np.testing.assert_allclose(angles, [90, 90, 80.4, 66.2], atol=0.1)
    assert method_ids("multistep") == ["bdf1", "bdf2", "bdf3", "bdf4", "bdf5", "ndf1", "ndf2", "ndf3", "ndf4"]
    assert get_variable_order("QNDF").members == ("ndf1", "ndf2", "ndf3", "ndf4", "bdf5")
    # error constants: BDF's 1/(k+1); NDF's smaller by kappa gamma_k
    np.testing.assert_allclose(get_variable_order("fbdf").error_constants[1:6], 1 / np.arange(2, 7))
    assert np.all(get_variable_order("qndf").error_constants[1:5] < get_variable_order("fbdf").error_constants[1:5])


@pytest.mark.parametrize("k", range(1, 5))
def test_ndf_order_conditions(k):
    coef = ndf_coefficients(k, NDF_KAPPA[k - 1])
    j = np.arange(coef.steps + 1.0)
    for q in range(k + 1):
        rhs = q * (coef.sigma @ j ** (q - 1)) if q else 0.0
        assert coef.rho @ j**q == pytest.approx(rhs, abs=1e-12)
    assert abs(coef.rho @ j ** (k + 1) - (k + 1) * coef.sigma @ j**k) > 1e-6


def test_bad_orders_and_families_are_named():
    for bad in (0, 6, 2.0, True, "3"):
        with pytest.raises(ValueError, match="max_order must be an integer in 1..5"):
            ms.check_max_order(bad)
    with pytest.raises(ValueError, match="unknown variable-order method 'BDF'.*FBDF, QNDF"):
        get_variable_order("BDF")
    with pytest.raises(ValueError, match="history holds 1..6 values"):
        ms.table_from_history(np.zeros(7))


def test_multistep_prediction_of_bdf1_is_backward_eulers():
    z = np.array([-0.3, -5.0, -1e4])
    np.testing.assert_allclose(multistep_gradient("bdf1", z, h=0.1, n_steps=7),
                               predict_test_equation("backward_euler", z, h=0.1, n_steps=7).dy_dlambda, rtol=1e-13)


@pytest.mark.parametrize("method", ["bdf2", "bdf5", "ndf1", "ndf4"])
def test_multistep_prediction_carries_every_root(method):
    """The recurrence's y_N from exact starting values is not the principal root's power
    xi^N alone: at moderate z the other roots' share is visible (and it is what a backend
    must reproduce); as z -> 0 both tend to the exact flow."""
    coef = get_method(method).coefficients
    s, n = coef.steps, coef.steps + 4
    z = -2.0
    roots = np.roots((coef.rho - z * coef.sigma)[::-1])
    start = np.exp(z * np.arange(s))
    # y_j = sum_i c_i r_i^j through the starting values, then y_N and its z-derivative by differences
    def y_n(zz):
        r = np.roots((coef.rho - zz * coef.sigma)[::-1])
        c = np.linalg.solve(np.vander(r, s, increasing=True).T, np.exp(zz * np.arange(s)))
        return np.real(c @ r**n)
    closed = (y_n(z + 1e-6) - y_n(z - 1e-6)) / 2e-6
    assert multistep_gradient(method, z, n_steps=n) == pytest.approx(closed, rel=1e-7)
    principal = get_method(method).stability(z) ** n
    assert abs(y_n(z) - principal) > 1e-6 * abs(principal)
    assert roots.size == s and start[0] == 1


@pytest.mark.parametrize("method", method_ids("multistep"))
def test_multistep_decay_exponent_matches_the_prediction(method):
    z = -np.logspace(3, 8, 11)
    g = multistep_gradient(method, z)
    slope = np.polyfit(np.log10(-z), np.log10(np.abs(g)), 1)[0]
    assert slope == pytest.approx(multistep_decay_exponent(method), abs=0.05)


def test_multistep_prediction_refuses_one_step_methods_and_short_runs():
    with pytest.raises(ValueError, match="one-step method"):
        multistep_gradient("radau_iia5", -1.0)
    with pytest.raises(ValueError, match="at least the 3 starting values of bdf3"):
        multistep_gradient("bdf3", -1.0, n_steps=2)
