"""Framework-free step arithmetic of the variable-order BDF/NDF families (FBDF, QNDF).

The state of a solve is the difference table D, ``ROWS = MAX_ORDER + 3`` rows of the
state's shape: D[m] = nabla^m y_n, the backward differences at the current constant step h
(Shampine & Reichelt 1997, sec. 2.3; Shampine, *Numerical Solution of ODEs*, 1994, ch. 5).
One step of order k from t_n to t_n + h, with c = h / alpha_k:

    predictor    y0 = PREDICTOR[k] @ D                 (sum of D[0..k]; Newton's start)
    corrector    y_{n+1} solves  y = b + c f(t_n + h, y),   b = corrector_weights(family)[k] @ D
    update       D <- UPDATE[k] @ D + NEW_VALUE[k] y_{n+1}
    error        C_k D[k+1] (= C_k (y_{n+1} - y0)); C_{k-1} D[k] and C_{k+1} D[k+2] for the
                 orders k -/+ 1 (Shampine & Reichelt 1997, sec. 2.3)

A change of step by ``ratio`` (new h / old h) re-samples the interpolating polynomial of
degree k: ``D[:MAX_ORDER+1] <- rescale_matrix(ratio) @ (ORDER_MASK[k] * D)[:MAX_ORDER+1]``.
Every map is linear in D with coefficients that depend on (k, ratio) only, so with the
step and order sequence fixed the tangent and adjoint of a solve are the same maps applied
to the sensitivities, plus the corrector's implicit-function-theorem solve.

Everything here is a constant NumPy table or a NumPy function of them; adapters turn the
tables into arrays of their framework and apply them with its matmul (``rescale_matrix``
is the polynomial ``sum_p ratio^p RESCALE_POLYNOMIALS[p]``, so a traced ratio works too).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import comb

import numpy as np

from .catalogue import VariableOrderMethod, get_variable_order
from .catalogue.multistep import MAX_ORDER

__all__ = [
    "MAX_ORDER", "ROWS", "ORDER_MASK", "PREDICTOR", "UPDATE", "NEW_VALUE", "RESCALE_POLYNOMIALS",
    "rescale_matrix", "resample", "update", "same_step", "corrector_weights", "interpolation_terms",
    "POWER_COEFFICIENTS",
    "interpolation_weights", "start_table", "history_matrix", "table_from_history", "check_max_order",
    "NEWTON_MAXITER", "JACOBIAN_AGE", "MIN_FACTOR", "MAX_FACTOR", "KEEP_BELOW", "newton_safety",
    "order_candidates", "next_order_and_step",
]

ROWS = MAX_ORDER + 3
_ORDERS = range(MAX_ORDER + 1)

#: ORDER_MASK[k][m] = 1 for m <= k: the rows an order-k step reads (and its predictor's weights).
ORDER_MASK = np.array([[1.0 if m <= k else 0.0 for m in range(ROWS)] for k in _ORDERS])
PREDICTOR = ORDER_MASK


def _update(k: int) -> tuple[np.ndarray, np.ndarray]:
    """nabla^m y_{n+1} = nabla^{m-1} y_{n+1} - nabla^{m-1} y_n, so D[m] <- y_{n+1} - sum_{i<m} D[i]
    for m = 0..k+2 (row k+1 is y_{n+1} minus the predictor, row k+2 what the order k+1
    estimate reads); rows beyond are not read at order k and are kept.

    Built from y_{n+1} itself rather than from the correction y_{n+1} - y^(0): on a mode
    with |h lambda| = 1e8 the predictor is ~1e8 times y_{n+1}, and y^(0) + d would keep
    only the absolute accuracy eps |y^(0)| of y_{n+1} and of its derivative."""
    U, u = np.eye(ROWS), np.zeros(ROWS)
    for m in range(min(k + 3, ROWS)):
        U[m, :] = 0
        U[m, :m] = -1
        u[m] = 1
    return U, u


UPDATE = np.array([_update(k)[0] for k in _ORDERS])
NEW_VALUE = np.array([_update(k)[1] for k in _ORDERS])


def _rescale_polynomials() -> np.ndarray:
    """T(rho) = sum_p rho^p T_p, where T(rho) maps the backward differences of a polynomial of
    degree <= MAX_ORDER at spacing h to those at spacing rho h, about the same newest point.

    Newton's backward formula P(t_n + s h) = sum_m B_m(s) nabla^m y_n with B_m(s) =
    prod_{l=1}^{m} (s + l - 1) / l; the new values sit at s = -j rho, and their differences are
    nabla'^i = sum_j (-1)^j C(i, j) P(t_n - j rho h).  Computed in exact fractions."""
    size = MAX_ORDER + 1
    poly = [[[Fraction(0)] * size for _ in range(size)] for _ in range(size)]  # poly[i][m][p]
    for m in range(size):
        for j in range(size):
            # B_m(-j rho) as a polynomial in rho: prod_l ((l - 1) - j rho) / l
            coeffs = [Fraction(1)]
            for i in range(1, m + 1):
                nxt = [Fraction(0)] * (len(coeffs) + 1)
                for p, c in enumerate(coeffs):
                    nxt[p] += c * Fraction(i - 1, i)
                    nxt[p + 1] += c * Fraction(-j, i)
                coeffs = nxt
            for i in range(j, size):
                for p, c in enumerate(coeffs):
                    poly[i][m][p] += (-1) ** j * comb(i, j) * c
    return np.array([[[float(poly[i][m][p]) for m in range(size)] for i in range(size)] for p in range(size)])


