"""PNG figures for the CLI.  matplotlib is imported only here, only when a plot is asked for."""

from __future__ import annotations

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend, or RuntimeError naming the extra to install."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("plots need matplotlib: pip install 'stiffcore[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_decay(curves: dict, path: str, title: str) -> str:
    """Log-log |R'(z)| against |z|; ``curves`` maps a label to (abs_z, abs_dR, predicted exponent)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    styles = ["-", "--", ":", "-."]
    for i, (label, (x, y, exponent)) in enumerate(curves.items()):
        ax.loglog(x, y, styles[i // 10 % 4], label=f"{label} (|z|^{exponent:g})", linewidth=1.4)
    ax.set_xlabel("|z| = |h lambda| (z on the negative real axis)")
    ax.set_ylabel("|R'(z)|")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reversible(abs_z, rates: dict, bands: dict, path: str, title: str) -> str:
    """Forward and reconstruction growth per step against |z| for several couplings.

    ``rates`` maps coupling -> (forward, reconstruction); ``bands`` maps coupling ->
    UnstableBand, whose forward intervals are shaded.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    for k, (lam, (fwd, rec)) in enumerate(rates.items()):
        colour = f"C{k}"
        for ax, values in zip(axes, (fwd, rec)):
            ax.loglog(abs_z, values, color=colour, label=f"coupling {lam:g}")
        for left, right in bands[lam].forward:
            axes[0].axvspan(-right, -left, color=colour, alpha=0.12)
        for z in bands[lam].singular:
            axes[0].axvline(-z, color=colour, linestyle=":", linewidth=0.8)
    for ax, name in zip(axes, ("forward growth rho(M)", "reconstruction growth rho(M^-1)")):
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xlabel("|z| (z = h mu on the negative real axis)")
        ax.set_ylabel(f"{name} per step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("shaded: unstable band; dotted: pole of backward base step", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def decay_curve(stability, abs_z: np.ndarray) -> np.ndarray:
    return np.abs(stability.derivative(-abs_z))


def plot_training_history(history, species, path: str, title: str) -> str:
    """Loss and each species' scaled error (left), gradient norm (right), against epoch."""
    plt = pyplot()
    errors = np.array(history.errors).reshape(len(history), len(species))
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax_loss.semilogy(epochs, history.loss, "k", linewidth=1.2, label="loss")
    worst = np.argsort(errors[-1])[::-1][:5] if len(history) else []
    for i in worst:
        ax_loss.semilogy(epochs, errors[:, i], linewidth=0.8, alpha=0.8, label=f"{species[i]} scaled MAE")
    ax_loss.axhline(1e-2, color="grey", linestyle=":", linewidth=0.8)
    ax_grad.semilogy(epochs, history.grad_norm, "C3", linewidth=0.8)
    ax_loss.set(xlabel="epoch", ylabel="loss / scaled mean absolute error", title=title)
    ax_grad.set(xlabel="epoch", ylabel="gradient norm (before normalisation)")
    ax_loss.legend(fontsize=8)
    for ax in (ax_loss, ax_grad):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_species_fit(data, prediction, path: str, title: str, log_time: bool = False) -> str:
    """One panel per species: the training data (dots) and the neural ODE at the same times."""
    plt = pyplot()
    n = len(data.species)
    cols = 1 if n <= 3 else min(5, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols if cols > 1 else 7, 2.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.plot(data.times, data.y[:, i], "o", markersize=3.5, label="data")
        ax.plot(data.times, prediction[:, i], "-", linewidth=1.5, label="neural ODE")
        if log_time:
            ax.set_xscale("log")
        ax.set_ylabel(data.species[i])
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
