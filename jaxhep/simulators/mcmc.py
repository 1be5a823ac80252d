"""NUTS (numpyro) on an exact log-posterior, used for the reference posteriors of MCMC tasks."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import split_gelman_rubin
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS

from .base import check_num


def nuts_reference(
    key,
    log_posterior,
    prior,
    num_samples: int,
    *,
    num_chains: int = 10,
    num_warmup: int = 1000,
    thinning: int = 2,
    num_init_candidates: int = 20_000,
    dense_mass: bool = True,
    progress: bool = False,
    rhat_transform=None,
):
    """Sample an exact posterior with several NUTS chains started from importance-resampled prior draws.

    The chains run in the prior support's unconstrained space (numpyro's `biject_to`), with
    the log-Jacobian added. Their starting points are drawn without replacement from
    `num_init_candidates` prior draws with weights proportional to the likelihood, which
    spreads the chains over the posterior modes.

    Arguments:
        key: PRNG key.
        log_posterior: `log_posterior(theta) -> scalar`, unnormalised, for one theta of shape (d,).
        prior: the numpyro prior (for its support, and for the starting candidates).
        num_samples: number of samples to return (rounded up per chain, then cut).
        num_chains: number of chains, run vectorised.
        num_warmup: warm-up (adaptation) steps per chain.
        thinning: keep every `thinning`-th step.
        num_init_candidates: prior draws to choose the starting points from.
        dense_mass: adapt a dense mass matrix.
        progress: show numpyro's progress bar.
        rhat_transform: applied to the samples before R-hat (e.g. to fold exact symmetries,
            so that chains sitting in mirror-image modes do not count as unconverged).

    Returns:
        `(samples, r_hat)`: samples of shape (num_samples, d), pooled over chains in chain
        order, and the split R-hat of each coordinate.
    """
    num_samples = check_num(num_samples, "num_samples")
    k_init, k_choice, k_mcmc = jax.random.split(key, 3)
    transform = biject_to(prior.support)

    candidates = prior.sample(k_init, (num_init_candidates,))
    logw = jax.vmap(log_posterior)(candidates) - prior.log_prob(candidates)
    logw = jnp.where(jnp.isfinite(logw), logw, -jnp.inf)
    probs = jax.nn.softmax(logw)
    # Without replacement needs enough candidates with non-negligible weight; fall back to replacement.
    replace = bool(jnp.sum(probs > 0) < num_chains)
    idx = jax.random.choice(k_choice, num_init_candidates, (num_chains,), replace=replace, p=probs)
    init_u = transform.inv(candidates[idx])

    def potential(u):
        theta = transform(u)
        return -(log_posterior(theta) + jnp.sum(transform.log_abs_det_jacobian(u, theta)))

    per_chain = math.ceil(num_samples / num_chains)
    kernel = NUTS(potential_fn=potential, dense_mass=dense_mass)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=per_chain * thinning,
        num_chains=num_chains,
        thinning=thinning,
        chain_method="vectorized",
        progress_bar=progress,
    )
    mcmc.run(k_mcmc, init_params=init_u)
    u = mcmc.get_samples(group_by_chain=True)  # (chains, per_chain, d)
    theta = transform(u)
    r_hat = np.asarray(split_gelman_rubin(np.asarray(theta if rhat_transform is None else rhat_transform(theta))))
    pooled = theta.reshape(-1, theta.shape[-1])[:num_samples]
    return pooled.astype(jnp.float32), r_hat


def warn_if_unconverged(r_hat, task_name: str, threshold: float = 1.05):
    """Warn when any split R-hat exceeds `threshold`."""
    worst = float(np.max(r_hat))
    if not np.isfinite(worst) or worst > threshold:
        warnings.warn(
            f"{task_name} reference posterior: NUTS chains may not have converged "
            f"(max split R-hat {worst:.3f} > {threshold}); increase num_warmup or num_chains",
            RuntimeWarning,
            stacklevel=3,
        )
