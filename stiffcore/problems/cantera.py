"""A Cantera mechanism as an isothermal mass-action :class:`Problem`.

``from_cantera(gas, t_span)`` reads a Cantera ``Solution`` at the state the caller set
(T, P, X) and returns its gas-phase kinetics at constant temperature and volume as a
:class:`MassActionNetwork`, so the mechanism runs in every adapter (numpy, torch, jax) and
its rate constants are differentiable parameters.  Cantera is never imported here: the
caller passes the object, and Cantera stays an optional extra of the examples.

What is exact and what is frozen, at the initial temperature and density:
- elementary reactions: exact mass action, with the reaction orders of the stoichiometry;
- three-body reactions: exact, as one mass-action term per collision partner weighted by
  its efficiency ([M] = sum eff_i c_i);
- falloff (pressure-dependent) reactions: their effective rate constant is frozen at the
  initial composition (Lindemann/Troe depend on [M] rationally, which mass action cannot
  express); so the right-hand side equals Cantera's net production rates exactly at y0 and
  for every non-falloff reaction along the trajectory;
- reverse rates follow from detailed balance, k_r = k_f / K_c, so the parameters are the
  forward rate constants and a perturbed mechanism stays thermodynamically consistent.

The state is the concentration relative to the initial total concentration c0 (at the
initial state, the mole fractions), so it is O(1) and absolute tolerances mean what they do
for mole fractions; rate constants are scaled by c0^(order - 1) accordingly, time is in s.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ._arrays import constant_like, namespace
from .base import MassActionNetwork, Problem


def _expanded_terms(gas):
    """(reactant indices, reaction index, factor on k_f, stoichiometry column, direction)
    per mass-action term, in the scaled units of the module docstring; a reverse term
    (direction -1) has the negated forward column.  Also each reaction's forward order
    (reactant molecules, plus one for a third body), which scales its k_f by c0^(order - 1)."""
    species = {name: i for i, name in enumerate(gas.species_names)}
    c0 = gas.density_mole
    inverse_kc = 1.0 / gas.equilibrium_constants
    terms, orders = [], []
    for j, reaction in enumerate(gas.reactions()):
        if reaction.orders:
            raise ValueError(f"reaction {j} ({reaction.equation}) has non-stoichiometric orders {reaction.orders}: "
                             "not mass action")
        sides = []
        for side in (reaction.reactants, reaction.products):
            indices = []
            for name, nu in side.items():
                if nu != int(nu):
                    raise ValueError(f"reaction {j} ({reaction.equation}) has a non-integer coefficient {nu} of {name}")
                indices += [species[name]] * int(nu)
            sides.append(tuple(indices))
        column = np.zeros(gas.n_species)
        np.add.at(column, list(sides[1]), 1.0)
        np.add.at(column, list(sides[0]), -1.0)
        # partners: (extra reactant, efficiency) for a three-body reaction, else none
        third_body = reaction.third_body if reaction.reaction_type.startswith("three-body") else None
        if third_body is None:
            partners = [((), 1.0)]
        else:
            eff = {name: third_body.default_efficiency for name in gas.species_names}
            eff.update(third_body.efficiencies)
            partners = [((species[name],), e) for name, e in eff.items() if e != 0.0]
        forward_order = len(sides[0]) + (third_body is not None)
        reverse_order = len(sides[1]) + (third_body is not None)
        orders.append(forward_order)
        for extra, e in partners:
            terms.append((sides[0] + extra, j, e, column, 1.0))
            if reaction.reversible:
                terms.append((sides[1] + extra, j, e * inverse_kc[j] * c0 ** (reverse_order - forward_order), -column,
                              -1.0))
    return terms, np.array(orders, dtype=float)


class _CanteraKinetics:
    """rhs/jac/jac_p in the forward rate constants p (one per reaction): each term's rate
    constant is p[reaction] times a fixed factor (efficiency, 1/K_c and the c0 scaling)."""

    def __init__(self, gas):
        terms, self.forward_order = _expanded_terms(gas)
        reactants = [t[0] for t in terms]
        self.reaction = np.array([t[1] for t in terms])
        self.factor = np.array([t[2] for t in terms])
        self.direction = np.array([t[4] for t in terms])
        stoichiometry = np.stack([t[3] for t in terms], axis=1)
        self.network = MassActionNetwork(gas.n_species, reactants, stoichiometry)
        self.n_reactions = gas.n_reactions
        self._torch: dict = {}

    @cached_property
    def _parameter_map(self):
        """Sparse (n R, terms): entry (i R + reaction[j], j) is S[i, j] factor[j], so df/dp is
        one product with the terms' unit rates (summing terms per reaction by np.add.at, as
        complex-step sensitivities call it, took 2 ms a call)."""
        from scipy.sparse import csr_matrix

        S = self.network.stoichiometry
        species, term = np.nonzero(S)
        rows = species * self.n_reactions + self.reaction[term]
        return csr_matrix((S[species, term] * self.factor[term], (rows, term)),
                          shape=(self.network.n * self.n_reactions, S.shape[1]))

    def term_constants(self, p):
        xp = namespace(p)
        if xp is np:
            return np.asarray(p)[..., self.reaction] * self.factor
        if xp.__name__ == "torch":
            key = (p.dtype, p.device)
            if key not in self._torch:
                self._torch[key] = (xp.as_tensor(self.reaction, device=p.device), constant_like(self.factor, p))
            index, factor = self._torch[key]
            return p[..., index] * factor
        return p[..., self.reaction] * constant_like(self.factor, p)

    def rates_of_progress(self, y, p) -> np.ndarray:
        """Net rate of progress of each reaction (numpy, scaled units): forward terms minus
        reverse terms, summed over collision partners."""
        per_term = self.network.rates(np.asarray(y), self.term_constants(np.asarray(p))) * self.direction
        return np.bincount(self.reaction, weights=per_term, minlength=self.n_reactions)

    def rhs(self, t, y, p):
        return self.network.rhs(t, y, self.term_constants(p))

    def jac(self, t, y, p):
        return self.network.jac(t, y, self.term_constants(np.asarray(p)))

    def jac_p(self, t, y, p):
        unit = self.network.rates(np.asarray(y), np.ones(self.reaction.size))
        return (self._parameter_map @ unit).reshape(self.network.n, self.n_reactions)


def from_cantera(gas, t_span, name: str | None = None) -> Problem:
    """The mechanism loaded in ``gas`` (a ``cantera.Solution`` at its current T, P, X) as an
    isothermal, constant-volume mass-action :class:`Problem` on ``t_span`` (seconds).

    Parameters are the forward rate constants, scaled as the module docstring says; the
    ``extra`` dict keeps ``c0`` (kmol/m^3), the temperature and the reaction equations.
    """
    if gas.n_reactions == 0:
        raise ValueError("the Cantera solution has no reactions")
    kinetics = _CanteraKinetics(gas)
    c0 = gas.density_mole
    params = gas.forward_rate_constants * c0 ** (kinetics.forward_order - 1.0)
    equations = tuple(r.equation for r in gas.reactions())
    mech = name or gas.name
    return Problem(
        name=mech,
        description=(f"{mech}: {gas.n_species} species, {gas.n_reactions} reactions, isothermal at "
                     f"{gas.T:.0f} K and constant volume from P = {gas.P:.4g} Pa (falloff rates frozen at y0)"),
        y0=gas.concentrations / c0,
        t_span=tuple(float(t) for t in t_span),
        params=params,
        param_names=tuple(f"k{j + 1}" for j in range(gas.n_reactions)),
        species=tuple(gas.species_names),
        rhs=kinetics.rhs,
        jac=kinetics.jac,
        jac_p=kinetics.jac_p,
        extra=dict(c0=c0, temperature=gas.T, equations=equations, kinetics=kinetics),
    )
