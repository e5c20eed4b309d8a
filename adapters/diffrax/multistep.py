"""Variable-step, variable-order BDF (``FBDF``) and NDF (``QNDF``) as diffrax solvers.

The quasi-constant step-size form of Shampine & Reichelt (1997, sec. 2.3) with the step
arithmetic of :mod:`stiffcore.multistep` (constant tables indexed by the traced order, so a
step jits, vmaps and differentiates) and the controller every adapter shares: the order
among k-1, k, k+1 after k + 1 steps at one size, h kept while it would grow by less than 1.2.
The difference table lives in the solver state; ``made_jump`` restarts it at order 1.

diffrax's ``PIDController`` decides whether a step is kept and how long the next one is,
from one error norm and one static ``error_order``; a BDF chooses order and step together
from the estimates of three orders.  So these solvers read the controller's tolerances and
norm (handed to ``root_finder`` as diffrax's implicit solvers take them), make the BDF
decision themselves, and report an error whose scaled norm is E = (F / 0.9)^-2 for the step
factor F they chose: E < 1 exactly when the order-k estimate is within the tolerance, and
PID's I-controller (its defaults: safety 0.9, icoeff 1, pcoeff = dcoeff = 0) then proposes
F itself, F = 1 (the Newton matrix's c unchanged) included.  Other PID settings keep every
accept/reject decision exact and only scale the steps.

Outputs between steps (``SaveAt(ts)``, ``dense``) are the interpolating polynomial of the
step's order; each corrector y = b + c f(t, y) is solved by ``root_finder``, with one
Jacobian kept over many steps where the root finder is diffrax's ``VeryChord`` with a direct
linear solver (:mod:`.kept_jacobian`), and differentiated by the implicit function theorem
(Optimistix's implicit adjoint); re-sampling and update are linear, so gradients are those of
the discrete solution through every past value the table holds.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from stiffcore import multistep as ms
from stiffcore.catalogue import get_variable_order

from ._steps import _accept_roundoff_roots
from .interpolation import PolynomialInterpolation
from .kept_jacobian import (differentiable_root, jacobian_products, keeps_jacobian, newton_model, only_if,
                            probe_count, probe_directions, without_gradient)
from .linear_solvers import implicit_adjoint
from .root_finders import VeryChord
from .solvers import _check_ode_term, _flat_field, with_linear_solver

#: the error order reported to the controller (the reported norm is shaped for it, above)
REPORTED_ERROR_ORDER = 2
#: PIDController's default safety factor, which the reported norm assumes
PID_SAFETY = 0.9


class MultistepState(NamedTuple):
    """The history a step continues: the difference table (ROWS, n) at step ``h_table``,
    the order of the next step, the steps taken at ``h_table``, whether the table must be
    started afresh (before the first step), and the Jacobian kept for Newton
    (:mod:`.kept_jacobian`) with its age."""

    table: jax.Array
    h_table: jax.Array
    order: jax.Array
    n_equal: jax.Array
    fresh: jax.Array
    jacobian: jax.Array       # J's products with the probe directions (k, n), no gradient; (0, n) if not kept
    jacobian_age: jax.Array   # accepted steps since J was evaluated


class _Tables(NamedTuple):
    """The core's tables (and the family's coefficients) as arrays of the state's dtype."""

    predictor: jax.Array
    corrector: jax.Array
    update: jax.Array
    new_value: jax.Array
    rescale: jax.Array
    mask: jax.Array
    power: jax.Array
    alpha: jax.Array
    error_constants: jax.Array


def _tables(family, dtype) -> _Tables:
    arrays = (ms.PREDICTOR, ms.corrector_weights(family), ms.UPDATE, ms.NEW_VALUE, ms.RESCALE_POLYNOMIALS,
              ms.ORDER_MASK, ms.POWER_COEFFICIENTS, family.alpha, family.error_constants)
    return _Tables(*(jnp.asarray(a, dtype=dtype) for a in arrays))


def resample(T: _Tables, table, ratio, order):
    """The order-``order`` table at ``ratio`` times its step (ratio and order traced)."""
    low = ms.MAX_ORDER + 1
    rescale = jnp.tensordot(ratio ** jnp.arange(low, dtype=table.dtype), T.rescale, axes=1)
    return jnp.concatenate([rescale @ (T.mask[order][:low, None] * table[:low]), table[low:]])


