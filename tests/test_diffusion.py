"""Score-based diffusion and flow-matching densities checked against closed forms.

The networks are replaced by the exact noise predictor / velocity of a Gaussian target, so the
probability-flow ODE sampler, the reverse-SDE sampler, the exact-trace and Hutchinson
log-densities and the iid score combination can be compared with closed-form answers.
Tolerances: sample means within 5 standard errors (plus a small allowance for the ODE solver),
log-densities to the solver tolerance.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.stats as jst
import numpy as np
import pytest

from jaxhep.bijections import Affine, Invert
from jaxhep.densities import FlowMatching, ScoreDiffusion, Standardized, time_features
from jaxhep.sbi import Posterior, sample_iid
from jaxhep.simulators import get_task
from jaxhep.training import History

D = 2
MU = jnp.array([0.4, -0.6])
_A = jnp.array([[0.9, 0.0], [0.3, 0.5]])
SIGMA = _A @ _A.T
X0 = jnp.zeros(1)


class ExactEps(eqx.Module):
    """Noise predictor -sigma * score of the diffused N(mean, cov) (the network's job, done exactly)."""

    model: ScoreDiffusion
    mean: jax.Array
    cov: jax.Array

    def __call__(self, u, x, t):
        a, s = self.model.alpha_sigma(t)
        theta = u / self.model.input_scale(t)
        cov_t = a**2 * self.cov + s**2 * jnp.eye(self.cov.shape[0])
        return s * jnp.linalg.solve(cov_t, theta - a * self.mean)


class ExactVelocity(eqx.Module):
    """E[theta - (1 - sigma_min) z | theta_t] for a N(mean, cov) target on OT paths."""

    mean: jax.Array
    cov: jax.Array
    sigma_min: float

    def __call__(self, th, x, t):
        b = 1.0 - self.sigma_min
        a = 1.0 - b * t
        eye = jnp.eye(self.cov.shape[0])
        var = a**2 * eye + t**2 * self.cov
        cross = t * self.cov - a * b * eye
        return self.mean + cross @ jnp.linalg.solve(var, th - t * self.mean)


def exact_score_model(sde, mean=MU, cov=SIGMA, x_dim=1, **kw):
    m = ScoreDiffusion(mean.shape[0], x_dim, sde, key=jax.random.key(0), **kw)
    return eqx.tree_at(lambda mm: mm.net, m, ExactEps(m, mean, cov))


def exact_fm_model(sigma_min=1e-3, mean=MU, **kw):
    m = FlowMatching(D, 1, sigma_min=sigma_min, key=jax.random.key(0), **kw)
    return eqx.tree_at(lambda mm: mm.net, m, ExactVelocity(mean, SIGMA, sigma_min))


def data_end_gaussian(model, mean=MU):
    """Closed-form N(mean, cov) of the model's state at its data time."""
    if isinstance(model, FlowMatching):
        return mean, SIGMA + model.sigma_min**2 * jnp.eye(D)
    a, s = model.alpha_sigma(jnp.asarray(model.t_data))
    return a * mean, a**2 * SIGMA + s**2 * jnp.eye(D)


MODELS = {
    # A large sigma_max makes the VE noise N(0, (1 + sigma_max^2) I) close to the true marginal.
    "ve": lambda mean: exact_score_model("ve", mean, sigma_max=100.0, rtol=1e-5, atol=1e-6),
    "vp": lambda mean: exact_score_model("vp", mean, rtol=1e-5, atol=1e-6),
    "fm": lambda mean: exact_fm_model(mean=mean, rtol=1e-5, atol=1e-6),
}


def check_moments(samples, mean, cov, slack=0.01):
    n = samples.shape[0]
    se = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(np.mean(samples, 0) - mean), 5 * se + slack)
    # Var of a sample variance is about 2 var^2 / n for Gaussian data.
    emp = np.cov(np.asarray(samples), rowvar=False)
    sd = np.sqrt((np.diag(cov)[:, None] * np.diag(cov)[None, :] + np.asarray(cov) ** 2) / n)
    np.testing.assert_array_less(np.abs(emp - cov), 5 * sd + slack)


