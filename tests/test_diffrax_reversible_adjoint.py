"""ReversibleAdjoint: exact gradients of the reversible map, rebuilt backwards, flat memory."""

import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
diffrax = pytest.importorskip("diffrax")
jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from stiffcore.adapters.diffrax import RadauIIA5, Reversible, ReversibleAdjoint  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:at t0:RuntimeWarning")  # growth warnings are tested elsewhere
FORCED = diffrax.ODETerm(lambda t, y, a: -a[0] * y + a[1] * jnp.sin(3 * t) * y[::-1])
Y0 = jnp.array([1.0, 0.5])
ARGS = jnp.array([0.7, 0.3])


def weighted_loss(solver, adjoint, saveat, controller=diffrax.ConstantStepSize(), dt0=0.01, t1=1.0, term=FORCED):
    def loss(y0, args):
        sol = diffrax.diffeqsolve(term, solver, 0.0, t1, dt0, y0, args=args, saveat=saveat, adjoint=adjoint,
                                  max_steps=4096, stepsize_controller=controller)
        weights = jnp.arange(1, sol.ys.size + 1, dtype=sol.ys.dtype).reshape(sol.ys.shape)
        return jnp.sum(weights * sol.ys ** 2)
    return eqx.filter_jit(jax.grad(loss, argnums=(0, 1)))


def assert_same_gradients(solver, saveat, rtol=1e-12, **kw):
    reference = weighted_loss(solver, diffrax.RecursiveCheckpointAdjoint(), saveat, **kw)(Y0, ARGS)
    reversible = weighted_loss(solver, ReversibleAdjoint(), saveat, **kw)(Y0, ARGS)
    for a, b in zip(reference, reversible):
        assert np.allclose(b, a, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(a)))), (a, b)


SAVEATS = {
    "t1": diffrax.SaveAt(t1=True),
    "ts": diffrax.SaveAt(ts=jnp.linspace(0.05, 1.0, 7)),
    "t0+ts+t1": diffrax.SaveAt(t0=True, ts=jnp.array([0.0, 0.333, 0.5, 1.0]), t1=True),
}


@pytest.mark.parametrize("saveat", SAVEATS, ids=list(SAVEATS))
@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "pid"])
def test_gradients_equal_backprop_through_the_same_reversible_map(saveat, adaptive):
    controller = diffrax.PIDController(rtol=1e-5, atol=1e-8) if adaptive else diffrax.ConstantStepSize()
    assert_same_gradients(Reversible(diffrax.Tsit5()), SAVEATS[saveat], controller=controller,
                          dt0=0.1 if adaptive else 0.01)


def test_implicit_bases_on_a_stiff_system():
    stiff = diffrax.ODETerm(lambda t, y, a: jnp.array([[-a[0], 1.0], [0.0, -1e3 * a[1]]]) @ y + jnp.sin(t))
    tight = diffrax.VeryChord(rtol=1e-12, atol=1e-14)
    for base in (RadauIIA5(root_finder=tight), diffrax.Kvaerno5(root_finder=tight)):
        assert_same_gradients(Reversible(base, coupling=0.5), SAVEATS["ts"], rtol=1e-9, term=stiff, dt0=0.05)


def test_parameters_inside_an_equinox_vector_field_and_pytree_states():
    mlp = eqx.nn.MLP(2, 2, 16, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))

    class Field(eqx.Module):
        net: eqx.nn.MLP

        def __call__(self, t, y, args):
            out = self.net(jnp.stack([y["x"], y["v"]]))
            return {"x": out[0], "v": out[1] * args}

    y0 = {"x": jnp.asarray(0.5), "v": jnp.asarray(-0.3)}

    def gradient(adjoint):
        @eqx.filter_jit
        @eqx.filter_grad
        def grad(field_y0_args):
            field, y0, args = field_y0_args
            sol = diffrax.diffeqsolve(diffrax.ODETerm(field), Reversible(diffrax.Tsit5()), 0.0, 1.0, 0.02, y0,
                                      args=args, adjoint=adjoint, saveat=diffrax.SaveAt(ts=jnp.linspace(0, 1, 5)))
            return jnp.sum(sol.ys["x"] ** 2 + jnp.sin(sol.ys["v"]))
        return grad((Field(mlp), y0, jnp.asarray(1.3)))

    for a, b in zip(jax.tree_util.tree_leaves(gradient(diffrax.RecursiveCheckpointAdjoint())),
                    jax.tree_util.tree_leaves(gradient(ReversibleAdjoint())), strict=True):
        assert np.allclose(b, a, rtol=1e-11, atol=1e-13)


