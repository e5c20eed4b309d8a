"""Test-equation gradient predictions: the numbers every backend must reproduce."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stiffcore import get_method, one_step_gradient, predict_test_equation

IMPLICIT = ["backward_euler", "trapezoid", "radau_iia5", "rodas5p", "kvaerno5", "lobatto_iiic2", "sdirk2"]


def _y_n(mid, lam, h, n, y0):
    return get_method(mid).stability(h * lam) ** n * y0


@pytest.mark.parametrize("mid", IMPLICIT)
@pytest.mark.parametrize("n", [1, 10])
def test_gradient_matches_central_difference_of_the_discrete_map(mid, n):
    h, y0 = 0.1, 2.0
    for z in (-0.05, -0.7, -3.0, -40.0):
        lam = z / h
        eps = 1e-6 * abs(lam)
        fd = (_y_n(mid, lam + eps, h, n, y0) - _y_n(mid, lam - eps, h, n, y0)) / (2 * eps)
        pred = predict_test_equation(mid, z, h=h, n_steps=n, y0=y0)
        assert pred.dy_dlambda == pytest.approx(fd, rel=1e-7)
        assert pred.y_n == pytest.approx(_y_n(mid, lam, h, n, y0), rel=1e-14)


def test_one_step_gradient_is_h_R_prime_y0():
    z = -np.logspace(-2, 8, 21)
    np.testing.assert_allclose(one_step_gradient("radau_iia5", z, h=0.5, y0=3.0),
                               0.5 * 3.0 * get_method("radau_iia5").stability.derivative(z), rtol=1e-15)


def test_exact_flow_and_attenuation():
    pred = predict_test_equation("backward_euler", np.array([-1e-3, -1.0, -1e3]), h=2.0, n_steps=5)
    np.testing.assert_allclose(pred.exact_y, np.exp(5 * pred.z))
    np.testing.assert_allclose(pred.exact_dy_dlambda, 5 * 2.0 * np.exp(5 * pred.z))
    # small z: discrete and exact gradients agree; stiff z: the exact gradient underflows to 0
    # but the log-attenuation is still finite
    assert pred.log10_attenuation[0] == pytest.approx(0.0, abs=1e-2)
    assert np.isfinite(pred.log10_attenuation).all()
    assert pred.log10_attenuation[2] > 400  # exp(-5000) vs (1001)^-6: the discrete map decays far slower


def test_bdf_prediction_uses_the_principal_root():
    pred = predict_test_equation("bdf2", -10.0, h=1.0, n_steps=3)
    xi = get_method("bdf2").stability(-10.0)
    assert pred.y_n == pytest.approx(xi**3)


@given(z=st.floats(-1e8, -1e-2), n=st.integers(1, 50))
@settings(max_examples=60, deadline=None)
def test_n_step_formula_is_product_rule(z, n):
    """N h R^(N-1) R' equals the derivative of R^N from the chain rule on log|R^N|."""
    pred = predict_test_equation("radau_iia3", z, h=1.0, n_steps=n)
    stab = get_method("radau_iia3").stability
    r, dr = stab(z), stab.derivative(z)
    if abs(pred.y_n) > 1e-290:  # below that R^N is subnormal and has lost digits
        assert pred.dy_dlambda / pred.y_n == pytest.approx(n * dr / r, rel=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(h=0.0), "step size"), (dict(h=-1.0), "step size"), (dict(h=np.nan), "step size"),
    (dict(n_steps=0), "n_steps"), (dict(n_steps=2.5), "n_steps"), (dict(y0=np.inf), "y0"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_test_equation("backward_euler", -1.0, **kwargs)


def test_unknown_method_and_bad_z():
    with pytest.raises(ValueError, match="Did you mean 'rodas5p'"):
        predict_test_equation("rodas5", -1.0)
    with pytest.raises(ValueError, match="finite"):
        predict_test_equation("rodas5p", [np.nan])
