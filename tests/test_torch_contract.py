"""torchdiffeq's documented contract for ``odeint``, for every stiffcore method string.

Written from torchdiffeq's README: ``t`` may decrease (integration backwards in time), ``y0``
may have any shape, outputs come at every ``t`` (this adapter's steps land on them, so
outputs are step ends), gradients flow to ``y0`` and to parameters the function closes over.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchdiffeq = pytest.importorskip("torchdiffeq")

from helpers import practical_rtol, step_end_reference, weighted_error  # noqa: E402

import stiffcore.adapters.torchdiffeq as adapter  # noqa: E402
from stiffcore.catalogue import get_method  # noqa: E402
from stiffcore.problems import ROBER  # noqa: E402

F64 = torch.float64
METHODS = sorted(adapter.SOLVER_IDS)


def _options(method, h=0.01):
    return {} if get_method(method).adaptive else {"step_size": h}


@pytest.mark.parametrize("method", METHODS)
def test_backwards_in_time_with_a_matrix_state_and_gradients(method):
    """y' = a y for a (2, 2) state from t = 1 back to 0: values, and d y(0) / d(a, y(1))
    against the exact derivative of the exact solution (to the method's accuracy)."""
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64, requires_grad=True)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    ys = torchdiffeq.odeint(lambda s, y: a * y, y1, t, method=method, rtol=practical_rtol(method, 1e-9),
                            atol=1e-12, options=_options(method))
    tol = {1: 1e-2, 2: 1e-4}.get(get_method(method).order, 1e-6)
    exact = y1.detach() * torch.exp(-0.7 * (1 - t))[:, None, None]
    assert torch.allclose(ys, exact, rtol=tol), (method, ys[-1])
    ga, gy = torch.autograd.grad(ys[-1].sum(), (a, y1))
    assert abs(float(ga) - float(-(y1.detach().sum()) * np.exp(-0.7))) <= 10 * tol * 10 * np.exp(-0.7), method
    assert torch.allclose(gy, torch.full_like(gy, np.exp(-0.7)), rtol=10 * tol), method


# L-stable: the others (|R(-inf)| = 1) crawl on stiff problems (docs/stability.md)
L_STABLE = [m for m in METHODS if get_method(m).adaptive and get_method(m).stability.l_stable]


@pytest.mark.parametrize("method", [m for m in L_STABLE if get_method(m).order >= 3])
def test_rober_outputs_honour_the_tolerance(method):
    """ROBER to 1e5 at 30 log-spaced outputs, rtol 1e-6: the outputs are step ends, within
    10x the tolerance for methods of order >= 3 (weighted error against a reference that is
    as accurate at every output)."""
    rtol, atol = 1e-6, 1e-10
    ts = np.concatenate([[0.0], np.logspace(-4, 5, 30)])
    ys = torchdiffeq.odeint(lambda s, y: ROBER.rhs(s, y, torch.tensor(ROBER.params, dtype=F64)),
                            torch.tensor(ROBER.y0, dtype=F64), torch.tensor(ts, dtype=F64), method=method,
                            rtol=rtol, atol=atol)
    ref = step_end_reference(ROBER.fun(), ROBER.y0, ts[1:], jac=ROBER.jac_fun())
    assert weighted_error(ys[1:].detach().numpy(), ref, rtol, atol) <= 10, method


@pytest.mark.parametrize("method", ["rodas5p", "radau_iia5"])
def test_cantera_mechanism_outputs_honour_the_tolerance(method, gri_mech):
    """GRI-Mech 3.0 (53 species, eigenvalues to -5e8) at 30 log-spaced outputs, rtol 1e-6:
    within 10x the tolerance, as ROBER (measured 0.86x and 0.41x)."""
    problem, ts, reference = gri_mech
    rtol, atol = 1e-6, 1e-10
    k = torch.tensor(problem.params, dtype=F64)
    ys = torchdiffeq.odeint(lambda s, y: problem.rhs(s, y, k), torch.tensor(problem.y0, dtype=F64),
                            torch.tensor(np.concatenate([[0.0], ts]), dtype=F64), method=method, rtol=rtol, atol=atol)
    assert weighted_error(ys[1:].numpy(), reference(ts), rtol, atol) <= 10, method


