"""Training recipes for stiff neural ODEs (Kim, Ji, Deng, Ma & Rackauckas 2021, Chaos 31, 093122).

A recipe is data: which problem makes the training data, the network, the scaling, the
optimiser and the stiff method.  The backends (``stiffcore.adapters.diffrax.training``,
``stiffcore.adapters.torchdiffeq.training``) turn it into a training step; nothing here
imports a framework.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..catalogue import get_method
from ..problems import get_problem
from ..report import did_you_mean

ACTIVATIONS = ("gelu", "tanh")


@dataclass(frozen=True)
class Recipe:
    """One stiff neural ODE training set-up.

    The model is du/dt = NN(u) * y_scale / t_scale with NN a multilayer perceptron of
    ``depth`` hidden layers of ``width`` units; the loss is the mean absolute error of the
    outputs divided by y_scale (Kim et al. 2021, Sec. III).  ``scaled=False`` is the
    unscaled baseline: y_scale = 1 and t_scale = 1 in both the model and the loss.
    ``y_scale`` is each species' range max - min over the data, ``t_scale`` the final time.

    ``weight_decay`` is AdamW's decoupled decay per step (Flux's ``ADAMW`` convention, as in
    the paper's code); optax and torch multiply their ``weight_decay`` by the learning rate,
    so the backends pass :attr:`adamw_weight_decay`.  ``gradient_norm`` rescales every
    gradient to that Euclidean norm before AdamW (the paper's POLLU recipe).

    The solve uses catalogue ``method`` with relative tolerance ``rtol`` and absolute
    tolerance ``atol * y_scale`` per species, at most ``max_steps`` steps (a solve that needs
    more fails and makes the loss NaN); its gradient is backpropagation through the
    discrete solve (never a reversed solve, which is unstable for stiff systems).
    """

    name: str
    problem: str
    times: tuple
    width: int
    depth: int
    activation: str = "gelu"
    scaled: bool = True
    learning_rate: float = 5e-3
    weight_decay: float = 1e-6
    gradient_norm: float | None = None
    method: str = "rosenbrock23"
    rtol: float = 1e-3
    atol: float = 1e-6
    max_steps: int = 10_000
    log_time: bool = False
    epochs: int = 1000
    reference: str = "Kim et al. 2021, Stiff neural ordinary differential equations, Chaos 31, 093122"

    def __post_init__(self) -> None:
        get_problem(self.problem)  # raises naming the known problems
        times = np.asarray(self.times, dtype=float)
        if times.ndim != 1 or times.size < 2 or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
            raise ValueError(f"recipe {self.name!r}: times must be at least 2 finite, strictly increasing values")
        object.__setattr__(self, "times", tuple(map(float, times)))  # hashable and comparable, however given
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"recipe {self.name!r}: activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for field_name in ("width", "depth", "epochs", "max_steps"):
            value = getattr(self, field_name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"recipe {self.name!r}: {field_name} must be a positive integer, got {value!r}")
        for field_name in ("learning_rate", "rtol", "atol"):
            value = getattr(self, field_name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"recipe {self.name!r}: {field_name} must be positive and finite, got {value!r}")
        if not (np.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"recipe {self.name!r}: weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.gradient_norm is not None and not (np.isfinite(self.gradient_norm) and self.gradient_norm > 0):
            raise ValueError(f"recipe {self.name!r}: gradient_norm must be positive or None, got {self.gradient_norm!r}")
        method = get_method(self.method)  # raises naming the catalogue's ids
        if not (method.adaptive and method.is_implicit):
            raise ValueError(f"recipe {self.name!r}: method {self.method!r} must be an implicit method with an "
                             "embedded error estimate (a stiff, adaptive solve)")
        object.__setattr__(self, "method", method.id)  # "Rodas5P" -> "rodas5p", torchdiffeq's string

    @property
    def adamw_weight_decay(self) -> float:
        """``weight_decay`` as optax's and torch's AdamW take it (they multiply it by the rate)."""
        return self.weight_decay / self.learning_rate

    def baseline(self) -> "Recipe":
        """The paper's failing baseline: one hidden layer of 50 tanh units, no scaling."""
        return replace(self, name=f"{self.name}_unscaled", width=50, depth=1, activation="tanh", scaled=False,
                       gradient_norm=None)

    def with_method(self, method: str) -> "Recipe":
        return replace(self, method=method)


ROBER = Recipe(
    name="rober", problem="rober", times=tuple(np.logspace(-5, 5, 50)), width=5, depth=6,
    log_time=True, epochs=20000,
)
POLLU = Recipe(
    name="pollu", problem="pollu", times=tuple(np.linspace(0.0, 60.0, 20)), width=10, depth=3,
    gradient_norm=100.0, epochs=5000,
)
RECIPES = {r.name: r for r in (ROBER, POLLU)}


def get_recipe(name: str) -> Recipe:
    """A recipe by name; ``"<name>_unscaled"`` is its :meth:`Recipe.baseline`."""
    if name.endswith("_unscaled") and name[: -len("_unscaled")] in RECIPES:
        return RECIPES[name[: -len("_unscaled")]].baseline()
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}.{did_you_mean(name, RECIPES)} Known recipes: "
                         f"{', '.join(RECIPES)} (and their baselines {', '.join(n + '_unscaled' for n in RECIPES)})")
    return RECIPES[name]
