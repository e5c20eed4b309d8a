"""Gradient diagnostics: stiffness, per-parameter attenuation and advice."""

import dataclasses

import numpy as np
import pytest

from helpers import h2o2_mechanism

from stiffcore import get_method
from stiffcore.diagnostics import STIFF_TAIL, diagnose
from stiffcore.reversible import predict_reversible


def diagonal_case(rates=(-1.0, -1e4), steps=5, h=0.1):
    h = np.full(steps, h)
    t = np.concatenate([[0.0], np.cumsum(h)[:-1]])
    J = np.tile(np.diag(rates), (steps, 1, 1))
    Fp = np.tile(np.eye(len(rates)), (steps, 1, 1))  # parameter j feeds mode j only
    return t, h, J, Fp


def zero_of_R_prime(method="radau_iia5", bracket=(-6.0, -4.0)):
    """The z < 0 where R'(z) vanishes (RadauIIA5: -4.80): a step there carries no gradient to the rate."""
    from scipy.optimize import brentq

    stab = get_method(method).stability
    return brentq(lambda x: float(np.real(stab.derivative(complex(x)))), *bracket, xtol=1e-14)


def sensitivity_ratio(method, z, steps):
    """The label's quantity for one mode fed with unit df/dp, by scalar recurrences:
    ||(S_1..S_N)|| through R, R' over the same through e^z, S_{k+1} = R S_k + h R'."""
    stab = get_method(method).stability
    sizes = []
    for r, dr in ((stab(z), stab.derivative(z)), (np.exp(z), np.exp(z))):
        s, total = 0.0, 0.0
        for _ in range(steps):
            s = r * s + dr
            total += abs(s) ** 2
        sizes.append(np.sqrt(total))
    return sizes[0] / sizes[1]


@pytest.mark.parametrize("method", ["radau_iia5", "backward_euler", "lobatto_iiic2", "rodas5p"])
def test_attenuation_compares_the_method_with_the_exact_flow(method):
    """One mode per parameter: the ratio of the linearised sensitivities through R, R' and e^z.
    The resolved mode loses nothing; the mode at z = -1000 is deep in the stiff tail, where
    R'(z) (a power of z) exceeds e^z by hundreds of decades: it is not starved (the old label,
    |R'(z)| alone, called it starved)."""
    t, h, J, Fp = diagonal_case(rates=(-1.0, -1e4))
    d = diagnose(method, t, h, jacobians=J, param_jacobians=Fp, param_names=["slow", "fast"])
    slow, fast = d.parameters
    assert slow.log10_attenuation == pytest.approx(np.log10(sensitivity_ratio(method, -0.1, 5)), abs=1e-12)
    assert abs(slow.log10_attenuation) < 0.05 and fast.log10_attenuation > 100
    assert fast.fastest_mode == pytest.approx(1e4) and not d.starved


def test_a_mode_where_R_prime_vanishes_is_starved():
    """RadauIIA5's R'(z) vanishes at z = -4.80: a parameter fed only there is starved."""
    z0 = zero_of_R_prime()
    t, h, J, Fp = diagonal_case(rates=(-1.0, z0 / 0.1))
    d = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, param_names=["k1", "k2"])
    assert d.parameters[1].log10_attenuation == pytest.approx(np.log10(sensitivity_ratio("radau_iia5", z0, 5)),
                                                              abs=1e-6)
    assert [p.name for p in d.starved] == ["k2"] and d.parameters[1].log10_attenuation < -6


