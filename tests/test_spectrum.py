"""Krylov spectrum estimates (stiffcore.spectrum), used by the reversible warnings on large states."""

import numpy as np
import pytest
from helpers import large_linear_system

from stiffcore.spectrum import arnoldi, ritz_values, start_vector


def test_ritz_values_find_the_extreme_eigenvalues():
    A = large_linear_system(np.r_[np.linspace(-1e3, -50.0, 799), -1.0])
    ritz = ritz_values(arnoldi(lambda v: A @ v, start_vector(800)))
    assert ritz.real.min() == pytest.approx(-1e3, rel=1e-2)
    assert ritz.real.max() == pytest.approx(-1.0, rel=1e-2)
    assert np.all(ritz.real <= -1.0 * (1 - 1e-2)) and np.all(ritz.real >= -1e3 * (1 + 1e-12))


def test_a_slow_mode_far_below_a_wide_spectrum_converges_last():
    """The documented limit: 20 iterations resolve the stiff end of [-1e4, -10] but place the
    isolated slow mode -0.1 near -45 (convergence at the slow end goes like sqrt(spread))."""
    A = large_linear_system(np.r_[np.linspace(-1e4, -10.0, 799), -0.1])
    ritz = ritz_values(arnoldi(lambda v: A @ v, start_vector(800)))
    assert ritz.real.min() == pytest.approx(-1e4, rel=1e-2)
    assert ritz.real.max() < -10.0


def test_ritz_values_see_oscillators_at_the_edge_of_the_spectrum():
    blocks = np.kron(np.eye(300), [[0.0, 50.0], [-50.0, 0.0]]) - np.eye(600)
    ritz = ritz_values(arnoldi(lambda v: blocks @ v, start_vector(600)))
    assert np.abs(ritz.imag).max() == pytest.approx(50.0, rel=1e-6)


def test_breakdown_gives_the_exact_eigenvalues_and_no_division_by_zero():
    A = np.diag(np.r_[-1.0, -5.0, np.zeros(598)])
    with np.errstate(all="raise"):
        ritz = ritz_values(arnoldi(lambda v: A @ v, start_vector(600)))
    assert sorted(ritz.real)[:2] == pytest.approx([-5.0, -1.0])
    assert np.all(np.isfinite(ritz)) and np.allclose(sorted(ritz.real)[2:], 0.0, atol=1e-12)


def test_framework_arrays_pass_through():
    torch = pytest.importorskip("torch")
    A = large_linear_system(np.linspace(-100.0, -1.0, 50))
    expected = ritz_values(arnoldi(lambda v: A @ v, start_vector(50), steps=10))
    At = torch.tensor(A)
    got = ritz_values(arnoldi(lambda v: At @ v, torch.tensor(start_vector(50)), steps=10))
    assert np.sort(got.real) == pytest.approx(np.sort(expected.real), rel=1e-10)
