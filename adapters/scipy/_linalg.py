"""Jacobians and the linear solves with Newton/Rosenbrock matrices for the SciPy solvers.

The Jacobian may be a callable, a constant dense or sparse matrix, or absent (then
forward differences, as in SciPy's own ``Radau`` and ``BDF``: ``num_jac`` when dense, one
difference per colour of ``jac_sparsity`` on the core's :class:`JacobianPattern` when
sparse, O(nnz) in memory).  Matrices ``(shift I - J)`` are LU-factorised once per
distinct shift and reused until J or the step size changes (Hairer & Wanner IV.8)
(:class:`ShiftedLU`), or never formed: GMRES on Jacobian-vector products
(:class:`KrylovSolve`, Brown & Hindmarsh 1989, as CVODE's SPGMR).
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.linalg import get_lapack_funcs, lu_factor, lu_solve
from scipy.sparse import csc_matrix, eye, issparse
from scipy.sparse.linalg import LinearOperator, aslinearoperator, gmres
from scipy.integrate._ivp.common import num_jac

from stiffcore.linalg import JacobianPattern, detect_pattern, probe_points
from stiffcore.linalg.sparse_lu import SingularMatrixError, superlu
from stiffcore.linalg.differences import difference_increments, difference_jacobian


#: Upper bound on ``num_jac``'s per-column increment factors.  ``num_jac`` raises a column's
#: factor tenfold whenever its difference is lost in round-off and has no upper bound; SciPy's
#: Radau and BDF call it rarely, but a Rosenbrock method calls it every step, so a column that
#: f does not depend on for a while (MEDAKZO's v_j while u_j = 0) reached 1e308 after ~300
#: steps and the next increment overflowed.  eps^(1/4) keeps an increment that still resolves a
#: derivative (a quarter of the digits) once the column matters again.
NUM_JAC_MAX_FACTOR = np.finfo(float).eps ** 0.25


#: Dense systems with fewer rows than this run on one BLAS thread.  OpenBLAS hands a 159-row LU
#: or product to its thread pool, and on a shared 2-core machine waking the pool cost up to 100 ms
#: where the work is 0.3 ms: GRI-Mech's RadauIIA5 reverse sensitivities (3 x 53 rows) took
#: 20.8 s with the default pool and 6.9 s on one thread; the solves themselves were unchanged.
ONE_BLAS_THREAD_BELOW = 1000


def blas_threads_for(rows: int):
    """A context that holds BLAS (numpy's and SciPy's OpenBLAS) to one thread when the dense
    systems inside have fewer than ``ONE_BLAS_THREAD_BELOW`` rows, and changes nothing above."""
    if rows >= ONE_BLAS_THREAD_BELOW:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def dense_lu(matrix, singular: str):
    """LAPACK's (lu, piv) of ``matrix``; SingularMatrixError(``singular``) when a pivot is
    non-finite or below eps times the largest."""
    lu, piv = lu_factor(matrix, check_finite=False)
    diag = np.abs(np.diag(lu))
    if not np.all(np.isfinite(lu)) or diag.min() <= np.finfo(float).eps * max(diag.max(), 1e-300):
        raise SingularMatrixError(singular)
    return lu, piv


def shifted(shift, J):
    """shift I - J, sparse (CSC) when J is sparse and dense otherwise."""
    if issparse(J):
        return (shift * eye(J.shape[0], format="csc", dtype=J.dtype) - J).tocsc()
    return shift * np.identity(J.shape[0]) - J


class Factorised:
    """The LU factors of one square matrix, dense (LAPACK) or sparse (SuperLU), for repeated
    solves with it or its transpose; a complex right-hand side with real factors is solved as
    its real and imaginary parts.  Raises :class:`SingularMatrixError` for a singular matrix."""

    def __init__(self, matrix) -> None:
        self.sparse = issparse(matrix)
        if self.sparse:
            self.lu = superlu(matrix)
            self.complex = np.iscomplexobj(self.lu.U.data)
        else:
            self.lu = dense_lu(matrix, "the stage matrix is singular")
            self.complex = np.iscomplexobj(self.lu[0])

    def solve(self, b, transpose: bool = False):
        b = np.asarray(b)
        if np.iscomplexobj(b) and not self.complex:
            return self.solve(b.real, transpose) + 1j * self.solve(b.imag, transpose)
        if self.sparse:
            return self.lu.solve(np.asarray(b, dtype=self.lu.U.dtype), trans="T" if transpose else "N")
        return lu_solve(self.lu, b, trans=int(transpose), check_finite=False)


class Jacobian:
    """Evaluates df/dy for a solver, counting ``njev`` on the solver."""

    def __init__(self, solver, jac, sparsity, matrix_free: bool = False) -> None:
        self.solver = solver
        self.matrix_free = matrix_free
        self.factor = None  # num_jac's adaptive increment factors
        self.sparse = False
        self.constant = None
        self.callable = None
        self.pattern = None
        n = solver.n
        if jac is None:
            if isinstance(sparsity, str):
                if sparsity != "detect":
                    raise ValueError(f"jac_sparsity must be an (n, n) pattern or 'detect', got {sparsity!r}")
                sparsity = self._detect(solver)
            if sparsity is not None:
                self.pattern = sparsity if isinstance(sparsity, JacobianPattern) else JacobianPattern(sparsity)
                if self.pattern.n != n:
                    raise ValueError(f"`jac_sparsity` is expected to have shape {(n, n)}, "
                                     f"but actually has {(self.pattern.n, self.pattern.n)}.")
                self.sparse = True
        elif callable(jac):
            self.callable = jac
            probe = jac(solver.t, solver.y)
            if matrix_free and isinstance(probe, LinearOperator):
                self._check_shape(probe, n)
                return
            self.sparse = issparse(probe)
            # array_like is accepted, as SciPy's Radau and BDF do (a nested list, say).
            self._check_shape(probe if self.sparse else np.asarray(probe, dtype=float), n)
        else:
            self.sparse = issparse(jac)
            self.constant = csc_matrix(jac, dtype=float) if self.sparse else np.asarray(jac, dtype=float)
            self._check_shape(self.constant, n)

    def _detect(self, solver) -> JacobianPattern:
        """``jac_sparsity='detect'``: the pattern found once by forward differences with unit
        vectors at y0 and near it (:func:`stiffcore.linalg.detect_pattern`): n evaluations of
        f per point, once.  The increments are 1e-4 relative to (|y_j| + 1% of max |y|),
        far above the Jacobian's sqrt(eps): a weak entry (BRUSS-2D's du/dv = u^2 at u ~ 1e-3)
        must not vanish in round-off, and only its being nonzero matters here."""
        points = probe_points(solver.y)
        values = [self._counted(solver.t, p[:, None])[:, 0] for p in points]
        increments = [1e-4 * (np.abs(p) + 0.01 * max(float(np.max(np.abs(p))), 1e-3)) for p in points]

        def columns(start, stop):
            total = 0
            for p, f, inc in zip(points, values, increments):
                Y = np.repeat(p[:, None], stop - start, axis=1)
                Y[np.arange(start, stop), np.arange(stop - start)] += inc[start:stop]
                total = total + np.abs(self._counted(solver.t, Y) - f[:, None]).T
            return total

        return detect_pattern(columns, solver.n)

    @staticmethod
    def _check_shape(matrix, n: int) -> None:
        if matrix.shape != (n, n):
            raise ValueError(f"`jac` is expected to have shape {(n, n)}, but actually has {matrix.shape}.")

    @property
    def is_constant(self) -> bool:
        return self.constant is not None

    def __call__(self, t, y, f):
        s = self.solver
        if self.matrix_free:
            if self.callable is not None:
                s.njev += 1
            return JacobianAction(s, t, y, f, self.constant if self.callable is None else self.callable(t, y))
        if self.constant is not None:
            return self.constant
        s.njev += 1
        if self.callable is not None:
            J = self.callable(t, y)
            return csc_matrix(J, dtype=float) if self.sparse else np.asarray(J, dtype=float)
        if self.pattern is not None:
            # not num_jac's sparse path: its memory grows faster than n (ROBER x 33,333 was
            # killed on a 24 GB machine); this is O(nnz)
            inc = difference_increments(y, s.rtol, s.atol)
            return self.pattern.matrix(difference_jacobian(self._counted, t, y, f, self.pattern, inc)).tocsc()
        J, factor = num_jac(self._counted, t, y, f, s.atol, self.factor)
        self.factor = np.minimum(factor, NUM_JAC_MAX_FACTOR)
        return J

    def _counted(self, t, Y):
        """fun_vectorized bypasses the solver's counter: count its calls here (one per column
        unless fun itself is vectorized)."""
        s = self.solver
        s.nfev += 1 if s.vectorized else Y.shape[1]
        return s.fun_vectorized(t, Y)


class ShiftedLU:
    """Factorisations of ``shift * I - J`` for real or complex shifts, cached by shift."""

    def __init__(self, solver, sparse: bool) -> None:
        self.solver = solver
        self.sparse = sparse
        self.cache: dict = {}
        self.identity = eye(solver.n, format="csc") if sparse else np.identity(solver.n)

    def clear(self) -> None:
        self.cache.clear()

    def solve(self, shift, J, rhs):
        key = complex(shift)
        if key not in self.cache:
            if len(self.cache) >= 8:  # step sizes come and go; keep the recent factorisations
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = self._factor(shift, J)
        lu = self.cache[key]
        if self.sparse:
            return lu.solve(rhs)
        factors, piv, getrs = lu
        out, info = getrs(factors, piv, rhs)  # LAPACK directly: the per-call wrapper cost matters here
        return out

    def _factor(self, shift, J):
        self.solver.nlu += 1
        matrix = shift * self.identity - J
        if self.sparse:
            pattern = self.solver.jacobian.pattern   # known with jac_sparsity; a sparse jac is checked
            return superlu(matrix, None if pattern is None else pattern.symmetric)
        lu, piv = dense_lu(matrix, "Newton matrix is singular")
        (getrs,) = get_lapack_funcs(("getrs",), (lu,))
        return lu, piv, getrs


class JacobianAction:
    """v -> J v at one point, from the user's ``jac`` (a matrix or LinearOperator) or by a
    forward difference of ``fun`` (two evaluations for a complex v)."""

    def __init__(self, solver, t, y, f, jac=None) -> None:
        self.solver, self.t, self.y, self.f = solver, t, y, f
        self.jac = None if jac is None else aslinearoperator(jac)

    def __call__(self, v):
        if self.jac is not None:
            return self.jac.matvec(v)
        if np.iscomplexobj(v):
            return self(v.real) + 1j * self(v.imag)
        size = np.linalg.norm(v)
        if size == 0:
            return np.zeros_like(v)
        # the increment of CVODE's difference quotient: sqrt(eps) relative to y, in the direction v
        sigma = np.sqrt(np.finfo(float).eps) * (1 + np.linalg.norm(self.y)) / size
        return (self.solver.fun(self.t, self.y + sigma * v) - self.f) / sigma


class KrylovSolve:
    """(shift I - J) x = b by restarted GMRES on Jacobian-vector products; nothing n x n.

    ``preconditioner(t, y, h_gamma)`` returns a matrix or LinearOperator approximating
    (I - h_gamma J)^-1 (h_gamma = 1 / shift, complex for Radau's complex stage pairs) or None;
    its result is reused until J or the shift changes.  A solve that does not reach ``rtol``
    (relative to |b|) within ``maxiter`` restarts raises :class:`KrylovFailure`."""

    def __init__(self, solver, preconditioner=None, rtol: float = 1e-8, restart: int = 30,
                 maxiter: int = 10) -> None:
        if preconditioner is not None and not callable(preconditioner):
            raise ValueError("preconditioner must be a callable (t, y, h_gamma) -> matrix or LinearOperator")
        self.solver, self.preconditioner = solver, preconditioner
        self.rtol, self.restart, self.maxiter = float(rtol), int(restart), int(maxiter)
        self.cache: dict = {}
        self.iterations = 0  # GMRES iterations over the solve (a diagnostic)

    def clear(self) -> None:
        self.cache.clear()

    def _operators(self, shift, action: JacobianAction):
        """GMRES's operator and preconditioner on the scaled unknowns D x, D = 1 / (atol +
        rtol |y|) (CVODE's scaled SPGMR): the residual tolerance then weighs components as the
        error norm does, so a component far below the others (ROBER's B ~ 1e-5 against 1) is
        solved to its own accuracy (unscaled: 25,000 Rodas5P steps to t = 40 instead of 46)."""
        key = complex(shift)
        if key not in self.cache:
            n = self.solver.n
            dtype = complex if np.iscomplexobj(shift) else float
            d = 1.0 / (self.solver.atol + self.solver.rtol * np.abs(action.y))
            A = LinearOperator((n, n), matvec=lambda u: d * (shift * (u / d) - action(u / d)), dtype=dtype)
            M = None
            if self.preconditioner is not None:
                P = self.preconditioner(action.t, action.y, 1 / shift)
                if P is not None:
                    P = aslinearoperator(P)
                    if P.shape != (n, n):
                        raise ValueError(f"preconditioner(t, y, h_gamma) returned shape {P.shape}; expected {(n, n)}")
                    M = LinearOperator((n, n), matvec=lambda u, P=P: d * P.matvec(u / d) / shift, dtype=dtype)
            self.cache = {key: (A, M, d)}  # one shift at a time: a new one replaces it
        return self.cache[key]

    def solve(self, shift, action: JacobianAction, rhs):
        A, M, d = self._operators(shift, action)
        counted = []
        u, info = gmres(A, d * rhs, rtol=self.rtol, atol=0.0, restart=self.restart, maxiter=self.maxiter, M=M,
                        callback=counted.append, callback_type="pr_norm")
        x = u / d
        self.iterations += len(counted)
        if info != 0 or not np.all(np.isfinite(x)):
            raise KrylovFailure(f"GMRES did not reach rtol {self.rtol:g} in {self.maxiter} restarts of "
                                f"{self.restart} (shift {complex(shift):.3g}); raise krylov_restart/krylov_maxiter "
                                "or give a preconditioner")
        return x


class KrylovFailure(ArithmeticError):
    """GMRES did not converge: the step is retried with a smaller h."""
