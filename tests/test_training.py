"""Training recipes (Kim et al. 2021): recipe data, network, both backends, the loop, the CLI.

Trainings here run a few epochs; the wall time to a trained ROBER model is measured by
benchmarks/training_benchmark.py.
"""

import io
from dataclasses import replace

import numpy as np
import pytest

from stiffcore.cli import main
from stiffcore.problems import get_problem
from stiffcore.training import (
    History,
    Moments,
    Recipe,
    forward,
    get_recipe,
    init_weights,
    load_checkpoint,
    make_data,
    save_checkpoint,
    train,
)
from stiffcore.training import loop as training_loop
from stiffcore.training.network import check_weights, layer_sizes
from stiffcore.training.progress import ProgressBar

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
torch = pytest.importorskip("torch")

from stiffcore.adapters.diffrax import training as jax_training  # noqa: E402
from stiffcore.adapters.torchdiffeq import training as torch_training  # noqa: E402

ROBER = get_recipe("rober")
POLLU = get_recipe("pollu")


@pytest.fixture(scope="module")
def rober_data():
    return make_data(ROBER)


@pytest.fixture(scope="module")
def jax_rober(rober_data):
    return jax_training.Trainer(ROBER, rober_data, init_weights(ROBER, 3, seed=0))


# ---------------------------------------------------------------- recipes and data

def test_recipes_are_the_papers():
    assert (ROBER.width, ROBER.depth, ROBER.activation, ROBER.scaled) == (5, 6, "gelu", True)
    assert np.allclose(ROBER.times, np.logspace(-5, 5, 50)) and ROBER.learning_rate == 5e-3 and ROBER.log_time
    assert (POLLU.width, POLLU.depth, POLLU.gradient_norm, len(POLLU.times)) == (10, 3, 100.0, 20)
    assert POLLU.times[0] == 0.0 and POLLU.times[-1] == 60.0
    base = ROBER.baseline()
    assert (base.width, base.depth, base.activation, base.scaled, base.name) == (50, 1, "tanh", False, "rober_unscaled")
    assert get_recipe("rober_unscaled") == base


@pytest.mark.parametrize("change, message", [
    (dict(activation="relu"), "activation must be one of"),
    (dict(method="rk45"), "unknown method"),
    (dict(method="ros3p"), "embedded error estimate"),
    (dict(method="tsit5"), "implicit method"),
    (dict(times=(1.0, 1.0, 2.0)), "strictly increasing"),
    (dict(times=(1.0,)), "at least 2"),
    (dict(width=0), "width must be a positive integer"),
    (dict(depth=2.5), "depth must be a positive integer"),
    (dict(learning_rate=-1.0), "learning_rate must be positive"),
    (dict(weight_decay=float("nan")), "weight_decay must be >= 0"),
    (dict(gradient_norm=0.0), "gradient_norm must be positive"),
    (dict(max_steps=0), "max_steps must be a positive integer"),
    (dict(problem="lorenz"), "unknown problem 'lorenz'"),
])
def test_bad_recipes_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        replace(ROBER, **change)


def test_recipe_fields_are_normalised():
    recipe = replace(ROBER, method="Rodas5P", times=np.array([1.0, 2.0]))
    assert recipe.method == "rodas5p" and recipe.times == (1.0, 2.0) and hash(recipe)


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(ValueError, match="Did you mean 'rober'.*pollu"):
        get_recipe("robber")


def test_data_match_the_reference_solutions(rober_data):
    t_ref, y_ref = get_problem("rober").reference
    assert rober_data.times[-1] == t_ref
    assert np.allclose(rober_data.y[-1], y_ref, rtol=1e-6)
    pollu = make_data(POLLU)
    t_ref, y_ref = get_problem("pollu").reference
    assert pollu.times[-1] == t_ref
    big = np.abs(y_ref) > 1e-12
    assert np.allclose(pollu.y[-1][big], y_ref[big], rtol=1e-5)
    assert np.allclose(pollu.y[0], pollu.y0)  # POLLU's data start at t0


