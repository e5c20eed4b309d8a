"""How adapters step a Runge-Kutta tableau, derived once from the coefficients.

Every array framework (torch, JAX) steps an implicit Runge-Kutta method the same way:
stages are solved in blocks (a fully implicit method is one block, a DIRK method one
block per stage, an explicit stage is evaluated directly), each implicit block by
simplified Newton on the stage states ``Y_B = psi_B + h A_BB f(Y_B)`` with the matrix
``I - h A_BB (x) J``, which a block of several stages solves as independent n x n systems
(:mod:`.eigen_split`, as RADAU5 does); the stage derivatives follow as ``K_B = A_BB^-1 (Y_B - psi_B) / h``.
The solution is the last stage state when the method is stiffly accurate (no
cancellation when |h lambda| is large), else ``y0 + h b.K``.  The error estimate
``h (b - b^).K - h b0 f0`` is filtered with ``(I - h gamma J)^-1`` where it would grow
like |h lambda| on stiff modes, so stiff components are not overestimated: ``gamma`` is b0 for a fully implicit method (Radau IIA, Hairer & Wanner IV.8
eq. 8.20) and the last diagonal entry for a DIRK (TR-BDF2, Hosea & Shampine 1996; backward
Euler), a matrix the stages already factorise.  Bounded estimates (Kvaerno's, SDIRK2's) are
used as they are.  A filter is also refused where it would hide the error that order
reduction puts on stiff components (Prothero-Robinson, :func:`_filter_hides_order_reduction`):
the implicit midpoint rule and Gauss-Legendre, whose |R(-inf)| = 1 leaves that error
undamped, filtered, were 5-1000x under the true local error and 144x over the tolerance
globally.  Unfiltered, their steps on stiff problems stay near |h lambda| = 1 (slow, not
wrong); the trapezoidal rule and the L-stable methods keep their filters.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from .eigen_split import EigenSplit, eigen_split
from .method import Method
from .tableau import ButcherTableau


@dataclass(frozen=True)
class StageBlock:
    """Stages solved together; ``a_block`` is A restricted to them (zero for an explicit stage)."""

    stages: tuple[int, ...]
    a_block: np.ndarray
    a_block_inv: np.ndarray | None     # None for an explicit stage
    #: I - h (A_BB (x) J) as independent n x n systems (:mod:`.eigen_split`); None for one stage
    split: EigenSplit | None = None

    @property
    def implicit(self) -> bool:
        return self.a_block_inv is not None


@dataclass(frozen=True)
class RungeKuttaScheme:
    """A Runge-Kutta tableau in the form the torch and JAX adapters step (module docstring)."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    blocks: tuple[StageBlock, ...]
    solution_is_last_stage: bool
    error_weights: np.ndarray | None    # b - b^ (None: no embedded method)
    error_b0: float                     # the embedded method's weight on f(t0, y0)
    error_filter: float                 # gamma of (I - h gamma J)^-1 applied to the estimate; 0: none
    defect_filter: float                # gamma of the step's own (I - h gamma J), for interpolation defects

    @property
    def stages(self) -> int:
        return self.b.size


_SCHEMES: dict[str, RungeKuttaScheme] = {}


def runge_kutta_scheme(method: str | Method) -> RungeKuttaScheme:
    """The stepping scheme of a Runge-Kutta catalogue method (explicit or implicit), cached by id."""
    from . import get_method

    method = get_method(method)
    if method.id not in _SCHEMES:
        _SCHEMES[method.id] = _build(method)
    return _SCHEMES[method.id]


