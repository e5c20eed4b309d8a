"""The conformance suite as pytest tests: ``pytest --pyargs stiffcore.conformance``.

One test per (backend, method, check); a failure message names the backend, method, z,
measured and predicted values.
"""

from __future__ import annotations

import pytest

from stiffcore.catalogue import get_method
from stiffcore.conformance.checks import (
    check_multistep, check_n_step, check_one_step, check_reversible, check_rober,
)
from stiffcore.conformance.suite import select_backends


def _cases(config, multistep=False):
    backends = select_backends(config.getoption("stiffcore_backend", None))
    wanted = config.getoption("stiffcore_method", None)
    wanted = None if wanted is None else {get_method(m).id for m in wanted}
    for backend in backends:
        for method in (backend.multistep_methods if multistep else backend.methods):
            if wanted is None or method in wanted:
                yield backend, method


def pytest_generate_tests(metafunc):
    for fixture, multistep in (("backend_method", False), ("backend_multistep", True)):
        if fixture in metafunc.fixturenames:
            cases = list(_cases(metafunc.config, multistep))
            metafunc.parametrize(fixture, cases, ids=[f"{b.name}-{m}" for b, m in cases])


def _assert(results):
    for r in results:
        if r.passed is None:
            pytest.skip(r.detail)
        assert r.passed, f"[{r.check}] {r.detail}"


def test_one_step_gradient(backend_method, request):
    _assert(check_one_step(*backend_method, full=request.config.getoption("stiffcore_full", False)))


def test_n_step_gradient(backend_method):
    _assert(check_n_step(*backend_method))


def test_reversible(backend_method, request):
    backend, method = backend_method
    if method not in backend.reversible_bases:
        pytest.skip(f"{backend.name} offers no reversible scheme around {method}")
    _assert(check_reversible(backend, method, full=request.config.getoption("stiffcore_full", False)))


def test_multistep_gradient(backend_multistep, request):
    _assert(check_multistep(*backend_multistep, full=request.config.getoption("stiffcore_full", False)))


def test_rober_cross_backend(request):
    _assert(check_rober(select_backends(request.config.getoption("stiffcore_backend", None))))