@pytest.mark.parametrize("method", METHODS)
def test_a_solve_of_plain_tensors_returns_plain_tensors(method):
    """Nothing needs grad, so the solution does not either (it required grad through the
    Jacobian's graph, so ``.numpy()`` raised and every step kept a graph alive); with a
    parameter that needs grad it does, and the gradient is right."""
    t = torch.tensor([0.0, 0.5], dtype=F64)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    rtol = practical_rtol(method, 1e-8)
    plain = torchdiffeq.odeint(lambda s, y: -3.0 * y ** 2, y0, t, method=method, rtol=rtol, atol=1e-10,
                               options=_options(method, 0.005))
    assert not plain.requires_grad, method
    a = torch.tensor(3.0, dtype=F64, requires_grad=True)
    ys = torchdiffeq.odeint(lambda s, y: -a * y ** 2, y0, t, method=method, rtol=rtol, atol=1e-10,
                            options=_options(method, 0.005))
    (grad,) = torch.autograd.grad(ys[-1].sum(), a)
    exact = -sum(float(c) ** 2 * 0.5 / (1 + 3.0 * float(c) * 0.5) ** 2 for c in y0)  # y = c / (1 + a c t)
    tol = {1: 3e-2, 2: 1e-3}.get(get_method(method).order, 1e-5)
    assert float(grad) == pytest.approx(exact, rel=tol), method


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:rtol below")  # rtol = 0 warns before atol = 0 raises
def test_zero_tolerances_return_at_once_with_a_message():
    """atol = 0 with ROBER's zero components (and rtol = atol = 0) looped on NaN steps forever;
    now they raise naming the components, and an rtol below round-off is raised to 100 eps
    with a warning, as solve_ivp does."""
    p = torch.tensor(ROBER.params, dtype=torch.float64)
    y0 = torch.tensor(ROBER.y0, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for rtol in (1e-6, 0.0):
        with pytest.raises(ValueError, match=r"atol = 0 and y0 is 0 in component\(s\) \[1, 2\]"):
            torchdiffeq.odeint(lambda t, y: ROBER.rhs(t, y, p), y0, t, method="rodas5p", rtol=rtol, atol=0.0)
    with pytest.warns(UserWarning, match="rtol below 2.22e-14"):
        y = torchdiffeq.odeint(lambda t, y: -y, torch.ones(1, dtype=F64), t, method="rodas5p", rtol=1e-20, atol=0.0)
    assert float(y[-1, 0]) == pytest.approx(np.exp(-1.0), rel=1e-12)


@pytest.mark.parametrize("solve", [torchdiffeq.odeint, torchdiffeq.odeint_adjoint])
@pytest.mark.parametrize("typed, meant", [("rodas5", "rodas5p"), ("Rodas5P", "rodas5p"), ("RadauIIA5", "radau_iia5"),
                                           ("kvaerno", "kvaerno5"), ("backward-euler", "backward_euler")])
def test_a_mistyped_method_string_names_the_closest_one(solve, typed, meant):
    """odeint and odeint_adjoint listed every name on a typo; they now suggest the closest
    (case ignored, so a SciPy name finds its torch id) after torchdiffeq's own message."""
    func, y0, t = torch.nn.Linear(1, 1).double(), torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    expected = rf'Invalid method "{typed}"\. Must be one of .*"rodas5p".*Did you mean \'{meant}\'\?'
    with pytest.raises(ValueError, match=expected):
        solve(_Field(func), y0, t, method=typed)
    with pytest.raises(ValueError) as unrelated:
        torchdiffeq.odeint(lambda t, y: -y, y0, t, method="qwertyuiop")
    assert "Did you mean" not in str(unrelated.value)


class _Field(torch.nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, t, y):
        return self.linear(y)


@pytest.mark.filterwarnings("ignore:rtol below")
@pytest.mark.parametrize("method", ["rodas5p", "rosenbrock23", "radau_iia5", "kvaerno5"])
@pytest.mark.parametrize("span", [(0.0, 1.0), (1.0, 0.0)])
def test_float32_states_backwards_with_a_time_dependent_func(method, span):
    """float32 with decreasing t and a func of t raised 'LU of type Float and B of type
    Double' (Rosenbrock) or 'step size underflow' (radau_iia5 at torchdiffeq's default
    rtol 1e-7): the state stays float32 and rtol is raised to what float32 reaches."""
    t = torch.tensor(span)
    func = lambda s, y: -y + torch.sin(s) * y**2  # noqa: E731
    y = torchdiffeq.odeint(func, torch.ones(2), t, method=method)
    reference = torchdiffeq.odeint(func, torch.ones(2, dtype=F64), t.double(), method="dopri5", rtol=1e-12, atol=1e-12)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y[-1].double().numpy(), reference[-1].numpy(), rtol=1e-4)


