"""Test-only references: Runge-Kutta order defects (on the core's rooted trees) and a plain
numpy Rosenbrock step (transformed form) for convergence checks."""

from __future__ import annotations

import numpy as np

from stiffcore.catalogue.trees import density, stage_weights, trees


def order_defects(a, b, order: int, b0: float = 0.0) -> list:
    """(tree, b.Phi(t) + b0*[t is a leaf] - 1/gamma(t)) for every tree up to ``order``."""
    out = []
    for n in range(1, order + 1):
        for t in trees(n):
            value = b @ stage_weights(a, t) + (b0 if t == () else 0.0)
            out.append((t, value - 1 / float(density(t))))
    return out


def rosenbrock_step(tab, f, jac, y0, h):
    """One step of an autonomous problem in the transformed form (Hairer & Wanner 7.25).

    Returns (y1, y1_embedded, k) with k the transformed stage values."""
    a, C, m, m_emb = tab.transformed()
    g = tab.gamma_diag
    n = y0.size
    w = np.eye(n) / (h * g) - jac(y0)
    k = []
    for i in range(tab.stages):
        u = y0 + sum(a[i, j] * k[j] for j in range(i))
        rhs = f(u) + sum(C[i, j] * k[j] for j in range(i)) / h
        k.append(np.linalg.solve(w, rhs))
    k = np.array(k)
    y1 = y0 + m @ k
    y1e = None if m_emb is None else y0 + m_emb @ k
    return y1, y1e, k


def rosenbrock_dense(tab, y0, y1, k, theta):
    """Steinebach's Rodas continuous extension in the transformed variables."""
    terms = tab.dense_transformed @ k
    inner = terms[-1]
    for row in terms[-2::-1]:
        inner = row + theta * inner
    return (1 - theta) * y0 + theta * (y1 + (1 - theta) * inner)


def rk_step_implicit(tab, f, y0, h, iters=60):
    """One Runge-Kutta step by Newton-free fixed point on small steps (tests only)."""
    s = tab.stages
    k = np.tile(f(y0), (s, 1))
    for _ in range(iters):
        k = np.array([f(y0 + h * tab.a[i] @ k) for i in range(s)])
    return y0 + h * tab.b @ k, k


def fitted_order(hs, errors) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def step_end_reference(fun, y0, times, jac=None):
    """A reference as accurate at any output time as at a step end: SciPy Radau at rtol 1e-13,
    restarted at every time (no interpolation)."""
    from scipy.integrate import solve_ivp

    out, t0, y = [], 0.0, np.asarray(y0, dtype=float)
    for t in times:
        if t > t0:
            y = solve_ivp(fun, (t0, t), y, method="Radau", rtol=1e-13, atol=1e-20, jac=jac).y[:, -1]
            t0 = t
        out.append(y)
    return np.array(out)


def practical_rtol(method, rtol: float) -> float:
    """``rtol``, except for methods with a first-order estimate (the catalogue's for backward
    Euler, SDIRK2, ...), which asks for h^2 ~ rtol: a test gives them 1e-4 (order 1) or 1e-5
    (order 2) at most, a few hundred steps per unit time instead of 1e4."""
    from stiffcore.catalogue import get_method

    m = get_method(method)
    if m.error_order > 1:
        return rtol
    return max(rtol, 1e-4 if m.order == 1 else 1e-5)


def rober_rtol(method) -> float:
    """The tolerance at which a method steps through ROBER to 1e5 in seconds: 1e-6 at order
    >= 3, 1e-3 below (about 250 steps)."""
    from stiffcore.catalogue import get_method

    return 1e-6 if get_method(method).order >= 3 else 1e-3


def weighted_error(ys, ref, rtol, atol) -> float:
    """max over components and times of |y - y_ref| / (atol + rtol |y_ref|)."""
    ys, ref = np.asarray(ys), np.asarray(ref)
    return float(np.max(np.abs(ys - ref) / (atol + rtol * np.abs(ref))))



def large_linear_system(rates, seed: int = 0) -> np.ndarray:
    """A = Q diag(rates) Q^T with a random orthogonal Q: a dense Jacobian with a chosen real
    spectrum and no structure to exploit, for the spectrum checks on large states."""
    rates = np.asarray(rates, dtype=float)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((rates.size, rates.size)))
    return (q * rates) @ q.T


#: HIRES's rate constants 1.71, 280 and 8.32, the parameters its benchmarks differentiate
HIRES_RATES = np.array([1.71, 280.0, 8.32])


