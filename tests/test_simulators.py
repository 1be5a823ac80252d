"""Tests for jaxhep.simulators: the sbibm benchmark tasks checked against exact results.

Tolerances are multiples (5 or 6) of Monte Carlo standard errors at fixed seeds.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxhep import simulators
from jaxhep.simulators.bernoulli_glm import design_matrix, prior_precision, stimulus
from jaxhep.simulators.slcp import _student_t_log_prob

KEY = jax.random.key(0)


def assert_within(actual, expected, tol):
    """|actual - expected| < tol elementwise (tol may be an array, unlike assert_allclose's atol)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    err = np.abs(actual - expected)
    assert np.all(err < tol), f"max |error| / tol = {np.max(err / tol):.3g}: {actual} vs {expected}"

DIMS = {
    "two_moons": (2, 2),
    "gaussian_linear": (10, 10),
    "gaussian_linear_uniform": (10, 10),
    "gaussian_mixture": (2, 2),
    "slcp": (5, 8),
    "slcp_distractors": (5, 100),
    "bernoulli_glm": (10, 10),
    "bernoulli_glm_raw": (10, 100),
}


def test_task_names_and_unknown_name():
    assert set(DIMS) == set(simulators.TASKS)
    with pytest.raises(ValueError, match="two_moons") as err:
        simulators.get_task("three_moons")
    assert "three_moons" in str(err.value)
    with pytest.raises(ValueError, match="unknown task"):
        simulators.get_task(["two_moons"])  # was a TypeError: unhashable type
    with pytest.raises(ValueError, match=r"theta \(5, 2\) and x \(3, 2\) do not broadcast"):
        simulators.get_task("two_moons").log_likelihood(np.zeros((5, 2)), np.zeros((3, 2)))


@pytest.mark.parametrize("name", sorted(DIMS))
def test_shapes_dtypes_support_and_likelihood_finite(name):
    task = simulators.get_task(name)
    assert task.name == name
    assert (task.theta_dim, task.x_dim) == DIMS[name]
    assert task.num_observations == 10
    assert task.prior.event_shape == (task.theta_dim,)

    theta, x = task.simulate(jax.random.key(1), 100)
    assert theta.shape == (100, task.theta_dim) and x.shape == (100, task.x_dim)
    assert theta.dtype == jnp.float32 and x.dtype == jnp.float32
    assert bool(jnp.all(task.prior.support.check(theta)))
    assert bool(jnp.all(jnp.isfinite(x)))
    ll = task.log_likelihood(theta, x)
    assert ll.shape == (100,) and bool(jnp.all(jnp.isfinite(ll)))


@pytest.mark.parametrize("name", ["two_moons", "slcp", "bernoulli_glm"])
def test_simulator_single_batch_jit_vmap_agree(name):
    task = simulators.get_task(name)
    theta = task.prior.sample(jax.random.key(3), (3,))
    keys = jax.random.split(jax.random.key(4), 3)
    batch = task.simulator(jax.random.key(4), theta)  # splits the key the same way
    single = jax.vmap(task.simulator)(keys, theta)
    jitted = jax.jit(task.simulator)(jax.random.key(4), theta)
    assert task.simulator(keys[0], theta[0]).shape == (task.x_dim,)
    np.testing.assert_allclose(np.asarray(batch), np.asarray(single), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(batch), np.asarray(jitted), rtol=1e-5, atol=1e-5)
    # One observation broadcast against many parameters.
    assert task.log_likelihood(theta, batch[0]).shape == (3,)


def test_wrong_shapes_raise():
    task = simulators.get_task("slcp")
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        task.simulator(KEY, jnp.zeros(4))
    with pytest.raises(ValueError, match="n, 5"):
        task.simulator(KEY, jnp.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="x must have shape"):
        task.log_likelihood(jnp.zeros(5), jnp.zeros(7))
    with pytest.raises(ValueError, match="theta must have shape"):
        task.log_likelihood(jnp.zeros(6), jnp.zeros(8))
    with pytest.raises(ValueError, match="positive integer"):
        task.simulate(KEY, 0)
    with pytest.raises(ValueError, match="1..10"):
        task.get_observation(0)
    with pytest.raises(ValueError, match="1..10"):
        task.get_observation(11)
    with pytest.raises(ValueError, match="x_obs"):
        simulators.get_task("gaussian_linear").reference_posterior(KEY, jnp.zeros((2, 10)), 10)


def test_observations_are_deterministic_and_inputs_unmodified():
    task = simulators.get_task("gaussian_mixture")
    t1, x1 = task.get_observation(3)
    t2, x2 = task.get_observation(3)
    np.testing.assert_array_equal(np.asarray(t1), np.asarray(t2))
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    t4, _ = task.get_observation(4)
    assert not np.allclose(np.asarray(t1), np.asarray(t4))
    theta = np.ones((5, 2), dtype=np.float32)
    task.simulator(KEY, theta)
    np.testing.assert_array_equal(theta, 1.0)


def test_observations_do_not_change_under_x64(x64):
    # Drawn in float64, jaxhep's own observations were other numbers (two_moons' first
    # (-0.089, 0.330) instead of (-0.450, -0.071)), and so were their reference posteriors.
    for name in simulators.TASKS:
        task = simulators.get_task(name)
        i = 1 if name != "slcp_distractors" else 2
        theta64, x64_obs = task.get_observation(i, "jaxhep")
        assert task.get_observation(i)[1].dtype == np.float32  # sbibm's, under x64 too
        with jax.enable_x64(False):
            theta32, x32 = task.get_observation(i, "jaxhep")
        assert x64_obs.dtype == np.float32 and theta64.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(x64_obs), np.asarray(x32), err_msg=name)
        np.testing.assert_array_equal(np.asarray(theta64), np.asarray(theta32), err_msg=name)


