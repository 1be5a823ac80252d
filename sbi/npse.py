"""Neural posterior score estimation (NPSE): a conditional diffusion model as the posterior."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.checks import check_positive_int
from jaxhep.compilation import filter_jit
from jaxhep.densities import (SDES, AbstractConditionalDensity, Embedded, ScoreDiffusion, Standardized,
                              check_finite, check_last_dim, check_network)
from jaxhep.sbi.base import AbstractPosteriorEstimator, Posterior


def _check_common(est) -> None:
    """Checks shared by the ODE-based estimators (the training settings are checked by the base)."""
    for name in ("hidden_features", "num_layers"):
        check_positive_int(name, getattr(est, name), numpy_ints=False)
    check_network(est.network)
    if not (est.rtol > 0 and est.atol > 0):
        raise ValueError(f"rtol and atol must be positive, got {est.rtol}, {est.atol}")


class NPSE(AbstractPosteriorEstimator):
    """Amortized posterior estimation with a conditional score-based diffusion model.

    Trains `jaxhep.densities.ScoreDiffusion` by denoising score matching in the standardised
    space (z-scoring; a bounded prior's box is kept by rejection or a support map, see
    `support`), and returns a `Posterior` whose samples and exact log-densities come from the
    probability-flow ODE. The defaults were chosen for accuracy per CPU second at about 10^4
    simulations (see experiments/benchmarks/diffusion_table.py): a 3-layer SiLU MLP of width
    128, batches of 128 at a learning rate of 1e-3, up to 1000 epochs with patience 50, and
    weights averaged with decay 0.999 (mean C2ST over three observations with averaging:
    gaussian_linear 0.537 instead of 0.607, two_moons 0.522). The validation loss of a
    diffusion model is noisy and two_moons' sits on a plateau before the crescents are learned,
    so a small learning rate with little patience stops there: batches of 128 at 5e-4 with
    patience 50 stopped at epoch 282 with C2ST 0.76 for one training key. The earlier defaults
    (batches of 256, 5e-4, patience 100) stopped gaussian_mixture at epoch 295 with C2ST 0.747
    for one training key; the current ones gave 0.509 / 0.545 / 0.563 / 0.826 / 0.629 on
    two_moons, gaussian_linear, gaussian_mixture, slcp, bernoulli_glm with one key and
    0.511 / 0.543 / 0.572 / 0.920 / 0.632 with another (slcp stopped at epoch 361), in 7-16 s.

    Arguments:
        sde: 've' or 'vp'.
        hidden_features, num_layers: width and depth of the noise-prediction network (hidden
            layers of the MLP, residual blocks of the resnet).
        network: "mlp" or "resnet" (residual blocks, each conditioned on x and t; see
            `jaxhep.densities.TimeConditionedResNet`), or a callable (key, theta_dim, x_dim) ->
            module f(theta, x, t) -> vector of theta_dim (e.g. a Flax network through
            `jaxhep.nn.from_flax`); the network works in the standardised space.
        num_frequencies: frequencies of the sinusoidal time embedding.
        sigma_min, sigma_max: VE noise range; beta_min, beta_max: VP schedule.
        rtol, atol: ODE solver tolerances for sampling and log_prob.
        batch_size, learning_rate, validation_fraction, patience, max_epochs, progress,
        clip_norm, z_score_theta, z_score_x, ema_decay, validation_draws, lr_decay_factor,
            lr_decay_patience, weight_decay, embedding_net, devices: as in `NPE`.
        support: as in `NPE`, but "truncate" by default: the logit map of a box prior cost the
            ODE models accuracy (FMPE on gaussian_mixture 0.73 with it, 0.60 without).

    Raises:
        ValueError: for an unknown SDE or invalid sizes.
    """

    sde: str = "ve"
    hidden_features: int = 128
    num_layers: int = 3
    network: str | Callable = "mlp"
    num_frequencies: int = 8
    sigma_min: float = 1e-3
    sigma_max: float = 10.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    rtol: float = 1e-3
    atol: float = 1e-4
    batch_size: int = 128
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    patience: int = 50
    max_epochs: int = 1000
    progress: bool = True
    clip_norm: float | None = 5.0
    z_score_theta: bool = True
    z_score_x: bool = True
    ema_decay: float | None = 0.999
    validation_draws: int = 1
    lr_decay_factor: float | None = None
    lr_decay_patience: int = 10
    weight_decay: float = 0.0
    embedding_net: eqx.Module | None = None
    support: str = "truncate"
    devices: None | str | int | tuple = None

    def __check_init__(self):
        if self.sde not in SDES:
            raise ValueError(f"unknown sde {self.sde!r}; expected one of {SDES}")
        _check_common(self)

    @property
    def method(self) -> str:
        return "npse"

    def build(self, key: PRNGKeyArray, theta_dim: int, x_dim: int) -> AbstractConditionalDensity:
        return ScoreDiffusion(theta_dim, x_dim, self.sde, width=self.hidden_features, depth=self.num_layers,
                              network=self.network,
                              num_frequencies=self.num_frequencies, sigma_min=self.sigma_min,
                              sigma_max=self.sigma_max, beta_min=self.beta_min, beta_max=self.beta_max,
                              rtol=self.rtol, atol=self.atol, key=key)

    def _after_fit(self, posterior: Posterior, z: np.ndarray) -> Posterior:
        """Record the mean and covariance of the training theta in the standardised space (they
        are prior draws), which `sample_iid` uses as the prior's Gaussian approximation."""
        if not isinstance(posterior.estimator.base, ScoreDiffusion):
            return posterior
        z = np.asarray(z, dtype=np.float64)
        loc = jnp.asarray(z.mean(axis=0), jnp.float32)
        cov = jnp.asarray(np.atleast_2d(np.cov(z, rowvar=False)), jnp.float32)
        return eqx.tree_at(lambda p: (p.estimator.base.prior_loc, p.estimator.base.prior_cov), posterior, (loc, cov))


