"""Training checkpoints as ``.npz``: weights, AdamW's moments, the loss history, the recipe.

Weights and moments are stored framework-neutral (see :mod:`.network`), so a checkpoint
written by the JAX recipe resumes or evaluates in torch and the other way round.  The
moments matter: AdamW restarted from zero moves every weight by about the learning rate in
its first steps, which throws a converged ROBER model back from 1e-2 to 6e-2 scaled error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

FORMAT = "stiffcore-training-1"


@dataclass
class History:
    """Per epoch: the loss, the gradient's norm before any normalisation, each species'
    scaled mean absolute error, and the wall time since training started (seconds)."""

    loss: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def append(self, loss: float, grad_norm: float, errors, seconds: float) -> None:
        self.loss.append(float(loss))
        self.grad_norm.append(float(grad_norm))
        self.errors.append(np.asarray(errors, dtype=float))
        self.seconds.append(float(seconds))

    def __len__(self) -> int:
        return len(self.loss)

    def arrays(self, n_species: int) -> dict:
        return dict(loss=np.array(self.loss), grad_norm=np.array(self.grad_norm), seconds=np.array(self.seconds),
                    errors=np.array(self.errors).reshape(len(self), n_species))


@dataclass
class Moments:
    """AdamW's state: ``step`` updates taken, and the first and second moment estimates
    laid out like the weights ([(W, b), ...])."""

    step: int
    first: list
    second: list


@dataclass
class Checkpoint:
    recipe: str
    backend: str
    seed: int
    weights: list
    history: History
    moments: Moments


def _pairs(prefix: str, pairs: list) -> dict:
    out = {f"{prefix}W{i}": W for i, (W, _) in enumerate(pairs)}
    out.update({f"{prefix}b{i}": b for i, (_, b) in enumerate(pairs)})
    return out


def save_checkpoint(path: str, recipe_name: str, backend: str, seed: int, weights: list, history: History,
                    moments: Moments) -> str:
    n_species = weights[-1][1].size
    arrays = {**_pairs("", weights), **_pairs("m1_", moments.first), **_pairs("m2_", moments.second)}
    arrays.update(history.arrays(n_species))
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, format=FORMAT, recipe=recipe_name, backend=backend, seed=seed, n_layers=len(weights),
             adam_step=moments.step, **arrays)
    os.replace(tmp, path)  # an interrupted save never leaves a half-written checkpoint
    return path


def load_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; ValueError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f or str(f["format"]) != FORMAT:
                raise KeyError(f"no {FORMAT!r} format marker")
            pairs = lambda prefix: [(f[f"{prefix}W{i}"], f[f"{prefix}b{i}"]) for i in range(int(f["n_layers"]))]  # noqa: E731
            moments = Moments(step=int(f["adam_step"]), first=pairs("m1_"), second=pairs("m2_"))
            history = History(loss=list(f["loss"]), grad_norm=list(f["grad_norm"]), errors=list(f["errors"]),
                              seconds=list(f["seconds"]))
            return Checkpoint(recipe=str(f["recipe"]), backend=str(f["backend"]), seed=int(f["seed"]),
                              weights=pairs(""), history=history, moments=moments)
    except (OSError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable stiffcore training checkpoint: {exc}") from exc