def _build(method: Method) -> RungeKuttaScheme:
    tab = method.coefficients
    if not isinstance(tab, ButcherTableau):
        raise ValueError(f"{method.id!r} is a {method.family} method, not a Runge-Kutta tableau")
    a, s = tab.a, tab.stages
    if method.family == "fully_implicit":
        groups = [tuple(range(s))]
    else:
        groups = [(i,) for i in range(s)]
    blocks = []
    for stages in groups:
        idx = np.array(stages)
        a_block = a[np.ix_(idx, idx)].copy()
        a_block.setflags(write=False)
        inv = None
        if np.any(a_block):
            if abs(np.linalg.det(a_block)) < 1e-12:
                raise ValueError(f"{method.id!r}: the implicit stage block {stages} has a singular matrix")
            inv = np.linalg.inv(a_block)
            inv.setflags(write=False)
        split = eigen_split(a_block, float(tab.b0_embedded) or None) if inv is not None else None
        blocks.append(StageBlock(stages, a_block, inv, split))
    last_implicit = bool(a[-1, -1] != 0)
    own_gamma = float(a[-1, -1])
    if method.family == "fully_implicit":  # RADAU5's b0, else the size of A's eigenvalues
        own_gamma = float(tab.b0_embedded) or float(np.max(np.abs(np.linalg.eigvals(a))))
    error_weights, gamma = None, 0.0
    if tab.b_embedded is not None:
        error_weights = tab.b - tab.b_embedded
        error_weights.setflags(write=False)
        # an explicit method's estimate is a polynomial in z and grows on every stiff mode: it
        # is not meant for them, and there is no matrix to filter with
        if method.is_implicit and _estimate_grows_on_stiff_modes(tab):
            if not own_gamma:
                raise ValueError(f"{method.id!r}: its error estimate grows on stiff modes and has no "
                                 "filter (b0 for a fully implicit method, a_ss for a DIRK)")
            gamma = 0.0 if _filter_hides_order_reduction(tab, own_gamma) else own_gamma
    return RungeKuttaScheme(
        a=a, b=tab.b, c=tab.c, blocks=tuple(blocks),
        solution_is_last_stage=tab.is_stiffly_accurate and last_implicit,
        error_weights=error_weights, error_b0=float(tab.b0_embedded), error_filter=gamma,
        defect_filter=own_gamma,
    )


def _estimate_grows_on_stiff_modes(tab: ButcherTableau) -> bool:
    """Whether the estimate on y' = lambda y, (R(z) - R^(z)) y0, grows like |z| as z -> -inf.

    Radau IIA's (b0 f0 term) and TR-BDF2's do: unfiltered, every stiff component would look
    like an error of size |h lambda|.  Kvaerno's embedded methods are bounded at infinity,
    and filtering their estimate would divide it by |h gamma lambda|: stiff errors went
    unseen (Prothero-Robinson 15-1710x rtol).  So only the growing ones are filtered."""
    s, ones = tab.stages, np.ones(tab.stages)

    def estimate(z):
        return z * (tab.b - tab.b_embedded) @ np.linalg.solve(np.eye(s) - z * tab.a, ones) - z * tab.b0_embedded
    return abs(estimate(-1e10)) > 1e3 * max(abs(estimate(-1e5)), 1e-300)


def _filter_hides_order_reduction(tab: ButcherTableau, gamma: float) -> bool:
    """Whether the filtered estimate under-reports, by more than 5x, the local error of one step
    on Prothero-Robinson, y' = lambda (y - sin t) + cos t from y0 = sin t0 (exact; the stages
    are linear), for |h lambda| from 2.5 to 1e5: the stiff error that a method of low stage
    order makes there (Prothero & Robinson, Math. Comp. 28 (1974) 145-162)."""
    s, t0 = tab.stages, 1.0
    for lam in (-1e2, -1e4, -1e6):
        for h in (0.1, 0.05, 0.025):
            z, t = h * lam, t0 + tab.c * h
            # in the stage errors E = Y - sin t (no cancellation): (I - z A) E = the stage
            # defects y0 + h A cos t - sin t, and h F = z E + h cos t
            E = np.linalg.solve(np.eye(s) - z * tab.a, np.sin(t0) + h * tab.a @ np.cos(t) - np.sin(t))
            local = (np.sin(t0) + h * tab.b @ np.cos(t) - np.sin(t0 + h)) + z * tab.b @ E
            d = tab.b - tab.b_embedded
            estimate = (z * d @ E + h * d @ np.cos(t) - h * tab.b0_embedded * np.cos(t0)) / (1 - gamma * z)
            if abs(estimate) < 0.2 * abs(local):
                return True
    return False
