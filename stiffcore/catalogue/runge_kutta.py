"""Runge-Kutta methods: explicit, diagonally implicit and fully implicit.

Collocation methods (Gauss-Legendre, Radau IIA) are built from their nodes, so their
matrices, weights and continuous extensions are computed rather than transcribed.
"""

from __future__ import annotations

import numpy as np

from .method import Method
from .tableau import ButcherTableau
from .trees import density, stage_weights, trees

SQRT2, SQRT3, SQRT6, SQRT15 = np.sqrt(2.0), np.sqrt(3.0), np.sqrt(6.0), np.sqrt(15.0)


def collocation_tableau(c, stiffly_accurate: bool = False) -> dict:
    """Matrix, weights and continuous extension of the collocation method with nodes ``c``.

    ``a_ij = int_0^{c_i} l_j``, ``b_j = int_0^1 l_j`` with ``l_j`` the Lagrange basis
    on ``c`` (Hairer, Norsett & Wanner I, sec. II.7).  The collocation polynomial is
    the dense output: ``b_j(theta) = int_0^theta l_j``.
    """
    c = np.asarray(c, dtype=float)
    s = c.size
    # Column k of V holds c**k: the Lagrange basis coefficients are the rows of inv(V).
    lagrange = np.linalg.inv(np.vander(c, s, increasing=True))  # l_j(t) = sum_k lagrange[k, j] t**k
    dense = (lagrange / np.arange(1, s + 1)[:, None]).T          # b_j(theta) = sum_k dense[j,k] theta**(k+1)
    a = (c[:, None] ** np.arange(1, s + 1)) @ dense.T
    b = a[-1].copy() if stiffly_accurate else dense.sum(axis=1)
    if stiffly_accurate:
        a[-1] = b  # c_s = 1: identical rows, kept bit-for-bit equal so R(-inf) = 0 exactly
    return dict(a=a, b=b, c=c, dense=dense)


def collocation_embedded_weights(tab: dict) -> tuple[np.ndarray, float]:
    """Embedded weights of order s for an s-stage collocation method, with the weight ``b0 =
    gamma0`` on f(t0, y0): RADAU5's estimate (Hairer & Wanner IV.8, eq. 8.19).

    Solves ``gamma0 + sum b^_j = 1`` and ``sum b^_j c_j**k = 1/(k+1)``, k = 1..s-1.  gamma0 is
    the real eigenvalue of ``a`` (Radau IIA5, Gauss-Legendre6), so the filter ``(I - h gamma0
    J)^-1`` reuses a factorisation the stages already need; where ``a`` has only a complex
    pair (two stages: Radau IIA3, Gauss-Legendre4) it is the pair's modulus, a real value of
    the pair's size (one more factorisation per step).  On y' = lambda y, y0 = 1, the filtered
    estimate tends to -1 as h lambda -> -inf whatever gamma0: stiff transients are resolved,
    as RADAU5 does (Shampine's refinement, :meth:`_refine_error` in the SciPy adapter, then
    re-evaluates f0 at y0 + err after a rejection)."""
    eig = np.linalg.eigvals(tab["a"])
    real = eig[np.abs(eig.imag) < 1e-12]
    gamma0 = float(real[0].real) if real.size else float(np.abs(eig[0]))
    s = tab["c"].size
    vander = np.vander(tab["c"], s, increasing=True).T
    rhs = 1.0 / np.arange(1, s + 1)
    rhs[0] -= gamma0
    return np.linalg.solve(vander, rhs), gamma0


def _stiff_limit(a: np.ndarray) -> np.ndarray:
    """``w`` with ``z (I - z A)^-1 1 = z w + O(1)`` as z -> inf: the stage increments ``h K``
    on y' = lambda y (y0 = 1) grow like ``h lambda w``.  w = 0 for an invertible A; for an
    explicit first stage, ``w = (1, -A_r^-1 a_r)`` (A_r, a_r: the implicit rows' block and
    first column)."""
    if np.any(a[0]):
        return np.zeros(a.shape[0])
    return np.concatenate([[1.0], -np.linalg.solve(a[1:, 1:], a[1:, 0])])


