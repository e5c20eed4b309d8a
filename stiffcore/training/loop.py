"""The training loop shared by every backend: progress, stopping, checkpoints, figures.

A backend supplies ``Trainer(recipe, data, weights, moments=None)`` with ``step() -> (loss,
gradient norm, per-species scaled errors)`` (one AdamW update), ``predict() -> y`` at the
current weights, ``weights() -> [(W, b), ...]`` and ``moments() -> Moments`` (AdamW's
state in the same layout).  Everything else happens once, here.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import History, load_checkpoint, save_checkpoint
from .data import TrainingData, make_data
from .network import check_weights, init_weights
from .progress import ProgressBar
from .recipes import Recipe, get_recipe

#: where each backend's ``Trainer`` lives
TRAINERS = {"jax": "stiffcore.adapters.diffrax.training", "torch": "stiffcore.adapters.torchdiffeq.training"}


@dataclass
class TrainingResult:
    """What a training run did: ``status`` is ``"target reached"``, ``"epochs done"``,
    ``"time limit"``, ``"interrupted"`` or ``"diverged: <why>"``; ``errors`` are the
    final weights' per-species scaled mean absolute errors."""

    recipe: Recipe
    backend: str
    data: TrainingData
    weights: list
    history: History
    prediction: np.ndarray
    status: str
    files: dict = field(default_factory=dict)

    @property
    def errors(self) -> np.ndarray:
        return self.data.scaled_errors(self.prediction)

    def summary(self) -> str:
        h = self.history
        seconds = h.seconds[-1] if h.seconds else 0.0
        worst = int(np.argmax(self.errors))
        return (f"{self.recipe.name} on {self.backend}: {self.status} after {len(h)} epochs, {seconds:.1f} s; "
                f"scaled MAE per species max {self.errors[worst]:.3e} ({self.data.species[worst]}), "
                f"mean {self.errors.mean():.3e}")


def load_trainer_class(backend: str):
    if backend not in TRAINERS:
        raise ValueError(f"unknown training backend {backend!r}; choose one of {', '.join(TRAINERS)}")
    try:
        return importlib.import_module(TRAINERS[backend]).Trainer
    except ImportError as exc:  # the extras are named like the backends
        raise RuntimeError(f"the {backend} recipe needs {exc.name}: pip install 'stiffcore[{backend}]'") from exc


def train(recipe: Recipe | str, backend: str = "jax", *, epochs: int | None = None, seed: int = 0,
          target: float | None = None, max_seconds: float | None = None, resume: str | None = None,
          out_dir: str | None = None, checkpoint_every: int = 500, progress: bool = True) -> TrainingResult:
    """Train the recipe's neural ODE on its data with ``backend`` ("jax" or "torch").

    Stops after ``epochs`` (default: the recipe's), when every species' scaled mean
    absolute error is at most ``target``, after ``max_seconds`` of this run's wall time, on Ctrl-C,
    or when the loss turns non-finite.  ``resume`` continues from a checkpoint's weights,
    history and AdamW moments.  With ``out_dir``, writes ``<recipe>-<backend>.npz`` (every
    ``checkpoint_every`` epochs and at the end), ``-loss.png`` and ``-species.png``.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    epochs = recipe.epochs if epochs is None else epochs
    if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    for name, value in (("target", target), ("max_seconds", max_seconds)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite (or None), got {value!r}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every!r}")
    trainer_class = load_trainer_class(backend)
    data = make_data(recipe)
    n = data.y.shape[1]
    history = History()
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        if checkpoint.recipe != recipe.name:
            raise ValueError(f"checkpoint {resume} is for recipe {checkpoint.recipe!r}, not {recipe.name!r}")
        weights, history = check_weights(recipe, n, checkpoint.weights), checkpoint.history
        moments = checkpoint.moments
        moments.first, moments.second = (check_weights(recipe, n, m, f"{kind} AdamW moments")
                                         for m, kind in ((moments.first, "first"), (moments.second, "second")))
    else:
        weights, moments = init_weights(recipe, n, seed), None
    trainer = trainer_class(recipe, data, weights, moments)

    def save(path):
        return save_checkpoint(path, recipe.name, backend, seed, trainer.weights(), history, trainer.moments())

    stem = os.path.join(out_dir, f"{recipe.name}-{backend}") if out_dir else None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    bar = ProgressBar(epochs) if progress else None
    offset = history.seconds[-1] if history.seconds else 0.0
    start, status = time.perf_counter(), "epochs done"
    try:
        for epoch in range(epochs):
            loss, grad_norm, errors = trainer.step()
            elapsed = time.perf_counter() - start  # this run's; the history counts from the first run
            if not np.isfinite(loss):
                status = (f"diverged: loss {loss} at epoch {len(history) + 1} (the solve failed or overflowed; "
                          "the weights are those of the last finite step)")
                break
            history.append(loss, grad_norm, errors, offset + elapsed)
            if bar:
                bar.update(epoch, force=epoch == epochs - 1, loss=float(loss), worst=float(np.max(errors)))
            # errors were measured before this step's update: confirm on the weights we would return
            reached = target is not None and np.max(errors) <= target
            if reached and np.max(data.scaled_errors(trainer.predict())) <= target:
                status = "target reached"
                break
            if max_seconds is not None and elapsed >= max_seconds:
                status = "time limit"
                break
            if stem and (epoch + 1) % checkpoint_every == 0:
                save(stem + ".npz")
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        if bar:
            bar.close()
    result = TrainingResult(recipe=recipe, backend=backend, data=data, weights=trainer.weights(), history=history,
                            prediction=trainer.predict(), status=status)
    if stem:
        result.files["checkpoint"] = save(stem + ".npz")
        result.files.update(write_figures(result, stem))
    return result


def write_figures(result: TrainingResult, stem: str) -> dict:
    from ..plotting import plot_species_fit, plot_training_history

    title = f"{result.recipe.name} ({result.backend}, {result.recipe.method})"
    return {"loss": plot_training_history(result.history, result.data.species, stem + "-loss.png", title),
            "species": plot_species_fit(result.data, result.prediction, stem + "-species.png", title,
                                        log_time=result.recipe.log_time)}
