"""The training recipes (:mod:`stiffcore.training`) on torch: a ``torch.nn.Sequential``
perceptron inside a scaled vector field, solved by ``torchdiffeq.odeint`` with a stiffcore
method string, trained with ``torch.optim.AdamW``.

The gradient is backpropagation through the discrete stiff solve (``odeint``, not
``odeint_adjoint``): a reversed solve of a stiff system is unstable (Kim et al. 2021).
Runs in float64 on ``device`` (any torch device).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchdiffeq import odeint  # this package's import has put the catalogue's method strings in its table

from stiffcore.catalogue import get_method
from stiffcore.training.checkpoint import Moments

from ._compiled import CompileStepUnavailable


class ScaledVectorField(torch.nn.Module):
    """du/dt = NN(u) * y_scale / t_scale (Kim et al. 2021, Eq. 10); the scales are buffers,
    never trained or decayed."""

    def __init__(self, network: torch.nn.Module, y_scale: torch.Tensor, t_scale: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("y_scale", y_scale)
        self.t_scale = t_scale

    def forward(self, t, u):
        return self.network(u) * self.y_scale / self.t_scale


def network(recipe, weights, dtype=torch.float64, device=None) -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` holding ``weights`` ([(W, b), ...], W of shape (out, in))."""
    layers = []
    for i, (W, b) in enumerate(weights):
        linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype, device=device)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(W, dtype=dtype))
            linear.bias.copy_(torch.as_tensor(b, dtype=dtype))
        layers.append(linear)
        if i < len(weights) - 1:  # GELU as the tanh approximation, as in NNlib and jax.nn.gelu
            layers.append(torch.nn.GELU(approximate="tanh") if recipe.activation == "gelu" else torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


class Trainer:
    """One recipe's training state on torch; see :func:`stiffcore.training.train`."""

    def __init__(self, recipe, data, weights, moments: Moments | None = None, device=None) -> None:
        as_tensor = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, device=device)  # noqa: E731 (copies)
        self.recipe = recipe
        self.y_scale, self.y_range = as_tensor(data.y_scale), as_tensor(data.y_range)
        self.field = ScaledVectorField(network(recipe, weights, device=device), self.y_scale, float(data.t_scale))
        self.observed, self.y0 = as_tensor(data.y), as_tensor(data.y0)
        # odeint needs increasing times that start at t0; drop the t0 output again if it is not data
        self.from_t0 = bool(data.times[0] > data.t0)
        self.times = as_tensor(np.concatenate([[data.t0], data.times]) if self.from_t0 else data.times)
        self.options = dict(autonomous=True, max_num_steps=recipe.max_steps, first_step=data.first_step)
        if get_method(recipe.method).family == "rosenbrock":
            # thousands of epochs solve one shape: the compile (tens of seconds, once) pays for itself
            self.options["compile_step"] = True
        self.optimiser = torch.optim.AdamW(self.field.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.999),
                                           eps=1e-8, weight_decay=recipe.adamw_weight_decay)
        if moments is not None:
            flat = lambda pairs: [a for pair in pairs for a in pair]  # noqa: E731
            for p, m1, m2 in zip(self.field.parameters(), flat(moments.first), flat(moments.second)):
                self.optimiser.state[p] = {"step": torch.tensor(float(moments.step)), "exp_avg": as_tensor(m1),
                                           "exp_avg_sq": as_tensor(m2)}

    def _solve(self) -> torch.Tensor | None:
        """The outputs, or None when the solve fails (too many steps, NaN or inf on the way):
        reported as a NaN loss, as JAX reports it, never as a number."""
        try:
            ys = odeint(self.field, self.y0, self.times, method=self.recipe.method, rtol=self.recipe.rtol,
                        atol=self.recipe.atol * self.y_scale, options=self.options)
        except CompileStepUnavailable as exc:   # the trainer chose compile_step itself: train eagerly
            warnings.warn(f"training with eager torch steps: {exc}", RuntimeWarning, stacklevel=2)
            self.options.pop("compile_step")
            return self._solve()
        except (RuntimeError, FloatingPointError):
            return None
        return ys[1:] if self.from_t0 else ys

    def step(self):
        parameters = list(self.field.parameters())
        ys = self._solve()
        if ys is None:
            return float("nan"), float("nan"), np.full(self.observed.shape[1], np.nan)
        loss = torch.mean(torch.abs(ys - self.observed) / self.y_scale)
        self.optimiser.zero_grad()
        loss.backward()
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters]))
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            return float(loss.detach()), float(grad_norm), np.full(self.observed.shape[1], np.nan)
        if self.recipe.gradient_norm is not None:
            scale = self.recipe.gradient_norm / grad_norm.clamp_min(torch.finfo(grad_norm.dtype).tiny)
            with torch.no_grad():
                for p in parameters:
                    p.grad.mul_(scale)
        self.optimiser.step()
        errors = (torch.mean(torch.abs(ys.detach() - self.observed), dim=0) / self.y_range).cpu().numpy()
        return float(loss.detach()), float(grad_norm), errors

    def predict(self) -> np.ndarray:
        with torch.no_grad():
            ys = self._solve()
        return np.full(tuple(self.observed.shape), np.nan) if ys is None else ys.cpu().numpy()

    def weights(self) -> list:
        return self._pairs(lambda p: p)

    def moments(self) -> Moments:
        parameters = list(self.field.parameters())
        state = self.optimiser.state.get(parameters[0])
        if not state:  # no step taken yet
            zeros = self._pairs(torch.zeros_like)
            return Moments(step=0, first=zeros, second=zeros)
        return Moments(step=int(state["step"]), first=self._pairs(lambda p: self.optimiser.state[p]["exp_avg"]),
                       second=self._pairs(lambda p: self.optimiser.state[p]["exp_avg_sq"]))

    def _pairs(self, of) -> list:
        """[(W, b), ...] of ``of(parameter)`` in numpy; parameters run W0, b0, W1, b1, ..."""
        arrays = [of(p).detach().cpu().numpy().copy() for p in self.field.parameters()]
        return list(zip(arrays[0::2], arrays[1::2]))
