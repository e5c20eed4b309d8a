"""Exact discrete sensitivities of an FBDF/QNDF solve, for a given step and order sequence.

A solve is a sequence of maps on the difference table D (see :mod:`stiffcore.multistep`):
a re-sampling D <- T(ratio) (mask_k D) when the step changes, the corrector
y_{n+1} = b + c f(t_{n+1}, y_{n+1}, p) with b = W_k D and c = h / alpha_k, and the update
D <- U_k D + v_k y_{n+1}.  With (h, k) fixed, every map but the corrector is linear with
constant coefficients, so the tangent table dD/dp follows the same maps, and the corrector's
derivative comes from the implicit function theorem,
(I - c J) dy_{n+1} = W_k dD + c f_p dp, with J and f_p at the converged y_{n+1}.  The
derivative therefore flows through all k past values, as the issue on BDF gradients asks.
The reverse sweep applies the transposed maps, with the tables checkpointed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stiffcore import multistep as ms
from stiffcore.catalogue import get_variable_order

from ._linalg import shifted
from ._step_maps import factorised, newton_to_roundoff

_LOW = ms.MAX_ORDER + 1  # the rows a re-sampling touches (ms.resample)


@dataclass
class StepRecord:
    """One replayed step: what its tangent and adjoint need."""

    order: int
    ratio: float | None        # re-sampling ratio, None if the step kept the table's h
    c: float
    lu: object                 # Factorised I - c J at y_{n+1}
    fp_new: np.ndarray         # f_p at y_{n+1}
    start: tuple | None = None  # (h, J, f_p) at the step's start where it began a new history


class MultistepReplay:
    """Replays FBDF/QNDF steps from the recorded ``steps``, ``orders`` and ``restarts``."""

    def __init__(self, family, derivs, steps, orders, restarts, given_table: bool = False) -> None:
        self.family = get_variable_order(family)
        self.corrector = ms.corrector_weights(self.family)
        self.d = derivs
        self.steps = np.asarray(steps, dtype=float)
        self.orders = [int(k) for k in orders]
        self.restarts = [bool(r) for r in restarts]
        if not (len(self.orders) == len(self.restarts) == self.steps.size - 1):
            raise ValueError(f"{self.steps.size - 1} steps need as many orders and restart flags, got "
                             f"{len(self.orders)} and {len(self.restarts)}")
        if self.steps.size > 1 and not self.restarts[0] and not given_table:
            raise ValueError("the first step must start a history (restarts[0] = True) unless a table is given")

    def _solve(self, t, b, c, y, p):
        """y = b + c f(t, y, p) by Newton with the exact Jacobian, to round-off."""
        return newton_to_roundoff(lambda v: v - b - c * self.d.f(t, v, p),
                                  lambda v: shifted(1.0, c * self.d.dfdy(t, v, p)), y,
                                  f"the corrector did not converge to round-off at t = {t}")

    def step(self, i, table, h_table, p, tangent=None, record=False):
        """Step i: (table, its step h_table, tangent or None, StepRecord or None)."""
        t, h, k = self.steps[i], self.steps[i + 1] - self.steps[i], self.orders[i]
        start = ratio = None
        if self.restarts[i]:
            y = table[0]
            J, fp = self.d.dfdy(t, y, p), self.d.dfdp(t, y, p)
            start = (h, J, fp)
            new = ms.start_table(y, h * self.d.f(t, y, p))
            if tangent is not None:
                s = tangent[0]
                tangent = np.zeros_like(tangent)
                tangent[0], tangent[1] = s, h * (J @ s + fp)
            table, h_table = new, h
        elif not ms.same_step(h, h_table, t):
            ratio = h / h_table
            table, h_table = ms.resample(table, ratio, k), h
            if tangent is not None:
                tangent = ms.resample(tangent, ratio, k)
        c = h_table / self.family.alpha[k]  # as the solver: the table's step (h up to round-off)
        weights = self.corrector[k]
        y_new = self._solve(t + h, weights @ table, c, ms.PREDICTOR[k] @ table, p)
        J, fp = self.d.dfdy(t + h, y_new, p), self.d.dfdp(t + h, y_new, p)
        lu = factorised(shifted(1.0, c * J), f"at t = {t + h}") if (tangent is not None or record) else None
        if tangent is not None:
            s_new = lu.solve(np.tensordot(weights, tangent, axes=1) + c * fp)
            tangent = ms.update(tangent, s_new, k)
        table = ms.update(table, y_new, k)
        rec = StepRecord(k, ratio, c, lu, fp, start) if record else None
        return table, h_table, tangent, rec

    def adjoint(self, rec: StepRecord, bar, p_bar):
        """Pull the table's adjoint ``bar`` back through one recorded step; adds to ``p_bar``."""
        k = rec.order
        y_bar = ms.NEW_VALUE[k] @ bar
        bar = ms.UPDATE[k].T @ bar
        lam = rec.lu.solve(y_bar, transpose=True)
        p_bar += rec.c * rec.fp_new.T @ lam
        bar = bar + np.outer(self.corrector[k], lam)
        if rec.ratio is not None:
            low = ms.ORDER_MASK[k][:_LOW, None] * (ms.rescale_matrix(rec.ratio).T @ bar[:_LOW])
            bar = bar.copy()
            bar[:_LOW] = low
        if rec.start is not None:
            h, J, fp = rec.start
            y_bar = bar[0] + h * J.T @ bar[1]
            p_bar += h * fp.T @ bar[1]
            bar = np.zeros_like(bar)
            bar[0] = y_bar
        return bar


