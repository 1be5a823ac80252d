"""Mixture density network: a Gaussian mixture over theta whose parameters are a network of x."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import PRNGKeyArray

from jaxhep.checks import check_int_at_least, check_positive_int
from jaxhep.densities.base import AbstractConditionalDensity
from jaxhep.nn import MLP

_LOG_2PI = float(np.log(2 * np.pi))


class MixtureDensityNetwork(AbstractConditionalDensity):
    """q(theta | x) = sum_k w_k(x) N(theta; mu_k(x), L_k(x) L_k(x)^T) with full covariances.

    Arguments:
        theta_dim, x_dim: dimensions.
        num_components: mixture components.
        hidden_features, depth, activation: MLP settings.
        key: PRNG key (keyword-only).
    """

    net: MLP
    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)
    num_components: int = eqx.field(static=True)

    def __init__(self, theta_dim: int, x_dim: int, num_components: int = 10, hidden_features: int = 50,
                 depth: int = 2, activation: str = "tanh", *, key: PRNGKeyArray):
        for name, value in (("theta_dim", theta_dim), ("num_components", num_components)):
            check_positive_int(name, value)
        check_int_at_least("x_dim", x_dim, 0)
        theta_dim, x_dim, num_components = int(theta_dim), int(x_dim), int(num_components)
        self.theta_dim, self.x_dim, self.num_components = theta_dim, x_dim, num_components
        n_tri = theta_dim * (theta_dim + 1) // 2
        k1, k2 = jax.random.split(key)
        net = MLP(x_dim, num_components * (1 + theta_dim + n_tri), hidden_features, depth, activation, key=k1)
        # Spread the initial means so that components do not start identical.
        last = net.layers[-1]
        bias = jnp.zeros_like(last.bias)
        k, d = num_components, theta_dim
        bias = bias.at[k:k + k * d].set(jax.random.normal(k2, (k * d,), bias.dtype))
        net = eqx.tree_at(lambda n: n.layers[-1].bias, net, bias)
        net = eqx.tree_at(lambda n: n.layers[-1].weight, net, last.weight * 0.1)
        self.net = net

    def _components(self, x):
        k, d = self.num_components, self.theta_dim
        out = self.net(x)
        logits = out[:k]
        means = out[k:k + k * d].reshape(k, d)
        tri = out[k + k * d:].reshape(k, -1)
        rows, cols = np.tril_indices(d)
        chol = jnp.zeros((k, d, d)).at[:, rows, cols].set(tri)
        diag = jax.nn.softplus(jnp.diagonal(chol, axis1=1, axis2=2) + 0.5413) + 1e-4  # softplus(0.5413) = 1
        chol = chol * (1 - jnp.eye(d)) + jax.vmap(jnp.diag)(diag)
        return jax.nn.log_softmax(logits), means, chol

    def _log_prob(self, theta, x):
        log_w, means, chol = self._components(x)

        def comp(mu, L):
            r = jsl.solve_triangular(L, theta - mu, lower=True)
            return -0.5 * jnp.sum(r**2) - jnp.sum(jnp.log(jnp.diagonal(L))) - 0.5 * self.theta_dim * _LOG_2PI

        return jax.scipy.special.logsumexp(log_w + jax.vmap(comp)(means, chol))

    def _sample(self, key, x):
        log_w, means, chol = self._components(x)
        kc, kn = jax.random.split(key)
        c = jax.random.categorical(kc, log_w)
        return means[c] + chol[c] @ jax.random.normal(kn, (self.theta_dim,))
