"""GRI-Mech 3.0 methane/air chemistry as a stiffcore problem (needs ``pip install cantera``).

53 species and 325 reactions, isothermal at 1500 K from a stoichiometric mixture at 1 atm,
exported to mass action by :func:`stiffcore.problems.cantera.from_cantera`; eigenvalues of
the Jacobian reach -5e8 while CH4 burns out over 1e-3..1e-2 s.  Use it from the CLI as

    stiffcore diagnose examples.gri30_methane:problem --backend scipy

(from the repository root) or from Python as ``problem()``.
"""

from stiffcore.problems.cantera import from_cantera


def problem(temperature: float = 1500.0, pressure: float = 101325.0, t_end: float = 0.1):
    import cantera as ct

    gas = ct.Solution("gri30.yaml")
    gas.TPX = temperature, pressure, "CH4:1, O2:2, N2:7.52"
    return from_cantera(gas, (0.0, t_end), name="gri30_methane")
