"""Algebraically reversible stepping around any one-step base method.

McCallum & Foster, "Efficient, Accurate and Stable Gradients for Neural ODEs"
(arXiv 2410.11648): with coupling lambda in (0, 1) and base map Psi_h,

    y1 = lambda y0 + (1 - lambda) z0 + (Psi_h(t0, z0) - z0)
    z1 = z0 + y1 - Psi_{-h}(t1, y1)

and the backward step rebuilds (y0, z0) from (y1, z1) exactly, so gradients need no
stored trajectory.  The steps below use only +, - and * on the states, so numpy,
torch and jax arrays pass through unchanged.

On y' = mu y the pair evolves by a 2x2 amplification matrix M(z, lambda) with
det M = lambda: the forward growth rho(M) and the reconstruction growth rho(M^-1) =
rho(M)/lambda pull against each other on decaying modes.  The functions below map
both, find the unstable band and choose the coupling.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import numpy as np

from .catalogue import Method, get_method
from .stability import as_z

State = TypeVar("State")
#: ``step(t_from, t_to, y)``: one step of the base method from t_from to t_to (either direction).
BaseStep = Callable[[float, float, State], State]

DEFAULT_COUPLING = 0.999
#: Growth per step above which a configuration counts as unstable: beyond it round-off
#: compounds visibly over ~1000 steps (1.0011^1000 = 3).
STABLE_GROWTH = 1.0011


def check_coupling(coupling) -> float:
    """The coupling as a float in the open interval (0, 1), or ValueError."""
    try:
        value = float(coupling)
    except (TypeError, ValueError):
        raise ValueError(f"coupling must be a number in (0, 1), got {coupling!r}") from None
    if not (0.0 < value < 1.0):
        raise ValueError(f"coupling must lie strictly between 0 and 1, got {coupling!r}")
    return value


def reversible_step(step: BaseStep, t0, t1, y0: State, z0: State, coupling: float = DEFAULT_COUPLING):
    """One forward reversible step: (y0, z0) at t0 -> (y1, z1) at t1.  Start with z0 = y0."""
    lam = coupling
    y1 = lam * y0 + (1 - lam) * z0 + (step(t0, t1, z0) - z0)
    z1 = z0 + y1 - step(t1, t0, y1)
    return y1, z1


def reversible_step_back(step: BaseStep, t0, t1, y1: State, z1: State, coupling: float = DEFAULT_COUPLING):
    """The exact algebraic inverse of :func:`reversible_step`: (y1, z1) -> (y0, z0)."""
    lam = coupling
    z0 = z1 - y1 + step(t1, t0, y1)
    y0 = (y1 - (1 - lam) * z0 - (step(t0, t1, z0) - z0)) * (1 / lam)
    return y0, z0


def reversible_step_vjp(a_y1: State, a_z1: State, vjp_back, vjp_forward, coupling: float = DEFAULT_COUPLING):
    """Cotangents of (y0, z0) from those of (y1, z1) for one :func:`reversible_step`.

    ``vjp_back(v)`` pulls a cotangent v of the backward base step's output step(t1, t0, y1)
    back to y1 (J_b^T v), ``vjp_forward(v)`` one of step(t0, t1, z0) back to z0 (J_f^T v);
    adapters let them also accumulate the parameters' cotangents, so each is called once,
    with the cotangent its base step really receives.  Both base steps are at hand after
    :func:`reversible_step_back`: a backward pass needs two base steps per step, not four.
    From y1 = lam y0 - lam z0 + step(t0, t1, z0) and z1 = z0 + y1 - step(t1, t0, y1)."""
    lam = coupling
    y_bar = a_y1 + a_z1 + vjp_back(-a_z1)
    return lam * y_bar, a_z1 - lam * y_bar + vjp_forward(y_bar)


def reversible_output(base_output: State, theta, gap: State, coupling: float = DEFAULT_COUPLING):
    """y at t0 + theta h inside a reversible step, from the base's continuous extension.

    ``base_output`` is P_theta, the base method's dense output of its forward step from z0
    (P_0 = z0, P_1 = Psi_h(t0, z0)); ``gap`` is y0 - z0.  Since y1 = Psi_h(t0, z0) + lambda
    (y0 - z0), the gap between y and the base trajectory is y0 - z0 at theta = 0 and
    lambda (y0 - z0) at theta = 1; interpolating it linearly,

        y(theta) = P_theta + (1 - theta (1 - lambda)) (y0 - z0),

    meets both step ends exactly and is as accurate between them as the base's own output
    (a linear interpolant of y0 and y1 is only second order)."""
    return base_output + (1 - theta * (1 - coupling)) * gap


def reversible_output_slope(base_slope: State, h, gap: State, coupling: float = DEFAULT_COUPLING):
    """d/dt of :func:`reversible_output`: the base's dense derivative dP/dt, less the gap's
    slope (1 - lambda)(y0 - z0) / h."""
    return base_slope - ((1 - coupling) / h) * gap


def _base(method: str | Method) -> Method:
    method = get_method(method)
    if not method.is_one_step:
        raise ValueError(
            f"the reversible scheme needs a one-step base method; {method.id!r} is {method.family}"
        )
    return method


def amplification_matrix(base: str | Method, z, coupling: float = DEFAULT_COUPLING) -> np.ndarray:
    """M(z, lambda) acting on (y, z-state) for one reversible step on y' = mu y, z = h mu.

    With R = R(z) (forward base step) and Rb = R(-z) (the base step taken backwards):
    M = [[lam, R - lam], [lam (1 - Rb), 1 + (1 - Rb)(R - lam)]].
    """
    stab = _base(base).stability
    lam = check_coupling(coupling)
    z = as_z(z)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        r, rb = stab(z), stab(-z)
        m = np.empty(np.shape(z) + (2, 2), dtype=np.result_type(r, rb, float))
        m[..., 0, 0] = lam
        m[..., 0, 1] = r - lam
        m[..., 1, 0] = lam * (1 - rb)
        m[..., 1, 1] = 1 + (1 - rb) * (r - lam)
    return m


def growth_rates(base: str | Method, z, coupling: float = DEFAULT_COUPLING):
    """(forward, reconstruction) growth per step: rho(M) and rho(M^-1) = rho(M)/lambda.

    Forward growth amplifies perturbations of the forward solve; reconstruction growth
    amplifies round-off as the backward pass rebuilds the states.
    """
    lam = check_coupling(coupling)
    m = amplification_matrix(base, z, lam)
    with np.errstate(over="ignore", invalid="ignore"):
        tr = m[..., 0, 0] + m[..., 1, 1]
        disc = np.sqrt((tr * tr - 4 * lam).astype(complex))
        big = np.maximum(np.abs(tr + disc), np.abs(tr - disc)) / 2
    big = np.where(np.isfinite(big), big, np.inf)
    return big, big / lam


def amplification(base: str | Method, z, coupling: float = DEFAULT_COUPLING, n_steps: int = 1):
    """(||M^n||, ||M^-n||) in the 2-norm: the worst growth of a perturbation over n forward
    steps and over n reconstruction steps.  Unlike the spectral radius this includes the
    transient growth of a non-normal M (for example trapezoid or implicit midpoint at large
    |z|, where M's two eigenvalues -1 and -lambda nearly coincide)."""
    lam = check_coupling(coupling)
    if not (isinstance(n_steps, (int, np.integer)) and n_steps >= 1):
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    m = amplification_matrix(base, z, lam)

    def norm_of_power(a):
        with np.errstate(over="ignore", invalid="ignore"):
            p = np.linalg.matrix_power(np.where(np.isfinite(a), a, 0.0), n_steps)
            ok = np.all(np.isfinite(p), axis=(-2, -1)) & np.all(np.isfinite(a), axis=(-2, -1))
            out = np.full(ok.shape, np.inf)
            out[ok] = np.linalg.norm(p[ok], ord=2, axis=(-2, -1))
        return out if np.ndim(z) else out[()]

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        inv = np.linalg.inv(np.where(np.isfinite(m), m, 0.0))
    return norm_of_power(m), norm_of_power(inv)


#: Digits a reversible solve may lose to reconstruction growth before adapters warn.
DIGITS_LOST_WARNING = 3.0


#: Largest state whose spectrum the adapters compute for the warning (an n^3 eigensolve on the
#: host); above it only the slow-mode loss n log10(1/coupling) is checked.
EIGEN_CHECK_MAX_N = 500


def instability_warning(base: str | Method, z, coupling: float = DEFAULT_COUPLING, n_steps: int | None = None
                        ) -> str | None:
    """A message when the reversible pair amplifies perturbations too much on a decaying mode
    (Re z < 0, z = h * eigenvalue; on growing modes the forward growth is the ODE's own), else
    None.  Without ``n_steps``: growth above :data:`STABLE_GROWTH` per step.  With it: more
    than :data:`DIGITS_LOST_WARNING` digits lost over the whole solve, growth^n, which also
    catches a mild per-step growth compounded over many steps (coupling 0.999 rebuilds slow
    modes with growth 1/0.999 per step: 0.43 digits per 1000 steps).

    ``z`` may be None where the spectrum is too costly to compute (large states): with
    ``n_steps`` the slowest modes (z -> 0, which every problem has in the limit) are checked
    all the same, since their loss n log10(1/coupling) needs no eigenvalues.  Oscillatory
    modes on the imaginary axis count as decaying ones: the exact flow does not grow there."""
    z = np.ravel(np.asarray([] if z is None else z, dtype=complex))
    z = z[np.isfinite(z) & (np.real(z) <= 0)]
    if n_steps is not None:
        z = np.append(z, 0.0)
    if z.size == 0:
        return None
    name = _base(base).id
    fwd, rec = growth_rates(name, z, coupling)
    worst = float(max(np.max(fwd), np.max(rec)))
    detail = f"(forward {np.max(fwd):.4g}, reconstruction {np.max(rec):.4g})"
    if n_steps is None:
        if worst <= STABLE_GROWTH:
            return None
        lost = ""
    else:
        digits = n_steps * math.log10(max(worst, 1.0)) if math.isfinite(worst) else math.inf
        if digits <= DIGITS_LOST_WARNING:
            return None
        lost = f", about {digits:.3g} digits over {n_steps} steps"
    return (f"reversible({name}, coupling={coupling}) grows by {worst:.6g} per step for h*eig(J) {detail}{lost}; "
            "rebuilt states and gradients lose accuracy. See stiffcore.reversible.optimal_coupling or use a "
            "smaller step.")


@dataclass(frozen=True)
class UnstableBand:
    """Where on the negative real axis a (base, coupling) pair grows faster than ``threshold``."""

    base: str
    coupling: float
    threshold: float
    forward: list = field(default_factory=list)          # intervals (z_left, z_right), z_left < z_right < 0
    reconstruction: list = field(default_factory=list)
    singular: list = field(default_factory=list)         # z where the backward base step has a pole
    peak_forward: float = 1.0
    peak_forward_z: float = 0.0
    peak_reconstruction: float = 1.0
    peak_reconstruction_z: float = 0.0


def _intervals(z: np.ndarray, bad: np.ndarray) -> list:
    """Runs of ``bad`` on a grid of z (ascending), as (left, right) intervals."""
    out = []
    i = 0
    while i < z.size:
        if bad[i]:
            j = i
            while j + 1 < z.size and bad[j + 1]:
                j += 1
            out.append((float(z[i]), float(z[j])))
            i = j + 1
        else:
            i += 1
    return out


def unstable_band(base: str | Method, coupling: float = DEFAULT_COUPLING, threshold: float = 1.01,
                  z_min: float = -1e8, z_max: float = -1e-6, points_per_decade: int = 400) -> UnstableBand:
    """Scan z in [z_min, z_max] (negative reals, log-spaced) for growth above ``threshold``."""
    method = _base(base)
    lam = check_coupling(coupling)
    if not (z_min < z_max < 0):
        raise ValueError(f"need z_min < z_max < 0, got z_min={z_min}, z_max={z_max}")
    decades = math.log10(z_min / z_max)
    z = -np.geomspace(-z_min, -z_max, max(int(decades * points_per_decade), 2))  # ascending
    fwd, rec = growth_rates(method, z, lam)
    poles = method.stability.poles
    singular = sorted(float(-p.real) for p in poles
                      if abs(p.imag) <= 1e-12 * abs(p) and z_min <= -p.real <= z_max)
    i, j = int(np.argmax(fwd)), int(np.argmax(rec))
    return UnstableBand(
        method.id, lam, threshold,
        forward=_intervals(z, fwd > threshold), reconstruction=_intervals(z, rec > threshold),
        singular=singular,
        peak_forward=float(fwd[i]), peak_forward_z=float(z[i]),
        peak_reconstruction=float(rec[j]), peak_reconstruction_z=float(z[j]),
    )


@dataclass(frozen=True)
class CouplingChoice:
    """The coupling that minimises the worse of forward and reconstruction growth."""

    coupling: float
    forward: float            # worst forward growth per step over the z values
    reconstruction: float     # worst reconstruction growth per step
    n_steps: int

    @property
    def amplification(self) -> float:
        """Worst growth over ``n_steps`` steps, max(forward, reconstruction)^n."""
        return math.exp(self.n_steps * math.log(max(self.forward, self.reconstruction)))

    @property
    def digits_lost(self) -> float:
        """Decimal digits of the state lost to that growth over the whole run."""
        return self.n_steps * math.log10(max(self.forward, self.reconstruction, 1.0))


def optimal_coupling(base: str | Method, z, n_steps: int, bounds=(1e-3, 0.999), warn: bool = True
                     ) -> CouplingChoice:
    """Coupling in ``bounds`` minimising max over z of max(forward, reconstruction) growth.

    ``z`` is the set of h*mu a problem visits (spectrum times step sizes).  Growth compounds
    over ``n_steps``; the result says how many digits that costs, and (``warn``) a
    ``RuntimeWarning`` says so when even the best coupling loses more than
    :data:`DIGITS_LOST_WARNING` digits (backward Euler over {-1.2, -1e3, -1e6} at 0.999 and
    1e6 steps: 217 digits).
    """
    method = _base(base)
    z = as_z(z)
    if not (isinstance(n_steps, (int, np.integer)) and n_steps >= 1):
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    lo, hi = (check_coupling(b) for b in bounds)

    def worst(lam: float) -> float:
        fwd, rec = growth_rates(method, z, lam)
        return float(np.max(rec))  # rec = fwd / lam >= fwd

    grid = np.linspace(lo, hi, 400)
    vals = np.array([worst(x) for x in grid])
    k = int(np.argmin(vals))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden section on the bracketing cells
        c, d = b - g * (b - a), a + g * (b - a)
        if worst(c) < worst(d):
            b = d
        else:
            a = c
    best = min(((a + b) / 2, grid[k]), key=worst)
    fwd, rec = growth_rates(method, z, best)
    choice = CouplingChoice(float(best), float(np.max(fwd)), float(np.max(rec)), int(n_steps))
    if warn and choice.digits_lost > DIGITS_LOST_WARNING:
        warnings.warn(f"optimal_coupling({method.id}): the best coupling in {tuple(bounds)}, {choice.coupling:.4g}, "
                      f"still loses about {choice.digits_lost:.3g} digits over {n_steps} steps; rebuilt states and "
                      "gradients will be wrong. Take fewer steps or use a non-reversible adjoint.",
                      RuntimeWarning, stacklevel=2)
    return choice


def predict_reconstruction_error(base: str | Method, z, coupling: float, n_steps: int, perturbation: float,
                                 y0: float = 1.0) -> float:
    """Relative error of the rebuilt y0 when y_N is multiplied by (1 + perturbation) before
    n backward steps: |(M^-n)_11 y_N perturbation / y0|, exact linear propagation."""
    m = amplification_matrix(base, z, coupling)
    if not np.all(np.isfinite(m)):
        return math.inf  # z sits on a pole of the backward base step
    y_n = (np.linalg.matrix_power(m, n_steps) @ np.array([y0, y0]))[0]
    back = np.linalg.matrix_power(np.linalg.inv(m), n_steps)
    return float(abs(back[0, 0] * y_n * perturbation / y0))


def predict_reversible(base: str | Method, z, h: float = 1.0, n_steps: int = 1,
                       coupling: float = DEFAULT_COUPLING, y0: float = 1.0):
    """(y_N, d y_N / d mu) of the reversible scheme on y' = mu y, z = h mu, starting z0 = y0.

    y_N = e1^T M^N (1, 1)^T y0 and its derivative sums M^k (dM/dmu) M^(N-1-k).
    """
    method = _base(base)
    lam = check_coupling(coupling)
    stab = method.stability
    z = as_z(z)
    m = amplification_matrix(method, z, lam)
    r = stab(z)
    rb = stab(-z)
    dr, drb = stab.derivative(z), -stab.derivative(-z)  # d/dz of R(z) and of R(-z)
    dm = np.zeros_like(m)
    dm[..., 0, 1] = dr
    dm[..., 1, 0] = -lam * drb
    dm[..., 1, 1] = -drb * (r - lam) + (1 - rb) * dr
    dm *= h  # d/dmu = h d/dz
    start = np.ones(np.shape(z) + (2,), dtype=m.dtype) * y0
    # forward pass with tangent: v_{k+1} = M v_k, dv_{k+1} = M dv_k + dM v_k
    v, dv = start, np.zeros_like(start)
    for _ in range(n_steps):
        v, dv = np.einsum("...ij,...j->...i", m, v), (np.einsum("...ij,...j->...i", m, dv)
                                                     + np.einsum("...ij,...j->...i", dm, v))
    return v[..., 0], dv[..., 0]
