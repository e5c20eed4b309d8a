"""Stability functions against closed forms, 60-digit references and the literature's
classification (Hairer & Wanner II, IV.3-IV.5; Fronk & Petzold 2025)."""

import numpy as np
import pytest

from stiffcore.catalogue import METHODS, get_method

ONE_STEP = [m for m in METHODS.values() if m.is_one_step]
IMPLICIT_ONE_STEP = [m for m in ONE_STEP if m.is_implicit]

# (A-stable, L-stable, R(-inf), decay exponent of |R'|) from the literature.
LITERATURE = {
    "backward_euler": (True, True, 0.0, -2), "trapezoid": (True, False, -1.0, -2),
    "implicit_midpoint": (True, False, -1.0, -2), "sdirk2": (True, True, 0.0, -2),
    "trbdf2": (True, True, 0.0, -2), "kvaerno3": (True, True, 0.0, -2), "kvaerno4": (True, True, 0.0, -2),
    "kvaerno5": (True, True, 0.0, -2), "radau_iia3": (True, True, 0.0, -2), "radau_iia5": (True, True, 0.0, -2),
    "gauss_legendre4": (True, False, 1.0, -2), "gauss_legendre6": (True, False, -1.0, -2),
    "lobatto_iiic2": (True, True, 0.0, -3), "rosenbrock23": (True, True, 0.0, -2),
    "ros3p": (True, False, 1 - np.sqrt(3), -2),  # Lang & Verwer 2001
    "rodas4": (True, True, 0.0, -2), "rodas5p": (True, True, 0.0, -2),
    "bdf1": (True, True, 0.0, -2), "bdf2": (True, True, 0.0, -1.5), "bdf3": (False, False, 0.0, -4 / 3),
    "bdf4": (False, False, 0.0, -5 / 4), "bdf5": (False, False, 0.0, -6 / 5),
}

CLOSED_FORM_DR = {
    "backward_euler": lambda z: 1 / (1 - z) ** 2,
    "trapezoid": lambda z: 4 / (z - 2) ** 2,
    "implicit_midpoint": lambda z: 4 / (z - 2) ** 2,
    "radau_iia5": lambda z: 3 * (z**4 + 16 * z**3 - 48 * z**2 - 240 * z + 1200) / (z**3 - 9 * z**2 + 36 * z - 60) ** 2,
    "lobatto_iiic2": lambda z: (1 - z) / (1 - z + z**2 / 2) ** 2,
}


def _radau3_dr(z):
    # R = (1 + z/3)/(1 - 2z/3 + z^2/6) = (6 + 2z)/(6 - 4z + z^2)
    p, q = 6 + 2 * z, 6 - 4 * z + z**2
    return (2 * q - p * (2 * z - 4)) / q**2


CLOSED_FORM_DR["radau_iia3"] = _radau3_dr

Z_REAL = -np.logspace(-6, 10, 97)


@pytest.mark.parametrize("mid", sorted(LITERATURE))
def test_classification_matches_literature(mid):
    a_stable, l_stable, r_inf, exponent = LITERATURE[mid]
    cls = get_method(mid).stability.classify()
    assert cls.a_stable is a_stable
    assert cls.l_stable is l_stable
    # 1e-10: Kvaerno3/4's gamma is published to 11/10 digits, so their R(-inf) is ~1e-11, not 0
    assert cls.r_at_infinity == pytest.approx(r_inf, abs=1e-10)
    assert cls.decay_exponent == pytest.approx(exponent, abs=1e-12)


@pytest.mark.parametrize("m", [m for m in ONE_STEP if not m.is_implicit], ids=lambda m: m.id)
def test_explicit_methods_are_not_a_stable_and_grow(m):
    cls = m.stability.classify()
    assert not cls.a_stable and not cls.l_stable
    assert np.isinf(cls.r_at_infinity)
    # R is a polynomial of degree >= 1, so R' does not decay
    assert cls.decay_exponent == len(m.stability.numerator) - 2 >= 0


@pytest.mark.parametrize("mid", sorted(CLOSED_FORM_DR))
def test_derivative_matches_closed_form(mid):
    stab = get_method(mid).stability
    expected = CLOSED_FORM_DR[mid](Z_REAL)
    np.testing.assert_allclose(stab.derivative(Z_REAL), expected, rtol=1e-10)