# ---------------------------------------------------------------- Gaussian tasks


def test_gaussian_linear_simulator_moments():
    task = simulators.get_task("gaussian_linear")
    n = 20_000
    theta = jnp.linspace(-0.5, 0.5, 10)
    x = np.asarray(task.simulator(KEY, jnp.broadcast_to(theta, (n, 10))), dtype=np.float64)
    mean_se = math.sqrt(0.1 / n)
    np.testing.assert_allclose(x.mean(0), np.asarray(theta), atol=5 * mean_se)
    cov = np.cov(x.T)
    # SE of a sample variance is var * sqrt(2 / n); of a covariance, var / sqrt(n).
    np.testing.assert_allclose(np.diag(cov), 0.1, atol=5 * 0.1 * math.sqrt(2 / n))
    off = cov[~np.eye(10, dtype=bool)]
    assert np.max(np.abs(off)) < 5 * 0.1 / math.sqrt(n)


def test_gaussian_linear_log_likelihood_exact():
    task = simulators.get_task("gaussian_linear")
    theta = task.prior.sample(jax.random.key(5), (50,))
    x = task.simulator(jax.random.key(6), theta)
    ours = np.asarray(task.log_likelihood(theta, x))
    ref = [scipy.stats.multivariate_normal(np.asarray(t), 0.1 * np.eye(10)).logpdf(np.asarray(xi)) for t, xi in zip(theta, x)]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_gaussian_linear_likelihood_ratio_identity():
    # For x ~ p(x | theta): E[p(x | theta') / p(x | theta)] = 1 exactly, which ties the
    # normalised log_likelihood to the simulator's distribution.
    task = simulators.get_task("gaussian_linear")
    n = 20_000
    theta = jnp.zeros(10)
    theta2 = theta + 0.05
    x = task.simulator(KEY, jnp.broadcast_to(theta, (n, 10)))
    ratio = np.asarray(jnp.exp(task.log_likelihood(theta2, x) - task.log_likelihood(theta, x)), dtype=np.float64)
    # Var of the ratio is exp(|d|^2 / 0.1) - 1 for Gaussians with covariance 0.1 I.
    se = math.sqrt(math.exp(10 * 0.05**2 / 0.1) - 1) / math.sqrt(n)
    assert abs(ratio.mean() - 1.0) < 5 * se