def test_scales_are_kims(rober_data):
    y = rober_data.y
    assert np.allclose(rober_data.y_scale, y.max(0) - y.min(0)) and rober_data.t_scale == 1e5
    assert 3e-5 < rober_data.y_scale[1] < 4e-5  # B peaks at 3.6e-5, A and C span 0.98
    unscaled = make_data(ROBER.baseline())
    assert np.all(unscaled.y_scale == 1.0) and unscaled.t_scale == 1.0
    # every recipe is scored by the species' ranges: an unscaled model cannot pass by ignoring B
    assert np.array_equal(unscaled.y_range, rober_data.y_scale)
    off_in_b = unscaled.y.copy()
    off_in_b[:, 1] = 0.0
    assert unscaled.scaled_errors(off_in_b)[1] > 0.4


def test_flat_species_cannot_be_scaled():
    flat = replace(ROBER, times=(1e-30, 2e-30))  # nothing moves in 1e-30 s
    with pytest.raises(ValueError, match="do not change over the data"):
        make_data(flat)


def test_scaled_errors_check_the_shape(rober_data):
    assert np.all(rober_data.scaled_errors(rober_data.y) == 0)
    errors = rober_data.scaled_errors(rober_data.y + 0.1 * rober_data.y_scale)
    assert np.allclose(errors, 0.1)
    with pytest.raises(ValueError, match=r"shape \(50, 3\)"):
        rober_data.scaled_errors(rober_data.y[:10])


# ---------------------------------------------------------------- network

def test_glorot_initialisation():
    weights = init_weights(ROBER, 3, seed=1)
    assert [W.shape for W, _ in weights] == [(5, 3)] + [(5, 5)] * 5 + [(3, 5)]
    assert layer_sizes(ROBER, 3) == [3, 5, 5, 5, 5, 5, 5, 3]
    for W, b in weights:
        assert np.all(b == 0) and np.abs(W).max() <= np.sqrt(6 / sum(W.shape))
    assert not np.allclose(weights[0][0], init_weights(ROBER, 3, seed=2)[0][0])
    assert np.array_equal(weights[0][0], init_weights(ROBER, 3, seed=1)[0][0])


@pytest.mark.parametrize("recipe", [ROBER, ROBER.baseline()], ids=["gelu", "tanh"])
def test_backend_networks_compute_the_reference_network(recipe):
    rng = np.random.default_rng(3)
    weights = [(W, rng.normal(size=b.shape)) for W, b in init_weights(recipe, 3, seed=3)]
    u = rng.uniform(0, 1, (7, 3))
    expected = forward(recipe, weights, u)
    got_jax = jax.vmap(jax_training.network(recipe, weights, jax.numpy.float64))(u)
    got_torch = torch_training.network(recipe, weights)(torch.as_tensor(u)).detach().numpy()
    assert np.allclose(got_jax, expected, rtol=1e-12, atol=1e-14)
    assert np.allclose(got_torch, expected, rtol=1e-12, atol=1e-14)


def test_bad_weights_are_named():
    weights = init_weights(ROBER, 3)
    with pytest.raises(ValueError, match="7 layers"):
        check_weights(ROBER, 3, weights[:-1])
    with pytest.raises(ValueError, match=r"layer 2 .* needs weights W \(5, 5\)"):
        check_weights(ROBER, 3, weights[:2] + [(np.ones((4, 5)), np.zeros(5))] + weights[3:])
    with pytest.raises(ValueError, match="layer 0 of the weights holds NaN"):
        check_weights(ROBER, 3, [(np.full((5, 3), np.nan), np.zeros(5))] + weights[1:])
    with pytest.raises(ValueError, match="needs first AdamW moments W"):
        check_weights(ROBER, 3, [(np.ones((3, 5)), np.zeros(5))] + weights[1:], "first AdamW moments")


# ---------------------------------------------------------------- backends

def test_backends_predict_the_same_trajectory(rober_data, jax_rober):
    """Same weights, same model: the two solves differ only by their rtol-1e-3 errors."""
    weights = init_weights(ROBER, 3, seed=0)
    jax_pred = jax_rober.predict()
    torch_pred = torch_training.Trainer(ROBER, rober_data, weights).predict()
    assert jax_pred.shape == torch_pred.shape == rober_data.y.shape
    assert np.max(np.abs(jax_pred - torch_pred) / rober_data.y_scale) < 5e-3
    # and the untrained network is far from the data: B is the species that starts 43% off
    assert 0.3 < rober_data.scaled_errors(jax_pred)[1] < 0.5


