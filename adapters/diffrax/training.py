"""The training recipes (:mod:`stiffcore.training`) on JAX: an equinox perceptron inside
a scaled vector field, solved by a stiffcore diffrax solver, trained with optax AdamW.

The gradient is diffrax's ``RecursiveCheckpointAdjoint``: backpropagation through the
discrete stiff solve, which never integrates the stiff system backwards (Kim et al.
2021 show reversed solves are unstable).  One jitted function does solve, gradient and
update.
"""

from __future__ import annotations

import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stiffcore.training.checkpoint import Moments

from . import diffrax_solver

class ScaledVectorField(eqx.Module):
    """du/dt = NN(u) * y_scale / t_scale (Kim et al. 2021, Eq. 10).  The scales are static:
    they are data, never trained or decayed."""

    network: eqx.nn.MLP
    y_scale: tuple = eqx.field(static=True)
    t_scale: float = eqx.field(static=True)

    def __call__(self, t, u, args):
        return self.network(u) * jnp.asarray(self.y_scale, u.dtype) / self.t_scale


def network(recipe, weights, dtype) -> eqx.nn.MLP:
    """An ``eqx.nn.MLP`` holding ``weights`` ([(W, b), ...], W of shape (out, in))."""
    sizes = [weights[0][0].shape[1], weights[-1][0].shape[0]]
    act = jax.nn.gelu if recipe.activation == "gelu" else jnp.tanh  # jax.nn.gelu: the tanh approximation
    mlp = eqx.nn.MLP(sizes[0], sizes[1], recipe.width, recipe.depth, activation=act, key=jax.random.PRNGKey(0))
    return eqx.tree_at(layer_arrays, mlp, tuple(jnp.asarray(a, dtype) for pair in weights for a in pair))


def layer_arrays(mlp) -> tuple:
    """(W0, b0, W1, b1, ...) of an MLP, or of any pytree shaped like one (AdamW's moments)."""
    return tuple(x for layer in mlp.layers for x in (layer.weight, layer.bias))


def as_pairs(mlp) -> list:
    arrays = [np.asarray(a) for a in layer_arrays(mlp)]
    return list(zip(arrays[0::2], arrays[1::2]))


def normalise_gradient(norm: float) -> optax.GradientTransformation:
    """Rescale the whole gradient to Euclidean norm ``norm`` (the paper's POLLU recipe)."""

    def update(updates, state, params=None):
        scale = norm / jnp.maximum(optax.tree.norm(updates), jnp.finfo(jnp.result_type(float)).tiny)
        return jax.tree.map(lambda g: g * scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def optimiser(recipe) -> optax.GradientTransformation:
    adamw = optax.adamw(recipe.learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=recipe.adamw_weight_decay)
    return adamw if recipe.gradient_norm is None else optax.chain(normalise_gradient(recipe.gradient_norm), adamw)


class Trainer:
    """One recipe's training state on JAX; see :func:`stiffcore.training.train`."""

    def __init__(self, recipe, data, weights, moments: Moments | None = None) -> None:
        if not jax.config.jax_enable_x64:
            warnings.warn("JAX runs in float32: stiff training data span many orders of magnitude; "
                          "enable float64 with jax.config.update('jax_enable_x64', True)", stacklevel=2)
        dtype = jnp.result_type(float)
        field = ScaledVectorField(network(recipe, weights, dtype), tuple(map(float, data.y_scale)),
                                  float(data.t_scale))
        self.params, self.static = eqx.partition(field, eqx.is_inexact_array)
        self.optimiser = optimiser(recipe)
        self.opt_state = self.optimiser.init(self.params)
        if moments is not None:
            as_tree = lambda pairs: eqx.tree_at(  # noqa: E731
                lambda f: layer_arrays(f.network), self.params, tuple(jnp.asarray(a, dtype) for p in pairs for a in p))
            self.opt_state = optax.tree_utils.tree_set(self.opt_state, count=jnp.asarray(moments.step, jnp.int32),
                                                       mu=as_tree(moments.first), nu=as_tree(moments.second))
        y_scale, y_range = jnp.asarray(data.y_scale, dtype), jnp.asarray(data.y_range, dtype)
        times, observed, y0 = (jnp.asarray(a, dtype) for a in (data.times, data.y, data.y0))
        controller = diffrax.PIDController(rtol=recipe.rtol, atol=recipe.atol * y_scale)
        method = diffrax_solver(recipe.method)()
        # a checkpoint per step: states are a few floats, and the backward pass recomputes
        # nothing (the default, log2(max_steps) checkpoints, made an epoch ~1.5x slower)
        adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=recipe.max_steps)

        def predict(params):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(eqx.combine(params, self.static)), method, data.t0, data.times[-1],
                data.first_step, y0, saveat=diffrax.SaveAt(ts=times), stepsize_controller=controller,
                max_steps=recipe.max_steps, throw=False, adjoint=adjoint)
            # a failed solve (too many steps, Newton failure) makes the loss NaN, never silently wrong
            return jnp.where(sol.result == diffrax.RESULTS.successful, sol.ys, jnp.nan)

        def loss(params):
            ys = predict(params)
            return jnp.mean(jnp.abs(ys - observed) / y_scale), ys

        def step(params, opt_state):
            (value, ys), grads = eqx.filter_value_and_grad(loss, has_aux=True)(params)
            updates, new_state = self.optimiser.update(grads, opt_state, params)
            new_params = eqx.apply_updates(params, updates)
            grad_norm = optax.tree.norm(grads)
            ok = jnp.isfinite(value) & jnp.isfinite(grad_norm)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
            errors = jnp.mean(jnp.abs(ys - observed), axis=0) / y_range
            return keep(new_params, params), keep(new_state, opt_state), value, grad_norm, errors

        self._predict = eqx.filter_jit(predict)
        self._step = eqx.filter_jit(step)

    def step(self):
        self.params, self.opt_state, loss, grad_norm, errors = self._step(self.params, self.opt_state)
        return float(loss), float(grad_norm), np.asarray(errors)

    def predict(self) -> np.ndarray:
        return np.asarray(self._predict(self.params))

    def weights(self) -> list:
        return as_pairs(self.params.network)

    def moments(self) -> Moments:
        get = lambda key: optax.tree_utils.tree_get(self.opt_state, key)  # noqa: E731
        return Moments(step=int(get("count")), first=as_pairs(get("mu").network), second=as_pairs(get("nu").network))
