"""stiffcore: stiff solvers, exact gradients and gradient-decay diagnostics for the
Python ODE ecosystems (diffrax, torchdiffeq, scipy.integrate).

The core is framework-agnostic and light: importing it loads numpy, mpmath and
pluggy only.  Adapters in :mod:`stiffcore.adapters` import their framework lazily.
"""

from .catalogue import METHODS, Method, UnknownMethodError, get_method, method_ids
from .plugins import Backend, discover_backends, install
from .predictions import GradientPrediction, one_step_gradient, predict_test_equation
from .reversible import (
    DEFAULT_COUPLING, growth_rates, optimal_coupling, predict_reversible, reversible_output, reversible_step,
    reversible_step_back, reversible_step_vjp, unstable_band,
)
from .stability import stability_function

__version__ = "0.1.0"

__all__ = [
    "METHODS", "Method", "UnknownMethodError", "get_method", "method_ids",
    "Backend", "discover_backends", "install",
    "GradientPrediction", "one_step_gradient", "predict_test_equation",
    "DEFAULT_COUPLING", "growth_rates", "optimal_coupling", "predict_reversible",
    "reversible_output", "reversible_step", "reversible_step_back", "reversible_step_vjp", "unstable_band",
    "stability_function",
]
