"""Diagnostics against closed forms: C2ST vs the Bayes-optimal accuracy, calibration tools on an
exact conjugate-Gaussian posterior and on posteriors with a known, wrong width."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from jaxhep.densities import AbstractConditionalDensity
from jaxhep.diagnostics import (c2st, c2st_scores, coverage_summary, expected_coverage, sbc_ranks, sbc_uniformity,
                                 tarp)

# ---------------------------------------------------------------------------------------------
# C2ST
# ---------------------------------------------------------------------------------------------

# All C2ST tests share one shape (2-d, N_SET samples per set) so the classifier compiles once.
N_SET = 3000
N_PRED = 2 * N_SET  # every sample is predicted exactly once across the folds


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _gaussians(seed: int, shift) -> tuple[np.ndarray, np.ndarray]:
    kx, ky = jax.random.split(jax.random.key(seed))
    X = np.asarray(jax.random.normal(kx, (N_SET, 2)))
    Y = np.asarray(jax.random.normal(ky, (N_SET, 2))) + np.asarray(shift, dtype=np.float32)
    return X, Y


def _binomial_sd(p: float, n: int = N_PRED) -> float:
    return math.sqrt(p * (1.0 - p) / n)


def test_c2st_same_distribution_is_chance_and_inputs_untouched():
    X, Y = _gaussians(0, [0.0, 0.0])
    X_copy, Y_copy = X.copy(), Y.copy()
    acc = c2st(jax.random.key(1), X, Y)
    # Under H0 the held-out labels are independent of the classifier, so with balanced folds the
    # number correct has mean N/2 and variance at most N/4.
    assert abs(acc - 0.5) < 5 * _binomial_sd(0.5)
    assert acc < 0.55
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(Y, Y_copy)
    # Same key, same answer; the per-fold accuracies average to the score.
    accs, epochs = c2st_scores(jax.random.key(1), X, Y)
    assert accs.shape == (5,) and np.all(epochs >= 1)
    assert float(np.mean(accs)) == pytest.approx(acc, abs=1e-6)


def test_c2st_moderate_shift_matches_bayes_optimal_accuracy():
    # N(0, I) vs N(mu, I) with equal priors: the Bayes classifier thresholds the projection on mu
    # halfway, with accuracy Phi(|mu| / 2). A trained classifier cannot beat it beyond the
    # binomial noise and should come close from below.
    mu = np.array([1.0, 0.0])
    bayes = _phi(np.linalg.norm(mu) / 2)
    X, Y = _gaussians(2, mu)
    acc = c2st(jax.random.key(3), X, Y)
    assert abs(acc - bayes) < 5 * _binomial_sd(bayes), (acc, bayes)


def test_c2st_clearly_different_distributions():
    # |mu| = 3 sqrt(2): the Bayes accuracy is Phi(2.12) = 0.983. (In 1-d, N(0,1) vs N(3,1) has
    # Bayes accuracy Phi(1.5) = 0.933, so no classifier could pass 0.95 there.)
    mu = np.array([3.0, 3.0])
    bayes = _phi(np.linalg.norm(mu) / 2)
    X, Y = _gaussians(4, mu)
    acc = c2st(jax.random.key(5), X, Y)
    assert acc > 0.95
    assert abs(acc - bayes) < 5 * _binomial_sd(bayes), (acc, bayes)


def test_c2st_is_invariant_to_affine_rescaling_through_z_scoring():
    # z-scoring with X's statistics makes the test blind to a common affine map of both sets,
    # up to float rounding: the folds, initialisation and shuffles are the same.
    X, Y = _gaussians(2, [1.0, 0.0])
    scale, offset = np.array([100.0, 0.01], np.float32), np.array([5.0, -3.0], np.float32)
    a = c2st(jax.random.key(3), X, Y)
    b = c2st(jax.random.key(3), X * scale + offset, Y * scale + offset)
    assert abs(a - b) < 5 * _binomial_sd(0.7)
    # float64 data with a large offset: standardised before the float32 cast (a float32 copy
    # of 1e5 + 1e-3 * v held a single value, and the score was 0.5).
    far = [np.float64(1e5) + 1e-3 * np.asarray(v, np.float64) for v in (X, Y)]
    assert len(np.unique(far[0][:, 0].astype(np.float32))) < 10
    c = c2st(jax.random.key(3), *far)
    assert abs(a - c) < 5 * _binomial_sd(0.7)


def test_c2st_runs_under_x64(x64):
    """The classifier trains in float32 whatever JAX's default (its loop carry changed type
    under x64 before, a TypeError)."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(300, 1)), rng.normal(size=(300, 1)) + 3.0
    assert c2st(0, X, Y) > 0.85  # Bayes accuracy Phi(1.5) = 0.933