def test_float32_vmap_and_backwards_in_time():
    def loss(y0, t1):
        sol = diffrax.diffeqsolve(FORCED, Reversible(diffrax.Tsit5()), 0.0, t1, 0.01 * jnp.sign(t1), y0, args=ARGS,
                                  adjoint=ReversibleAdjoint())
        return jnp.sum(sol.ys ** 2)

    batch = jnp.stack([Y0, 2 * Y0, -Y0])
    per_row = jax.vmap(jax.grad(loss), in_axes=(0, None))(batch, 1.0)
    assert np.allclose(per_row, jnp.stack([jax.grad(loss)(y, 1.0) for y in batch]), rtol=1e-12)
    backwards = jax.grad(loss)(Y0, -1.0)
    reference = jax.grad(lambda y0: jnp.sum(diffrax.diffeqsolve(
        FORCED, Reversible(diffrax.Tsit5()), 0.0, -1.0, -0.01, y0, args=ARGS).ys ** 2))(Y0)
    assert np.allclose(backwards, reference, rtol=1e-12)
    single = jax.grad(loss)(Y0.astype(jnp.float32), 1.0)
    assert single.dtype == jnp.float32 and np.allclose(single, per_row[0], rtol=1e-4)


def test_memory_is_flat_in_the_number_of_steps():
    """XLA's allocation for the compiled gradient: the step-time record (8 bytes a step) is all
    that grows, where checkpointing every step stores every 50-dimensional state.  (Nonlinear:
    JAX stores nothing at all to transpose a linear map.)"""
    decay = diffrax.ODETerm(lambda t, y, a: -a * jnp.tanh(y))

    def temp_bytes(n, adjoint):
        def loss(y0):
            sol = diffrax.diffeqsolve(decay, Reversible(diffrax.Tsit5()), 0.0, 1.0, 1.0 / n, y0, args=0.5,
                                      adjoint=adjoint, max_steps=n)
            return jnp.sum(sol.ys ** 2)
        return jax.jit(jax.grad(loss)).lower(jnp.ones(50)).compile().memory_analysis().temp_size_in_bytes

    growth = temp_bytes(10_000, ReversibleAdjoint()) - temp_bytes(1_000, ReversibleAdjoint())
    assert growth <= 8 * 9_000 * 1.25
    stored = temp_bytes(10_000, diffrax.RecursiveCheckpointAdjoint(checkpoints=10_000))
    assert stored - temp_bytes(1_000, diffrax.RecursiveCheckpointAdjoint(checkpoints=1_000)) > 20 * growth


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(solver=diffrax.Tsit5()), TypeError, "solver=Reversible"),
    (dict(saveat=diffrax.SaveAt(dense=True)), NotImplementedError, "dense"),
    (dict(saveat=diffrax.SaveAt(steps=True)), NotImplementedError, "steps=True"),
    (dict(saveat=diffrax.SaveAt(ts=jnp.array([1.0]), fn=lambda t, y, a: y[0])), NotImplementedError, "fn="),
    (dict(saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(t1=True), diffrax.SubSaveAt(t0=True)])),
     NotImplementedError, "subs="),
    (dict(event=diffrax.Event(lambda t, y, args, **kw: y[0] - 0.5)), NotImplementedError, "events"),
    (dict(max_steps=None), ValueError, "finite max_steps"),
])
def test_unsupported_options_are_refused(kwargs, error, match):
    options = dict(solver=Reversible(diffrax.Tsit5()), saveat=diffrax.SaveAt(t1=True), max_steps=100)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        diffrax.diffeqsolve(FORCED, t0=0.0, t1=1.0, dt0=0.1, y0=Y0, args=ARGS, adjoint=ReversibleAdjoint(), **options)


def test_forward_values_and_solver_state_are_those_of_the_plain_solve():
    saveat = diffrax.SaveAt(ts=jnp.linspace(0, 1, 4), solver_state=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = diffrax.diffeqsolve(FORCED, Reversible(diffrax.Tsit5()), 0.0, 1.0, 0.01, Y0, args=ARGS, saveat=saveat)
        ours = diffrax.diffeqsolve(FORCED, Reversible(diffrax.Tsit5()), 0.0, 1.0, 0.01, Y0, args=ARGS, saveat=saveat,
                                   adjoint=ReversibleAdjoint())
    assert np.array_equal(plain.ys, ours.ys)
    assert np.array_equal(plain.solver_state, ours.solver_state)
    assert int(ours.stats["num_accepted_steps"]) == 100


def test_backward_pass_warns_when_the_reconstruction_loses_digits_over_the_solve():
    """Growth 1/coupling per step on slow modes: 0.9 over 200 steps costs ~9 digits, 0.999 over
    200 steps 0.09 (the core's instability_warning weighed by the steps taken)."""
    decay = diffrax.ODETerm(lambda t, y, a: -a * y)

    def grad(coupling):
        return jax.grad(lambda y0: jnp.sum(diffrax.diffeqsolve(
            decay, Reversible(diffrax.Tsit5(), coupling), 0.0, 1.0, 1 / 200, y0, args=0.1,
            adjoint=ReversibleAdjoint(), max_steps=200).ys))(jnp.ones(2))

    with pytest.warns(RuntimeWarning, match="ReversibleAdjoint, rebuilding from t1: .*digits"):
        jax.block_until_ready(grad(0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.block_until_ready(grad(0.999))