def test_jax_training_lowers_the_loss(jax_rober, rober_data):
    losses = [jax_rober.step()[0] for _ in range(40)]
    assert losses[-1] < 0.95 * losses[0]
    loss, grad_norm, errors = jax_rober.step()
    assert np.isfinite(grad_norm) and grad_norm > 0 and errors.shape == (3,)
    # the loss is the mean of the per-species scaled errors, measured on the same solve
    assert loss == pytest.approx(errors.mean(), rel=1e-12)


def test_torch_training_lowers_the_loss(rober_data):
    trainer = torch_training.Trainer(ROBER, rober_data, init_weights(ROBER, 3, seed=0))
    losses = [trainer.step()[0] for _ in range(8)]
    assert losses[-1] < losses[0]
    loss, grad_norm, errors = trainer.step()
    assert loss == pytest.approx(errors.mean(), rel=1e-12) and grad_norm > 0


def test_weight_decay_is_per_step_in_both_backends(rober_data):
    """AdamW with a zero gradient only decays: p <- p (1 - weight_decay), Flux's convention."""
    recipe = replace(ROBER, weight_decay=1e-2)
    params = {"w": jax.numpy.ones(3)}
    opt = jax_training.optimiser(recipe)
    updates, _ = opt.update({"w": jax.numpy.zeros(3)}, opt.init(params), params)
    assert np.allclose(updates["w"], -1e-2)
    trainer = torch_training.Trainer(recipe, rober_data, init_weights(recipe, 3))
    p = next(trainer.field.parameters())
    before = p.detach().clone()
    for q in trainer.field.parameters():
        q.grad = torch.zeros_like(q)
    trainer.optimiser.step()
    assert torch.allclose(p.detach(), before * (1 - 1e-2))


def test_gradient_normalisation(rober_data):
    transform = jax_training.normalise_gradient(100.0)
    grads = {"a": jax.numpy.array([3.0, 4.0]), "b": jax.numpy.array([12.0])}
    out, _ = transform.update(grads, transform.init(grads))
    assert float(jax.numpy.sqrt(sum((v ** 2).sum() for v in out.values()))) == pytest.approx(100.0)
    assert np.allclose(out["a"], np.array([3.0, 4.0]) * 100 / 13)
    normalised = replace(ROBER, gradient_norm=100.0)
    trainer = torch_training.Trainer(normalised, rober_data, init_weights(normalised, 3))
    _, raw_norm, _ = trainer.step()
    applied = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.field.parameters()]))
    assert raw_norm < 10 and float(applied) == pytest.approx(100.0)  # raw norm reported, 100 applied


def test_pollu_recipe_trains_on_jax():
    data = make_data(POLLU)
    trainer = jax_training.Trainer(POLLU, data, init_weights(POLLU, 20, seed=0))
    first = trainer.step()
    for _ in range(10):
        last = trainer.step()
    assert first[2].shape == (20,) and last[0] < first[0]


def test_a_failed_jax_solve_is_a_nan_loss_and_no_update(rober_data):
    """Too few steps allowed: the solve fails, the loss is NaN, the weights stay."""
    cramped = replace(ROBER, max_steps=5)
    weights = init_weights(cramped, 3)
    trainer = jax_training.Trainer(cramped, rober_data, weights)
    loss, _, _ = trainer.step()
    assert np.isnan(loss)
    assert all(np.array_equal(W, W2) for (W, _), (W2, _) in zip(weights, trainer.weights()))
    assert np.all(np.isnan(trainer.predict()))


def test_a_failed_torch_solve_is_a_nan_loss(rober_data):
    cramped = replace(ROBER, max_steps=5)
    trainer = torch_training.Trainer(cramped, rober_data, init_weights(cramped, 3))
    assert np.isnan(trainer.step()[0])
    assert np.all(np.isnan(trainer.predict()))


def test_torch_trains_its_rosenbrock_steps_compiled_and_eagerly_where_it_cannot_compile(rober_data, monkeypatch):
    from stiffcore.adapters.torchdiffeq import _compiled

    trainer = torch_training.Trainer(ROBER, rober_data, init_weights(ROBER, 3))
    assert trainer.options["compile_step"] is True   # rosenbrock23: thousands of epochs of one shape

    def unavailable():
        def run(*args):
            raise _compiled.CompileStepUnavailable("no C++ compiler here")
        return run

    monkeypatch.setattr(_compiled, "_compiled_attempt", unavailable)
    with pytest.warns(RuntimeWarning, match="eager torch steps: no C\\+\\+ compiler here"):
        loss, _, _ = trainer.step()
    assert np.isfinite(loss) and "compile_step" not in trainer.options


