"""Calibration diagnostics for amortised posteriors: SBC ranks, expected coverage, TARP.

Every diagnostic here takes a set of test pairs (theta_i, x_i) drawn from the joint model
(theta_i from the prior, x_i from the simulator at theta_i) and a posterior estimator meeting
the density interface of `jaxhep.densities` (`sample(key, x, sample_shape)` and
`log_prob(theta, x)`). Posterior draws are made for all observations under one jit-compiled
`lax.map` (vectorised in chunks of `batch_size` observations), and each observation is reduced
to a few numbers right away, so memory grows with `batch_size * num_posterior_samples`, not
with the number of test pairs.

A posterior that is exactly the Bayesian posterior yields uniform SBC ranks, an expected
coverage equal to the credibility level, and a TARP curve on the diagonal; the coverage of
over-confident posteriors falls below the diagonal, that of under-confident ones above it.

References:
    Talts et al., "Validating Bayesian inference algorithms with simulation-based calibration"
    (2018). Hermans et al., "A trust crisis in simulation-based inference?" (TMLR 2022).
    Lemos et al., "Sampling-based accuracy testing of posterior estimators for general
    inference" (ICML 2023).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from jaxhep.checks import check_positive_int
from jaxhep.compilation import filter_jit
from jaxhep.nn.init import typed_key

__all__ = ["coverage_summary", "expected_coverage", "sbc_ranks", "sbc_uniformity", "tarp"]


def _check_key(key) -> PRNGKeyArray:
    """A typed key; a raw `jax.random.PRNGKey` is wrapped (the same streams), as `fit` does."""
    try:
        return typed_key(key)
    except TypeError as err:
        raise TypeError(f"key: {err} (from jax.random.key or jax.random.PRNGKey)") from None


def _check_pairs(posterior, theta, x, num_posterior_samples: int, batch_size: int | None):
    for method in ("sample", "log_prob"):
        if not callable(getattr(posterior, method, None)):
            raise TypeError(f"posterior must have a `{method}` method (the density interface of "
                            f"jaxhep.densities); got {type(posterior).__name__}")
    theta = jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    x = jnp.asarray(x)
    if theta.ndim == 1:
        theta = theta[:, None]
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (n, d) (or (n,) for d = 1), got {tuple(theta.shape)}")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (n, ..., c) with one row per test pair, got {tuple(x.shape)}")
    if x.shape[0] != theta.shape[0]:
        raise ValueError(f"theta and x must hold the same number of test pairs; got {theta.shape[0]} "
                         f"thetas and {x.shape[0]} observations")
    if theta.shape[0] == 0:
        raise ValueError("no test pairs were given (theta and x are empty)")
    for name, a in (("theta", theta), ("x", x)):
        bad = ~np.isfinite(np.asarray(a))
        if bad.any():
            raise ValueError(f"{name} must be finite, but {int(bad.sum())} of its {bad.size} entries are NaN or inf")
    check_positive_int("num_posterior_samples", num_posterior_samples)
    check_positive_int("batch_size", batch_size, none_ok=True)
    return theta, x


def _check_levels(levels) -> np.ndarray:
    if levels is None:
        return np.linspace(0.0, 1.0, 21)
    levels = np.asarray(levels, dtype=float)
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(f"levels must be a non-empty 1-d array of credibility levels, got shape {levels.shape}")
    if not np.all((levels >= 0) & (levels <= 1)):
        raise ValueError(f"credibility levels must lie in [0, 1], got {levels}")
    return levels


def _draws(posterior, key, x_i, num_samples, theta_dim):
    samples = posterior.sample(key, x_i, (num_samples,))
    if samples.shape != (num_samples, theta_dim):
        raise ValueError(
            f"posterior.sample(key, x_i, ({num_samples},)) for one observation must return shape "
            f"({num_samples}, {theta_dim}) to match theta; got {tuple(samples.shape)}")
    return samples


@filter_jit
def _map_observations(posterior, stat, keys, theta, x, extra, num_samples, batch_size):
    theta_dim = theta.shape[-1]

    def one(args):
        k, t, xi, e = args
        return stat(posterior, _draws(posterior, k, xi, num_samples, theta_dim), t, xi, e)

    return jax.lax.map(one, (keys, theta, x, extra), batch_size=batch_size)


# Default chunk: about this many posterior draws held in memory at once.
_DRAWS_PER_CHUNK = 2**18


def _run(key, posterior, theta, x, extra, num_samples, batch_size, stat):
    n = theta.shape[0]
    if batch_size is None:
        batch_size = max(1, _DRAWS_PER_CHUNK // int(num_samples))
    batch_size = min(int(batch_size), n)
    keys = jax.random.split(key, n)
    # Pad to a whole number of chunks (repeating the first pair) so that `lax.map` compiles one
    # chunk body instead of a second one for the remainder; the padded results are dropped.
    pad = -n % batch_size
    if pad:
        def padded(a):
            return jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
        keys, theta, x, extra = padded(keys), padded(theta), padded(x), padded(extra)
    out = _map_observations(posterior, stat, keys, theta, x, extra, int(num_samples), int(batch_size))
    return out[:n]


# Each statistic returns -1 for a test pair whose draws (or log-densities) hold NaN or inf:
# comparisons with NaN are all False, which would pass for a rank of 0 or a covered truth.
_BAD = -1


def _rank_stat(posterior, samples, t, xi, extra):
    del posterior, xi, extra
    ranks = jnp.sum(samples < t, axis=0)
    return jnp.where(jnp.all(jnp.isfinite(samples)), ranks, _BAD)


def _hpd_stat(posterior, samples, t, xi, extra):
    lp_samples = posterior.log_prob(samples, xi)
    lp_true = posterior.log_prob(t, xi)
    # Draws as dense as the truth count as above it with probability `extra` ~ U(0, 1): ties
    # have probability zero for a continuous density, but a posterior that is flat where the
    # truth lies (e.g. equal to a uniform prior) would otherwise look under-confident. (A truth
    # outside the posterior's support has log-density -inf, which is a valid answer.)
    above = jnp.sum(lp_samples > lp_true) + extra * jnp.sum(lp_samples == lp_true)
    ok = jnp.all(jnp.isfinite(samples)) & ~jnp.any(jnp.isnan(lp_samples)) & ~jnp.isnan(lp_true)
    return jnp.where(ok, above, _BAD)


def _tarp_stat(posterior, samples, t, xi, extra):
    del posterior, xi
    reference, scale = extra[0], extra[1]
    d_samples = jnp.sum(((samples - reference) / scale) ** 2, axis=-1)
    d_true = jnp.sum(((t - reference) / scale) ** 2)
    # The count, not the fraction: f is formed on the host in float64 (a float32 K / L decided
    # ties with levels that are multiples of 1 / L by rounding).
    return jnp.where(jnp.all(jnp.isfinite(samples)), jnp.sum(d_samples < d_true), _BAD)


def _checked(out, what: str) -> np.ndarray:
    """The per-pair statistics, or a ValueError naming the test pairs whose posterior draws or
    log-densities were not finite."""
    out = np.asarray(out)
    bad = np.flatnonzero(np.any(out.reshape(len(out), -1) == _BAD, axis=1))
    if bad.size:
        raise ValueError(f"the posterior gave non-finite {what} for {bad.size} of the {len(out)} test pairs "
                         f"(the first: pair {int(bad[0])}); its samples and densities must be finite")
    return out


def sbc_ranks(
    key: PRNGKeyArray,
    posterior,
    theta: Float[ArrayLike, "n d"],
    x: Float[ArrayLike, "n c"],
    num_posterior_samples: int = 1000,
    *,
    batch_size: int | None = None,
) -> Int[Array, "n d"]:
    """Simulation-based calibration ranks of the true parameters among posterior draws.

    For each test pair, the rank in dimension j is the number of posterior draws whose j-th
    component lies below the true theta_j. For a calibrated posterior each rank is uniform on
    {0, ..., num_posterior_samples}.

    Arguments:
        key: PRNG key for the posterior draws.
        posterior: an object with `sample(key, x, sample_shape)` (density interface).
        theta: true parameters of the test pairs, shape (n, d), drawn from the prior.
        x: observations simulated at those parameters, shape (n, c).
        num_posterior_samples: posterior draws per observation (L).
        batch_size: observations processed at once under `vmap`; by default as many as keep
            about 2^18 posterior draws in memory.

    Returns:
        Integer ranks in [0, L], shape (n, d).

    Raises:
        ValueError: for mismatched or non-finite inputs, or draws of the wrong shape or not finite.
        TypeError: for a key that is not a JAX PRNG key, or a posterior without the interface.
    """
    key = _check_key(key)
    theta, x = _check_pairs(posterior, theta, x, num_posterior_samples, batch_size)
    extra = jnp.zeros((theta.shape[0],))
    ranks = _run(key, posterior, theta, x, extra, num_posterior_samples, batch_size, _rank_stat)
    _checked(ranks, "draws")
    return ranks


def _kolmogorov_sf(lam: np.ndarray) -> np.ndarray:
    """Survival function of the Kolmogorov distribution, Q(lam) = 2 sum (-1)^(k-1) exp(-2 k^2 lam^2)."""
    lam = np.asarray(lam, dtype=float)
    k = np.arange(1, 101)[:, None]
    terms = 2.0 * (-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * lam[None, :] ** 2)
    q = terms.sum(axis=0)
    # The series converges poorly near zero, where the probability is 1.
    return np.clip(np.where(lam < 0.2, 1.0, q), 0.0, 1.0)


def _ks_pvalue(distance: float, n: int) -> float:
    """Asymptotic Kolmogorov p-value of a KS distance from n draws, with Stephens' correction."""
    sq = math.sqrt(n)
    return float(_kolmogorov_sf(np.array([(sq + 0.12 + 0.11 / sq) * distance]))[0])


