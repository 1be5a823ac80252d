"""NPE against a closed-form posterior, support handling, amortized vmap sweeps and input errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from helpers import NOISE, compilations, conjugate_data

from jaxhep.sbi import NPE, Posterior

SMALL = dict(num_transforms=2, hidden_features=32, batch_size=100, learning_rate=2e-3, max_epochs=60,
             patience=10, progress=False)


@pytest.fixture(scope="module")
def gaussian_posterior():
    theta, x = conjugate_data(8000)
    prior = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    # Enough data and patience that the flow's error sits well inside the tolerances below.
    return NPE(**(SMALL | dict(learning_rate=1e-3, patience=15, max_epochs=100))).fit(
        jax.random.key(1), theta, x, prior=prior)


def test_npe_matches_conjugate_gaussian_posterior(gaussian_posterior):
    post_var = 1.0 / (1.0 + 1.0 / NOISE**2)
    x_obs = jnp.array([[0.5, -1.0], [1.5, 0.3], [-0.8, -0.2]])
    samples = gaussian_posterior.sample(jax.random.key(2), x_obs, (20_000,))
    assert samples.shape == (20_000, 3, 2)
    mean = np.asarray(samples.mean(0))
    std = np.asarray(samples.std(0))
    # A small flow trained on 7200 simulations: its error dominates the Monte Carlo error
    # (about 0.003 here), so these tolerances reflect estimator quality, checked on fixed seeds.
    np.testing.assert_allclose(mean, post_var / NOISE**2 * np.asarray(x_obs), atol=0.08)
    np.testing.assert_allclose(std, np.sqrt(post_var), rtol=0.12)
    # log_prob against the exact Gaussian log-density at the exact posterior mean.
    exact = dist.Normal(post_var / NOISE**2 * x_obs[0], np.sqrt(post_var)).to_event(1)
    pts = exact.sample(jax.random.key(3), (2000,))
    diff = gaussian_posterior.log_prob(pts, x_obs[0]) - exact.log_prob(pts)
    assert float(jnp.abs(jnp.mean(diff))) < 0.1  # the KL-like gap, small when the fit is good


def test_map_finds_the_mode_of_the_learned_and_of_the_true_posterior(gaussian_posterior):
    x_obs = jnp.array([[0.5, -1.0], [1.5, 0.3], [-0.8, -0.2]])
    best = gaussian_posterior.map(jax.random.key(2), x_obs)
    assert best.shape == (3, 2)
    # The true posterior's mode is its mean, 0.8 x. A learned density's mode is less accurate
    # than its mean (0.06-0.08 off here, on Python 3.11 and 3.12): a third of the posterior's sd.
    np.testing.assert_allclose(np.asarray(best), 0.8 * np.asarray(x_obs), atol=0.15)
    # Against a brute-force search of the learned density on a grid of spacing 0.002 around it.
    for b, xo in zip(np.asarray(best)[:1], x_obs[:1]):
        axes = [np.linspace(c - 0.3, c + 0.3, 301) for c in b]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        lp = np.asarray(gaussian_posterior.log_prob(grid, xo))
        assert float(gaussian_posterior.log_prob(b, xo)) >= lp.max() - 1e-5
        np.testing.assert_allclose(b, grid[lp.argmax()], atol=0.01)
    # Bad settings are refused (a single observation is tested with the bounded prior below).
    with pytest.raises(ValueError, match="num_to_optimize .* cannot exceed num_init"):
        gaussian_posterior.map(jax.random.key(3), x_obs, num_init=10, num_to_optimize=20)
    for bad in (0.0, -1.0, float("nan"), True, "0.01"):
        with pytest.raises(ValueError, match="learning_rate must be a positive finite number"):
            gaussian_posterior.map(jax.random.key(3), x_obs, learning_rate=bad)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        gaussian_posterior.map(jax.random.key(3), x_obs, num_steps=0)
    with pytest.raises(ValueError, match="x must be finite"):
        gaussian_posterior.map(jax.random.key(3), x_obs.at[1, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        gaussian_posterior.map(jax.random.key(3), jnp.ones(3))


def test_posterior_is_a_pytree_that_jits_and_vmaps(gaussian_posterior):
    assert isinstance(gaussian_posterior, Posterior)
    assert gaussian_posterior.history.epochs >= 1
    keys = jax.random.split(jax.random.key(4), 5)
    x_batch = jnp.linspace(-1, 1, 10).reshape(5, 2)
    many = jax.jit(jax.vmap(lambda k, xo: gaussian_posterior.sample(k, xo, (300,))))(keys, x_batch)
    assert many.shape == (5, 300, 2)
    # Amortization: each batch member is centred on its own posterior mean.
    np.testing.assert_allclose(np.asarray(many.mean(1)), 0.8 * np.asarray(x_batch), atol=0.12)
    lp = jax.jit(lambda t, xo: gaussian_posterior.log_prob(t, xo))(many[0], x_batch[0])
    assert lp.shape == (300,) and bool(jnp.all(jnp.isfinite(lp)))


def test_a_new_fit_reuses_compiled_log_prob_and_sample():
    # Two fits of equal settings differ only in their weights and training history; the second
    # posterior's log_prob and sample must run the programs compiled for the first.
    theta, x = conjugate_data(600)
    prior = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    settings = dict(num_transforms=2, hidden_features=16, batch_size=100, progress=False)
    first = NPE(**settings, max_epochs=2).fit(jax.random.key(1), theta, x, prior=prior)
    second = NPE(**settings, max_epochs=3).fit(jax.random.key(2), theta, x, prior=prior)
    assert (first.history.epochs, second.history.epochs) == (2, 3)
    x_obs = jnp.array([[0.5, -1.0]])
    first.log_prob(theta[:5], x[:5]).block_until_ready()
    first.sample(jax.random.key(3), x_obs, (7,)).block_until_ready()
    with compilations() as compiles:
        lp = second.log_prob(theta[:5], x[:5])
        draws = second.sample(jax.random.key(3), x_obs, (7,))
        assert compiles == []
        assert not np.allclose(lp, first.log_prob(theta[:5], x[:5]))  # other weights, same program
        # The listener does see compilations: a new batch shape needs its own program.
        second.log_prob(theta[:6], x[:6]).block_until_ready()
        assert len(compiles) >= 1
    assert draws.shape == (7, 1, 2)


def test_bounded_prior_keeps_all_mass_inside_the_support():
    """A posterior piled against a prior bound (sbi's leakage case) never leaves the box."""
    low, high = jnp.array([0.0, -1.0]), jnp.array([1.0, 1.0])
    prior = dist.Uniform(low, high).to_event(1)
    theta = prior.sample(jax.random.key(5), (3000,))
    x = theta + 0.3 * jax.random.normal(jax.random.key(6), theta.shape)
    post = NPE(**SMALL).fit(jax.random.key(7), theta, x, prior=prior)
    x_obs = jnp.array([1.2, -1.3])  # data beyond the corner of the box
    s = post.sample(jax.random.key(8), x_obs, (10_000,))
    assert bool(jnp.all((s >= low) & (s <= high)))
    assert float(s[:, 0].mean()) > 0.6 and float(s[:, 1].mean()) < -0.4  # mass piles up at the corner
    assert float(post.log_prob(jnp.array([1.5, 0.0]), x_obs)) == -np.inf
    # MAP: inside the box, near the corner where the mass piles up, and higher than any draw.
    best = post.map(jax.random.key(9), x_obs)
    assert best.shape == (2,)
    assert bool(jnp.all((best >= low) & (best <= high))) and float(best[0]) > 0.9 and float(best[1]) < -0.9
    assert float(post.log_prob(best, x_obs)) >= float(post.log_prob(s, x_obs).max())


@pytest.mark.parametrize("estimator", ["maf", "mdn", "nsf_autoregressive"])
def test_other_estimators_train_and_sample(estimator):
    theta, x = conjugate_data(1500, seed=3)
    post = NPE(density_estimator=estimator, **(SMALL | dict(max_epochs=25))).fit(jax.random.key(9), theta, x)
    s = post.sample(jax.random.key(10), jnp.array([1.0, -1.0]), (5000,))
    np.testing.assert_allclose(np.asarray(s.mean(0)), [0.8, -0.8], atol=0.2)


@pytest.mark.parametrize("estimator", ["maf", "nsf_autoregressive", "nsf"])
def test_one_parameter_posteriors_follow_the_observation(estimator):
    # theta ~ N(0, 1), x = theta + N(0, NOISE^2) in one dimension: posterior N(0.8 x, 0.2).
    # (The autoregressive estimators once ignored x entirely when theta had one dimension.)
    theta, x = conjugate_data(1500, seed=4)
    theta, x = theta[:, :1], x[:, :1]
    post = NPE(density_estimator=estimator, **(SMALL | dict(max_epochs=25))).fit(jax.random.key(9), theta, x)
    for xo in (1.0, -1.0):
        s = post.sample(jax.random.key(10), jnp.array([xo]), (5000,))
        assert abs(float(s.mean()) - 0.8 * xo) < 0.2 and abs(float(s.std()) - 0.2 ** 0.5) < 0.15


def test_activation_and_tail_bound_reach_every_estimator():
    """NPE's defaults (tanh, bound 5) and sbi's NSF settings (relu, bound 3) end up in the built networks."""
    from jaxhep.nn import get_activation

    for kw, act, bound in (({}, "tanh", 5.0), (dict(activation="relu", tail_bound=3.0), "relu", 3.0)):
        for estimator in ("nsf", "nsf_autoregressive"):
            block = NPE(density_estimator=estimator, **kw).build(jax.random.key(0), 2, 2).bijection.layer(0)
            layer = block.bijections[0]
            assert layer.transformer.bound == bound
            assert (layer.conditioner if estimator == "nsf" else layer).activation is get_activation(act)
    maf = NPE(density_estimator="maf", activation="relu").build(jax.random.key(0), 2, 2)
    assert maf.bijection.layer(0).bijections[0].activation is get_activation("relu")
    mdn = NPE(density_estimator="mdn", activation="relu").build(jax.random.key(0), 2, 2)
    assert mdn.net.activation is get_activation("relu")


def test_input_errors_and_untouched_inputs():
    theta, x = conjugate_data(300)
    theta, x = np.asarray(theta), np.asarray(x)
    prior = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    with pytest.raises(ValueError, match="density_estimator"):
        NPE(density_estimator="realnvp")
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        NPE(activation="swishy")
    for bound in (0.0, -3.0, float("inf"), "3", True):
        with pytest.raises(ValueError, match="tail_bound must be a positive finite number"):
            NPE(tail_bound=bound)
    # Clipping at 0 trained nothing and at -1 turned every step uphill, silently.
    for clip in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
            NPE(clip_norm=clip)
    with pytest.raises(ValueError, match="same number of rows"):
        NPE(**SMALL).fit(jax.random.key(0), theta, x[:-1], prior=prior)
    with pytest.raises(ValueError, match="prior"):
        NPE(**SMALL).fit(jax.random.key(0), theta, x, prior=dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    with pytest.raises(ValueError, match=r"prior is over shape \(\); .*expand\(\[1\]\)\.to_event\(1\)"):
        NPE(**SMALL).fit(jax.random.key(0), theta[:, :1], x, prior=dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="2-D"):
        NPE(**SMALL).fit(jax.random.key(0), theta[:, 0], x, prior=prior)
    with pytest.raises(ValueError, match="x holds values beyond float32's range"):
        NPE(**SMALL).fit(jax.random.key(0), theta, np.where(np.arange(300)[:, None] == 7, 1e39, x.astype(np.float64)),
                          prior=prior)
    box = dist.Uniform(jnp.zeros(2), jnp.ones(2)).to_event(1)
    with pytest.raises(ValueError, match="outside the prior's support"):
        NPE(**SMALL).fit(jax.random.key(0), theta, x, prior=box)
    x_bad = x.copy()
    x_bad[:5, 0] = np.nan
    before = x_bad.copy()
    with pytest.warns(UserWarning, match="dropped 5 of 300") as caught:
        post = NPE(**(SMALL | dict(max_epochs=2))).fit(jax.random.key(0), theta, x_bad, prior=prior)
    # The warning points at the line above (the user's call), not inside jaxhep or equinox.
    assert {w.filename for w in caught if "dropped" in str(w.message)} == {__file__}
    np.testing.assert_array_equal(x_bad, before)
    with pytest.raises(ValueError, match="layout must be one of"):
        NPE(layout="nflows")
    with pytest.raises(ValueError, match="needs density_estimator='nsf'"):
        NPE(layout="sbi", density_estimator="maf")
    with pytest.raises(ValueError, match="theta_dim >= 2"):
        NPE(**(SMALL | dict(layout="sbi"))).fit(jax.random.key(0), theta[:, :1], x)
    for name, bad in (("learning_rate", float("inf")), ("learning_rate", -1e-3), ("weight_decay", float("inf"))):
        with pytest.raises(ValueError, match=f"{name} must be a"):
            NPE(**(SMALL | {name: bad}))
    with pytest.raises(ValueError, match="finite"):
        post.sample(jax.random.key(0), jnp.array([0.0, jnp.inf]), (10,))
    with pytest.raises(ValueError, match="x must have shape"):
        post.sample(jax.random.key(0), jnp.zeros(3), (10,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NPE(**(SMALL | dict(max_epochs=1))).fit(jax.random.key(0), theta, x, prior=prior)


def test_standardized_set_embedding_matches_location_scale_posterior():
    # x = 8 iid draws of N(mu, sigma^2) with sigma over about two decades (see
    # helpers.location_scale_problem for the exact posterior); the embedding standardises the
    # items within each x and hands on their mean and log spread.
    from helpers import location_scale_problem

    from jaxhep.nn import PermutationInvariant

    prior, theta, x, x_obs, truth = location_scale_problem()
    emb = PermutationInvariant(x.shape[1], 1, out_size=8, width=32, standardize=True, key=jax.random.key(13))
    post = NPE(**(SMALL | dict(max_epochs=150, patience=20)), embedding_net=emb).fit(
        jax.random.key(14), theta, x, prior=prior)
    samples = np.asarray(post.sample(jax.random.key(16), x_obs, (20_000,)))
    assert abs(samples[:, 1].mean() - truth["log_sigma_mean"]) < 0.5 * truth["log_sigma_std"]
    assert 0.75 < samples[:, 1].std() / truth["log_sigma_std"] < 1.4
    assert abs(samples[:, 0].mean() - truth["mu_mean"]) < 0.5 * truth["mu_std"]
    # The location is the sharpest direction (posterior std 0.26 against the prior's 2.9); at
    # this training budget the flow leaves it too wide (1.6x with the 8x50 NPE defaults of session 9, 2.1-2.3x here;
    # NPSE and FMPE get it within 15%, test_npse_fmpe.py), so only its order of magnitude is checked.
    assert samples[:, 0].std() / truth["mu_std"] < 3.0


def test_embedding_net_on_iid_data_matches_conjugate_posterior():
    # theta ~ N(0, I_2); x = 6 iid draws of N(theta, 0.8^2 I), flattened. The posterior is
    # N(sum(x) / (sigma^2 + m), I / (1 + m / sigma^2)); the density sees x only through a
    # permutation-invariant summary trained with it.
    from jaxhep.nn import PermutationInvariant

    m, sigma = 6, 0.8
    k1, k2 = jax.random.split(jax.random.key(4))
    theta = jax.random.normal(k1, (6000, 2))
    x = (theta[:, None, :] + sigma * jax.random.normal(k2, (6000, m, 2))).reshape(6000, 2 * m)
    prior = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    emb = PermutationInvariant(m, 2, out_size=8, width=32, key=jax.random.key(5))
    post = NPE(**(SMALL | dict(learning_rate=1e-3, patience=15, max_epochs=80)), embedding_net=emb).fit(
        jax.random.key(6), theta, x, prior=prior)
    assert post.estimator.base.base.x_dim == 8 and post.x_dim == 2 * m
    x_obs = jnp.array([0.9, -0.3, 1.4, 0.2, 0.4, -0.9, 1.1, 0.1, 0.7, -0.5, 1.3, -0.2])
    samples = np.asarray(post.sample(jax.random.key(7), x_obs, (20_000,)))
    prec = 1.0 + m / sigma**2
    mean = np.asarray(x_obs).reshape(m, 2).sum(0) / sigma**2 / prec
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.08)
    np.testing.assert_allclose(samples.std(0), np.sqrt(1.0 / prec), rtol=0.15)
    with pytest.raises(ValueError, match="embedding network failed"):
        NPE(**SMALL, embedding_net=PermutationInvariant(5, 2, key=jax.random.key(0))).fit(
            jax.random.key(0), theta[:100], x[:100], prior=prior)
    with pytest.raises(TypeError, match="embedding_net"):
        NPE(**SMALL, embedding_net=3)
