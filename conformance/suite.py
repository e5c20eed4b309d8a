"""Run the conformance checks over the installed backends and report.

From Python::

    from stiffcore.conformance import run
    report = run(backends=["scipy"], methods=["radau_iia5"])
    print(report.table()); report.plot("conformance.png"); report.passed
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from stiffcore.catalogue import get_method
from stiffcore.plugins import Backend, select_backends
from stiffcore.report import json_safe, table, wrap

from .checks import (
    ROBER_MODES, CheckResult, check_multistep, check_n_step, check_one_step, check_reversible, check_rober,
    compare_rober, float64_floor, relative_error, rober_able, rober_gradient, rober_skipped,
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
        slope = lambda value: "-" if math.isnan(value) else value  # noqa: E731
        rows = [[r.backend, r.method, r.check, {True: "pass", False: "FAIL", None: "skip"}[r.passed],
                 r.max_rel_error, slope(r.fitted_slope), slope(r.predicted_slope)] for r in self.results]
        text = table(["backend", "method", "check", "result", "max rel err", "fitted slope", "predicted slope"], rows)
        if any(math.isnan(r.fitted_slope) for r in self.results):
            text += "\n" + wrap("slope: of log |dy/dlambda| against log |z| as z -> -inf, fitted on the one-step "
                                "check (y_1) and the multistep check (y_N from exact starting values) only (the "
                                "other checks compare values: '-')", indent="")
        if self.failures:
            text += "\n\nFailures:\n" + "\n".join(wrap(f"  - [{r.check}] {r.detail}", indent="    ")
                                                    for r in self.failures)
        skipped = [r for r in self.results if r.passed is None]
        if skipped:
            text += "\n\n" + wrap("Skipped: " + "; ".join(sorted({f"{r.check} ({r.detail})" for r in skipped})))
        counts = {k: sum(r.passed is v for r in self.results) for k, v in (("passed", True), ("failed", False))}
        return text + f"\n\n{counts['passed']} passed, {counts['failed']} failed"

    def to_json(self) -> str:
        return json.dumps(json_safe([r.as_dict() for r in self.results]), indent=2)

    def plot(self, path: str) -> str:
        """What the one-step check judges, one panel per backend: each method's relative error
        of the measured d y_1/d lambda against h R'(z), over the allowed error (dashed);
        points past it are ringed in red."""
        from stiffcore.plotting import method_styles, pyplot

        plt = pyplot()
        curves = [r for r in self.results if r.check == "one_step" and r.curve]
        backends = sorted({r.backend for r in curves})
        style = method_styles(sorted({r.method for r in curves}))
        cols = min(len(backends), 2) or 1
        rows = -(-len(backends) // cols) or 1
        fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.8 * rows), squeeze=False, sharey=True)
        floor = 1e-18  # an error of exactly 0 is drawn here, on the axis
        for ax, backend in zip(axes.flat, backends):
            mine = [r for r in curves if r.backend == backend]
            ringed = False
            for r in mine:
                z = np.abs(r.curve["z"])
                err = np.maximum(relative_error(r.curve["measured"], r.curve["predicted"]), floor)
                ax.loglog(z, err, label=r.method, markersize=3.5, linewidth=0.9, **style[r.method])
                bad = ~(err <= r.curve["allowed"])  # NaN counts as failing, as in the check
                if bad.any():
                    ax.loglog(z[bad], np.nan_to_num(err[bad], nan=1.0), "o", markersize=10, fillstyle="none",
                              color="red", markeredgewidth=1.6, label=None if ringed else "failing point")
                    ringed = True
            grid = np.geomspace(1e-2, 1e8, 200)
            ax.loglog(grid, float64_floor(-grid), "k--", linewidth=1.4, label="allowed: max(1e-8, 10 eps |z|)")
            passed = sum(bool(r.passed) for r in mine)
            ax.set_title(f"{backend}: {passed} of {len(mine)} methods pass",
                         color="k" if passed == len(mine) else "red")
            ax.set_xlabel("|z| (z = h lambda on the negative real axis, h = 1)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6.5, ncol=2, loc="upper left")
        for ax in axes[:, 0]:
            ax.set_ylabel("relative error of d y_1/d lambda against h R'(z)\n(an error of 0 is drawn at 1e-18)")
        for ax in list(axes.flat)[len(backends):]:
            ax.axis("off")
        fig.suptitle("Conformance check (a): each backend's one-step gradient against the core's prediction")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def checks_for(backend: Backend, method: str, full: bool = False) -> list[CheckResult]:
    """Checks (a)-(c) of one backend and one-step method, or (e) of a multistep formula;
    ``full``: every point of the sweep."""
    if not get_method(method).is_one_step:
        return check_multistep(backend, method, full)
    results = check_one_step(backend, method, full) + check_n_step(backend, method)
    if get_method(method).is_one_step and method in backend.reversible_bases:
        results += check_reversible(backend, method, full)
    return results


def _worker_init() -> None:
    """A worker's set-up: one intra-op thread for torch (the test equation is scalar work,
    and the workers already use every core)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an optional extra
        return
    torch.set_num_threads(1)


