"""Run the conformance checks over the installed backends and report.

From Python::

    from stiffcore.conformance import run
    report = run(backends=["scipy"], methods=["radau_iia5"])
    print(report.table()); report.plot("conformance.png"); report.passed
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from stiffcore.catalogue import get_method
from stiffcore.plugins import Backend, select_backends
from stiffcore.predictions import one_step_gradient
from stiffcore.report import json_safe, table

from .checks import (
    CheckResult, check_n_step, check_one_step, check_reversible, check_rober,
)


@dataclass
class Report:
    results: list = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.passed is False]

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self) -> str:
        rows = [[r.backend, r.method, r.check, {True: "pass", False: "FAIL", None: "skip"}[r.passed],
                 r.max_rel_error, r.fitted_slope, r.predicted_slope] for r in self.results]
        text = table(["backend", "method", "check", "result", "max rel err", "fitted slope", "predicted slope"], rows)
        if self.failures:
            text += "\n\nFailures:\n" + "\n".join(f"  - [{r.check}] {r.detail}" for r in self.failures)
        skipped = [r for r in self.results if r.passed is None]
        if skipped:
            text += "\n\nSkipped: " + "; ".join(sorted({f"{r.check} ({r.detail})" for r in skipped}))
        counts = {k: sum(r.passed is v for r in self.results) for k, v in (("passed", True), ("failed", False))}
        return text + f"\n\n{counts['passed']} passed, {counts['failed']} failed"

    def to_json(self) -> str:
        return json.dumps(json_safe([r.as_dict() for r in self.results]), indent=2)

    def plot(self, path: str) -> str:
        """Every backend's measured |d y_1/d lambda| (markers) over the predicted |R'(z)| (lines)."""
        from stiffcore.plotting import pyplot

        plt = pyplot()
        curves = [r for r in self.results if r.check == "one_step" and r.curve]
        methods = sorted({r.method for r in curves})
        fig, ax = plt.subplots(figsize=(10, 7))
        abs_z = np.geomspace(1e-2, 1e8, 300)
        markers = "oxs^v+"
        backends = sorted({r.backend for r in curves})
        for i, method in enumerate(methods):
            colour = f"C{i % 10}"
            ax.loglog(abs_z, np.abs(one_step_gradient(method, -abs_z)), color=colour, linewidth=1, label=method)
            for r in (c for c in curves if c.method == method):
                ax.loglog(np.abs(r.curve["z"]), np.abs(r.curve["measured"]), markers[backends.index(r.backend) % 6],
                          color=colour, markersize=4, fillstyle="none")
        ax.set_xlabel("|z| (z = h lambda on the negative real axis, h = 1)")
        ax.set_ylabel("|d y_1 / d lambda|")
        ax.set_title("Measured (markers: " + ", ".join(f"{m} {b}" for m, b in zip(markers, backends))
                     + ") against predicted h R'(z) (lines)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def checks_for(backend: Backend, method: str, full: bool = False) -> list[CheckResult]:
    """Checks (a)-(c) of one backend and method; ``full``: every point of the sweep."""
    results = check_one_step(backend, method, full) + check_n_step(backend, method)
    if get_method(method).is_one_step and method in backend.reversible_bases:
        results += check_reversible(backend, method, full)
    return results


def run(backends: Sequence[str] | None = None, methods: Sequence[str] | None = None,
        found: dict | None = None, cross_backend: bool = True, full: bool = False,
        progress: Callable[[int, int, str, list], None] | None = None) -> Report:
    """Run every check for the selected backends and methods (default: all available).

    The default sweep takes z on decades and one stable z per regime for the reversible
    check; ``full=True`` takes every half-decade and every stable candidate (about 2x the time).

    ``progress(done, total, label, results)`` is called after each unit of work (one backend
    and method, then the cross-backend check) with that unit's results, so a caller can
    stream rows and show an ETA; an interrupted run has reported everything it finished."""
    chosen = select_backends(backends, found)
    wanted = None if methods is None else [get_method(m).id for m in methods]
    units = [(b, m) for b in chosen for m in b.methods if wanted is None or m in wanted]
    cross = cross_backend and (wanted is None or "radau_iia5" in wanted)
    total = len(units) + cross
    report = Report()
    for done, (backend, method) in enumerate(units, start=1):
        results = checks_for(backend, method, full)
        report.results += results
        if progress:
            progress(done, total, f"{backend.name}/{method}", results)
    if cross:
        results = check_rober(chosen)
        report.results += results
        if progress:
            progress(total, total, "ROBER cross-backend", results)
    return report
