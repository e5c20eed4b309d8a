"""``fbdf`` and ``qndf`` as torchdiffeq methods: torchdiffeq's contract (outputs at every t,
any state shape, backwards in time, events, gradients to y0 and parameters), accuracy
between steps on problems we did not write, the options every stiffcore torch method
takes, and exact gradients of the discrete solution through the history."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchdiffeq = pytest.importorskip("torchdiffeq")

from helpers import (  # noqa: E402
    HIRES_T1, HIRES_Y0, OREGO_T1, OREGO_Y0, hires, orego, step_end_reference, weighted_error,
)
from scipy.integrate import solve_ivp  # noqa: E402

import stiffcore.adapters.scipy  # noqa: E402,F401  (registers FBDF/QNDF with solve_ivp)
import stiffcore.adapters.torchdiffeq as adapter  # noqa: E402
from stiffcore.adapters.torchdiffeq.backend import multistep_gradient  # noqa: E402
from stiffcore.predictions import multistep_gradient as predicted_gradient  # noqa: E402
from stiffcore.problems import ROBER, VANDERPOL  # noqa: E402

F64 = torch.float64
METHODS = ["fbdf", "qndf"]
LOG_ROBER = ROBER.log_parameterised()


def rober(logk):
    return lambda s, y: LOG_ROBER.rhs(s, y, logk)


def _rober_times(n=12, t1=1e5):
    return torch.tensor(np.concatenate([[0.0], np.logspace(-5, np.log10(t1), n)]), dtype=F64)


def test_registered_beside_torchdiffeqs_own_methods():
    from torchdiffeq._impl.odeint import SOLVERS

    for name in METHODS:
        assert SOLVERS[name] is adapter.SOLVERS[name]
        assert "max_order" in SOLVERS[name].__doc__ and "Shampine & Reichelt" in SOLVERS[name].__doc__
    assert "dopri5" in SOLVERS and "bosh3" in SOLVERS


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8])
def test_rober_outputs_between_steps_honour_the_tolerance(method, rtol):
    """Twelve log-spaced outputs, most between steps (the interpolating polynomial of the
    step's order): weighted error at most 25x the tolerance (measured: 1.3, 6.6, 16 for fbdf;
    SciPy's BDF 13x at 1e-8), and about the steps SciPy's FBDF takes (the same controller)."""
    t = _rober_times()
    atol = rtol * 1e-4
    ys = torchdiffeq.odeint(rober(torch.tensor(LOG_ROBER.params, dtype=F64)), torch.tensor(ROBER.y0, dtype=F64), t,
                            method=method, rtol=rtol, atol=atol)
    ref = step_end_reference(ROBER.fun(), ROBER.y0, t.numpy(), ROBER.jac_fun())
    assert weighted_error(ys.numpy(), ref, rtol, atol) <= 25
    solver = adapter.SOLVERS[method](rober(torch.tensor(LOG_ROBER.params, dtype=F64)),
                                     torch.tensor(ROBER.y0, dtype=F64), rtol=rtol, atol=atol)
    with torch.no_grad():
        solver.integrate(t[[0, -1]])
    scipy = solve_ivp(ROBER.fun(), (0.0, float(t[-1])), ROBER.y0, method=method.upper(), rtol=rtol, atol=atol,
                      jac=ROBER.jac_fun())
    assert abs(solver.n_steps - (scipy.t.size - 1)) <= 0.1 * scipy.t.size, (solver.n_steps, scipy.t.size)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("problem", ["HIRES", "OREGO", "VDP"])
def test_ivp_test_set_problems_at_their_end_time(method, problem):
    """HIRES and OREGO (the IVP test set) and Van der Pol at mu = 1e3 with autodiff Jacobians:
    the final state within 25x the tolerance on HIRES and Van der Pol; on OREGO, whose
    relaxation jumps amplify every local error, within 200x (SciPy's BDF: 63x at rtol 1e-6)."""
    rtol = 1e-6
    if problem == "VDP":
        f_np, y0, t1, jac = VANDERPOL.fun(), VANDERPOL.y0, VANDERPOL.t_span[1], VANDERPOL.jac_fun()
        atol = rtol
        mu = torch.tensor(VANDERPOL.params, dtype=F64)
        f = lambda s, y: VANDERPOL.rhs(s, y, mu)  # noqa: E731
        bound = 25
    else:
        g, y0, t1 = {"HIRES": (hires, HIRES_Y0, HIRES_T1), "OREGO": (orego, OREGO_Y0, OREGO_T1)}[problem]
        f_np, jac, atol = g, None, 1e-4 * rtol
        f = lambda s, y: g(s, y, xp=torch)  # noqa: E731
        bound = 25 if problem == "HIRES" else 200
    ys = torchdiffeq.odeint(f, torch.tensor(y0, dtype=F64), torch.tensor([0.0, t1], dtype=F64), method=method,
                            rtol=rtol, atol=atol)
    ref = step_end_reference(f_np, y0, [t1], jac)[-1]
    assert weighted_error(ys[-1].numpy(), ref, rtol, atol) <= bound


@pytest.mark.parametrize("method", METHODS)
def test_rober_to_1e8_conserves_mass_and_meets_the_tolerance(method):
    rtol, atol = 1e-6, 1e-10
    t = torch.tensor([0.0, 1e8], dtype=F64)
    ys = torchdiffeq.odeint(rober(torch.tensor(LOG_ROBER.params, dtype=F64)), torch.tensor(ROBER.y0, dtype=F64), t,
                            method=method, rtol=rtol, atol=atol)
    ref = step_end_reference(ROBER.fun(), ROBER.y0, [1e8], ROBER.jac_fun())[-1]
    assert abs(float(ys[-1].sum()) - 1) < 1e-9
    assert weighted_error(ys[-1].numpy(), ref, rtol, atol) <= 25


@pytest.mark.parametrize("method", METHODS)
def test_fixed_step_gradient_is_the_exact_derivative_of_the_discrete_solution(method):
    """With fixed steps the step and order sequence does not depend on the parameters, so
    autograd (the correctors by the implicit function theorem, the history through the
    table) must equal central differences of the same solve to their own accuracy."""
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    y0 = torch.tensor(ROBER.y0, dtype=F64)
    options = {"step_size": 0.004}

    def loss(logk):
        ys = torchdiffeq.odeint(rober(logk), y0, t, method=method, rtol=1e-10, atol=1e-14, options=options)
        return (ys[1:] * torch.tensor([1.0, 1e4, 1.0], dtype=F64)).sum()

    logk = torch.tensor(LOG_ROBER.params, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(logk), logk)
    with torch.no_grad():
        for i in range(3):
            e = torch.zeros(3, dtype=F64)
            e[i] = 1e-6
            fd = (loss(logk + e) - loss(logk - e)) / 2e-6
            assert abs(float(grad[i] - fd)) <= 1e-7 * max(abs(float(fd)), 1e-3), (i, float(grad[i]), float(fd))


@pytest.mark.parametrize("method", METHODS)
def test_adaptive_gradient_matches_scipy_sensitivities(method):
    """ROBER's log-k gradient of a loss on the outputs at rtol 1e-8: backprop through the
    adaptive solve and SciPy's discrete forward sensitivities of its own FBDF/QNDF solve
    agree to the tolerance's level."""
    from stiffcore.adapters.scipy import solve_ivp_sensitivity

    rtol, atol = 1e-8, 1e-12
    times = np.array([1e-2, 1.0, 1e2, 1e4])
    t = torch.tensor(np.concatenate([[0.0], times]), dtype=F64)
    logk = torch.tensor(LOG_ROBER.params, dtype=F64, requires_grad=True)
    ys = torchdiffeq.odeint(rober(logk), torch.tensor(ROBER.y0, dtype=F64), t, method=method, rtol=rtol, atol=atol)
    (grad,) = torch.autograd.grad(ys[1:, 1].sum(), logk)
    res = solve_ivp_sensitivity(LOG_ROBER.rhs, (0.0, times[-1]), ROBER.y0, LOG_ROBER.params, method=method.upper(),
                                t_eval=times, rtol=rtol, atol=atol, jac=LOG_ROBER.jac, jac_p=LOG_ROBER.jac_p)
    scipy_grad = res.sensitivities[1].sum(axis=-1)
    assert np.allclose(grad.numpy(), scipy_grad, rtol=1e-4, atol=1e-4 * np.abs(scipy_grad).max())


@pytest.mark.parametrize("method", METHODS)
def test_odeint_adjoint_solves_its_adjoint_system_with_the_method(method):
    """torchdiffeq's odeint_adjoint integrates y and the adjoint backwards with the same method
    (quadratures split off the Newton matrix): its gradient agrees with backprop's.  torchdiffeq's
    adjoint controls its own error only loosely: measured 4e-4 of the largest entry for fbdf at
    rtol 1e-9, 1e-3 for radau_iia5, 2e-3 for rodas5p, 9e-3 for dopri5.  (A problem whose
    backward solve is stable: reversing ROBER blows up, Kim et al. 2021.)"""
    class Decay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rates = torch.nn.Parameter(torch.tensor([1.0, 50.0], dtype=F64))

        def forward(self, s, y):
            return torch.stack([-self.rates[0] * y[0] + y[1], -self.rates[1] * (y[1] - torch.sin(s))])

    model = Decay()
    y0, t = torch.tensor([1.0, 0.5], dtype=F64), torch.linspace(0.0, 2.0, 5, dtype=F64)
    kw = dict(method=method, rtol=1e-9, atol=1e-11)
    (direct,) = torch.autograd.grad(torchdiffeq.odeint(model, y0, t, **kw)[1:].sum(), model.rates)
    ys = torchdiffeq.odeint_adjoint(model, y0, t, adjoint_params=tuple(model.parameters()), **kw)
    (adjoint,) = torch.autograd.grad(ys[1:].sum(), model.rates)
    assert float((adjoint - direct).abs().max()) <= 2e-3 * float(direct.abs().max())


@pytest.mark.parametrize("method", METHODS)
def test_same_steps_and_values_as_the_scipy_solver_with_fixed_steps(method):
    """Fixed steps raise the order by one after every k + 1 steps (the starting procedure):
    the same arithmetic as SciPy's FBDF/QNDF with ``adaptive=False``, to round-off."""
    h, t1 = 0.05, 3.0
    t = torch.tensor([0.0, t1], dtype=F64)
    ys = torchdiffeq.odeint(lambda s, y: torch.stack([y[1], -y[0] - 0.1 * y[1]]), torch.tensor([1.0, 0.0], dtype=F64),
                            t, method=method, options={"step_size": h, "newton_tol": 1e-12}, rtol=1e-10, atol=1e-12)
    sol = solve_ivp(lambda s, y: np.array([y[1], -y[0] - 0.1 * y[1]]), (0.0, t1), [1.0, 0.0], method=method.upper(),
                    first_step=h, adaptive=False, rtol=1e-10, atol=1e-12)
    assert sol.t.size - 1 == round(t1 / h)
    assert np.allclose(ys[-1].numpy(), sol.y[:, -1], rtol=0, atol=1e-10)


def test_max_order_one_with_fixed_steps_is_backward_euler():
    f = rober(torch.tensor(LOG_ROBER.params, dtype=F64))
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    kw = dict(rtol=1e-10, atol=1e-14)
    bdf1 = torchdiffeq.odeint(f, torch.tensor(ROBER.y0, dtype=F64), t, method="fbdf",
                              options={"step_size": 0.05, "max_order": 1, "newton_tol": 1e-12}, **kw)
    euler = torchdiffeq.odeint(f, torch.tensor(ROBER.y0, dtype=F64), t, method="backward_euler",
                               options={"step_size": 0.05, "newton_tol": 1e-12}, **kw)
    assert torch.allclose(bdf1, euler, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_backwards_in_time_with_a_matrix_state_a_batch_and_float32(method):
    """y' = a y on a (2, 2) state from t = 1 back to 0; then a float32 batch of two systems
    (``batch_dims=1``) with float64 times: values to the tolerance and d y(0) / d a."""
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    ys = torchdiffeq.odeint(lambda s, y: a * y, y1, t, method=method, rtol=1e-9, atol=1e-12)
    exact = y1 * torch.exp(-0.7 * (1 - t))[:, None, None]
    assert torch.allclose(ys, exact, rtol=1e-7)
    (ga,) = torch.autograd.grad(ys[-1].sum(), a)
    assert abs(float(ga) + float(y1.sum()) * np.exp(-0.7)) < 1e-6
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float32)
    ys = torchdiffeq.odeint(lambda s, y: torch.stack([-y[:, 0] + y[:, 1], -100 * y[:, 1]], dim=-1), y0,
                            torch.tensor([0.0, 1.0], dtype=F64), method=method, rtol=1e-5, atol=1e-7,
                            options={"batch_dims": 1})
    assert ys.dtype == torch.float32 and ys.shape == (2, 2, 2)
    exact = np.exp(-1.0) * np.array([1.0, 0.5 + 0.5 / 99])
    assert np.allclose(ys[-1, :, 0].numpy(), exact, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("linear", ["callable", "sparsity", "gmres", "finite_difference"])
def test_every_jacobian_and_linear_solver_option_gives_the_same_solution(method, linear):
    f = rober(torch.tensor(LOG_ROBER.params, dtype=F64))
    y0 = torch.tensor(ROBER.y0, dtype=F64)
    t = torch.tensor([0.0, 1.0, 100.0], dtype=F64)
    kw = dict(method=method, rtol=1e-7, atol=1e-11)
    options = {"callable": {"jac": lambda s, y: torch.func.jacrev(lambda v: f(s, v))(y)},
               "sparsity": {"jac_sparsity": np.ones((3, 3))},
               "gmres": {"linear_solver": "gmres", "krylov_rtol": 1e-12},
               "finite_difference": {"jac": "finite_difference"}}[linear]
    dense = torchdiffeq.odeint(f, y0, t, **kw)
    other = torchdiffeq.odeint(f, y0, t, options=options, **kw)
    assert weighted_error(other.numpy(), dense.numpy(), 1e-7, 1e-11) < 5  # step sequences differ a little


@pytest.mark.parametrize("method", METHODS)
def test_jump_t_restarts_the_history(method):
    """y' = -y + 10 for t >= 0.5: with jump_t the step lands there and the history restarts at
    order 1 from f's right value (accurate to the tolerance); ignoring it costs more steps."""
    def f(s, y):
        return -y + torch.where(s >= 0.5, 10.0, 0.0).to(y)

    t = torch.tensor([0.0, 1.0], dtype=F64)
    exact = np.exp(-1.0) + 10 * (1 - np.exp(-0.5))
    jump = adapter.SOLVERS[method](f, torch.ones(1, dtype=F64), rtol=1e-8, atol=1e-10,
                                   jump_t=torch.tensor([0.5], dtype=F64))
    blind = adapter.SOLVERS[method](f, torch.ones(1, dtype=F64), rtol=1e-8, atol=1e-10)
    y_jump, y_blind = jump.integrate(t)[-1, 0], blind.integrate(t)[-1, 0]
    assert abs(float(y_jump) - exact) < 100 * 1e-8 * exact
    assert jump.n_steps + jump.n_rejected < blind.n_steps + blind.n_rejected
    assert abs(float(y_blind) - exact) < 1e-4 * exact


@pytest.mark.parametrize("method", METHODS)
def test_event_is_found_on_the_interpolating_polynomial_with_its_gradient(method):
    """A falling body with drag hits the ground: torchdiffeq's odeint_event locates the root
    of the event on the step's polynomial; the event time and its derivative in the drag
    coefficient against the exact ones."""
    from scipy.optimize import brentq

    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    t_event, ys = torchdiffeq.odeint_event(lambda s, y: torch.stack([y[1], -9.81 - k * y[1]]),
                                           torch.tensor([10.0, 0.0], dtype=F64), torch.tensor(0.0, dtype=F64),
                                           event_fn=lambda s, y: y[0], method=method, rtol=1e-10, atol=1e-12)

    def height(s, kv):
        return 10.0 - 9.81 / kv * s + 9.81 / kv**2 * (1 - np.exp(-kv * s))

    exact = brentq(height, 0.1, 10.0, args=(0.7,), xtol=1e-14)
    assert abs(float(t_event.detach()) - exact) < 1e-6
    (g,) = torch.autograd.grad(t_event, k)
    dk = 1e-6
    exact_g = (brentq(height, 0.1, 10.0, args=(0.7 + dk,), xtol=1e-14)
               - brentq(height, 0.1, 10.0, args=(0.7 - dk,), xtol=1e-14)) / (2 * dk)
    assert abs(float(g) - exact_g) < 1e-4 * abs(exact_g)


@pytest.mark.parametrize("options, match", [
    ({"max_order": 0}, "max_order must be an integer in 1..5"),
    ({"max_order": 6}, "max_order must be an integer in 1..5"),
    ({"max_order": 2.5}, "max_order must be an integer in 1..5"),
    ({"max_order": "3"}, "max_order must be an integer in 1..5"),
    ({"perturb": True, "step_size": 0.1}, "perturb.*jump_t"),
    ({"max_ordre": 3}, r"unknown option\(s\) \['max_ordre'\]"),
])
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        torchdiffeq.odeint(lambda s, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                           method="fbdf", options=options)


@pytest.mark.parametrize("formula", ["bdf2", "bdf5", "ndf3"])
def test_conformance_hook_follows_the_k_step_recurrence(formula):
    """The hook the conformance suite calls: fixed order from exact starting values, so
    d y_N / d lambda follows the core's 60-digit recurrence (every root, and the starting
    values' own dependence on lambda) to round-off, also at |z| = 1e8."""
    z = -np.logspace(-2, 8, 6)
    measured, predicted = multistep_gradient(formula, z), predicted_gradient(formula, z, 1.0)
    assert np.max(np.abs(measured - predicted) / np.abs(predicted)) < 1e-10


def test_diagnose_refuses_a_variable_order_method_by_name():
    from stiffcore.adapters.torchdiffeq.diagnose import diagnose

    with pytest.raises(ValueError, match="diagnose analyses one-step methods.*'fbdf' changes order"):
        diagnose(lambda s, y, p: -p * y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                 torch.ones(1, dtype=F64), method="fbdf")