def test_starved_labels_agree_with_measured_gradients():
    """The label's promise on a real solve: SciPy RadauIIA5 held at steps h = 0.1 on
    y' = -k y with k1 h at R'(z)'s zero.  k1, labelled starved, has a measured gradient
    (through the adapter's discrete adjoint) orders below the exact flow's; k2, not labelled,
    has the exact flow's gradient to the discretisation error."""
    from stiffcore.adapters.scipy import diagnose as scipy_diagnose
    from stiffcore.adapters.scipy import solve_ivp_sensitivity

    h, steps = 0.1, 4
    k = np.array([zero_of_R_prime() / -h, 0.5])
    times = h * np.arange(1, steps + 1)
    f = lambda t, y, p: -p * y  # noqa: E731
    fixed = dict(method="RadauIIA5", jac=lambda t, y, p: np.diag(-p), jac_p=lambda t, y, p: np.diag(-y),
                 first_step=h, max_step=h, rtol=1e3, atol=1e3)  # tolerances that accept every step of size h
    d = scipy_diagnose(f, (0, steps * h), [1.0, 1.0], k, param_names=["k1", "k2"], output_times=times,
                       loss_grad=lambda Y: 2 * Y, **fixed)
    np.testing.assert_allclose(d.h, h)
    measured = solve_ivp_sensitivity(f, (0, steps * h), [1.0, 1.0], k, t_eval=times, mode="reverse",
                                     loss=lambda Y: (Y**2).sum(), loss_grad=lambda Y: 2 * Y, **fixed).grad
    exact = np.array([np.sum(-2 * times * np.exp(-2 * rate * times)) for rate in k])  # d/dk of sum y(t)^2
    assert [p.name for p in d.starved] == ["k1"]
    assert abs(measured[0] / exact[0]) < 1e-3
    assert measured[1] / exact[1] == pytest.approx(1.0, rel=1e-6)


def test_reversible_uses_the_reversible_one_step_derivative():
    """A reversible solve's labels use the reversible scheme's one step (from (1, 1)) and its
    derivative in place of R, R'."""
    t, h, J, Fp = diagonal_case(rates=(-1.0, -10.0))
    d = diagnose("backward_euler", t, h, jacobians=J, param_jacobians=Fp, coupling=0.999)
    sizes = []
    for r, dr in (predict_reversible("backward_euler", -1.0, h=1.0, n_steps=1, coupling=0.999), (np.exp(-1),) * 2):
        s, total = 0.0, 0.0
        for _ in range(5):  # S_{k+1} = R S_k + h R' (h cancels in the ratio)
            s = r * s + dr
            total += abs(s) ** 2
        sizes.append(np.sqrt(total))
    assert d.parameters[1].log10_attenuation == pytest.approx(np.log10(sizes[0] / sizes[1]), abs=1e-12)
    assert any(a.startswith("reversible: coupling") for a in d.advice)


def test_stiffness_measures():
    t, h, J, _ = diagonal_case(rates=(-2.0, -1e3, -5e5))
    d = diagnose("radau_iia5", t, h, jacobians=J)
    np.testing.assert_allclose(d.spread, 5e5 / 2.0)
    assert d.stiffness_index == pytest.approx(5e5 * 0.5)
    assert d.stiff_tail_fraction == 1.0
    counts, edges = d.z_histogram()
    assert counts.sum() == 15
    eig_only = diagnose("radau_iia5", t, h, eigenvalues=np.tile([-2.0, -1e-3], (5, 1)))
    assert eig_only.stiff_tail_fraction == 0.0 and STIFF_TAIL == 10.0


def test_advice_carries_numbers():
    t, h, J, Fp = diagonal_case(rates=(-1.0, zero_of_R_prime() / 0.1))
    states = np.column_stack([np.linspace(1, 0.5, 5), np.linspace(0, 2e-5, 5)])
    d = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, param_names=["k1", "k2"],
                 params=[0.04, 3e7], states=states)
    text = "\n".join(d.advice)
    assert "k1 x0.04" in text and "k2 x3e+07" in text and "8.9 decades" in text
    assert "y_max - y_min = [0.5, 2e-05]" in text and "t1 - t0 = 0.5" in text
    assert "k2 is starved" in text and "|Re mu| ~ 48" in text and "steps shorter than 0.0104" in text
    assert "STARVED" in d.table()
    told = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, params=[0.04, 3e7], log_params=True,
                    states=np.column_stack([np.ones(5), np.linspace(0, 2e-5, 5)]))
    text = "\n".join(told.advice)  # p is already log k: no log-p advice; an inert species has nothing to scale
    assert "log-parameterise" not in text and "y_max - y_min = [-, 2e-05]" in text and "1 species constant" in text


