"""Calibration study: SBC, expected coverage and TARP on posteriors whose coverage is known exactly.

Conjugate Gaussian model in d dimensions: theta ~ N(0, I), x | theta ~ N(theta, s^2 I), whose
posterior is N(x / (1 + s^2), s^2 / (1 + s^2) I). The "posteriors" tested are the exact one and
copies with the standard deviation scaled by a width factor w. For those the expected HPD
coverage at level c is P(chi2_d <= w^2 q_d(c)) with q_d the chi2_d quantile (for d = 2:
1 - (1 - c)^(w^2)), and the marginal central-interval coverage is 2 Phi(w z_c) - 1 with
z_c = Phi^-1((1 + c) / 2). The script records measured against exact curves, SBC p-values and
timings, and draws rank histograms and coverage curves with `jaxhep.plotting`.

Writes <out>/calibration.json and PNGs.

    python experiments/diagnostics_calibration.py --out experiments/results/diagnostics
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from jaxhep.densities import AbstractConditionalDensity
from jaxhep.diagnostics import expected_coverage, sbc_ranks, sbc_uniformity, tarp
from jaxhep.plotting import coverage_curve, rank_histograms


class ScaledGaussianPosterior(AbstractConditionalDensity):
    """Exact posterior of the conjugate model, standard deviation multiplied by `width`."""

    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)
    noise: float = eqx.field(static=True)
    width: jax.Array

    def __init__(self, dim: int, noise: float, width: float):
        self.theta_dim = dim
        self.x_dim = dim
        self.noise = noise
        self.width = jnp.asarray(width, jnp.float32)

    def _moments(self, x):
        s2 = self.noise**2
        return x / (1 + s2), self.width * math.sqrt(s2 / (1 + s2))

    def _log_prob(self, theta, x):
        mean, sd = self._moments(x)
        return jnp.sum(norm.logpdf(theta, mean, sd))

    def _sample(self, key, x):
        mean, sd = self._moments(x)
        return mean + sd * jax.random.normal(key, mean.shape)


def chi2_cdf(q, dim):
    return np.asarray(jax.scipy.special.gammainc(dim / 2.0, np.asarray(q) / 2.0))


def chi2_quantile(p, dim):
    lo, hi = np.zeros_like(p), np.full_like(p, 1e3)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = chi2_cdf(mid, dim) < p
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/results/diagnostics")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=1000, help="posterior draws per observation")
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.7, 1.4])
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    kt, kx, kd = jax.random.split(jax.random.key(2023), 3)
    theta = jax.random.normal(kt, (args.pairs, args.dim))
    x = theta + args.noise * jax.random.normal(kx, (args.pairs, args.dim))
    levels = np.linspace(0.0, 1.0, 21)
    L = args.samples
    results = []
    curves_hpd, exact_hpd, curves_tarp = {}, {}, {}
    for width in args.widths:
        post = ScaledGaussianPosterior(args.dim, args.noise, width)
        timings = {}
        start = time.perf_counter()
        ranks = np.asarray(sbc_ranks(kd, post, theta, x, L))
        timings["sbc_ranks"] = time.perf_counter() - start
        start = time.perf_counter()
        hpd = expected_coverage(kd, post, theta, x, levels, num_posterior_samples=L)
        timings["hpd_coverage"] = time.perf_counter() - start
        start = time.perf_counter()
        central = expected_coverage(kd, post, theta, x, levels, num_posterior_samples=L, method="central")
        timings["central_coverage"] = time.perf_counter() - start
        start = time.perf_counter()
        ecp = tarp(kd, post, theta, x, levels, num_posterior_samples=L)
        timings["tarp"] = time.perf_counter() - start

        hpd_exact = chi2_cdf(width**2 * chi2_quantile(levels, args.dim), args.dim)
        z = np.asarray(norm.ppf((1 + levels) / 2))
        central_exact = np.asarray(2 * norm.cdf(width * z) - 1)
        sd = np.sqrt(levels * (1 - levels) / args.pairs)
        inner = slice(1, -1)
        row = {
            "width": width,
            "sbc_pvalues_chi2": sbc_uniformity(ranks, L).tolist(),
            "sbc_pvalues_ks": sbc_uniformity(ranks, L, method="ks").tolist(),
            "levels": levels.tolist(),
            "hpd_coverage": hpd.tolist(), "hpd_exact": hpd_exact.tolist(),
            "hpd_max_abs_error_in_sd": float(np.max(np.abs(hpd - hpd_exact)[inner] / np.maximum(
                np.sqrt(hpd_exact * (1 - hpd_exact) / args.pairs), 1e-12)[inner])),
            "central_coverage": central.tolist(), "central_exact": central_exact.tolist(),
            "central_max_abs_error": float(np.max(np.abs(central - central_exact[:, None]))),
            "tarp_ecp": ecp.tolist(),
            "tarp_max_abs_deviation_from_diagonal": float(np.max(np.abs(ecp - levels))),
            "binomial_sd_at_0.5": float(sd[10]),
            "seconds_including_compile": timings,
        }
        results.append(row)
        print(f"width {width}: SBC chi2 p {np.round(row['sbc_pvalues_chi2'], 4)}, "
              f"HPD max |measured - exact| = {row['hpd_max_abs_error_in_sd']:.2f} sd, "
              f"TARP max |ecp - level| = {row['tarp_max_abs_deviation_from_diagonal']:.3f}, "
              f"times {{{', '.join(f'{k}: {v:.2f}s' for k, v in timings.items())}}}", flush=True)
        rank_histograms(ranks, os.path.join(args.out, f"calibration_ranks_w{width}.png"), num_posterior_samples=L)
        curves_hpd[f"width {width}"] = hpd
        exact_hpd[f"width {width}"] = hpd_exact
        curves_tarp[f"width {width}"] = ecp

    coverage_curve(levels, curves_hpd, os.path.join(args.out, "calibration_hpd_coverage.png"),
                   num_pairs=args.pairs, exact=exact_hpd)
    coverage_curve(levels, curves_tarp, os.path.join(args.out, "calibration_tarp.png"), num_pairs=args.pairs,
                   ylabel="TARP expected coverage probability")
    with open(os.path.join(args.out, "calibration.json"), "w") as f:
        json.dump({"study": "SBC / coverage / TARP on exact and width-scaled Gaussian posteriors",
                   "pairs": args.pairs, "posterior_samples": L, "dim": args.dim, "noise": args.noise,
                   "rows": results, "jax": jax.__version__,
                   "note": "wall times include compilation and run on a shared, loaded machine"}, f, indent=2)


if __name__ == "__main__":
    main()