def test_float32_default_rtol_is_raised_with_a_warning_and_odeint_adjoint_runs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, s, y):
            return self.net(y) * torch.cos(s)

    t = torch.linspace(1.0, 0.0, 4)
    with pytest.warns(UserWarning, match=r"rtol below 4.77e-07 \(torch.float32\) is raised to it"):
        y = torchdiffeq.odeint_adjoint(Field(), torch.ones(2), t, method="kvaerno5")
    y.sum().backward()
    direct = torch.nn.utils.parameters_to_vector(torch.autograd.grad(
        torchdiffeq.odeint(Field(), torch.ones(2), t, method="dopri5", rtol=1e-6, atol=1e-8).sum(), net.parameters()))
    adjoint = torch.nn.utils.parameters_to_vector([p.grad for p in net.parameters()])
    assert adjoint.dtype == torch.float32 and torch.allclose(adjoint, direct, rtol=1e-3, atol=1e-4)


def test_a_singular_newton_matrix_is_named():
    """h lambda = 1 makes backward Euler's 1 - h lambda zero: torch's lu_factor raised a bare
    "U[1,1] is zero"; a fixed step now fails naming the matrix, t and h, and an adaptive
    solve shrinks the step past it."""
    y0, t = torch.ones(1, dtype=F64), torch.tensor([0.0, 0.5], dtype=F64)
    with pytest.raises(FloatingPointError, match=r"the Newton matrix I - h a J is singular at t = 0 with h = 0.1"):
        torchdiffeq.odeint(lambda s, y: 10.0 * y, y0, t, method="backward_euler", options={"step_size": 0.1})
    y = torchdiffeq.odeint(lambda s, y: 10.0 * y, y0, t, method="radau_iia5", rtol=1e-8, atol=1e-10)
    assert float(y[-1, 0]) == pytest.approx(np.exp(5.0), rel=1e-6)


def test_func_of_another_dtype_is_named():
    """func returning float32 for a float64 state failed inside lu_solve."""
    with pytest.raises(TypeError, match="func\\(t, y\\) returned torch.float32 for a torch.float64 state"):
        torchdiffeq.odeint(lambda t, y: (-y).float(), torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                           method="rodas5p")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", L_STABLE)
def test_starts_on_a_fast_initial_transient(method):
    """eps y1' = cos t - y1 with eps = 1e-12 from y1 = 2, far off its slow manifold, and
    y2' = y1 - y2: the first step must pass the 1e-12 transient ("step size underflow at
    t = 0" before), as SciPy's and diffrax's first steps do.  y2 follows
    y2' = cos t - y2 to within eps."""
    def f(t, y):
        return torch.stack([(torch.cos(t) - y[0]) / 1e-12, y[0] - y[1]])

    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys = torchdiffeq.odeint(f, torch.tensor([2.0, 1.0], dtype=F64), t, method=method, rtol=1e-6, atol=1e-9)
    exact = 0.5 * (np.cos(1.0) + np.sin(1.0)) + 0.5 * np.exp(-1.0)  # y2(1) of y2' = cos t - y2, y2(0) = 1
    assert abs(float(ys[-1, 0]) - np.cos(1.0)) < 1e-6
    tol = 1e-2 if get_method(method).order == 1 else 1e-4  # backward Euler's global error at rtol 1e-6
    assert abs(float(ys[-1, 1]) - exact) < tol, (method, float(ys[-1, 1]), exact)


# --- issue 20: the rest of odeint's contract --------------------------------------------------
ADAPTIVE = [m for m in METHODS if get_method(m).adaptive]
FIXED_ONLY = [m for m in METHODS if not get_method(m).adaptive]


