"""torch's gradient on a real mechanism (Cantera's h2o2) equals SciPy's discrete adjoint on
the same steps: exact for Rosenbrock steps, and for implicit Runge-Kutta steps up to the
Newton tolerance, which is where torch's "round-off noise" on GRI-Mech came from."""

import numpy as np
import pytest

from helpers import h2o2_mechanism

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

from torchdiffeq import odeint  # noqa: E402

import stiffcore.adapters.torchdiffeq  # noqa: E402, F401  (registers the method strings)
from stiffcore.adapters.scipy import solve_ivp_sensitivity  # noqa: E402

TIMES = np.logspace(-7, -3, 8)


@pytest.fixture(scope="module")
def mechanism():
    return h2o2_mechanism()


def scipy_gradient(problem, method):
    r = solve_ivp_sensitivity(problem.rhs, (0.0, TIMES[-1]), problem.y0, problem.params, method=method,
                              mode="reverse", t_eval=TIMES, loss=lambda Y: (Y ** 2).sum(), loss_grad=lambda Y: 2 * Y,
                              jac=problem.jac, jac_p=problem.jac_p, rtol=1e-6, atol=1e-10)
    assert r.status == 0
    return r.grad, r.t_steps


def torch_gradient(problem, method, steps, **options):
    class Kinetics(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor(problem.params, dtype=torch.float64))

        def forward(self, t, y):
            return problem.rhs(t, y, self.p)

    func = Kinetics()
    grid = torch.tensor(steps, dtype=torch.float64)
    sol = odeint(func, torch.tensor(problem.y0, dtype=torch.float64), torch.tensor(np.r_[0.0, TIMES]),
                 method=method, rtol=1e-6, atol=1e-10, options=dict(grid_constructor=lambda f, y0, t: grid, **options))
    (sol[1:] ** 2).sum().backward()
    return func.p.grad.numpy()


def relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("method, scipy_method", [("rodas5p", "Rodas5P"), ("rodas4", "Rodas4")])
def test_rosenbrock_gradients_agree_to_round_off(mechanism, method, scipy_method):
    reference, steps = scipy_gradient(mechanism, scipy_method)
    assert relative(torch_gradient(mechanism, method, steps), reference) < 1e-10


@pytest.mark.parametrize("method, scipy_method", [("radau_iia5", "RadauIIA5"), ("kvaerno5", "Kvaerno5")])
def test_implicit_gradients_agree_to_the_newton_tolerance(mechanism, method, scipy_method):
    """torch stops Newton at newton_tol (1e-3 of the error weights at rtol 1e-6) and applies the
    implicit function theorem there; SciPy's replay solves the stages to round-off.  The
    difference is the Newton residual's, and it goes when Newton is asked for more."""
    reference, steps = scipy_gradient(mechanism, scipy_method)
    default = relative(torch_gradient(mechanism, method, steps), reference)
    tight = relative(torch_gradient(mechanism, method, steps, newton_tol=1e-10), reference)
    assert tight < 1e-10 and tight < default < 1e-6