def bounded_continuous_extension(a, b, order: int) -> np.ndarray:
    """A continuous extension ``b(theta) = sum_k dense[:, k] theta^(k+1)`` of degree ``order``
    for a method published without one, solved from the order conditions.

    Conditions (linear in ``dense``): ``b(theta) . Phi(t) = theta^|t| / gamma(t)`` for every
    tree up to ``order`` (Hairer, Norsett & Wanner I, II.6), ``b(1) = b``, and
    ``b(theta) . w = 0`` (:func:`_stiff_limit`), so the output on stiff components stays
    bounded as h lambda -> -inf, as the step's own stiffly accurate solution does.  The cubic
    Hermite polynomial fails the last: its ``h f`` terms grow like h lambda, which made
    interpolation-error control shrink Kvaerno's steps 200-fold on ROBER.  Remaining freedom
    goes to the least-squares defect of the next order's conditions over theta in (0, 1], as
    Kennedy & Carpenter do for their ESDIRKs' dense output (NASA/TM-2016-219173, 2016).
    Raises ``ValueError`` where the conditions cannot all hold (stage order bounds ``order``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    s, degree = b.size, order
    blocks = np.eye(degree)  # unknowns: x = dense.T.ravel(), column k of dense is theta^(k+1)
    rows, rhs = [], []
    for p in range(1, order + 1):
        for t in trees(p):
            phi, g = stage_weights(a, t), float(density(t))
            rows += [np.kron(blocks[k], phi) for k in range(degree)]
            rhs += [1 / g if k + 1 == p else 0.0 for k in range(degree)]
    rows += [np.kron(np.ones(degree), np.eye(s)[i]) for i in range(s)]
    rhs += list(b)
    w = _stiff_limit(a)
    if np.any(w):
        rows += [np.kron(blocks[k], w) for k in range(degree)]
        rhs += [0.0] * degree
    M, r = np.array(rows), np.array(rhs)
    x = np.linalg.lstsq(M, r, rcond=None)[0]
    if np.max(np.abs(M @ x - r)) > 1e-10:
        raise ValueError(f"no continuous extension of order {order} with bounded stiff output exists")
    _, sv, vt = np.linalg.svd(M)
    null = vt[int(np.sum(sv > 1e-10 * sv[0])):].T
    if null.size:
        thetas = np.linspace(0.05, 1.0, 20)
        E, e = [], []
        for t in trees(order + 1):
            phi, g = stage_weights(a, t), float(density(t))
            E += [np.kron(th ** np.arange(1, degree + 1), phi) for th in thetas]
            e += [th ** (order + 1) / g for th in thetas]
        E, e = np.array(E), np.array(e)
        x = x + null @ np.linalg.lstsq(E @ null, e - E @ x, rcond=None)[0]
    dense = x.reshape(degree, s).T
    dense[:, -1] += b - dense.sum(axis=1)  # b(1) = b to the last bit (the tableau checks it)
    return dense


def _explicit(rows, b, b_embedded=None) -> ButcherTableau:
    s = len(b)
    a = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        a[i, : len(row)] = row
    return ButcherTableau(a=a, b=b, b_embedded=b_embedded)


# --- explicit -----------------------------------------------------------------

EULER = Method("euler", "Euler", 1, _explicit([], [1.0]), "Euler (1768); Hairer, Norsett & Wanner I, II.1")

HEUN = Method(
    "heun", "Heun", 2, _explicit([[1.0]], [0.5, 0.5], b_embedded=[1.0, 0.0]),
    "Heun (1900); embedded Euler", embedded_order=1,
)

MIDPOINT = Method("midpoint", "Midpoint", 2, _explicit([[0.5]], [0.0, 1.0]), "Runge (1895)")

RK4 = Method(
    "rk4", "RK4", 4, _explicit([[0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    "Kutta (1901)",
)

BOSH3 = Method(
    "bosh3", "Bosh3", 3,
    _explicit([[1 / 2], [0, 3 / 4], [2 / 9, 1 / 3, 4 / 9]], [2 / 9, 1 / 3, 4 / 9, 0],
              b_embedded=[7 / 24, 1 / 4, 1 / 3, 1 / 8]),
    "Bogacki & Shampine, Appl. Math. Lett. 2 (1989) 321-325", embedded_order=2,
)

_DOPRI5_B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
DOPRI5 = Method(
    "dopri5", "Dopri5", 5,
    _explicit(
        [
            [1 / 5],
            [3 / 40, 9 / 40],
            [44 / 45, -56 / 15, 32 / 9],
            [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
            [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
            _DOPRI5_B[:6],
        ],
        _DOPRI5_B,
        b_embedded=[5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40],
    ),
    "Dormand & Prince, J. Comput. Appl. Math. 6 (1980) 19-26", embedded_order=4,
)

_TSIT5_B = [
    0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396,
    0.01,
    0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509,
    1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331,
    -3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677,
    2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841,
    0.0,
]
TSIT5 = Method(
    "tsit5", "Tsit5", 5,
    _explicit(
        [
            [0.161],
            [-0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943,
             0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569],
            [2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289,
             -6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366,
             4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077],
            [5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791,
             -11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589,
             7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753,
             -0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635],
            [5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748,
             -12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452,
             8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986,
             -0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835,
             -0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206],
            _TSIT5_B[:6],
        ],
        _TSIT5_B,
        b_embedded=[
            0.09468075576583945807478876255758922856117527357724631226139574065785592789071067303271,
            0.009183565540343253096776363936645313759813746240984095238905939532922955247253608687270,
            0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813,
            1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761,
            -2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702,
            1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089,
            1 / 66,
        ],
    ),
    "Tsitouras, Comput. Math. Appl. 62 (2011) 770-775", embedded_order=4,
)

# --- diagonally implicit ------------------------------------------------------

# One-stage and two-stage methods are published without an embedded pair; each gets the
# simplest one that estimates the step's error (order conditions checked in the tests), and
# the adapters filter those that grow on stiff modes (schemes.runge_kutta_scheme):
# - backward Euler and the implicit midpoint rule: the trapezoidal combination h (f0 + K1) / 2
#   (b0 = 1/2 on f(t0, y0)), the predictor-corrector difference BDF codes use at order 1;
# - trapezoid, SDIRK2 and Lobatto IIIC2: backward Euler through the step's end, y0 + h K_s.
# The L-stable ones also get extensions with bounded stiff output (bounded_continuous_extension;
# backward Euler's is the straight line): with cubic Hermite, SDIRK2's and Lobatto IIIC2's
# outputs between steps on ROBER were 400-1200x their step ends' error.
BACKWARD_EULER = Method(
    "backward_euler", "BackwardEuler", 1,
    ButcherTableau(a=[[1.0]], b=[1.0], b_embedded=[0.5], b0_embedded=0.5,
                   dense=bounded_continuous_extension([[1.0]], [1.0], 1)),
    "Hairer & Wanner II, IV.3 (implicit Euler); embedded trapezoidal rule", embedded_order=2,
)

IMPLICIT_MIDPOINT = Method(
    "implicit_midpoint", "ImplicitMidpoint", 2,
    ButcherTableau(a=[[0.5]], b=[1.0], b_embedded=[0.5], b0_embedded=0.5),
    "Gauss-Legendre 1-stage; Hairer & Wanner II, IV.5; embedded h (f0 + K1) / 2", embedded_order=1,
)

# Trapezoidal rule as the 2-stage Lobatto IIIA method (explicit first stage).
TRAPEZOID = Method(
    "trapezoid", "Trapezoid", 2,
    ButcherTableau(a=[[0.0, 0.0], [0.5, 0.5]], b=[0.5, 0.5], b_embedded=[0.0, 1.0]),
    "Lobatto IIIA 2-stage; Hairer & Wanner II, IV.5; embedded backward Euler", embedded_order=1,
)

_G = 1 - 1 / SQRT2
_SDIRK2_A, _SDIRK2_B = [[_G, 0.0], [1 - _G, _G]], [1 - _G, _G]
SDIRK2 = Method(
    "sdirk2", "SDIRK2", 2,
    ButcherTableau(a=_SDIRK2_A, b=_SDIRK2_B, b_embedded=[0.0, 1.0],
                   dense=bounded_continuous_extension(_SDIRK2_A, _SDIRK2_B, 2)),
    "Alexander, SIAM J. Numer. Anal. 14 (1977) 1006-1021, gamma = 1 - 1/sqrt(2); embedded backward Euler",
    embedded_order=1,
)

# TR-BDF2 as an ESDIRK: trapezoidal step to t0 + gamma h, then BDF2 (Hosea & Shampine 1996).
_GT = 2 - SQRT2
_D, _W = _GT / 2, SQRT2 / 4
_TRBDF2_A = np.array([[0, 0, 0], [_D, _D, 0], [_W, _W, _D]])
TRBDF2 = Method(
    "trbdf2", "TRBDF2", 2,
    ButcherTableau(
        a=_TRBDF2_A, b=[_W, _W, _D],
        b_embedded=[(1 - _W) / 3, (3 * _W + 1) / 3, _D / 3],
        # ours, of order 2 (bounded_continuous_extension): on ROBER and HIRES its outputs are
        # as accurate as the step ends, where cubic Hermite's were up to 6x worse
        dense=bounded_continuous_extension(_TRBDF2_A, [_W, _W, _D], 2),
    ),
    "Bank et al., IEEE Trans. Electron Devices 32 (1985); Hosea & Shampine, Appl. Numer. Math. 20 (1996) 21-37",
    embedded_order=3,
)


def _kvaerno(gamma: float, rows, dense_order: int) -> ButcherTableau:
    """Kvaerno's ESDIRK layout: explicit first stage, constant diagonal, stiffly accurate;
    the embedded solution is the penultimate stage (Kvaerno 2004).  Kvaerno publishes no
    continuous extension: ours is derived (:func:`bounded_continuous_extension`), of order
    ``dense_order`` (stage order 2 allows 3 for Kvaerno3/4 and 4 for Kvaerno5)."""
    s = len(rows) + 1
    a = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        a[i, : len(row)] = row
        a[i, i] = gamma
    return ButcherTableau(a=a, b=a[-1], b_embedded=a[-2], dense=bounded_continuous_extension(a, a[-1], dense_order))


_KVAERNO_REF = "Kvaerno, BIT 44 (2004) 489-502 (coefficients as in diffrax)"

_g3 = 0.43586652150
KVAERNO3 = Method(
    "kvaerno3", "Kvaerno3", 3,
    _kvaerno(_g3, [
        [_g3],
        [(-4 * _g3**2 + 6 * _g3 - 1) / (4 * _g3), (-2 * _g3 + 1) / (4 * _g3)],
        [(6 * _g3 - 1) / (12 * _g3), -1 / ((24 * _g3 - 12) * _g3), (-6 * _g3**2 + 6 * _g3 - 1) / (6 * _g3 - 3)],
    ], dense_order=3),
    _KVAERNO_REF, embedded_order=2,
)


def _kvaerno4_rows(g: float):
    p = lambda *coeffs: np.polyval(coeffs, g)  # noqa: E731  (the paper's polynomials in gamma)
    return [
        [g],
        [p(144, -180, 81, -15, 1) * g / p(12, -6, 1) ** 2, p(-36, 39, -15, 2) * g / p(12, -6, 1) ** 2],
        [p(-144, 396, -330, 117, -18, 1) / (12 * g**2 * p(12, -9, 2)),
         p(72, -126, 69, -15, 1) / (12 * g**2 * p(3, -1)),
         p(-6, 6, -1) * p(12, -6, 1) ** 2 / (12 * g**2 * p(12, -9, 2) * p(3, -1))],
        [p(288, -312, 120, -18, 1) / (48 * g**2 * p(12, -9, 2)),
         p(24, -12, 1) / (48 * g**2 * p(3, -1)),
         -p(12, -6, 1) ** 3 / (48 * g**2 * p(3, -1) * p(12, -9, 2) * p(6, -6, 1)),
         p(-24, 36, -12, 1) / p(24, -24, 4)],
    ]


KVAERNO4 = Method("kvaerno4", "Kvaerno4", 4, _kvaerno(0.5728160625, _kvaerno4_rows(0.5728160625), dense_order=3),
                  _KVAERNO_REF, embedded_order=3)

KVAERNO5 = Method(
    "kvaerno5", "Kvaerno5", 5,
    _kvaerno(0.26, [
        [0.26],
        [0.13, 0.84033320996790809],
        [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
        [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
        [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
        [0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
         0.06962479448202728],
    ], dense_order=4),
    _KVAERNO_REF, embedded_order=4,
)

# --- fully implicit -------------------------------------------------------------

def _collocation(c, stiffly_accurate: bool = False) -> ButcherTableau:
    """A collocation tableau with RADAU5's kind of embedded estimate (order s, b0 on f0)."""
    tab = collocation_tableau(c, stiffly_accurate=stiffly_accurate)
    b_embedded, gamma0 = collocation_embedded_weights(tab)
    return ButcherTableau(**tab, b_embedded=b_embedded, b0_embedded=gamma0)