def test_gaussian_linear_reference_posterior_matches_closed_form():
    task = simulators.get_task("gaussian_linear")
    _, x_obs = task.get_observation(1)
    mean, cov = task.posterior_mean_cov(x_obs)
    np.testing.assert_allclose(np.asarray(mean), 0.5 * np.asarray(x_obs), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cov), 0.05 * np.eye(10), rtol=1e-5)
    n = 10_000
    s = np.asarray(task.reference_posterior(jax.random.key(7), x_obs, n), dtype=np.float64)
    assert s.shape == (n, 10) and s.dtype == np.float64  # cast above; the API returns float32
    np.testing.assert_allclose(s.mean(0), np.asarray(mean), atol=5 * math.sqrt(0.05 / n))
    emp = np.cov(s.T)
    np.testing.assert_allclose(np.diag(emp), 0.05, atol=5 * 0.05 * math.sqrt(2 / n))
    assert np.max(np.abs(emp[~np.eye(10, dtype=bool)])) < 5 * 0.05 / math.sqrt(n)


def test_truncated_gaussian_rejection_matches_truncnorm():
    task = simulators.get_task("gaussian_linear_uniform")
    # Coordinates inside, at the edge and far outside the box (the uniform-proposal branch).
    x_obs = jnp.array([0.0, 0.5, 0.95, -1.0, 1.3, -1.7, 2.5, -3.0, 0.2, -0.4])
    n = 10_000
    s = np.asarray(task.reference_posterior(jax.random.key(8), x_obs, n), dtype=np.float64)
    assert s.shape == (n, 10)
    assert np.all(np.abs(s) <= 1.0)
    std = math.sqrt(0.1)
    for j in range(10):
        a, b = (-1 - float(x_obs[j])) / std, (1 - float(x_obs[j])) / std
        dist = scipy.stats.truncnorm(a, b, loc=float(x_obs[j]), scale=std)
        # Kolmogorov-Smirnov against the exact truncated normal; fixed seed, so this is deterministic.
        assert scipy.stats.kstest(s[:, j], dist.cdf).pvalue > 1e-3, j
        assert abs(s[:, j].mean() - dist.mean()) < 5 * dist.std() / math.sqrt(n)
    mean, cov = task.posterior_mean_cov(x_obs)
    assert_within(s.mean(0), mean, 5 * np.sqrt(np.diag(cov) / n))


def test_gaussian_mixture_likelihood_against_simulator():
    # P(x in A | theta) from simulations equals the integral of exp(log_likelihood) over A.
    task = simulators.get_task("gaussian_mixture")
    theta = jnp.array([1.0, -2.0])
    n = 40_000
    x = np.asarray(task.simulator(KEY, jnp.broadcast_to(theta, (n, 2))))
    for half in (0.1, 0.5, 2.0):
        lo, hi = np.asarray(theta) - half, np.asarray(theta) + half
        freq = np.mean(np.all((x >= lo) & (x <= hi), axis=1))
        g = np.linspace(-half, half, 401)
        gx, gy = np.meshgrid(g + 1.0, g - 2.0, indexing="ij")
        pts = jnp.asarray(np.stack([gx, gy], -1).reshape(-1, 2))
        dens = np.exp(np.asarray(task.log_likelihood(theta, pts), dtype=np.float64)).reshape(401, 401)
        prob = np.trapezoid(np.trapezoid(dens, g, axis=1), g)
        se = math.sqrt(prob * (1 - prob) / n)
        assert abs(freq - prob) < 5 * se + 1e-3, (half, freq, prob)


def test_gaussian_mixture_reference_posterior_matches_closed_form():
    task = simulators.get_task("gaussian_mixture")
    x_obs = jnp.array([9.5, -3.0])  # near the box edge, so truncation matters
    n = 10_000
    s = np.asarray(task.reference_posterior(jax.random.key(9), x_obs, n), dtype=np.float64)
    assert np.all(np.abs(s) <= 10.0)
    mean, cov = task.posterior_mean_cov(x_obs)
    assert_within(s.mean(0), mean, 5 * np.sqrt(np.diag(cov) / n))
    # Variance SE from the fourth moment of the samples.
    for j in range(2):
        c = s[:, j] - s[:, j].mean()
        se = math.sqrt((np.mean(c**4) - np.mean(c**2) ** 2) / n)
        assert abs(np.var(s[:, j]) - cov[j, j]) < 5 * se
    # Half the mass is in the narrow component (std 0.1): about half the draws within 0.3.
    near = np.mean(np.all(np.abs(s - np.asarray(x_obs)) < 0.3, axis=1))
    assert near > 0.45


