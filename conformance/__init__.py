"""Conformance suite: every backend shows the gradient decay the core predicts.

Three ways to run it: ``stiffcore conformance`` (table, PNG, ``--json``),
``pytest --pyargs stiffcore.conformance`` (``--stiffcore-backend``/``--stiffcore-method``
select), and :func:`run` from Python.  Backends are found through the
``stiffcore.backends`` entry-point group (see docs/backends.md).
"""

from .checks import CheckResult, float64_floor
from .suite import Report, checks_for, default_jobs, run, select_backends

__all__ = ["CheckResult", "Report", "checks_for", "default_jobs", "float64_floor", "run", "select_backends"]
