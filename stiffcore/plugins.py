"""Backend discovery: pluggy hook specifications, the plugin manager and ``install()``.

A backend (the SciPy, torch and JAX adapters, or a third-party package) is a plain
module with ``@hookimpl`` functions (or an :class:`Announcement` object), announced under
the ``stiffcore.backends`` entry-point group.  It should import its framework lazily
(:class:`LazyHook`), so discovery stays cheap; an entry point that fails to import becomes
an unavailable backend naming the error::

    # mypackage/stiffcore_backend.py
    from stiffcore.plugins import Backend, hookimpl

    @hookimpl
    def stiffcore_backend():
        return Backend(name="mybackend", methods=("backward_euler",),
                       one_step_gradient=_grad, install=_install)

    # pyproject.toml
    [project.entry-points."stiffcore.backends"]
    mybackend = "mypackage.stiffcore_backend"
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pluggy

PROJECT = "stiffcore"
ENTRY_POINT_GROUP = "stiffcore.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class Backend:
    """What a backend announces about itself.

    Required:

    ``one_step_gradient(method_id, z, h, y0)``
        d y_1 / d lambda for one step of ``method_id`` on y' = lambda y with z = h*lambda
        (array in, array out), computed by the backend's own differentiation.

    Optional (the conformance checks that need one are skipped when it is None):

    ``n_step_gradient(method_id, z, h, y0, n_steps)``
        d y_N / d lambda after ``n_steps`` fixed steps.
    ``reversible_run(base_id, z, h, y0, n_steps, coupling, perturbation=0.0, gradient=True)``
        the reversible scheme on y' = lambda y for each z = h*lambda of the 1-D array ``z``
        (independent problems: run them as one diagonal system or a batch): a dict of
        arrays shaped like ``z`` with ``y_n`` (after n steps), ``y0_rebuilt`` (after
        multiplying y_n by 1 + perturbation and taking as many backward steps) and
        ``dy_dlambda`` (of y_n; with ``gradient=False`` the suite does not read it, so a
        backend may skip differentiating and return NaN).
    ``multistep_gradient(method_id, z, h, y0, n_steps=None)``
        d y_N / d lambda of the fixed-order multistep formula ``method_id`` (one of
        ``multistep_methods``: bdf1..5, ndf1..4) on y' = lambda y, at the fixed step h, from
        the exact starting values y_j = e^{j z} y0 (j < the formula's step count, each
        depending on lambda), through the backend's own multistep solver and differentiation;
        N defaults to the step count + 4.
    ``rober_gradient(method_id, times, steps=None, rtol=None)``
        the gradient with respect to log k of sum(y(times)**2) on ROBER, on the given
        step grid ``steps`` (fixed steps) or adaptively at ``rtol``.

    ``install()`` registers the solvers into the ecosystem; ``requires`` names the modules
    the backend needs (it is unavailable if any is missing); ``reversible_bases`` lists the
    base methods its reversible scheme accepts.  ``load_error`` is set by discovery for an
    entry point that could not be imported (the backend is then unavailable and says why).
    """

    name: str
    methods: Sequence[str]
    one_step_gradient: Callable
    install: Callable[[], None] = lambda: None
    n_step_gradient: Callable | None = None
    reversible_run: Callable | None = None
    rober_gradient: Callable | None = None
    multistep_gradient: Callable | None = None
    reversible_bases: Sequence[str] = ()
    multistep_methods: Sequence[str] = ()
    supports_complex: bool = False
    requires: Sequence[str] = field(default_factory=tuple)
    description: str = ""
    load_error: str = ""

    def __post_init__(self) -> None:
        from .catalogue import get_method

        for method_id in (*self.methods, *self.reversible_bases):
            get_method(method_id)  # raises with the list of valid ids
        for method_id in self.multistep_methods:
            if get_method(method_id).is_one_step:
                raise ValueError(f"{self.name}: multistep_methods lists the one-step method {method_id!r}")
        if self.multistep_methods and self.multistep_gradient is None:
            raise ValueError(f"{self.name}: multistep_methods need a multistep_gradient hook")

    @property
    def available(self) -> bool:
        return not self.load_error and all(importlib.util.find_spec(mod) is not None for mod in self.requires)


@dataclass(frozen=True)
class LazyHook:
    """The hook ``module.attribute``, imported when first called: an announcement built of
    these imports no framework, so discovery (and ``stiffcore backends``) stays fast."""

    module: str
    attribute: str

    def __call__(self, *args, **kwargs):
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:  # installed (``requires`` found it) but broken: say which and why
            raise RuntimeError(f"{self.module} could not be imported for its hook {self.attribute!r}: "
                               f"{type(exc).__name__}: {exc}") from exc
        return getattr(module, self.attribute)(*args, **kwargs)


class Announcement:
    """A plugin object announcing one prepared :class:`Backend`, for an entry point that
    names an object (``name = "package.module:object"``) rather than a module."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @hookimpl
    def stiffcore_backend(self) -> Backend:
        return self.backend