def test_the_resolved_step_keeps_every_method_near_the_exact_flow():
    """The advice's step (|h mu| <= RESOLVED) holds R'(z) within 0.6x..1.7x of e^z for every method."""
    from stiffcore.catalogue import method_ids
    from stiffcore.diagnostics import RESOLVED

    z = -np.linspace(0, RESOLVED, 51).astype(complex)
    for method in method_ids(one_step=True):
        ratio = np.abs(get_method(method).stability.derivative(z)) / np.exp(np.real(z))
        assert 0.6 < ratio.min() and ratio.max() < 1.7, method


def test_plot(tmp_path):
    t, h, J, Fp = diagonal_case()
    d = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp)
    path = d.plot(str(tmp_path / "d.png"), measured={"p0": -0.1, "p1": -5.0})
    assert open(path, "rb").read(4) == b"\x89PNG"


def test_plot_of_a_mechanism_names_only_the_extremes(tmp_path, monkeypatch):
    """318 parameters (GRI-Mech's count): no 318 unreadable tick labels, but a curve sorted by
    predicted |dL/dp| with the six largest and six smallest named."""
    from stiffcore.diagnostics import NAMED
    from stiffcore.plotting import pyplot

    plt = pyplot()
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    P, N = 318, 3
    t, h = np.arange(N) * 0.1, np.full(N, 0.1)
    rng = np.random.default_rng(0)
    Fp = rng.normal(size=(N, 3, P)) * np.logspace(-10, 0, P)
    cot = np.zeros((N + 1, 3))
    cot[-1] = 1.0
    d = diagnose("radau_iia5", t, h, jacobians=np.tile(np.diag([-1.0, -10.0, -1e3]), (N, 1, 1)),
                 param_jacobians=Fp, param_names=[f"R{j}" for j in range(P)], output_cotangents=cot)
    d.plot(str(tmp_path / "m.png"), measured={f"R{j}": 0.0 for j in range(P)})
    ax = figures[0].axes[1]
    named = [text.get_text() for text in ax.texts]
    order = np.argsort([-abs(p.predicted_gradient) for p in d.parameters])
    assert named == [f"R{j}" for j in [*order[:NAMED], *order[-NAMED:]]]
    assert len(ax.get_xticklabels()) < 20 and "rank of 318 parameters" in ax.get_xlabel()
    close(figures[0])


def test_plot_has_a_title_a_legend_hides_structural_zeros_and_a_time_axis_set_by_the_span(tmp_path, monkeypatch):
    """The figure had no title or legend, plotted ROBER's conserved mode as round-off at 1e-16,
    and took its time axis from the step sizes (so backends' figures did not line up)."""
    from stiffcore.plotting import pyplot

    plt = pyplot()
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))  # keep them to look at
    for h in (np.full(5, 0.1), np.geomspace(1e-6, 0.25, 5)):  # two solvers' steps over one span
        h = h * 0.5 / h.sum()
        t = np.concatenate([[0.0], np.cumsum(h)[:-1]])
        d = diagnose("radau_iia5", t, h, eigenvalues=np.tile([-2.0, -1e3, -3e-17], (5, 1)))
        d.plot(str(tmp_path / "d.png"), title="toy: radau_iia5 on numpy")
    first, second = (fig.axes[0] for fig in figures)
    assert figures[0]._suptitle.get_text() == "toy: radau_iia5 on numpy"
    assert first.get_xlim() == second.get_xlim() == (0.0, pytest.approx(0.5))
    labels = [text.get_text() for text in first.get_legend().get_texts()]
    assert any("1 structural zero eigenvalue(s) per step not shown" in label for label in labels)
    plotted = np.concatenate([line.get_ydata() for line in first.get_lines() if line.get_linestyle() == "None"])
    assert plotted.size == 10 and plotted.min() == pytest.approx(2.0)  # the 3e-17 mode is left out
    assert not any("growing" in label for label in labels)
    # Van der Pol's slow mode grows on part of its cycle: not a conservation law, and said so
    growing = diagnose("radau_iia5", t, h, eigenvalues=np.tile([-1e3, 0.5], (5, 1)))
    growing.plot(str(tmp_path / "g.png"))
    labels = [text.get_text() for text in figures[-1].axes[0].get_legend().get_texts()]
    assert "5 growing mode(s) (Re mu > 0, over all steps) not shown" in labels
    assert not any("structural zero" in label for label in labels)
    for fig in figures:
        close(fig)