@pytest.mark.parametrize("method", ["rodas5p", "radau_iia5", "kvaerno4", "ros3p"])
def test_float32_state_with_float64_times_promotes_as_torchdiffeq_does(method):
    """torchdiffeq keeps times in the promoted dtype and the state in its own: outputs are
    float32, at the float64 times exactly, and gradients flow."""
    a = torch.tensor(0.5, requires_grad=True)
    t = torch.tensor([0.0, 0.1 + 1e-9, 1.0], dtype=F64)   # 0.1 + 1e-9 is no float32
    ys = torchdiffeq.odeint(lambda s, y: -a * y, torch.ones(2), t, method=method, rtol=1e-5, atol=1e-7,
                            options=_options(method))
    assert ys.dtype == torch.float32 and ys.shape == (3, 2)
    assert torch.allclose(ys[:, 0].double(), torch.exp(-0.5 * t), rtol=1e-4)
    (g,) = torch.autograd.grad(ys[-1].sum(), a)
    assert abs(float(g) + 2 * np.exp(-0.5)) < 1e-3


@pytest.mark.parametrize("method, options", [(m, {}) for m in FIXED_ONLY] + [("reversible", {"base": "rk4"})])
def test_fixed_steps_without_step_size_step_on_the_output_grid(method, options):
    """Like torchdiffeq's fixed-grid solvers: a method without an error estimate takes one step
    per output interval when no step_size is given."""
    t = torch.linspace(0.0, 1.0, 41, dtype=F64)
    f = lambda s, y: -2.0 * y + torch.sin(s)  # noqa: E731
    solver = adapter.SOLVERS[method](func=f, y0=torch.ones(1, dtype=F64), **options)
    ys = solver.integrate(t)
    assert solver.n_steps == 40
    assert torch.equal(ys, torchdiffeq.odeint(f, torch.ones(1, dtype=F64), t, method=method, options=options))
    exact = 1.2 * torch.exp(-2 * t) + (2 * torch.sin(t) - torch.cos(t)) / 5
    assert torch.allclose(ys[:, 0], exact, atol=1e-5), (method, float((ys[:, 0] - exact).abs().max()))


def _step_in_time(s, y):
    """y' = -y + 10 for t >= 0.5 (f jumps there; its left value at 0.5 is -y)."""
    return -y + torch.where(s >= 0.5, 10.0, 0.0).to(y)


