import sys
import time
import warnings

import equinox as eqx
import optax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mse_loss

from jaxhep.nn import MLP
from jaxhep.training import drop_nonfinite, fit


def _linear_problem(n=2000, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    w_true = np.array([[1.5, -2.0, 0.5]], dtype=np.float32)
    y = x @ w_true.T + 0.7 + noise * rng.normal(size=(n, 1)).astype(np.float32)
    return x, y, w_true


def test_fit_recovers_least_squares_solution():
    x, y, _ = _linear_problem()
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    trained, hist = fit(jax.random.key(1), model, mse_loss, (x, y), learning_rate=3e-2, batch_size=100,
                        max_epochs=150, patience=150, progress=False)
    design = np.hstack([x, np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    # The optimum over the 90% training split differs from the full-data one by O(noise/sqrt(n)).
    np.testing.assert_allclose(np.asarray(trained.layers[0].weight).ravel(), coef[:3, 0], atol=0.02)
    np.testing.assert_allclose(np.asarray(trained.layers[0].bias), coef[3], atol=0.02)
    assert hist.epochs == len(hist.train_loss) == len(hist.val_loss)
    assert hist.val_loss[-1] < 0.02  # noise variance is 0.01


def test_a_raw_uint32_key_trains_as_its_typed_key():
    """jax.random.PRNGKey keys failed in the validation program (a reshape of split raw keys)."""
    x, y, _ = _linear_problem(n=300)
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    kwargs = dict(batch_size=50, max_epochs=3, progress=False)
    raw, hist_raw = fit(jax.random.PRNGKey(1), model, mse_loss, (x, y), **kwargs)
    typed, hist_typed = fit(jax.random.wrap_key_data(jax.random.PRNGKey(1)), model, mse_loss, (x, y), **kwargs)
    np.testing.assert_array_equal(np.asarray(hist_raw.val_loss), np.asarray(hist_typed.val_loss))
    np.testing.assert_array_equal(np.asarray(raw.layers[0].weight), np.asarray(typed.layers[0].weight))
    with pytest.raises(TypeError, match="single JAX PRNG key"):
        fit(np.zeros(2, np.float32), model, mse_loss, (x, y), **kwargs)


def test_early_stopping_restores_best_state():
    x, y, _ = _linear_problem(n=400, noise=1.0)
    model = MLP(3, 1, width=64, depth=2, key=jax.random.key(2))
    trained, hist = fit(jax.random.key(3), model, mse_loss, (x, y), learning_rate=1e-2, batch_size=20,
                        max_epochs=400, patience=5, validation_fraction=0.25, progress=False)
    assert hist.stopped_early and hist.epochs < 400
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert hist.epochs == hist.best_epoch + 1 + 5
    # The returned model is the best one: its validation loss is the minimum of the history.
    from jaxhep.nn.init import split_on_host
    from jaxhep.training import split_train_val
    k_split = split_on_host(jax.random.key(3), 3)[0]
    _, val = split_train_val(k_split, (jnp.asarray(x), jnp.asarray(y)), 0.25)
    np.testing.assert_allclose(float(mse_loss(trained, None, val)), float(np.min(hist.val_loss)), rtol=1e-5)


def test_nonfinite_rows_are_dropped_with_a_count_and_inputs_untouched():
    x, y, _ = _linear_problem(n=100)
    x[3, 1] = np.nan
    y[7, 0] = np.inf
    x_copy, y_copy = x.copy(), y.copy()
    with pytest.warns(UserWarning, match="dropped 2 of 100"):
        (xc, yc), dropped = drop_nonfinite((x, y))
    assert dropped == 2 and xc.shape == (98, 3)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(y, y_copy)
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    with pytest.warns(UserWarning, match="dropped 2"):
        fit(jax.random.key(0), model, mse_loss, (x, y), max_epochs=2, progress=False)


def test_bad_inputs_raise():
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="leading"):
        fit(jax.random.key(0), model, mse_loss, (np.zeros((10, 3)), np.zeros((9, 1))), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        fit(jax.random.key(0), model, mse_loss, (np.zeros((10, 3)), np.zeros((10, 1))), batch_size=0, progress=False)
    with pytest.raises(ValueError, match="validation_fraction"):
        fit(jax.random.key(0), model, mse_loss, (np.zeros((10, 3)), np.zeros((10, 1))), validation_fraction=1.0,
            progress=False)
    with pytest.raises(ValueError, match="validation_batch_size"):
        fit(jax.random.key(0), model, mse_loss, (np.zeros((10, 3)), np.zeros((10, 1))), validation_batch_size=0,
            progress=False)
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
        fit(jax.random.key(0), model, mse_loss, (np.zeros((10, 3)), np.zeros((10, 1))), clip_norm=-1.0,
            progress=False)
    with pytest.raises(ValueError, match="no simulations given"):
        drop_nonfinite((np.zeros((0, 3)), np.zeros((0, 1))))


@pytest.mark.parametrize("slow_validation", [False, True])
def test_a_validation_loss_never_finite_is_an_error_not_the_untrained_model(slow_validation):
    # Finite on training minibatches (20 rows), inf on the validation chunk (100 rows); with
    # slow_validation, tracing the validation program takes long enough that training runs
    # ahead of it, the case in which early stopping once ran one epoch too far and crashed.
    x, y, _ = _linear_problem(n=400)

    def loss(model, key, batch):
        if batch[0].shape[0] != 20:
            if slow_validation:
                time.sleep(1.0)
            return jnp.inf + mse_loss(model, key, batch)
        return mse_loss(model, key, batch)

    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    with pytest.raises(RuntimeError, match="no epoch gave usable weights: the validation loss"):
        fit(jax.random.key(1), model, loss, (x, y), batch_size=20, validation_fraction=0.25, patience=3,
            max_epochs=50, progress=False)


def test_a_training_loss_that_turns_nan_keeps_the_best_earlier_state_and_aligned_history():
    x, y, _ = _linear_problem(n=400)

    def loss(model, key, batch):
        # NaN once the first weight passes 1.0 on its way from ~0 to its optimum 1.5.
        w = model.layers[0].weight[0, 0]
        return mse_loss(model, key, batch) + jnp.where(w > 1.0, jnp.nan, 0.0)

    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    model = eqx.tree_at(lambda m: m.layers[0].weight, model, jnp.zeros((1, 3)))
    with pytest.warns(UserWarning, match=r"keeping the best earlier state \(epoch"):
        trained, hist = fit(jax.random.key(1), model, loss, (x, y), batch_size=20, learning_rate=3e-3,
                            max_epochs=100, patience=100, progress=False)
    assert hist.stopped_early and hist.epochs > 1 and np.isnan(hist.train_loss[-1])
    assert len(hist.val_loss) == len(hist.train_loss) and np.isnan(hist.val_loss[-1])
    assert np.all(np.isfinite(hist.val_loss[:-1])) and hist.best_epoch < hist.epochs - 1
    assert 0.0 < float(trained.layers[0].weight[0, 0]) <= 1.0

    # NaN from the first epoch: nothing usable to return.
    with pytest.raises(RuntimeError, match="no epoch gave usable weights: the training loss"):
        fit(jax.random.key(1), model, lambda m, k, b: mse_loss(m, k, b) + jnp.nan, (x, y), max_epochs=5,
            progress=False)


class _Scalar(eqx.Module):
    p: jax.Array


@jax.custom_jvp
def _nan_gradient_below(p):
    """Zero, with a NaN derivative once p < -2.5 (a finite loss whose gradient is not)."""
    return 0.0 * p


@_nan_gradient_below.defjvp
def _nan_gradient_below_jvp(primals, tangents):
    (p,), (t,) = primals, tangents
    return _nan_gradient_below(p), jnp.where(p < -2.5, jnp.nan, 0.0) * t


@pytest.mark.parametrize("max_epochs", [4, 6])
def test_weights_made_nan_by_a_finite_loss_are_never_returned(max_epochs):
    # SGD with step 1 on loss p: p = 0, -1, -2, -3, then the step at p = -3 has a NaN gradient
    # while its loss (-3) is finite. Without a validation split, the epoch that ends with NaN
    # weights used to count as the best state and was returned (with no warning at the last epoch).
    def loss(m, k, batch):
        return jnp.mean(batch) * 0 + m.p + _nan_gradient_below(m.p)

    with pytest.warns(UserWarning, match=r"weights became NaN or inf at epoch 3; keeping the best earlier state "
                                         r"\(epoch 2\)"):
        trained, hist = fit(jax.random.key(0), _Scalar(jnp.zeros(())), loss, np.ones(30, np.float32),
                            optimizer=optax.sgd(1.0), clip_norm=None, batch_size=1000, max_epochs=max_epochs,
                            validation_fraction=0.0, progress=False)
    assert float(trained.p) == -3.0 and hist.best_epoch == 2 and hist.epochs == 4 and hist.stopped_early
    # NaN weights after the first epoch: nothing usable, and the error says why.
    with pytest.raises(RuntimeError, match="the weights became NaN or inf"):
        fit(jax.random.key(0), _Scalar(jnp.full((), -3.0)), loss, np.ones(30, np.float32), optimizer=optax.sgd(1.0),
            clip_norm=None, batch_size=1000, max_epochs=3, validation_fraction=0.0, progress=False)


def test_bad_learning_rate_and_weight_decay_are_refused():
    x, y, _ = _linear_problem(n=50)
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    for lr in (-0.01, 0.0, float("nan"), float("inf"), "1e-3"):
        with pytest.raises(ValueError, match="learning_rate must be a positive finite number"):
            fit(jax.random.key(0), model, mse_loss, (x, y), learning_rate=lr, progress=False)
    for wd in (float("inf"), -1.0, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
            fit(jax.random.key(0), model, mse_loss, (x, y), weight_decay=wd, progress=False)
    # With a given optimizer, learning_rate is not used and not checked.
    fit(jax.random.key(0), model, mse_loss, (x, y), optimizer=optax.sgd(0.1), learning_rate=-1.0, max_epochs=1,
        progress=False)


def test_no_validation_trains_all_epochs():
    x, y, _ = _linear_problem(n=200)
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, hist = fit(jax.random.key(0), model, mse_loss, (x, y), validation_fraction=0.0, max_epochs=7, progress=False)
    assert hist.epochs == 7 and hist.val_loss.size == 0 and not hist.stopped_early



def test_epoch_program_compiles_once_with_weak_typed_parameters():
    """A model with weak-typed leaves (jnp.full(shape, 1.0)) must not recompile after the first
    update; a second compile used to cost as much as the first (seconds for a flow)."""

    class Scale(eqx.Module):
        w: jax.Array

        def __call__(self, x):
            return self.w * x

    model = Scale(jnp.full((3,), 1.0))
    assert model.w.weak_type
    traces = []

    def loss(m, key, batch):
        traces.append(1)  # runs only while tracing
        x, y = batch
        return jnp.mean((jax.vmap(m)(x) - y) ** 2)

    x, y, _ = _linear_problem(n=200)
    y3 = np.repeat(y, 3, axis=1)
    _, hist = fit(jax.random.key(0), model, loss, (x, y3), max_epochs=4, patience=10, progress=False,
                  batch_size=50)
    assert hist.epochs == 4
    # One trace for the training step and one for the validation loss, in a single compile.
    assert len(traces) == 2


def test_ema_weights_are_validated_and_returned():
    x, y, _ = _linear_problem()
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    kwargs = dict(learning_rate=3e-2, batch_size=100, max_epochs=60, patience=60, progress=False)
    plain, h_plain = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    # Decay 0: the average is the current weights, so training is unchanged.
    same, h_same = fit(jax.random.key(1), model, mse_loss, (x, y), ema_decay=0.0, **kwargs)
    np.testing.assert_allclose(np.asarray(same.layers[0].weight), np.asarray(plain.layers[0].weight), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(h_same.val_loss), np.asarray(h_plain.val_loss), rtol=1e-6)
    # A slow average still converges to the least-squares solution, and differs from the raw weights.
    avg, h_avg = fit(jax.random.key(1), model, mse_loss, (x, y), ema_decay=0.95, **kwargs)
    design = np.hstack([x, np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(np.asarray(avg.layers[0].weight).ravel(), coef[:3, 0], atol=0.02)
    assert not np.allclose(np.asarray(h_avg.val_loss[:3]), np.asarray(h_plain.val_loss[:3]))
    with pytest.raises(ValueError, match="ema_decay"):
        fit(jax.random.key(1), model, mse_loss, (x, y), ema_decay=1.0, **kwargs)


def test_ema_forgets_the_initial_weights_early():
    # The averaging decay warms up as (1 + k) / (10 + k): even a decay of 0.9999 over a dozen
    # steps gives an average of the recent iterates, not (almost) the initial weights.
    x, y, _ = _linear_problem()
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    kwargs = dict(learning_rate=3e-2, batch_size=50, max_epochs=1, patience=5, progress=False)
    w0 = np.asarray(model.layers[0].weight)
    plain, _ = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    avg, _ = fit(jax.random.key(1), model, mse_loss, (x, y), ema_decay=0.9999, **kwargs)
    moved_plain = np.linalg.norm(np.asarray(plain.layers[0].weight) - w0)
    moved_avg = np.linalg.norm(np.asarray(avg.layers[0].weight) - w0)
    assert moved_plain > 0
    assert 0.3 * moved_plain < moved_avg < moved_plain


def test_validation_draws_average_a_stochastic_validation_loss():
    x, y, _ = _linear_problem(n=1000)
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    kwargs = dict(learning_rate=1e-2, batch_size=100, max_epochs=3, patience=5, progress=False,
                  validation_batch_size=1)  # 100 validation rows -> 100 chunks of one row

    # A deterministic loss: extra draws change nothing.
    _, h1 = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    _, h3 = fit(jax.random.key(1), model, mse_loss, (x, y), validation_draws=3, **kwargs)
    np.testing.assert_allclose(np.asarray(h3.val_loss), np.asarray(h1.val_loss), rtol=1e-6)

    # A loss that is pure N(0, 1) noise: one draw averages 100 keys (sd 0.1), 64 draws average
    # 6400 (sd 0.0125), so the latter must lie within 4 sd of 0.
    def noise(model, key, batch):
        return jax.random.normal(key) + 0.0 * jnp.sum(model.layers[0].weight)

    _, one = fit(jax.random.key(1), model, noise, (x, y), **kwargs)
    _, many = fit(jax.random.key(1), model, noise, (x, y), validation_draws=64, **kwargs)
    assert abs(float(many.val_loss[0])) < 0.05
    assert float(many.val_loss[0]) != float(one.val_loss[0])
    with pytest.raises(ValueError, match="validation_draws"):
        fit(jax.random.key(0), model, mse_loss, (x, y), validation_draws=0, progress=False)


def test_plateau_schedule_reduces_the_step_size_when_validation_stalls():
    """Minimising w^2 by SGD at step size 1 flips the sign of w at every step, so the validation
    loss stays at 1 until the schedule halves the step, which then lands on w = 0 exactly."""
    import optax

    class W(eqx.Module):
        w: jax.Array

    def loss(m, key, batch):
        return m.w ** 2 + 0.0 * jnp.mean(batch)

    data = np.zeros((40, 1), np.float32)
    patience = 3
    trained, hist = fit(jax.random.key(0), W(jnp.asarray(1.0)), loss, data, optimizer=optax.sgd(1.0),
                        clip_norm=None, batch_size=9, max_epochs=12, patience=50, progress=False,
                        lr_decay_factor=0.5, lr_decay_patience=patience)
    # Epoch 0 sets the best (1.0); epochs 1..3 do not improve, so epoch 4 runs at half the step
    # and reaches 0 (an improvement); epochs 5..7 and 8..10 do not, so 8 and 11 halve again.
    expected = [1.0] * 4 + [0.5] * 4 + [0.25] * 3 + [0.125]
    np.testing.assert_array_equal(np.asarray(hist.lr_scale), expected)
    np.testing.assert_array_equal(np.asarray(hist.val_loss[: patience + 1]), 1.0)
    assert float(hist.val_loss[patience + 1]) == 0.0 and float(trained.w) == 0.0
    # Without the schedule the loss never moves.
    _, flat = fit(jax.random.key(0), W(jnp.asarray(1.0)), loss, data, optimizer=optax.sgd(1.0), clip_norm=None,
                  batch_size=9, max_epochs=12, patience=50, progress=False)
    np.testing.assert_array_equal(np.asarray(flat.val_loss), 1.0)
    np.testing.assert_array_equal(np.asarray(flat.lr_scale), 1.0)


def test_plateau_schedule_rejects_bad_settings():
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    data = (np.zeros((20, 3), np.float32), np.zeros((20, 1), np.float32))
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="lr_decay_factor"):
            fit(jax.random.key(0), model, mse_loss, data, lr_decay_factor=bad, progress=False)
    with pytest.raises(ValueError, match="lr_decay_patience"):
        fit(jax.random.key(0), model, mse_loss, data, lr_decay_factor=0.5, lr_decay_patience=0, progress=False)
    with pytest.raises(ValueError, match="validation split"):
        fit(jax.random.key(0), model, mse_loss, data, lr_decay_factor=0.5, validation_fraction=0.0, progress=False)


_SHARED_TRACES = []


def _counted_mse_loss(model, key, batch):
    _SHARED_TRACES.append(1)  # runs only while tracing; a module global, so not a closure
    return mse_loss(model, key, batch)


def test_equal_fits_share_one_compiled_epoch_program():
    x, y, _ = _linear_problem(n=600)
    kwargs = dict(learning_rate=1e-2, batch_size=50, max_epochs=5, patience=10, progress=False)
    # A width no other test uses, so that the first fit here is the first of its kind.
    first = MLP(3, 1, width=7, depth=1, key=jax.random.key(0))
    fit(jax.random.key(1), first, _counted_mse_loss, (x, y), **kwargs)
    assert len(_SHARED_TRACES) == 2  # the training step and the validation loss
    second = MLP(3, 1, width=7, depth=1, key=jax.random.key(5))
    shared, hist = fit(jax.random.key(2), second, _counted_mse_loss, (x, y), **kwargs)
    assert len(_SHARED_TRACES) == 2 and hist.epochs == 5  # reused: nothing traced again
    # The shared program computes what a program of its own does: a closure over the same loss
    # is compiled for its call only, and gives the same weights.
    private_traces = []

    def closure(model, key, batch):
        private_traces.append(1)
        return mse_loss(model, key, batch)

    private, _ = fit(jax.random.key(2), second, closure, (x, y), **kwargs)
    assert len(private_traces) == 2
    for a, b in zip(jax.tree_util.tree_leaves(shared), jax.tree_util.tree_leaves(private)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(shared.layers[0].weight), np.asarray(second.layers[0].weight))
    # Another batch size compiles a training program of its own; the validation program, which
    # does not depend on it, is reused.
    fit(jax.random.key(2), second, _counted_mse_loss, (x, y), **(kwargs | dict(batch_size=60)))
    assert len(_SHARED_TRACES) == 3


def test_deferred_validation_gives_the_results_of_validating_every_epoch(monkeypatch):
    x, y, _ = _linear_problem(n=400, noise=1.0)
    n_val, batch_size, patience = 100, 20, 3
    n_batches = (len(x) - n_val) // batch_size
    events = []
    delay = 0.5

    def loss(model, key, batch):
        # Tracing takes `delay` seconds: the validation program, traced on the second thread,
        # is not ready before the first epochs have trained. Each execution logs what ran.
        time.sleep(delay)
        kind = "validation" if batch[0].shape[0] == n_val else "step"
        jax.debug.callback(lambda: events.append(kind))
        return mse_loss(model, key, batch)

    model = MLP(3, 1, width=64, depth=2, key=jax.random.key(2))
    kwargs = dict(learning_rate=1e-2, batch_size=batch_size, max_epochs=400, patience=patience,
                  validation_fraction=n_val / len(x), progress=False)
    deferred, hist = fit(jax.random.key(3), model, loss, (x, y), **kwargs)
    deferred_events = list(events)
    events.clear()
    monkeypatch.setattr(sys.modules["jaxhep.training.fit"], "_DEFER_VALIDATION", False)
    synchronous, ref = fit(jax.random.key(3), model, loss, (x, y), **kwargs)
    assert ref.stopped_early and ref.epochs < 400
    assert events == (["step"] * n_batches + ["validation"]) * ref.epochs
    # Deferred: the epochs that early stopping cannot cut off (0 to patience) trained before the
    # first validation ran; then each waiting epoch was validated once, and no epoch was
    # trained that the synchronous run did not train.
    head = (patience + 1) * n_batches
    assert deferred_events[:head] == ["step"] * head and deferred_events[head] == "validation"
    assert deferred_events.count("step") == n_batches * ref.epochs
    assert deferred_events.count("validation") == ref.epochs
    assert (hist.epochs, hist.best_epoch, hist.stopped_early) == (ref.epochs, ref.best_epoch, ref.stopped_early)
    for a, b in ((hist.train_loss, ref.train_loss), (hist.val_loss, ref.val_loss), (hist.lr_scale, ref.lr_scale)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree_util.tree_leaves(deferred), jax.tree_util.tree_leaves(synchronous)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_default_optimizer_is_per_array_adam_and_weight_decay_selects_adamw():
    import optax

    x, y, _ = _linear_problem(n=600)
    model = MLP(3, 1, width=16, depth=2, key=jax.random.key(0))
    kwargs = dict(learning_rate=1e-2, batch_size=50, max_epochs=6, patience=10, progress=False)
    clip = optax.clip_by_global_norm(5.0)
    # The default runs on the concatenated parameters; it must take the steps of Adam (or
    # AdamW) on each array, up to rounding in the global norm.
    for weight_decay, reference in ((0.0, optax.adam(1e-2)), (0.3, optax.adamw(1e-2, weight_decay=0.3))):
        ours, h1 = fit(jax.random.key(1), model, mse_loss, (x, y), weight_decay=weight_decay, **kwargs)
        theirs, h2 = fit(jax.random.key(1), model, mse_loss, (x, y), optimizer=optax.chain(clip, reference),
                         clip_norm=None, **kwargs)
        np.testing.assert_allclose(np.asarray(h1.val_loss), np.asarray(h2.val_loss), rtol=1e-4)
        for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    decayed, _ = fit(jax.random.key(1), model, mse_loss, (x, y), weight_decay=0.3, **kwargs)
    plain, _ = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    assert np.linalg.norm(np.asarray(decayed.layers[1].weight)) < np.linalg.norm(np.asarray(plain.layers[1].weight))
    for bad in (-1e-3, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="weight_decay"):
            fit(jax.random.key(1), model, mse_loss, (x, y), weight_decay=bad, **kwargs)
    with pytest.raises(ValueError, match="weight_decay applies to the default optimizer"):
        fit(jax.random.key(1), model, mse_loss, (x, y), weight_decay=0.1, optimizer=optax.sgd(0.1), **kwargs)


def test_cpu_compiler_options_reach_the_programs_and_change_only_rounding(monkeypatch):
    module = sys.modules["jaxhep.compilation"]
    fit_module = sys.modules["jaxhep.training.fit"]
    if jax.default_backend() != "cpu":
        pytest.skip("the options apply to XLA's CPU compiler only")
    x, y, _ = _linear_problem(n=600)
    model = MLP(3, 1, width=11, depth=2, key=jax.random.key(0))
    kwargs = dict(learning_rate=1e-2, batch_size=50, max_epochs=6, patience=10, progress=False)
    shared = fit_module._shared_programs
    asked = []

    def spy(options):
        asked.append(options)
        return shared(options)

    monkeypatch.setattr(fit_module, "_shared_programs", spy)
    tuned, hist = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    # The options this jaxlib knows: on jaxlib 0.10 all of them; 0.12 dropped the fusion-emitter
    # switch but keeps the optimisation level.
    options = module.compiler_options()
    assert options and "xla_backend_optimization_level" in options
    assert options.items() <= module.CPU_COMPILER_OPTIONS.items()
    if jax.__version__.startswith("0.10."):
        assert options == module.CPU_COMPILER_OPTIONS
    assert asked == [tuple(sorted(options.items()))]
    # XLA's default compilation: the same training up to float rounding.
    monkeypatch.setattr(module, "CPU_COMPILER_OPTIONS", {})
    plain, ref = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    assert asked[-1] is None and hist.epochs == ref.epochs == 6
    np.testing.assert_allclose(np.asarray(hist.val_loss), np.asarray(ref.val_loss), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(tuned), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # Options this jaxlib does not know are dropped instead of failing the fit.
    monkeypatch.setattr(module, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": True})
    assert module.compiler_options() is None
    monkeypatch.setattr(module, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": True, **options})
    assert module.compiler_options() == options
    monkeypatch.setattr(module, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": True})
    fallback, _ = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    assert asked[-1] is None
    for a, b in zip(jax.tree_util.tree_leaves(fallback), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))



def _compiles_of(records, name):
    return [r for r in records if r.getMessage().startswith(f"Finished XLA compilation of jit({name})")]


@pytest.mark.parametrize("devices", [None, 2])
def test_each_program_is_compiled_once_whatever_the_thread(caplog, devices):
    """The validation program is compiled on a second thread ahead of its first call; the call
    must find that compilation in JAX's cache (a second one would cost its seconds again),
    on one device and on a mesh."""
    x, y, _ = _linear_problem(n=500)
    # A width no other test uses: both programs are new to this process.
    model = MLP(3, 1, width=11 + (devices or 0), depth=1, key=jax.random.key(0))
    # Set globally: `jax.log_compiles` as a context holds only for this thread.
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level("WARNING"):
            _, hist = fit(jax.random.key(1), model, mse_loss, (x, y), batch_size=50, max_epochs=4, patience=10,
                          progress=False, devices=devices)
    finally:
        jax.config.update("jax_log_compiles", False)
    assert hist.epochs == 4 and len(hist.val_loss) == 4
    assert len(_compiles_of(caplog.records, "_train_epoch_program")) == 1
    assert len(_compiles_of(caplog.records, "_validate_program")) == 1
