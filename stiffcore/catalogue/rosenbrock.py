"""Rosenbrock (linearly implicit) methods.

ROS3P, Rodas4 and Rodas5P are published in the transformed form ``(a, C, m)`` of
Hairer & Wanner (IV.7, eq. 7.25); they are entered that way and converted to
``(alpha, gamma, b)`` by :meth:`RosenbrockTableau.from_transformed`, which also checks
the published nodes ``c`` and time coefficients ``d`` against the converted data.
"""

from __future__ import annotations

import numpy as np

from .method import Method
from .tableau import RosenbrockTableau


def _lower(rows, s: int) -> np.ndarray:
    out = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        out[i, : len(row)] = row
    return out


def _rodas_chain(a_rows, extra: int, s: int) -> np.ndarray:
    """Rodas layout: each of the last ``extra`` stages starts from the previous stage's
    solution, so its ``a`` row repeats the previous one with a 1 appended."""
    a = _lower(a_rows, s)
    first = s - extra
    for i in range(first, s):
        a[i, : i - 1] = a[i - 1, : i - 1]
        a[i, i - 1] = 1.0
    return a


# --- Rosenbrock23 (Shampine & Reichelt 1997, MATLAB's ode23s) ---------------------
# d = 1/(2 + sqrt 2), e32 = 6 + sqrt 2.  Written in the (alpha, gamma) form: the second
# stage is at t0 + h/2 with gamma_21 = -d; the third stage (used only by the
# third-order error estimate) has gamma_31 = d (e32 - 2), gamma_32 = -d e32.
_d = 1 / (2 + np.sqrt(2.0))
_e32 = 6 + np.sqrt(2.0)
ROSENBROCK23 = Method(
    "rosenbrock23", "Rosenbrock23", 2,
    RosenbrockTableau(
        alpha=[[0, 0, 0], [0.5, 0, 0], [0, 1, 0]],
        gamma=[[_d, 0, 0], [-_d, _d, 0], [_d * (_e32 - 2), -_d * _e32, _d]],
        b=[0.0, 1.0, 0.0],
        b_embedded=[1 / 6, 2 / 3, 1 / 6],
        # ode23s's interpolant: b1 = theta (1 - theta) / (1 - 2d), b2 = theta (theta - 2d) / (1 - 2d)
        dense=np.array([[1.0, -1.0], [-2 * _d, 1.0], [0.0, 0.0]]) / (1 - 2 * _d),
    ),
    "Shampine & Reichelt, SIAM J. Sci. Comput. 18 (1997) 1-22 (ode23s, with its interpolant); "
    "embedded weights of order 3",
    embedded_order=3,
)

# --- ROS3P (Lang & Verwer, BIT 41 (2001) 731-738) ---------------------------------
_g = 0.5 + np.sqrt(3.0) / 6
_ig = 1 / _g
_t1 = -_ig * (2 - 0.5 * _ig)
_t2 = _ig * (2 / 3 - _ig / 6)
ROS3P = Method(
    "ros3p", "ROS3P", 3,
    RosenbrockTableau.from_transformed(
        _g,
        a=_lower([[_ig], [_ig, 0.0]], 3),
        C=_lower([[-_ig**2], [-_ig * (1 - _t1), _t1]], 3),
        m=[_ig * (1 + _t2), _t2, _ig / 3],
        m_embedded=[2.113248654051871, 1.0, 0.4226497308103742],
        c=[0, 1, 1],
        d=[0.7886751345948129, -0.2113248654051871, -1.077350269189626],
    ),
    "Lang & Verwer, BIT 41 (2001) 731-738",
    embedded_order=2,
    # alpha_31 = alpha_21, alpha_32 = 0: on y' = L y every pair of order 2 on these stages has
    # ROS3P's own stability function, so b - b^ annihilates the stages (tests check it)
    estimate_defect=("its embedded estimate vanishes identically on linear problems (the embedded method "
                     "has ROS3P's stability function), so it cannot control the step; use Rodas4 or "
                     "Rosenbrock23 for adaptive steps"),
)

# --- Rodas4 (Hairer & Wanner II, IV.7, Table 7.? / RODAS code) ---------------------
_RODAS4_A = _rodas_chain(
    [
        [1.544000000000000],
        [0.9466785280815826, 0.2557011698983284],
        [3.314825187068521, 2.896124015972201, 0.9986419139977817],
        [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950],
    ],
    extra=1, s=6,
)
RODAS4 = Method(
    "rodas4", "Rodas4", 4,
    RosenbrockTableau.from_transformed(
        0.25,
        a=_RODAS4_A,
        C=_lower(
            [
                [-5.668800000000000],
                [-2.430093356833875, -0.2063599157091915],
                [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
                [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160],
                [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
                 -6.058818238834054],
            ],
            6,
        ),
        m=np.r_[_RODAS4_A[-1, :5], 1.0],
        m_embedded=np.r_[_RODAS4_A[-1, :5], 0.0],
        c=[0, 0.386, 0.21, 0.63, 1, 1],
        d=[0.25, -0.1043, 0.1035, -0.0362, 0, 0],
        dense=[
            [10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823,
             1.025137723295662, 0],
            [-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386,
             -6.594389125716872, 0],
        ],
    ),
    "Hairer & Wanner II, IV.7 (RODAS, Steinebach's dense output)",
    embedded_order=3,
)

# --- Rodas5P (Steinebach, BIT 63 (2023) 27) -----------------------------------------
_RODAS5P_A = _rodas_chain(
    [
        [3.0],
        [2.849394379747939, 0.45842242204463923],
        [-6.954028509809101, 2.489845061869568, -10.358996098473584],
        [2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641],
        [-7.502846399306121, 2.561846144803919, -11.627539656261098, -0.18268767659942256,
         0.030198172008377946],
    ],
    extra=2, s=8,
)
RODAS5P = Method(
    "rodas5p", "Rodas5P", 5,
    RosenbrockTableau.from_transformed(
        0.21193756319429014,
        a=_RODAS5P_A,
        C=_lower(
            [
                [-14.155112264123755],
                [-17.97296035885952, -2.859693295451294],
                [147.12150275711716, -1.41221402718213, 71.68940251302358],
                [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
                [24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125,
                 -0.6610691825249471],
                [30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783,
                 -19.097331116725623, -28.087943162872662],
                [37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047,
                 -40.06618937091002, -54.66780262877968, -9.48861652309627],
            ],
            8,
        ),
        m=np.r_[_RODAS5P_A[-1, :7], 1.0],
        m_embedded=np.r_[_RODAS5P_A[-1, :7], 0.0],
        c=[0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664, 1, 1, 1],
        d=[0.21193756319429014, -0.42387512638858027, -0.3384627126235924, 1.8046452872882734,
           2.325825639765069, 0, 0, 0],
        dense=[
            [25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
             0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493],
            [-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
             20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372],
            [11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
             -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722],
        ],
    ),
    "Steinebach, BIT Numer. Math. 63 (2023) 27 (Rodas5P); coefficients as in OrdinaryDiffEq",
    embedded_order=4,
)

METHODS = (ROSENBROCK23, ROS3P, RODAS4, RODAS5P)
