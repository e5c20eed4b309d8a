"""The ``stiffcore`` command line: decay tables, reversible stability maps, conformance, diagnostics, training."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile

import numpy as np

from . import catalogue, reversible
from .report import json_safe, table, wrap

DECAY_POINTS = (-10.0, -1e3, -1e6)
#: the decay figure's panels
FAMILY_TITLES = {"explicit": "explicit Runge-Kutta", "diagonally_implicit": "diagonally implicit Runge-Kutta",
                 "fully_implicit": "fully implicit Runge-Kutta", "rosenbrock": "Rosenbrock", "multistep": "BDF"}
#: the decay table's family column, short enough for the table to fit 100 columns
FAMILY_LABELS = {"explicit": "ERK", "diagonally_implicit": "DIRK", "fully_implicit": "FIRK",
                 "rosenbrock": "Rosenbrock", "multistep": "BDF"}


def _decay_rows(method_ids):
    rows = []
    for mid in method_ids:
        m = catalogue.get_method(mid)
        stab = m.stability
        cls = stab.classify()
        row = dict(
            id=m.id, name=m.name, family=m.family, order=m.order, embedded_order=m.embedded_order,
            stages=m.stages, stiffly_accurate=m.stiffly_accurate, a_stable=cls.a_stable,
            l_stable=cls.l_stable, r_at_infinity=cls.r_at_infinity, decay_exponent=cls.decay_exponent,
            dR={str(z): float(abs(stab.derivative(z))) for z in DECAY_POINTS}, reference=m.reference,
        )
        if m.family == "multistep":
            row["a_alpha_degrees"] = stab.a_alpha_degrees
        rows.append(row)
    return rows


def _round_off_to_zero(value: float, floor: float = 1e-8) -> float:
    """R(-inf) as shown: the 1e-16 to 1e-10 left where it is exactly 0 (stiffly accurate
    methods, evaluated at a large finite z) is round-off, not a value (JSON keeps it)."""
    return 0.0 if abs(value) < floor else value


def cmd_decay(args) -> int:
    ids = args.method or list(catalogue.METHODS)
    rows = _decay_rows(ids)
    if args.json:
        print(json.dumps(json_safe(rows), indent=2))
    else:
        headers = ["method", "family", "order", "A", "L", "R(-inf)", "e",
                   *(f"|R'({z:.0e})|".replace("e+0", "e").replace("e+", "e") for z in DECAY_POINTS)]
        print(table(headers, [
            [r["id"], FAMILY_LABELS.get(r["family"], r["family"]), r["order"], r["a_stable"], r["l_stable"],
             _round_off_to_zero(r["r_at_infinity"]),
             r["decay_exponent"], *r["dR"].values()] for r in rows]))
        bdf = [r for r in rows if "a_alpha_degrees" in r]
        if bdf:
            print("\n" + wrap("BDF: R is the principal root xi(z); A(alpha) angles: "
                              + ", ".join(f"{r['id']} {r['a_alpha_degrees']:.2f} deg" for r in bdf)))
        print("\n" + wrap("A, L: A- and L-stable. e: the decay exponent, |R'(z)| ~ |z|^e as z -> -inf (Fronk & "
                           "Petzold 2025); positive means growth."))
    if args.plot:
        from .plotting import decay_curve, plot_decay

        abs_z = np.geomspace(1e-2, 1e10, 400)
        groups: dict = {}
        for r in rows:
            m = catalogue.get_method(r["id"])
            if m.is_implicit:
                curve = (abs_z, decay_curve(m.stability, abs_z), r["decay_exponent"])
                groups.setdefault(FAMILY_TITLES[r["family"]], {})[r["id"]] = curve
        path = plot_decay(groups, args.plot, "Gradient decay |R'(z)| of the implicit methods, by family "
                                             "(the exponent e of |R'(z)| ~ |z|^e in brackets)")
        print(f"wrote {path}", file=sys.stderr)
    return 0


REVERSIBLE_POINTS = (-1e-3, -1e-2, -0.1, -0.5, -1.0, -1.2, -2.0, -10.0, -1e3, -1e6, -1e8)


def cmd_reversible(args) -> int:
    base = catalogue.get_method(args.base)
    couplings = [reversible.check_coupling(c) for c in args.coupling]
    bands = {lam: reversible.unstable_band(base, lam, threshold=args.threshold) for lam in couplings}
    z = np.array(REVERSIBLE_POINTS)
    rates = {lam: reversible.growth_rates(base, z, lam) for lam in couplings}
    if args.json:
        out = dict(base=base.id, threshold=args.threshold, z=list(z), couplings=[
            dict(coupling=lam, forward=list(rates[lam][0]), reconstruction=list(rates[lam][1]),
                 forward_band=bands[lam].forward, reconstruction_band=bands[lam].reconstruction,
                 singular=bands[lam].singular, peak_forward=bands[lam].peak_forward,
                 peak_forward_z=bands[lam].peak_forward_z) for lam in couplings])
        print(json.dumps(json_safe(out), indent=2))
    else:
        print(f"Reversible scheme (McCallum & Foster) around {base.id}: growth per step on y' = mu y, z = h mu\n")
        headers = ["z", *(f"fwd@{lam:g}" for lam in couplings), *(f"rec@{lam:g}" for lam in couplings)]
        print(table(headers, [[float(zz), *(float(rates[lam][0][i]) for lam in couplings),
                               *(float(rates[lam][1][i]) for lam in couplings)] for i, zz in enumerate(z)]))
        print(f"\nUnstable bands on [-1e8, -1e-6] (growth > {args.threshold:g} per step):")
        for lam in couplings:
            b = bands[lam]
            fmt_iv = lambda ivs: ", ".join(f"[{a:.4g}, {c:.4g}]" for a, c in ivs) or "none"  # noqa: E731
            print(wrap(f"  coupling {lam:g}: forward {fmt_iv(b.forward)}; reconstruction {fmt_iv(b.reconstruction)}",
                       indent="    "))
            print(wrap(f"    peak forward {b.peak_forward:.4g} at z = {b.peak_forward_z:.4g}; "
                       f"peak reconstruction {b.peak_reconstruction:.4g} at z = {b.peak_reconstruction_z:.4g}"
                       + (f"; backward base step singular at z = {', '.join(f'{s:g}' for s in b.singular)}"
                          if b.singular else ""), indent="    "))
    if args.plot:
        from .plotting import plot_reversible

        abs_z = np.geomspace(1e-6, 1e8, 2000)
        curves = {lam: reversible.growth_rates(base, -abs_z, lam) for lam in couplings}
        path = plot_reversible(abs_z, curves, bands, args.plot, f"Reversible {base.id}: growth per step")
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_backends(args) -> int:
    from .plugins import discover_backends

    found = discover_backends()
    rows = [[b.name, b.available, len(b.methods), b.description] for b in found.values()]
    if args.json:
        print(json.dumps([dict(name=b.name, available=b.available, methods=list(b.methods))
                          for b in found.values()], indent=2))
    elif rows:
        print(table(["backend", "available", "methods", "description"], rows))
    else:
        print("no backends installed (entry-point group 'stiffcore.backends')")
    return 0


def cmd_conformance(args) -> int:
    from rich.console import Console

    from stiffcore.conformance import default_jobs, run

    from .report import progress_bar

    # progress and each finished row on stderr as they come; the table (or JSON) on stdout at the end
    with progress_bar(Console(stderr=True), transient=True) as bar:
        task = bar.add_task("conformance: discovering backends", total=None)

        def progress(done, total, label, results):
            for r in results:
                status = {True: "[green]pass[/]", False: "[bold red]FAIL[/]", None: "[yellow]skip[/]"}[r.passed]
                row = f"{r.backend:8s} {r.method:16s} {r.check:16s} {status}  max rel err {r.max_rel_error:.3g}"
                bar.console.print(row, highlight=False)
            bar.update(task, total=total, completed=done, description=f"conformance: {label}")

        report = run(backends=args.backend, methods=args.method, cross_backend=not args.no_cross_backend,
                     full=args.full, progress=progress, jobs=args.jobs or default_jobs())
    if not report.results:
        raise ValueError("no backend is installed and available (entry-point group 'stiffcore.backends')")
    print(report.to_json() if args.json else report.table())
    if args.plot:
        print(f"wrote {report.plot(args.plot)}", file=sys.stderr)
    return 0 if report.passed else 1


#: where each backend's ``diagnose_problem(problem, method, rtol, times)`` lives
DIAGNOSE = {"scipy": "stiffcore.adapters.scipy.sensitivity", "torch": "stiffcore.adapters.torchdiffeq.diagnose",
            "jax": "stiffcore.adapters.diffrax.diagnose"}


def cmd_diagnose(args) -> int:
    import importlib

    from .problems import get_problem

    problem = get_problem(args.problem)
    # what the gradients actually are: d/dp and d/dlog p of sum(y(t)^2) at log-spaced outputs
    t0, t1 = problem.t_span
    times = np.logspace(np.log10(max(t1 * 1e-10, 1e-5)), np.log10(t1), 50)
    collect = importlib.import_module(DIAGNOSE[args.backend]).diagnose_problem
    with _working(f"diagnose {problem.name}: solving with {args.method} on {args.backend} at rtol {args.rtol:g}, "
                  f"then df/dy, df/dp and the measured gradient ({len(problem.params)} parameter"
                  f"{'' if len(problem.params) == 1 else 's'})"):
        report, grad = collect(problem, args.method, args.rtol, times)
    print(report.table())
    predicted = np.array([p.predicted_gradient for p in report.parameters])
    print("\n" + wrap(f"Gradient of sum(y(t)^2) at 50 log-spaced times: predicted from R(z), R'(z) and the "
                      f"Jacobians against measured through {args.backend}:", indent=""))
    print(table(["parameter", "predicted d/dp", "measured d/dp", "predicted d/dlog p", "measured d/dlog p"],
                [[n, float(q), float(g), float(q * k), float(g * k)]
                 for n, q, g, k in zip(problem.param_names, predicted, grad, problem.params)]))
    print(wrap(calibration_summary(predicted, grad, problem.params)))
    if args.plot:
        measured = {n: float(np.log10(abs(g))) if g else float("nan") for n, g in zip(problem.param_names, grad)}
        title = (f"{problem.name}: {report.method} on {args.backend}, rtol {args.rtol:g}; "
                 "loss L = sum(y(t)^2) at 50 log-spaced times")
        print(f"wrote {report.plot(args.plot, measured, title)}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from .training import get_recipe, train

    recipe = get_recipe(args.recipe)
    if args.unscaled:
        recipe = recipe.baseline()
    if args.method:
        recipe = recipe.with_method(args.method)
    if args.backend == "jax":  # the CLI is the program, so it may choose JAX's precision (a library may not)
        import jax

        jax.config.update("jax_enable_x64", True)
    print(f"training {recipe.name} on {args.backend}: {recipe.depth} hidden layer(s) of {recipe.width} "
          f"{recipe.activation} units, {'scaled (Kim et al. 2021)' if recipe.scaled else 'no scaling'}, "
          f"{recipe.method} rtol {recipe.rtol:g}, AdamW lr {recipe.learning_rate:g}"
          + (f", gradient normalised to {recipe.gradient_norm:g}" if recipe.gradient_norm else ""), file=sys.stderr)
    result = train(recipe, args.backend, epochs=args.epochs, seed=args.seed, target=args.target,
                   max_seconds=args.max_seconds, resume=args.resume, out_dir=args.out,
                   checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    print(result.summary())
    print(table(["species", "MAE / range", "range (max - min)"],
                [[s, float(e), float(r)] for s, e, r in zip(result.data.species, result.errors, result.data.y_range)]))
    for kind, path in result.files.items():
        print(f"wrote {kind}: {path}", file=sys.stderr)
    return 1 if result.status.startswith("diverged") else 0


def _working(message: str):
    """A rich spinner with the elapsed time while a long step runs (on a terminal), or the
    message as one line (a log): work of seconds to minutes is never silent."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if console.is_terminal:
        return console.status(message)
    console.print(f"{message} ...", soft_wrap=True)
    return contextlib.nullcontext()


