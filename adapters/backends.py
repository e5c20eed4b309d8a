"""The adapters' announcements to stiffcore's plugin registry: the entry points ``scipy``,
``torch``, ``jax`` and ``diffrax`` name the objects below.

Announcing imports no framework (``stiffcore backends`` lists all four in a fraction of a
second, where importing torch and JAX took about 10 s): every hook is a
:class:`~stiffcore.plugins.LazyHook` into the adapter's ``backend`` module, which imports
SciPy, torch or JAX when the conformance suite first calls it.  Whether a backend is
available is decided from ``requires`` alone, without importing it.
"""

from __future__ import annotations

from stiffcore.catalogue import method_ids
from stiffcore.plugins import Announcement, Backend, LazyHook

#: The implicit one-step methods the SciPy and torch adapters offer.
IMPLICIT = tuple(method_ids(one_step=True, implicit=True))
#: diffrax's own solvers of catalogue methods, by catalogue id (checked by the suite too).
DIFFRAX_NATIVE = {"backward_euler": "ImplicitEuler", "kvaerno3": "Kvaerno3", "kvaerno4": "Kvaerno4",
                  "kvaerno5": "Kvaerno5"}
#: The diffrax adapter's own solvers: diffrax already has the Kvaerno methods.
JAX_METHODS = tuple(m for m in IMPLICIT if not m.startswith("kvaerno"))

_LINEAR = ("one_step_gradient", "n_step_gradient")
_ALL = (*_LINEAR, "reversible_run", "rober_gradient", "install")
#: The fixed-order formulas of FBDF and QNDF, checked from exact starting values.
MULTISTEP = tuple(method_ids("multistep"))


def _hooks(module: str, names=_ALL) -> dict:
    return {name: LazyHook(f"stiffcore.adapters.{module}", name) for name in names}


scipy = Announcement(Backend(
    name="scipy", methods=IMPLICIT, reversible_bases=IMPLICIT, requires=("scipy",), multistep_methods=MULTISTEP,
    description="scipy.integrate.solve_ivp methods (FBDF/QNDF included) and discrete sensitivities",
    **_hooks("scipy.backend", (*_ALL, "multistep_gradient"))))

torch = Announcement(Backend(
    name="torch", methods=IMPLICIT, reversible_bases=tuple(method_ids(one_step=True)),
    requires=("torch", "torchdiffeq"), multistep_methods=MULTISTEP,
    description="torchdiffeq.odeint method strings (fbdf/qndf included), gradients by autograd (implicit "
                "stages and correctors by the IFT)",
    **_hooks("torchdiffeq.backend", (*_ALL, "multistep_gradient"))))

jax = Announcement(Backend(
    name="jax", methods=JAX_METHODS, reversible_bases=JAX_METHODS, requires=("jax", "diffrax", "equinox"),
    multistep_methods=MULTISTEP,
    description="stiffcore.adapters.diffrax solvers (FBDF/QNDF included), gradients by jax.grad (implicit "
                "stages and correctors by the IFT)",
    **_hooks("diffrax.backend", (*_ALL, "multistep_gradient"))))

diffrax = Announcement(Backend(
    name="diffrax", methods=tuple(DIFFRAX_NATIVE), requires=("jax", "diffrax", "equinox"),
    description="diffrax's own ImplicitEuler and Kvaerno3/4/5, checked against the core",
    **_hooks("diffrax.native_backend", (*_LINEAR, "install"))))