def hooks_from_linear_gradient(gradient: Callable):
    """``(one_step_gradient, n_step_gradient)`` for a :class:`Backend` from one function
    ``gradient(method_id, z, h, y0, n_steps)``: d y_N / d lambda on y' = lambda y."""

    def one_step_gradient(method_id, z, h=1.0, y0=1.0):
        """d y_1 / d lambda for one step on y' = lambda y."""
        return gradient(method_id, z, h, y0, 1)

    def n_step_gradient(method_id, z, h=1.0, y0=1.0, n_steps=10):
        """d y_N / d lambda after ``n_steps`` fixed steps on y' = lambda y."""
        return gradient(method_id, z, h, y0, n_steps)

    return one_step_gradient, n_step_gradient


class BackendSpec:
    """Hook specifications a backend plugin implements."""

    @hookspec
    def stiffcore_backend(self) -> Backend:
        """Announce a backend: its name, methods, gradient hook and installer."""


class _Unloadable:
    """Stands in for an entry point whose module could not be imported (its framework is
    missing, say): announces an unavailable backend that names the error, so one missing
    framework does not break discovery of the others."""

    def __init__(self, name: str, error: Exception) -> None:
        self.name, self.error = name, f"{type(error).__name__}: {error}"

    def _refuse(self, *args, **kwargs):
        raise RuntimeError(f"backend {self.name!r} could not be loaded: {self.error}")

    @hookimpl
    def stiffcore_backend(self) -> Backend:
        return Backend(name=self.name, methods=(), one_step_gradient=self._refuse, install=self._refuse,
                       load_error=self.error, description="could not be loaded")


def plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs registered and (by default) entry points loaded;
    an entry point that fails to import becomes an unavailable backend naming the error."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(BackendSpec)
    if load_entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except ImportError as exc:
                plugin = _Unloadable(ep.name, exc)
            pm.register(plugin, name=ep.name)
    return pm


def discover_backends(pm: pluggy.PluginManager | None = None) -> dict[str, Backend]:
    """Every announced backend, keyed by name (available or not)."""
    pm = pm or plugin_manager()
    found: dict[str, Backend] = {}
    for backend in pm.hook.stiffcore_backend():
        if not isinstance(backend, Backend):
            raise TypeError(f"stiffcore_backend() must return a Backend, got {type(backend).__name__}")
        if backend.name in found:
            raise ValueError(f"two plugins announce a backend named {backend.name!r}")
        found[backend.name] = backend
    return dict(sorted(found.items()))


def select_backends(names: Sequence[str] | None = None, found: dict | None = None) -> list[Backend]:
    """The named backends (default: every available one); an unknown name, or one whose
    framework is missing, raises ``ValueError``."""
    found = discover_backends() if found is None else found
    if names is None:
        return [b for b in found.values() if b.available]
    chosen = []
    for name in names:
        if name not in found:
            raise ValueError(f"unknown backend {name!r}; installed backends: {', '.join(found) or 'none'}")
        backend = found[name]
        if backend.load_error:
            raise ValueError(f"backend {name!r} could not be loaded: {backend.load_error}")
        if not backend.available:
            raise ValueError(f"backend {name!r} needs {', '.join(backend.requires)}, which is not installed")
        chosen.append(found[name])
    return chosen


def install(backends: Sequence[str] | None = None, pm: pluggy.PluginManager | None = None) -> list[str]:
    """Register the solvers of the named (default: every available) backend into its ecosystem.

    Returns the names installed.  Naming a backend that is unknown or whose framework is
    missing raises ``ValueError``.
    """
    chosen = select_backends(backends, discover_backends(pm))
    for backend in chosen:
        backend.install()
    return [b.name for b in chosen]
