"""Training data from the true model, and the per-species and time scales (Kim et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..problems import get_problem
from .recipes import Recipe


@dataclass(frozen=True)
class TrainingData:
    """Observations ``y[i]`` of the true model at ``times[i]`` (``y`` is (len(times), n)),
    starting from ``y0`` at ``t0``.  ``y_scale`` and ``t_scale`` scale the model and the loss
    (ones for an unscaled recipe); ``y_range`` is each species' max - min over the data,
    which scores every recipe alike."""

    times: np.ndarray
    y: np.ndarray
    y0: np.ndarray
    t0: float
    y_scale: np.ndarray
    t_scale: float
    y_range: np.ndarray
    species: tuple

    @property
    def first_step(self) -> float:
        """The solves' first step: 1% of the way to the first output after t0."""
        return 1e-2 * float(self.times[self.times > self.t0][0] - self.t0)

    def scaled_errors(self, prediction: np.ndarray) -> np.ndarray:
        """Mean absolute error of each species divided by its range: the recipes' target is
        every entry <= 1e-2.  ``prediction`` has the shape of ``y``."""
        prediction = np.asarray(prediction, dtype=float)
        if prediction.shape != self.y.shape:
            raise ValueError(f"prediction must have shape {self.y.shape} (times, species), got {prediction.shape}")
        return np.mean(np.abs(prediction - self.y), axis=0) / self.y_range


@lru_cache(maxsize=16)
def make_data(recipe: Recipe, rtol: float = 1e-10) -> TrainingData:
    """Solve the recipe's problem at its true rates with SciPy's Radau and the analytic
    Jacobian (absolute tolerance 1e-4 rtol times each species' peak), at the recipe's times.
    Cached per recipe (a second of solving); the arrays are read-only."""
    try:
        from scipy.integrate import solve_ivp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("training data are made with SciPy: pip install 'stiffcore[scipy]'") from exc
    problem = get_problem(recipe.problem)
    times = np.asarray(recipe.times, dtype=float)
    t0 = float(problem.t_span[0])
    if times[0] < t0:
        raise ValueError(f"recipe {recipe.name!r}: first time {times[0]:g} is before the problem's t0 = {t0:g}")
    peak = np.ones_like(problem.y0)
    for _ in range(2):  # the second pass sets atol from the species' peaks found by the first
        sol = solve_ivp(problem.fun(), (t0, times[-1]), problem.y0, method="Radau", t_eval=times, rtol=rtol,
                        atol=1e-4 * rtol * peak, jac=problem.jac_fun())
        if not sol.success:
            raise RuntimeError(f"the true {problem.name} model failed to solve: {sol.message}")
        peak = np.maximum(np.abs(sol.y).max(axis=1), 1e-30)
    y = sol.y.T
    y_range = y.max(axis=0) - y.min(axis=0)
    flat = [s for s, r in zip(problem.species, y_range) if not r > 0]
    if flat:
        raise ValueError(f"recipe {recipe.name!r}: species {', '.join(flat)} do not change over the data, "
                         "so their scale y_max - y_min is 0")
    if recipe.scaled:
        y_scale, t_scale = y_range, float(times[-1] - t0)
    else:
        y_scale, t_scale = np.ones(y.shape[1]), 1.0
    arrays = dict(times=times, y=y, y0=np.array(problem.y0, dtype=float), y_scale=y_scale, y_range=y_range)
    for a in arrays.values():
        a.setflags(write=False)
    return TrainingData(t0=t0, t_scale=t_scale, species=tuple(problem.species), **arrays)
