"""The stiffcore command line and the light-import promise."""

import json
import subprocess
import sys

import pytest

from stiffcore.catalogue import METHODS
from stiffcore.cli import main


def test_decay_json_lists_every_method_with_computed_classification(capsys):
    assert main(["decay", "--json", "--no-plot"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(METHODS)
    radau = rows["radau_iia5"]
    assert radau["a_stable"] and radau["l_stable"] and radau["decay_exponent"] == -2
    z = -1e6
    closed = 3 * (z**4 + 16 * z**3 - 48 * z**2 - 240 * z + 1200) / (z**3 - 9 * z**2 + 36 * z - 60) ** 2
    assert abs(radau["dR"]["-1000000.0"] / closed - 1) < 1e-9
    assert rows["lobatto_iiic2"]["decay_exponent"] == -3
    assert rows["bdf2"]["decay_exponent"] == -1.5
    assert rows["bdf3"]["a_alpha_degrees"] == pytest.approx(86.03, abs=0.01)
    assert rows["rk4"]["r_at_infinity"] == "inf"  # JSON-safe


def test_decay_table_and_plot(tmp_path, capsys):
    png = tmp_path / "decay.png"
    assert main(["decay", "--method", "radau_iia5", "backward_euler", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "radau_iia5" in out and "A- and L-stable" in out and "trapezoid" not in out
    assert max(map(len, out.splitlines())) <= 100
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_reversible_shows_band_and_both_rates(tmp_path, capsys):
    png = tmp_path / "rev.png"
    assert main(["reversible", "--base", "backward_euler", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "fwd@0.999" in out and "rec@0.999" in out
    assert "coupling 0.999: forward [-1.151" in out and "singular at z = -1" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_reversible_json(capsys):
    assert main(["reversible", "--coupling", "0.999", "--json", "--no-plot"]) == 0
    data = json.loads(capsys.readouterr().out)
    (entry,) = data["couplings"]
    assert entry["forward_band"][0][0] == pytest.approx(-1.151, abs=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["reversible", "--base", "bdf2", "--no-plot"], "one-step base"),
    (["reversible", "--coupling", "1.5", "--no-plot"], "coupling"),
    (["decay", "--method", "radau5", "--no-plot"], "Did you mean 'radau_iia5'"),
])
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["decay", "--no-plot"], ["reversible", "--no-plot"], ["backends"],
                                  ["diagnose", "rober", "--no-plot"]])
def test_tables_fit_100_columns(argv, capsys):
    """decay printed 131 columns, diagnose 169: rich tables wrap long cells inside their
    column, and the prose under them is wrapped too."""
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) > 3 and max(map(len, lines)) <= 100
    if argv[0] == "diagnose":  # what it is doing, said before the work (stderr; a spinner on a terminal)
        assert captured.err.startswith("diagnose rober: solving with RadauIIA5 on scipy at rtol 1e-06")


def test_a_failing_conformance_report_fits_100_columns():
    from stiffcore.conformance.checks import CheckResult
    from stiffcore.conformance.suite import Report

    detail = "toy/radau_iia5: at z = -1e+06 measured 0.10000000000000001, predicted 2.9999999999999997e-12 " * 2
    report = Report([CheckResult("toy", "radau_iia5", "one_step", False, 3e10, -1.0, -2.0, detail),
                     CheckResult("toy", "radau_iia5", "n_step", True, 1e-15)])
    lines = report.table().splitlines()
    assert max(map(len, lines)) <= 100 and any(line.startswith("  - [one_step] toy/radau_iia5") for line in lines)
    assert [line.split()[-2:] for line in lines if "n_step" in line] == [["-", "-"]]  # no 'nan nan'


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "stiffcore.cli", "decay", "--method", "bdf2", "--no-plot"],
                         capture_output=True, text=True, check=True).stdout
    assert "bdf2" in out


def test_import_stiffcore_is_light():
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import stiffcore"],
                         capture_output=True, text=True, check=True)
    modules = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    assert not modules & {"torch", "jax", "diffrax", "equinox", "scipy", "matplotlib"}


def test_every_public_name_is_importable():
    """``__all__`` promised ``reversible_step_vjp`` without importing it: ``from stiffcore import *``
    raised AttributeError."""
    import stiffcore

    assert [name for name in stiffcore.__all__ if not hasattr(stiffcore, name)] == []


def test_version_and_interrupt_exit_status(monkeypatch, capsys):
    from stiffcore import __version__, cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and __version__ in capsys.readouterr().out

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_decay", interrupted)
    assert cli.main(["decay", "--no-plot"]) == 130 and "interrupted" in capsys.readouterr().err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("argv, message", [
    (["diagnose", "rober", "--rtol", "0"], "--rtol: must be in [2.22e-14, 1), got 0"),
    (["diagnose", "rober", "--rtol", "-1"], "--rtol: must be in [2.22e-14, 1), got -1"),
    (["decay", "--plot", "/nonexistent-folder/decay.png"], "'/nonexistent-folder' does not exist"),
    (["train", "rober", "--out", "/proc/stiffcore-train"], "cannot write '/proc/stiffcore-train'"),
])
def test_bad_paths_and_tolerances_are_refused_before_any_work(argv, message, capsys):
    """diagnose --rtol 0 hung and --rtol -1 blamed atol; unwritable plot and output paths
    printed tracebacks after the work.  Now argparse refuses them at once (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


USER_MODEL = '''
import numpy as np

def problem():
    """A -> B (fast, k1) and B -> C (slow, k2): the user's own model as a mapping."""
    def rhs(t, y, p):
        r1, r2 = p[0] * y[0], p[1] * y[1]
        return np.array([-r1, r1 - r2, r2])
    return dict(rhs=rhs, y0=[1.0, 0.0, 0.0], t_span=(0.0, 10.0), params=[1e4, 0.5], param_names=["k_fast", "k_slow"],
                jac=lambda t, y, p: np.array([[-p[0], 0, 0], [p[0], -p[1], 0], [0, p[1], 0]]),
                jac_p=lambda t, y, p: np.array([[-y[0], 0], [y[0], -y[1]], [0, y[1]]]))

def not_a_problem():
    return dict(rhs=None, y0=[1.0])
'''


@pytest.mark.parametrize("spec", ["my_model:problem", "{path}:problem"])
def test_diagnose_runs_the_users_own_model(spec, tmp_path, monkeypatch, capsys):
    """`stiffcore diagnose module:function` (or file.py:function), imported from the current
    directory as python -m would; the report names the user's parameters and the measured
    gradients agree with the prediction."""
    (tmp_path / "my_model.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_model", raising=False)
    assert main(["diagnose", spec.format(path=tmp_path / "my_model.py"), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "k_fast" in out and "k_slow" in out and "predicted vs measured: within" in out


@pytest.mark.parametrize("spec, message", [
    ("no_such_model:problem", "cannot import model module 'no_such_model'"),
    ("my_model:missing", "'my_model' has no function 'missing'"),
    ("my_model:not_a_problem", "missing t_span, params"),
    ("/nonexistent/model.py:problem", "model file '/nonexistent/model.py' does not exist"),
    ("rober_typo", "unknown problem 'rober_typo'"),
])
def test_a_bad_user_model_is_named(spec, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_model.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["diagnose", spec, "--no-plot"]) == 2
    assert message in capsys.readouterr().err
