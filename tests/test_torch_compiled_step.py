"""torch option ``compile_step``: a Rosenbrock attempt as one torch.compile'd function gives the
eager step's solution, step sequence, evaluation counts and gradients.  The compiling tests
are slow (each new shape or function compiles for 10-40 s on 2 cores)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

from torchdiffeq import odeint_adjoint  # noqa: E402

import stiffcore.adapters.torchdiffeq as adapter  # noqa: E402
from stiffcore.problems import ROBER  # noqa: E402

F64 = torch.float64
LOG_ROBER = ROBER.log_parameterised()
T_ROBER = torch.cat([torch.zeros(1, dtype=F64), torch.logspace(-5, 5, 20, dtype=F64)])
Y0_ROBER = torch.as_tensor(ROBER.y0, dtype=F64)


class Rober(torch.nn.Module):
    """ROBER with log rate constants as parameters (odeint_adjoint differentiates those)."""

    def __init__(self):
        super().__init__()
        self.logk = torch.nn.Parameter(torch.as_tensor(LOG_ROBER.params, dtype=F64))

    def forward(self, t, y):
        return LOG_ROBER.rhs(t, y, self.logk)


def solve(func, y0, t, compile_step, **options):
    """(outputs, solver) of one integration, the solver holding its counts."""
    solver = adapter.SOLVERS[options.pop("method", "rodas5p")](
        func, y0, rtol=options.pop("rtol", 1e-6), atol=options.pop("atol", 1e-10), compile_step=compile_step,
        **options)
    return solver.integrate(t), solver


@pytest.mark.slow
def test_the_compiled_step_reproduces_the_eager_solve_and_gradient_on_rober():
    results = {}
    for compiled in (False, True):
        field = Rober()
        ys, solver = solve(field, Y0_ROBER, T_ROBER, compiled)
        grad = torch.autograd.grad((ys ** 2).sum(), field.logk)[0]
        results[compiled] = (ys.detach(), grad, solver.n_steps, solver.n_rejected, solver.field.nfev,
                             solver.field.njev)
    (ys_e, g_e, *counts_e), (ys_c, g_c, *counts_c) = results[False], results[True]
    assert counts_c[:3] == counts_e[:3]     # the same accepted and rejected steps and f evaluations
    assert counts_c[3] == counts_c[0] + counts_c[1]   # J in every attempt (eager keeps it over a rejection)
    torch.testing.assert_close(ys_c, ys_e, rtol=1e-11, atol=1e-16)
    torch.testing.assert_close(g_c, g_e, rtol=1e-9, atol=0.0)


@pytest.mark.slow
def test_the_compiled_step_under_odeint_adjoint_gives_the_eager_gradient():
    """The forward solve is compiled; the adjoint system (a split Jacobian) steps eagerly.  A
    network field: odeint_adjoint re-integrates y backwards, which a stiff field would not survive
    (Kim et al. 2021), compiled or not."""
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    grads = []
    for compiled in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
        field = Network(net)
        ys = odeint_adjoint(field, y0, t, method="rodas5p", rtol=1e-8, atol=1e-10,
                            options=dict(compile_step=compiled))
        grads.append(torch.autograd.grad((ys ** 2).sum(), list(net.parameters())))
    for compiled, eager in zip(*grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-9, atol=1e-13)


class Network(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y) - y


@pytest.mark.slow
def test_the_compiled_step_on_a_batched_forced_problem_with_its_jacobian():
    """batch_dims, a non-autonomous f (Rodas5P's df/dt term), a callable jac and outputs
    between which the interpolation control rejects steps: as the eager step."""
    rates = torch.tensor([[1e3, 1.0], [50.0, 1e4]], dtype=F64)
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=F64)

    def run(compiled):
        k = rates.clone().requires_grad_(True)

        def f(t, y):   # each component relaxes towards its own forcing: stiff, time-dependent
            return -k * (y - torch.sin(3 * t) * torch.tensor([1.0, -2.0], dtype=F64))

        def jac(t, y):
            return torch.diag_embed(-k)

        ys, solver = solve(f, y0, t, compiled, batch_dims=1, jac=jac, rtol=1e-7, atol=1e-9)
        return ys.detach(), torch.autograd.grad(ys[-1].sum() + (ys ** 2).sum(), k)[0], solver.n_steps, solver.n_rejected

    eager, compiled = run(False), run(True)
    assert compiled[2:] == eager[2:] and eager[3] > 0
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-11, atol=1e-14)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-9, atol=1e-14)
    # and right: y = y_p + (y0 - y_p(0)) e^(-k t), y_p = c k (k sin 3t - 3 cos 3t) / (k^2 + 9)
    k, c, tt = rates[None], torch.tensor([1.0, -2.0], dtype=F64), t[:, None, None]
    particular = lambda s: c * k * (k * torch.sin(3 * s) - 3 * torch.cos(3 * s)) / (k ** 2 + 9)  # noqa: E731
    exact = particular(tt) + (y0 - particular(torch.zeros(()))) * torch.exp(-k * tt)
    assert float(((compiled[0] - exact).abs() / (1e-9 + 1e-7 * exact.abs())).max()) < 3.0


@pytest.mark.slow
def test_the_compiled_step_inside_recomputed_backpropagation():
    """From 20 unknowns an nn.Module field's steps are recomputed in the backward pass
    (recompute_steps): the compiled step runs there without and then with a graph, and the
    gradient is the eager one's."""
    n = 20

    class Chain(torch.nn.Module):   # y_i' = k_(i-1) y_(i-1) - k_i y_i: rates over four decades
        def __init__(self):
            super().__init__()
            self.logk = torch.nn.Parameter(torch.linspace(0.0, 4.0 * math.log(10.0), n, dtype=F64))

        def forward(self, t, y):
            flow = torch.exp(self.logk) * y
            return torch.cat([-flow[:1], flow[:-1] - flow[1:]])

    t = torch.tensor([0.0, 0.1, 1.0, 3.0], dtype=F64)
    y0 = torch.zeros(n, dtype=F64)
    y0[0] = 1.0
    results = []
    for compiled in (False, True):
        field = Chain()
        ys, solver = solve(field, y0, t, compiled, rtol=1e-7, atol=1e-12)
        assert solver.recompute_steps
        results.append((ys.detach(), torch.autograd.grad((ys ** 2).sum(), field.logk)[0]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-11, atol=1e-16)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("method, options, error, words", [
    ("kvaerno5", {}, ValueError, "Rosenbrock methods"),
    ("rodas5p", {"jac_sparsity": np.ones((3, 3))}, ValueError, "dense Jacobian"),
    ("rodas5p", {"jac": "finite_difference"}, ValueError, "dense Jacobian"),
    ("fbdf", {}, ValueError, "unknown option"),
])
def test_compile_step_refuses_what_it_cannot_compile(method, options, error, words):
    with pytest.raises(error, match=words):
        adapter.SOLVERS[method](Rober(), Y0_ROBER, rtol=1e-6, atol=1e-10, compile_step=True, **options)


def test_compile_step_takes_a_bool():
    with pytest.raises(TypeError, match="compile_step must be True or False"):
        adapter.SOLVERS["rodas5p"](Rober(), Y0_ROBER, compile_step="yes")