# ---------------------------------------------------------------- two moons


def test_two_moons_radius_and_angle_distribution():
    task = simulators.get_task("two_moons")
    theta = jnp.array([0.3, -0.6])
    n = 20_000
    x = np.asarray(task.simulator(KEY, jnp.broadcast_to(theta, (n, 2))), dtype=np.float64)
    z0 = (0.3 - 0.6) / math.sqrt(2)
    z1 = (-0.6 - 0.3) / math.sqrt(2)
    u = x[:, 0] + abs(z0) - 0.25
    v = x[:, 1] - z1
    r = np.hypot(u, v)
    a = np.arctan2(v, u)
    assert abs(r.mean() - 0.1) < 5 * 0.01 / math.sqrt(n)
    assert abs(r.std() - 0.01) < 5 * 0.01 / math.sqrt(2 * n)
    # The angle is uniform on (-pi/2, pi/2).
    assert scipy.stats.kstest(a, scipy.stats.uniform(-math.pi / 2, math.pi).cdf).pvalue > 1e-3


def test_two_moons_likelihood_normalised():
    task = simulators.get_task("two_moons")
    theta = jnp.array([0.3, -0.6])
    center = np.array([0.25 - abs(0.3 - 0.6) / math.sqrt(2), (-0.6 - 0.3) / math.sqrt(2)])
    # An even number of points keeps the grid off the centre, where the density is infinite
    # (integrably: the polar Jacobian 1 / r).
    g = np.linspace(-0.2, 0.2, 1000)
    gx, gy = np.meshgrid(g + center[0], g + center[1], indexing="ij")
    pts = jnp.asarray(np.stack([gx, gy], -1).reshape(-1, 2))
    dens = np.exp(np.asarray(task.log_likelihood(theta, pts), dtype=np.float64)).reshape(gx.shape)
    total = np.trapezoid(np.trapezoid(dens, g, axis=1), g)
    assert abs(total - 1.0) < 5e-3


def test_two_moons_reference_posterior_matches_grid_posterior():
    task = simulators.get_task("two_moons")
    _, x_obs = task.get_observation(2)
    n = 10_000
    s = np.asarray(task.reference_posterior(jax.random.key(10), x_obs, n), dtype=np.float64)
    assert s.shape == (n, 2) and np.all(np.abs(s) <= 1.0)
    # Exact posterior on a fine grid: likelihood times the uniform prior, normalised numerically.
    g = np.linspace(-1, 1, 1201)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([gx, gy], -1).reshape(-1, 2))
    logp = np.asarray(task.log_likelihood(pts, x_obs), dtype=np.float64).reshape(gx.shape)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = np.array([np.sum(w * gx), np.sum(w * gy)])
    sd = np.sqrt(np.array([np.sum(w * gx**2), np.sum(w * gy**2)]) - mean**2)
    assert_within(s.mean(0), mean, 5 * sd / math.sqrt(n) + 2e-3)
    assert_within(s.std(0), sd, 5 * sd / math.sqrt(2 * n) + 2e-3)
    # Both halves of the fold (theta_1 + theta_2 of either sign) get half the mass each.
    frac = np.mean(s.sum(1) > 0)
    frac_grid = np.sum(w * (gx + gy > 0))
    assert abs(frac - frac_grid) < 5 * math.sqrt(0.25 / n) + 2e-3


# ---------------------------------------------------------------- SLCP


