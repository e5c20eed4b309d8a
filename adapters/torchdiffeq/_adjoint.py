"""torchdiffeq's adjoint system, recognised so that its Jacobian comes from autograd.

``odeint_adjoint``'s backward pass integrates the augmented state x = (s, y, a, theta)
(the time adjoint, the state, the state adjoint a = dL/dy and the parameter adjoints) with

    s' = -a^T df/dt,   y' = f,   a' = -J^T a,   theta' = -a^T df/dtheta

(Chen et al. 2018, "Neural ordinary differential equations", appendix B), through a
function that detaches its inputs.  Autograd cannot see how that function depends on x,
so a generic stiff solver falls back to finite differences: one evaluation per parameter
for every Jacobian, and a dense LU over all of them (173 s for a width-1024 MLP's
backward pass with Kvaerno5, against 0.15 s for dopri5).

The structure is known, though: nothing depends on s or theta (quadratures), so the Jacobian is
[[J_cc, 0], [J_qc, 0]] with the core (y, a), 2n components, and Newton needs one 2n x 2n
LU (``_linalg.SplitNewton``).  Its columns are Jacobian-vector products of the
augmented right-hand side, which itself is a vector-Jacobian product of the user's f;
both come exactly from double backward through f (a JVP as the derivative of a VJP that
is linear in its cotangent), 2n batched products per Jacobian.

Recognition reads torchdiffeq's closure (``func``, ``adjoint_params``) and its input
wrappers (tuple flattening, time reversal); anything unexpected leaves the function
unrecognised and the generic path in place.
"""

from __future__ import annotations

import math

import torch

from ._linalg import SplitJacobian

_DYNAMICS = ("torchdiffeq._impl.adjoint", "OdeintAdjointMethod.backward.<locals>.augmented_dynamics")
_WRAPPERS = "torchdiffeq._impl.misc"


def recognise(func) -> AugmentedDynamics | None:
    """The augmented dynamics behind torchdiffeq's wrappers, or None for any other function."""
    sign = 1.0            # the solver sees sign * F(time_sign * t, x)
    time_sign = 1.0
    shapes = None
    while type(func).__module__ == _WRAPPERS:
        name = type(func).__name__
        if name == "_ReverseFunc":
            sign, time_sign = sign * float(func.mul), -time_sign
        elif name == "_TupleFunc":
            shapes = func.shapes
        elif name != "_PerturbFunc":  # perturbation only nudges t at grid points we do not ask for
            return None
        func = func.base_func
    if shapes is None or (getattr(func, "__module__", None), getattr(func, "__qualname__", None)) != _DYNAMICS:
        return None
    closure = dict(zip(func.__code__.co_freevars, (cell.cell_contents for cell in func.__closure__ or ())))
    try:
        forward, params = closure["func"], closure["adjoint_params"]
    except (KeyError, ValueError):
        return None
    shapes = [tuple(s) for s in shapes]
    if (len(shapes) != 3 + len(params) or shapes[0] != () or shapes[1] != shapes[2]
            or shapes[3:] != [tuple(p.shape) for p in params]):
        return None
    return AugmentedDynamics(forward, tuple(params), shapes[1], sign, time_sign)


class AugmentedDynamics:
    """Exact derivatives of torchdiffeq's augmented adjoint dynamics on the solver's flat layout."""

    def __init__(self, func, params: tuple, state_shape: tuple, sign: float, time_sign: float):
        self.func, self.params = func, params
        self.state_shape = state_shape
        self.n = math.prod(state_shape)
        self.sign, self.time_sign = sign, time_sign
        self.lo, self.hi = 1, 1 + 2 * self.n    # the core (y, a) in x = (s, y, a, theta)

    def _augmented(self, t, x):
        """F(t, x) as torchdiffeq computes it, but with the graph kept to (t, y, a)."""
        n, shape = self.n, self.state_shape
        t = t.detach().requires_grad_(True)
        y = x[1:1 + n].detach().reshape(shape).requires_grad_(True)
        a = x[1 + n:1 + 2 * n].detach().reshape(shape).requires_grad_(True)
        f = self.func(t, y)
        grads = torch.autograd.grad(f, (t, y, *self.params), -a, create_graph=True, allow_unused=True)
        # s' = -a^T df/dt whatever t_requires_grad says: torchdiffeq detaches t and then sets
        # requires_grad on the same tensor in place, so its vjp_t is never None for an f of t
        parts = [grads[0], f, *grads[1:]]
        like = (t, y, y, *self.params)
        F = torch.cat([(torch.zeros_like(v) if g is None else g).reshape(-1) for g, v in zip(parts, like)])
        return F, (t, y, a)

    def _jvps(self, t, x, tangents: torch.Tensor) -> torch.Tensor:
        """dF . v for each row v of ``tangents`` ((k, 1 + 2n): the directions in (t, y, a)), as (k, len(x)).

        Double backward: u -> (dF/d(t, y, a))^T u is linear in u, so its derivative in u
        along v is dF . v."""
        with torch.enable_grad():
            F, inputs = self._augmented(t, x)
            u = torch.zeros_like(F, requires_grad=True)
            pulled = torch.autograd.grad(F, inputs, u, create_graph=True, allow_unused=True)
            k, n = tangents.shape[0], self.n
            directions = (tangents[:, :1].reshape(k), tangents[:, 1:1 + n].reshape(k, *self.state_shape),
                          tangents[:, 1 + n:].reshape(k, *self.state_shape))
            pairs = [(g, d) for g, d in zip(pulled, directions) if g is not None and g.requires_grad]
            out = None
            if pairs:
                out = torch.autograd.grad([g for g, _ in pairs], u, [d for _, d in pairs],
                                          is_grads_batched=True, allow_unused=True)[0]
        if out is None:   # F is constant in (t, y, a)
            return torch.zeros(k, x.numel(), dtype=x.dtype, device=x.device)
        return out.detach()

    def jacobian(self, t, x: torch.Tensor) -> SplitJacobian:
        """dG/dx of the solver's G(t, x) = sign F(time_sign t, x), x on the (1, N) layout."""
        x = x.reshape(-1)
        core = 2 * self.n
        tangents = torch.zeros(core, 1 + core, dtype=x.dtype, device=x.device)
        tangents[:, 1:] = torch.eye(core, dtype=x.dtype, device=x.device)
        columns = self.sign * self._jvps(self.time_sign * t, x, tangents).T      # (N, 2n)
        coupling = torch.cat([columns[:self.lo], columns[self.hi:]])
        return SplitJacobian(columns[None, self.lo:self.hi], coupling[None], self.lo, self.hi)

    def time_derivative(self, t, x: torch.Tensor) -> torch.Tensor:
        """dG/dt on the (1, N) layout."""
        x = x.reshape(-1)
        tangent = torch.zeros(1, 1 + 2 * self.n, dtype=x.dtype, device=x.device)
        tangent[0, 0] = 1.0
        return (self.sign * self.time_sign) * self._jvps(self.time_sign * t, x, tangent)

    def depends_on_time(self, t, x: torch.Tensor) -> bool:
        """Whether autograd sees the user's f depend on t (then so does every part of F)."""
        with torch.enable_grad():
            tt = torch.as_tensor(t).detach().clone().requires_grad_(True)
            y = x.reshape(-1)[1:1 + self.n].detach().reshape(self.state_shape)
            out = self.func(self.time_sign * tt, y)
            return bool(out.requires_grad) and torch.autograd.grad(
                out, tt, torch.ones_like(out), allow_unused=True)[0] is not None
