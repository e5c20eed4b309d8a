"""The conformance suite passes correct backends and names what is wrong with wrong ones."""

import json

import numpy as np
import pytest
from example_backend import one_step_gradient as example_gradient

from stiffcore import get_method
from stiffcore.cli import main
from stiffcore.conformance import run
from stiffcore.plugins import Backend, discover_backends, hookimpl, plugin_manager


def found(*backends):
    pm = plugin_manager(load_entry_points=False)
    for b in backends:
        class Plugin:
            backend = b

            @hookimpl
            def stiffcore_backend(self):
                return self.backend

        pm.register(Plugin())
    return discover_backends(pm)


def test_example_backend_passes():
    import example_backend

    pm = plugin_manager(load_entry_points=False)
    pm.register(example_backend)
    report = run(found=discover_backends(pm))
    assert report.passed, report.table()
    assert {r.check for r in report.results if r.passed} == {"one_step"}
    skipped = {r.check for r in report.results if r.passed is None}
    assert skipped == {"n_step", "rober"}  # hooks it does not offer are skipped, not failed


# --- deliberately wrong backends -------------------------------------------------------

def backsolve_gradient(method_id, z, h=1.0, y0=1.0):
    """A continuous 'backsolve' adjoint: rebuild y(t0) from y1 by stepping backwards (unstable
    for stiff z) and integrate a(t) y(t) with the trapezoidal rule, a = 1."""
    R = get_method(method_id).stability
    y1 = R(z) * y0
    y_back = R(-np.asarray(z)) * y1
    return h * (y_back + y1) / 2


def frozen_newton_gradient(method_id, z, h=1.0, y0=1.0):
    """Backward Euler differentiated through one Newton iteration with the Jacobian frozen
    (treated as a constant): the value is right on a linear problem, the derivative is not."""
    z = np.asarray(z, dtype=float)
    lam = z / h
    frozen = 1 - z  # 1 - h * J with J = lambda held constant
    y, dy = np.full(z.shape, y0), np.zeros(z.shape)
    for _ in range(1):
        residual = y - y0 - h * lam * y
        d_residual = dy - h * y - h * lam * dy
        y, dy = y - residual / frozen, dy - d_residual / frozen
    return dy


def float32_gradient(method_id, z, h=1.0, y0=1.0):
    return example_gradient(method_id, z, h, y0, dtype=np.float32)


@pytest.mark.parametrize("name, gradient, methods", [
    ("backsolve", backsolve_gradient, ("backward_euler", "radau_iia5")),
    ("frozen_newton", frozen_newton_gradient, ("backward_euler",)),
    ("float32", float32_gradient, ("backward_euler", "radau_iia5")),
])
def test_wrong_backends_fail_the_one_step_check(name, gradient, methods):
    report = run(found=found(Backend(name=name, methods=methods, one_step_gradient=gradient)))
    assert not report.passed
    failing = {(r.method, r.check) for r in report.failures}
    assert failing == {(m, "one_step") for m in methods}
    for r in report.failures:
        assert r.detail.startswith(f"{name}/{r.method}: at z = ") and "measured" in r.detail and "predicted" in r.detail
    assert "FAIL" in report.table() and f"{name}/" in report.table()