@pytest.mark.parametrize("change, match", [
    (dict(jacobians="nan"), "jacobians has NaN or inf at step 2"),
    (dict(h="short"), "t has 5 steps but h has 4"),
    (dict(jacobians="few"), "jacobians must have shape \\(5, n, n\\)"),
    (dict(params=[1.0, 2.0, 3.0]), "params has 3 values but df/dp has 2 columns"),
    (dict(param_names=["a"]), "1 parameter names for 2 parameters"),
    (dict(method="radau5"), "Did you mean 'radau_iia5'"),
    (dict(method="bdf2"), "one-step method"),
    (dict(coupling=1.5), "coupling"),
])
def test_bad_input_names_what_to_fix(change, match):
    t, h, J, Fp = diagonal_case()
    kwargs = dict(method="radau_iia5", t=t, h=h, jacobians=J, param_jacobians=Fp)
    if change.get("jacobians") == "nan":
        J = J.copy()
        J[2, 0, 0] = np.nan
        change = dict(jacobians=J)
    elif change.get("jacobians") == "few":
        change = dict(jacobians=J[:3])
    elif change.get("h") == "short":
        change = dict(h=h[:4])
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        diagnose(**kwargs)


@pytest.mark.parametrize("name", ["rober", "pollu", "h2o2"])
def test_no_false_starved_labels_on_real_problems(name):
    """ROBER, POLLU and a Cantera mechanism at rtol 1e-6: most rates feed modes deep in the
    stiff tail (the old label, |R'(h mu)| alone, called them starved: on h2o2, H2 + OH <=> H +
    H2O with the largest gradient of all), yet every measured gradient equals the exact flow's
    (a reference at rtol 1e-10) to a few percent.  So no label may say starved, and none does."""
    from stiffcore.adapters.scipy.sensitivity import diagnose_problem, solve_ivp_sensitivity
    from stiffcore.problems import POLLU, ROBER

    problem, times = {"rober": lambda: _short(ROBER, 1e3, 12), "pollu": lambda: _short(POLLU, 5.0, 10),
                      "h2o2": lambda: (h2o2_mechanism(), np.logspace(-8, -2, 12))}[name]()
    report, measured = diagnose_problem(problem, "RadauIIA5", 1e-6, times)
    reference = solve_ivp_sensitivity(problem.rhs, problem.t_span, problem.y0, problem.params, t_eval=times,
                                      mode="reverse", loss=lambda Y: (Y**2).sum(), loss_grad=lambda Y: 2 * Y,
                                      jac=problem.jac, jac_p=problem.jac_p, rtol=1e-10, atol=1e-14).grad
    stiff = [p for p in report.parameters if p.fastest_mode * np.median(report.h) > 10]
    assert len(stiff) >= {"rober": 2, "pollu": 2, "h2o2": 10}[name]
    significant = np.abs(reference) > 1e-6 * np.abs(reference).max()
    np.testing.assert_allclose(measured[significant], reference[significant], rtol=0.05)
    assert not report.starved and max(abs(p.log10_attenuation) for p in report.parameters) < 0.1


