"""Backpropagation that recomputes each step (option ``recompute_steps``): the same gradient
as keeping the whole graph, one autograd node a step kept, honest refusals."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

from torchdiffeq import odeint  # noqa: E402

import stiffcore.adapters.torchdiffeq  # noqa: E402, F401  (registers the method strings)
from stiffcore.problems import ROBER  # noqa: E402

F64 = torch.float64
COPIES = 8   # 24 unknowns: recomputation is on by default from 20
T = torch.tensor([0.0, 1e-3, 0.3, 0.5, 1.0, 3.0], dtype=F64)


class Kinetics(torch.nn.Module):
    """ROBER copies with per-copy log rate constants, forced by a source that jumps at t = 0.5."""

    def __init__(self):
        super().__init__()
        self.logk = torch.nn.Parameter(torch.log(torch.tensor(ROBER.params, dtype=F64)).repeat(COPIES, 1)
                                       + 0.1 * torch.linspace(-1, 1, COPIES, dtype=F64)[:, None])
        self.source = torch.nn.Parameter(torch.tensor(0.2, dtype=F64))

    def forward(self, t, y):
        Y = y.reshape(COPIES, 3)
        k = torch.exp(self.logk)
        a, b, c = Y[:, 0], Y[:, 1], Y[:, 2]
        fast = k[:, 2] * b * c
        da = -k[:, 0] * a + fast + self.source * (t >= 0.5)
        db = k[:, 0] * a - fast - k[:, 1] * b * b
        return torch.stack([da, db, k[:, 1] * b * b], -1).reshape(-1)


def y0():
    return torch.tensor([1.0, 0.0, 0.0] * COPIES, dtype=F64, requires_grad=True)


def gradients(method, **options):
    func, start = Kinetics(), y0()
    sol = odeint(func, start, T, method=method, rtol=1e-7, atol=1e-10,
                 options=dict(jump_t=torch.tensor([0.5], dtype=F64), **options))
    loss = (sol[1:] ** 2).sum()
    # torch.autograd.grad, not .backward: the parameters get their gradients through the graph
    return sol.detach(), torch.autograd.grad(loss, [func.logk, func.source, start]), sol


@pytest.mark.parametrize("method", ["rodas5p", "radau_iia5", "kvaerno5", "rodas4"])
def test_recomputed_steps_give_the_kept_graphs_gradient(method):
    kept_y, kept, _ = gradients(method, recompute_steps=False)
    y, grads, _ = gradients(method)          # the default at 24 unknowns
    torch.testing.assert_close(y, kept_y, rtol=0, atol=0)
    for g, ref in zip(grads, kept):
        torch.testing.assert_close(g, ref, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("method", ["rodas5p", "radau_iia5"])
def test_the_graph_keeps_a_few_nodes_a_step(method):
    """What backpropagation holds: without recomputation the step's stages, Jacobian graph
    and Newton matrices (about a hundred nodes a step or more); with it one node a step (the step
    and f at its end) and the per-output bookkeeping."""
    def nodes(recompute):
        steps = []
        func = Kinetics()
        func.callback_accept_step = lambda t, y, h: steps.append(float(t))
        sol = odeint(func, y0(), T, method=method, rtol=1e-7, atol=1e-10, options=dict(recompute_steps=recompute))
        seen, stack = set(), [sol.grad_fn]
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack.extend(edge[0] for edge in node.next_functions)
        return len(seen) / len(steps)

    assert nodes(True) < 3 < 50 < nodes(False)


def test_a_func_that_differentiates_tensors_it_does_not_own():
    """A closure over a tensor that requires grad cannot be recomputed with its gradient:
    asked for explicitly it is refused with the reason; by default the graph is kept and the
    gradient is still right."""
    logk = torch.log(torch.tensor(ROBER.params, dtype=F64)).requires_grad_(True)

    def func(t, y):
        k = torch.exp(logk)
        Y = y.reshape(COPIES, 3)
        fast = k[2] * Y[:, 1] * Y[:, 2]
        da = -k[0] * Y[:, 0] + fast
        return torch.stack([da, -da - k[1] * Y[:, 1] ** 2, k[1] * Y[:, 1] ** 2], -1).reshape(-1)

    start = torch.tensor([1.0, 0.0, 0.0] * COPIES, dtype=F64)
    with pytest.raises(ValueError, match="recompute_steps=True needs func to be an nn.Module"):
        odeint(func, start, T, method="rodas5p", options=dict(recompute_steps=True))
    grads = [torch.autograd.grad(odeint(func, start, T, method="rodas5p", rtol=1e-7, atol=1e-10,
                                        options=dict(recompute_steps=r)).square().sum(), logk)[0]
             for r in (None, False)]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_bad_option():
    with pytest.raises(TypeError, match="recompute_steps must be True, False or None"):
        odeint(Kinetics(), y0(), T, method="rodas5p", options=dict(recompute_steps="yes"))