def test_slcp_likelihood_and_simulator_covariance():
    task = simulators.get_task("slcp")
    theta = jnp.array([0.5, -1.0, 1.2, -0.8, 0.7])
    s1, s2, rho = 1.2**2, 0.8**2, math.tanh(0.7)
    cov = np.array([[s1**2 + 1e-6, rho * s1 * s2], [rho * s1 * s2, s2**2 + 1e-6]])
    n = 10_000
    x = np.asarray(task.simulator(KEY, jnp.broadcast_to(theta, (n, 5))), dtype=np.float64).reshape(n * 4, 2)
    assert_within(x.mean(0), [0.5, -1.0], 5 * np.sqrt(np.diag(cov) / (4 * n)))
    emp = np.cov(x.T)
    # SE of a covariance entry (i, j) for Gaussians: sqrt((S_ii S_jj + S_ij^2) / N).
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / (4 * n))
    assert np.all(np.abs(emp - cov) < 5 * se)
    # Exact log-likelihood against scipy's Gaussian density, including at flipped signs.
    xs = jnp.asarray(x[:8].reshape(2, 8))
    ref = [scipy.stats.multivariate_normal([0.5, -1.0], cov).logpdf(np.asarray(xi).reshape(4, 2)).sum() for xi in xs]
    np.testing.assert_allclose(np.asarray(task.log_likelihood(theta, xs)), ref, rtol=1e-4)
    flipped = theta.at[2].multiply(-1).at[3].multiply(-1)
    np.testing.assert_allclose(np.asarray(task.log_likelihood(flipped, xs)), ref, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(simulators.TASKS))
def test_declared_iid_items_are_an_exact_symmetry(name):
    # A task that declares x to be a set of iid items has a likelihood invariant to reordering
    # the items; slcp is the only one of these tasks that does.
    task = simulators.get_task(name)
    assert (task.iid_items is not None) == (name == "slcp")
    if task.iid_items is None:
        return
    count, size = task.iid_items
    assert count * size == task.x_dim and count > 1
    theta = task.prior.sample(KEY, (6,))
    x = task.simulator(jax.random.key(1), theta)
    order = jnp.array([2, 0, 3, 1])[:count] if count == 4 else jnp.arange(count)[::-1]
    shuffled = x.reshape(6, count, size)[:, order].reshape(6, -1)
    assert not np.allclose(np.asarray(shuffled), np.asarray(x))
    np.testing.assert_allclose(np.asarray(task.log_likelihood(theta, shuffled)),
                               np.asarray(task.log_likelihood(theta, x)), rtol=1e-5)


def test_slcp_mcmc_reference_matches_importance_sampling():
    task = simulators.get_task("slcp")
    _, x_obs = task.get_observation(2)
    n = 2_000
    s = np.asarray(task.reference_posterior(jax.random.key(11), x_obs, n, num_chains=4, num_warmup=300), dtype=np.float64)
    assert s.shape == (n, 5) and np.all(np.abs(s) <= 3.0)
    # All four sign modes of (theta_3, theta_4), each with a quarter of the mass.
    quadrant = 2 * (s[:, 2] > 0) + (s[:, 3] > 0)
    counts = np.bincount(quadrant, minlength=4)
    assert np.all(np.abs(counts - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75))
    # Posterior moments of the sign-folded parameters against self-normalised importance
    # sampling from the prior with the exact likelihood.
    m = 1_000_000
    prior_draws = task.prior.sample(jax.random.key(12), (m,))
    logw = np.asarray(task.log_likelihood(prior_draws, x_obs), dtype=np.float64)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    ess_is = 1.0 / np.sum(w**2)
    assert ess_is > 200
    fold = lambda t: np.concatenate([t[:, :2], np.abs(t[:, 2:4]), t[:, 4:]], axis=1)  # noqa: E731
    p = fold(np.asarray(prior_draws, dtype=np.float64))
    is_mean = w @ p
    is_sd = np.sqrt(w @ (p - is_mean) ** 2)
    f = fold(s)
    # MCMC draws are autocorrelated: allow an effective sample size of n / 10.
    se = is_sd * np.sqrt(1 / ess_is + 10 / n)
    np.testing.assert_array_less(np.abs(f.mean(0) - is_mean), 5 * se)


def test_slcp_distractors_structure():
    task = simulators.get_task("slcp_distractors")
    slcp = simulators.get_task("slcp")
    theta, x_obs = task.get_observation(1)
    theta8, x8 = slcp.get_observation(1)
    np.testing.assert_array_equal(np.asarray(theta), np.asarray(theta8))
    np.testing.assert_allclose(np.asarray(task.informative(x_obs)), np.asarray(x8), rtol=1e-6)
    # The permutation is a bijection of the 100 dimensions.
    assert sorted(np.asarray(task.permutation).tolist()) == list(range(100))
    # The likelihood is slcp's plus a theta-free distractor term.
    thetas = slcp.prior.sample(jax.random.key(13), (4,))
    diff = np.asarray(task.log_likelihood(thetas, x_obs) - slcp.log_likelihood(thetas, x8))
    np.testing.assert_allclose(diff, diff[0], rtol=1e-5)