def sbc_uniformity(
    ranks: Int[ArrayLike, "n d"],
    num_posterior_samples: int,
    *,
    method: str = "chi2",
    bins: int | None = None,
) -> np.ndarray:
    """p-values of a test that SBC ranks are uniform on {0, ..., L}, one per dimension.

    Arguments:
        ranks: ranks from `sbc_ranks`, shape (n, d) (or (n,) for d = 1).
        num_posterior_samples: L, the number of posterior draws behind each rank.
        method: "chi2" (Pearson's test on a histogram with `bins` bins) or "ks"
            (Kolmogorov-Smirnov against the discrete uniform CDF with the asymptotic Kolmogorov
            distribution and Stephens' small-sample correction; conservative for discrete
            ranks, i.e. p-values are if anything too large).
        bins: histogram bins for "chi2"; by default min(20, L + 1, n // 5), at least 2. Bins
            group consecutive rank values and their expected counts are computed exactly.

    Returns:
        p-values, shape (d,). Small values are evidence against calibration.

    Raises:
        ValueError: for ranks outside [0, L], an unknown method or an invalid number of bins.
    """
    ranks = np.asarray(ranks)
    if np.issubdtype(ranks.dtype, np.integer):
        ranks = ranks.astype(np.int64)  # uint8 / int16 ranks overflowed `ranks * bins` below
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    if ranks.ndim != 2 or ranks.shape[0] == 0:
        raise ValueError(f"ranks must have shape (n, d) with n >= 1, got {ranks.shape}")
    check_positive_int("num_posterior_samples", num_posterior_samples)
    L = int(num_posterior_samples)
    if not np.issubdtype(ranks.dtype, np.integer):
        if not np.all(np.isfinite(ranks)) or not np.all(ranks == np.round(ranks)):
            raise ValueError("ranks must be integers")
        ranks = ranks.astype(np.int64)
    if ranks.min() < 0 or ranks.max() > L:
        raise ValueError(f"ranks must lie in [0, {L}] for L = {L} posterior samples; "
                         f"got values in [{ranks.min()}, {ranks.max()}]")
    n, d = ranks.shape
    if method == "chi2":
        if bins is None:
            bins = max(2, min(20, L + 1, n // 5))
        if not isinstance(bins, (int, np.integer)) or not 2 <= bins <= L + 1:
            raise ValueError(f"bins must be an integer in [2, L + 1 = {L + 1}], got {bins!r}")
        # Rank value r goes to bin floor(r * bins / (L + 1)); count how many values each bin holds.
        values_per_bin = np.bincount(np.arange(L + 1) * bins // (L + 1), minlength=bins)
        expected = n * values_per_bin / (L + 1)
        pvals = []
        for j in range(d):
            observed = np.bincount(ranks[:, j] * bins // (L + 1), minlength=bins)
            stat = np.sum((observed - expected) ** 2 / expected)
            pvals.append(float(jax.scipy.special.gammaincc((bins - 1) / 2.0, stat / 2.0)))
        return np.asarray(pvals)
    if method == "ks":
        cdf_uniform = np.arange(1, L + 2) / (L + 1)
        pvals = []
        for j in range(d):
            ecdf = np.cumsum(np.bincount(ranks[:, j], minlength=L + 1)) / n
            # Both CDFs are step functions on the same support, so the sup is over the support.
            pvals.append(_ks_pvalue(np.max(np.abs(ecdf - cdf_uniform)), n))
        return np.asarray(pvals)
    raise ValueError(f"method must be 'chi2' or 'ks', got {method!r}")


def expected_coverage(
    key: PRNGKeyArray,
    posterior,
    theta: Float[ArrayLike, "n d"],
    x: Float[ArrayLike, "n c"],
    levels: Float[ArrayLike, " k"] | None = None,
    *,
    num_posterior_samples: int = 1000,
    method: str = "hpd",
    batch_size: int | None = None,
) -> np.ndarray:
    """Expected coverage of posterior credible regions at the given credibility levels.

    "hpd": for each test pair, the credibility of the smallest highest-posterior-density region
    containing the true theta is estimated from the number K of posterior draws whose
    log-density exceeds that of the truth (draws of equal density count with a random weight),
    as (K + 1/2) / (L + 1); the coverage at level c is the
    fraction of test pairs where it is below c. "central": per dimension, the truth is covered at level c when its marginal
    posterior quantile (rank + 1/2) / (L + 1) lies within c / 2 of one half.

    A calibrated posterior has coverage equal to the level up to the Monte Carlo error of the n
    test pairs and a discretisation error of at most 1 / (2 (L + 1)) for "hpd" and 1 / (L + 1)
    for "central" (its interval is cut on both sides). Coverage below the level means
    over-confidence.

    Arguments:
        key: PRNG key for the posterior draws.
        posterior: an object with `sample(key, x, sample_shape)` and `log_prob(theta, x)`.
        theta: true parameters of the test pairs, shape (n, d), drawn from the prior.
        x: observations simulated at those parameters, shape (n, c).
        levels: credibility levels in [0, 1]; by default 0, 0.05, ..., 1.
        num_posterior_samples: posterior draws per observation (L).
        method: "hpd" (joint highest-density regions) or "central" (marginal central intervals).
        batch_size: observations processed at once under `vmap`; by default as many as keep
            about 2^18 posterior draws in memory.

    Returns:
        Coverage, shape (k,) for "hpd" and (k, d) for "central".

    Raises:
        ValueError: for mismatched or non-finite inputs, invalid levels or an unknown method.
        TypeError: for a key that is not a JAX PRNG key, or a posterior without the interface.
    """
    key = _check_key(key)
    levels = _check_levels(levels)
    theta, x = _check_pairs(posterior, theta, x, num_posterior_samples, batch_size)
    L = int(num_posterior_samples)
    if method == "hpd":
        key, k_ties = jax.random.split(key)
        ties = jax.random.uniform(k_ties, (theta.shape[0],))
        above = _checked(_run(key, posterior, theta, x, ties, L, batch_size, _hpd_stat),
                         "draws or log-densities")
        # Mid-rank credibility: uniform on {(k + 1/2) / (L + 1)} for a calibrated posterior.
        credibility = (above + 0.5) / (L + 1)
        return np.mean(credibility[None, :] < levels[:, None], axis=1)
    if method == "central":
        extra = jnp.zeros((theta.shape[0],))  # unused by the rank statistic
        ranks = _checked(_run(key, posterior, theta, x, extra, L, batch_size, _rank_stat), "draws")
        quantile = (ranks + 0.5) / (L + 1)
        inside = np.abs(quantile - 0.5)[None, :, :] < levels[:, None, None] / 2
        return np.mean(inside, axis=1)
    raise ValueError(f"method must be 'hpd' or 'central', got {method!r}")


def tarp(
    key: PRNGKeyArray,
    posterior,
    theta: Float[ArrayLike, "n d"],
    x: Float[ArrayLike, "n c"],
    levels: Float[ArrayLike, " k"] | None = None,
    *,
    num_posterior_samples: int = 1000,
    references: Float[ArrayLike, "n d"] | None = None,
    normalize: bool = True,
    batch_size: int | None = None,
) -> np.ndarray:
    """TARP expected coverage probability (Lemos et al. 2023) at the given credibility levels.

    For each test pair a reference point theta_r is chosen; f_i is the fraction of posterior
    draws closer to theta_r than the true theta_i, taken as the mid-rank (K_i + 1/2) / (L + 1) of
    the K_i closer draws out of L (as the "hpd" credibility of `expected_coverage`: K_i / L would
    tie with every level that is a multiple of 1 / L). The expected coverage probability at level
    alpha is the fraction of test pairs with f_i < alpha. With reference points drawn
    independently of the true theta, this equals alpha for every alpha exactly when the
    posterior is correct (Lemos et al. 2023). Over-confidence piles the f_i up near 0 and 1,
    which lifts the curve above the diagonal at low levels and drops it below at high levels;
    under-confidence does the reverse.

    Arguments:
        key: PRNG key for the reference points and the posterior draws.
        posterior: an object with `sample(key, x, sample_shape)`.
        theta: true parameters of the test pairs, shape (n, d), drawn from the prior.
        x: observations simulated at those parameters, shape (n, c).
        levels: credibility levels in [0, 1]; by default 0, 0.05, ..., 1.
        num_posterior_samples: posterior draws per observation (L).
        references: reference points, shape (n, d) or (d,); by default drawn uniformly in the
            bounding box of `theta`.
        normalize: measure distances after scaling each dimension by the range of `theta`
            (otherwise in the raw units of theta).
        batch_size: observations processed at once under `vmap`; by default as many as keep
            about 2^18 posterior draws in memory.

    Returns:
        Expected coverage probability, shape (k,).

    Raises:
        ValueError: for mismatched or non-finite inputs, reference points of the wrong shape or
            invalid levels.
        TypeError: for a key that is not a JAX PRNG key, or a posterior without the interface.
    """
    key = _check_key(key)
    levels = _check_levels(levels)
    theta, x = _check_pairs(posterior, theta, x, num_posterior_samples, batch_size)
    n, d = theta.shape
    k_ref, k_draw = jax.random.split(key)
    low = jnp.min(theta, axis=0)
    high = jnp.max(theta, axis=0)
    span = jnp.where(high > low, high - low, 1.0)
    if references is None:
        references = low + span * jax.random.uniform(k_ref, (n, d), dtype=theta.dtype)
    else:
        references = jnp.asarray(references, dtype=theta.dtype)
        if references.shape == (d,):
            references = jnp.broadcast_to(references, (n, d))
        if references.shape != (n, d):
            raise ValueError(f"references must have shape ({n}, {d}) or ({d},), got {tuple(references.shape)}")
        if not np.all(np.isfinite(np.asarray(references))):
            raise ValueError("references must be finite")
    scale = span if normalize else jnp.ones((d,), theta.dtype)
    extra = jnp.stack([references, jnp.broadcast_to(scale, (n, d))], axis=1)  # (n, 2, d)
    closer = _checked(_run(k_draw, posterior, theta, x, extra, num_posterior_samples, batch_size, _tarp_stat),
                      "draws")
    f = (closer.astype(np.float64) + 0.5) / (int(num_posterior_samples) + 1)
    return np.mean(f[None, :] < levels[:, None], axis=1)


def coverage_summary(
    coverage: Float[ArrayLike, " k"],
    levels: Float[ArrayLike, " k"] | None = None,
    num_pairs: int | None = None,
) -> dict[str, float | None]:
    """Two numbers that sum up a coverage curve: its area to the diagonal and a KS p-value.

    The curve is the output of `tarp` or of `expected_coverage(method="hpd")`: at each level
    alpha, the fraction of the n test pairs whose statistic f_i (TARP's f, or the HPD
    credibility) lies below alpha, i.e. the empirical CDF of the f_i. For a correct posterior
    the f_i are uniform, so the curve is the diagonal up to sampling noise.

    - "atc" (area to curve, the summary of `sbi`'s `check_tarp`, here as an integral so that it
      does not depend on how many levels there are): the trapezoid integral of coverage - alpha
      over the levels in [0.5, 1]. Near 0 for a calibrated posterior; negative for an
      over-confident one and positive for an under-confident one, for both curves (an
      over-confident posterior's HPD coverage is below the diagonal at every level; its TARP
      curve is above it below one half and below it above one half).
    - "ks_statistic": the largest |coverage - alpha| over the given levels, the
      Kolmogorov-Smirnov distance between the f_i and the uniform distribution as seen on
      those levels (a lower bound of the full distance; exact if the levels include every
      value the f_i take).
    - "ks_pvalue": with `num_pairs` = n, the asymptotic Kolmogorov p-value of that distance
      with Stephens' small-sample correction; None without `num_pairs`. Conservative (too
      large) on a coarse grid of levels and for the discrete f_i of few posterior draws.

    Arguments:
        coverage: the curve, shape (k,).
        levels: the levels it was computed at; by default 0, 0.05, ..., 1 (the default of
            `tarp` and `expected_coverage`).
        num_pairs: the number of test pairs behind the curve, for the p-value.

    Returns:
        {"atc": float, "ks_statistic": float, "ks_pvalue": float or None}.

    Raises:
        ValueError: for a curve and levels of different shapes, values outside [0, 1],
            fewer than two levels in [0.5, 1], or a `num_pairs` that is not a positive integer.
    """
    levels = _check_levels(levels)
    cov = np.asarray(coverage, dtype=float)
    if cov.shape != levels.shape:
        raise ValueError(f"coverage must have one value per level: shape {levels.shape}, got {cov.shape} "
                         "(for expected_coverage(method='central'), pass one column at a time)")
    if not np.all((cov >= 0) & (cov <= 1)):
        raise ValueError("coverage values must lie in [0, 1] (NaN is not allowed)")
    if num_pairs is not None:
        check_positive_int("num_pairs", num_pairs)
    order = np.argsort(levels, kind="stable")
    lv, cv = levels[order], cov[order]
    upper = lv >= 0.5
    if np.count_nonzero(upper) < 2:
        raise ValueError(f"the area to curve needs at least two levels in [0.5, 1], got {levels}")
    gap = cv[upper] - lv[upper]
    atc = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(lv[upper])))
    distance = float(np.max(np.abs(cov - levels)))
    pvalue = None if num_pairs is None else _ks_pvalue(distance, int(num_pairs))
    return {"atc": atc, "ks_statistic": distance, "ks_pvalue": pvalue}