def test_parameters_already_in_log_get_no_log_advice():
    """A problem whose parameters are log k (``Problem.log_parameterised``, or ``log_params``
    in a user's model) is not told to log-parameterise."""
    from stiffcore.adapters.scipy.sensitivity import diagnose_problem
    from stiffcore.problems import ROBER
    from stiffcore.problems.user import as_problem

    short, times = _short(ROBER, 10.0, 5)
    raw, _ = diagnose_problem(short, "RadauIIA5", 1e-6, times)
    logged, _ = diagnose_problem(short.log_parameterised(), "RadauIIA5", 1e-6, times)
    assert any(a.startswith("log-parameterise") for a in raw.advice)
    assert not any(a.startswith("log-parameterise") for a in logged.advice)
    model = dict(rhs=short.rhs, y0=short.y0, t_span=short.t_span, params=short.params, log_params=True)
    assert as_problem(model).log_params and not as_problem({**model, "log_params": False}).log_params


def test_scipy_diagnose_takes_the_same_loss_grad_as_solve_ivp_sensitivity():
    """One convention in the SciPy adapter: both take ``loss_grad(Y)`` with Y as ``sol.y``,
    (species, times).  A loss on y1 alone, handed to both unchanged: the diagnosis predicts
    the gradient solve_ivp_sensitivity measures."""
    from stiffcore.adapters.scipy import diagnose as scipy_diagnose
    from stiffcore.adapters.scipy import solve_ivp_sensitivity
    from stiffcore.problems import ROBER

    times = np.logspace(-3, 2, 8)
    seen = []

    def loss_grad(Y):
        seen.append(Y.shape)
        return np.array([1.0, 0.0, 0.0])[:, None] * np.ones_like(Y)  # L = sum_t y1(t)

    opts = dict(jac=ROBER.jac, jac_p=ROBER.jac_p, rtol=1e-8, atol=1e-12)
    d = scipy_diagnose(ROBER.rhs, (0, 1e2), ROBER.y0, ROBER.params, output_times=times, loss_grad=loss_grad, **opts)
    measured = solve_ivp_sensitivity(ROBER.rhs, (0, 1e2), ROBER.y0, ROBER.params, t_eval=times, mode="reverse",
                                     loss=lambda Y: Y[0].sum(), loss_grad=loss_grad, **opts).grad
    assert seen == [(3, 8), (3, 8)]
    predicted = np.array([p.predicted_gradient for p in d.parameters])
    assert np.all(np.abs(np.log10(np.abs(predicted / measured))) < np.log10(2)), (predicted, measured)


def test_scipy_collects_the_inputs_on_rober(capsys):
    from stiffcore.adapters.scipy import diagnose as scipy_diagnose
    from stiffcore.cli import main
    from stiffcore.problems import ROBER

    d = scipy_diagnose(ROBER.rhs, (0, 1e3), ROBER.y0, ROBER.params, jac=ROBER.jac, jac_p=ROBER.jac_p,
                       param_names=ROBER.param_names, rtol=1e-6, atol=1e-10)
    assert [p.name for p in d.parameters] == ["k1", "k2", "k3"]
    assert d.stiffness_index > 1e6 and d.stiff_tail_fraction > 0.5
    assert np.nanmax(d.spread) > 1e4
    assert main(["diagnose", "rober", "--no-plot", "--rtol", "1e-5"]) == 0
    out = capsys.readouterr().out
    assert "d/dlog p" in out and "k2" in out


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_torch_and_jax_collect_the_same_report_and_gradients_as_scipy(backend, capsys):
    """One call per backend: the same stiffness picture and, on ROBER, the same measured
    gradients as the SciPy collector (the CLI prints both)."""
    import importlib

    from stiffcore.adapters.scipy.sensitivity import diagnose_problem as scipy_collect
    from stiffcore.cli import DIAGNOSE, main
    from stiffcore.problems import ROBER

    pytest.importorskip({"torch": "torchdiffeq", "jax": "diffrax"}[backend])
    times = np.logspace(-5, 3, 12)
    short = dataclasses.replace(ROBER, t_span=(0.0, 1e3))
    ours, grad = importlib.import_module(DIAGNOSE[backend]).diagnose_problem(short, "RadauIIA5", 1e-7, times)
    ref, ref_grad = scipy_collect(short, "RadauIIA5", 1e-7, times)
    assert [p.name for p in ours.parameters] == ["k1", "k2", "k3"]
    assert ours.stiff_tail_fraction > 0.5 and ours.stiffness_index == pytest.approx(ref.stiffness_index, rel=0.05)
    for a, b in zip(ours.parameters, ref.parameters):
        assert a.log10_attenuation == pytest.approx(b.log10_attenuation, abs=0.1)
    assert np.allclose(grad, ref_grad, rtol=1e-4)
    assert main(["diagnose", "rober", "--backend", backend, "--no-plot", "--rtol", "1e-5"]) == 0
    assert f"through {backend}" in capsys.readouterr().out