def test_student_t_log_prob_against_scipy():
    # The distractor components' density, on a well-conditioned factor with negative diagonal
    # entries (sbibm's own 92-d factors have condition numbers up to ~1e19, too ill-conditioned
    # for any float64 reference, which is why this is checked on a small one).
    rng = np.random.default_rng(0)
    L = np.tril(0.3 * rng.normal(size=(5, 5))) + np.diag([1.0, -1.5, 0.8, -0.7, 1.2])
    loc = rng.normal(size=5)
    y = rng.normal(size=(3, 5)) * 2 + loc
    ref = scipy.stats.multivariate_t(loc, L @ L.T, df=2).logpdf(y)
    ours = jax.vmap(_student_t_log_prob, in_axes=(0, None, None))(
        jnp.asarray(y, jnp.float32), jnp.asarray(loc, jnp.float32), jnp.asarray(L, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4)


# ---------------------------------------------------------------- Bernoulli GLM


def test_bernoulli_glm_design_and_statistics():
    X = design_matrix()
    current = stimulus()
    assert X.shape == (100, 10) and np.all(X[:, 0] == 1.0)
    task = simulators.get_task("bernoulli_glm_raw")
    glm = simulators.get_task("bernoulli_glm")
    theta = glm.prior.sample(jax.random.key(15), (3,))
    y = np.asarray(task.simulator(jax.random.key(16), theta))
    assert set(np.unique(y)) <= {0.0, 1.0}
    for yi in y:
        # sbibm's statistics: spike count, then the spike-triggered sum of the stimulus at lags 0..8.
        sta = [np.sum(yi[lag:] * current[: 100 - lag]) for lag in range(9)]
        np.testing.assert_allclose(X.T @ yi, [yi.sum()] + sta, rtol=1e-5, atol=1e-4)
    # Same key, same spikes: the summary task's x is X^T y.
    x = np.asarray(glm.simulator(jax.random.key(16), theta))
    np.testing.assert_allclose(x, y @ X, rtol=1e-5, atol=1e-4)
    # Exact Bernoulli log-pmf of the raw spikes, and the summary likelihood agrees with it.
    p = 1 / (1 + np.exp(-(X.astype(np.float64) @ np.asarray(theta, dtype=np.float64).T)))  # (100, 3)
    ref = np.sum(y.T * np.log(p) + (1 - y.T) * np.log1p(-p), axis=0)
    np.testing.assert_allclose(np.asarray(task.log_likelihood(theta, jnp.asarray(y))), ref, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(glm.log_likelihood(theta, jnp.asarray(x))), ref, rtol=1e-4)


def test_bernoulli_glm_prior_covariance():
    glm = simulators.get_task("bernoulli_glm")
    n = 20_000
    s = np.asarray(glm.prior.sample(jax.random.key(17), (n,)), dtype=np.float64)
    cov = np.linalg.inv(prior_precision().astype(np.float64))
    assert abs(cov[0, 0] - 2.0) < 1e-5  # offset precision 0.5
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(s.T) - cov) < 5 * se)


def test_a_users_edit_of_one_prior_does_not_reach_the_next():
    # The Cholesky factor is computed once per process; each prior must get its own copy.
    glm = simulators.get_task("bernoulli_glm")
    before = float(glm.prior.log_prob(jnp.zeros(10)))
    tril = glm.prior.scale_tril
    if isinstance(tril, np.ndarray) and tril.flags.writeable:
        tril[:] = 0.0
    assert float(simulators.get_task("bernoulli_glm").prior.log_prob(jnp.zeros(10))) == before
    # The public accessors hand out copies; editing them changes nothing that tasks use.
    stimulus()[:] = 0.0
    design_matrix()[:] = 0.0
    assert float(simulators.get_task("bernoulli_glm").prior.log_prob(jnp.zeros(10))) == before
    assert np.any(design_matrix()[:, 1] != 0.0)


