"""NUTS (numpyro) on an exact log-posterior, used for the reference posteriors of MCMC tasks."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import split_gelman_rubin
from numpyro.distributions.transforms import biject_to
from numpyro.infer.hmc import hmc

from jaxhep.checks import warn_caller

from .base import check_num


def nuts_reference(
    key,
    log_likelihood,
    data,
    prior,
    num_samples: int,
    *,
    num_chains: int = 10,
    num_warmup: int = 1000,
    thinning: int = 2,
    num_init_candidates: int = 20_000,
    dense_mass: bool = True,
    rhat_transform=None,
):
    """Sample an exact posterior with several NUTS chains started from importance-resampled prior draws.

    The chains run in the prior support's unconstrained space (numpyro's `biject_to`), with
    the log-Jacobian added, using numpyro's NUTS kernel (step size and mass matrix adapted
    during warm-up) inside one jitted, vmapped `lax.scan`. Starting points are drawn without
    replacement from `num_init_candidates` prior draws with weights proportional to the
    likelihood, which spreads the chains over the posterior modes.

    Arguments:
        key: PRNG key.
        log_likelihood: `log_likelihood(theta, data) -> scalar` for one theta of shape (d,);
            a module-level function, so that the compiled sampler is reused across calls.
        data: a pytree of arrays (the observation and any task arrays).
        prior: the numpyro prior (its log-density, support and the starting candidates).
        num_samples: number of samples to return (rounded up per chain, then cut).
        num_chains: number of chains, run vectorised.
        num_warmup: warm-up (adaptation) steps per chain.
        thinning: keep every `thinning`-th step.
        num_init_candidates: prior draws to choose the starting points from.
        dense_mass: adapt a dense mass matrix.
        rhat_transform: applied to the samples before R-hat (e.g. to fold exact symmetries,
            so that chains sitting in mirror-image modes do not count as unconverged).

    Returns:
        `(samples, r_hat)`: samples of shape (num_samples, d), pooled over chains in chain
        order, and the split R-hat of each coordinate.
    """
    num_samples = check_num(num_samples, "num_samples")
    num_chains = check_num(num_chains, "num_chains")
    num_warmup = check_num(num_warmup, "num_warmup")
    k_init, k_choice, k_mcmc = jax.random.split(key, 3)

    candidates = prior.sample(k_init, (num_init_candidates,))
    logw = jax.vmap(log_likelihood, in_axes=(0, None))(candidates, data)
    logw = jnp.where(jnp.isfinite(logw), logw, -jnp.inf)
    probs = jax.nn.softmax(logw)
    # Without replacement needs enough candidates with non-zero weight; else allow repeats.
    replace = bool(jnp.sum(probs > 0) < num_chains)
    idx = jax.random.choice(k_choice, num_init_candidates, (num_chains,), replace=replace, p=probs)

    per_chain = math.ceil(num_samples / num_chains)
    theta = _run_chains(
        jax.random.split(k_mcmc, num_chains), candidates[idx], data, prior,
        log_likelihood=log_likelihood, num_warmup=num_warmup, num_kept=per_chain,
        thinning=thinning, dense_mass=dense_mass,
    )  # (chains, per_chain, d)
    folded = theta if rhat_transform is None else rhat_transform(theta)
    r_hat = np.asarray(split_gelman_rubin(np.asarray(folded)))
    pooled = theta.reshape(-1, theta.shape[-1])[:num_samples]
    return pooled.astype(jnp.float32), r_hat


@functools.partial(
    jax.jit, static_argnames=("log_likelihood", "num_warmup", "num_kept", "thinning", "dense_mass")
)
def _run_chains(keys, init_theta, data, prior, *, log_likelihood, num_warmup, num_kept, thinning, dense_mass):
    transform = biject_to(prior.support)

    def potential(u, data, prior):
        theta = transform(u)
        log_jac = jnp.sum(transform.log_abs_det_jacobian(u, theta))
        return -(log_likelihood(theta, data) + prior.log_prob(theta) + log_jac)

    def potential_gen(data, prior):
        return lambda u: potential(u, data, prior)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

    def one_chain(key, theta0):
        state = init_kernel(
            transform.inv(theta0), num_warmup, dense_mass=dense_mass, model_args=(data, prior), rng_key=key
        )

        def step(state, _):
            state = sample_kernel(state, model_args=(data, prior))
            return state, state.z

        # Warm-up adaptation happens inside sample_kernel for its first num_warmup calls. One
        # scan over all steps (not one for warm-up and one for sampling) traces NUTS once.
        _, zs = jax.lax.scan(step, state, None, length=num_warmup + num_kept * thinning)
        return transform(zs[num_warmup + thinning - 1 :: thinning])

    return jax.vmap(one_chain)(keys, init_theta)


def warn_if_unconverged(r_hat, task_name: str, threshold: float = 1.05):
    """Warn when any split R-hat exceeds `threshold`."""
    worst = float(np.max(r_hat))
    if not np.isfinite(worst) or worst > threshold:
        warn_caller(
            f"{task_name} reference posterior: NUTS chains may not have converged "
            f"(max split R-hat {worst:.3f} > {threshold}); increase num_warmup or num_chains",
            RuntimeWarning,
        )
