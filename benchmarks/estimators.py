"""Embedded error estimates against the true local error, per adapter and method.

One step from the exact solution of the Prothero-Robinson problem y' = lambda (y - sin t) +
cos t (t0 = 1) for lambda = -1 (non-stiff) to -1e6 (|h lambda| up to 1e5): the ratio
|estimate| / |true local error| for h = 0.1, 0.05, 0.025.  A pair estimates the error of
its lower-order member, so ratios above 1 are expected where the solution's order is the
higher one (Rodas5P, Radau IIA5 on non-stiff steps); below 1 the estimate under-reports.
The one-step harness is the one ``tests/test_estimators.py`` asserts on.

    python benchmarks/estimators.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_estimators import JAX_METHODS, STEPS, ADAPTIVE  # noqa: E402  (the tests' one-step harness)

from _common import stream_row  # noqa: E402

from stiffcore.report import table  # noqa: E402

LAMBDAS = (-1.0, -1e2, -1e4, -1e6)
HS = (0.1, 0.05, 0.025)


def main() -> None:
    rows = []
    for adapter, step in STEPS.items():
        for method in ADAPTIVE:
            if adapter == "jax" and method not in JAX_METHODS:
                continue
            ratios = []
            for lam in LAMBDAS:
                r = []
                for h in HS:
                    y1, e = step(method, lam, h)
                    r.append(abs(e) / abs(y1 - np.sin(1.0 + h)))
                ratios.append(f"{min(r):.2g}..{max(r):.2g}")
            rows.append([adapter, method, *ratios])
            stream_row(rows[-1])
    print()
    print(table(["adapter", "method", *(f"est/true, lambda {lam:g}" for lam in LAMBDAS)], rows))


if __name__ == "__main__":
    main()
