"""Just enough array-API to write a right-hand side once for numpy, torch and jax."""

from __future__ import annotations

import sys

import numpy as np


def namespace(x):
    """The array module of ``x``: torch, jax.numpy or numpy.  (By isinstance against modules
    already imported: an array of a library not imported yet cannot exist, and TorchDynamo
    traces this where it could not trace string methods on the type's module name.)"""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):   # tracers included
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
