"""The slcp and slcp_distractors tasks of sbibm (Papamakarios et al. 2019; Lueckmann et al. 2021)."""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .base import AbstractTask, box_prior, check_num, check_x
from .mcmc import nuts_reference, warn_if_unconverged

_BOUND = 3.0
_NUM_DRAWS = 4
_EPS = 1e-6  # sbibm adds this to the covariance diagonal to keep it positive definite
_LOG_2PI = math.log(2 * math.pi)


def _slcp_cholesky(theta):
    """Mean and lower Cholesky factor (2x2) of the SLCP Gaussian."""
    s1, s2 = theta[2] ** 2, theta[3] ** 2
    rho = jnp.tanh(theta[4])
    c00 = s1**2 + _EPS
    c11 = s2**2 + _EPS
    c01 = rho * s1 * s2
    l00 = jnp.sqrt(c00)
    l10 = c01 / l00
    l11 = jnp.sqrt(jnp.maximum(c11 - l10**2, 0.0))
    return theta[:2], l00, l10, l11


def _slcp_simulate_one(key, theta):
    mean, l00, l10, l11 = _slcp_cholesky(theta)
    z = jax.random.normal(key, (_NUM_DRAWS, 2))
    x = jnp.stack([mean[0] + l00 * z[:, 0], mean[1] + l10 * z[:, 0] + l11 * z[:, 1]], axis=-1)
    return x.reshape(2 * _NUM_DRAWS)  # (x1_a, x1_b, x2_a, x2_b, ...), as sbibm flattens


def _slcp_log_likelihood_one(theta, x):
    mean, l00, l10, l11 = _slcp_cholesky(theta)
    d = x.reshape(_NUM_DRAWS, 2) - mean
    w0 = d[:, 0] / l00
    w1 = (d[:, 1] - l10 * w0) / l11
    per_draw = -0.5 * (w0**2 + w1**2) - jnp.log(l00) - jnp.log(l11) - _LOG_2PI
    return jnp.sum(per_draw)


def _slcp_prior():
    return box_prior(_BOUND, 5)


def _fold_signs(theta):
    return theta.at[..., 2:4].set(jnp.abs(theta[..., 2:4]))


def _slcp_reference(key, x8, num_samples, name, num_chains, num_warmup):
    num_samples = check_num(num_samples, "num_samples")
    k_mcmc, k_flip, k_perm = jax.random.split(key, 3)
    prior = _slcp_prior()

    samples, r_hat = nuts_reference(
        k_mcmc, _slcp_log_likelihood_one, x8, prior, num_samples, num_chains=num_chains,
        num_warmup=num_warmup, rhat_transform=_fold_signs,
    )
    warn_if_unconverged(r_hat, name)
    # The likelihood depends on theta_3 and theta_4 only through their squares and the prior is
    # symmetric, so each sign flip maps the posterior onto itself: flipping at random covers all
    # four modes exactly, whichever modes the chains happened to explore.
    signs = jnp.where(jax.random.bernoulli(k_flip, 0.5, (num_samples, 2)), 1.0, -1.0)
    samples = samples.at[:, 2:4].multiply(signs)
    # Shuffle so that any prefix of the output is spread over all chains.
    return samples[jax.random.permutation(k_perm, num_samples)]


class SLCP(AbstractTask):
    """slcp: theta ~ U([-3, 3]^5); x = four i.i.d. draws of a 2-d Gaussian, flattened to 8.

    Mean (theta_1, theta_2), standard deviations s1 = theta_3^2 and s2 = theta_4^2,
    correlation tanh(theta_5), plus 1e-6 on the covariance diagonal as in sbibm. The
    reference posterior is NUTS on the exact likelihood followed by random sign flips of
    theta_3 and theta_4 (an exact symmetry of the posterior).
    """

    name: ClassVar[str] = "slcp"
    theta_dim: ClassVar[int] = 5
    x_dim: ClassVar[int] = 8
    num_observations: ClassVar[int] = 10
    iid_items: ClassVar[tuple[int, int] | None] = (4, 2)

    @property
    def prior(self):
        return _slcp_prior()

    def _simulate_one(self, key, theta):
        return _slcp_simulate_one(key, theta)

    def _log_likelihood_one(self, theta, x):
        return _slcp_log_likelihood_one(theta, x)

    def reference_posterior(
        self,
        key: PRNGKeyArray,
        x_obs: Float[Array, " m"],
        num_samples: int,
        *,
        num_chains: int = 10,
        num_warmup: int = 1000,
    ) -> Float[Array, "n d"]:
        """Posterior samples by NUTS on the exact likelihood, symmetrised over the sign modes.

        Arguments:
            key: PRNG key.
            x_obs: one observation, shape (8,).
            num_samples: number of samples.
            num_chains: NUTS chains (run vectorised), started from importance-resampled prior draws.
            num_warmup: warm-up steps per chain.

        Returns:
            Samples of shape (num_samples, 5), float32, in random order.

        Raises:
            ValueError: for a wrong shape of x_obs or a non-positive num_samples.
        """
        x_obs = _check_one(x_obs, self.x_dim)
        return _slcp_reference(key, x_obs, num_samples, self.name, num_chains, num_warmup)


