"""Gradient diagnostics from a solve: where the stiffness is, which parameters it starves.

Given the accepted steps of a solve and df/dy (or its eigenvalues) at those steps, the
one-step sensitivity of a mode with eigenvalue mu to its own rate is h R'(h mu) (Fronk &
Petzold 2025): once |h mu| is in the stiff tail it decays like |h mu|^e (e = -2 for most
A-stable methods).  Projecting df/dp on the eigenvectors of df/dy says which modes each
parameter feeds; propagating the solve linearised at every step once with the method's
R, R' and once with the exact flow's e^z says whether the method starves a parameter of the
gradient the exact flow would give (not the stiff tail itself: there e^z is smaller still,
the exact gradient is tiny too, and a shifted fast equilibrium feeds the slow modes at full
strength).  Advice follows Kim et al. 2021 (log-parameterised rates, output and time scaling).
Framework-agnostic numpy; the adapters collect the inputs from real solves.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .catalogue import get_method
from .report import table
from .reversible import check_coupling, optimal_coupling, predict_reversible

#: |z| from which a step counts as in the stiff tail of R'(z) (the asymptotic decay regime).
STIFF_TAIL = 10.0
#: an eigenvalue below this fraction of the step's fastest is round-off of a structural zero
#: (a conservation law, as ROBER's mass): left out of the spread and of the figure
STRUCTURAL_ZERO = 1e-12
#: Ratio of the method's linearised sensitivities to the exact flow's below which a parameter
#: is reported as starved of gradient.
STARVED = 1e-3
#: |h mu| below which every method's R'(h mu) follows e^(h mu) (within 0.6x-1.7x): the step the
#: advice suggests for a starved parameter's mode
RESOLVED = 0.5
#: Parameters the advice lists by name (beyond, it counts them and points at the table).
MAX_LISTED = 12
#: Parameters the figure shows as bars (beyond, a sorted curve with ``NAMED`` names at each end).
MAX_BARS, NAMED = 40, 6
#: The figure's log10 method/exact-flow ratios are drawn within +-CLIPPED (inf where e^z underflows).
CLIPPED = 30.0
#: Columns the printed advice wraps at.
ADVICE_WIDTH = 100


def _finite_array(name, value, ndim, dtype=float):
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        step = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{name} has NaN or inf at step {step}; fix the solve or drop that step")
    return arr


@dataclass
class ParameterDiagnosis:
    name: str
    log10_attenuation: float      # log10 of the method's sensitivities / the exact flow's (see diagnose)
    fastest_mode: float           # |Re mu| of the mode carrying most of this parameter's weight
    value: float | None = None    # the parameter, for the log-k gain
    predicted_gradient: float | None = None  # dL/dp of the linearised discrete model (needs output cotangents)

    @property
    def starved(self) -> bool:
        return self.log10_attenuation < math.log10(STARVED)

    @property
    def log_gain(self) -> float | None:
        """Reparameterising p as log p multiplies d/dp by p (Kim et al. 2021)."""
        return None if self.value is None else abs(self.value)


@dataclass
class Diagnosis:
    method: str
    t: np.ndarray
    h: np.ndarray
    eigenvalues: np.ndarray           # (N, n)
    z: np.ndarray                     # (N, n) = h * eigenvalues
    spread: np.ndarray                # (N,) max |Re mu| / min |Re mu| over decaying modes
    stiffness_index: float            # max |Re mu| * (t_end - t0): fast time constants in the interval
    stiff_tail_fraction: float        # steps with some mode at |z| >= STIFF_TAIL
    parameters: list = field(default_factory=list)
    advice: list = field(default_factory=list)
    coupling: float | None = None

    @property
    def starved(self) -> list:
        return [p for p in self.parameters if p.starved]

    def z_histogram(self, bins=None):
        """Counts of log10 |z| over all decaying modes and steps."""
        mag = np.abs(self.z[np.real(self.z) < 0])
        bins = np.arange(-6, 11) if bins is None else bins
        return np.histogram(np.log10(mag[mag > 0]), bins=bins)

    def table(self) -> str:
        lines = [
            f"method {self.method}" + (f" (reversible, coupling {self.coupling})" if self.coupling else ""),
            f"steps {self.h.size}, t in [{self.t[0]:.4g}, {self.t[-1] + self.h[-1]:.4g}]",
            f"eigenvalue spread max|Re mu|/min|Re mu|: up to {np.nanmax(self.spread):.3g}",
            f"stiffness index max|Re mu| (t1 - t0): {self.stiffness_index:.3g}",
            f"steps in the stiff tail (|h mu| >= {STIFF_TAIL:g}): {100 * self.stiff_tail_fraction:.1f}%",
        ]
        counts, edges = self.z_histogram()
        lines.append(textwrap.fill("log10|z| histogram: " + ", ".join(
            f"[{a:g},{b:g}) {c}" for a, b, c in zip(edges, edges[1:], counts) if c), ADVICE_WIDTH, subsequent_indent="  "))
        out = "\n".join(lines)
        if self.parameters:
            predicted = self.parameters[0].predicted_gradient is not None
            rows = [[p.name, p.log10_attenuation, p.fastest_mode, "STARVED" if p.starved else "-",
                     p.log_gain if p.log_gain is not None else ""]
                    + ([p.predicted_gradient] if predicted else []) for p in self.parameters]
            out += "\n\n" + table(["parameter", "log10 method/exact", "feeds |Re mu|", "gradient", "log-p gain"]
                                   + (["predicted dL/dp"] if predicted else []), rows)
        if self.advice:
            out += "\n\nAdvice:\n" + "\n".join(textwrap.fill(a, ADVICE_WIDTH, initial_indent="  - ",
                                                              subsequent_indent="    ") for a in self.advice)
        return out

    def plot(self, path: str, measured: dict | None = None, title: str | None = None) -> str:
        """Eigenvalues along the solve, and per parameter the predicted log10 |dL/dp| (or, without
        output cotangents, the predicted attenuation) beside ``measured`` (name -> same quantity).

        The time axis depends only on the span (symlog, linear below 1e-10 of it), so figures
        of the same problem from different backends line up; structural zero eigenvalues
        (below ``STRUCTURAL_ZERO`` of the fastest) are left out and counted in the legend."""
        from .plotting import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        since = self.t - self.t[0] + self.h / 2
        span = float(abs(self.t[-1] + self.h[-1] - self.t[0])) or 1.0
        re, shown, zero = decay_rates(self.eigenvalues)
        hidden = int(np.median(zero.sum(axis=1))) if re.size else 0
        growing = int((~shown & ~zero).sum())  # Re mu > 0: not decaying, and not a structural zero
        times = np.broadcast_to(np.abs(since)[:, None], re.shape)
        axes[0].semilogy(times[shown], re[shown], ".", markersize=2.5, color="C0",
                         label="|Re mu| of the decaying modes of df/dy")
        axes[0].semilogy(np.abs(since), STIFF_TAIL / np.abs(self.h), "-", color="C3", linewidth=1,
                         label=f"|mu| = {STIFF_TAIL:g} / h: stiff (|h mu| >= {STIFF_TAIL:g}) above")
        if hidden:
            axes[0].plot([], [], " ", label=f"{hidden} structural zero eigenvalue(s) per step not shown "
                                            "(conservation laws)")
        if growing:
            axes[0].plot([], [], " ", label=f"{growing} growing mode(s) (Re mu > 0, over all steps) not shown")
        axes[0].set_xscale("symlog", linthresh=1e-10 * span)
        axes[0].set_xlim(0, span)
        axes[0].set_xlabel("t - t0 (linear below 1e-10 of the span, logarithmic above)")
        axes[0].set_ylabel("|Re mu|")
        axes[0].set_title("eigenvalues of df/dy along the trajectory", fontsize=10)
        axes[0].grid(True, alpha=0.3)
        axes[0].legend(fontsize=7.5, loc="lower right")
        if self.parameters:
            self._plot_parameters(axes[1], measured)
        fig.suptitle(title or f"{self.method}: stiffness and gradient attenuation")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def _plot_parameters(self, ax, measured):
        """Bars per parameter; for a mechanism (more than ``MAX_BARS``) a curve sorted by size
        with the ``NAMED`` largest and smallest named, hundreds of tick labels being unreadable."""
        names = [p.name for p in self.parameters]
        if self.parameters[0].predicted_gradient is not None:  # what the model predicts beside what was measured
            values = np.array([_log10_abs(p.predicted_gradient) for p in self.parameters])
            label, ax_label = "predicted |dL/dp|", "log10 |dL/dp|"
        else:  # +inf where the exact flow's sensitivity underflows (deep in the stiff tail)
            values = np.clip([p.log10_attenuation for p in self.parameters], -CLIPPED, CLIPPED)
            label, ax_label = "method / exact flow", f"log10 sensitivity, method / exact flow (within +-{CLIPPED:g})"
            ax.axhline(math.log10(STARVED), color="r", linewidth=0.8, label=f"starved below {STARVED:g}")
        other = np.array([measured.get(n, np.nan) for n in names]) if measured else None
        if len(names) <= MAX_BARS:
            x = np.arange(len(names))
            ax.bar(x, values, width=0.4, label=label)
            if other is not None:
                ax.bar(x + 0.4, other, width=0.4, label="measured")
            ax.set_xticks(x + (0.2 if measured else 0), names, rotation=90, fontsize=7)
        else:
            order = np.argsort(-values)  # largest first, NaN (a zero gradient) last
            rank = np.arange(len(names))
            ax.plot(rank, values[order], "-", label=label)
            if other is not None:
                ax.plot(rank, other[order], ".", markersize=3, label="measured")
            for r in [*range(NAMED), *range(len(names) - NAMED, len(names))]:
                if np.isfinite(values[order[r]]):
                    ax.annotate(names[order[r]], (r, values[order[r]]), xytext=(4, 0), textcoords="offset points",
                                fontsize=6, va="center")
            ax.set_xlabel(f"rank of {len(names)} parameters (the {NAMED} largest and smallest named)")
        ax.set_ylabel(ax_label)
        ax.set_title("per parameter", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)


def decay_rates(eigenvalues: np.ndarray) -> tuple:
    """``(re, decaying, zero)``, each shaped (N, n): |Re mu| of the decaying modes (0 for the
    others); which modes decay faster than ``STRUCTURAL_ZERO`` of the step's fastest; which
    are structural zeros, |mu| within that fraction (round-off of a conservation law, of
    either sign).  A mode in neither set grows (Re mu > 0)."""
    re = np.abs(np.minimum(np.real(eigenvalues), 0))
    tiny = STRUCTURAL_ZERO * np.maximum(re.max(axis=1, keepdims=True), 1e-300)
    return re, re > tiny, np.abs(eigenvalues) <= tiny


def _listed(parameters) -> str:
    """Names, at most ``MAX_LISTED`` of them (a mechanism has hundreds)."""
    names = ", ".join(p.name for p in parameters[:MAX_LISTED])
    return names + (f" and {len(parameters) - MAX_LISTED} more (see the table)"
                    if len(parameters) > MAX_LISTED else "")


def _log10_abs(x) -> float:
    return float(np.log10(abs(x))) if x else float("nan")


def _one_step(method, z, coupling):
    """(R(z), R'(z)) elementwise: the method's growth per step on y' = mu y and its derivative,
    or for a reversible solve the scheme's one step from (1, 1) and its derivative over h."""
    if coupling is None:
        return method.stability(z), method.stability.derivative(z)
    y, d = predict_reversible(method, z.ravel(), h=1.0, n_steps=1, coupling=coupling)
    return y.reshape(z.shape), d.reshape(z.shape)


def _exact_flow(z):
    """(e^z, e^z): what R(z) and R'(z) approximate (Re z capped so a growing mode stays finite)."""
    e = np.exp(np.minimum(np.real(z), 700.0) + 1j * np.imag(z))
    return e, e


def refuse_variable_order(method) -> None:
    """A ValueError naming ``method`` when it is a variable-order family (FBDF, QNDF): the
    diagnosis predicts with R'(z) of one fixed one-step method, and these change order from
    step to step.  Every adapter's ``diagnose`` asks this first."""
    from .catalogue import UnknownMethodError, get_variable_order

    try:
        get_variable_order(method)
    except UnknownMethodError:
        return
    raise ValueError(f"diagnose analyses one-step methods (its predictions use R'(z) of a fixed method); "
                     f"{method!r} changes order from step to step: diagnose the problem with a one-step "
                     "method such as RadauIIA5")


def diagnose(method, t, h, jacobians=None, eigenvalues=None, param_jacobians=None, param_names=None,
             params=None, states=None, coupling=None, output_cotangents=None, log_params=False) -> Diagnosis:
    """Stiffness and gradient-attenuation report for a solve.

    Parameters
    ----------
    method : catalogue id; the solver used (the base, with ``coupling`` for reversible solves).
    t, h : (N,) start times and sizes of the accepted steps.
    jacobians : (N, n, n) df/dy at the step starts; or ``eigenvalues`` (N, n) instead
        (then parameters cannot be projected on modes).
    param_jacobians : (N, n, P) df/dp at the same points; ``param_names``, ``params`` (values,
        for the log-p gain) optional.  Each parameter's ``log10_attenuation`` compares the size
        of dy/dp along the solve linearised at every step, propagated with the method's R(h mu)
        and fed by h R'(h mu) per mode, with the same through the exact flow (e^(h mu) for
        both); below ``STARVED`` the method loses what the exact flow would give, and the
        parameter is starved.  A mode deep in the stiff tail does not starve its parameters:
        R'(z) decays like a power of |z|, e^z faster, so there the exact gradient is itself tiny.
    log_params : True when ``params`` are already logarithms of rates (no log-p advice).
    states : (N, n) the states, for output-scaling advice.
    coupling : float in (0, 1) for a reversible solve.
    output_cotangents : (N + 1, n) dL/dy at the step boundaries t_0 ... t_N (zero where the
        loss sees no output); with ``param_jacobians`` each parameter also gets the
        predicted dL/dp of the linearised discrete model (see :func:`predicted_gradients`).
    """
    m = get_method(method)
    if not m.is_one_step:
        raise ValueError(f"diagnostics need a one-step method; {m.id!r} is {m.family}")
    coupling = None if coupling is None else check_coupling(coupling)
    t = _finite_array("t", t, 1)
    h = _finite_array("h", h, 1)
    if t.shape != h.shape:
        raise ValueError(f"t has {t.size} steps but h has {h.size}")
    vecs = None
    if jacobians is not None:
        J = _finite_array("jacobians", jacobians, 3)
        if J.shape[0] != h.size or J.shape[1] != J.shape[2]:
            raise ValueError(f"jacobians must have shape ({h.size}, n, n) for {h.size} steps, got {J.shape}")
        eig, vecs = np.linalg.eig(J)
    elif eigenvalues is not None:
        eig = _finite_array("eigenvalues", eigenvalues, 2, complex)
        if eig.shape[0] != h.size:
            raise ValueError(f"eigenvalues has {eig.shape[0]} rows but there are {h.size} steps")
    else:
        raise ValueError("give jacobians (N, n, n) or eigenvalues (N, n)")
    z = h[:, None] * eig
    re, shown, _ = decay_rates(eig)
    with np.errstate(divide="ignore", invalid="ignore"):
        decaying = np.where(shown, re, np.nan)
        spread = np.nanmax(decaying, axis=1) / np.nanmin(decaying, axis=1)
    span = abs(t[-1] + h[-1] - t[0])
    stiffness_index = float(np.nanmax(re) * span) if re.size else 0.0
    in_tail = np.any((np.abs(z) >= STIFF_TAIL) & (np.real(z) < 0), axis=1)
    diag = Diagnosis(m.id, t, h, eig, z, spread, stiffness_index, float(in_tail.mean()), coupling=coupling)
    if param_jacobians is not None:
        if vecs is None:
            raise ValueError("per-parameter attenuation needs jacobians (eigenvectors), not only eigenvalues")
        diag.parameters = _parameters(m, h, eig, vecs, z, param_jacobians, param_names, params, coupling)
        if output_cotangents is not None:
            if coupling is not None:
                raise ValueError("predicted gradients are for one-step solves; drop output_cotangents "
                                 "for a reversible solve")
            grads = predicted_gradients(m, h, eig, vecs, np.asarray(param_jacobians, dtype=float),
                                        output_cotangents)
            for p, g in zip(diag.parameters, grads):
                p.predicted_gradient = float(g)
    elif output_cotangents is not None:
        raise ValueError("output_cotangents need param_jacobians (df/dp at the steps)")
    diag.advice = _advice(diag, m, states, t, h, coupling, log_params)
    return diag


def cotangents_on_steps(boundaries, states, output_times, loss_grad) -> np.ndarray:
    """dL/dy on a solve's step boundaries (N + 1,), the (N + 1, n) array :func:`diagnose` takes:
    ``loss_grad(Y) -> dL/dY`` evaluated on the states (N + 1, n) at ``output_times`` (M,), each
    of which must be a boundary (solves landing on them: ``tstops``, ``step_ts``, torch's
    output times), and zero elsewhere."""
    b = _finite_array("boundaries", boundaries, 1)
    Y = _finite_array("states", states, 2)
    times = _finite_array("output_times", output_times, 1)
    scale = max(np.max(np.abs(b)), 1e-300)
    index = np.array([int(np.argmin(np.abs(b - time))) for time in times], dtype=int)
    for time, k in zip(times, index):
        if abs(b[k] - time) > 1e-9 * scale:
            raise ValueError(f"output time {time:g} is not a step boundary (nearest {b[k]:g}); make the solve "
                             "land on the output times")
    grads = _finite_array("output_cotangents", loss_grad(Y[index]), 2)
    if grads.shape[0] != times.size:
        raise ValueError(f"{grads.shape[0]} output cotangents for {times.size} output times")
    out = np.zeros((b.size, grads.shape[1]))
    np.add.at(out, index, grads)
    return out


def predicted_gradients(method, h, eigenvalues, eigenvectors, param_jacobians, output_cotangents) -> np.ndarray:
    """dL/dp predicted from the method's stability function alone (Fronk & Petzold 2025).

    Each step is the method on the solve linearised at its start, J = V diag(mu) V^-1: the
    state propagates by R(hJ) = V diag(R(h mu)) V^-1 and a parameter perturbs it by
    V diag(h R'(h mu)) V^-1 df/dp (the one-step derivative of a mode with respect to its own
    rate; R'(0) = 1 recovers h df/dp).  The cotangent lambda runs backwards from the outputs,
    lambda_k = R(h_k J_k)^T lambda_{k+1} + dL/dy_k, and dL/dp = sum_k lambda_{k+1}^T
    V diag(h R'(z)) V^-1 df/dp.  Exact for a linear system whose parameters scale its modes'
    rates; for nonlinear ones the order of magnitude the stiffness allows (tests check it
    against measured gradients on ROBER and POLLU).
    """
    m = get_method(method)
    N, n = eigenvalues.shape
    cot = _finite_array("output_cotangents", output_cotangents, 2)
    if cot.shape != (N + 1, n):
        raise ValueError(f"output_cotangents must have shape ({N + 1}, {n}): dL/dy at the {N + 1} step "
                         f"boundaries of {n} states, got {cot.shape}")
    z = h[:, None] * eigenvalues
    r = m.stability(z)
    dr = h[:, None] * m.stability.derivative(z)
    inv = np.linalg.inv(eigenvectors)
    lam = cot[N].astype(complex)
    grad = np.zeros(param_jacobians.shape[2], dtype=complex)
    # vector-matrix products only: the matrices V diag(.) V^-1 df/dp are never formed (a
    # four-operand einsum over every step took 95 s of a 318-parameter diagnosis)
    for k in range(N - 1, -1, -1):
        modal = lam @ eigenvectors[k]                       # lambda^T V
        grad += ((modal * dr[k]) @ inv[k]) @ param_jacobians[k]
        lam = (modal * r[k]) @ inv[k] + cot[k]              # R(h_k J_k)^T lambda + dL/dy_k
    return np.real(grad)


def _parameters(m, h, eig, vecs, z, param_jacobians, names, params, coupling):
    Fp = _finite_array("param_jacobians", param_jacobians, 3)
    N, n = eig.shape
    if Fp.shape[:2] != (N, n):
        raise ValueError(f"param_jacobians must have shape ({N}, {n}, P) to match {N} steps of {n} states, "
                         f"got {Fp.shape}")
    P = Fp.shape[2]
    names = [f"p{j}" for j in range(P)] if names is None else list(names)
    if len(names) != P:
        raise ValueError(f"{len(names)} parameter names for {P} parameters")
    values = None if params is None else np.asarray(params, dtype=float).ravel()
    if values is not None and values.size != P:
        raise ValueError(f"params has {values.size} values but df/dp has {P} columns")
    inv = np.linalg.inv(vecs)
    modal = inv @ Fp                                                    # (N, n, P): modal components of df/dp
    weight = np.abs(modal) * np.linalg.norm(vecs, axis=1)[:, :, None] * np.abs(h)[:, None, None]
    method = _sensitivity_sizes(*_one_step(m, z, coupling), h, vecs, inv, modal)
    exact = _sensitivity_sizes(*_exact_flow(z), h, vecs, inv, modal)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(method == exact, 0.0, np.log10(method) - np.log10(exact))  # 0/0: feeds nothing
    out = []
    for j in range(P):
        w = weight[:, :, j]
        k_star = np.unravel_index(np.argmax(w), w.shape)
        out.append(ParameterDiagnosis(names[j], float(log_ratio[j]), float(abs(np.real(eig[k_star]))),
                                      None if values is None else float(values[j])))
    return out


def _sensitivity_sizes(r, dr, h, vecs, inv, modal):
    """Size (2-norm over states and step boundaries) of dy_k/dp_j for every parameter, for the
    solve linearised at each step start: S_{k+1} = V (R(z) V^-1 S_k + h R'(z) V^-1 df/dp), S_0 = 0,
    with (R, R') the method's or the exact flow's (Fronk & Petzold 2025, per mode)."""
    N, n, P = modal.shape
    S = np.zeros((n, P), dtype=complex)
    squares = np.zeros(P)
    feed = h[:, None] * dr                                              # h R'(z) per step and mode
    for k in range(N):
        S = vecs[k] @ (r[k][:, None] * (inv[k] @ S) + feed[k][:, None] * modal[k])
        squares += np.sum(np.abs(S) ** 2, axis=0)
    return np.sqrt(squares)


def _advice(diag, m, states, t, h, coupling, log_params):
    advice = []
    valued = [p for p in diag.parameters if p.value]
    if valued and not log_params:
        decades = [math.log10(abs(p.value)) for p in valued]
        gains = (", ".join(f"{p.name} x{abs(p.value):.3g}" for p in valued) if len(valued) <= MAX_LISTED
                 else "per parameter in the table's log-p gain column")
        advice.append(f"log-parameterise rates: d/d(log p) = p d/dp multiplies each gradient by |p|: {gains}"
                      f" (the rates span {max(decades) - min(decades):.1f} decades, which raw gradients inherit)")
    # one line per group of starved parameters feeding the same mode (to 3 digits)
    groups: dict = {}
    for p in diag.parameters:
        if p.starved:
            groups.setdefault(float(f"{p.fastest_mode:.3g}"), []).append(p)
    for mode, members in groups.items():
        worst = min(p.log10_attenuation for p in members)
        best = max(p.log10_attenuation for p in members)
        ratio = f"1e{worst:.1f}" if len(members) == 1 else f"1e{worst:.1f} to 1e{best:.1f}"
        resolve = (f"; steps shorter than {RESOLVED / mode:.3g} (max_step) give {'it' if len(members) == 1 else 'them'}"
                   " back" if mode > 0 else "")
        advice.append(f"{_listed(members)} {'is' if len(members) == 1 else 'are'} starved: the method's "
                      f"sensitivities are {ratio} of the exact flow's on the same steps (fed mostly into modes "
                      f"with |Re mu| ~ {mode:.3g}, where R'(h mu) falls far below e^(h mu)){resolve}")
    if states is not None:
        Y = _finite_array("states", states, 2)
        scale = Y.max(axis=0) - Y.min(axis=0)
        span = abs(t[-1] + h[-1] - t[0])
        constant = int((scale == 0).sum())
        advice.append("scale outputs and loss per species by y_max - y_min = ["
                      + ", ".join(f"{s:.3g}" if s else "-" for s in scale) + f"] and time by t1 - t0 = {span:.3g}"
                      + " (Kim et al. 2021)" + (f"; '-': {constant} species constant over the solve, "
                                                 "nothing to scale" if constant else ""))
    if coupling is not None:
        zs = diag.z[np.real(diag.z) < 0]
        if zs.size:
            choice = optimal_coupling(m, zs, n_steps=max(diag.h.size, 1), warn=False)  # reported below
            advice.append(f"reversible: coupling {choice.coupling:.4g} minimises growth over this spectrum "
                          f"(forward {choice.forward:.4g}, reconstruction {choice.reconstruction:.4g} per step, "
                          f"{choice.digits_lost:.1f} digits lost over {diag.h.size} steps)")
    return advice