@pytest.mark.slow
def test_bernoulli_glm_nuts_matches_importance_sampling():
    glm = simulators.get_task("bernoulli_glm")
    _, x_obs = glm.get_observation(1)
    n = 4_000
    s = np.asarray(glm.reference_posterior(jax.random.key(18), x_obs, n, num_warmup=300), dtype=np.float64)
    # Importance sampling with a Student-t proposal at the Laplace approximation (log-concave
    # posterior, so Newton's method finds the mode).
    X = design_matrix().astype(np.float64)
    P = prior_precision().astype(np.float64)
    xo = np.asarray(x_obs, dtype=np.float64)
    t = np.zeros(10)
    for _ in range(50):
        q = 1 / (1 + np.exp(-X @ t))
        grad = xo - X.T @ q - P @ t
        H = X.T @ (X * (q * (1 - q))[:, None]) + P
        t = t + np.linalg.solve(H, grad)
    cov = np.linalg.inv(H)
    prop = scipy.stats.multivariate_t(t, 1.5 * cov, df=5, seed=19)
    m = 200_000
    d = prop.rvs(m)
    logpost = d @ xo - np.logaddexp(0, d @ X.T).sum(1) - 0.5 * np.einsum("ij,jk,ik->i", d, P, d)
    logw = logpost - prop.logpdf(d)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    ess_is = 1 / np.sum(w**2)
    is_mean = w @ d
    is_sd = np.sqrt(w @ (d - is_mean) ** 2)
    se = is_sd * np.sqrt(1 / ess_is + 4 / n)
    np.testing.assert_array_less(np.abs(s.mean(0) - is_mean), 5 * se)
    np.testing.assert_allclose(s.std(0), is_sd, rtol=0.1)


def test_sbibm_observations_are_consistent_across_tasks():
    """The default observations are sbibm's stored values. The tasks sbibm derives from others
    agree with them exactly as sbibm's files do: slcp_distractors' informative entries are
    slcp's observation, bernoulli_glm's statistics are those of bernoulli_glm_raw's spike train,
    and the true parameters are shared."""
    slcp, distracted = simulators.get_task("slcp"), simulators.get_task("slcp_distractors")
    glm, raw = simulators.get_task("bernoulli_glm"), simulators.get_task("bernoulli_glm_raw")
    tm = simulators.get_task("two_moons")
    # Spot values from sbibm's files (two_moons/files/num_observation_1/*.csv).
    np.testing.assert_array_equal(tm.get_observation(1)[0], np.float32([-0.8176656, -0.5756806]))
    np.testing.assert_array_equal(tm.get_observation(1, "sbibm")[1], np.float32([-0.6396706, 0.16234657]))
    for i in range(1, 11):
        t8, x8 = slcp.get_observation(i)
        t100, x100 = distracted.get_observation(i)
        np.testing.assert_array_equal(np.asarray(t100), np.asarray(t8))
        np.testing.assert_array_equal(np.asarray(distracted.informative(x100)), np.asarray(x8))
        tg, xg = glm.get_observation(i)
        tr, xr = raw.get_observation(i)
        np.testing.assert_array_equal(np.asarray(tr), np.asarray(tg))
        assert set(np.unique(np.asarray(xr)).tolist()) <= {0.0, 1.0}
        np.testing.assert_allclose(np.asarray(raw.sufficient_statistics(xr)), np.asarray(xg), rtol=5e-6, atol=1e-5)
    for name in simulators.TASKS:
        task = simulators.get_task(name)
        theta, x = task.get_observation(10)
        assert theta.shape == (task.theta_dim,) and x.shape == (task.x_dim,)
        assert np.isfinite(float(task.prior.log_prob(theta))) and np.isfinite(float(task.log_likelihood(theta, x)))
        # jaxhep's own draws are another set, still available.
        assert not np.array_equal(np.asarray(task.get_observation(10, "jaxhep")[1]), np.asarray(x))
    with pytest.raises(ValueError, match="source must be one of"):
        tm.get_observation(1, "sbi")
    with pytest.raises(ValueError, match="observation index"):
        tm.get_observation(11, "sbibm")
