"""Wall time of the stiff neural ODE training recipes (Kim et al. 2021) on this machine.

Part "rober": the ROBER recipe (50 log-spaced times in [1e-5, 1e5]; 6 hidden layers of 5
GELU units; du/dt = NN(u) y_scale / t_scale; loss MAE / y_scale; AdamW lr 5e-3;
Rosenbrock23 with backpropagation through the solve) on each backend from the same initial
weights, until every species' scaled MAE is <= 1e-2 or ``--budget`` seconds pass.  The
wall time includes data generation and JIT compilation.  The paper reports 2 hours on one
CPU; the target here is 10 minutes.

Part "baseline": the paper's unscaled baseline (1 hidden layer of 50 tanh units, no output
or loss scaling) for the same budget on JAX, to show it does not learn B.

Part "pollu": the POLLU recipe (20 times on [0, 60], 3 hidden layers of 10 GELU units,
gradient normalised to norm 100) on each backend, to the same target or ``--budget``.

Part "portability": the checkpoints the "rober" part wrote, evaluated (no training) in every
backend: a model trained in one framework fits the data as well in the other.

Runs go one after another: two trainings sharing the 2 cores slow torch's small-matrix
kernels by orders of magnitude (OpenMP threads contend).  Writes the checkpoints and PNGs to
benchmarks/out/training/ and benchmarks/out/training_benchmark_<part>.png.

    python benchmarks/training_benchmark.py [--part rober|baseline|pollu|portability|all] [--backend jax torch]
                                            [--budget SECONDS]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from _common import OUT, figure_tools, save  # noqa: E402

from stiffcore.report import table  # noqa: E402
from stiffcore.training import get_recipe, load_checkpoint, make_data, train  # noqa: E402
from stiffcore.training.loop import load_trainer_class  # noqa: E402

TARGET = 1e-2


def run(recipe, backend: str, budget: float, epochs: int = 10**7):
    print(f"\n{recipe.name} on {backend} (budget {budget:g} s)", flush=True)
    result = train(recipe, backend, epochs=epochs, target=TARGET, max_seconds=budget, out_dir=str(OUT / "training"))
    print(result.summary(), flush=True)
    return result


def row(result):
    h = result.history
    seconds = np.array(h.seconds)
    warm = (seconds[-1] - seconds[0]) / max(len(h) - 1, 1)  # per epoch, after the first (compilation)
    worst = int(np.argmax(result.errors))
    return [result.recipe.name, result.backend, result.status, len(h), float(seconds[-1]), float(seconds[0]),
            1e3 * warm, float(result.errors[worst]), result.data.species[worst]]


def portability(backends) -> None:
    """Each saved ROBER checkpoint's scaled errors when its weights are solved by each backend."""
    recipe = get_recipe("rober")
    data = make_data(recipe)
    rows = []
    for trained_on in backends:
        path = OUT / "training" / f"rober-{trained_on}.npz"
        if not path.exists():
            print(f"no {path}: run --part rober --backend {trained_on} first")
            continue
        try:
            saved = load_checkpoint(str(path))
        except ValueError as exc:
            print(f"{exc}: run --part rober --backend {trained_on} again")
            continue
        for solved_by in backends:
            errors = data.scaled_errors(load_trainer_class(solved_by)(recipe, data, saved.weights).predict())
            rows.append([trained_on, len(saved.history), solved_by, *map(float, errors)])
    print("\nROBER checkpoints solved by each backend (scaled MAE per species):")
    print(table(["trained on", "epochs", "solved by", *data.species], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=["rober", "baseline", "pollu", "portability", "all"])
    parser.add_argument("--backend", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per run (default: %(default)s)")
    args = parser.parse_args()
    results = []
    if args.part in ("rober", "all"):
        results += [run(get_recipe("rober"), backend, args.budget) for backend in args.backend]
    if args.part in ("baseline", "all"):
        results.append(run(get_recipe("rober").baseline(), "jax", args.budget))
    if args.part in ("pollu", "all"):
        results += [run(get_recipe("pollu"), backend, args.budget) for backend in args.backend]
    if args.part in ("portability", "all"):
        portability(args.backend)
    if not results:
        return

    print(f"\nTime to scaled MAE <= {TARGET:g} on every species (wall time includes data and compilation):")
    print(table(["recipe", "backend", "status", "epochs", "wall s", "first epoch s", "ms/epoch", "worst MAE",
                 "species"], [row(r) for r in results]))
    tools = figure_tools()
    if tools:
        plt, out = tools
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for r in results:
            label = f"{r.recipe.name} ({r.backend})"
            worst = np.array(r.history.errors).max(axis=1)
            axes[0].semilogy(r.history.seconds, worst, linewidth=0.8, label=label)
            axes[1].semilogy(np.arange(1, len(r.history) + 1), worst, linewidth=0.8, label=label)
        for ax, xlabel in zip(axes, ("wall time (s)", "epoch")):
            ax.axhline(TARGET, color="k", linestyle=":", linewidth=0.8)
            ax.set(xlabel=xlabel, ylabel="worst species' scaled MAE")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        save(fig, out, f"training_benchmark_{args.part}.png")


if __name__ == "__main__":
    main()
