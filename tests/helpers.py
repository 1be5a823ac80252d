"""Shared test utilities."""

import contextlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxhep.nn.init import numpy_rng


NOISE = 0.5  # conjugate_data: x = theta + N(0, NOISE^2), theta ~ N(0, I): posterior N(0.8 x, 0.2 I)


def conjugate_data(n, seed=0):
    """n pairs (theta, x) of the two-dimensional conjugate Gaussian problem (see NOISE)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    theta = jax.random.normal(k1, (n, 2))
    return theta, theta + NOISE * jax.random.normal(k2, (n, 2))


@contextlib.contextmanager
def compilations():
    """The names of the functions XLA compiles while the block runs (e.g. "jit(run_chunk)"), in a
    list that fills as they are compiled."""
    seen = []

    def listener(name, secs, fun_name=None, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            seen.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def mse_loss(model, key, batch):
    """Mean squared error of `model` on a batch (x, y): a `jaxhep.training.fit` loss."""
    x, y = batch
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def perturb(module, key, scale=0.1):
    """A copy of `module` with Gaussian noise added to every trainable array.

    Flows start at the identity, which would make invertibility and normalisation tests pass
    trivially; perturbed parameters give non-trivial maps. Larger perturbations of spline
    conditioners give near-flat bins whose inverse is ill-conditioned in float32 (distrax's
    spline loses the same digits there), hence the small default.
    """
    params, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(params)
    # The noise is drawn on the host (from a generator seeded by the key): jax.random.normal
    # compiled one program per leaf shape, about 13 s of every test worker's collection.
    rng = numpy_rng(key)
    leaves = [jax.device_put((np.asarray(leaf) + scale * rng.standard_normal(leaf.shape)).astype(leaf.dtype))
              for leaf in leaves]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static)


def location_scale_problem(m=8, n=6000):
    """A problem whose information sits in the spread of iid items, with its exact posterior.

    theta = (mu, log sigma) with a uniform prior on [-5, 5] x [-3, 1]; x = m iid draws of
    N(mu, sigma^2). Away from the prior's bounds on mu the posterior given x is: log sigma with
    density ~ sigma^-(m-1) exp(-S / (2 sigma^2)) (S the items' sum of squared deviations from
    their mean), then mu | sigma ~ N(mean(x), sigma^2 / m).

    Returns:
        (prior, theta, x, x_obs, truth) with truth = dict(log_sigma_mean, log_sigma_std,
        mu_mean, mu_std) of the exact posterior given x_obs (sigma integrated on a fine grid).
    """
    import jax.numpy as jnp
    import numpy as np
    import numpyro.distributions as dist

    prior = dist.Uniform(jnp.array([-5.0, -3.0]), jnp.array([5.0, 1.0])).to_event(1)
    k1, k2 = jax.random.split(jax.random.key(12))
    theta = prior.sample(k1, (n,))
    x = theta[:, :1] + jnp.exp(theta[:, 1:]) * jax.random.normal(k2, (n, m))
    x_obs = np.asarray(2.0 + jax.random.normal(jax.random.key(15), (m,)))
    grid = np.linspace(-3.0, 1.0, 20_001)
    logw = -(m - 1) * grid - float(np.sum((x_obs - x_obs.mean()) ** 2)) / (2.0 * np.exp(2.0 * grid))
    w = np.exp(logw - logw.max())
    w /= w.sum()
    ls_mean = float(np.sum(w * grid))
    truth = dict(log_sigma_mean=ls_mean, log_sigma_std=float(np.sqrt(np.sum(w * (grid - ls_mean) ** 2))),
                 mu_mean=float(x_obs.mean()), mu_std=float(np.sqrt(np.sum(w * np.exp(2.0 * grid)) / m)))
    return prior, theta, x, x_obs, truth
