"""Framework-free linear algebra for large stiff systems.

:class:`JacobianPattern` says which entries of df/dy may be nonzero and groups the columns
so that a few Jacobian-vector products recover the whole Jacobian (Curtis, Powell & Reid
1974).  :func:`sparse_solve` factorises the Newton matrix once (SuperLU) and reuses the
factors for every solve with the same entries.  The adapters assemble the entries in their
framework and hand them here (SciPy directly, JAX through a callback, torch on the host);
:func:`difference_jacobian` fills them by one forward difference of f per colour, for
callers without autodiff (SciPy); :func:`detect_pattern` finds a pattern once from exact
Jacobian columns where the user has none.
"""

from .differences import difference_increments, difference_jacobian
from .pattern import JacobianPattern, banded_pattern, detect_pattern, detection_block, probe_points
from .sparse_lu import sparse_solve

__all__ = ["JacobianPattern", "banded_pattern", "detect_pattern", "detection_block", "difference_increments",
           "difference_jacobian", "probe_points", "sparse_solve"]