@functools.lru_cache(maxsize=None)
def _discovered() -> dict:
    return {b.name: b for b in select_backends()}


def _checks_in_worker(backend_name: str, method: str, full: bool) -> list[CheckResult]:
    """One backend and method's checks in a worker process (backends rediscovered once per worker)."""
    return checks_for(_discovered()[backend_name], method, full)


def _rober_in_worker(backend_name: str, mode: str) -> np.ndarray:
    """One backend's ROBER gradient for the cross-backend check, in a worker process."""
    return rober_gradient(_discovered()[backend_name], mode)


def default_jobs() -> int:
    """Worker processes for :func:`run`: one per core, at most 4 (the units are few, and
    each worker imports the frameworks of the units it runs, seconds each)."""
    return max(1, min(4, os.cpu_count() or 1))


def run(backends: Sequence[str] | None = None, methods: Sequence[str] | None = None,
        found: dict | None = None, cross_backend: bool = True, full: bool = False,
        progress: Callable[[int, int, str, list], None] | None = None, jobs: int = 1) -> Report:
    """Run every check for the selected backends and methods (default: all available).

    The default sweep takes z on decades and one stable z per regime for the reversible
    check; ``full=True`` takes every half-decade and every stable candidate (about 2x the time).

    ``progress(done, total, label, results)`` is called after each unit of work (one backend
    and method, then the cross-backend check) with that unit's results, so a caller can
    stream rows and show an ETA; an interrupted run has reported everything it finished.

    ``jobs > 1`` runs the units in that many worker processes (spawned, so each imports
    its frameworks afresh, and a script calling this needs the usual
    ``if __name__ == "__main__":`` guard; see :func:`default_jobs`); units finish out of
    order, but the report lists them in the serial order.  Backends passed in ``found``
    (not discovered through entry points) cannot be rebuilt in a worker, so they always
    run here."""
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    chosen = select_backends(backends, found)
    wanted = None if methods is None else [get_method(m).id for m in methods]
    units = [(b, m) for b in chosen for m in (*b.methods, *b.multistep_methods) if wanted is None or m in wanted]
    cross = cross_backend and (wanted is None or "radau_iia5" in wanted)
    total = len(units) + cross
    if jobs > 1 and found is None and total > 1:
        return _run_in_workers(chosen, units, cross, full, progress, jobs)
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


def _run_in_workers(chosen, units, cross, full, progress, jobs) -> Report:
    """:func:`run` in ``jobs`` spawned processes.  The cross-backend check is split into one
    task per backend and mode, submitted first (together they are the longest unit) and
    compared here once all have finished; then the units in the serial order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    able = rober_able(chosen) if cross else []
    rober_tasks = [(b.name, mode) for mode in ROBER_MODES for b in able] if len(able) >= 2 else []
    total = len(units) + cross
    finished: dict = {}
    rober: dict = {}
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)
    try:
        futures = {pool.submit(_rober_in_worker, *task): ("rober", task) for task in rober_tasks}
        futures.update({pool.submit(_checks_in_worker, units[i][0].name, units[i][1], full): ("unit", i)
                        for i in range(len(units))})
        for future in as_completed(futures):
            kind, key = futures[future]
            if kind == "rober":
                rober[key] = future.result()
                continue
            finished[key] = future.result()
            if progress:
                progress(len(finished), total, f"{units[key][0].name}/{units[key][1]}", finished[key])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    report = Report([r for i in range(len(units)) for r in finished[i]])
    if cross:
        results = (compare_rober({mode: {b.name: rober[(b.name, mode)] for b in able} for mode in ROBER_MODES})
                   if rober_tasks else rober_skipped(able))
        report.results += results
        if progress:
            progress(total, total, "ROBER cross-backend", results)
    return report