def sample_iid(key: PRNGKeyArray, posterior: Posterior, x_obs: Float[Array, "m c"], num_samples: int, *,
               num_cov_samples: int = 1000) -> Float[Array, "n d"]:
    """Sample the posterior given m iid observations from an NPSE posterior trained on single ones.

    The per-observation scores are combined with the Gaussian correction of Linhart et al.
    2024 (GAUSS; see `ScoreDiffusion.iid_score`), using the covariances of the
    single-observation posteriors (estimated once from `num_cov_samples` samples each, each
    precision kept at least the prior's) and a Gaussian approximation of the prior in the
    standardised space (exact for Gaussian priors).

    For other priors the prior term is approximate, and the error grows with the number of
    observations: with a uniform prior, exact single-observation scores and 10 (30)
    observations, the mean came out 0.9 (1.9) posterior standard deviations off (session 19's
    audit). Replacing the Gaussian by the uniform prior's exact diffused score removed most of
    that away from the box's edges but drove the sampling out of the box when the posterior
    lies at an edge, so it is not used. An `embedding_net` over a set of observations is the
    alternative that does not approximate the prior.

    Arguments:
        key: PRNG key.
        posterior: a `Posterior` returned by `NPSE.fit`.
        x_obs: the observations, shape (m, x_dim).
        num_samples: number of samples.
        num_cov_samples: samples per observation for the covariance estimates.

    Returns:
        Samples of shape (num_samples, theta_dim) in the user's space.

    Raises:
        ValueError: when the posterior is not a score-based one, or x_obs has the wrong shape.
    """
    est = posterior.estimator if isinstance(posterior, Posterior) else posterior
    if isinstance(est, Standardized) and isinstance(est.base, Embedded):
        raise ValueError("sample_iid combines the scores of single observations and needs NPSE trained without "
                         "an embedding_net (an embedding of a set of observations handles iid data itself)")
    if not (isinstance(est, Standardized) and isinstance(est.base, ScoreDiffusion)):
        raise ValueError(f"sample_iid needs a posterior trained by NPSE (a standardised ScoreDiffusion), got "
                         f"{type(est).__name__}")
    x_obs = check_last_dim(x_obs, est.x_dim, "x_obs")
    if x_obs.ndim != 2:
        raise ValueError(f"x_obs must have shape (num_observations, {est.x_dim}), got {tuple(x_obs.shape)}")
    x_obs = check_finite(x_obs, "x_obs")
    check_positive_int("num_samples", num_samples, numpy_ints=False)
    check_positive_int("num_cov_samples", num_cov_samples, numpy_ints=False)
    if num_cov_samples <= est.theta_dim:
        raise ValueError(f"num_cov_samples must exceed theta_dim={est.theta_dim} for a covariance estimate, got "
                         f"{num_cov_samples}")
    if len(x_obs) == 0:
        raise ValueError("x_obs holds no observations")
    return _sample_iid(key, est, x_obs, num_samples, num_cov_samples)


@filter_jit
def _sample_iid(key, est, x_obs, num_samples, num_cov_samples):
    xs = jax.vmap(est.standardize_x)(x_obs)
    k_cov, k_draw = jax.random.split(key)
    # Once, outside the rejection rounds below, which would otherwise each estimate them anew.
    covs = est.base.iid_covariances(k_cov, xs, num_cov_samples)

    def draw(k, m):
        z = est.base.sample_iid(k, xs, m, post_covs=covs)
        return jax.vmap(est.to_base.inverse)(z)

    # With support="truncate", samples outside the prior's box are drawn again.
    return est.inside_only(k_draw, draw, num_samples)
