"""The :class:`Method` record: a catalogue entry's identity, claims and coefficients."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Union

import numpy as np

from .tableau import ButcherTableau, MultistepCoefficients, RosenbrockTableau

Coefficients = Union[ButcherTableau, RosenbrockTableau, MultistepCoefficients]

FAMILIES = ("explicit", "diagonally_implicit", "fully_implicit", "rosenbrock", "multistep")


@dataclass(frozen=True)
class Method:
    """One numerical method, as data.

    ``id`` is the snake_case key (also the torchdiffeq method string); ``name`` is
    the display name (the SciPy method string and the diffrax class name).
    ``order`` and ``embedded_order`` are the published claims, which the test
    suite verifies against the coefficients.  Everything else (family, stage
    count, stiff accuracy, stability) is derived from the coefficients.
    """

    id: str
    name: str
    order: int
    coefficients: Coefficients
    reference: str
    embedded_order: int | None = None
    #: why the published embedded estimate cannot choose the steps (then the method takes fixed steps)
    estimate_defect: str | None = None

    def __post_init__(self) -> None:
        if self.embedded_order is not None and not self.has_error_estimate:
            raise ValueError(f"{self.id}: embedded_order given but the coefficients have no embedded weights")
        if self.embedded_order is None and self.has_error_estimate:
            raise ValueError(f"{self.id}: embedded weights given without embedded_order")

    @property
    def family(self) -> str:
        coef = self.coefficients
        if isinstance(coef, MultistepCoefficients):
            return "multistep"
        if isinstance(coef, RosenbrockTableau):
            return "rosenbrock"
        if coef.is_explicit:
            return "explicit"
        return "diagonally_implicit" if coef.is_diagonally_implicit else "fully_implicit"

    @property
    def is_one_step(self) -> bool:
        return self.family != "multistep"

    @property
    def is_implicit(self) -> bool:
        """Needs a linear or nonlinear solve per step (implicit RK, Rosenbrock, BDF)."""
        return self.family != "explicit"

    @property
    def stages(self) -> int:
        coef = self.coefficients
        return coef.steps if isinstance(coef, MultistepCoefficients) else coef.stages

    @property
    def has_error_estimate(self) -> bool:
        return getattr(self.coefficients, "b_embedded", None) is not None

    @property
    def adaptive(self) -> bool:
        """Has an embedded estimate that can control the step size."""
        return self.has_error_estimate and self.estimate_defect is None

    @property
    def fixed_steps_reason(self) -> str:
        """Why the method takes fixed steps only ('' when it is adaptive)."""
        if self.adaptive:
            return ""
        return self.estimate_defect or "it has no embedded error estimate"

    def steps_summary(self, fixed_hint: str) -> str:
        """One docstring phrase for every adapter: how the method steps, e.g. ``first_step=h``."""
        if self.adaptive:
            return f"adaptive with its embedded estimate of order {self.embedded_order}"
        return f"fixed steps only ({fixed_hint}): {self.fixed_steps_reason}"

    @property
    def error_order(self) -> int:
        """q in err ~ h^(q+1) for step-size control: the lower of the two orders of the pair."""
        return min(self.order, self.embedded_order) if self.embedded_order is not None else self.order

    @property
    def has_dense_output(self) -> bool:
        coef = self.coefficients
        return getattr(coef, "dense", None) is not None or getattr(coef, "dense_transformed", None) is not None

    @property
    def stiffly_accurate(self) -> bool:
        """The solution equals the last stage (for Rosenbrock: b is the last row of alpha + gamma)."""
        coef = self.coefficients
        if isinstance(coef, ButcherTableau):
            return coef.is_stiffly_accurate
        if isinstance(coef, RosenbrockTableau):
            return bool(np.allclose(coef.stability_matrix[-1], coef.b, rtol=0, atol=1e-12))
        return True  # BDF: y_{n+1} solves the implicit equation itself

    @cached_property
    def stability(self):
        """The method's linear stability object (see :mod:`stiffcore.stability`)."""
        from ..stability import stability_of

        return stability_of(self)

    def __repr__(self) -> str:
        return f"Method({self.id!r}, {self.name!r}, order={self.order}, family={self.family!r})"
