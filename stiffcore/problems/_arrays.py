"""Just enough array-API to write a right-hand side once for numpy, torch and jax."""

from __future__ import annotations

import numpy as np


def namespace(x):
    """The array module of ``x``: torch, jax.numpy or numpy."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        return torch
    if module.startswith("jax") or module.startswith("jaxlib"):
        import jax.numpy as jnp

        return jnp
    return np


def constant_like(values, like):
    """``values`` (numpy data) as an array of ``like``'s library, dtype and device."""
    xp = namespace(like)
    if xp is np:
        return np.asarray(values, dtype=np.result_type(like, float))
    if xp.__name__ == "torch":
        return xp.as_tensor(values, dtype=like.dtype, device=like.device)
    return xp.asarray(values, dtype=like.dtype)


def stack_last(items, like):
    """Stack equal-shaped arrays along a new last axis."""
    return namespace(like).stack(items, -1)
