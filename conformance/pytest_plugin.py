"""pytest plugin (entry point ``pytest11``): command-line options for the conformance tests.

    pytest --pyargs stiffcore.conformance [--stiffcore-backend scipy] [--stiffcore-method radau_iia5] [--stiffcore-full]
"""

from __future__ import annotations


def pytest_addoption(parser) -> None:
    group = parser.getgroup("stiffcore", "stiffcore conformance suite")
    group.addoption("--stiffcore-backend", action="append", default=None,
                    help="run the conformance tests for this backend only (repeatable)")
    group.addoption("--stiffcore-method", action="append", default=None,
                    help="run the conformance tests for this method id only (repeatable)")
    group.addoption("--stiffcore-full", action="store_true", default=False,
                    help="the exhaustive sweep (every half-decade of z, every stable reversible z)")
