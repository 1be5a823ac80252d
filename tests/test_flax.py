"""Flax networks through jaxhep.nn.from_flax: the same function and gradients as in Flax, trained
as an embedding net and as an FMPE network, saved and loaded; stateful networks refused."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from helpers import conjugate_data

# flax is a core dependency, so this skips only where jaxhep was installed without its
# dependencies into an environment that lacks it (experiments/benchmarks/device_check.sh).
linen = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

from jaxhep.io import load, save
from jaxhep.nn import MLP, FlaxLinen, FlaxNNX, from_flax
from jaxhep.sbi import FMPE, NPE

class LinenMLP(linen.Module):
    features: int = 8

    @linen.compact
    def __call__(self, x):
        return linen.Dense(self.features)(jnp.tanh(linen.Dense(32)(x)))


class NNXVelocity(nnx.Module):
    """f(theta, x, t) for FMPE."""

    def __init__(self, theta_dim, x_dim, rngs):
        self.hidden = nnx.Linear(theta_dim + x_dim + 1, 32, rngs=rngs)
        self.out = nnx.Linear(32, theta_dim, rngs=rngs)

    def __call__(self, theta, x, t):
        return self.out(jnp.tanh(self.hidden(jnp.concatenate([theta, x, t[None]]))))


def test_wrappers_compute_what_flax_computes_and_its_gradients():
    x = jnp.linspace(-1.0, 1.0, 3)
    net = LinenMLP()
    wrapped = from_flax(net, jnp.zeros(3), key=jax.random.key(0))
    assert isinstance(wrapped, FlaxLinen)
    np.testing.assert_allclose(wrapped(x), net.apply({"params": wrapped.params}, x), rtol=1e-6)
    grads = eqx.filter_grad(lambda m: jnp.sum(m(x) ** 2))(wrapped)
    flax_grads = jax.grad(lambda p: jnp.sum(net.apply({"params": p}, x) ** 2))(wrapped.params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), grads.params, flax_grads)

    module = NNXVelocity(2, 3, nnx.Rngs(1))
    wrapped = from_flax(module)
    assert isinstance(wrapped, FlaxNNX)
    theta, t = jnp.array([0.3, -0.2]), jnp.asarray(0.4)
    np.testing.assert_allclose(wrapped(theta, x, t), module(theta, x, t), rtol=1e-6)
    grads = eqx.filter_grad(lambda m: jnp.sum(m(theta, x, t) ** 2))(wrapped)
    nnx_grads = nnx.grad(lambda m: jnp.sum(m(theta, x, t) ** 2))(module)
    np.testing.assert_allclose(grads.params["out"]["kernel"][...], nnx_grads["out"]["kernel"][...], rtol=1e-5)
    # jit and vmap see an ordinary equinox module.
    batch = jax.jit(jax.vmap(wrapped, in_axes=(0, None, None)))(jnp.ones((4, 2)), x, t)
    assert batch.shape == (4, 2)
    # The wrapper holds copies: a later change to the NNX module (an optimizer step on it, say)
    # does not reach it (it shared the module's Variables before).
    before = np.asarray(wrapped(theta, x, t))
    module.out.kernel[...] = module.out.kernel[...] + 1.0
    np.testing.assert_array_equal(np.asarray(wrapped(theta, x, t)), before)
    assert not np.allclose(np.asarray(module(theta, x, t)), before)


def test_linen_embedding_net_trains_with_npe_to_the_conjugate_posterior(tmp_path):
    theta, x = conjugate_data(4000)  # posterior N(0.8 x, 0.2 I)
    prior = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    embedding = from_flax(LinenMLP(features=8), jnp.zeros(2), key=jax.random.key(3))
    posterior = NPE(num_transforms=2, hidden_features=32, batch_size=100, learning_rate=1e-3, max_epochs=60,
                    patience=10, embedding_net=embedding, progress=False).fit(jax.random.key(1), theta, x, prior=prior)
    trained = posterior.estimator.base.embedding
    assert isinstance(trained, FlaxLinen)
    assert not np.allclose(trained.params["Dense_1"]["kernel"], embedding.params["Dense_1"]["kernel"])
    x_obs = jnp.array([[0.5, -1.0], [1.5, 0.3]])
    samples = posterior.sample(jax.random.key(2), x_obs, (10_000,))
    # Posterior mean 0.8 x and sd sqrt(0.2); a small flow on 3600 simulations, fixed seeds.
    np.testing.assert_allclose(samples.mean(0), 0.8 * x_obs, atol=0.1)
    np.testing.assert_allclose(samples.std(0), np.sqrt(0.2), rtol=0.15)
    # A posterior with a Flax network inside saves and loads like any other.
    loaded = load(save(tmp_path / "post.jaxhep", posterior))
    np.testing.assert_array_equal(loaded.log_prob(samples[:50, 0], x_obs[0]), posterior.log_prob(samples[:50, 0], x_obs[0]))


def test_nnx_network_in_fmpe_trains():
    theta, x = conjugate_data(1000)  # posterior N(0.8 x, 0.2 I)
    prior = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    built = []

    def network(key, theta_dim, x_dim):
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        built.append(from_flax(NNXVelocity(theta_dim, x_dim, nnx.Rngs(seed))))
        return built[-1]

    posterior = FMPE(network=network, max_epochs=3, batch_size=100, progress=False).fit(
        jax.random.key(1), theta, x, prior=prior)
    trained = posterior.estimator.base.net
    assert len(built) == 1 and isinstance(trained, FlaxNNX)
    assert not np.allclose(trained.params["out"]["kernel"][...], built[0].params["out"]["kernel"][...])
    assert posterior.history.epochs == 3 and np.all(np.isfinite(posterior.history.val_loss))
    s = posterior.sample(jax.random.key(2), x[0], (20,))
    assert s.shape == (20, 2) and bool(jnp.all(jnp.isfinite(s)))
    # A network of the wrong output size is refused when the model is built.
    with pytest.raises(ValueError, match=r"must map \(theta, x, t\) to a vector of shape \(2,\), got \(3,\)"):
        FMPE(network=lambda key, d, c: from_flax(NNXVelocity(3, c - 1, nnx.Rngs(0))), max_epochs=1,
             progress=False).fit(jax.random.key(1), theta, x, prior=prior)
    # One that fails on such inputs is reported with the shapes it was given.
    with pytest.raises(ValueError, match=r"failed on \(theta, x, t\) of shapes \(2,\), \(2,\), \(\): .*dot_general"):
        FMPE(network=lambda key, d, c: (lambda th, xx, t: th @ jnp.ones((5, 2))), max_epochs=1,
             progress=False).fit(jax.random.key(1), theta, x, prior=prior)


def test_stateful_or_foreign_networks_are_refused():
    class WithBatchNorm(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.BatchNorm(use_running_average=True)(linen.Dense(4)(x))

    with pytest.raises(ValueError, match="collections other than params \\(batch_stats\\)"):
        from_flax(WithBatchNorm(), jnp.zeros(3), key=jax.random.key(0))

    class WithDropout(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(3, 4, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)

    with pytest.raises(ValueError, match="state other than parameters \\(RngCount at drop"):
        from_flax(WithDropout(nnx.Rngs(0)))
    with pytest.raises(ValueError, match="needs key="):
        from_flax(LinenMLP(), jnp.zeros(3))
    with pytest.raises(ValueError, match="needs an example input"):
        from_flax(LinenMLP(), key=jax.random.key(0))
    with pytest.raises(TypeError, match="expected a Flax Linen or NNX module, got MLP"):
        from_flax(MLP(3, 2, 8, 1, key=jax.random.key(0)))
