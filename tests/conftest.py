import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def gri_mech():
    """GRI-Mech 3.0 (Cantera) from examples/gri30_methane.py: (problem, 30 log-spaced output
    times, reference).  The reference is SciPy's Radau at rtol 1e-10 with its dense output:
    against Radau at rtol 1e-13 restarted at every output it differs by 2.5e-5 of the tests'
    weights (rtol 1e-6, atol 1e-10), and it costs 8 s instead of 27 s, once per session."""
    pytest.importorskip("cantera")
    from scipy.integrate import solve_ivp

    spec = importlib.util.spec_from_file_location("gri30_methane", ROOT / "examples" / "gri30_methane.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    problem = example.problem()
    sol = solve_ivp(problem.fun(), problem.t_span, problem.y0, method="Radau", rtol=1e-10, atol=1e-18,
                    jac=problem.jac_fun(), dense_output=True)
    assert sol.success
    return problem, np.logspace(-6, -1, 30), lambda times: sol.sol(np.asarray(times)).T


@pytest.fixture(scope="session")
def medakzo_reference():
    """The medical Akzo Nobel problem (tests/helpers.py, 400 unknowns, banded) and its state at
    t = 20 from SciPy's Radau at rtol 1e-10, checked against the IVP test set's published values."""
    from helpers import medakzo
    from scipy.integrate import solve_ivp

    f, y0, sparsity = medakzo()
    ref = solve_ivp(f, (0, 20), y0, method="Radau", rtol=1e-10, atol=1e-12, jac_sparsity=sparsity)
    assert ref.success
    # the IVP test set's published reference values at t = 20 (0-based components 78, 148, 239)
    np.testing.assert_allclose(ref.y[[78, 148, 239], -1], [0.2339942e-3, 0.3595616e-3, 0.9999997], rtol=1e-6)
    return f, y0, sparsity, ref.y[:, -1]