def test_c2st_unequal_set_sizes_match_bayes_with_unequal_priors():
    # 4000 draws of N(0, I) against 2000 of N(e_1, I): class priors 2/3 and 1/3. The Bayes rule
    # says "Y" when the first coordinate exceeds t = 1/2 + log 2, with accuracy
    # 2/3 Phi(t) + 1/3 (1 - Phi(t - 1)); stratified folds keep these priors in every test fold.
    # (6000 rows in 2-d, like the other tests, so the compiled classifier is reused.)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 2)).astype(np.float32)
    Y = (rng.normal(size=(2000, 2)) + [1.0, 0.0]).astype(np.float32)
    t = 0.5 + math.log(2.0)
    bayes = 2 / 3 * _phi(t) + 1 / 3 * (1 - _phi(t - 1))
    acc = c2st(jax.random.key(8), X, Y)
    assert abs(acc - bayes) < 5 * _binomial_sd(bayes), (acc, bayes)


def test_c2st_rejects_bad_input():
    X = np.zeros((50, 2))
    with pytest.raises(ValueError, match="same dimension"):
        c2st(jax.random.key(0), X, np.zeros((50, 3)))
    bad = np.ones((50, 2))
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        c2st(jax.random.key(0), X, bad)
    with pytest.raises(ValueError, match="shape"):
        c2st(jax.random.key(0), np.zeros((5, 2, 2)), np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match="at least n_folds"):
        c2st(jax.random.key(0), np.zeros((3, 2)), np.zeros((50, 2)))
    with pytest.raises(ValueError, match="n_folds"):
        c2st(jax.random.key(0), X, X, n_folds=1)
    with pytest.raises(TypeError, match="key"):
        c2st("seed", X, X)


def test_c2st_matches_sklearn_reference():
    """Same definition, two implementations: agree within the noise of two independent runs."""
    sklearn = pytest.importorskip("sklearn")
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    del sklearn
    X, Y = _gaussians(2, [1.0, 0.0])
    mean, std = X.mean(0), X.std(0, ddof=1)
    data = np.concatenate([(X - mean) / std, (Y - mean) / std])
    target = np.concatenate([np.zeros(len(X)), np.ones(len(Y))])
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(20, 20), max_iter=10000, solver="adam",
                        random_state=0)
    ref = cross_val_score(clf, data, target, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                          scoring="accuracy").mean()
    ours = c2st(jax.random.key(3), X, Y)
    assert abs(ours - ref) < 5 * math.sqrt(2) * _binomial_sd(ref), (ours, ref)


# ---------------------------------------------------------------------------------------------
# Calibration: conjugate Gaussian model theta ~ N(0, S0^2 I), x | theta ~ N(theta, S^2 I).
# The exact posterior is N(w x, v I) with w = S0^2 / (S0^2 + S^2), v = S0^2 S^2 / (S0^2 + S^2).
# ---------------------------------------------------------------------------------------------

S0, S = 1.0, 0.5
D = 2
N_PAIRS = 1000
L = 100


class GaussianPosterior(AbstractConditionalDensity):
    """The exact posterior with its standard deviation multiplied by `width` (1 = exact)."""

    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)
    width: jax.Array

    def __init__(self, width: float):
        self.theta_dim = D
        self.x_dim = D
        # An array, not a float, so every width shares one compiled program.
        self.width = jnp.asarray(width, jnp.float32)

    def _moments(self, x):
        w = S0**2 / (S0**2 + S**2)
        sd = math.sqrt(S0**2 * S**2 / (S0**2 + S**2))
        return w * x, self.width * sd

    def _log_prob(self, theta, x):
        mean, sd = self._moments(x)
        return jnp.sum(norm.logpdf(theta, mean, sd))

    def _sample(self, key, x):
        mean, sd = self._moments(x)
        return mean + sd * jax.random.normal(key, mean.shape)


@pytest.fixture(scope="module")
def pairs():
    kt, kx = jax.random.split(jax.random.key(10))
    theta = S0 * jax.random.normal(kt, (N_PAIRS, D))
    x = theta + S * jax.random.normal(kx, (N_PAIRS, D))
    return theta, x


