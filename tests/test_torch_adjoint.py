"""torchdiffeq's ``odeint_adjoint`` with stiffcore methods in the backward pass.

The adjoint system detaches its input, so its Jacobian comes from the user's f through
``_adjoint.AugmentedDynamics``; these tests check that Jacobian against finite differences of
the very function the solver integrates, and the gradients against direct backprop.
"""

import math

import pytest

torch = pytest.importorskip("torch")
torchdiffeq = pytest.importorskip("torchdiffeq")

import stiffcore.adapters.torchdiffeq as adapter  # noqa: E402
from stiffcore.adapters.torchdiffeq import _adjoint  # noqa: E402
from stiffcore.adapters.torchdiffeq._field import VectorField  # noqa: E402
from stiffcore.adapters.torchdiffeq._linalg import SplitJacobian  # noqa: E402
from stiffcore.catalogue import get_method  # noqa: E402

F64 = torch.float64
# implicit and Rosenbrock methods whose estimate is of order 2 or more (a first-order
# estimate takes 1e4 steps per unit time at the tolerance the comparison needs)
IMPLICIT = sorted(m for m in adapter.SOLVER_IDS
                  if get_method(m).family in ("rosenbrock", "diagonally_implicit", "fully_implicit")
                  and get_method(m).adaptive and get_method(m).error_order > 1)


class Field(torch.nn.Module):
    """A stiff neural field: a tanh MLP beside a fast linear decay, optionally driven in time."""

    def __init__(self, width=16, driven=False, dtype=F64, rates=(50.0, 1.0)):
        super().__init__()
        self.rates = rates
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2)).to(dtype)
        self.driven = driven
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        out = self.net(y) - torch.tensor(self.rates, dtype=y.dtype) * y
        return out * (1 + 0.5 * torch.sin(3 * t)) if self.driven else out


def _parameters(field):
    return sum(p.numel() for p in field.parameters())


@pytest.fixture
def spy(monkeypatch):
    """Every VectorField.jacobian call made inside the backward pass: (field, t, x, J)."""
    calls = []
    original = VectorField.jacobian

    def jacobian(self, t, y):
        J = original(self, t, y)
        if self.adjoint is not None:
            calls.append((self, t.detach().clone(), y.detach().clone(), J))
        return J

    monkeypatch.setattr(VectorField, "jacobian", jacobian)
    return calls


def _dense(J: SplitJacobian, size: int) -> torch.Tensor:
    dense = torch.zeros(size, size, dtype=J.core.dtype)
    core = torch.arange(J.lo, J.hi)
    quad = torch.cat([torch.arange(0, J.lo), torch.arange(J.hi, size)])
    dense[core[:, None], core] = J.core[0]
    dense[quad[:, None], core] = J.coupling[0]
    return dense


@pytest.mark.parametrize("driven, t_grad, span", [(False, False, (0.0, 1.0)), (True, True, (0.0, 1.0)),
                                                  (True, False, (1.0, 0.0))])
