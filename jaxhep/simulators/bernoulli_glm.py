"""The bernoulli_glm and bernoulli_glm_raw tasks of sbibm (Lueckmann et al. 2017, 2021)."""

from __future__ import annotations

import abc
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractTask, check_num, check_x
from .mcmc import nuts_reference, warn_if_unconverged

_NUM_BINS = 100
_FILTER_LEN = 9


@functools.cache
def _stimulus() -> np.ndarray:
    current = np.random.RandomState(42).randn(_NUM_BINS).astype(np.float32)
    current.flags.writeable = False  # cached: shared by every caller in this process
    return current


def stimulus() -> np.ndarray:
    """The white-noise input current: 100 draws of N(0, 1) from NumPy's `RandomState(42)`, float32.

    This is sbibm's recipe for its stored `stimulus_I.pt` (seed 42, legacy NumPy generator).
    """
    return _stimulus().copy()


def design_matrix() -> np.ndarray:
    """The (100, 10) design matrix: a column of ones, then the stimulus delayed by 0..8 bins."""
    current = _stimulus()
    X = np.zeros((_NUM_BINS, _FILTER_LEN + 1), dtype=np.float32)
    X[:, 0] = 1.0
    for lag in range(_FILTER_LEN):
        X[lag:, lag + 1] = current[: _NUM_BINS - lag]
    return X


def prior_precision() -> np.ndarray:
    """The (10, 10) prior precision: 0.5 for the offset, F^T F for the filter.

    F = D^2 + diag(sqrt(i / 9)), i = 0..8, with D the first-difference matrix, penalising the
    filter's second differences (smoothness), as in sbibm.
    """
    m = _FILTER_LEN
    D = np.eye(m) - np.eye(m, k=-1)
    F = D @ D + np.diag(np.sqrt(np.arange(m) / m))
    P = np.zeros((m + 1, m + 1))
    P[0, 0] = 0.5
    P[1:, 1:] = F.T @ F
    return P.astype(np.float32)


def _glm_log_likelihood(theta, data):
    # log prod_t sigmoid(psi_t)^y_t (1 - sigmoid(psi_t))^(1 - y_t) = theta . X^T y - sum_t softplus(psi_t)
    stats, X = data
    return theta @ stats - jnp.sum(jax.nn.softplus(X @ theta))


@functools.cache
def _prior_scale_tril() -> np.ndarray:
    cov = np.linalg.inv(prior_precision().astype(np.float64))
    tril = np.linalg.cholesky(cov).astype(np.float32)
    tril.flags.writeable = False  # shared by every prior built in this process
    return tril


class AbstractBernoulliGLM(AbstractTask):
    """Shared model: theta ~ N(0, B^-1); spikes y_t ~ Bernoulli(sigmoid((X theta)_t)), t = 1..100."""

    # The design matrix and prior precision are constants, not fields, so that the task has no
    # array fields: it hashes, and `jax.jit(task.simulator)` works directly.

    @property
    def X(self) -> Float[Array, "100 10"]:
        """The (100, 10) design matrix."""
        return jnp.asarray(design_matrix())

    @property
    def precision(self) -> Float[Array, "10 10"]:
        """The (10, 10) prior precision matrix."""
        return jnp.asarray(prior_precision())

    @property
    def prior(self):
        # Built from a Cholesky factor computed once in float64, not from the precision matrix,
        # so that sampling and log_prob do no factorisation when traced.
        return dist.MultivariateNormal(np.zeros(10, np.float32), scale_tril=_prior_scale_tril().copy())

    def _spikes(self, key, theta):
        return jax.random.bernoulli(key, jax.nn.sigmoid(self.X @ theta)).astype(jnp.float32)

    def _log_likelihood_stats(self, theta, stats):
        return _glm_log_likelihood(theta, (stats, self.X))

    @abc.abstractmethod
    def sufficient_statistics(self, x):
        """X^T y, the statistics the likelihood depends on, from one data vector x."""

    def reference_posterior(
        self,
        key: PRNGKeyArray,
        x_obs: Float[Array, " m"],
        num_samples: int,
        *,
        num_chains: int = 4,
        num_warmup: int = 500,
    ) -> Float[Array, "n d"]:
        """Posterior samples by NUTS (dense mass matrix) on the exact, log-concave likelihood.

        sbibm used Polya-Gamma Gibbs sampling; both target the same exact posterior.

        Arguments:
            key: PRNG key.
            x_obs: one observation.
            num_samples: number of samples.
            num_chains: NUTS chains (run vectorised).
            num_warmup: warm-up steps per chain.

        Returns:
            Samples of shape (num_samples, 10), float32, in random order.

        Raises:
            ValueError: for a wrong shape of x_obs or a non-positive num_samples.
        """
        x_obs = check_x(x_obs, self.x_dim, "x_obs")
        if x_obs.ndim != 1:
            raise ValueError(f"x_obs must be one observation of shape ({self.x_dim},), got shape {tuple(x_obs.shape)}")
        num_samples = check_num(num_samples, "num_samples")
        stats = self.sufficient_statistics(x_obs)
        prior = self.prior
        k_mcmc, k_perm = jax.random.split(key)

        samples, r_hat = nuts_reference(
            k_mcmc, _glm_log_likelihood, (stats, self.X), prior, num_samples,
            num_chains=num_chains, num_warmup=num_warmup, thinning=1,
        )
        warn_if_unconverged(r_hat, self.name)
        return samples[jax.random.permutation(k_perm, num_samples)]


class BernoulliGLM(AbstractBernoulliGLM):
    """bernoulli_glm: x = (number of spikes, spike-triggered sums at lags 0..8) = X^T y, 10-d.

    The stimulus is sbibm's (NumPy `RandomState(42)`), so the design matrix matches sbibm's:
    X^T y of the spike train in sbibm's `observation_raw.csv` (observation 1) reproduces its
    `observation.csv` to float32 precision.
    The likelihood of x is exact provided distinct spike trains give distinct X^T y (true
    for a generic real-valued stimulus), since every train with the same X^T y has the same
    probability: log p(x | theta) = theta . x - sum_t softplus((X theta)_t).
    """

    name: ClassVar[str] = "bernoulli_glm"
    theta_dim: ClassVar[int] = 10
    x_dim: ClassVar[int] = 10
    num_observations: ClassVar[int] = 10

    def sufficient_statistics(self, x):
        return x

    def _simulate_one(self, key, theta):
        return self.X.T @ self._spikes(key, theta)

    def _log_likelihood_one(self, theta, x):
        return self._log_likelihood_stats(theta, x)


class BernoulliGLMRaw(AbstractBernoulliGLM):
    """bernoulli_glm_raw: x = the raw spike train y in {0, 1}^100; same model and posterior."""

    name: ClassVar[str] = "bernoulli_glm_raw"
    theta_dim: ClassVar[int] = 10
    x_dim: ClassVar[int] = 100
    num_observations: ClassVar[int] = 10

    def sufficient_statistics(self, x):
        return self.X.T @ x

    def _simulate_one(self, key, theta):
        return self._spikes(key, theta)

    def _log_likelihood_one(self, theta, x):
        return self._log_likelihood_stats(theta, self.X.T @ x)