def test_collectors_name_bad_inputs():
    torch = pytest.importorskip("torch")
    from stiffcore.adapters.torchdiffeq.diagnose import diagnose as torch_diagnose

    f = lambda t, y, p: -p[0] * y  # noqa: E731
    y0, t = torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(TypeError, match="1-D tensor"):
        torch_diagnose(f, y0, t, torch.ones((1, 1), dtype=torch.float64))
    with pytest.raises(ValueError, match="not a torchdiffeq method"):
        torch_diagnose(f, y0, t, torch.ones(1, dtype=torch.float64), method="bdf2")


# --- predicted against measured gradients ---------------------------------------------------
@pytest.mark.parametrize("method", ["backward_euler", "radau_iia5", "rodas5p", "trbdf2"])
def test_predicted_gradient_is_exact_for_a_linear_rate(method):
    """y' = -k y, L = y_N: the discrete derivative is N R(z)^(N-1) R'(z) h (-y0), z = -k h."""
    from stiffcore.catalogue import get_method

    k, h, N = 40.0, 0.1, 12
    R = get_method(method).stability
    y = R(-k * h) ** np.arange(N + 1)
    cot = np.zeros((N + 1, 1))
    cot[-1] = 1.0
    d = diagnose(method, h * np.arange(N), np.full(N, h), jacobians=np.full((N, 1, 1), -k),
                 param_jacobians=-y[:-1].reshape(N, 1, 1), output_cotangents=cot)
    exact = N * R(-k * h) ** (N - 1) * R.derivative(-k * h) * h * -1.0
    assert d.parameters[0].predicted_gradient == pytest.approx(float(np.real(exact)), rel=1e-12)


def _short(problem, t_end, n_out):
    times = np.logspace(-5, np.log10(t_end), n_out)
    times[-1] = t_end  # logspace's last point can round past the end
    return dataclasses.replace(problem, t_span=(0.0, t_end)), times


@pytest.mark.parametrize("backend", ["scipy", "torch", "jax"])
def test_predicted_gradients_match_measured_on_rober_and_log_k_closes_the_gap(backend):
    """ROBER on [0, 1e3]: every d/dk predicted within a factor 2 of the backend's gradient;
    raw gradients span > 6 decades, d/dlog k < 1.5 decades, as predicted."""
    import importlib

    from stiffcore.cli import DIAGNOSE
    from stiffcore.problems import ROBER

    if backend != "scipy":
        pytest.importorskip({"torch": "torchdiffeq", "jax": "diffrax"}[backend])
    short, times = _short(ROBER, 1e3, 15)
    report, measured = importlib.import_module(DIAGNOSE[backend]).diagnose_problem(short, "RadauIIA5", 1e-7, times)
    predicted = np.array([p.predicted_gradient for p in report.parameters])
    assert np.all(np.abs(np.log10(np.abs(predicted / measured))) < np.log10(2)), (predicted, measured)
    spread = lambda g: np.ptp(np.log10(np.abs(g)))  # noqa: E731
    assert spread(measured) > 6 and spread(predicted) > 6
    assert spread(measured * short.params) < 1.5 and spread(predicted * short.params) < 1.5


