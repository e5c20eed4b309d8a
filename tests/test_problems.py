"""The stiff problem set: one right-hand side for numpy, torch and jax."""

import json
from importlib import resources

import numpy as np
import pytest

from stiffcore.problems import POLLU, PROBLEMS, ROBER, VANDERPOL, get_problem, test_equation


def _pollu_from_strings(y, k):
    """POLLU evaluated straight from the data file's expressions (independent of the parser)."""
    data = json.loads(resources.files("stiffcore.problems").joinpath("pollu.json").read_text())
    env = {f"y{i + 1}": v for i, v in enumerate(y)} | {f"k{j + 1}": v for j, v in enumerate(k)}
    for expr in data["rates"]:
        name, rhs = expr.split("=")
        env[name] = eval(rhs, {}, env)  # noqa: S307 - our own data file
    return np.array([eval(expr.split("=")[1], {}, env) for expr in data["rhs"]])  # noqa: S307


def test_pollu_network_matches_the_published_expressions():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.uniform(0, 1, 20)
        np.testing.assert_allclose(POLLU.rhs(0.0, y, POLLU.params), _pollu_from_strings(y, POLLU.params), rtol=1e-13)


def test_rober_right_hand_side():
    y, k = np.array([0.9, 2e-5, 0.1]), ROBER.params
    expected = [-k[0] * y[0] + k[2] * y[1] * y[2], k[0] * y[0] - k[1] * y[1] ** 2 - k[2] * y[1] * y[2], k[1] * y[1] ** 2]
    np.testing.assert_allclose(ROBER.rhs(0.0, y, k), expected, rtol=1e-14)


@pytest.mark.parametrize("problem", [ROBER, POLLU, VANDERPOL], ids=lambda p: p.name)
def test_jacobians_match_complex_step(problem):
    rng = np.random.default_rng(1)
    y = rng.uniform(0.1, 1, problem.y0.size)
    p = problem.params
    J = np.array([np.imag(problem.rhs(0.0, y + 1e-30j * e, p)) / 1e-30 for e in np.eye(y.size)]).T
    Jp = np.array([np.imag(problem.rhs(0.0, y, p + 1e-30j * e)) / 1e-30 for e in np.eye(p.size)]).T
    np.testing.assert_allclose(problem.jac(0.0, y, p), J, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(problem.jac_p(0.0, y, p), Jp, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("problem", [ROBER, POLLU, VANDERPOL], ids=lambda p: p.name)
def test_same_rhs_for_torch_and_jax_with_a_batch_dimension(problem):
    rng = np.random.default_rng(2)
    y = rng.uniform(0.1, 1, (4, problem.y0.size))
    expected = np.array([problem.rhs(0.0, row, problem.params) for row in y])
    torch = pytest.importorskip("torch")
    out = problem.rhs(0.0, torch.tensor(y), torch.tensor(problem.params))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-13)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    out = problem.rhs(0.0, jnp.asarray(y), jnp.asarray(problem.params))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-13)


def test_references_and_parameters():
    assert ROBER.reference[0] == 1e5 and POLLU.reference[0] == 60
    assert POLLU.params.size == 25 and POLLU.param_names[0] == "k1" and len(POLLU.species) == 20
    lin = test_equation(-2.0, 3.0, 0.5)
    assert lin.reference[1][0] == pytest.approx(3.0 * np.exp(-1.0))
    assert set(PROBLEMS) == {"rober", "pollu", "vanderpol"}


def test_bad_parameters_and_names():
    with pytest.raises(ValueError, match="rober has 3 parameters \\(k1, k2, k3\\), got shape \\(2,\\)"):
        ROBER.fun([1.0, 2.0])
    with pytest.raises(ValueError, match="Did you mean 'rober'"):
        get_problem("robber")


def test_log_parameterisation_chains_the_rule():
    log_rober = ROBER.log_parameterised()
    y = np.array([0.9, 2e-5, 0.1])
    np.testing.assert_allclose(log_rober.params, np.log(ROBER.params))
    np.testing.assert_allclose(log_rober.rhs(0.0, y, log_rober.params), ROBER.rhs(0.0, y, ROBER.params), rtol=1e-14)
    np.testing.assert_allclose(log_rober.jac_p(0.0, y, log_rober.params),
                               ROBER.jac_p(0.0, y, ROBER.params) * ROBER.params, rtol=1e-13)
    with pytest.raises(ValueError, match="positive parameters"):
        test_equation(-1.0).log_parameterised()