def test_float32_jax_is_warned(rober_data):
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.warns(UserWarning, match="float32"):
            jax_training.Trainer(ROBER, rober_data, init_weights(ROBER, 3))
    finally:
        jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------- the loop

class FakeTrainer:
    """A backend whose loss follows a script: tests the loop's stopping and bookkeeping."""

    losses = [0.3, 0.2, 0.1]

    def __init__(self, recipe, data, weights, moments=None):
        self.data, self._weights, self.calls = data, weights, 0

    def step(self):
        loss = self.losses[min(self.calls, len(self.losses) - 1)]
        self.calls += 1
        return loss, 1.0, np.full(self.data.y.shape[1], loss)

    def predict(self):
        return self.data.y + self.losses[min(self.calls, len(self.losses) - 1)] * self.data.y_scale

    def weights(self):
        return self._weights

    def moments(self):
        return Moments(self.calls, self._weights, self._weights)


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setattr(training_loop, "load_trainer_class", lambda backend: FakeTrainer)
    FakeTrainer.losses = [0.3, 0.2, 0.1]
    return FakeTrainer


def test_loop_stops_at_the_target_confirmed_on_the_final_weights(fake_backend):
    result = train("rober", "fake", epochs=10, target=0.15, progress=False)
    # epoch 3 measures 0.1 before its update; the confirming prediction after it is 0.1 too
    assert result.status == "target reached" and len(result.history) == 3
    assert np.allclose(result.errors, 0.1)
    assert "target reached after 3 epochs" in result.summary()


def test_loop_reports_divergence(fake_backend):
    fake_backend.losses = [0.3, float("nan")]
    result = train("rober", "fake", epochs=10, progress=False)
    assert result.status.startswith("diverged: loss nan at epoch 2") and len(result.history) == 1


def test_loop_time_limit(fake_backend):
    result = train("rober", "fake", epochs=10, max_seconds=1e-9, progress=False)
    assert result.status == "time limit" and len(result.history) == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=-1), "epochs must be a non-negative integer"),
    (dict(target=0.0), "target must be positive"),
    (dict(max_seconds=float("inf")), "max_seconds must be positive"),
    (dict(checkpoint_every=0), "checkpoint_every must be >= 1"),
])
def test_loop_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train("rober", "jax", progress=False, **kwargs)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown training backend 'mxnet'; choose one of jax, torch"):
        train("rober", "mxnet", epochs=1)