def test_radau_iia5_at_minus_a_million():
    z = -1e6
    closed = 3 * (z**4 + 16 * z**3 - 48 * z**2 - 240 * z + 1200) / (z**3 - 9 * z**2 + 36 * z - 60) ** 2
    assert abs(get_method("radau_iia5").stability.derivative(z) / closed - 1) < 1e-9


@pytest.mark.parametrize("m", ONE_STEP, ids=lambda m: m.id)
@pytest.mark.parametrize("angle", [0, 30, 60, 80])
def test_R_and_derivative_accurate_to_1e10_against_60_digit_reference(m, angle):
    """Across |z| in [1e-6, 1e10] on rays into the left half-plane (0 = negative real axis)."""
    stab = m.stability
    abs_z = np.logspace(-6, 10 if m.is_implicit else 3, 33)
    z = -abs_z * np.exp(1j * np.radians(angle)) if angle else -abs_z
    got_r, got_dr = stab(z), stab.derivative(z)
    skipped = []
    for zi, r, dr in zip(z, got_r, got_dr):
        ref_r = complex(stab.exact(zi))
        ref_dr = complex(stab.exact(zi, derivative=True))
        assert abs(r - ref_r) <= 1e-10 * abs(ref_r) + 1e-300, (zi, r, ref_r)
        # Relative accuracy of R' is meaningless at its zeros; skip points within 1e-6 of one.
        scale = min(1.0, abs(zi) ** m.stability.decay_exponent)
        if abs(ref_dr) > 1e-6 * scale:
            assert abs(dr - ref_dr) <= 1e-10 * abs(ref_dr), (zi, dr, ref_dr)
        else:
            skipped.append(zi)
    assert len(skipped) <= 2, f"too many points near zeros of R': {skipped}"


@pytest.mark.parametrize("m", IMPLICIT_ONE_STEP, ids=lambda m: m.id)
def test_fitted_decay_slope_equals_computed_exponent(m):
    z = -np.logspace(6, 10, 9)
    slope = np.polyfit(np.log10(-z), np.log10(np.abs(m.stability.derivative(z))), 1)[0]
    assert slope == pytest.approx(m.stability.decay_exponent, abs=0.01)


def test_a_stable_methods_are_bounded_on_the_left_half_plane():
    """Independent check of the E-polynomial test: sample |R| on a polar grid."""
    r = np.logspace(-3, 8, 60)
    theta = np.radians(np.linspace(90, 270, 91))
    z = (r[:, None] * np.exp(1j * theta[None, :])).ravel()
    for m in IMPLICIT_ONE_STEP:
        assert np.max(np.abs(m.stability(z))) <= 1 + 1e-9, m.id


def test_bdf_a_alpha_angles():
    expected = {"bdf1": 90.0, "bdf2": 90.0, "bdf3": 86.03, "bdf4": 73.35, "bdf5": 51.84}
    for mid, angle in expected.items():
        assert get_method(mid).stability.a_alpha_degrees == pytest.approx(angle, abs=0.01)


def test_bdf2_principal_root_and_derivative_closed_form():
    stab = get_method("bdf2").stability
    z = np.array([-1e-3, -0.1, -0.4, -10.0, -1e4, -1e8])
    # (3/2 - z) xi^2 - 2 xi + 1/2 = 0, principal branch
    xi = (2 + np.sqrt((1 + 2 * z).astype(complex))) / (3 - 2 * z)
    np.testing.assert_allclose(np.abs(stab(z)), np.abs(xi), rtol=1e-12)
    dxi = xi**2 / (2 - (3 - 2 * z) * xi) * -1
    np.testing.assert_allclose(np.abs(stab.derivative(z)), np.abs(dxi), rtol=1e-9)
    slope = np.polyfit(np.log10(-z[-3:]), np.log10(np.abs(stab.derivative(z[-3:]))), 1)[0]
    assert slope == pytest.approx(-1.5, abs=0.01)


def test_bdf1_is_backward_euler():
    z = -np.logspace(-3, 8, 12)
    np.testing.assert_allclose(get_method("bdf1").stability.derivative(z),
                               get_method("backward_euler").stability.derivative(z), rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, [-1.0, np.nan], -np.inf + 0j])
def test_non_finite_z_is_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        get_method("radau_iia5").stability.derivative(bad)


def test_non_numeric_z_is_refused():
    with pytest.raises(TypeError, match="number"):
        get_method("radau_iia5").stability("minus ten")
