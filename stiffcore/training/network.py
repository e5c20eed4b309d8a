"""The recipes' perceptron as framework-neutral weights.

Weights are a list of (W, b) pairs with W of shape (out, in), the layout of both
``equinox.nn.Linear`` and ``torch.nn.Linear``, so a checkpoint written by one backend
loads in the other.  Initialisation happens here, once, in numpy: the backends start
from identical networks for a given seed.
"""

from __future__ import annotations

import numpy as np

from .recipes import Recipe


def layer_sizes(recipe: Recipe, n_species: int) -> list:
    """[n, width, ..., width, n]: ``depth`` hidden layers between state and derivative."""
    return [n_species, *[recipe.width] * recipe.depth, n_species]


def init_weights(recipe: Recipe, n_species: int, seed: int = 0) -> list:
    """Glorot-uniform weights and zero biases (Glorot & Bengio 2010), Flux's ``Dense``
    default that the paper's code trained from."""
    rng = np.random.default_rng(seed)
    sizes = layer_sizes(recipe, n_species)
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (n_in + n_out))
        weights.append((rng.uniform(-limit, limit, (n_out, n_in)), np.zeros(n_out)))
    return weights


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """The hidden-layer activation; GELU is the tanh approximation (Hendrycks & Gimpel
    2016), as in NNlib, ``jax.nn.gelu`` and ``torch.nn.GELU(approximate="tanh")``."""
    if name == "tanh":
        return np.tanh(x)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def forward(recipe: Recipe, weights: list, u: np.ndarray) -> np.ndarray:
    """NN(u) in numpy: the reference the backends' networks are tested against."""
    x = np.asarray(u, dtype=float)
    for i, (W, b) in enumerate(weights):
        x = x @ W.T + b
        if i < len(weights) - 1:
            x = activation(recipe.activation, x)
    return x


def check_weights(recipe: Recipe, n_species: int, weights, what: str = "weights") -> list:
    """``weights`` (or AdamW moments in their layout) as float arrays, or ValueError naming
    the layer whose shape is wrong."""
    sizes = layer_sizes(recipe, n_species)
    if len(weights) != len(sizes) - 1:
        raise ValueError(f"recipe {recipe.name!r} has {len(sizes) - 1} layers {sizes}, got {len(weights)} {what} pairs")
    out = []
    for i, ((W, b), n_in, n_out) in enumerate(zip(weights, sizes[:-1], sizes[1:])):
        W, b = np.asarray(W, dtype=float), np.asarray(b, dtype=float)
        if W.shape != (n_out, n_in) or b.shape != (n_out,):
            raise ValueError(f"layer {i} of recipe {recipe.name!r} needs {what} W {(n_out, n_in)} and b {(n_out,)}, "
                             f"got {W.shape} and {b.shape}")
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            raise ValueError(f"layer {i} of the {what} holds NaN or inf")
        out.append((W, b))
    return out