def corrector_step(T: _Tables, f, t1, table, h_table, order, root_finder, max_steps: int):
    """(y1, updated table, root-find result, iterations) of one order-``order`` step to t1 from ``table``
    at step ``h_table``: y1 = b + c f(t1, y1), c = h_table / alpha_k, by the root finder from
    the predictor, which linearises f itself (the implicit function theorem differentiates it)."""
    c = h_table / T.alpha[order]
    b = T.corrector[order] @ table
    residual = _residual(f, t1)
    sol = optx.root_find(residual, root_finder, T.predictor[order] @ table, args=(b, c), throw=False,
                         max_steps=max_steps, adjoint=implicit_adjoint(root_finder))
    result = _root_result(residual, sol, (b, c), root_finder)
    return sol.value, _updated(T, table, order, sol.value), result, sol.stats["num_steps"]


class KeptStep(NamedTuple):
    """A corrector solved on a kept Jacobian: as :func:`corrector_step`, with the Jacobian
    products the step used and whether it evaluated them."""

    y1: jax.Array
    table: jax.Array
    result: optx.RESULTS
    iterations: jax.Array
    jacobian: jax.Array
    refreshed: jax.Array


def kept_corrector_step(T: _Tables, f, t1, table, h_table, order, root_finder, max_steps: int,
                        jacobian, due) -> KeptStep:
    """The step of :func:`corrector_step` by the chord method on a kept J (:mod:`.kept_jacobian`):
    J evaluated at the predictor where ``due`` (a restart, or J ``JACOBIAN_AGE`` steps old) and
    again after a Newton failure on an older J; the root is then differentiated at itself."""
    c = h_table / T.alpha[order]
    b = T.corrector[order] @ table
    # Newton without gradient: every input stopped, f's captured arrays included
    predictor, b_, c_, t_ = jax.lax.stop_gradient((T.predictor[order] @ table, b, c, t1))
    f_ = without_gradient(f, t_, predictor)
    residual_ = _residual(f_, t_)
    linear_solver = root_finder.linear_solver
    directions = probe_directions(linear_solver, predictor.size, predictor.dtype)

    def evaluate(_):
        return jacobian_products(f_, t_, predictor, directions)

    def solve(products):
        model = newton_model(products, c_, linear_solver)
        start = root_finder.init(lambda y, _: (model(y), None), predictor, None, {},
                                 jax.eval_shape(lambda: predictor), None, frozenset())
        sol = optx.root_find(residual_, root_finder, predictor, args=(b_, c_), options=dict(init_state=start),
                             throw=False, max_steps=max_steps)
        return sol.value, _root_result(residual_, sol, (b_, c_), root_finder), sol.stats["num_steps"]

    def evaluate_and_solve(_):
        products = evaluate(None)
        return (products, *solve(products))

    products = only_if(due, evaluate, jax.lax.stop_gradient(jacobian))
    y, result, iterations = solve(products)
    retry = (result != optx.RESULTS.successful) & ~due
    products, y, result, iterations = only_if(retry, evaluate_and_solve, (products, y, result, iterations))
    y1 = differentiable_root(_residual(f, t1), y, (b, c), root_finder)
    return KeptStep(y1, _updated(T, table, order, y1), result, iterations, products, due | retry)


def _residual(f, t1):
    def residual(y, args):   # a closure over f: Optimistix converts it, so f's captured arrays get gradients
        b, c = args
        return y - b - c * f(t1, y)
    return residual


def _root_result(residual, sol, args, root_finder):
    """The root find's result; a root with non-finite values is a failure."""
    result = _accept_roundoff_roots(residual, sol, args, root_finder)
    return optx.RESULTS.where((result == optx.RESULTS.successful) & ~jnp.all(jnp.isfinite(sol.value)),
                              optx.RESULTS.nonfinite, result)


def _updated(T: _Tables, table, order, y1):
    return T.update[order] @ table + T.new_value[order][:, None] * y1