def _check_one(x_obs, x_dim):
    x_obs = check_x(x_obs, x_dim, "x_obs")
    if x_obs.ndim != 1:
        raise ValueError(f"x_obs must be one observation of shape ({x_dim},), got shape {tuple(x_obs.shape)}")
    return x_obs


_NUM_DISTRACTORS = 92
_NUM_COMPONENTS = 20
_DF = 2.0


@functools.cache
def _distractor_parameters():
    """The distractor mixture and the permutation, generated as sbibm generates them.

    sbibm seeds NumPy's legacy global generator with 42 and draws, in this order: 20 location
    vectors 15 * N(0, I_92); for each of 20 components a lower-triangular N(0, 1) matrix plus
    diag(exp(N(0, 1))), scaled by 3, as the Cholesky factor of a Student-t (df = 2); then a
    permutation of the 100 output dimensions. `RandomState(42)` gives the same stream.
    """
    rng = np.random.RandomState(42)
    locs = np.stack([15.0 * rng.normal(size=_NUM_DISTRACTORS) for _ in range(_NUM_COMPONENTS)])
    chols = []
    for _ in range(_NUM_COMPONENTS):
        lower = np.tril(rng.normal(size=(_NUM_DISTRACTORS, _NUM_DISTRACTORS)))
        chols.append(3.0 * (lower + np.diag(np.exp(rng.normal(size=_NUM_DISTRACTORS)))))
    permutation = rng.permutation(_NUM_DISTRACTORS + 8)
    out = locs.astype(np.float32), np.stack(chols).astype(np.float32), permutation.astype(np.int32)
    for a in out:
        a.flags.writeable = False  # cached: shared by every task in this process
    return out


def _student_t_log_prob(y, loc, scale_tril):
    # Some of sbibm's factors have negative diagonal entries (still valid factors of L L^T),
    # so the log-determinant uses |diag|, unlike numpyro's validated MultivariateStudentT.
    d = y.shape[-1]
    w = jax.scipy.linalg.solve_triangular(scale_tril, y - loc, lower=True)
    maha = jnp.sum(w**2)
    return (
        jax.scipy.special.gammaln((_DF + d) / 2)
        - jax.scipy.special.gammaln(_DF / 2)
        - 0.5 * d * math.log(_DF * math.pi)
        - jnp.sum(jnp.log(jnp.abs(jnp.diagonal(scale_tril))))
        - 0.5 * (_DF + d) * jnp.log1p(maha / _DF)
    )


@eqx.filter_jit
def _distracted_observation(task, key, x8):
    return task._assemble(x8, task._sample_distractors(key)).astype(jnp.float32)