#: RESCALE_POLYNOMIALS[p] is the coefficient of ratio^p in :func:`rescale_matrix`.
RESCALE_POLYNOMIALS = _rescale_polynomials()
_EXPONENTS = np.arange(MAX_ORDER + 1)
_EPS = float(np.finfo(float).eps)


def rescale_matrix(ratio) -> np.ndarray:
    """The (MAX_ORDER+1)^2 matrix taking differences at step h to differences at ``ratio`` h.

    It is upper triangular, so applied to an order-k table masked by ORDER_MASK[k] it leaves
    rows above k zero: the order-k polynomial has no higher differences."""
    powers = float(ratio) ** _EXPONENTS
    return _weigh(powers, RESCALE_POLYNOMIALS)


def same_step(h: float, h_table: float, t: float) -> bool:
    """Whether a step of h from t keeps the table's step h_table: equal up to the round-off of
    t + h - t (16 eps |t|), which would otherwise re-sample the table (and restart the k + 1
    steps an order change waits for) at every step of a long solve.  Replays of a solve must
    decide with this same test."""
    return abs(h - h_table) <= 16 * _EPS * max(abs(t), abs(h_table))


def _weigh(weights: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``weights`` (..., rows) times the rows of ``table`` (rows, *trailing): np.tensordot(weights,
    table, axes=1) as one matrix product on a 2-D view, at a quarter of tensordot's cost (its
    per-call overhead dominated a SciPy step on small systems)."""
    product = weights @ table.reshape(table.shape[0], -1)
    return product.reshape(weights.shape[:-1] + table.shape[1:])


def _rows(vector: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A row vector shaped to weight the rows of ``like`` (a table of any trailing shape)."""
    return vector.reshape((-1,) + (1,) * (like.ndim - 1))


def resample(table: np.ndarray, ratio: float, order: int) -> np.ndarray:
    """The order-``order`` table at ``ratio`` times its step (a new array; rows beyond
    MAX_ORDER are kept).  Tables of any trailing shape: states, or tangents (n, P)."""
    low = MAX_ORDER + 1
    out = table.copy()
    out[:low] = _weigh(rescale_matrix(ratio), _rows(ORDER_MASK[order][:low], table) * table[:low])
    return out


def update(table: np.ndarray, y_new: np.ndarray, order: int) -> np.ndarray:
    """The table after an accepted order-``order`` step to ``y_new``: UPDATE[k] D + NEW_VALUE[k] y_new."""
    return _weigh(UPDATE[order], table) + _rows(NEW_VALUE[order], table) * y_new


@lru_cache(maxsize=None)
def corrector_weights(family: str | VariableOrderMethod) -> np.ndarray:
    """(MAX_ORDER+1, ROWS): row k gives b = sum_{m<=k} (1 - gamma_m / alpha_k) D[m], so the
    order-k corrector reads y_{n+1} = b + (h / alpha_k) f(t_{n+1}, y_{n+1}).

    (That is alpha_k (y_{n+1} - y^(0)) + sum_m gamma_m nabla^m y_n = h f with gamma_0 = 0.)
    For BDF alpha_k = gamma_k, so D[k] (the one difference that holds y_{n-k}) has weight
    exactly 0: the formula is k-step, and no round-off of y_{n-k} enters y_{n+1}."""
    family = get_variable_order(family)
    out = np.zeros((MAX_ORDER + 1, ROWS))
    for k in range(1, family.max_order + 1):
        out[k, :k + 1] = 1 - family.gamma[:k + 1] / family.alpha[k]
    out.setflags(write=False)
    return out


def interpolation_terms(s, order: int) -> list:
    """[B_0(s), ..., B_k(s)] with P(t_n + s h) = sum_m B_m(s) D[m] for the order-k table D at
    t_n: Newton's backward formula, B_m(s) = prod_{l=1}^{m} (s + l - 1) / l.  s in [-1, 0]
    spans the last step.  Plain arithmetic on ``s``: a float, a NumPy array or a tensor."""
    terms = [s * 0 + 1]
    for m in range(1, order + 1):
        terms.append(terms[-1] * (s + m - 1) / m)
    return terms


