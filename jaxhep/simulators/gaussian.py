"""The Gaussian benchmark tasks of sbibm: gaussian_linear, gaussian_linear_uniform, gaussian_mixture.

Definitions follow Lueckmann et al. (2021), "Benchmarking Simulation-Based Inference",
AISTATS, and the `sbibm` package. Note that sbibm's `prior_scale` and `simulator_scale`
(both 0.1) enter as *covariances* 0.1 * I (it inverts `scale * eye` into a precision
matrix), which is what we reproduce.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import scipy.stats
from jaxtyping import Array, Float, PRNGKeyArray

from .base import (AbstractTask, box_prior, check_num, check_x, in_box, rejection_sample,
                   rejection_sample_independent)

_LOG_2PI = math.log(2 * math.pi)


def _diag_normal_logpdf(x, mean, var):
    d = x.shape[-1]
    return -0.5 * jnp.sum((x - mean) ** 2, axis=-1) / var - 0.5 * d * (_LOG_2PI + math.log(var))


def _truncated_normal_moments(mean, std, low, high):
    """Per-coordinate mean, variance and log-mass in [low, high] of N(mean, std^2), in float64."""
    mean = np.asarray(mean, dtype=np.float64)
    a, b = (low - mean) / std, (high - mean) / std
    m, v = scipy.stats.truncnorm.stats(a, b, loc=mean, scale=std, moments="mv")
    # Mass in [a, b] from whichever tail keeps precision: upper tails when a > 0.
    mass = np.where(
        a > 0,
        scipy.stats.norm.sf(a) - scipy.stats.norm.sf(b),
        scipy.stats.norm.cdf(b) - scipy.stats.norm.cdf(a),
    )
    log_mass = np.log(np.clip(mass, 1e-300, None))
    return np.asarray(m), np.asarray(v), log_mass


class GaussianLinear(AbstractTask):
    """gaussian_linear: theta ~ N(0, 0.1 I_10), x | theta ~ N(theta, 0.1 I_10).

    The posterior is Gaussian: covariance (1/0.1 + 1/0.1)^-1 I = 0.05 I, mean x / 2.
    """

    name: ClassVar[str] = "gaussian_linear"
    theta_dim: ClassVar[int] = 10
    x_dim: ClassVar[int] = 10
    num_observations: ClassVar[int] = 10
    prior_var: ClassVar[float] = 0.1
    noise_var: ClassVar[float] = 0.1

    @property
    def prior(self):
        # N(0, 0.1 I) as independent normals: the same distribution as sbibm's multivariate
        # normal, without a Cholesky factorisation in every traced sample or log_prob.
        return dist.Normal(np.zeros(self.theta_dim, np.float32), np.float32(math.sqrt(self.prior_var))).to_event(1)

    def _simulate_one(self, key, theta):
        return theta + math.sqrt(self.noise_var) * jax.random.normal(key, (self.x_dim,))

    def _log_likelihood_one(self, theta, x):
        return _diag_normal_logpdf(x, theta, self.noise_var)

    def posterior_mean_cov(self, x_obs: Float[Array, " m"]) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
        """Closed-form posterior mean and covariance (conjugate Gaussian update).

        Arguments:
            x_obs: one observation, shape (x_dim,).

        Returns:
            `(mean, cov)` with shapes (theta_dim,) and (theta_dim, theta_dim).

        Raises:
            ValueError: for a wrong shape of x_obs.
        """
        x_obs = _check_one_x(x_obs, self.x_dim)
        # Both covariances are multiples of I, so the update is a scalar one.
        var = 1.0 / (1.0 / self.prior_var + 1.0 / self.noise_var)
        mean = (var / self.noise_var) * x_obs  # the prior mean is zero
        return mean, var * jnp.eye(self.theta_dim)

    def reference_posterior(self, key: PRNGKeyArray, x_obs: Float[Array, " m"], num_samples: int) -> Float[Array, "n d"]:
        """Exact posterior samples from the closed-form Gaussian.

        Arguments:
            key: PRNG key.
            x_obs: one observation, shape (x_dim,).
            num_samples: number of samples.

        Returns:
            Samples of shape (num_samples, theta_dim), float32.

        Raises:
            ValueError: for a wrong shape of x_obs or a non-positive num_samples.
        """
        num_samples = check_num(num_samples, "num_samples")
        mean, cov = self.posterior_mean_cov(x_obs)
        z = jax.random.normal(key, (num_samples, self.theta_dim))
        return (mean + jnp.sqrt(jnp.diagonal(cov)) * z).astype(jnp.float32)


def _check_one_x(x_obs, x_dim):
    x_obs = check_x(x_obs, x_dim, "x_obs")
    if x_obs.ndim != 1:
        raise ValueError(f"x_obs must be one observation of shape ({x_dim},), got shape {tuple(x_obs.shape)}")
    return x_obs


def _propose_trunc_normal(key, n, args):
    x_obs, std, bound, use_uniform = args
    kn, ku = jax.random.split(key)
    normal = x_obs + std * jax.random.normal(kn, (n, x_obs.shape[-1]))
    uniform = jax.random.uniform(ku, (n, x_obs.shape[-1]), minval=-bound, maxval=bound)
    return jnp.where(use_uniform, uniform, normal)


def _accept_trunc_normal(key, samples, args):
    # Normal proposals: keep those inside the box. Uniform-on-box proposals: keep with
    # probability N(theta; x, std) / max over the box of the same density.
    x_obs, std, bound, use_uniform = args
    nearest = jnp.clip(x_obs, -bound, bound)
    log_ratio = -0.5 * ((samples - x_obs) ** 2 - (nearest - x_obs) ** 2) / std**2
    u = jax.random.uniform(key, samples.shape)
    inside = (samples >= -bound) & (samples <= bound)
    return jnp.where(use_uniform, jnp.log(u) < log_ratio, inside)


def _accept_box(key, samples, args):
    del key
    return in_box(samples, -args[2], args[2])


class GaussianLinearUniform(AbstractTask):
    """gaussian_linear_uniform: theta ~ U([-1, 1]^10), x | theta ~ N(theta, 0.1 I_10).

    The posterior is N(x_obs, 0.1 I) truncated to the prior box, sampled exactly by rejection.
    """

    name: ClassVar[str] = "gaussian_linear_uniform"
    theta_dim: ClassVar[int] = 10
    x_dim: ClassVar[int] = 10
    num_observations: ClassVar[int] = 10
    bound: ClassVar[float] = 1.0
    noise_var: ClassVar[float] = 0.1

    @property
    def prior(self):
        return box_prior(self.bound, self.theta_dim)

    def _simulate_one(self, key, theta):
        return theta + math.sqrt(self.noise_var) * jax.random.normal(key, (self.x_dim,))

    def _log_likelihood_one(self, theta, x):
        return _diag_normal_logpdf(x, theta, self.noise_var)

    def posterior_mean_cov(self, x_obs: Float[Array, " m"]) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
        """Posterior mean and covariance in closed form (a product of truncated normals).

        Computed in float64 with scipy, so not traceable under jit.

        Arguments:
            x_obs: one observation, shape (x_dim,).

        Returns:
            `(mean, cov)` as float64 NumPy arrays (cov is diagonal).

        Raises:
            ValueError: for a wrong shape of x_obs.
        """
        x_obs = np.asarray(_check_one_x(x_obs, self.x_dim), dtype=np.float64)
        m, v, _ = _truncated_normal_moments(x_obs, math.sqrt(self.noise_var), -self.bound, self.bound)
        return m, np.diag(v)

    def reference_posterior(self, key: PRNGKeyArray, x_obs: Float[Array, " m"], num_samples: int) -> Float[Array, "n d"]:
        """Exact posterior samples: N(x_obs, 0.1 I) proposals rejected outside the prior box.

        Both the proposal and the box factorise over coordinates, so each coordinate is
        accepted or rejected on its own (still exact, and fast when x_obs is near a corner).
        For a coordinate of x_obs far outside the box, where few normal proposals land inside,
        a uniform proposal on the box with the usual accept ratio is used instead.

        Arguments:
            key: PRNG key.
            x_obs: one observation, shape (x_dim,).
            num_samples: number of samples.

        Returns:
            Samples of shape (num_samples, theta_dim), float32.

        Raises:
            ValueError: for a wrong shape of x_obs or a non-positive num_samples.
            RuntimeError: if the acceptance rate is too small to finish (x_obs far outside the box).
        """
        x_obs = _check_one_x(x_obs, self.x_dim)
        std = math.sqrt(self.noise_var)
        # Per coordinate, the proposal with the higher acceptance rate: N(x, std^2) accepts the
        # box mass Z; uniform on the box accepts Z / (2 * bound * max density on the box).
        x64 = np.asarray(x_obs, dtype=np.float64)
        _, _, log_z = _truncated_normal_moments(x64, std, -self.bound, self.bound)
        nearest = np.clip(x64, -self.bound, self.bound)
        log_max_density = -0.5 * ((nearest - x64) / std) ** 2 - math.log(std) - 0.5 * _LOG_2PI
        log_acc_uniform = log_z - math.log(2 * self.bound) - log_max_density
        use_uniform = jnp.asarray(log_acc_uniform > log_z)
        args = (x_obs, jnp.float32(std), jnp.float32(self.bound), use_uniform)
        return rejection_sample_independent(
            key, _propose_trunc_normal, _accept_trunc_normal, args, num_samples, self.theta_dim
        )


def _propose_mixture(key, n, args):
    x_obs, stds, _ = args
    kc, kz = jax.random.split(key)
    comp = jax.random.bernoulli(kc, 0.5, (n,)).astype(jnp.int32)
    return x_obs + stds[comp][:, None] * jax.random.normal(kz, (n, x_obs.shape[-1]))


class GaussianMixture(AbstractTask):
    """gaussian_mixture: theta ~ U([-10, 10]^2), x | theta ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I).

    Each simulation draws its own mixture component (sbibm's simulator draws one component per
    call, shared by a whole batch; we follow the model as the paper states it). The posterior
    is the same mixture centred on x_obs, truncated to the prior box, sampled by rejection.
    """

    name: ClassVar[str] = "gaussian_mixture"
    theta_dim: ClassVar[int] = 2
    x_dim: ClassVar[int] = 2
    num_observations: ClassVar[int] = 10
    bound: ClassVar[float] = 10.0
    stds: ClassVar[tuple[float, float]] = (1.0, 0.1)

    @property
    def prior(self):
        return box_prior(self.bound, self.theta_dim)

    def _simulate_one(self, key, theta):
        kc, kz = jax.random.split(key)
        std = jnp.where(jax.random.bernoulli(kc, 0.5), self.stds[1], self.stds[0])
        return theta + std * jax.random.normal(kz, (self.x_dim,))

    def _log_likelihood_one(self, theta, x):
        comps = jnp.stack([_diag_normal_logpdf(x, theta, s**2) for s in self.stds])
        return jax.scipy.special.logsumexp(comps) + math.log(0.5)

    def posterior_mean_cov(self, x_obs: Float[Array, " m"]) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
        """Posterior mean and covariance in closed form (a truncated two-component mixture).

        Computed in float64 with scipy, so not traceable under jit.

        Arguments:
            x_obs: one observation, shape (x_dim,).

        Returns:
            `(mean, cov)` as float64 NumPy arrays.

        Raises:
            ValueError: for a wrong shape of x_obs.
        """
        x_obs = np.asarray(_check_one_x(x_obs, self.x_dim), dtype=np.float64)
        means, second, log_w = [], [], []
        for s in self.stds:
            m, v, log_mass = _truncated_normal_moments(x_obs, s, -self.bound, self.bound)
            means.append(m)
            second.append(np.diag(v) + np.outer(m, m))
            log_w.append(math.log(0.5) + log_mass.sum())
        w = np.exp(np.array(log_w) - np.logaddexp.reduce(log_w))
        mean = sum(wk * mk for wk, mk in zip(w, means))
        cov = sum(wk * sk for wk, sk in zip(w, second)) - np.outer(mean, mean)
        return mean, cov

    def reference_posterior(self, key: PRNGKeyArray, x_obs: Float[Array, " m"], num_samples: int) -> Float[Array, "n d"]:
        """Exact posterior samples: mixture proposals centred on x_obs, rejected outside the box.

        Arguments:
            key: PRNG key.
            x_obs: one observation, shape (x_dim,).
            num_samples: number of samples.

        Returns:
            Samples of shape (num_samples, theta_dim), float32.

        Raises:
            ValueError: for a wrong shape of x_obs or a non-positive num_samples.
        """
        x_obs = _check_one_x(x_obs, self.x_dim)
        args = (x_obs, jnp.asarray(self.stds, dtype=jnp.float32), jnp.float32(self.bound))
        return rejection_sample(key, _propose_mixture, _accept_box, args, num_samples, self.theta_dim)