@pytest.mark.parametrize("method", ["rodas5p", "radau_iia5", "kvaerno5", "trbdf2"])
def test_jump_t_lands_on_the_discontinuity_and_restarts_after_it(method):
    """With jump_t the steps end at 0.5 with f's left value and restart with its right value:
    the solution is then accurate to the tolerance and costs few steps; without it the
    controller grinds through the jump."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    exact = np.exp(-1.0) + 10 * (1 - np.exp(-0.5))
    solvers = {}
    for key, options in (("jump", {"jump_t": torch.tensor([0.5], dtype=F64)}), ("blind", {})):
        solver = adapter.SOLVERS[method](func=_step_in_time, y0=y0, rtol=1e-8, atol=1e-10, **options)
        y1 = solver.integrate(t)[-1, 0]
        solvers[key] = solver
        if key == "jump":   # (global error of an order-2 method: within 100 rtol)
            assert abs(float(y1) - exact) < 100 * 1e-8 * exact, (method, float(y1) - exact)
    assert solvers["jump"].n_rejected + solvers["jump"].n_steps < solvers["blind"].n_rejected + solvers["blind"].n_steps


def test_jump_t_and_step_t_through_odeint_forwards_and_backwards():
    """torchdiffeq flips step_t / jump_t with the time axis; stops land exactly, and the
    solution matches the exact one both ways."""
    seen = []

    class F(torch.nn.Module):
        def forward(self, s, y):
            return -y + torch.where(s >= 0.5, 10.0, 0.0).to(y)

        def callback_accept_step(self, t0, y0, dt):
            seen.append(float(t0 + dt))

    y0 = torch.ones(1, dtype=F64)
    ys = torchdiffeq.odeint(F(), y0, torch.tensor([0.0, 1.0], dtype=F64), method="rodas5p", rtol=1e-8, atol=1e-10,
                            options={"jump_t": torch.tensor([0.5], dtype=F64),
                                     "step_t": torch.tensor([0.25, 0.75], dtype=F64)})
    assert abs(float(ys[-1, 0]) - (np.exp(-1.0) + 10 * (1 - np.exp(-0.5)))) < 1e-6
    assert {0.25, 0.5, 0.75} <= set(seen)
    # backwards from 1 to 0 (torchdiffeq negates time and jump_t): back to y(0) = 1
    back = torchdiffeq.odeint(_step_in_time, ys[-1], torch.tensor([1.0, 0.0], dtype=F64), method="rodas5p",
                              rtol=1e-9, atol=1e-11, options={"jump_t": torch.tensor([0.5], dtype=F64)})
    assert abs(float(back[-1, 0]) - 1.0) < 1e-5


@pytest.mark.parametrize("method", ["backward_euler", "ros3p", "gauss_legendre4"])
def test_perturb_with_fixed_steps_sees_each_side_of_jumps_at_the_outputs(method):
    """perturb=True: each fixed step sees f just inside its ends, so a jump at an output time
    (here 0.5, where f's value is the right one) costs the step before it nothing."""
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    exact = np.exp(-1.0) + 10 * (1 - np.exp(-0.5))
    plain = torchdiffeq.odeint(_step_in_time, torch.ones(1, dtype=F64), t, method=method,
                               options={"step_size": 1 / 64})
    nudged = torchdiffeq.odeint(_step_in_time, torch.ones(1, dtype=F64), t, method=method,
                                options={"step_size": 1 / 64, "perturb": True})
    # a stage at the step's end (c = 1) saw f's right value at 0.5; interior stages never do
    nudged_error, plain_error = (abs(float(ys[1, 0]) - np.exp(-0.5)) for ys in (nudged, plain))
    assert nudged_error < plain_error if method != "gauss_legendre4" else nudged_error == plain_error
    assert abs(float(nudged[-1, 0]) - exact) < {1: 0.1, 2: 1e-2}.get(get_method(method).order, 1e-4)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_step_callbacks_are_called_as_torchdiffeq_calls_them(method):
    """callback_step before every attempt, callback_accept_step / callback_reject_step after
    it, each with (t0, y0, dt) in the user's shape; no "does not support callbacks" warning."""
    calls = {"step": [], "accept": [], "reject": []}

    class F(torch.nn.Module):
        def forward(self, s, y):
            return torch.stack([y[1], 1e3 * (1 - y[0] ** 2) * y[1] - y[0]])

        def callback_step(self, t0, y0, dt):
            calls["step"].append((float(t0), tuple(y0.shape), float(dt)))

        def callback_accept_step(self, t0, y0, dt):
            calls["accept"].append((float(t0), tuple(y0.shape), float(dt)))

        def callback_reject_step(self, t0, y0, dt):
            calls["reject"].append((float(t0), tuple(y0.shape), float(dt)))

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        torchdiffeq.odeint(F(), torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                           method=method, rtol=1e-5, atol=1e-8)
    assert len(calls["step"]) == len(calls["accept"]) + len(calls["reject"]) > 0
    assert calls["accept"][0][0] == 0.0 and all(c[1] == (2,) for c in calls["step"])
    ends = [t0 + dt for t0, _, dt in calls["accept"]]
    assert ends[-1] == pytest.approx(1.0, abs=1e-12)
    assert [t0 for t0, _, _ in calls["accept"][1:]] == pytest.approx(ends[:-1], abs=1e-15)


@pytest.mark.parametrize("method", ["rodas5p", "radau_iia5", "kvaerno5", "rosenbrock23", "sdirk2", "ros3p",
                                    pytest.param("rodas5p+compiled", marks=pytest.mark.slow)])
def test_event_fn_finds_the_event_on_the_dense_output_with_gradients(method):
    """odeint_event on a falling ball with drag: the event time to the tolerance, and its
    gradient (through torchdiffeq's implicit-function rerouting, which needs the state at the
    event to carry the step's gradient) against the exact derivative.  "+compiled": with
    options={"compile_step": True}, whose steps give the extension their stacked stages."""
    method, compiled = method.split("+")[0], method.endswith("+compiled")
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def f(s, y):   # height and velocity; the velocity relaxes to -g / k
        return torch.stack([y[1], -9.81 - k * y[1]])

    def hits_ground(s, y):
        return y[0]

    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    options = {"step_size": 1e-3} if method == "ros3p" else ({"compile_step": True} if compiled else None)
    # second-order sdirk2 at rtol 1e-9 took 1e5 steps (212 s); at 1e-7 its event is 2e-9 off
    rtol = 1e-7 if method == "sdirk2" else 1e-9
    t_event, ys = torchdiffeq.odeint_event(f, y0, torch.tensor(0.0, dtype=F64), event_fn=hits_ground,
                                           method=method, rtol=rtol, atol=1e-2 * rtol, options=options)
    from scipy.optimize import brentq

    def height(s, kv):
        return 10.0 - 9.81 / kv * s + 9.81 / kv**2 * (1 - np.exp(-kv * s))

    exact = brentq(height, 0.1, 10.0, args=(0.7,), xtol=1e-14)
    assert abs(float(t_event.detach()) - exact) < 1e-6, (method, float(t_event.detach()) - exact)
    assert abs(float(ys[-1, 0].detach())) < 1e-6
    (g,) = torch.autograd.grad(t_event, k)
    dk = 1e-6
    exact_g = (brentq(height, 0.1, 10.0, args=(0.7 + dk,), xtol=1e-14)
               - brentq(height, 0.1, 10.0, args=(0.7 - dk,), xtol=1e-14)) / (2 * dk)
    assert abs(float(g) - exact_g) < 1e-5 * abs(exact_g), (method, float(g), exact_g)


@pytest.mark.parametrize("method", ["ros3p", "radau_iia5"])
def test_grid_constructor_steps_on_its_grid_and_the_outputs(method):
    """torchdiffeq's fixed-grid option: steps on grid_constructor(func, y0, t), with the output
    times added (outputs are step ends here, not interpolated); exclusive with step_size."""
    seen = []

    class F(torch.nn.Module):
        def forward(self, s, y):
            return -2.0 * y

        def callback_accept_step(self, t0, y0, dt):
            seen.append(round(float(t0 + dt), 12))

    def grid(func, y0, t):
        assert isinstance(func, torch.nn.Module) and y0.shape == (2,)
        return torch.linspace(float(t[0]), float(t[-1]), 9, dtype=t.dtype)

    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    ys = torchdiffeq.odeint(F(), torch.ones(2, dtype=F64), t, method=method, options={"grid_constructor": grid})
    assert seen == sorted({0.125, 0.25, 0.3, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0})
    assert torch.allclose(ys[:, 0], torch.exp(-2 * t), rtol=5e-3)
    with pytest.raises(ValueError, match="mutually exclusive"):
        torchdiffeq.odeint(F(), torch.ones(2, dtype=F64), t, method=method,
                           options={"grid_constructor": grid, "step_size": 0.1})
    with pytest.raises(ValueError, match="t\\[0\\] to t\\[-1\\]"):
        torchdiffeq.odeint(F(), torch.ones(2, dtype=F64), t, method=method,
                           options={"grid_constructor": lambda f, y0, t: torch.tensor([0.0, 0.5], dtype=F64)})


@pytest.mark.parametrize("method", ["rodas5p", "radau_iia5"])
def test_tuple_states_with_event_and_jump(method):
    """A tuple state (torchdiffeq flattens it and unflattens the outputs), with event_fn and
    jump_t on the flat state the solver sees."""
    def f(s, y):
        x, v = y
        return v, -9.81 - 0.7 * v

    y0 = (torch.tensor([10.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    ys = torchdiffeq.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), method=method, rtol=1e-9, atol=1e-11,
                            options={"jump_t": torch.tensor([0.5], dtype=F64)})
    assert isinstance(ys, tuple) and ys[0].shape == (2, 1)
    t_event, (x, v) = torchdiffeq.odeint_event(f, y0, torch.tensor(0.0, dtype=F64), method=method, rtol=1e-9,
                                               atol=1e-11, event_fn=lambda s, y: y[0][0])
    assert abs(float(x[-1, 0])) < 1e-6 and 1.7 < float(t_event.detach()) < 1.72