_ESTIMATE_REF = "IV.8 (RADAU5's error estimate)"

RADAU_IIA3 = Method("radau_iia3", "RadauIIA3", 3, _collocation([1 / 3, 1.0], stiffly_accurate=True),
                    f"Ehle (1969); Hairer & Wanner II, IV.5, Table 5.5; {_ESTIMATE_REF}", embedded_order=2)

RADAU_IIA5 = Method(
    "radau_iia5", "RadauIIA5", 5,
    _collocation([(4 - SQRT6) / 10, (4 + SQRT6) / 10, 1.0], stiffly_accurate=True),
    f"Ehle (1969); Hairer & Wanner II, IV.5 Table 5.6, {_ESTIMATE_REF}", embedded_order=3,
)

GAUSS_LEGENDRE4 = Method(
    "gauss_legendre4", "GaussLegendre4", 4, _collocation([0.5 - SQRT3 / 6, 0.5 + SQRT3 / 6]),
    f"Butcher (1964); Hairer & Wanner II, IV.5, Table 5.1; {_ESTIMATE_REF}", embedded_order=2,
)

GAUSS_LEGENDRE6 = Method(
    "gauss_legendre6", "GaussLegendre6", 6, _collocation([0.5 - SQRT15 / 10, 0.5, 0.5 + SQRT15 / 10]),
    f"Butcher (1964); Hairer & Wanner II, IV.5, Table 5.2; {_ESTIMATE_REF}", embedded_order=3,
)

_LOBATTO2_A, _LOBATTO2_B = [[0.5, -0.5], [0.5, 0.5]], [0.5, 0.5]
LOBATTO_IIIC2 = Method(
    "lobatto_iiic2", "LobattoIIIC2", 2,
    ButcherTableau(a=_LOBATTO2_A, b=_LOBATTO2_B, c=[0.0, 1.0], b_embedded=[0.0, 1.0],
                   dense=bounded_continuous_extension(_LOBATTO2_A, _LOBATTO2_B, 2)),
    "Chipman (1971); Hairer & Wanner II, IV.5, Table 5.11; embedded backward Euler", embedded_order=1,
)

METHODS = (
    EULER, HEUN, MIDPOINT, RK4, BOSH3, TSIT5, DOPRI5,
    BACKWARD_EULER, TRAPEZOID, IMPLICIT_MIDPOINT, SDIRK2, TRBDF2, KVAERNO3, KVAERNO4, KVAERNO5,
    RADAU_IIA3, RADAU_IIA5, GAUSS_LEGENDRE4, GAUSS_LEGENDRE6, LOBATTO_IIIC2,
)