def test_predicted_gradients_match_measured_on_pollu_to_order_of_magnitude():
    """POLLU's 25 rates on [0, 5] (SciPy collector): nonzero gradients predicted to their order of
    magnitude (median miss < 0.1 decades; the worst, k3 ~ 1e-11, is a cancellation the
    linearised model misses by 1 decade); the log-k gain shrinks the spread as predicted."""
    from stiffcore.adapters.scipy.sensitivity import diagnose_problem
    from stiffcore.cli import calibration_summary
    from stiffcore.problems import POLLU

    short, times = _short(POLLU, 5.0, 10)
    report, measured = diagnose_problem(short, "RadauIIA5", 1e-8, times)
    predicted = np.array([p.predicted_gradient for p in report.parameters])
    ok = measured != 0
    assert ok.sum() >= 20
    miss = np.abs(np.log10(np.abs(predicted[ok] / measured[ok])))
    assert np.median(miss) < 0.1 and np.all(miss < 1.5), miss
    spread = lambda g: np.ptp(np.log10(np.abs(g[ok])))  # noqa: E731
    assert spread(measured * short.params) < spread(measured) - 3
    assert abs(spread(predicted * short.params) - spread(measured * short.params)) < 1.0
    assert "within" in calibration_summary(predicted, measured, short.params)


def test_output_cotangent_mistakes_are_named():
    from stiffcore.diagnostics import cotangents_on_steps

    t, h, J, Fp = np.arange(3.0), np.ones(3), -np.ones((3, 1, 1)), np.ones((3, 1, 1))
    with pytest.raises(ValueError, match=r"shape \(4, 1\)"):
        diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, output_cotangents=np.ones((3, 1)))
    with pytest.raises(ValueError, match="need param_jacobians"):
        diagnose("radau_iia5", t, h, jacobians=J, output_cotangents=np.ones((4, 1)))
    with pytest.raises(ValueError, match="reversible"):
        diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, coupling=0.9, output_cotangents=np.ones((4, 1)))
    with pytest.raises(ValueError, match="NaN or inf"):
        diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, output_cotangents=np.full((4, 1), np.nan))
    with pytest.raises(ValueError, match="not a step boundary"):
        cotangents_on_steps(np.arange(4.0), np.ones((4, 1)), [1.5], lambda Y: Y)
    with pytest.raises(ValueError, match="2 output cotangents for 1 output times"):
        cotangents_on_steps(np.arange(4.0), np.ones((4, 1)), [1.0], lambda Y: np.ones((2, 1)))


def test_advice_groups_starved_parameters_and_fits_the_terminal():
    """Forty parameters (a real mechanism has hundreds): the starved ones feeding one mode
    share one advice line, the log-p gains point at the table instead of a 5,000-column
    line (GRI-Mech's was), and every printed advice line fits 100 columns."""
    rates = [-1.0] * 20 + [zero_of_R_prime() / 0.1] * 20
    t, h, J, Fp = diagonal_case(rates=rates)
    names = [f"k{j + 1}" for j in range(40)]
    d = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, param_names=names,
                 params=np.geomspace(1e-3, 1e9, 40), states=np.tile(np.linspace(0, 1, 40), (5, 1)))
    starved = [a for a in d.advice if "starved" in a]
    assert len(starved) == 1 and starved[0].startswith("k21, k22,") and "k32 and 8 more (see the table) are starved" \
        in starved[0]
    assert "log-p gain column" in next(a for a in d.advice if a.startswith("log-parameterise"))
    advice = d.table().split("Advice:\n")[1]
    assert max(map(len, advice.splitlines())) <= 100