def _power_coefficients(order: int) -> np.ndarray:
    """(MAX_ORDER, ROWS) C with P(t_n + theta h) = y_n + sum_{j>=1} theta^j (C @ D)[j-1] for the
    order-k table D at t_{n+1} = t_n + h: Newton's backward formula at s = theta - 1, expanded
    in powers of theta (exact fractions).  P(t_n) = y_n since B_1(-1) = -1 and B_m(-1) = 0 for
    m >= 2, so the last step's polynomial starts at its start value."""
    C = [[Fraction(0)] * ROWS for _ in range(MAX_ORDER)]
    for m in range(1, order + 1):
        poly = [Fraction(1)]   # B_m(theta - 1) = prod_{l=1}^{m} (theta + l - 2) / l, in powers of theta
        for l in range(1, m + 1):
            nxt = [Fraction(0)] * (len(poly) + 1)
            for p, c in enumerate(poly):
                nxt[p] += c * Fraction(l - 2, l)
                nxt[p + 1] += c * Fraction(1, l)
            poly = nxt
        for j in range(1, len(poly)):
            C[j - 1][m] += poly[j]
    return np.array([[float(c) for c in row] for row in C])


#: POWER_COEFFICIENTS[k] is :func:`_power_coefficients` (k), the last step's polynomial in the
#: power basis of theta = (t - t_n) / h (how diffrax's polynomial interpolation takes it).
POWER_COEFFICIENTS = np.array([_power_coefficients(k) for k in _ORDERS])


def interpolation_weights(s, order: int) -> np.ndarray:
    """:func:`interpolation_terms` as weights w (..., ROWS), P(t_n + s h) = w @ D."""
    s = np.asarray(s, dtype=float)
    out = np.zeros(s.shape + (ROWS,))
    for m, term in enumerate(interpolation_terms(s, order)):
        out[..., m] = term
    return out


def start_table(y0, h_f0) -> np.ndarray:
    """The order-1 table of the first step: D[0] = y0, D[1] = h f(t0, y0) (a backward
    difference of the exact slope, the usual start of a variable-order code)."""
    y0 = np.asarray(y0)
    table = np.zeros((ROWS,) + y0.shape, dtype=np.result_type(y0, h_f0))
    table[0], table[1] = y0, h_f0
    return table


def history_matrix(n_values: int) -> np.ndarray:
    """(ROWS, n_values) H with D = H @ [y_{n-k}, ..., y_n] (oldest first, k = n_values - 1):
    D[m] = nabla^m y_n = sum_i (-1)^i C(m, i) y_{n-i} for m <= k, zero rows beyond."""
    k = n_values - 1
    if not 0 <= k <= MAX_ORDER:
        raise ValueError(f"a history holds 1..{MAX_ORDER + 1} values, got {n_values}")
    H = np.zeros((ROWS, n_values))
    for m in range(k + 1):
        for i in range(m + 1):
            H[m, k - i] = (-1) ** i * comb(m, i)
    return H


def table_from_history(values) -> np.ndarray:
    """The table of y_n given equally spaced past values ``values = [y_{n-k}, ..., y_n]``
    (oldest first): D[m] = nabla^m y_n for m <= k (how exact starting values enter)."""
    values = np.asarray(values)
    return _weigh(history_matrix(values.shape[0]), values).astype(values.dtype, copy=False)


# --- the controller every adapter runs (Shampine & Reichelt 1997, sec. 2.3; CVODE's constants) ---

#: Newton iterations per attempt; more means the Jacobian or the step is wrong
NEWTON_MAXITER = 4
#: accepted steps after which the Jacobian is re-evaluated even while Newton converges (CVODE's
#: msbj, 51): an old J that still converges can make Newton accept a poor iterate on its first
#: iteration, and the error test then rejects steps it should accept
JACOBIAN_AGE = 50
#: the bounds of a step change, and the growth below which an accepted step keeps h (and with
#: it the factorised Newton matrix)
MIN_FACTOR, MAX_FACTOR, KEEP_BELOW = 0.2, 10.0, 1.2


def newton_safety(iterations: int) -> float:
    """The step controller's safety factor: 0.9, less when Newton needed many iterations
    (Hairer & Wanner II, IV.8)."""
    return 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + iterations)


def order_candidates(order: int, max_order: int) -> list[int]:
    """The orders k-1, k, k+1 within 1..max_order; the estimate of order q reads row q + 1."""
    return [q for q in (order - 1, order, order + 1) if 1 <= q <= max_order]


def next_order_and_step(order: int, errors: dict, iterations: int, rejected: bool) -> tuple[int, float | None]:
    """After k + 1 steps at one size: (order, factor) for the next step, the order among
    ``errors`` (q -> weighted error estimate C_q ||D[q+1]||) allowing the largest step, the
    current one on a tie; factor None keeps h (a growth below KEEP_BELOW is not worth a new
    Newton matrix).  A step that needed a retry does not grow."""
    factors = {q: np.inf if err == 0 else err ** (-1 / (q + 1)) for q, err in errors.items()}
    new_order = max(factors, key=lambda q: (factors[q], q == order))
    factor = min(MAX_FACTOR, newton_safety(iterations) * factors[new_order])
    if rejected:
        factor = min(factor, 1.0)
    if new_order == order and 1 <= factor < KEEP_BELOW:
        return order, None
    return new_order, factor


def check_max_order(max_order, what: str = "max_order") -> int:
    """``max_order`` as an int in 1..MAX_ORDER, or a ValueError that names it."""
    if isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer)) or not 1 <= max_order <= MAX_ORDER:
        raise ValueError(f"{what} must be an integer in 1..{MAX_ORDER}, got {max_order!r}")
    return int(max_order)
