"""``Reversible``: the McCallum & Foster algebraically reversible scheme as a SciPy solver.

Wraps any one-step catalogue method (implicit or explicit) and steps with the core's
framework-agnostic :func:`stiffcore.reversible.reversible_step`; fixed steps only.
The output between steps (``dense_output``, ``t_eval``) is the base's continuous extension
of its forward step from z, shifted onto y by :func:`stiffcore.reversible.reversible_output`.
At the start it checks the core's growth rates for z = h * eig(J(t0, y0)) and warns
when the spectrum sits where the coupling is unstable.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.integrate._ivp.base import DenseOutput

from stiffcore.catalogue import VARIABLE_ORDER, get_method
from stiffcore.reversible import (
    DEFAULT_COUPLING, EIGEN_CHECK_MAX_N, check_coupling, instability_warning, reversible_output, reversible_step,
)
from stiffcore.spectrum import arnoldi, ritz_values, start_vector

from ._base import PolynomialDense, StepResult, StiffSolver, exact_at_step_end, hermite_coeffs


@dataclass
class PairStep(StepResult):
    """A reversible step's result: the new second state ``z`` and the base's forward step
    from the old z, whose continuous extension gives the output between the step ends."""

    z: np.ndarray | None = None
    forward: StepResult | None = None


class ReversibleDense(DenseOutput):
    """y between t_old and t: :func:`~stiffcore.reversible.reversible_output` on the base's
    dense output ``base`` of its forward step from ``z_old``."""

    def __init__(self, base: DenseOutput, y_old, z_old, coupling, y_new) -> None:
        super().__init__(base.t_old, base.t)
        self.base, self.gap, self.coupling, self.y_new = base, y_old - z_old, coupling, y_new

    def _call_impl(self, t):
        theta = (np.asarray(t) - self.t_old) / (self.t - self.t_old)
        gap = self.gap if np.ndim(t) == 0 else self.gap[:, None]  # a column against a vector of times
        return exact_at_step_end(reversible_output(self.base(t), theta, gap, self.coupling), t, self.t, self.y_new)


class Reversible(StiffSolver):
    """Algebraically reversible wrapper (McCallum & Foster) around a one-step base method.

    Parameters (beyond SciPy's): ``base`` a catalogue id, display name or stiffcore solver
    class (default ``"backward_euler"``); ``coupling`` lambda in (0, 1), default 0.999.
    Needs ``first_step`` (fixed steps).  The second state is available as ``solver.z``.
    """

    supports_adaptive = False

    def __init__(self, fun, t0, y0, t_bound, base="backward_euler", coupling=DEFAULT_COUPLING, **options):
        from . import solver_class

        from .multistep import VariableOrderSolver

        self.coupling = check_coupling(coupling)
        if isinstance(base, str) and base != "Reversible" and (
                base.lower() in VARIABLE_ORDER or not get_method(base).is_one_step):
            raise ValueError(f"the reversible scheme needs a one-step base method, got {base!r}")
        base_cls = base if isinstance(base, type) else solver_class(base)
        if base_cls is Reversible:
            raise ValueError("Reversible cannot wrap itself; choose a one-step catalogue method as base")
        if issubclass(base_cls, VariableOrderSolver) or not get_method(base_cls.method_id).is_one_step:
            raise ValueError(f"the reversible scheme needs a one-step base method, got {base_cls.__name__!r}")
        self.method_id = base_cls.method_id
        options.setdefault("adaptive", False)
        self.base = base_cls(fun, t0, y0, t_bound, **options)
        super().__init__(fun, t0, y0, t_bound, **options)
        self.nfev += self.base.nfev  # the base's own set-up evaluations
        self.z = np.array(self.y, copy=True)
        self._warn_if_unstable()

    def _warn_if_unstable(self) -> None:
        J = self.jacobian(self.t, self.y, self.f)
        if self.n <= EIGEN_CHECK_MAX_N:
            eig = np.linalg.eigvals(J.toarray() if hasattr(J, "toarray") else J)
        else:   # Ritz values from Arnoldi on J v: the extreme eigenvalues, without an n^3 eigensolve
            eig = ritz_values(arnoldi(lambda v: J @ v, start_vector(self.n)))
        z = self.h_fixed * self.direction * eig
        n_steps = max(1, int(np.ceil(abs(self.t_bound - self.t) / self.h_fixed)))
        message = instability_warning(self.method_id, z, self.coupling, n_steps=n_steps)
        if message:
            warnings.warn(f"at t0: {message}", RuntimeWarning, stacklevel=3)

    def _attempt(self, t, y, h, f0):
        base_steps = []

        def base_step(t_from, t_to, v):
            base_steps.append(self.base._attempt(t_from, v, t_to - t_from, None))
            return base_steps[-1].y

        y1, z1 = reversible_step(base_step, t, t + h, y, self.z, self.coupling)
        return PairStep(y1, self.eval_f(t + h, y1), None, z=z1, forward=base_steps[0])

    def _step_impl(self):
        # the base solver counts its own evaluations: report them as this solver's too
        before = (self.base.nfev, self.base.njev, self.base.nlu)
        try:
            return super()._step_impl()
        finally:
            self.nfev += self.base.nfev - before[0]
            self.njev += self.base.njev - before[1]
            self.nlu += self.base.nlu - before[2]

    def _accepted(self, t, y, h, result) -> None:
        self.z_old, self.z = self.z, result.z

    def _dense_output_impl(self):
        h, z_old, forward = self.t - self.t_old, self.z_old, self.last.forward
        # the base's own extension, or cubic Hermite on its forward step (one f call, on demand)
        coeffs = forward.dense if forward.dense is not None else hermite_coeffs(
            h, z_old, forward.y, self.fun(self.t_old, z_old), forward.f)
        return ReversibleDense(PolynomialDense(self.t_old, self.t, z_old, coeffs), self.y_old, z_old, self.coupling,
                               self.y)