def test_checkpoint_round_trip_and_resume(tmp_path, rober_data):
    """A torch checkpoint resumes in torch and evaluates in JAX: the weights are portable."""
    result = train("rober", "torch", epochs=2, out_dir=str(tmp_path), progress=False)
    files = result.files
    assert set(files) == {"checkpoint", "loss", "species"}
    for kind in ("loss", "species"):
        assert open(files[kind], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = load_checkpoint(files["checkpoint"])
    assert (saved.recipe, saved.backend, len(saved.history)) == ("rober", "torch", 2)
    assert all(np.array_equal(W, W2) for (W, _), (W2, _) in zip(saved.weights, result.weights))
    resumed = train("rober", "torch", epochs=1, resume=files["checkpoint"], progress=False)
    assert len(resumed.history) == 3 and resumed.history.loss[:2] == result.history.loss
    assert resumed.history.seconds[2] >= resumed.history.seconds[1]
    in_jax = jax_training.Trainer(ROBER, rober_data, saved.weights).predict()
    assert np.max(np.abs(in_jax - result.prediction) / rober_data.y_scale) < 5e-3
    assert saved.moments.step == 2 and load_checkpoint(files["checkpoint"]).moments.step == 2
    assert np.any(saved.moments.first[0][0] != 0) and np.all(saved.moments.second[0][0] >= 0)


def test_adamw_moments_mean_the_same_in_both_backends(rober_data):
    """Moments written by torch, loaded into JAX, reproduce torch's next update (up to the
    two solves' rtol-level differences in the gradient), and read back unchanged."""
    weights = init_weights(ROBER, 3, seed=4)
    torch_trainer = torch_training.Trainer(ROBER, rober_data, weights)
    for _ in range(3):
        torch_trainer.step()
    w, m = torch_trainer.weights(), torch_trainer.moments()
    jax_trainer = jax_training.Trainer(ROBER, rober_data, w, m)
    start = jax_trainer.params
    read_back = jax_trainer.moments()
    assert read_back.step == 3
    assert all(np.array_equal(a, b) for pa, pb in zip(read_back.second, m.second) for a, b in zip(pa, pb))
    torch_trainer.step()
    jax_trainer.step()
    moved_torch = np.concatenate([(a - b).ravel() for pa, pb in zip(torch_trainer.weights(), w) for a, b in zip(pa, pb)])
    moved_jax = np.concatenate([(a - b).ravel() for pa, pb in zip(jax_trainer.weights(), w) for a, b in zip(pa, pb)])
    assert np.linalg.norm(moved_jax - moved_torch) < 0.05 * np.linalg.norm(moved_torch)
    # without the moments AdamW's first step is about lr on every weight: a different update
    jax_trainer.params, jax_trainer.opt_state = start, jax_trainer.optimiser.init(start)
    jax_trainer.step()
    moved_fresh = np.concatenate([(a - b).ravel() for pa, pb in zip(jax_trainer.weights(), w) for a, b in zip(pa, pb)])
    assert np.linalg.norm(moved_fresh - moved_torch) > 0.2 * np.linalg.norm(moved_torch)


def test_checkpoint_errors(tmp_path):
    not_one = tmp_path / "x.npz"
    np.savez(not_one, a=np.ones(2))
    with pytest.raises(ValueError, match="not a readable stiffcore training checkpoint"):
        load_checkpoint(str(not_one))
    with pytest.raises(ValueError, match="not a readable stiffcore training checkpoint"):
        load_checkpoint(str(tmp_path / "missing.npz"))
    pollu = tmp_path / "pollu.npz"
    weights = init_weights(POLLU, 20)
    save_checkpoint(str(pollu), "pollu", "jax", 0, weights, History(), Moments(0, weights, weights))
    with pytest.raises(ValueError, match="is for recipe 'pollu', not 'rober'"):
        train("rober", "torch", epochs=1, resume=str(pollu))


def test_progress_bar_logs_lines_when_not_a_terminal():
    """Off a terminal (a log, CI) the rich bar becomes a line every log_every seconds; the
    first line says the first epoch compiles, so a JIT compile is never silent."""
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream)
    bar.update(0, loss=0.5)            # written: the first update
    bar.update(1, loss=0.4)            # throttled
    bar.update(9, force=True, loss=0.1, worst=0.2)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "training 10 epochs: first epoch (includes compiling the solve) ..."
    assert lines[1].startswith("epoch 1/10  loss 5.000e-01") and len(lines) == 3
    assert lines[2].startswith("epoch 10/10  loss 1.000e-01  worst 2.000e-01") and "ms/epoch" in lines[2]


def test_progress_bar_on_a_terminal_is_a_live_rich_bar():
    from unittest import mock

    stream = io.StringIO()
    with mock.patch("rich.console.Console.is_terminal", new_callable=mock.PropertyMock, return_value=True):
        bar = ProgressBar(10, stream=stream)
        assert bar.bar is not None
        for epoch in range(10):
            bar.update(epoch, loss=0.1)
        bar.close()
    assert "training" in stream.getvalue() and "10/10" in stream.getvalue() and "loss 1.000e-01" in stream.getvalue()


# ---------------------------------------------------------------- CLI

def test_cli_trains_and_writes_its_files(tmp_path, capsys):
    assert main(["train", "rober", "--backend", "torch", "--epochs", "2", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "rober on torch: epochs done after 2 epochs" in out.out and "scaled MAE" in out.out
    assert "6 hidden layer(s) of 5 gelu units, scaled" in out.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rober-torch-loss.png", "rober-torch-species.png",
                                                         "rober-torch.npz"]


def test_cli_unscaled_baseline_and_errors(tmp_path, capsys):
    assert main(["train", "rober", "--unscaled", "--backend", "torch", "--epochs", "1", "--out", str(tmp_path),
                 "--quiet"]) == 0
    assert "1 hidden layer(s) of 50 tanh units, no scaling" in capsys.readouterr().err
    assert (tmp_path / "rober_unscaled-torch.npz").exists()
    assert main(["train", "rober", "--method", "tsit5", "--epochs", "1"]) == 2
    assert "must be an implicit method" in capsys.readouterr().err
    assert main(["train", "robber"]) == 2
    assert "Did you mean 'rober'" in capsys.readouterr().err
