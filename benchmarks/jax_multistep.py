"""JAX FBDF/QNDF against diffsol-jax's compiled BDF, solve and gradient, in one process.

Problems: ROBER (50 log-spaced outputs to 1e5, parameters k1..k3) and HIRES (IVP test set,
50 outputs to 321.8122, its three largest rate constants as parameters), at rtol 1e-6 and
1e-8 (atol = 1e-4 rtol).  Methods: this adapter's ``FBDF``, ``QNDF`` and ``Rodas5P`` under
``diffrax.diffeqsolve`` (``PIDController``, ``SaveAt(ts)``: outputs from each step's
interpolation, gradients by diffrax's default adjoint), and ``diffsol-jax``'s BDF (Rust,
called from ``jax.jit``, gradients by forward sensitivities).  Reported: the weighted error
max |y - y_ref| / (atol + rtol |y_ref|) over the outputs against SciPy Radau at rtol 1e-13
restarted at every output, the best of 5 warm solve times, the same for the gradient of
sum(y^2) over the outputs, compile time of ours, and the ratio to diffsol-jax.

    pip install -e ".[all,bench]"      # brings diffsol-jax
    python benchmarks/jax_multistep.py

Writes benchmarks/out/jax_multistep.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from _common import figure_tools, save, stream_row

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import HIRES_RATES, HIRES_T1, HIRES_Y0, hires, step_end_reference  # noqa: E402  (the tests')

RTOLS = (1e-6, 1e-8)
REPEATS = 5


def rober(t, y, p):
    import jax.numpy as jnp

    return jnp.stack([-p[0] * y[0] + p[2] * y[1] * y[2], p[0] * y[0] - p[2] * y[1] * y[2] - p[1] * y[1] * y[1],
                      p[1] * y[1] * y[1]])


def hires_jax(t, y, p):
    """HIRES (tests/helpers.py) with 1.71, 280 and 8.32 as parameters p."""
    import jax.numpy as jnp

    return hires(t, y, jnp, p)


PROBLEMS = {
    "ROBER": (rober, np.array([1.0, 0.0, 0.0]), np.array([0.04, 3e7, 1e4]), np.logspace(-5, 5, 50)),
    "HIRES": (hires_jax, HIRES_Y0, HIRES_RATES, np.linspace(HIRES_T1 / 50, HIRES_T1, 50)),
}


def _best(fn, arg):
    import jax

    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name, method, rtol):
    """(weighted error, solve s, gradient s, compile s) of one method on one problem."""
    import diffrax
    import jax
    import jax.numpy as jnp

    f, y0, p0, ts = PROBLEMS[name]
    atol = rtol * 1e-4
    p0, ts_j = jnp.asarray(p0), jnp.asarray(ts)
    if method == "diffsol-jax":
        from diffsol_jax import ODEProblem

        problem = ODEProblem(f, jnp.asarray(y0), p0)
        outputs = lambda p: problem.solve(p, ts_j, rtol=rtol, atol=atol)[1]  # noqa: E731
    else:
        import stiffcore.adapters.diffrax as dfx

        solver = getattr(dfx, method)()

        def outputs(p):
            return diffrax.diffeqsolve(diffrax.ODETerm(f), solver, 0.0, float(ts[-1]), None, jnp.asarray(y0),
                                       args=p, saveat=diffrax.SaveAt(ts=ts_j), max_steps=100_000,
                                       stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol)).ys

    solve = jax.jit(outputs)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(outputs(p) ** 2)))
    start = time.perf_counter()
    ys = jax.block_until_ready(solve(p0))
    jax.block_until_ready(grad(p0))
    compile_s = time.perf_counter() - start
    ref = reference(name)
    err = float(np.max(np.abs(np.asarray(ys) - ref) / (atol + rtol * np.abs(ref))))
    return err, _best(solve, p0), _best(grad, p0), compile_s


_REFERENCES: dict = {}


def reference(name):
    if name not in _REFERENCES:
        f, y0, p0, ts = PROBLEMS[name]

        def fun(t, y):
            import jax.numpy as jnp

            return np.asarray(f(t, jnp.asarray(y), jnp.asarray(p0)))

        _REFERENCES[name] = step_end_reference(fun, y0, ts)
    return _REFERENCES[name]


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    from stiffcore.report import table

    methods = ["FBDF", "QNDF", "Rodas5P", "diffsol-jax"]
    headers = ["problem", "rtol", "method", "error", "solve ms", "grad ms", "compile s", "solve/diffsol", "grad/diffsol"]
    print("  ".join(headers), flush=True)
    rows, points = [], {}
    for name in PROBLEMS:
        for rtol in RTOLS:
            results = {m: measure(name, m, rtol) for m in methods}
            anchor = results["diffsol-jax"]
            for method, (err, solve_s, grad_s, compile_s) in results.items():
                row = [name, rtol, method, err, 1e3 * solve_s, 1e3 * grad_s,
                       None if method == "diffsol-jax" else compile_s, solve_s / anchor[1], grad_s / anchor[2]]
                stream_row(row)
                rows.append(row)
                points.setdefault((name, method), []).append((err, solve_s, grad_s))
    print(table(headers, rows))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, name in zip(axes, PROBLEMS):
            for (pname, method), pts in points.items():
                if pname == name:
                    errs, solves, grads = zip(*pts)
                    ax.loglog(errs, solves, "o-", label=f"{method} solve")
                    ax.loglog(errs, grads, "s--", label=f"{method} grad")
            ax.set(title=name, xlabel="weighted error at the outputs", ylabel="time (s)")
            ax.legend(fontsize=7)
        save(fig, out, "jax_multistep.png")


if __name__ == "__main__":
    main()
