"""The chord root finder of stiffcore's implicit diffrax solvers.

diffrax 0.7.2's ``VeryChord.terminate`` marks every iterate after the second that has not
yet converged as diverged, while still asking to continue; Optimistix's loop stops at a
non-successful result, so a chord iteration had two steps to converge and every slower
one failed the step (diffrax issue/PR #754 and optimistix #221/#230, fixed upstream after
0.7.2).  On ROBER, RadauIIA5 at rtol 1e-6 took 977 steps with a chord on the Jacobian of
the step's start instead of 167.  :class:`VeryChord` keeps diffrax's iteration, tolerances
and convergence test and reports a verdict only when the iteration stops; with a diffrax
that has the fix it behaves identically.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import optimistix as optx


class VeryChord(diffrax.VeryChord):
    """``diffrax.VeryChord`` whose iteration runs until it converges, diverges (rate > 2) or
    reaches the root find's ``max_steps`` (module docstring)."""

    def terminate(self, fn, y, args, options, state, tags):
        stop, result = super().terminate(fn, y, args, options, state, tags)
        return stop, optx.RESULTS.where(stop, result, optx.RESULTS.successful)


def fixed_chord(root_finder):
    """``root_finder`` with the termination fix where it is a plain ``diffrax.VeryChord`` (the
    same fields, so tolerances taken from the step-size controller stay so); others as given."""
    if type(root_finder) is not diffrax.VeryChord:
        return root_finder
    fields = {name: getattr(root_finder, name) for name in ("rtol", "atol", "norm", "kappa", "linear_solver")}
    fixed = VeryChord(**{k: v for k, v in fields.items() if k not in ("rtol", "atol", "norm")},
                      rtol=1.0, atol=1.0)
    return eqx.tree_at(lambda r: (r.rtol, r.atol, r.norm), fixed, (fields["rtol"], fields["atol"], fields["norm"]))
