"""Adapters that register stiffcore solvers into diffrax, torchdiffeq and scipy.integrate."""
