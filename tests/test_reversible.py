"""Reversible stepping (McCallum & Foster) and its stability facts (issue 2, item 5)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stiffcore import get_method
from stiffcore.reversible import (
    amplification_matrix, check_coupling, growth_rates, optimal_coupling, predict_reversible,
    reversible_step, reversible_step_back, unstable_band,
)


def linear_step(method_id, mu):
    """The base method's exact map on y' = mu y, in either direction."""
    stab = get_method(method_id).stability
    return lambda t0, t1, y: stab((t1 - t0) * mu) * y


def run(method_id, mu, h, n, coupling, y0=1.0):
    step = linear_step(method_id, mu)
    y, z = np.asarray(y0, dtype=float), np.asarray(y0, dtype=float)
    for k in range(n):
        y, z = reversible_step(step, k * h, (k + 1) * h, y, z, coupling)
    return step, y, z


def test_backward_euler_0999_is_stable_in_both_directions_off_the_band():
    z = np.concatenate([-np.geomspace(1.2, 1e8, 400), -np.geomspace(1e-8, 1e-3, 100)])
    fwd, rec = growth_rates("backward_euler", z, 0.999)
    assert fwd.max() <= 1.0011 and rec.max() <= 1.0011


def test_backward_euler_0999_forward_band():
    band = unstable_band("backward_euler", 0.999, threshold=1.01)
    assert len(band.forward) == 1
    left, right = band.forward[0]
    assert left == pytest.approx(-1.15, abs=0.01) and right == pytest.approx(-0.011, abs=0.001)
    # the backward base step 1/(1 + h mu) has a pole at z = -1 inside the band: growth is
    # unbounded there, so the sampled peak (>= 100) depends on the grid
    assert band.singular == [-1.0]
    assert band.peak_forward > 100 and -1.1 < band.peak_forward_z < -0.9
    inside = -np.geomspace(0.012, 1.14, 200)
    assert growth_rates("backward_euler", inside, 0.999)[0].min() > 1.01


def test_coupling_one_half_forward_stable_but_reconstruction_doubles():
    # 4000 points: the grid avoids z = -1 itself, where the backward base step is singular
    z = -np.geomspace(1e-8, 1e8, 4000)
    fwd, rec = growth_rates("backward_euler", z, 0.5)
    assert fwd.max() <= 1 + 1e-12
    assert rec.max() == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("base", ["backward_euler", "radau_iia5", "rodas5p", "kvaerno5", "lobatto_iiic2"])
@pytest.mark.parametrize("lam", [0.3, 0.9, 0.999])
def test_l_stable_base_tends_to_sqrt_coupling(base, lam):
    fwd, rec = growth_rates(base, -1e12, lam)
    assert fwd == pytest.approx(np.sqrt(lam), rel=1e-6)
    assert rec == pytest.approx(1 / np.sqrt(lam), rel=1e-6)


def test_rk4_base_has_no_forward_stable_coupling_in_the_stiff_range():
    """No coupling in [0.1, 0.999] keeps rk4's forward growth <= 1 on all of [z, 0) once z is
    below about -2.4, and none is forward-stable at any single z below about -2.95."""
    lams = np.linspace(0.1, 0.999, 300)
    z = -np.geomspace(1e-6, 10, 3000)
    reach = []
    for lam in lams:
        fwd = growth_rates("rk4", z, lam)[0]
        bad = np.flatnonzero(fwd > 1 + 1e-12)
        reach.append(z[bad[0]] if bad.size else z[-1])
    assert min(reach) == pytest.approx(-2.40, abs=0.05)
    deep = -np.geomspace(2.96, 1e6, 200)
    worst_best = min(growth_rates("rk4", deep, lam)[0].min() for lam in lams)
    assert worst_best > 1.0


def test_amplification_matrix_has_determinant_coupling():
    z = np.concatenate([-np.geomspace(1e-4, 1e6, 50), -np.geomspace(1e-2, 1e3, 20) * np.exp(0.5j)])
    for base in ("backward_euler", "rodas4", "rk4"):
        # rk4's R(-z) grows like z^4: beyond |z| ~ 2 its entries cancel in the determinant
        zz = z[np.abs(z) <= 2] if base == "rk4" else z
        m = amplification_matrix(base, zz, 0.7)
        det = np.linalg.det(m)
        np.testing.assert_allclose(det, 0.7, rtol=1e-8)


@pytest.mark.parametrize("base", ["backward_euler", "rk4", "radau_iia5"])
def test_matrix_predicts_the_steps(base):
    mu, h, lam = -3.0, 0.1, 0.8
    _, y, z = run(base, mu, h, 1, lam, y0=1.0)
    m = amplification_matrix(base, h * mu, lam)
    np.testing.assert_allclose([y, z], m @ np.array([1.0, 1.0]), rtol=1e-14)


def test_reconstruction_after_1000_steps_is_exact_where_predicted_stable():
    h = 1.0
    for mu in (-1.2, -5.0, -1e3, -1e-4):
        step, y, z = run("backward_euler", mu, h, 1000, 0.999, y0=1.0)
        for k in reversed(range(1000)):
            y, z = reversible_step_back(step, k * h, (k + 1) * h, y, z, 0.999)
        assert abs(y - 1.0) <= 1e-12 and abs(z - 1.0) <= 1e-12


def test_reconstruction_error_grows_like_predicted_rate():
    """Coupling 0.5 is forward-stable, but round-off in the rebuilt states grows by the
    reconstruction rate g (about 2 near z = 0) per step."""
    mu, h, lam = -1e-3, 1.0, 0.5
    g = float(growth_rates("backward_euler", mu * h, lam)[1])
    assert g == pytest.approx(2.0, rel=1e-2)
    ns, errs = [10, 20, 30, 40], []
    for n in ns:
        step, y, z = run("backward_euler", mu, h, n, lam)
        for k in reversed(range(n)):
            y, z = reversible_step_back(step, k * h, (k + 1) * h, y, z, lam)
        errs.append(abs(y - 1.0))
    rate = np.exp(np.polyfit(ns, np.log(errs), 1)[0])
    assert rate == pytest.approx(g, rel=0.15)
    eps = np.finfo(float).eps
    assert eps * g**40 / 1e2 < errs[-1] < eps * g**40 * 1e2


def test_gradient_prediction_matches_finite_differences_of_the_run():
    h, n, lam = 0.2, 25, 0.9
    for base in ("backward_euler", "radau_iia5", "rk4"):
        for mu in (-0.3, -4.0, -60.0):
            eps = 1e-6 * abs(mu)
            fd = (run(base, mu + eps, h, n, lam)[1] - run(base, mu - eps, h, n, lam)[1]) / (2 * eps)
            y_n, dy = predict_reversible(base, h * mu, h=h, n_steps=n, coupling=lam)
            # 25 steps of round-off: 3.4e-12 apart for one case on numpy 2.x's LAPACK
            assert y_n == pytest.approx(run(base, mu, h, n, lam)[1], rel=1e-11)
            assert dy == pytest.approx(fd, rel=1e-6, abs=1e-12)


def test_optimal_coupling():
    stiff = -np.geomspace(1.2, 1e6, 100)
    choice = optimal_coupling("backward_euler", stiff, n_steps=1000)
    assert choice.coupling > 0.99
    assert choice.reconstruction < 1.0011 and choice.digits_lost < 0.5
    wide = -np.geomspace(0.01, 1e6, 100)
    with pytest.warns(RuntimeWarning, match="digits over 1000 steps"):
        choice = optimal_coupling("backward_euler", wide, n_steps=1000)
    assert choice.coupling < 0.9
    assert choice.digits_lost > 16  # no coupling keeps 1000 steps over this spectrum usable in float64
    worse = max(growth_rates("backward_euler", wide, 0.999)[1].max(), growth_rates("backward_euler", wide, 0.3)[1].max())
    assert choice.reconstruction < worse


@given(
    y=st.floats(-1e3, 1e3), z=st.floats(-1e3, 1e3), mu=st.floats(-50, -0.01),
    lam=st.floats(0.05, 0.999), h=st.floats(1e-3, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_backward_step_inverts_forward_step(y, z, mu, lam, h):
    step = linear_step("radau_iia5", mu)
    y1, z1 = reversible_step(step, 0.0, h, y, z, lam)
    y0, z0 = reversible_step_back(step, 0.0, h, y1, z1, lam)
    scale = 1 + abs(y) + abs(z) + abs(y1) + abs(z1)
    assert abs(y0 - y) <= 1e-9 * scale * (1 / lam) and abs(z0 - z) <= 1e-9 * scale


def test_arrays_of_any_library_pass_through():
    step = lambda t0, t1, y: y * (1 / (1 - (t1 - t0) * -2.0))  # noqa: E731
    for lib in ("numpy", "torch", "jax.numpy"):
        xp = pytest.importorskip(lib) if lib != "numpy" else np
        if lib == "torch":
            arr = xp.tensor([1.0, 2.0], dtype=xp.float64)
        else:
            arr = xp.asarray([1.0, 2.0])
        y1, z1 = reversible_step(step, 0.0, 0.1, arr, arr, 0.999)
        y0, z0 = reversible_step_back(step, 0.0, 0.1, y1, z1, 0.999)
        assert type(y1) is type(arr)
        np.testing.assert_allclose(np.asarray(y0), [1.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, np.nan, "half", None])
def test_coupling_outside_open_unit_interval(bad):
    with pytest.raises(ValueError, match="coupling"):
        check_coupling(bad)
    with pytest.raises(ValueError, match="coupling"):
        growth_rates("backward_euler", -1.0, bad)


def test_multistep_base_is_refused():
    with pytest.raises(ValueError, match="one-step base.*bdf2"):
        growth_rates("bdf2", -1.0, 0.9)
    with pytest.raises(ValueError, match="finite"):
        growth_rates("backward_euler", np.inf, 0.9)
    with pytest.raises(ValueError, match="z_min < z_max < 0"):
        unstable_band("backward_euler", 0.9, z_min=-1.0, z_max=1.0)


def test_amplification_sees_non_normal_growth_the_spectral_radius_misses():
    from stiffcore.reversible import amplification

    fwd_rate, rec_rate = growth_rates("trapezoid", -1e6, 0.999)
    assert rec_rate < 1.0011  # the spectral radius calls this stable ...
    _, rec = amplification("trapezoid", -1e6, 0.999, 1000)
    assert rec > 100  # ... but M is nearly defective: perturbations grow ~n/(1 - lambda)
    _, rec_be = amplification("backward_euler", -1.2, 0.999, 1000)
    assert rec_be < 20  # backward Euler's M is far from defective
    step, y, z = run("trapezoid", -1e6, 1.0, 1000, 0.999)
    for k in reversed(range(1000)):
        y, z = reversible_step_back(step, k * 1.0, (k + 1) * 1.0, y, z, 0.999)
    assert abs(y - 1.0) > 1e-12  # and the measured reconstruction indeed drifts


def test_reversible_step_vjp_is_the_transposed_jacobian_of_the_pair_map():
    """With linear base steps the pair map is linear: its transpose, column by column."""
    from stiffcore.reversible import reversible_step_vjp

    rng = np.random.default_rng(3)
    Pf, Pb = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    lam = 0.9

    def step(t_from, t_to, v):
        return (Pf if t_to > t_from else Pb) @ v

    def pair(x):
        y1, z1 = reversible_step(step, 0.0, 1.0, x[:3], x[3:], lam)
        return np.concatenate([y1, z1])

    M = np.column_stack([pair(e) for e in np.eye(6)])
    a = rng.normal(size=6)
    a_y0, a_z0 = reversible_step_vjp(a[:3], a[3:], lambda v: Pb.T @ v, lambda v: Pf.T @ v, lam)
    assert np.allclose(np.concatenate([a_y0, a_z0]), M.T @ a, rtol=1e-13, atol=1e-13)


def test_optimal_coupling_at_its_bound_over_a_long_solve_warns():
    with pytest.warns(RuntimeWarning, match="still loses about"):
        choice = optimal_coupling("backward_euler", [-1.2, -1e3, -1e6], n_steps=1_000_000)
    assert choice.coupling == pytest.approx(0.999, abs=1e-3) and choice.digits_lost > 100


def test_instability_warning_needs_no_spectrum_for_slow_modes_and_sees_oscillators():
    from stiffcore.reversible import instability_warning

    # a large state: no eigenvalues, yet 1e4 steps at coupling 0.999 lose 4.3 digits on slow modes
    assert "digits over 10000 steps" in instability_warning("rk4", None, 0.999, n_steps=10_000)
    assert instability_warning("rk4", None, 0.999, n_steps=1000) is None
    # an undamped oscillator (z on the imaginary axis) was skipped as "not decaying"
    assert "digits over 100000 steps" in instability_warning("rk4", [0.5j, -0.5j], 0.999, n_steps=100_000)