def test_wrong_n_step_and_reversible_are_caught():
    from stiffcore.adapters.scipy import backend as scipy_backend

    def off_by_one_n_step(method_id, z, h, y0, n_steps):
        return scipy_backend.n_step_gradient(method_id, z, h, y0, n_steps - 1)

    def sloppy_reversible(base_id, z, h, y0, n_steps, coupling, perturbation=0.0, gradient=True):
        """Rebuilds with base steps of h(1 + 1e-12), as code that recomputes t1 - t0 from
        t0 + h does, instead of exactly the forward steps."""
        from stiffcore.reversible import predict_reversible, reversible_step, reversible_step_back

        R = get_method(base_id).stability
        mu = np.asarray(z) / h
        y = w = np.full(mu.shape, float(y0))
        for k in range(n_steps):
            y, w = reversible_step(lambda a, b, x: R((b - a) * mu) * x, k * h, (k + 1) * h, y, w, coupling)
        y_n, y = y, y * (1 + perturbation)
        for k in reversed(range(n_steps)):
            y, w = reversible_step_back(lambda a, b, x: R((b - a) * (1 + 1e-12) * mu) * x, k * h, (k + 1) * h,
                                        y, w, coupling)
        dy = predict_reversible(base_id, z, h=h, n_steps=n_steps, coupling=coupling, y0=y0)[1]
        return dict(y_n=y_n, y0_rebuilt=y, dy_dlambda=dy)

    wrong = Backend(name="wrong", methods=("backward_euler",), one_step_gradient=scipy_backend.one_step_gradient,
                    n_step_gradient=off_by_one_n_step, reversible_run=sloppy_reversible,
                    reversible_bases=("backward_euler",))
    report = run(found=found(wrong))
    assert {r.check for r in report.failures} == {"n_step", "reversible"}
    detail = next(r.detail for r in report.failures if r.check == "reversible")
    assert "reconstruction after 1000 steps" in detail and "predicted stable" in detail


def test_cross_backend_rober_disagreement_is_caught():
    from stiffcore.adapters.scipy import backend as scipy_backend
    from stiffcore.conformance.checks import check_rober

    good = Backend(name="a", methods=("radau_iia5",), one_step_gradient=scipy_backend.one_step_gradient,
                   rober_gradient=scipy_backend.rober_gradient)
    same = Backend(name="b", methods=("radau_iia5",), one_step_gradient=scipy_backend.one_step_gradient,
                   rober_gradient=scipy_backend.rober_gradient)
    off = Backend(name="c", methods=("radau_iia5",), one_step_gradient=scipy_backend.one_step_gradient,
                  rober_gradient=lambda *a, **k: scipy_backend.rober_gradient(*a, **k) * (1 + 1e-8))
    results = check_rober([good, same, off], adaptive=False)
    verdict = {r.backend: r.passed for r in results}
    assert verdict == {"b": True, "c": False}
    assert "relative difference" in next(r.detail for r in results if r.backend == "c")


def test_scipy_backend_conforms_on_a_subset():
    report = run(backends=["scipy"], methods=["radau_iia5", "kvaerno5", "rodas5p"], cross_backend=False)
    assert report.passed, report.table()
    one_step = {r.method: r for r in report.results if r.check == "one_step"}
    assert one_step["radau_iia5"].max_rel_error < 1e-13
    assert one_step["radau_iia5"].fitted_slope == pytest.approx(-2, abs=0.05)


