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


def _gri_at(gas, problem, y):
    """Set ``gas`` to the scaled state y at the problem's temperature."""
    c = np.asarray(y) * problem.extra["c0"]
    gas.TDX = problem.extra["temperature"], float(np.sum(c * gas.molecular_weights)), c / np.sum(c)


def test_cantera_export_reproduces_cantera_kinetics(gri_mech):
    """At y0 the exported right-hand side is Cantera's net production rates; at an evolved
    state every reaction but the falloff ones (their rate constants are frozen at y0, as
    documented) has Cantera's net rate of progress."""
    ct = pytest.importorskip("cantera")
    problem, _, reference = gri_mech
    gas = ct.Solution("gri30.yaml")
    c0, kinetics = problem.extra["c0"], problem.extra["kinetics"]
    _gri_at(gas, problem, problem.y0)
    wdot = gas.net_production_rates
    np.testing.assert_allclose(problem.rhs(0.0, problem.y0, problem.params) * c0, wdot, rtol=0,
                               atol=1e-13 * np.max(np.abs(wdot)))
    y = reference([2e-3])[0]
    _gri_at(gas, problem, y)
    falloff = np.array([r.reaction_type.startswith("falloff") for r in gas.reactions()])
    ours, theirs = kinetics.rates_of_progress(y, problem.params) * c0, gas.net_rates_of_progress
    np.testing.assert_allclose(ours[~falloff], theirs[~falloff], rtol=0, atol=1e-12 * np.max(np.abs(theirs)))
    assert np.max(np.abs(ours - theirs)[falloff]) > 1e-4 * np.max(np.abs(theirs))  # frozen: the test sees it


def test_cantera_export_jacobians_and_frameworks(gri_mech):
    problem, _, reference = gri_mech
    y, p = reference([2e-3])[0], problem.params
    J = np.array([np.imag(problem.rhs(0.0, y + 1e-30j * e, p)) / 1e-30 for e in np.eye(y.size)]).T
    Jp = np.array([np.imag(problem.rhs(0.0, y, p + 1e-30j * e)) / 1e-30 for e in np.eye(p.size)]).T
    np.testing.assert_allclose(problem.jac(0.0, y, p), J, rtol=1e-12, atol=1e-12 * np.max(np.abs(J)))
    np.testing.assert_allclose(problem.jac_p(0.0, y, p), Jp, rtol=1e-12, atol=1e-12 * np.max(np.abs(Jp)))
    batch = np.stack([y, problem.y0])
    expected = np.array([problem.rhs(0.0, row, p) for row in batch])
    torch = pytest.importorskip("torch")
    out = problem.rhs(0.0, torch.tensor(batch), torch.tensor(p))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12 * np.max(np.abs(expected)))
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    out = jax.jit(problem.rhs)(0.0, jax.numpy.asarray(batch), jax.numpy.asarray(p))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-12, atol=1e-12 * np.max(np.abs(expected)))


def test_cantera_mechanisms_that_are_not_mass_action_are_refused():
    ct = pytest.importorskip("cantera")
    from stiffcore.problems.cantera import from_cantera

    gri = ct.Solution("gri30.yaml")
    species = [gri.species(n) for n in ("H2", "O2", "H2O", "N2")]

    def gas(equation, orders=None):
        reactions = [ct.Reaction(equation=equation, rate=ct.ArrheniusRate(1e10, 0, 0))] if equation else []
        if orders:
            reactions[0].orders = orders
        g = ct.Solution(thermo="ideal-gas", kinetics="gas", species=species, reactions=reactions)
        g.TPX = 1000.0, ct.one_atm, "H2:2, O2:1, N2:4"
        return g

    with pytest.raises(ValueError, match=r"non-stoichiometric orders \{'H2': 1.5\}"):
        from_cantera(gas("2 H2 + O2 => 2 H2O", {"H2": 1.5}), (0, 1))
    with pytest.raises(ValueError, match="non-integer coefficient 0.5 of O2"):
        from_cantera(gas("H2 + 0.5 O2 => H2O"), (0, 1))
    with pytest.raises(ValueError, match="no reactions"):
        from_cantera(gas(None), (0, 1))
    ok = from_cantera(gas("2 H2 + O2 => 2 H2O"), (0, 1))   # irreversible, third order: one term
    y = ok.y0
    np.testing.assert_allclose(ok.rhs(0.0, y, ok.params), ok.params[0] * y[0] ** 2 * y[1] * np.array([-2, -1, 2, 0]),
                               rtol=1e-14)
