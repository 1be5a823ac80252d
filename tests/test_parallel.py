"""Data-parallel training (`fit(..., devices=...)`, the estimators' `devices`) on two CPU devices,
which tests/conftest.py makes before JAX first runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import mse_loss

from jaxhep.nn import MLP
from jaxhep.training import check_devices, data_mesh, fit, use_cpu_cores
from jaxhep.training.parallel import cores_for_batch, devices_for_cores

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu" or len(jax.devices()) < 2,
                                reason="needs a CPU backend with two devices (tests/conftest.py)")


def _regression(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (np.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:3] + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


@pytest.mark.parametrize("extras", [{}, {"ema_decay": 0.9, "lr_decay_factor": 0.5, "lr_decay_patience": 1}])
def test_two_devices_give_the_updates_of_one_up_to_rounding(extras):
    x, y = _regression()
    x_before, y_before = x.copy(), y.copy()
    model = MLP(3, 1, width=32, depth=2, key=jax.random.key(0))
    kwargs = dict(learning_rate=3e-3, batch_size=100, max_epochs=4, patience=10, progress=False, **extras)
    one, hist_one = fit(jax.random.key(1), model, mse_loss, (x, y), **kwargs)
    two, hist_two = fit(jax.random.key(1), model, mse_loss, (x, y), devices=2, **kwargs)
    # Each device takes half of every minibatch and the gradients are averaged before the step:
    # without the average (each device stepping on its half) or with both halves the same, the
    # weights would differ from one device's by far more than float rounding.
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(two)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hist_two.train_loss, hist_one.train_loss, rtol=1e-5)
    np.testing.assert_allclose(hist_two.val_loss, hist_one.val_loss, rtol=1e-5)
    assert hist_two.best_epoch == hist_one.best_epoch and hist_two.epochs == hist_one.epochs
    # The model comes back on the first device, usable with arrays of the default device.
    leaf = jax.tree_util.tree_leaves(two)[0]
    assert leaf.devices() == {jax.devices()[0]}
    assert jax.vmap(two)(jnp.asarray(x[:5])).shape == (5, 1)
    # Nothing the caller gave was changed.
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_each_device_draws_its_own_randomness():
    """A loss that is a uniform draw from its key: averaged over two devices with distinct keys,
    the per-step loss has variance 1/24; with the same key on both it would be 1/12."""
    w = jnp.zeros(())

    def loss(model, key, batch):
        return jax.random.uniform(key) + 0.0 * model * jnp.mean(batch)

    data = np.zeros((100, 1), np.float32)
    kwargs = dict(optimizer=optax.sgd(0.0), clip_norm=None, batch_size=100, max_epochs=400,
                  validation_fraction=0.0, progress=False)
    _, hist = fit(jax.random.key(0), w, loss, data, devices=2, **kwargs)
    variance = float(np.var(hist.train_loss))
    assert abs(variance - 1 / 24) < 0.012, variance
    _, hist_one = fit(jax.random.key(0), w, loss, data, **kwargs)
    assert abs(float(np.var(hist_one.train_loss)) - 1 / 12) < 0.02
    # A mesh of one device draws what no mesh draws (it folded the device index into the keys),
    # in training and in validation.
    kwargs.update(max_epochs=5, validation_fraction=0.2, batch_size=80)
    _, hist_none = fit(jax.random.key(0), w, loss, data, **kwargs)
    for devices in (1, [jax.devices()[1]]):
        _, hist_mesh = fit(jax.random.key(0), w, loss, data, devices=devices, **kwargs)
        np.testing.assert_array_equal(hist_mesh.train_loss, hist_none.train_loss)
        np.testing.assert_array_equal(hist_mesh.val_loss, hist_none.val_loss)


def test_npe_on_two_devices_matches_one_device():
    from jaxhep.sbi import NPE
    from jaxhep.simulators import get_task

    task = get_task("two_moons")
    theta, x = task.simulate(jax.random.key(0), 1000)
    settings = dict(hidden_features=16, num_transforms=2, batch_size=100, max_epochs=2, ema_decay=None,
                    progress=False)
    one = NPE(**settings).fit(jax.random.key(1), theta, x, prior=task.prior)
    two = NPE(**settings, devices="all").fit(jax.random.key(1), theta, x, prior=task.prior)
    np.testing.assert_allclose(two.history.val_loss, one.history.val_loss, rtol=1e-4)
    x_obs = task.get_observation(1)[1]
    samples = two.sample(jax.random.key(2), x_obs, (500,))
    np.testing.assert_allclose(two.log_prob(samples, x_obs), one.log_prob(samples, x_obs), rtol=1e-3, atol=1e-3)


def test_stochastic_estimators_train_on_two_devices():
    from jaxhep.sbi import NPSE
    from jaxhep.simulators import get_task

    task = get_task("gaussian_linear")
    theta, x = task.simulate(jax.random.key(0), 600)
    post = NPSE(max_epochs=3, batch_size=100, progress=False, devices=2).fit(jax.random.key(1), theta, x,
                                                                            prior=task.prior)
    assert post.history.epochs == 3 and np.all(np.isfinite(post.history.val_loss))
    # The loss is a denoising score-matching loss: it falls from its start.
    assert post.history.train_loss[-1] < post.history.train_loss[0]


def test_bad_devices_raise_clear_errors():
    x, y = _regression(n=100)
    model = MLP(3, 1, depth=0, key=jax.random.key(0))
    for bad in ("gpu", 0, -1, True, 2.0, [], [jax.devices()[0], jax.devices()[0]], ["cpu:0"]):
        with pytest.raises(ValueError, match="devices must be"):
            check_devices(bad)
        with pytest.raises(ValueError, match="devices must be"):
            fit(jax.random.key(0), model, mse_loss, (x, y), devices=bad, progress=False)
    with pytest.raises(ValueError, match="but this process has 2 cpu device.*use_cpu_cores"):
        fit(jax.random.key(0), model, mse_loss, (x, y), devices=3, progress=False)
    with pytest.raises(ValueError, match="batch_size=15 must be a multiple of the 2 devices"):
        fit(jax.random.key(0), model, mse_loss, (x, y), devices=2, batch_size=15, progress=False)
    with pytest.raises(ValueError, match="1 validation rows cannot be split over 2 devices"):
        fit(jax.random.key(0), model, mse_loss, (x, y), devices=2, batch_size=10, validation_fraction=0.01,
            progress=False)

    from jaxhep.sbi import NPE
    for three in (3, np.int64(3)):  # a numpy count too, as `check_devices` accepts one
        with pytest.raises(ValueError, match="batch_size=200 must be a multiple of devices=3"):
            NPE(batch_size=200, devices=three)
    with pytest.raises(ValueError, match="devices must be"):
        NPE(devices="everything")


def test_device_choices_and_cpu_core_helpers():
    assert data_mesh(None) is None and data_mesh(1) is None
    assert data_mesh("all").devices.tolist() == jax.devices()
    assert data_mesh(2).devices.tolist() == jax.devices()[:2]
    assert data_mesh([jax.devices()[1]]).devices.tolist() == [jax.devices()[1]]
    assert cores_for_batch(200, limit=1) == 1
    assert 200 % cores_for_batch(200) == 0 and 7 % cores_for_batch(7, limit=4) == 0
    # JAX has run: the CPU device count can no longer change, and saying so is an error.
    with pytest.raises(RuntimeError, match="before JAX's first computation"):
        use_cpu_cores(len(jax.devices("cpu")) + 1)
    with pytest.raises(ValueError, match="positive integer"):
        use_cpu_cores(0)
    # Were: "max() arg is an empty sequence", 1 core for a negative batch, "all" for n=0.
    for call, name in ((lambda: cores_for_batch(100, limit=0), "limit"), (lambda: cores_for_batch(-3), "batch_size"),
                       (lambda: devices_for_cores(200, n=0), "n")):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            call()