def test_cli_conformance_table_json_and_plot(tmp_path, capsys):
    png = tmp_path / "c.png"
    assert main(["conformance", "--backend", "scipy", "--method", "backward_euler", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "backward_euler" in out and "one_step" in out and "pass" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["conformance", "--backend", "scipy", "--method", "sdirk2", "--json", "--no-plot"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["check"] for r in rows} >= {"one_step", "n_step", "reversible"}
    assert main(["conformance", "--backend", "nope", "--no-plot"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err


def test_worker_processes_give_the_serial_report():
    """run(jobs=2): units in spawned workers, the cross-backend check split per backend and
    compared at the end; the same records, in the same order, as the serial run."""
    kw = dict(backends=["scipy", "torch"], methods=["backward_euler", "radau_iia5"])
    serial, parallel = run(**kw), run(jobs=2, **kw)
    strip = lambda report: [(r.backend, r.method, r.check, r.passed, r.max_rel_error) for r in report.results]  # noqa: E731
    assert strip(parallel) == strip(serial) and parallel.passed
    assert {r.check for r in parallel.results} >= {"one_step", "reversible", "rober_fixed", "rober_adaptive"}
    with pytest.raises(ValueError, match="jobs must be a positive integer, got 0"):
        run(jobs=0, **kw)
    # one backend: the cross-backend check is skipped, as serially (it raised KeyError)
    alone = run(backends=["scipy"], methods=["backward_euler", "radau_iia5"], jobs=2)
    assert [r.passed for r in alone.results if r.check == "rober"] == [None]


def test_the_plot_shows_each_backends_relative_errors_and_rings_failures(tmp_path):
    """One panel per backend of what check (a) judges: relative error against h R'(z) under
    the allowed error; a failing point is ringed in red and the panel's title says so."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    backends = found(Backend(name="good", methods=("backward_euler", "radau_iia5"), one_step_gradient=example_gradient),
                     Backend(name="float32", methods=("backward_euler",), one_step_gradient=float32_gradient))
    report = run(found=backends)
    figures = []
    original = plt.close
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plt, "close", lambda fig=None: figures.append(fig))
        path = report.plot(str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and path.endswith("c.png")
    axes = [ax for ax in figures[0].axes if ax.get_title()]
    titles = {ax.get_title(): ax for ax in axes}
    assert set(titles) == {"float32: 0 of 1 methods pass", "good: 2 of 2 methods pass"}
    labels = lambda ax: [line.get_label() for line in ax.get_lines()]  # noqa: E731
    assert "failing point" in labels(titles["float32: 0 of 1 methods pass"])
    assert "failing point" not in labels(titles["good: 2 of 2 methods pass"])
    assert {"backward_euler", "radau_iia5"} <= set(labels(titles["good: 2 of 2 methods pass"]))
    original(figures[0])


# --- multistep check (e) ---------------------------------------------------------------

MULTISTEP_IDS = ("bdf1", "bdf2", "bdf3", "bdf4", "bdf5", "ndf1", "ndf2", "ndf3", "ndf4")


def history_blind_gradient(method_id, z, h=1.0, y0=1.0, n_steps=None):
    """BDF/NDF on y' = lambda y differentiated step by step as if the past values did not
    depend on lambda: d y_{n+1} / d lambda = h sigma_k y_{n+1} / (rho_k - z sigma_k) only.
    The values are right; the gradient loses the history's share."""
    coef = get_method(method_id).coefficients
    s = coef.steps
    n_steps = s + 4 if n_steps is None else n_steps
    out = []
    for zi in np.atleast_1d(np.asarray(z, dtype=float)):
        ys = list(np.exp(zi * np.arange(s)) * y0)
        grad = 0.0
        for _ in range(s, n_steps + 1):
            lead = coef.rho[s] - zi * coef.sigma[s]
            ys.append(-sum((coef.rho[j] - zi * coef.sigma[j]) * ys[-s + j] for j in range(s)) / lead)
            grad = h * coef.sigma[s] * ys[-1] / lead
        out.append(grad)
    return np.array(out).reshape(np.shape(z))


def test_scipy_fbdf_and_qndf_pass_the_multistep_check():
    report = run(backends=["scipy"], methods=list(MULTISTEP_IDS), cross_backend=False)
    results = [r for r in report.results if r.check == "multistep"]
    assert len(results) == len(MULTISTEP_IDS) and report.passed, report.table()
    assert max(r.max_rel_error for r in results) < 1e-12  # the bound is 1e-8; measured 1.2e-14


def test_a_backend_that_ignores_the_history_fails_the_multistep_check():
    blind = Backend(name="blind", methods=(), one_step_gradient=example_gradient, multistep_methods=MULTISTEP_IDS,
                    multistep_gradient=history_blind_gradient)
    report = run(found=found(blind), cross_backend=False)
    assert {(r.method, r.check) for r in report.failures} == {(m, "multistep") for m in MULTISTEP_IDS}
    assert all(r.detail.startswith(f"blind/{r.method}: at z = ") for r in report.failures)


def test_multistep_announcements_are_checked():
    with pytest.raises(ValueError, match="one-step method 'radau_iia5'"):
        Backend(name="x", methods=(), one_step_gradient=example_gradient, multistep_methods=("radau_iia5",),
                multistep_gradient=history_blind_gradient)
    with pytest.raises(ValueError, match="need a multistep_gradient hook"):
        Backend(name="x", methods=(), one_step_gradient=example_gradient, multistep_methods=("bdf2",))
    report = run(found=found(Backend(name="plain", methods=("backward_euler",), one_step_gradient=example_gradient)),
                 methods=["backward_euler", "bdf2"], cross_backend=False)
    assert not any(r.check == "multistep" for r in report.results)  # not offered: not run
