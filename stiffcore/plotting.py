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


def method_styles(labels) -> dict:
    """A distinct look per label (colour, line style, marker), so 20-odd curves stay apart:
    ten colours, the line style changing with each ten, a marker per colour."""
    markers = "osD^v<>phX"
    return {label: dict(color=f"C{i % 10}", linestyle=("-", "--", ":", "-.")[i // 10 % 4], marker=markers[i % 10])
            for i, label in enumerate(labels)}


def plot_decay(groups: dict, path: str, title: str) -> str:
    """Log-log |R'(z)| against |z|, one panel per group (family); ``groups`` maps a panel
    title to ``{label: (abs_z, abs_dR, predicted exponent)}``."""
    plt = pyplot()
    cols = min(len(groups), 2) or 1
    rows = -(-len(groups) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.6 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, (group, curves) in zip(axes.flat, groups.items()):
        style = method_styles(curves)
        for label, (x, y, exponent) in curves.items():
            ax.loglog(x, y, label=f"{label} (|z|^{exponent:g})", linewidth=1.4, markevery=40, markersize=4,
                      **style[label])
        ax.set_title(group)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("|z| = |h lambda| (z on the negative real axis)")
    for ax in axes[:, 0]:
        ax.set_ylabel("|R'(z)|")
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(title)
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
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), sharex=True)
    for k, (lam, (fwd, rec)) in enumerate(rates.items()):
        colour, line = f"C{k}", ("-", "--", "-.", ":")[k % 4]
        for ax, values in zip(axes, (fwd, rec)):
            ax.loglog(abs_z, values, color=colour, linestyle=line, label=f"coupling {lam:g}")
        for i, (left, right) in enumerate(bands[lam].forward):
            axes[0].axvspan(-right, -left, color=colour, alpha=0.12,
                            label=f"unstable band, coupling {lam:g}" if i == 0 else None)
    poles = sorted({float(z) for band in bands.values() for z in band.singular})  # the base's: one per z
    for i, z in enumerate(poles):
        axes[0].axvline(-z, color="k", linestyle=":", linewidth=0.9,
                        label="pole of the backward base step" if i == 0 else None)
    for ax, name in zip(axes, ("forward growth rho(M)", "reconstruction growth rho(M^-1)")):
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xlabel("|z| (z = h mu on the negative real axis)")
        ax.set_ylabel(f"{name} per step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("forward steps (shaded: where rho(M) > the threshold)", fontsize=10)
    axes[1].set_title("backward reconstruction", fontsize=10)
    fig.suptitle(title)
    fig.text(0.5, 0.01, "M: the 2x2 matrix of one reversible step on y' = mu y, acting on the pair (y, z) "
             "(McCallum & Foster); rho: its spectral radius, the growth per step (above 1: unstable)",
             ha="center", fontsize=8.5)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
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
