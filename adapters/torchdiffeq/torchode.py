"""The same methods for torchode (``torchode.solve_ivp(..., method="rodas5p")``).

torchode steps every batch element with its own time and step (``t0``, ``dt`` of shape
(B,)), states are (B, F) and batch elements are independent, so the torch steppers run
with h of shape (B, 1) and one F x F Jacobian per element.  :func:`register` adds the
methods with ``torchode.register_method`` when torchode is installed and does nothing
otherwise.  Newton's weighted norm uses the method's own ``rtol``/``atol`` (torchode
keeps tolerances in the step-size controller): construct ``StiffMethod(term, "rodas5p",
rtol=..., atol=...)`` to match yours.  Interpolation between steps is linear.  A failed
Newton iteration rejects the step of every batch element (they are solved together).
"""

from __future__ import annotations

import importlib.util

import torch

from stiffcore.catalogue import get_method

from ._field import VectorField
from ._steps import Point, StepFailure, stepper


class StiffMethod(torch.nn.Module):
    """A catalogue method as a torchode ``SingleStepMethod``."""

    def __init__(self, term, method_id: str, rtol: float = 1e-7, atol: float = 1e-9, newton_tol: float | None = None):
        super().__init__()
        self.term, self.method = term, get_method(method_id)
        if not self.method.is_one_step or self.method.family == "explicit":
            raise ValueError(f"{self.method.id!r}: torchode gets the implicit one-step methods only")
        if not self.method.adaptive:
            raise ValueError(f"{self.method.id!r} cannot choose its steps ({self.method.fixed_steps_reason}), "
                             "which torchode's controllers need")
        self.rtol, self.atol = float(rtol), float(atol)
        self.newton_tol = newton_tol if newton_tol is not None else max(1e-12, min(0.03, self.rtol ** 0.5))
        self._field = None
        self._context = ({}, None)

    def convergence_order(self) -> int:
        return self.method.error_order + 1

    def _stepper(self, term, y0: torch.Tensor):
        if self._field is None or self._field.shape != y0.shape:
            def func(t, y):
                stats, args = self._context
                return term.vf(t.reshape(-1).expand(y.shape[0]), y, stats, args)
            self._field = VectorField(func, y0, batch_dims=1)
            eps = torch.finfo(y0.dtype).eps
            self._step = stepper(self.method, self._field, self.newton_tol,
                                 lambda y: self.atol + self.rtol * y.abs(), 4 * eps / max(self.rtol, eps), False)
        return self._step

    def init(self, term, problem, f0, *, stats, args):
        return None

    def merge_states(self, accept, current, previous):
        return current

    def step(self, term, running, y0, t0, dt, state, *, stats, args):
        from torchode.single_step_methods.base import StepResult

        term = term if term is not None else self.term
        self._context = (stats, args)
        steps = self._stepper(term, y0)
        # finished instances come with dt = 0: step them by 1 and keep y0 (no 1/h blow-up)
        idle = ((dt == 0) | ~running)[:, None]
        t = t0.to(y0.dtype)[:, None]
        h = torch.where(idle, torch.ones_like(t), dt.to(y0.dtype)[:, None])
        try:
            result = steps.step(Point(self._field, t, y0), h)
            y1 = torch.where(idle, y0, result.y)
            error = torch.where(idle, torch.zeros_like(y0), result.error)
        except StepFailure:
            # a huge (finite: torchode stops on inf) error makes the controller reject and
            # shrink; Newton runs on the whole batch, so every instance retries
            y1, error = y0, 1e6 * (y0.abs() + 1)
        return StepResult(y1, error), (t0, dt, y0, y1), state, None

    def build_interpolation(self, data):
        from torchode.interpolation import LinearInterpolation

        return LinearInterpolation(*data)


def register() -> list:
    """Register the adaptive implicit methods with torchode, if it is installed."""
    if importlib.util.find_spec("torchode") is None:
        return []
    import torchode

    from stiffcore.catalogue import method_ids

    added = []
    for method_id in method_ids(one_step=True, implicit=True):
        if get_method(method_id).adaptive:
            torchode.register_method(method_id, lambda term, _id=method_id: StiffMethod(term, _id))
            added.append(method_id)
    return added
