"""The user's vector field on the solvers' internal (B, n) layout, with its Jacobian.

A state of shape ``batch_shape + event_shape`` (``batch_dims`` leading dimensions that
the user declares independent) is held as a (B, n) matrix, B = prod(batch_shape) (1 when
there is no batch) and n = prod(event_shape).  Jacobians are (B, n, n): one Newton
matrix per batch element, factorised together by ``torch.linalg.lu_factor``.
"""

from __future__ import annotations

import contextlib
import math

import torch

from . import _adjoint
from ._krylov import JacobianAction
from ._linalg import SparseJacobian, pattern_indices

JAC_CHOICES = ("autodiff", "finite_difference")


class VectorField:
    """``func(t, y)`` with shape checks, evaluation counts and Jacobians by ``torch.func``.

    ``jac`` is ``"autodiff"`` (batched vector-Jacobian products; differentiable, so Rosenbrock steps
    backpropagate exactly), ``"finite_difference"`` (forward differences, n evaluations,
    not differentiable) or a callable ``jac(t, y)`` returning df/dy for the state's shape:
    ``y.shape + y.shape`` without a batch, ``(*batch_shape, n, n)`` with one.
    ``jac_sparsity`` (an n x n pattern per system) makes Jacobians sparse (:class:`SparseJacobian`
    from coloured forward-mode products); ``krylov`` (GMRES's options) makes them
    :class:`~._krylov.JacobianAction` s, products only.
    """

    def __init__(self, func, y0: torch.Tensor, batch_dims: int = 0, jac=None, jac_sparsity=None, krylov=None):
        if not callable(func):
            raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
        if not (isinstance(batch_dims, int) and 0 <= batch_dims < max(y0.ndim, 1)):
            raise ValueError(f"option batch_dims must be an integer in [0, {max(y0.ndim - 1, 0)}] for y0 of shape "
                             f"{tuple(y0.shape)}, got {batch_dims!r}")
        self.func = func
        self.shape = y0.shape
        self.batch = math.prod(y0.shape[:batch_dims])
        self.n = math.prod(y0.shape[batch_dims:])
        if jac is None:
            jac = "autodiff"
        if isinstance(jac, str) and jac not in JAC_CHOICES:
            raise ValueError(f"option jac must be a callable or one of {JAC_CHOICES}, got {jac!r}")
        if not (isinstance(jac, str) or callable(jac)):
            raise TypeError(f"option jac must be a callable jac(t, y) or one of {JAC_CHOICES}, got {type(jac).__name__}")
        self.jac = jac
        self.pattern = None if jac_sparsity is None else self._pattern(jac_sparsity, jac)
        #: GMRES's options where the Newton systems are solved matrix-free (else None)
        self.krylov = krylov
        if krylov is not None and (jac_sparsity is not None or jac != "autodiff"):
            raise ValueError("linear_solver='gmres' works on Jacobian-vector products: it takes neither jac_sparsity "
                             f"nor jac={jac!r}")
        self._pattern_checked = False
        # torchdiffeq's adjoint system detaches its input: its Jacobian comes from the user's f
        self.adjoint = _adjoint.recognise(func) if jac == "autodiff" and y0.ndim == 1 else None
        self._probed = False
        self._parameters_need_grad = True   # until _probe looks: func's own tensors may need grad
        self._time_dependent = None
        self._after = self._before = None   # the discontinuities the current step lies between
        self.nfev = self.njev = 0

    @contextlib.contextmanager
    def between(self, after=None, before=None):
        """Evaluations at or before ``after`` see f just after it, those at or beyond ``before``
        see f just before it (the time one ulp inside, in the state's dtype, as torchdiffeq's
        ``perturb``): a step between discontinuities (``jump_t``, ``perturb=True``) never
        evaluates f on their far side, even a stage whose node lies beyond the step (Kvaerno4/5)."""
        outer = self.window
        self._after, self._before = after, before
        try:
            yield
        finally:
            self._after, self._before = outer   # nested windows (a recomputed step) restore theirs

    @property
    def window(self) -> tuple:
        """(after, before) of the enclosing :meth:`between` (None, None outside one)."""
        return self._after, self._before

    def _time(self, t, like: torch.Tensor):
        """t, moved one ulp inside the window set by :meth:`between` where it touches an end."""
        if self._before is not None and bool(t >= self._before):
            return _nudge(self._before, like.dtype, -1.0)
        if self._after is not None and bool(t <= self._after):
            return _nudge(self._after, like.dtype, 1.0)
        return t

    def _evaluate(self, t, y: torch.Tensor) -> torch.Tensor:
        return self.func(self._time(t, y), y.reshape(self.shape))

    def callback(self, name: str):
        """torchdiffeq's step callback ``name`` set on func (a no-op when there is none)."""
        return getattr(self.func, name, _no_callback)

    def flat(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(self.batch, self.n)

    def unflat(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(self.shape)

    def __call__(self, t, y: torch.Tensor) -> torch.Tensor:
        """f on the (B, n) layout."""
        self.nfev += 1
        out = self._evaluate(t, y)
        if not isinstance(out, torch.Tensor) or out.shape != self.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"func(t, y) must return a tensor of the state's shape {tuple(self.shape)}, got {got}")
        if out.dtype != y.dtype:  # (it failed later, inside lu_solve, naming neither)
            raise TypeError(f"func(t, y) returned {out.dtype} for a {y.dtype} state; return y's dtype "
                            f"(cast parameters or constants with .to(y.dtype))")
        return out.reshape(self.batch, self.n)

    def depends_on_time(self, t, y: torch.Tensor) -> bool:
        """Whether autograd sees f depend on t (probed once); autonomous problems skip df/dt."""
        if self._time_dependent is None and self.adjoint is not None:
            self._time_dependent = self.adjoint.depends_on_time(t, y)
        if self._time_dependent is None:
            with torch.enable_grad():
                tt = t.detach().clone().requires_grad_(True)
                out = self(tt, y.detach())
                self._time_dependent = bool(out.requires_grad) and torch.autograd.grad(
                    out, tt, torch.ones_like(out), allow_unused=True)[0] is not None
        return self._time_dependent

    def time_derivative(self, t, y: torch.Tensor) -> torch.Tensor:
        """df/dt at (t, y) by forward-mode autodiff (non-autonomous Rosenbrock stages)."""
        self.nfev += 1
        if self.adjoint is not None:
            return self.adjoint.time_derivative(t, y)
        _, f_t = torch.func.jvp(lambda tt: self._evaluate(tt, y), (t,), (torch.ones_like(t),))
        return f_t.reshape(self.batch, self.n)

    def jacobian(self, t, y: torch.Tensor):
        """df/dy at (t, y) as (B, n, n); differentiable under grad mode with ``jac="autodiff"``.
        For torchdiffeq's adjoint system, a ``SplitJacobian`` (its quadratures split off)."""
        self.njev += 1
        if self.adjoint is not None:
            return self.adjoint.jacobian(t, y)
        if self.pattern is not None:
            entries = self._sparse_entries(t, y)   # first: it may detect the pattern
            return SparseJacobian(self.pattern, entries)
        if self.krylov is not None:
            return JacobianAction(self, t, y, differentiable=torch.is_grad_enabled())
        if callable(self.jac):
            J = self.jac(t, y.reshape(self.shape))
            if not isinstance(J, torch.Tensor) or J.numel() != self.batch * self.n * self.n:
                got = tuple(J.shape) if isinstance(J, torch.Tensor) else type(J).__name__
                raise ValueError(f"option jac must return df/dy with {self.batch * self.n * self.n} entries "
                                 f"(batch {self.batch} x {self.n} x {self.n}), got {got}")
            return J.reshape(self.batch, self.n, self.n).to(y.dtype)
        self.probe_once(t, y)
        if self.jac == "finite_difference":
            return self._finite_difference(t, y)
        return self._autodiff_jacobian(t, y)

    def _pattern(self, jac_sparsity, jac):
        from stiffcore.linalg import JacobianPattern

        if jac != "autodiff":
            raise ValueError("option jac_sparsity assembles the Jacobian by forward-mode autodiff: it needs "
                             f"jac='autodiff' (the default), got jac={jac!r}")
        if isinstance(jac_sparsity, str):
            if jac_sparsity != "detect":
                raise ValueError(f"option jac_sparsity must be an n x n pattern or 'detect', got {jac_sparsity!r}")
            return "detect"   # found at the first Jacobian, where (t, y) are known
        pattern = jac_sparsity if isinstance(jac_sparsity, JacobianPattern) else JacobianPattern(jac_sparsity)
        if pattern.n != self.n:
            raise ValueError(f"option jac_sparsity is {pattern.n} x {pattern.n}, but the state has {self.n} unknowns"
                             " per system")
        return pattern

    def _sparse_entries(self, t, y) -> torch.Tensor:
        """J's entries on the pattern, (B, nnz), from one forward-mode product per colour of its
        columns (Curtis, Powell & Reid); differentiable under grad mode.  The first call checks
        the pattern against a probe product and names an entry it misses."""
        if isinstance(self.pattern, str):
            self.pattern = self._detect_pattern(t, y)
        P = self.pattern
        seeds = torch.as_tensor(P.seeds(), dtype=y.dtype, device=y.device)

        def product(seed):
            return torch.func.jvp(lambda v: self._evaluate(t, v), (y,), (seed.expand_as(y),))[1]

        compressed = torch.func.vmap(product)(seeds).reshape(P.colours, self.batch, self.n)   # (colours, B, n)
        self.nfev += P.colours   # a forward-mode product costs about one evaluation
        rows, _, groups = pattern_indices(P, "csr", y.device)
        entries = compressed[groups, :, rows].T                                            # (B, nnz)
        if not self._pattern_checked:
            self._check_pattern(t, y, entries)
        return entries

    def _detect_pattern(self, t, y):
        """``jac_sparsity='detect'``: the pattern found once by forward-mode products with unit
        vectors at the first Jacobian's point and near it (:func:`stiffcore.linalg.detect_pattern`),
        the union over the batch's systems.  n products once: O(n^2) time, O(nnz) memory."""
        from stiffcore.linalg import detect_pattern, detection_block, probe_points

        points = [torch.as_tensor(p, dtype=y.dtype, device=y.device)
                  for p in probe_points(y.detach().cpu().numpy())]

        def columns(start, stop):
            k = stop - start
            seeds = torch.zeros(k, self.n, dtype=y.dtype, device=y.device)
            seeds[torch.arange(k), torch.arange(start, stop)] = 1
            total = 0
            with torch.no_grad():
                for p in points:
                    product = torch.func.vmap(lambda s, p=p: torch.func.jvp(
                        lambda v: self._evaluate(t, v), (p,), (s.expand(self.batch, self.n).reshape(p.shape),))[1])
                    total = total + product(seeds).reshape(k, self.batch, self.n).abs().sum(1)
            return total.cpu().numpy()

        self.nfev += 2 * self.n
        return detect_pattern(columns, self.n, detection_block(self.batch * self.n))

    def _check_pattern(self, t, y, entries) -> None:
        P = self.pattern
        self._pattern_checked = True
        with torch.no_grad():
            v = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(0)).to(y.device)
            exact = torch.func.jvp(lambda u: self._evaluate(t, u), (y,), (v,))[1].reshape(self.batch, self.n)
            rows, cols, _ = pattern_indices(P, "csr", y.device)
            terms = entries * v[:, cols]
            assembled = torch.zeros_like(exact).index_add_(1, rows, terms)
            scale = torch.zeros_like(exact).index_add_(1, rows, terms.abs())
            bad = (exact - assembled).abs() > 1e-6 * (scale + exact.abs()) + torch.finfo(y.dtype).tiny
        if bool(bad.any()):   # one read, once per solve
            b, row = (int(i) for i in bad.nonzero()[0])
            with torch.enable_grad():
                u = y.detach().requires_grad_(True)
                out = self._evaluate(t, u).reshape(self.batch, self.n)
                e = torch.zeros_like(out)
                e[b, row] = 1
                values = torch.autograd.grad(out, u, e)[0].reshape(self.batch, self.n)[b]
            raise ValueError(P.describe_misses(row, values.detach().cpu().numpy()))

    def directional_derivative(self, t, y: torch.Tensor, f0: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """J v on the (B, n) layout by one forward difference (any func, no autograd needed;
        accurate to about sqrt(eps), enough for spectrum estimates), f0 = f(t, y)."""
        with torch.no_grad():
            scale = torch.finfo(y.dtype).eps ** 0.5 * (1.0 + torch.linalg.vector_norm(y))
            step = scale / torch.linalg.vector_norm(v).clamp(min=torch.finfo(y.dtype).tiny)
            return (self(t, y + step * v) - f0) / step

    def _autodiff_jacobian(self, t, y) -> torch.Tensor:
        """Rows by one batched vector-Jacobian product (cheaper than jacrev for small n).
        Batch elements are independent, so the cotangent e_j on every element gives row j
        of each element's Jacobian.  Under grad mode the result stays differentiable with
        respect to y's history and func's parameters; where neither needs grad it is plain
        data (a graph to a private leaf would make the solution require grad for nothing)."""
        differentiable = torch.is_grad_enabled() and (y.requires_grad or self._parameters_need_grad)
        with torch.enable_grad():
            v = y if (differentiable and y.requires_grad) else y.detach().requires_grad_(True)
            out = self(t, v)
            self.nfev -= 1
            if not out.requires_grad:   # f does not depend on y at all
                return torch.zeros(self.batch, self.n, self.n, dtype=y.dtype, device=y.device)
            eye = torch.eye(self.n, dtype=y.dtype, device=y.device)[:, None, :].expand(self.n, self.batch, self.n)
            rows = torch.autograd.grad(out, v, eye, is_grads_batched=True, create_graph=differentiable,
                                       allow_unused=True)[0]
        if rows is None:
            return torch.zeros(self.batch, self.n, self.n, dtype=y.dtype, device=y.device)
        J = rows.permute(1, 0, 2)
        return J if differentiable else J.detach()

    def probe_once(self, t, y) -> None:
        """:meth:`_probe` on the first call with ``jac="autodiff"`` (and not for torchdiffeq's
        adjoint system, whose Jacobian comes from the user's func)."""
        if self.jac == "autodiff" and not self._probed and self.adjoint is None:
            self._probe(t, y)

    def _probe(self, t, y) -> None:
        """Fall back to finite differences when autograd cannot see f's dependence on y (a
        func that detaches its input, such as torchdiffeq's adjoint dynamics), and note
        whether f depends on tensors of its own that need grad (a network's weights)."""
        self._probed = True
        with torch.enable_grad():
            self._parameters_need_grad = self(t, y.detach()).requires_grad
            v = y.detach().requires_grad_(True)
            out = self(t, v)
            connected = out.requires_grad and torch.autograd.grad(
                out, v, torch.ones_like(out), allow_unused=True)[0] is not None
        if not connected:
            self.jac = "finite_difference"

    def _finite_difference(self, t, y) -> torch.Tensor:
        with torch.no_grad():
            f0 = self(t, y)
            eps = torch.finfo(y.dtype).eps ** 0.5
            step = eps * torch.clamp(y.abs(), min=1.0)
            cols = []
            for j in range(self.n):
                e = torch.zeros_like(y)
                e[:, j] = step[:, j]
                cols.append((self(t, y + e) - f0) / step[:, j:j + 1])
            return torch.stack(cols, dim=-1)


def _no_callback(*args, **kwargs) -> None:
    return None


def _nudge(t: torch.Tensor, dtype: torch.dtype, direction: float) -> torch.Tensor:
    """t one ulp of ``dtype`` towards ``direction``, its gradient passed through unchanged."""
    t = t.to(dtype)
    return t + (torch.nextafter(t, t + direction) - t).detach()
