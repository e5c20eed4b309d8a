"""Gradient diagnostics: stiffness, per-parameter attenuation and advice."""

import dataclasses

import numpy as np
import pytest

from stiffcore import get_method
from stiffcore.diagnostics import STIFF_TAIL, diagnose
from stiffcore.reversible import predict_reversible


def diagonal_case(rates=(-1.0, -1e4), steps=5, h=0.1):
    h = np.full(steps, h)
    t = np.concatenate([[0.0], np.cumsum(h)[:-1]])
    J = np.tile(np.diag(rates), (steps, 1, 1))
    Fp = np.tile(np.eye(len(rates)), (steps, 1, 1))  # parameter j feeds mode j only
    return t, h, J, Fp


@pytest.mark.parametrize("method", ["radau_iia5", "backward_euler", "lobatto_iiic2", "rodas5p"])
def test_parameter_feeding_one_mode_is_attenuated_by_R_prime(method):
    t, h, J, Fp = diagonal_case()
    d = diagnose(method, t, h, jacobians=J, param_jacobians=Fp, param_names=["slow", "fast"])
    stab = get_method(method).stability
    for p, rate in zip(d.parameters, (-1.0, -1e4)):
        expected = np.log10(min(abs(stab.derivative(0.1 * rate)), 1.0))
        assert p.log10_attenuation == pytest.approx(expected, abs=1e-12)
        assert p.fastest_mode == pytest.approx(abs(rate))
    assert [p.starved for p in d.parameters] == [False, True]


def test_reversible_uses_the_reversible_one_step_derivative():
    t, h, J, Fp = diagonal_case()
    d = diagnose("backward_euler", t, h, jacobians=J, param_jacobians=Fp, coupling=0.999)
    _, dy = predict_reversible("backward_euler", 0.1 * -1e4, h=1.0, n_steps=1, coupling=0.999)
    assert d.parameters[1].log10_attenuation == pytest.approx(np.log10(min(abs(dy), 1.0)), abs=1e-12)
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
    t, h, J, Fp = diagonal_case()
    states = np.column_stack([np.linspace(1, 0.5, 5), np.linspace(0, 2e-5, 5)])
    d = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, param_names=["k1", "k2"],
                 params=[0.04, 3e7], states=states)
    text = "\n".join(d.advice)
    assert "k1 x0.04" in text and "k2 x3e+07" in text and "8.9 decades" in text
    assert "y_max - y_min = [0.5, 2e-05]" in text and "t1 - t0 = 0.5" in text
    assert "k2 is starved" in text and "steps shorter than 0.001" in text
    assert "STARVED" in d.table()


def test_plot(tmp_path):
    t, h, J, Fp = diagonal_case()
    d = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp)
    path = d.plot(str(tmp_path / "d.png"), measured={"p0": -0.1, "p1": -5.0})
    assert open(path, "rb").read(4) == b"\x89PNG"


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
    rates = [-1.0] * 20 + [-1e4] * 20
    t, h, J, Fp = diagonal_case(rates=rates)
    names = [f"k{j + 1}" for j in range(40)]
    d = diagnose("radau_iia5", t, h, jacobians=J, param_jacobians=Fp, param_names=names,
                 params=np.geomspace(1e-3, 1e9, 40), states=np.tile(np.linspace(0, 1, 40), (5, 1)))
    starved = [a for a in d.advice if "starved" in a]
    assert len(starved) == 1 and starved[0].startswith("k21, k22,") and "k40 are starved" in starved[0]
    assert "log-p gain column" in next(a for a in d.advice if a.startswith("log-parameterise"))
    advice = d.table().split("Advice:\n")[1]
    assert max(map(len, advice.splitlines())) <= 100
