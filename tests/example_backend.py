"""A minimal, correct stiffcore backend (the example in docs/backends.md).

It differentiates one step of a stiffly accurate Runge-Kutta method on y' = lambda y by the
implicit function theorem, in plain numpy: the stage values solve (I - z A) Y = 1 y0, and
d Y / d lambda solves (I - z A) dY = h A Y; y_1 = Y_s.
"""

import numpy as np

from stiffcore import get_method
from stiffcore.plugins import Backend, hookimpl

METHODS = ("backward_euler", "radau_iia5", "radau_iia3", "lobatto_iiic2")


def one_step_gradient(method_id, z, h=1.0, y0=1.0, dtype=np.float64):
    a = get_method(method_id).coefficients.a.astype(dtype)
    s = a.shape[0]
    out = []
    for zi in np.atleast_1d(z):
        m = np.eye(s, dtype=dtype) - dtype(zi) * a
        Y = np.linalg.solve(m, np.full(s, y0, dtype=dtype))
        dY = np.linalg.solve(m, dtype(h) * (a @ Y))
        out.append(dY[-1])
    return np.array(out, dtype=float).reshape(np.shape(z))


@hookimpl
def stiffcore_backend():
    return Backend(name="example", methods=METHODS, one_step_gradient=one_step_gradient,
                   description="numpy implicit-function-theorem example")
