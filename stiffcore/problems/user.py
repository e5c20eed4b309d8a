"""A user's own model as a :class:`Problem`: ``module:function`` or ``path/to/file.py:function``.

The function takes no arguments and returns either a :class:`Problem` or a mapping with
``rhs(t, y, p)``, ``y0``, ``t_span`` and ``params``, and optionally ``jac``, ``jac_p``,
``param_names``, ``species``, ``name``, ``description`` and ``log_params`` (True when
``params`` are already logarithms of rates).  Modules are imported with the
current directory first on the path, as ``python -m`` does, so a model beside the user's
data works from the command line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .base import Problem

REQUIRED = ("rhs", "y0", "t_span", "params")
OPTIONAL = ("jac", "jac_p", "param_names", "species", "name", "description", "log_params")


def _import(target: str):
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"model file {target!r} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import model module {target!r}: {exc}") from exc


def load_user_problem(spec: str) -> Problem:
    """The :class:`Problem` that ``function()`` of ``module:function`` returns."""
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        raise ValueError(f"a user model is 'module:function' or 'file.py:function', got {spec!r}")
    module = _import(target)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{target!r} has no function {attribute!r}"
                         + ("" if factory is None else f" ({attribute} is a {type(factory).__name__})"))
    return as_problem(factory(), origin=spec)


def as_problem(obj, origin: str = "the model") -> Problem:
    """``obj`` (a Problem or a mapping of its fields) checked and as a Problem."""
    if isinstance(obj, Problem):
        return obj
    if not isinstance(obj, Mapping):
        raise ValueError(f"{origin} must return a stiffcore Problem or a mapping with keys {', '.join(REQUIRED)}; "
                         f"got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise ValueError(f"{origin}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown keys {', '.join(unknown)}"] if unknown
                                                                       else []))
            + f" (required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})")
    if not callable(obj["rhs"]):
        raise ValueError(f"{origin}: rhs must be callable as rhs(t, y, p)")
    y0 = np.asarray(obj["y0"], dtype=float).reshape(-1)
    params = np.asarray(obj["params"], dtype=float).reshape(-1)
    t_span = tuple(float(t) for t in obj["t_span"])
    if len(t_span) != 2 or not t_span[1] > t_span[0]:
        raise ValueError(f"{origin}: t_span must be (t0, t1) with t1 > t0, got {obj['t_span']!r}")
    names = tuple(obj.get("param_names") or (f"p{j + 1}" for j in range(params.size)))
    species = tuple(obj.get("species") or (f"y{i + 1}" for i in range(y0.size)))
    if len(names) != params.size or len(species) != y0.size:
        raise ValueError(f"{origin}: {len(names)} param_names for {params.size} params, "
                         f"{len(species)} species for {y0.size} states")
    out = np.shape(obj["rhs"](t_span[0], y0, params))
    if out != y0.shape:
        raise ValueError(f"{origin}: rhs(t0, y0, params) has shape {out}, y0 has {y0.shape}")
    name = obj.get("name") or origin
    return Problem(name=name, description=obj.get("description", name), y0=y0, t_span=t_span, params=params,
                   param_names=names, species=species, rhs=obj["rhs"], jac=obj.get("jac"), jac_p=obj.get("jac_p"),
                   log_params=bool(obj.get("log_params", False)))