def hires(t, y, xp=np, p=HIRES_RATES):
    """HIRES (Schafer 1975; the IVP test set's 8-species plant physiology problem, written
    from its published equations), on [0, 321.8122] from HIRES_Y0; ``p`` its rate constants
    1.71, 280 and 8.32 (any array library with ``stack``)."""
    r = p[1] * y[5] * y[7]
    return xp.stack([
        -p[0] * y[0] + 0.43 * y[1] + p[2] * y[2] + 0.0007,
        p[0] * y[0] - 8.75 * y[1],
        -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4],
        p[2] * y[1] + p[0] * y[2] - 1.12 * y[3],
        -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6],
        -r + 0.69 * y[3] + p[0] * y[4] - 0.43 * y[5] + 0.69 * y[6],
        r - 1.81 * y[6],
        -r + 1.81 * y[6],
    ])


HIRES_Y0 = np.array([1.0, 0, 0, 0, 0, 0, 0, 0.0057])
HIRES_T1 = 321.8122


def check_batched_reconstruction(backend, zs) -> None:
    """A backend's batched reversible_run (backward Euler, coupling 0.999, 1000 steps of 0.1):
    y0 rebuilt to 1e-12 at every z, and each z alone gives the batch's numbers."""
    run = backend.reversible_run("backward_euler", zs, 0.1, 1.0, 1000, 0.999)
    assert np.all(np.abs(run["y0_rebuilt"] - 1.0) <= 1e-12), run["y0_rebuilt"]
    for i, z in enumerate(zs[:2]):
        alone = backend.reversible_run("backward_euler", np.array([z]), 0.1, 1.0, 1000, 0.999)
        for key in ("y_n", "y0_rebuilt", "dy_dlambda"):
            np.testing.assert_allclose(alone[key][0], run[key][i], rtol=1e-13, atol=1e-300, err_msg=key)


def medakzo(N: int = 200):
    """The medical Akzo Nobel problem (IVP test set, Lioen & de Swart; written from its published
    equations): an antibody binding to a receptor along a tissue strip, method of lines with N
    points, y = (u_1, v_1, ..., u_N, v_N), t in [0, 20], the boundary value u_0 = 2 switched off
    at t = 5.  Returns (f, y0, sparsity): the Jacobian is banded, two diagonals either side."""
    from scipy.sparse import diags

    dz = 1.0 / N
    zeta = dz * np.arange(1, N + 1)
    advection = 2 * (zeta - 1) ** 3 / 16.0 / (2 * dz)   # alpha / (2 dzeta), c = 4
    diffusion = (zeta - 1) ** 4 / 16.0 / dz**2          # beta / dzeta^2
    k = 100.0

    def f(t, y):
        u, v = y[0::2], y[1::2]
        left = np.concatenate(([2.0 if t <= 5 else 0.0], u[:-1]))
        right = np.concatenate((u[1:], [u[-2]]))   # zero flux at zeta = 1: u_{N+1} = u_{N-1}
        out = np.empty_like(y)
        out[1::2] = -k * u * v
        out[0::2] = advection * (right - left) + diffusion * (left - 2 * u + right) + out[1::2]
        return out

    y0 = np.zeros(2 * N)
    y0[1::2] = 1.0
    return f, y0, diags([1.0] * 5, [-2, -1, 0, 1, 2], shape=(2 * N, 2 * N), format="csc")


def orego(t, y, xp=np):
    """OREGO, the Oregonator (Field & Noyes 1974; the IVP test set's version, written from its
    published equations), on [0, 360] from OREGO_Y0: a relaxation oscillation, stiff."""
    return xp.stack([
        77.27 * (y[1] + y[0] * (1 - 8.375e-6 * y[0] - y[1])),
        (y[2] - (1 + y[0]) * y[1]) / 77.27,
        0.161 * (y[0] - y[2]),
    ])


OREGO_Y0 = np.array([1.0, 2.0, 3.0])
OREGO_T1 = 360.0


def e5(t, y, xp=np):
    """E5 (Enright, Hull & Lindberg's chemical pyrolysis, as in Hairer & Wanner II, IV.10),
    on [0, 1e13] from E5_Y0: values down to 1e-20, so it needs atol ~ 1e-24."""
    a, b, c, m = 7.89e-10, 1.1e7, 1.13e3, 1e6
    r1, r2, r3, r4 = a * y[0], b * y[0] * y[2], m * c * y[1] * y[2], c * y[3]
    return xp.stack([-r1 - r2, r1 - r3, r1 - r2 - r3 + r4, r2 - r4])


E5_Y0 = np.array([1.76e-3, 0.0, 0.0, 0.0])
E5_T1 = 1e13


def h2o2_mechanism():
    """Cantera's h2o2 mechanism (10 species, 29 reactions) at 1500 K, 1 atm, to 10 ms, as a
    stiffcore Problem (skips the test without Cantera)."""
    import pytest

    ct = pytest.importorskip("cantera")
    from stiffcore.problems.cantera import from_cantera

    gas = ct.Solution("h2o2.yaml")
    gas.TPX = 1500.0, 101325.0, "H2:2, O2:1, AR:7"
    return from_cantera(gas, (0.0, 1e-2), name="h2o2")