def test_the_adjoint_jacobian_and_time_derivative_equal_finite_differences(spy, driven, t_grad, span):
    """At a point of the backward pass, the split Jacobian (zero columns for the time and
    parameter adjoints) and dG/dt equal central differences of the function the solver
    integrates: torchdiffeq's wrapped augmented dynamics, time reversal included (backwards
    in time with mild rates: reversing a stiff decay is unstable, whatever the solver)."""
    f = Field(driven=driven, rates=(50.0, 1.0) if span[1] > span[0] else (2.0, 1.0))
    t = torch.tensor(span, dtype=F64, requires_grad=t_grad)
    y = torchdiffeq.odeint_adjoint(f, torch.tensor([0.5, -0.3], dtype=F64), t, method="rodas5p",
                                   rtol=1e-8, atol=1e-10)
    y[-1].sum().backward()
    assert spy, "no Jacobian of the adjoint system was taken"
    field, s, x, J = spy[len(spy) // 2]
    size = x.shape[-1]
    assert size == 1 + 2 * 2 + _parameters(f) and isinstance(J, SplitJacobian)
    eps = 1e-6
    columns = []
    for j in range(size):
        e = torch.zeros_like(x)
        e[0, j] = eps
        columns.append((field(s, x + e) - field(s, x - e))[0] / (2 * eps))
    fd = torch.stack(columns, dim=1)
    torch.testing.assert_close(_dense(J, size), fd, rtol=1e-6, atol=1e-7)
    assert field.depends_on_time(s, x) is driven
    if driven:
        fd_t = (field(s + eps, x) - field(s - eps, x)) / (2 * eps)
        torch.testing.assert_close(field.time_derivative(s, x), fd_t, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", IMPLICIT)
def test_adjoint_gradients_equal_direct_backprop_with_split_jacobians(spy, method):
    """d y(0.5, 1) / d(parameters, t) by odeint_adjoint equals direct backprop through odeint,
    and every Jacobian of the backward pass is split (none by finite differences, which
    cost one evaluation per parameter).  Mild rates: the adjoint runs y backwards from t = 1,
    which for a fast decay is unstable whatever the solver (dopri5's adjoint gradient is off
    by a factor of 8 with a rate of 50; Kim et al. 2021)."""
    f = Field(width=16, driven=True, rates=(5.0, 1.0))
    y0 = torch.tensor([0.5, -0.3], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    params = list(f.parameters())
    direct = torch.autograd.grad(torchdiffeq.odeint(f, y0, t, method="dopri5", rtol=1e-11, atol=1e-13).pow(2).sum(),
                                 [*params, t])
    y = torchdiffeq.odeint_adjoint(f, y0, t, method=method, rtol=1e-7, atol=1e-9)
    adjoint = torch.autograd.grad(y.pow(2).sum(), [*params, t])
    assert spy and all(isinstance(J, SplitJacobian) and field.jac == "autodiff" for field, _, _, J in spy)
    for a, b in zip(adjoint, direct):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_wide_network_backward_pass_does_not_scale_with_its_parameters():
    """The issue's case: a width-1024 MLP (5,000 parameters); Kvaerno5's backward pass took
    56,596 f-evaluations (finite differences over the augmented state)."""
    f = Field(width=1024, rates=(5.0, 1.0))
    y = torchdiffeq.odeint_adjoint(f, torch.tensor([0.5, -0.3], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                                   method="kvaerno5", rtol=1e-8, atol=1e-8)
    f.calls = 0
    y[-1].sum().backward()
    assert f.calls < 1000, f.calls


def test_other_functions_are_not_taken_for_the_adjoint_system():
    assert _adjoint.recognise(lambda t, y: -y) is None
    from torchdiffeq._impl.misc import _ReverseFunc, _TupleFunc

    def augmented_dynamics(t, y):   # a user's function of the same name
        return y

    wrapped = _ReverseFunc(_TupleFunc(augmented_dynamics, [torch.Size(s) for s in ((), (2,), (2,))]), mul=-1.0)
    assert _adjoint.recognise(wrapped) is None
    field = VectorField(wrapped, torch.zeros(5, dtype=F64))
    assert field.adjoint is None and not isinstance(field.jacobian(torch.tensor(0.0, dtype=F64),
                                                                   torch.zeros(1, 5, dtype=F64)), SplitJacobian)


@pytest.mark.parametrize("method", ["kvaerno5", "radau_iia5", "rodas5p"])
def test_float32_adjoint_gradients(method):
    """float32 backward passes with exact Jacobians (finite differences reach only sqrt(eps) there)."""
    f = Field(driven=True, dtype=torch.float32, rates=(5.0, 1.0))
    t = torch.linspace(0.0, 1.0, 3)
    with pytest.warns(UserWarning, match="rtol below"):
        y = torchdiffeq.odeint_adjoint(f, torch.tensor([0.5, -0.3]), t, method=method)
    adjoint = torch.autograd.grad(y.sum(), list(f.parameters()))
    f64 = Field(driven=True, rates=(5.0, 1.0))
    direct = torch.autograd.grad(torchdiffeq.odeint(f64, torch.tensor([0.5, -0.3], dtype=F64), t.double(),
                                                    method="dopri5", rtol=1e-10, atol=1e-12).sum(),
                                 list(f64.parameters()))
    for a, b in zip(adjoint, direct):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)
    assert math.isfinite(float(sum(a.sum() for a in adjoint)))
