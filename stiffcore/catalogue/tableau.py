"""Coefficient containers for one-step and multistep methods, validated on construction.

Three shapes of method data live here:

* :class:`ButcherTableau` -- Runge-Kutta methods (Butcher 2016, *Numerical Methods
  for ODEs*, ch. 3), explicit or implicit, with an optional embedded pair and an
  optional continuous extension.
* :class:`RosenbrockTableau` -- Rosenbrock methods in the form of Hairer & Wanner
  (*Solving ODEs II*, sec. IV.7, eq. 7.4): ``alpha`` (strictly lower) and ``gamma``
  (lower, constant diagonal), with the transformed coefficients ``a, C, m`` of
  eq. (7.25) derived from them.
* :class:`MultistepCoefficients` -- linear multistep methods as the polynomials
  rho and sigma (Hairer, Norsett & Wanner, *Solving ODEs I*, sec. III.2).

Everything is plain numpy. Malformed data raises ``ValueError`` naming the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Rows of ``a`` must sum to ``c`` to this absolute tolerance. Published coefficients
#: are given to about 16 digits, so anything looser would hide a transcription error.
ROW_SUM_TOL = 1e-12


def _as_vector(name: str, value, size: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a vector, got shape {arr.shape}")
    if size is not None and arr.shape != (size,):
        raise ValueError(f"{name} must have {size} entries to match the stage count, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries: {arr}")
    arr.setflags(write=False)
    return arr


def _as_square(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries")
    arr.setflags(write=False)
    return arr


def _check_row_sums(matrix_name: str, matrix: np.ndarray, c: np.ndarray) -> None:
    sums = matrix.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - c) > ROW_SUM_TOL * np.maximum(1.0, np.abs(c)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"row {i} of {matrix_name} sums to {float(sums[i])!r} but c[{i}] = {float(c[i])!r}; "
            "the rows of a tableau must sum to the nodes c"
        )


@dataclass(frozen=True)
class ButcherTableau:
    """A Runge-Kutta tableau ``(a, b, c)``.

    ``b_embedded`` are the weights of the embedded (error-estimating) method; a
    nonzero ``b0_embedded`` adds ``h * b0_embedded * f(t0, y0)`` to it, as in the
    Radau IIA5 estimate of Hairer & Wanner (IV.8, eq. 8.19).  ``dense`` holds a
    continuous extension: the weight of stage ``j`` at ``t0 + theta*h`` is
    ``sum_k dense[j, k] * theta**(k + 1)``.
    """

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray | None = None
    b_embedded: np.ndarray | None = None
    b0_embedded: float = 0.0
    dense: np.ndarray | None = None

    def __post_init__(self) -> None:
        a = _as_square("a", self.a)
        s = a.shape[0]
        b = _as_vector("b", self.b, s)
        c = a.sum(axis=1) if self.c is None else _as_vector("c", self.c, s)
        _check_row_sums("a", a, c)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", _as_vector("c", c, s))
        if self.b_embedded is not None:
            object.__setattr__(self, "b_embedded", _as_vector("b_embedded", self.b_embedded, s))
        elif self.b0_embedded:
            raise ValueError("b0_embedded is given but b_embedded is not")
        if self.dense is not None:
            dense = np.asarray(self.dense, dtype=float)
            if dense.ndim != 2 or dense.shape[0] != s:
                raise ValueError(f"dense must have shape ({s}, degree), got {dense.shape}")
            if not np.allclose(dense.sum(axis=1), b, rtol=0, atol=1e-12):
                raise ValueError("dense output at theta = 1 must reproduce b")
            dense.setflags(write=False)
            object.__setattr__(self, "dense", dense)

    @property
    def stages(self) -> int:
        return self.b.shape[0]

    @property
    def is_explicit(self) -> bool:
        return not np.any(np.triu(self.a))

    @property
    def is_diagonally_implicit(self) -> bool:
        """Lower triangular with some nonzero diagonal entry (DIRK, SDIRK or ESDIRK)."""
        return not self.is_explicit and not np.any(np.triu(self.a, 1))

    @property
    def is_stiffly_accurate(self) -> bool:
        """The last stage is the solution: ``a[-1] == b`` (Hairer & Wanner IV.6)."""
        return bool(np.allclose(self.a[-1], self.b, rtol=0, atol=1e-15))

    @property
    def explicit_first_stage(self) -> bool:
        """First row all zero (ESDIRK, Lobatto IIIA): stage 1 is f(t0, y0)."""
        return not np.any(self.a[0])

    def weights_at(self, theta):
        """Dense-output weights ``b_j(theta)`` (requires ``dense``)."""
        if self.dense is None:
            raise ValueError("this tableau has no continuous extension")
        theta = np.asarray(theta, dtype=float)
        powers = theta[..., None] ** np.arange(1, self.dense.shape[1] + 1)
        return powers @ self.dense.T


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method (Hairer & Wanner IV.7, eq. 7.4).

    ``alpha`` is strictly lower triangular; ``gamma`` is lower triangular with the
    constant diagonal :attr:`gamma_diag`.  Nodes are ``c_i = sum_j alpha_ij`` and the
    time-derivative coefficients ``d_i = sum_j gamma_ij``.  For a linear problem the
    method is the Runge-Kutta method with matrix ``alpha + gamma`` and weights ``b``,
    which is what the stability analysis uses.

    ``dense_transformed`` (rows ``h_r``) gives the continuous extension in the
    transformed variables ``k_j`` of :meth:`transformed`:
    ``y(t0 + theta h) = (1-theta) y0 + theta (y1 + (1-theta)(K_1 + theta (K_2 + theta K_3 ...)))``
    with ``K_r = sum_j h_rj k_j`` (Steinebach's Rodas dense output).  ``dense`` is the
    other published form, weights on the untransformed stages as in :class:`ButcherTableau`:
    ``y(t0 + theta h) = y0 + sum_j b_j(theta) k_j``, ``b_j(theta) = sum_k dense[j, k] theta**(k + 1)``.
    """

    alpha: np.ndarray
    gamma: np.ndarray
    b: np.ndarray
    b_embedded: np.ndarray | None = None
    dense_transformed: np.ndarray | None = None
    dense: np.ndarray | None = None
    c: np.ndarray = field(init=False)
    d: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        alpha = _as_square("alpha", self.alpha)
        gamma = _as_square("gamma", self.gamma)
        s = alpha.shape[0]
        if gamma.shape != (s, s):
            raise ValueError(f"gamma has shape {gamma.shape}, alpha has {alpha.shape}")
        if np.any(np.triu(alpha)):
            raise ValueError("alpha must be strictly lower triangular")
        if np.any(np.triu(gamma, 1)):
            raise ValueError("gamma must be lower triangular")
        diag = np.diag(gamma)
        if not np.allclose(diag, diag[0], rtol=1e-14, atol=0) or diag[0] <= 0:
            raise ValueError(f"gamma must have one positive diagonal value, got {diag}")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "b", _as_vector("b", self.b, s))
        if self.b_embedded is not None:
            object.__setattr__(self, "b_embedded", _as_vector("b_embedded", self.b_embedded, s))
        object.__setattr__(self, "c", _as_vector("c", alpha.sum(axis=1), s))
        object.__setattr__(self, "d", _as_vector("d", gamma.sum(axis=1), s))
        if self.dense_transformed is not None:
            h = np.asarray(self.dense_transformed, dtype=float)
            if h.ndim != 2 or h.shape[1] != s:
                raise ValueError(f"dense_transformed must have shape (K, {s}), got {h.shape}")
            h.setflags(write=False)
            object.__setattr__(self, "dense_transformed", h)
        if self.dense is not None:
            dense = np.asarray(self.dense, dtype=float)
            if dense.ndim != 2 or dense.shape[0] != s:
                raise ValueError(f"dense must have shape ({s}, degree), got {dense.shape}")
            if not np.allclose(dense.sum(axis=1), self.b, rtol=0, atol=1e-12):
                raise ValueError("dense output at theta = 1 must reproduce b")
            dense.setflags(write=False)
            object.__setattr__(self, "dense", dense)

    @classmethod
    def from_transformed(cls, gamma_diag, a, C, m, m_embedded=None, c=None, d=None, dense=None):
        """Build from the transformed coefficients of Hairer & Wanner (IV.7, eq. 7.25).

        ``a = alpha Gamma^-1``, ``C = diag(1/gamma) - Gamma^-1``, ``m = b Gamma^-1``.
        Published ``c`` and ``d`` (if given) are checked against the derived ones,
        which catches transcription errors in ``a`` and ``C``.
        """
        a = np.asarray(a, dtype=float)
        C = np.asarray(C, dtype=float)
        s = a.shape[0]
        gamma_inv = np.eye(s) / gamma_diag - C
        gamma_mat = np.linalg.inv(gamma_inv)
        gamma_mat = np.tril(gamma_mat)  # exact zeros above the diagonal
        np.fill_diagonal(gamma_mat, gamma_diag)
        alpha = np.tril(a @ gamma_mat, -1)
        b = np.asarray(m, dtype=float) @ gamma_mat
        b_emb = None if m_embedded is None else np.asarray(m_embedded, dtype=float) @ gamma_mat
        tab = cls(alpha=alpha, gamma=gamma_mat, b=b, b_embedded=b_emb, dense_transformed=dense)
        for name, given, derived in (("c", c, tab.c), ("d", d, tab.d)):
            if given is not None:
                given = np.asarray(given, dtype=float)
                bad = np.flatnonzero(np.abs(given - derived) > 1e-9 * np.maximum(1, np.abs(given)))
                if bad.size:
                    i = int(bad[0])
                    raise ValueError(
                        f"published {name}[{i}] = {float(given[i])!r} but the coefficients give {float(derived[i])!r}"
                    )
        return tab

    @property
    def stages(self) -> int:
        return self.b.shape[0]

    @property
    def gamma_diag(self) -> float:
        return float(self.gamma[0, 0])

    @property
    def stability_matrix(self) -> np.ndarray:
        """``alpha + gamma``: the Runge-Kutta matrix the method reduces to on y' = lambda y."""
        return self.alpha + self.gamma

    def transformed(self):
        """``(a, C, m, m_embedded)`` of Hairer & Wanner eq. (7.25), the form implementations use.

        Stage ``i`` solves ``(I/(h gamma) - J) k_i = f(t0 + c_i h, y0 + sum_j a_ij k_j)
        + sum_j C_ij k_j / h + h d_i f_t``; then ``y1 = y0 + sum_i m_i k_i``.
        """
        gamma_inv = np.linalg.inv(self.gamma)
        a = np.tril(self.alpha @ gamma_inv, -1)
        C = np.tril(np.diag(1.0 / np.diag(self.gamma)) - gamma_inv, -1)
        m = self.b @ gamma_inv
        m_emb = None if self.b_embedded is None else self.b_embedded @ gamma_inv
        return a, C, m, m_emb


@dataclass(frozen=True)
class MultistepCoefficients:
    """``sum_j rho[j] y_{n+j} = h sum_j sigma[j] f_{n+j}``, j = 0..k (ascending)."""

    rho: np.ndarray
    sigma: np.ndarray

    def __post_init__(self) -> None:
        rho = _as_vector("rho", self.rho)
        sigma = _as_vector("sigma", self.sigma, rho.shape[0])
        if rho[-1] == 0:
            raise ValueError("rho must have a nonzero leading coefficient")
        object.__setattr__(self, "rho", rho)
        object.__setattr__(self, "sigma", sigma)

    @property
    def steps(self) -> int:
        return self.rho.shape[0] - 1