class VariableOrderSolver(diffrax.AbstractAdaptiveSolver, diffrax.AbstractImplicitSolver):
    """Base class of :class:`FBDF` and :class:`QNDF` (see the module docstring).

    ``root_finder`` solves each corrector (default ``VeryChord`` with the step-size
    controller's tolerances, which the order selection reads too; with ``VeryChord`` and a
    direct linear solver the Jacobian is kept across steps); ``linear_solver`` (a
    lineax solver) replaces its linear solver (dense LU by default; ``SparseLU`` for a sparse
    Jacobian; ``lineax.GMRES`` matrix-free, by Newton-Krylov); ``max_order`` is the highest
    order used, 1..5.  Use them with ``diffrax.PIDController``; with ``ConstantStepSize``
    (and the root finder's tolerances given, as diffrax asks of every implicit solver) the
    order follows the estimates where they meet the tolerance and otherwise rises by one
    after every k + 1 steps up to ``max_order`` (the fixed-step starting procedure).  ``PIDController(jump_ts=...)``
    restarts the history at order 1 after each jump.  Events are located on the
    interpolating polynomial as diffrax does for every solver."""

    family_id: ClassVar[str] = ""
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = PolynomialInterpolation

    root_finder: optx.AbstractRootFinder = diffrax.with_stepsize_controller_tols(VeryChord)()
    root_find_max_steps: int = 10
    linear_solver: lx.AbstractLinearSolver | None = None
    max_order: int = eqx.field(static=True, default=ms.MAX_ORDER)

    def __check_init__(self):
        ms.check_max_order(self.max_order)

    @property
    def family(self):
        return get_variable_order(self.family_id)

    def order(self, terms):
        return 1   # the first steps; the order then varies from step to step

    def error_order(self, terms):
        return REPORTED_ERROR_ORDER

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def _root_finder(self):
        return with_linear_solver(self.root_finder, self.linear_solver)

    def _tolerances(self):
        """(rtol, atol, norm) of the step-size controller, as the root finder received them."""
        rtol, atol, norm = (getattr(self.root_finder, name, None) for name in ("rtol", "atol", "norm"))
        numbers = all(isinstance(v, (int, float, np.ndarray, jax.Array)) for v in (rtol, atol))
        if not (numbers and callable(norm)):   # e.g. diffrax's placeholder for the controller's values
            raise ValueError(f"{type(self).__name__} chooses its order from the step-size controller's "
                             "tolerances: use diffrax.PIDController(rtol=..., atol=...) (a constant step size "
                             "cannot drive a variable-order method), or give root_finder=diffrax.VeryChord("
                             "rtol=..., atol=...) with the controller's values")
        return rtol, atol, norm

    def init(self, terms, t0, t1, y0, args):
        _check_ode_term(terms)
        self._tolerances()
        if any(jnp.iscomplexobj(leaf) for leaf in jax.tree_util.tree_leaves(y0)):
            raise ValueError(f"{type(self).__name__} takes real states (its error norm is the controller's); "
                             "carry a complex state as its real and imaginary parts")
        _, flat, _ = _flat_field(terms, args, y0)
        flat = eqx.error_if(flat, ~jnp.all(jnp.isfinite(flat)), "y0 has non-finite (nan or inf) values")
        root_finder = self._root_finder()
        probes = probe_count(root_finder.linear_solver, flat.size) if keeps_jacobian(root_finder) else 0
        return MultistepState(jnp.zeros((ms.ROWS, flat.size), flat.dtype), jnp.zeros((), flat.dtype),
                              jnp.ones((), jnp.int32), jnp.zeros((), jnp.int32), jnp.ones((), bool),
                              jnp.zeros((probes, flat.size), flat.dtype), jnp.zeros((), jnp.int32))

    def step(self, terms, t0, t1, y0, args, solver_state: MultistepState, made_jump):
        rtol, atol, norm = self._tolerances()
        f, flat, unravel = _flat_field(terms, args, y0)
        dtype = flat.dtype
        T = _tables(self.family, dtype)
        t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
        h = t1 - t0
        s = solver_state
        restart = s.fresh | made_jump
        order = jnp.where(restart, 1, s.order)
        same = ~restart & (jnp.abs(h - s.h_table) <= 16 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(t0),
                                                                                               jnp.abs(s.h_table)))
        # a new history (f just after a jump, with made_jump), or the table at this step
        table = jax.lax.cond(
            restart, lambda: jnp.zeros_like(s.table).at[0].set(flat).at[1].set(h * f(t0, flat)),
            lambda: jnp.where(same, s.table, resample(T, s.table, h / jnp.where(s.h_table == 0, h, s.h_table),
                                                      order)))
        h_table = jnp.where(same, s.h_table, h)
        n_equal = jnp.where(same, s.n_equal, 0) + 1
        root_finder = self._root_finder()
        if keeps_jacobian(root_finder):
            due = restart | (s.jacobian_age >= ms.JACOBIAN_AGE)
            kept = kept_corrector_step(T, f, t1, table, h_table, order, root_finder, self.root_find_max_steps,
                                       s.jacobian, due)
            y1, new_table, result, iterations = kept.y1, kept.table, kept.result, kept.iterations
            jacobian, jacobian_age = kept.jacobian, jnp.where(kept.refreshed, 0, s.jacobian_age) + 1
        else:
            y1, new_table, result, iterations = corrector_step(T, f, t1, table, h_table, order, root_finder,
                                                               self.root_find_max_steps)
            jacobian, jacobian_age = s.jacobian, s.jacobian_age

        # the BDF decision, reported to the controller as an error norm (module docstring)
        data = jax.lax.stop_gradient((flat, y1, new_table))
        scale = atol + rtol * jnp.maximum(jnp.abs(data[0]), jnp.abs(data[1]))
        unit = norm(unravel(jnp.ones_like(flat)))

        def estimate(q):   # the order-q estimate's scaled norm, C_q ||D[q+1]||
            return T.error_constants[q] * norm(unravel(data[2][q + 1] / scale)) / unit

        error_k = estimate(order)
        accepted = (error_k <= 1) & (result == optx.RESULTS.successful)
        safety = ms.newton_safety(iterations)
        factor, next_order = self._next_step(estimate, order, n_equal, safety)
        # accepted steps never shrink under PID; a rejected one must shrink below its safety
        factor = jnp.where(accepted, jnp.maximum(factor, 1.0),
                           jnp.minimum(jnp.maximum(ms.MIN_FACTOR, safety * error_k ** (-1 / (order + 1))),
                                       0.99 * PID_SAFETY))
        reported = (factor / PID_SAFETY) ** -REPORTED_ERROR_ORDER
        # a failed root find has an infinite error, so the controller shrinks the step
        reported = jnp.where(result == optx.RESULTS.successful, reported, jnp.inf)
        y_error = unravel(reported / unit * scale)

        # a step the estimate rejects is kept only by a controller that does not choose steps
        # (ConstantStepSize): there the order rises after every k + 1 steps (the starting
        # procedure of the fixed steps of the SciPy and torch solvers); PID discards this state
        next_order = jnp.where(accepted, next_order,
                               jnp.where(n_equal > order, jnp.minimum(order + 1, self.max_order), order))
        changed = next_order != order
        restart_count = changed | (accepted & (factor != 1))
        new_state = MultistepState(new_table, h_table, next_order, jnp.where(restart_count, 0, n_equal),
                                   jnp.zeros((), bool), jacobian, jacobian_age)
        coeffs = T.power[order] @ new_table
        dense_info = dict(y0=y0, coeffs=jax.vmap(unravel)(coeffs))
        return unravel(y1), y_error, dense_info, new_state, diffrax.RESULTS.promote(result)

    def _next_step(self, estimate, order, n_equal, safety):
        """(factor, order) after an accepted step: :func:`stiffcore.multistep.next_order_and_step`
        once k + 1 steps were taken at one size, else (1, k) (h and the order kept)."""
        candidates = jnp.stack([order - 1, order, order + 1])
        valid = (candidates >= 1) & (candidates <= self.max_order)
        safe = jnp.clip(candidates, 1, ms.MAX_ORDER)
        errors = jnp.stack([estimate(q) for q in safe])
        growth = jnp.where(errors == 0, jnp.inf, errors ** (-1.0 / (safe + 1)))
        growth = jnp.where(valid, growth, -jnp.inf)
        # the largest growth, the current order on a tie (index 1)
        best = jnp.where(growth[1] >= jnp.max(growth), 1, jnp.argmax(growth))
        factor = jnp.minimum(ms.MAX_FACTOR, safety * growth[best])
        new_order = safe[best]
        keep = (new_order == order) & (factor >= 1) & (factor < ms.KEEP_BELOW)
        decide = (n_equal > order) & ~keep
        return jnp.where(decide, factor, 1.0), jnp.where(decide, new_order, order)


class FBDF(VariableOrderSolver):
    """FBDF: BDF orders 1..5 in the quasi-constant step-size form (kappa = 0)."""

    family_id = "fbdf"


class QNDF(VariableOrderSolver):
    """QNDF: the Klopfenstein-Shampine NDFs of orders 1..4 and BDF5, as MATLAB's ode15s
    (Shampine & Reichelt 1997)."""

    family_id = "qndf"


for _cls in (FBDF, QNDF):
    _cls.__doc__ = f"{_cls.__doc__}\n\nReference: {get_variable_order(_cls.family_id).reference}.\n\n" + \
        (VariableOrderSolver.__doc__ or "")

MULTISTEP_SOLVERS = {"FBDF": FBDF, "QNDF": QNDF}
