"""The SciPy backend's announcement to stiffcore's plugin registry (entry point ``scipy``).

Kept free of SciPy imports so that discovering backends stays cheap; the gradient hook
imports the adapter when called.
"""

from __future__ import annotations

import numpy as np

from stiffcore.plugins import Backend, hookimpl

METHODS = (
    "radau_iia5", "rodas5p", "rodas4", "ros3p", "rosenbrock23", "trbdf2", "kvaerno3", "kvaerno4",
    "kvaerno5", "sdirk2", "backward_euler", "trapezoid", "implicit_midpoint", "gauss_legendre4",
    "gauss_legendre6", "lobatto_iiic2", "radau_iia3",
)


def one_step_gradient(method_id: str, z, h: float = 1.0, y0: float = 1.0):
    """d y_1 / d lambda for one step on y' = lambda y, by the adapter's own discrete
    differentiation (implicit function theorem for Runge-Kutta stages, complex step through
    Rosenbrock steps)."""
    from ._derivatives import Derivatives
    from ._step_maps import step_map

    z = np.asarray(z, dtype=float)
    out = np.empty(z.shape)
    y = np.array([float(y0)])
    for idx, zi in np.ndenumerate(z):
        lam = np.array([zi / h])
        derivs = Derivatives(lambda t, v, p: p[0] * v, 1, lam,
                             jac=lambda t, v, p: np.reshape(p[0], (1, 1)),
                             jac_p=lambda t, v, p: np.reshape(v, (1, 1)))
        _, _, dphi_dp = step_map(method_id, derivs, autonomous=True)(0.0, y, h, lam)
        out[idx] = dphi_dp[0, 0]
    return out


def install() -> None:
    from . import register

    register()


@hookimpl
def stiffcore_backend() -> Backend:
    return Backend(name="scipy", methods=METHODS, one_step_gradient=one_step_gradient, install=install,
                   requires=("scipy",), description="scipy.integrate.solve_ivp methods and discrete sensitivities")