def calibration_summary(predicted, measured, params) -> str:
    """Predicted against measured in decades, and the spread log-p removes (nonzero gradients)."""
    predicted, measured, params = map(np.asarray, (predicted, measured, params))
    ok = (predicted != 0) & (measured != 0)
    miss = np.abs(np.log10(np.abs(predicted[ok] / measured[ok])))

    def spread(x):
        x = np.log10(np.abs(x[ok]))
        return x.max() - x.min()

    return (f"predicted vs measured: within {miss.max():.2f} decades (median {np.median(miss):.2f}); "
            f"spread over parameters: d/dp {spread(measured):.1f} decades measured ({spread(predicted):.1f} "
            f"predicted), d/dlog p {spread(measured * params):.1f} ({spread(predicted * params):.1f})")


def _tolerance(text: str) -> float:
    """argparse type: a relative tolerance in [100 eps, 1) (below it solvers only grind)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    floor = 100 * np.finfo(float).eps
    if not floor <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [{floor:.3g}, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _writable(folder: str) -> str | None:
    """Why ``folder`` cannot take a file, or None (a real write: permission bits lie to root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _png_path(text: str) -> str:
    """argparse type: a PNG path whose folder exists and is writable, checked before any work."""
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder!r} does not exist")
    why = _writable(folder)
    if why:
        raise argparse.ArgumentTypeError(f"cannot write in {folder!r}: {why}")
    return text