LEVELS = np.linspace(0.1, 0.9, 9)
# Every evaluation runs in chunks of 300 pairs, so the last of four chunks is padded: a
# misalignment of padded results would break the closed-form checks below.
CHUNK = 300


def _coverage_tolerance(p):
    # 4 binomial standard deviations of n test pairs plus the discretisation of L draws.
    return 4 * np.sqrt(p * (1 - p) / N_PAIRS) + 1.0 / (L + 1)


def _hpd_coverage_closed_form(levels, width):
    # With posterior sd scaled by `width`, the truth's squared Mahalanobis distance under the
    # reported posterior is chi2_D / width^2; for D = 2, P(chi2_2 <= q) = 1 - exp(-q / 2) and the
    # level-c HPD region is {chi2 <= -2 log(1 - c)}, so the coverage is 1 - (1 - c)^(width^2).
    return 1.0 - (1.0 - levels) ** (width**2)


def _central_coverage_closed_form(levels, width):
    z = np.array([_inverse_phi(0.5 + c / 2) for c in levels])
    return np.array([2 * _phi(width * zi) - 1 for zi in z])


def _inverse_phi(p):
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _phi(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


def test_sbc_ranks_uniform_for_exact_posterior(pairs):
    theta, x = pairs
    ranks = sbc_ranks(jax.random.key(11), GaussianPosterior(1.0), theta, x, L, batch_size=CHUNK)
    assert ranks.shape == (N_PAIRS, D)
    assert int(ranks.min()) >= 0 and int(ranks.max()) <= L
    # Mean rank of a uniform on {0..L} is L/2 with sd sqrt(((L+1)^2 - 1) / 12 / n).
    sd_mean = math.sqrt(((L + 1) ** 2 - 1) / 12 / N_PAIRS)
    assert np.all(np.abs(np.asarray(ranks).mean(0) - L / 2) < 4 * sd_mean)
    assert np.all(sbc_uniformity(ranks, L) > 1e-3)
    assert np.all(sbc_uniformity(ranks, L, method="ks") > 1e-3)


@pytest.mark.parametrize("width", [0.5, 2.0])
def test_sbc_detects_wrong_width(pairs, width):
    theta, x = pairs
    ranks = sbc_ranks(jax.random.key(11), GaussianPosterior(width), theta, x, L, batch_size=CHUNK)
    assert np.all(sbc_uniformity(ranks, L) < 1e-6)
    assert np.all(sbc_uniformity(ranks, L, method="ks") < 1e-6)
    # Over-confidence piles ranks into the extreme bins; under-confidence into the middle.
    extreme = np.mean((np.asarray(ranks) < L // 10) | (np.asarray(ranks) > L - L // 10))
    assert (extreme > 0.3) if width < 1 else (extreme < 0.1)


def test_sbc_uniformity_on_exactly_uniform_and_degenerate_ranks():
    # Every rank value equally often: the chi2 statistic is 0 (p = 1) and the KS distance tiny.
    ranks = np.tile(np.arange(L + 1), 10)[:, None]
    assert sbc_uniformity(ranks, L)[0] == pytest.approx(1.0)
    assert sbc_uniformity(ranks, L, method="ks")[0] > 0.99
    # Small integer dtypes give the same p-values (uint8 overflowed `ranks * bins` before).
    assert sbc_uniformity(ranks.astype(np.uint8), L)[0] == pytest.approx(1.0)
    assert sbc_uniformity(ranks.astype(np.int16), L, bins=L + 1)[0] == pytest.approx(1.0)
    # All ranks zero: maximal evidence against uniformity.
    zeros = np.zeros((500, 1), dtype=int)
    assert sbc_uniformity(zeros, L)[0] < 1e-12
    assert sbc_uniformity(zeros, L, method="ks")[0] < 1e-12
    with pytest.raises(ValueError, match="lie in"):
        sbc_uniformity(np.array([[L + 1]]), L)
    with pytest.raises(ValueError, match="method"):
        sbc_uniformity(ranks, L, method="anderson")


@pytest.mark.parametrize("width", [1.0, 0.5, 2.0])
def test_hpd_coverage_matches_closed_form(pairs, width):
    theta, x = pairs
    cov = expected_coverage(jax.random.key(12), GaussianPosterior(width), theta, x, LEVELS,
                            num_posterior_samples=L, batch_size=CHUNK)
    truth = _hpd_coverage_closed_form(LEVELS, width)
    assert cov.shape == LEVELS.shape
    np.testing.assert_array_less(np.abs(cov - truth), _coverage_tolerance(truth))
    if width < 1:
        assert np.all(cov < LEVELS - 4 * np.sqrt(LEVELS * (1 - LEVELS) / N_PAIRS))


class FlatPosterior(AbstractConditionalDensity):
    """Uniform on [-1, 1]^D whatever x: the exact posterior when x carries no information and
    the prior is that box. Every draw is exactly as dense as the truth."""

    theta_dim: int = eqx.field(static=True, default=D)
    x_dim: int = eqx.field(static=True, default=D)

    def _log_prob(self, theta, x):
        return jnp.where(jnp.all(jnp.abs(theta) <= 1.0), -D * jnp.log(2.0), -jnp.inf)

    def _sample(self, key, x):
        return jax.random.uniform(key, (D,), minval=-1.0, maxval=1.0)


def test_hpd_coverage_of_a_flat_exact_posterior_is_the_level():
    # Ties between the truth's density and the draws' are broken at random: counted as all
    # "not above", this exact posterior showed coverage 1 at every level.
    theta = jax.random.uniform(jax.random.key(13), (N_PAIRS, D), minval=-1.0, maxval=1.0)
    x = jax.random.normal(jax.random.key(14), (N_PAIRS, D))
    cov = expected_coverage(jax.random.key(15), FlatPosterior(), theta, x, LEVELS, num_posterior_samples=L,
                            batch_size=CHUNK)
    np.testing.assert_array_less(np.abs(cov - LEVELS), _coverage_tolerance(LEVELS))


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_central_coverage_matches_closed_form(pairs, width):
    theta, x = pairs
    cov = expected_coverage(jax.random.key(13), GaussianPosterior(width), theta, x, LEVELS,
                            num_posterior_samples=L, method="central",
                            batch_size=CHUNK)
    assert cov.shape == (LEVELS.size, D)
    truth = np.broadcast_to(_central_coverage_closed_form(LEVELS, width)[:, None], cov.shape)
    np.testing.assert_array_less(np.abs(cov - truth), _coverage_tolerance(truth))


def test_tarp_diagonal_for_exact_posterior_and_s_shape_for_overconfident(pairs):
    theta, x = pairs
    ecp = tarp(jax.random.key(14), GaussianPosterior(1.0), theta, x, LEVELS, num_posterior_samples=L,
               batch_size=CHUNK)
    np.testing.assert_array_less(np.abs(ecp - LEVELS), _coverage_tolerance(LEVELS))
    # A too-narrow posterior puts f near 0 or 1 (all draws sit at one distance from the
    # reference): above the diagonal at low levels, below it at high levels.
    ecp = tarp(jax.random.key(14), GaussianPosterior(0.5), theta, x, LEVELS, num_posterior_samples=L,
               batch_size=CHUNK)
    sd = np.sqrt(LEVELS * (1 - LEVELS) / N_PAIRS)
    assert ecp[0] > LEVELS[0] + 5 * sd[0]
    assert ecp[-1] < LEVELS[-1] - 5 * sd[-1]


def test_calibration_input_checks(pairs):
    theta, x = pairs
    post = GaussianPosterior(1.0)
    with pytest.raises(ValueError, match="same number"):
        sbc_ranks(jax.random.key(0), post, theta[:10], x[:11], L)
    bad = np.asarray(theta).copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        expected_coverage(jax.random.key(0), post, bad, x, LEVELS)
    with pytest.raises(ValueError, match="levels"):
        expected_coverage(jax.random.key(0), post, theta, x, [0.5, 1.5])
    with pytest.raises(ValueError, match="method"):
        expected_coverage(jax.random.key(0), post, theta, x, LEVELS, method="box")
    with pytest.raises(ValueError, match="references"):
        tarp(jax.random.key(0), post, theta, x, references=np.zeros((3, D)))
    with pytest.raises(TypeError, match="PRNG key"):
        sbc_ranks(0, post, theta, x, L)
    # A raw key gives the same ranks as its typed form (it was refused before).
    raw = sbc_ranks(jax.random.PRNGKey(5), post, theta[:50], x[:50], L)
    np.testing.assert_array_equal(raw, sbc_ranks(jax.random.wrap_key_data(jax.random.PRNGKey(5)), post,
                                                 theta[:50], x[:50], L))
    # A posterior whose draws and densities are NaN: comparisons with NaN are all False, which
    # passed for rank 0, a covered truth and f = 0 before.
    broken = GaussianPosterior(float("nan"))
    for run in (lambda: sbc_ranks(jax.random.key(0), broken, theta, x, L),
                lambda: expected_coverage(jax.random.key(0), broken, theta, x, LEVELS, num_posterior_samples=L),
                lambda: expected_coverage(jax.random.key(0), broken, theta, x, LEVELS, num_posterior_samples=L,
                                          method="central"),
                lambda: tarp(jax.random.key(0), broken, theta, x, LEVELS, num_posterior_samples=L)):
        with pytest.raises(ValueError, match=f"non-finite .* for {N_PAIRS} of the {N_PAIRS} test pairs"):
            run()
    # Integer theta (a grid of parameters) is taken as float.
    ecp = tarp(jax.random.key(0), post, np.round(np.asarray(theta)).astype(int), x, LEVELS, num_posterior_samples=L)
    assert ecp.shape == LEVELS.shape
    with pytest.raises(TypeError, match="sample"):
        sbc_ranks(jax.random.key(0), object(), theta, x, L)
    with pytest.raises(ValueError, match="theta"):
        # A posterior whose draws do not match theta's dimension.
        sbc_ranks(jax.random.key(0), post, jnp.zeros((N_PAIRS, 3)), x, L)


def test_coverage_summary_separates_exact_from_overconfident_and_underconfident(pairs):
    theta, x = pairs
    levels = np.linspace(0.0, 1.0, 41)
    summary = {}
    for width in (1.0, 0.5, 2.0):
        post = GaussianPosterior(width)
        ecp = tarp(jax.random.key(16), post, theta, x, levels, num_posterior_samples=L, batch_size=CHUNK)
        hpd = expected_coverage(jax.random.key(17), post, theta, x, levels, num_posterior_samples=L,
                                batch_size=CHUNK)
        summary[width] = (coverage_summary(ecp, levels, N_PAIRS), coverage_summary(hpd, levels, N_PAIRS))
    for s in summary[1.0]:
        # For uniform f_i, Var(atc) = (1/n) * int int (min(s, t) - s t) ds dt over [0.5, 1]^2
        # = 0.0260 / n (sd 0.0051 here); 4 sd plus half a step of the mid-rank discretisation.
        assert abs(s["atc"]) < 4 * np.sqrt(0.0260 / N_PAIRS) + 0.5 / (L + 1)
        assert s["ks_pvalue"] > 1e-3
    for s in summary[0.5]:
        assert s["atc"] < -0.03 and s["ks_pvalue"] < 1e-6
    for s in summary[2.0]:
        assert s["atc"] > 0.03 and s["ks_pvalue"] < 1e-6
    # The HPD atc of the too-narrow posterior against its closed form 1 - (1 - c)^(w^2).
    upper = levels[levels >= 0.5]
    gap = _hpd_coverage_closed_form(upper, 0.5) - upper
    exact = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(upper)))
    assert summary[0.5][1]["atc"] == pytest.approx(exact, abs=0.01)


def test_coverage_summary_on_given_curves_and_bad_input():
    levels = np.linspace(0.0, 1.0, 21)
    s = coverage_summary(levels, levels)
    assert s == {"atc": 0.0, "ks_statistic": 0.0, "ks_pvalue": None}
    # A curve 0.1 above the diagonal on [0.5, 1] (clipped at 1): area 0.1 * 0.5 minus the clipped corner.
    curve = np.minimum(levels + 0.1, 1.0)
    s = coverage_summary(curve, None, 100)
    assert s["atc"] == pytest.approx(0.05 - 0.5 * 0.1 * 0.1)
    assert s["ks_statistic"] == pytest.approx(0.1)
    # n = 100 and D = 0.1: lambda = (10 + 0.12 + 0.011) * 0.1, Kolmogorov tail about 0.26.
    assert 0.2 < s["ks_pvalue"] < 0.32
    # Unsorted levels give the same area.
    order = np.random.default_rng(0).permutation(levels.size)
    assert coverage_summary(curve[order], levels[order])["atc"] == pytest.approx(s["atc"])
    with pytest.raises(ValueError, match="one value per level"):
        coverage_summary(np.zeros((21, 2)), levels)
    with pytest.raises(ValueError, match="two levels in"):
        coverage_summary([0.1, 0.2], [0.1, 0.2])
    with pytest.raises(ValueError, match="lie in"):
        coverage_summary(np.full(21, np.nan), levels)
    with pytest.raises(ValueError, match="num_pairs"):
        coverage_summary(curve, levels, 0)
