"""The :class:`Problem` record and mass-action reaction networks."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import numpy as np

from ._arrays import constant_like, namespace


@dataclass(frozen=True)
class Problem:
    """A stiff test problem with its rate constants as parameters.

    ``rhs(t, y, p)`` accepts numpy, torch or jax arrays (state along the last axis, so a
    leading batch dimension works); ``jac(t, y, p)`` = df/dy and ``jac_p(t, y, p)`` = df/dp
    are numpy, for SciPy.  ``reference`` is ``(t, y(t))`` where a reference solution is known;
    ``log_params`` says the parameters are already logarithms of rates (diagnose then gives no
    log-parameterisation advice).
    """

    name: str
    description: str
    y0: np.ndarray
    t_span: tuple
    params: np.ndarray
    param_names: tuple
    species: tuple
    rhs: Callable
    jac: Callable | None = None
    jac_p: Callable | None = None
    reference: tuple | None = None
    reference_note: str = ""
    extra: dict = field(default_factory=dict)
    log_params: bool = False

    def check_params(self, p) -> np.ndarray:
        p = np.asarray(self.params if p is None else p, dtype=float)
        if p.shape != self.params.shape:
            raise ValueError(
                f"{self.name} has {self.params.size} parameters ({', '.join(self.param_names)}), got shape {p.shape}"
            )
        return p

    def fun(self, p=None) -> Callable:
        """``fun(t, y)`` for ``solve_ivp`` at parameters ``p`` (default: the problem's own)."""
        p = self.check_params(p)
        return lambda t, y: self.rhs(t, y, p)

    def log_parameterised(self) -> "Problem":
        """The same problem with parameters q = log p (rates must be positive): gradients
        with respect to q are p times those with respect to p (Kim et al. 2021)."""
        if np.any(self.params <= 0):
            raise ValueError(f"{self.name}: log-parameterisation needs positive parameters, got {self.params}")
        rhs, jac, jac_p = self.rhs, self.jac, self.jac_p
        return Problem(
            name=f"{self.name}_log", description=f"{self.description}; parameters log {', '.join(self.param_names)}",
            y0=self.y0, t_span=self.t_span, params=np.log(self.params),
            param_names=tuple(f"log_{n}" for n in self.param_names), species=self.species,
            rhs=lambda t, y, q: rhs(t, y, namespace(q).exp(q)),
            jac=None if jac is None else (lambda t, y, q: jac(t, y, np.exp(q))),
            jac_p=None if jac_p is None else (lambda t, y, q: jac_p(t, y, np.exp(q)) * np.exp(q)[None, :]),
            reference=self.reference, reference_note=self.reference_note, log_params=True,
        )

    def jac_fun(self, p=None) -> Callable:
        p = self.check_params(p)
        return lambda t, y: self.jac(t, y, p)


class MassActionNetwork:
    """Reactions with mass-action rates r_j = k_j prod(y[reactants_j]) and f = S r.

    Written once, evaluated for numpy, torch or jax: reactant indices pad the state with
    a trailing 1 so every rate is a product of exactly ``order`` factors.
    """

    def __init__(self, n_species: int, reactants: Sequence[Sequence[int]], stoichiometry) -> None:
        self.n = n_species
        self.order = max(len(r) for r in reactants)
        pad = n_species  # index of the constant 1 appended to the state
        self.reactants = np.array([list(r) + [pad] * (self.order - len(r)) for r in reactants])
        self.stoichiometry = np.asarray(stoichiometry, dtype=float)  # (n_species, n_reactions)
        self._torch_constants: dict = {}
        if self.stoichiometry.shape != (n_species, len(reactants)):
            raise ValueError(f"stoichiometry must be ({n_species}, {len(reactants)}), got {self.stoichiometry.shape}")

    def _constants(self, like):
        """(reactant index columns, S^T) for ``like``'s library.  torch gets tensors converted
        once per dtype and device, so a torch right-hand side does no NumPy conversion per
        call; JAX converts at trace time (which happens once under jit), and caching there
        would leak tracers out of the transformation."""
        xp = namespace(like)
        if xp is np:
            return self.reactants.T, self.stoichiometry.T
        if xp.__name__ != "torch":
            return self.reactants.T, constant_like(self.stoichiometry.T, like)
        key = (like.dtype, like.device)
        if key not in self._torch_constants:
            self._torch_constants[key] = (xp.as_tensor(self.reactants.T, device=like.device),
                                          constant_like(self.stoichiometry.T, like))
        return self._torch_constants[key]

    def rates(self, y, k):
        xp = namespace(y)
        ones = xp.ones_like(y[..., :1])
        padded = (np.concatenate if xp is np else getattr(xp, "concatenate", None) or xp.cat)([y, ones], -1)
        r = k
        for column in self._constants(y)[0]:
            r = r * padded[..., column]
        return r

    def rhs(self, t, y, k):
        r = self.rates(y, k)
        return r @ self._constants(r)[1]

    def jac(self, t, y, k) -> np.ndarray:
        """df/dy (numpy; complex-safe, so complex-step differentiation passes through).

        d r_j / d y_i sums, over each reactant slot a of reaction j holding species i, k_j
        times the product of the other slots, and df/dy = S dr/dy: one sparse product with the
        fixed map from those slot products to the entries of df/dy (:attr:`_slot_map`)."""
        values = np.append(np.asarray(y), 1.0)[self.reactants]                # (R, order)
        slots = [np.prod(values[:, others], axis=1) for others in self._other_slots]
        weights = (np.asarray(k)[None, :] * np.array(slots)).ravel()          # slot-major
        return (self._slot_map @ weights).reshape(self.n, self.n)

    @cached_property
    def _other_slots(self) -> list:
        return [[b for b in range(self.order) if b != a] for a in range(self.order)]

    @cached_property
    def _slot_map(self):
        """Sparse (n n, order R): entry (i n + reactant[j, a], a R + j) is S[i, j], so that
        df/dy = S dr/dy is one product with the slot products k_j prod_{b != a} y[reactant[j, b]]
        (np.add.at and a dense S @ dr/dy took 1.5 ms a call on GRI-Mech; now jac takes 52 us, the
        product 12 us of it)."""
        from scipy.sparse import csr_matrix

        n, (reactions, order) = self.n, self.reactants.shape
        species, reaction = np.nonzero(self.stoichiometry)
        rows, cols, vals = [], [], []
        for a in range(order):
            held = self.reactants[reaction, a]
            real = held < n                                                    # the padding slot has no column
            rows.append(species[real] * n + held[real])
            cols.append(a * reactions + reaction[real])
            vals.append(self.stoichiometry[species[real], reaction[real]])
        return csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n * n, order * reactions))

    def jac_p(self, t, y, k) -> np.ndarray:
        """df/dk (numpy): column j is S[:, j] times the rate with k_j = 1."""
        y = np.asarray(y)
        unit = self.rates(y, np.ones(np.shape(k)))
        return self.stoichiometry * unit[None, :]