def initial_table(y0):
    """The table before the first step: y0 in row 0 (the first step restarts from it)."""
    return ms.start_table(y0, np.zeros_like(y0))


def forward(replay: MultistepReplay, y0, p, out_index, table=None, tangent=None, h_table=math.nan):
    """(Y (n, outputs), S (n, P, outputs)) at ``steps[out_index]``; ``table``/``tangent``: a
    given starting history at step ``h_table`` and its derivative (else y0 and zero)."""
    table = initial_table(np.asarray(y0, dtype=float)) if table is None else table
    n, P = table.shape[1], p.size
    tangent = np.zeros((ms.ROWS, n, P)) if tangent is None else tangent
    wanted = set(np.asarray(out_index).tolist())
    Y, S = [], []
    if 0 in wanted:
        Y.append(table[0].copy()), S.append(tangent[0].copy())
    for i in range(replay.steps.size - 1):
        table, h_table, tangent, _ = replay.step(i, table, h_table, p, tangent)
        if i + 1 in wanted:
            Y.append(table[0].copy()), S.append(tangent[0].copy())
    return np.array(Y).T, np.moveaxis(np.array(S), 0, -1)


def outputs(replay: MultistepReplay, y0, p, out_index, every):
    """The outputs and the checkpoints {step index: (table, h_table)} every ``every`` steps."""
    table, h_table = initial_table(np.asarray(y0, dtype=float)), math.nan
    wanted = set(np.asarray(out_index).tolist())
    checkpoints, found = {0: (table, h_table)}, {0: table[0]} if 0 in wanted else {}
    for i in range(replay.steps.size - 1):
        table, h_table, _, _ = replay.step(i, table, h_table, p)
        if (i + 1) % every == 0:
            checkpoints[i + 1] = (table, h_table)
        if i + 1 in wanted:
            found[i + 1] = table[0]
    return np.array([found[i] for i in np.asarray(out_index).tolist()]).T, checkpoints


def reverse(replay: MultistepReplay, p, seeds, checkpoints, every):
    """(dL/dp, dL/dy0) from ``seeds`` {step index: dL/dy there}, recomputing each segment's
    steps from its checkpoint."""
    n_steps = replay.steps.size - 1
    n = checkpoints[0][0].shape[1]
    bar = np.zeros((ms.ROWS, n))
    bar[0] += seeds.get(n_steps, 0)
    p_bar = np.zeros(p.size)
    for begin in range((n_steps - 1) // every * every, -1, -every):
        end = min(begin + every, n_steps)
        table, h_table = checkpoints[begin]
        records = []
        for i in range(begin, end):
            table, h_table, _, rec = replay.step(i, table, h_table, p, record=True)
            records.append(rec)
        for i in range(end - 1, begin - 1, -1):
            bar = replay.adjoint(records[i - begin], bar, p_bar)
            bar[0] += seeds.get(i, 0)
    return p_bar, bar[0]