def _out_dir(text: str) -> str:
    """argparse type: an output directory that exists or can be created, checked before any work
    (by a real write in its nearest existing folder; nothing is created here)."""
    existing = os.path.abspath(text)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    why = "not a folder" if not os.path.isdir(existing) else _writable(existing)
    if why:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {existing!r}: {why}")
    return text


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="stiffcore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stiffcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("decay", help="stability classification and gradient decay |R'(z)| of every method")
    p.add_argument("--method", nargs="+", help="method ids (default: the whole catalogue)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", type=_png_path, default="stiffcore-decay.png",
                   help="PNG path (default: %(default)s)")
    p.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="skip the PNG")
    p.set_defaults(func=cmd_decay)

    p = sub.add_parser("reversible", help="forward and reconstruction growth of the reversible scheme")
    p.add_argument("--base", default="backward_euler", help="one-step base method id (default: %(default)s)")
    p.add_argument("--coupling", nargs="+", type=float, default=[0.5, 0.9, 0.99, 0.999],
                   help="couplings lambda in (0, 1) (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=1.01, help="growth per step called unstable")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", type=_png_path, default="stiffcore-reversible.png",
                   help="PNG path (default: %(default)s)")
    p.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="skip the PNG")
    p.set_defaults(func=cmd_reversible)

    p = sub.add_parser("conformance", help="check every backend's gradients against the core's predictions")
    p.add_argument("--backend", nargs="+", help="backend names (default: every available backend)")
    p.add_argument("--method", nargs="+", help="method ids (default: every method a backend offers)")
    p.add_argument("--no-cross-backend", action="store_true", help="skip the ROBER cross-backend comparison")
    p.add_argument("--full", action="store_true",
                   help="the exhaustive sweep: z on half-decades, every stable reversible z (about 2x the time)")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes, each running whole backend/method units (default: one per core, at most 4)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--plot", type=_png_path, default="stiffcore-conformance.png",
                   help="PNG path (default: %(default)s)")
    p.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="skip the PNG")
    p.set_defaults(func=cmd_conformance)

    p = sub.add_parser("diagnose", help="stiffness and gradient-attenuation report for a test problem or your model")
    p.add_argument("problem", help="rober, pollu, vanderpol, or your model as module:function or file.py:function "
                                   "(a function returning a stiffcore Problem or a dict with rhs, y0, t_span, params)")
    p.add_argument("--backend", default="scipy", choices=list(DIAGNOSE),
                   help="backend that solves (default: %(default)s)")
    p.add_argument("--method", default="RadauIIA5", help="solver (default: %(default)s)")
    p.add_argument("--rtol", type=_tolerance, default=1e-6, help="relative tolerance; atol = 1e-4 rtol")
    p.add_argument("--plot", type=_png_path, default="stiffcore-diagnose.png",
                   help="PNG path (default: %(default)s)")
    p.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="skip the PNG")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("train", help="train a stiff neural ODE on ROBER or POLLU data (Kim et al. 2021)")
    p.add_argument("recipe", help="rober or pollu")
    p.add_argument("--backend", default="jax", choices=["jax", "torch"], help="(default: %(default)s)")
    p.add_argument("--epochs", type=int, help="epochs (default: the recipe's, 20000 rober, 5000 pollu)")
    p.add_argument("--target", type=float, help="stop when every species' scaled MAE is at most this (e.g. 1e-2)")
    p.add_argument("--max-seconds", type=float, help="stop after this much wall time")
    p.add_argument("--unscaled", action="store_true",
                   help="the paper's failing baseline: 1 hidden layer of 50 tanh units, no scaling")
    p.add_argument("--method", help="stiff catalogue method (default: the recipe's, rosenbrock23)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: %(default)s)")
    p.add_argument("--resume", help="continue from this checkpoint (.npz: weights, history and AdamW's moments)")
    p.add_argument("--out", type=_out_dir, default="stiffcore-train",
                   help="directory for checkpoint and PNGs (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="epochs between checkpoints (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("backends", help="list the backends found through entry points")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_backends)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as exc:
        print(f"stiffcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what finished was already printed (conformance streams its rows)
        print(f"stiffcore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
