"""The two_moons task of sbibm (Greenberg et al. 2019; Lueckmann et al. 2021)."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractTask, box_prior, check_x, in_box, rejection_sample

_A_LOW, _A_HIGH = -math.pi / 2, math.pi / 2
_R_LOC, _R_SCALE = 0.1, 0.01
_OFFSET = 0.25
_SQRT2 = math.sqrt(2.0)


def _sample_p(key, n):
    """n draws of the latent moon point p = (r cos a + 0.25, r sin a)."""
    ka, kr = jax.random.split(key)
    a = jax.random.uniform(ka, (n,), minval=_A_LOW, maxval=_A_HIGH)
    r = _R_LOC + _R_SCALE * jax.random.normal(kr, (n,))
    return jnp.stack([r * jnp.cos(a) + _OFFSET, r * jnp.sin(a)], axis=-1)


def _rotate(theta):
    """(z0, z1): theta rotated by -pi/4, as in sbibm's map."""
    z0 = (theta[..., 0] + theta[..., 1]) / _SQRT2
    z1 = (theta[..., 1] - theta[..., 0]) / _SQRT2
    return z0, z1


def _propose(key, n, x_obs):
    kp, ks = jax.random.split(key)
    p = _sample_p(kp, n)
    q0 = p[:, 0] - x_obs[0]  # = |z0| if p produced x_obs
    z1 = x_obs[1] - p[:, 1]
    sign = jnp.where(jax.random.bernoulli(ks, 0.5, (n,)), 1.0, -1.0)
    z0 = sign * q0
    theta = jnp.stack([(z0 - z1) / _SQRT2, (z0 + z1) / _SQRT2], axis=-1)
    # q0 rides along in a third column so `accept` can reject impossible latent points.
    return jnp.concatenate([theta, q0[:, None]], axis=-1)


def _accept(key, proposal, x_obs):
    del key, x_obs
    return in_box(proposal[:, :2], -1.0, 1.0) & (proposal[:, 2] >= 0)


class TwoMoons(AbstractTask):
    """two_moons: theta ~ U([-1, 1]^2); x = p + (-|z0|, z1), z = theta rotated by -pi/4.

    The latent point p = (r cos a + 0.25, r sin a) has a ~ U(-pi/2, pi/2), r ~ N(0.1, 0.01^2).
    Given the latent point the map theta -> x is a fold plus a rotation, so the exact posterior
    is sampled by drawing p, inverting the map (choosing the sign of z0 by a fair coin) and
    rejecting draws outside the prior box. We also reject latent points with p0 < x0, which
    cannot have produced x_obs (sbibm's sampler keeps them, a slight deviation for observations
    near the fold).
    """

    name: ClassVar[str] = "two_moons"
    theta_dim: ClassVar[int] = 2
    x_dim: ClassVar[int] = 2
    num_observations: ClassVar[int] = 10

    @property
    def prior(self):
        return box_prior(1.0, 2)

    def _simulate_one(self, key, theta):
        p = _sample_p(key, 1)[0]
        z0, z1 = _rotate(theta)
        return p + jnp.stack([-jnp.abs(z0), z1])

    def _log_likelihood_one(self, theta, x):
        # Exact density of x: that of the latent point p = x - (-|z0|, z1). In polar form
        # p - (0.25, 0) = r (cos a, sin a) with a in (-pi/2, pi/2), so the sign of r is the
        # sign of the first coordinate, and the polar Jacobian contributes 1 / |r|.
        z0, z1 = _rotate(theta)
        u = x[0] + jnp.abs(z0) - _OFFSET
        v = x[1] - z1
        rho = jnp.sqrt(u**2 + v**2)
        r = jnp.where(u >= 0, rho, -rho)
        log_r = -0.5 * ((r - _R_LOC) / _R_SCALE) ** 2 - math.log(_R_SCALE) - 0.5 * math.log(2 * math.pi)
        return log_r - math.log(math.pi) - jnp.log(rho)

    def reference_posterior(self, key: PRNGKeyArray, x_obs: Float[Array, " m"], num_samples: int) -> Float[Array, "n d"]:
        """Exact posterior samples by inverting the simulator (see the class docstring).

        Arguments:
            key: PRNG key.
            x_obs: one observation, shape (2,).
            num_samples: number of samples.

        Returns:
            Samples of shape (num_samples, 2), float32.

        Raises:
            ValueError: for a wrong shape of x_obs or a non-positive num_samples.
        """
        x_obs = check_x(x_obs, self.x_dim, "x_obs")
        if x_obs.ndim != 1:
            raise ValueError(f"x_obs must be one observation of shape (2,), got shape {tuple(x_obs.shape)}")
        draws = rejection_sample(key, _propose, _accept, x_obs, num_samples, 3)
        return draws[:, :2]