def test_time_features():
    f = time_features(jnp.asarray(0.25), 3)
    expected = [0.25] + [math.sin(math.pi * 2**k * 0.25) for k in range(3)] + \
        [math.cos(math.pi * 2**k * 0.25) for k in range(3)]
    np.testing.assert_allclose(f, expected, atol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_ode_sampler_and_exact_log_prob_match_closed_form(name):
    model = MODELS[name](MU)
    mean, cov = data_end_gaussian(model)
    samples = jax.jit(lambda k: model.sample(k, X0, (2000,)))(jax.random.key(1))
    assert samples.shape == (2000, D)
    check_moments(np.asarray(samples), np.asarray(mean), np.asarray(cov))
    # The diffusion models start from N(0, noise_scale^2 I), the exact marginal at t = 1 only for
    # centred (z-scored) theta: with mean MU it is off by about alpha(1) MU . z (VP: 4e-3 in
    # log-density; VE: MU . z / sigma_max^2). The log-density check therefore uses a centred
    # Gaussian with the same correlated covariance, where all three are exact to solver accuracy.
    centred = MODELS[name](jnp.zeros(D))
    mean0, cov0 = data_end_gaussian(centred, jnp.zeros(D))
    pts = jnp.array([[0.3, -0.5], [1.0, 0.2], [-0.5, -1.5], [2.0, 1.0]])
    lp = jax.jit(lambda p: centred.log_prob(p, X0))(pts)
    ref = jst.multivariate_normal.logpdf(pts, mean0, cov0)
    np.testing.assert_allclose(lp, ref, atol=2e-3)


def test_hutchinson_exact_for_diagonal_jacobian_and_unbiased_otherwise():
    # Diagonal covariance: the velocity's Jacobian is diagonal and e^T J e = tr J for Rademacher e.
    diag = jnp.diag(jnp.array([0.5, 2.0]))
    m = exact_score_model("vp", MU, diag, rtol=1e-5, atol=1e-6)
    pts = jnp.array([[0.1, 0.2], [1.0, -2.0]])
    exact = m.log_prob(pts, X0)
    hutch = m.log_prob_hutchinson(jax.random.key(0), pts, X0)
    np.testing.assert_allclose(hutch, exact, atol=1e-4)
    # Correlated case: single-probe estimates scatter, but their mean is the exact value.
    m = exact_score_model("vp", rtol=1e-5, atol=1e-6)
    pt = jnp.array([0.3, -0.2])
    exact = m.log_prob(pt, X0)
    est = jax.vmap(lambda k: m.log_prob_hutchinson(k, pt, X0))(jax.random.split(jax.random.key(1), 64))
    se = float(jnp.std(est)) / 8.0
    assert float(jnp.std(est)) > 1e-4  # the estimator is genuinely stochastic here
    assert abs(float(jnp.mean(est) - exact)) < 5 * se + 1e-4


@pytest.mark.slow
def test_reverse_sde_sampler_vp():
    m = exact_score_model("vp")
    mean, cov = data_end_gaussian(m)
    samples = jax.jit(lambda k: m.sample_sde(k, X0, 2000, num_steps=200))(jax.random.key(2))
    # Euler-Maruyama has O(step) bias; 300 steps keep it near 1% of the scale.
    check_moments(np.asarray(samples), np.asarray(mean), np.asarray(cov), slack=0.03)


def test_sample_vmaps_over_observations():
    m = MODELS["fm"](MU)
    xs = jnp.zeros((3, 1))
    s = m.sample(jax.random.key(0), xs, (5,))
    assert s.shape == (5, 3, D)
    # Different observations get different keys, hence different draws.
    assert not np.allclose(s[:, 0], s[:, 1])


def _gaussian_linear_npse(task):
    """An 'NPSE posterior' for gaussian_linear whose score is exact, seen through Standardized."""
    d = task.theta_dim
    prior_sd = math.sqrt(task.prior_var)
    post_var = 1.0 / (1.0 / task.prior_var + 1.0 / task.noise_var)

    # Standardised space u = theta / prior_sd: prior N(0, I), posterior N(m(x)/prior_sd, post_var/prior_var I).
    class PosteriorEps(eqx.Module):
        model: ScoreDiffusion

        def __call__(self, u, x, t):
            mean = (post_var / task.noise_var) * x / prior_sd
            cov = (post_var / task.prior_var) * jnp.eye(d)
            return ExactEps(self.model, mean, cov)(u, x, t)

    m = ScoreDiffusion(d, d, "vp", rtol=1e-4, atol=1e-5, key=jax.random.key(0))
    m = eqx.tree_at(lambda mm: mm.net, m, PosteriorEps(m))
    to_base = Invert(Affine(jnp.zeros(d), prior_sd * jnp.ones(d)))
    est = Standardized(m, to_base, jnp.zeros(d), jnp.ones(d))
    hist = History(jnp.zeros(0), jnp.zeros(0), 0, 0, False, 0.0)
    return Posterior(est, hist, "npse")


def test_iid_combination_matches_gaussian_linear_closed_form():
    task = get_task("gaussian_linear")
    post = _gaussian_linear_npse(task)
    theta_true = jnp.full(task.theta_dim, 0.2)
    xs = task.simulator(jax.random.key(3), jnp.broadcast_to(theta_true, (4, task.theta_dim)))
    m = xs.shape[0]
    # Closed form for m iid observations: precision 1/prior_var + m/noise_var.
    var = 1.0 / (1.0 / task.prior_var + m / task.noise_var)
    mean = var * jnp.sum(xs, axis=0) / task.noise_var
    # The single-observation posterior is exact here, so is its check with one observation.
    one = post.sample(jax.random.key(4), xs[0], (2000,))
    m1, c1 = task.posterior_mean_cov(xs[0])
    check_moments(np.asarray(one), np.asarray(m1), np.asarray(c1), slack=0.005)
    cov = var * np.eye(task.theta_dim)
    # With the exact single-observation covariances the GAUSS combination is exact (all Gaussian).
    base = post.estimator.base
    post_cov_base = jnp.broadcast_to(jnp.eye(task.theta_dim) * (c1[0, 0] / task.prior_var), (m,) + c1.shape)
    z = jax.jit(lambda k: base.sample_iid(k, xs, 2000, post_covs=post_cov_base))(jax.random.key(5))
    exact = np.asarray(z) * math.sqrt(task.prior_var)
    check_moments(exact, np.asarray(mean), cov, slack=0.003)
    # The public path estimates those covariances from samples (1000 per observation), which
    # perturbs the weights by a few percent: allow for that on top of the MC error.
    samples = sample_iid(jax.random.key(6), post, xs, 2000)
    assert samples.shape == (2000, task.theta_dim)
    check_moments(np.asarray(samples), np.asarray(mean), cov, slack=0.03)
    # Without the correction, with equal weights, the spread would be wrong; check the variance ratio.
    ratio = np.var(np.asarray(samples), 0) / var
    assert np.all(np.abs(ratio - 1) < 0.25), ratio


class WideInOneDirectionEps(eqx.Module):
    """Single-observation posteriors N((0.8 x_1, 0), diag(0.2, 1.1)) under a N(0, I) prior: exact
    in the first coordinate (x_1 = theta_1 + N(0, 0.25)), 10% wider than the prior in the second,
    which x does not inform (as an estimated posterior may come out)."""

    model: ScoreDiffusion

    def __call__(self, u, x, t):
        mean = jnp.array([0.8, 0.0]) * x
        return ExactEps(self.model, mean, jnp.diag(jnp.array([0.2, 1.1])))(u, x, t)


def test_iid_combination_survives_a_posterior_wider_than_the_prior():
    # With 11 observations, sum_j Lambda_j + (1 - m) Lambda_prior turns negative in the second
    # coordinate unless each precision is kept at least the prior's; the solve then went astray
    # (that coordinate's sd 5.4 at m = 11, 0.34 at m = 30). The factorised posterior
    # p(theta)^(1-m) prod_j p(theta | x_j) has no right answer there (it cannot be normalised in
    # that direction); clipped, the spread grows smoothly with m instead (sd 1.3, 1.7, 2.1, 4.2
    # at m = 5, 11, 15, 30), and the informed first coordinate stays exact.
    m = ScoreDiffusion(2, 2, "vp", key=jax.random.key(0))
    m = eqx.tree_at(lambda mm: mm.net, m, WideInOneDirectionEps(m))
    est = Standardized(m, Invert(Affine(jnp.zeros(2), jnp.ones(2))), jnp.zeros(2), jnp.ones(2))
    post = Posterior(est, History(jnp.zeros(0), jnp.zeros(0), 0, 0, False, 0.0), "npse")
    n = 11
    xs = jnp.stack([0.5 + 0.5 * jax.random.normal(jax.random.key(3), (n,)), jnp.zeros(n)], axis=1)
    samples = np.asarray(sample_iid(jax.random.key(4), post, xs, 2000, num_cov_samples=2000))
    precision = 1.0 + n / 0.25
    mean, sd = float(xs[:, 0].sum()) / 0.25 / precision, 1.0 / math.sqrt(precision)
    # Monte Carlo errors: 0.022 sd for a mean, 1.6% for an sd; the covariances are estimated
    # from 2000 draws each (3% sd), which moves the weights of the combination a little.
    assert abs(samples[:, 0].mean() - mean) < 0.15 * sd and abs(samples[:, 0].std() / sd - 1) < 0.1
    assert 1.0 < samples[:, 1].std() < 2.5 and abs(samples[:, 1].mean()) < 0.3
    with pytest.raises(ValueError, match="num_cov_samples must exceed theta_dim=2"):
        sample_iid(jax.random.key(4), post, xs, 10, num_cov_samples=2)


def test_sample_iid_rejects_non_score_posteriors():
    task = get_task("gaussian_linear")
    post = _gaussian_linear_npse(task)
    with pytest.raises(ValueError, match="x_obs must have shape"):
        sample_iid(jax.random.key(0), post, jnp.zeros(task.x_dim), 10)
    fm = exact_fm_model()
    with pytest.raises(ValueError, match="trained by NPSE"):
        sample_iid(jax.random.key(0), fm, jnp.zeros((2, 1)), 10)


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="unknown sde"):
        ScoreDiffusion(2, 1, "subvp", key=jax.random.key(0))
    with pytest.raises(ValueError, match="sigma_min"):
        ScoreDiffusion(2, 1, "ve", sigma_min=2.0, sigma_max=1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sigma_min"):
        FlowMatching(2, 1, sigma_min=1.5, key=jax.random.key(0))
    m = exact_fm_model()
    with pytest.raises(ValueError, match="num_probes"):
        m.log_prob_hutchinson(jax.random.key(0), jnp.zeros(2), X0, num_probes=0)
    with pytest.raises(ValueError, match="theta must have shape"):
        m.log_prob(jnp.zeros(3), X0)


def test_resnet_network_conditions_every_block_and_is_selectable_by_name():
    from jaxhep.densities import NETWORKS, TimeConditionedResNet

    assert set(NETWORKS) == {"mlp", "resnet"}
    net = TimeConditionedResNet(3, 4, width=16, depth=2, num_frequencies=2, key=jax.random.key(0))
    theta, x = jnp.ones(3), jnp.arange(4.0)
    out = net(theta, x, jnp.asarray(0.3))
    assert out.shape == (3,)
    # x and t reach every residual block through its own context layer.
    assert all(b.context is not None and b.context.weight.shape == (16, 4 + 1 + 4) for b in net.net.blocks)
    assert not np.allclose(np.asarray(out), np.asarray(net(theta, x + 1.0, jnp.asarray(0.3))))
    assert not np.allclose(np.asarray(out), np.asarray(net(theta, x, jnp.asarray(0.7))))
    fm = FlowMatching(3, 4, network="resnet", width=16, depth=2, key=jax.random.key(1))
    assert isinstance(fm.net, TimeConditionedResNet)
    sd = ScoreDiffusion(3, 4, network="resnet", width=16, depth=2, key=jax.random.key(1))
    assert isinstance(sd.net, TimeConditionedResNet)
    with pytest.raises(ValueError, match="unknown network"):
        FlowMatching(3, 4, network="unet", key=jax.random.key(1))