class SLCPDistractors(AbstractTask):
    """slcp_distractors: slcp's 8 data dimensions plus 92 uninformative ones, permuted (x_dim 100).

    The distractors are drawn from a uniform mixture of 20 multivariate Student-t (df = 2)
    components in 92 dimensions, independent of theta; the 100 dimensions are then permuted
    by a fixed permutation. Mixture parameters and permutation are regenerated from sbibm's
    recipe (NumPy legacy seed 42, see `_distractor_parameters`). Checked: the permutation puts
    the 8 informative values at the same positions as in sbibm's stored
    `observation_distractors.csv` of observation 1, and it is drawn after the mixture
    parameters from the same stream; the mixture values themselves (`gmm.torch`, a binary
    file) were not compared.
    The reference posterior is slcp's, computed from the 8 informative dimensions.
    `log_likelihood` adds the distractor log-density, whose evaluation is so ill-conditioned
    that its absolute value is meaningless (see `_log_likelihood_one`); its theta-dependence,
    and so every posterior and likelihood ratio, is exact.
    """

    name: ClassVar[str] = "slcp_distractors"
    theta_dim: ClassVar[int] = 5
    x_dim: ClassVar[int] = 100
    num_observations: ClassVar[int] = 10
    # The mixture and the permutation are constants, not fields, so that the task has no array
    # fields: it hashes, and `jax.jit(task.simulator)` works directly.

    @property
    def locs(self) -> Float[Array, "20 92"]:
        """(20, 92) component locations."""
        return jnp.asarray(_distractor_parameters()[0])

    @property
    def scale_trils(self) -> Float[Array, "20 92 92"]:
        """(20, 92, 92) component Cholesky factors (some diagonal entries are negative)."""
        return jnp.asarray(_distractor_parameters()[1])

    @property
    def permutation(self) -> Int[Array, " 100"]:
        """(100,) output x[j] = concat(slcp_x, distractors)[permutation[j]]."""
        return jnp.asarray(_distractor_parameters()[2])

    @property
    def inverse_permutation(self) -> Int[Array, " 100"]:
        """(100,) the inverse permutation."""
        return jnp.asarray(np.argsort(_distractor_parameters()[2]).astype(np.int32))

    @property
    def prior(self):
        return _slcp_prior()

    def informative(self, x: Float[Array, "*b 100"]) -> Float[Array, "*b 8"]:
        """The 8 slcp data dimensions of x, in slcp's order.

        Raises:
            ValueError: for a wrong trailing dimension.
        """
        x = check_x(x, self.x_dim)
        return x[..., self.inverse_permutation[:8]]

    def _sample_distractors(self, key):
        kc, kg, kz = jax.random.split(key, 3)
        c = jax.random.randint(kc, (), 0, _NUM_COMPONENTS)
        # Student-t with df = 2: a Gaussian divided by sqrt(chi2_2 / 2) = sqrt(Gamma(1, 1)).
        g = jax.random.gamma(kg, _DF / 2)
        z = jax.random.normal(kz, (_NUM_DISTRACTORS,))
        return self.locs[c] + (self.scale_trils[c] @ z) / jnp.sqrt(g)

    def _assemble(self, x8, noise):
        return jnp.concatenate([x8, noise])[self.permutation]

    def _simulate_one(self, key, theta):
        k_data, k_noise = jax.random.split(key)
        return self._assemble(_slcp_simulate_one(k_data, theta), self._sample_distractors(k_noise))

    def distractor_log_prob(self, noise: Float[Array, "*b 92"]) -> Float[Array, "*b"]:
        """Log-density of the 92 distractor dimensions (a theta-free term of the likelihood)."""
        noise = check_x(noise, _NUM_DISTRACTORS, "noise")
        batch = noise.shape[:-1]
        flat = noise.reshape(-1, _NUM_DISTRACTORS)
        lp = jax.vmap(lambda y: jax.vmap(_student_t_log_prob, in_axes=(None, 0, 0))(y, self.locs, self.scale_trils))(flat)
        out = jax.scipy.special.logsumexp(lp, axis=-1) - math.log(_NUM_COMPONENTS)
        return out.reshape(batch)

    def _log_likelihood_one(self, theta, x):
        # slcp's exact log-likelihood of the informative dimensions plus the theta-free distractor
        # density. The latter's absolute value is not reliable: sbibm's random triangular factors
        # have condition numbers up to ~1e19, and an audit (session 19) found it off by hundreds
        # of nats in float32 against float64 at the same point, and by up to ~10^3 nats even in
        # float64 against the density computed from the generating draws. It cancels in any
        # posterior or likelihood ratio, which is all it is used for.
        x = x[self.inverse_permutation]
        return _slcp_log_likelihood_one(theta, x[:8]) + self.distractor_log_prob(x[8:])

    def _own_observation(self, i: int, key) -> tuple[Float[Array, " d"], Float[Array, " m"]]:
        """jaxhep's observation i: slcp's (source="jaxhep") with distractors drawn by a fixed key,
        so that `informative(x_obs)` equals slcp's `get_observation(i, "jaxhep")[1]` (with
        source="sbibm", sbibm's stored observation, whose informative part is slcp's too)."""
        theta, x8 = SLCP().get_observation(i, "jaxhep")
        with jax.enable_x64(False):  # as in `AbstractTask._own_observation`
            return theta, _distracted_observation(self, jax.random.fold_in(key, 92), x8)

    def reference_posterior(
        self,
        key: PRNGKeyArray,
        x_obs: Float[Array, " m"],
        num_samples: int,
        *,
        num_chains: int = 10,
        num_warmup: int = 1000,
    ) -> Float[Array, "n d"]:
        """slcp's reference posterior for the 8 informative dimensions of x_obs.

        Arguments:
            key: PRNG key.
            x_obs: one observation, shape (100,).
            num_samples: number of samples.
            num_chains: NUTS chains (run vectorised), started from importance-resampled prior draws.
            num_warmup: warm-up steps per chain.

        Returns:
            Samples of shape (num_samples, 5), float32.

        Raises:
            ValueError: for a wrong shape of x_obs or a non-positive num_samples.
        """
        x_obs = _check_one(x_obs, self.x_dim)
        return _slcp_reference(key, self.informative(x_obs), num_samples, self.name, num_chains, num_warmup)
