"""Densities: normalisation, sampling consistent with log_prob, broadcasting, support handling."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import perturb

from jaxhep.bijections import Affine, BoxToReal, Chain, Invert
from jaxhep.densities import AbstractConditionalDensity, MixtureDensityNetwork, Standardized, maf, nsf

X_DIM = 2


def _densities():
    k = jax.random.split(jax.random.key(0), 6)
    return {
        "nsf": perturb(nsf(2, X_DIM, num_transforms=3, hidden_features=16, num_bins=6, key=k[0]), k[1], 0.2),
        "nsf_sbi_layout": perturb(nsf(2, X_DIM, num_transforms=3, hidden_features=16, num_bins=6, layout="sbi",
                                      key=k[3]), k[4], 0.2),
        "nsf_autoregressive": perturb(nsf(2, X_DIM, num_transforms=2, hidden_features=16, num_bins=6,
                                           autoregressive=True, key=k[2]), k[3], 0.2),
        "maf": perturb(maf(2, X_DIM, num_transforms=3, hidden_features=16, key=k[4]), k[5], 0.1),
        "mdn": MixtureDensityNetwork(2, X_DIM, num_components=3, hidden_features=16, key=k[1]),
    }


DENSITIES = _densities()
GRID = np.linspace(-8, 8, 321)


@pytest.mark.parametrize("name", sorted(DENSITIES))
def test_density_integrates_to_one(name):
    q = DENSITIES[name]
    x = jnp.array([0.4, -1.2])
    t1, t2 = np.meshgrid(GRID, GRID, indexing="ij")
    pts = jnp.asarray(np.stack([t1.ravel(), t2.ravel()], axis=1))
    p = np.exp(np.asarray(jax.jit(lambda t, c: q.log_prob(t, c))(pts, x)))
    total = p.sum() * (GRID[1] - GRID[0]) ** 2
    assert abs(total - 1.0) < 5e-3


@pytest.mark.parametrize("name", sorted(DENSITIES))
def test_samples_follow_log_prob(name):
    """Sample means and the mean of log q over samples match grid integrals against q itself."""
    q = DENSITIES[name]
    x = jnp.array([0.4, -1.2])
    t1, t2 = np.meshgrid(GRID, GRID, indexing="ij")
    pts = jnp.asarray(np.stack([t1.ravel(), t2.ravel()], axis=1))
    logp = np.asarray(jax.jit(lambda t, c: q.log_prob(t, c))(pts, x))
    w = np.exp(logp) * (GRID[1] - GRID[0]) ** 2
    mean_grid = (w[:, None] * np.asarray(pts)).sum(0)
    ent_grid = (w * logp).sum()
    n = 20_000
    s = jax.jit(lambda k: q.sample(k, x, (n,)))(jax.random.key(1))
    lp_s = q.log_prob(s, x)
    sd = np.asarray(s).std(0)
    # 5-sigma Monte Carlo tolerances.
    diff = np.abs(np.asarray(s).mean(0) - mean_grid)
    assert np.all(diff < 5 * sd / np.sqrt(n) + 1e-3), (diff, sd)
    assert abs(float(lp_s.mean()) - ent_grid) < 5 * float(lp_s.std()) / np.sqrt(n) + 5e-3


def test_batching_broadcasts_like_single_calls():
    q = DENSITIES["nsf"]
    theta = jax.random.normal(jax.random.key(2), (4, 3, 2))
    x = jax.random.normal(jax.random.key(3), (3, X_DIM))
    lp = q.log_prob(theta, x)
    assert lp.shape == (4, 3)
    np.testing.assert_allclose(lp[2, 1], q._log_prob(theta[2, 1], x[1]), rtol=1e-5)
    s = q.sample(jax.random.key(4), x, (5, 6))
    assert s.shape == (5, 6, 3, 2)
    assert q.sample(jax.random.key(4), x[0]).shape == (2,)


def test_flow_sample_and_log_prob_agree():
    q = DENSITIES["nsf"]
    x = jnp.array([1.0, 0.5])
    theta, lp = q.sample_and_log_prob(jax.random.key(5), x)
    np.testing.assert_allclose(lp, q._log_prob(theta, x), atol=1e-4)


def test_wrong_dimensions_and_nonfinite_x_raise():
    q = DENSITIES["maf"]
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 2\)"):
        q.log_prob(jnp.zeros((5, 3)), jnp.zeros(2))
    with pytest.raises(ValueError, match="x must have shape"):
        q.sample(jax.random.key(0), jnp.zeros(3), (2,))
    with pytest.raises(ValueError, match="finite"):
        q.sample(jax.random.key(0), jnp.array([0.0, jnp.nan]), (2,))
    # A (theta_true, x_obs) pair from a task is not taken for a batch of two observations (both
    # are of size 2 here); a tuple of numbers is still one observation.
    pair = (jnp.array([0.1, 0.2]), jnp.array([0.3, 0.4]))
    with pytest.raises(TypeError, match=r"get_observation\(i\) returns \(theta_true, x_obs\)"):
        q.sample(jax.random.key(0), pair, (2,))
    with pytest.raises(TypeError, match="theta must be one array, got a tuple of 2 arrays"):
        q.log_prob(pair, jnp.zeros(2))
    assert q.sample(jax.random.key(0), (0.3, 0.4), (2,)).shape == (2, 2)
    assert q.sample(jax.random.key(0), jnp.stack(pair), (3,)).shape == (3, 2, 2)


def test_results_do_not_depend_on_the_dtype_of_the_inputs(x64):
    """Under x64, trained (float32) models gave different samples for the same key from a float32
    and a float64 copy of one observation (the MDN's draws took x's dtype: 1.9 apart after three
    epochs of NPE on gaussian_linear), and flow-matching log-densities from ODE solves of
    different precision. Inputs are now taken in JAX's default float dtype."""
    from jaxhep.densities import FlowMatching

    models = {"mdn": DENSITIES["mdn"], "nsf": DENSITIES["nsf"],
              "flow matching": FlowMatching(2, X_DIM, width=8, depth=1, key=jax.random.key(5))}
    # Values that float32 holds exactly: the two copies are the same numbers.
    x = np.array([[0.375, -1.25], [1.0, 2.0]])
    theta = np.array([[0.25, -0.75], [-1.125, 0.5]])
    for name, q in models.items():
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(eqx.filter(q, eqx.is_inexact_array)))
        draws = [np.asarray(q.sample(jax.random.key(1), x.astype(dt), (3,))) for dt in (np.float32, np.float64)]
        assert draws[0].dtype == draws[1].dtype == np.float64, name
        np.testing.assert_array_equal(draws[0], draws[1], err_msg=name)
        lps = [np.asarray(q.log_prob(theta.astype(dt), x.astype(dt))) for dt in (np.float32, np.float64)]
        assert lps[0].dtype == lps[1].dtype == np.float64, name
        np.testing.assert_array_equal(lps[0], lps[1], err_msg=name)
    # Integer observations (counts, e.g. bernoulli_glm's) are data like any other.
    np.testing.assert_array_equal(np.asarray(models["mdn"].log_prob(theta, np.array([[0, 1], [1, 2]]))),
                                  np.asarray(models["mdn"].log_prob(theta, np.array([[0.0, 1.0], [1.0, 2.0]]))))


def test_sample_shape_takes_what_numpy_takes_as_a_shape_and_nothing_else():
    q, x = DENSITIES["mdn"], jnp.zeros(2)
    # (the same sizes, so that only two programs compile)
    for shape, expected in ((5, (5,)), ([5], (5,)), (np.array([5]), (5,)), (np.int64(5), (5,)),
                            (jnp.array([5, 2]), (5, 2)), ((np.int32(5), 2), (5, 2))):
        assert q.sample(jax.random.key(0), x, shape).shape == expected + (2,)
    # An array used to fail on `!= ()`, a float was truncated to an int.
    for bad in ((2.7,), (True,), "ab", ((2,), (3,))):
        with pytest.raises(ValueError, match="sample_shape must be an integer or a sequence of integers"):
            q.sample(jax.random.key(0), x, bad)
    with pytest.raises(ValueError, match="non-negative"):
        q.sample(jax.random.key(0), x, (-1,))


def test_mixture_density_network_checks_its_sizes():
    assert MixtureDensityNetwork(np.int64(2), np.int64(3), key=jax.random.key(0)).theta_dim == 2
    for args, name in (((0, 3), "theta_dim"), ((2, -1), "x_dim"), ((2, 3, 0), "num_components")):
        with pytest.raises(ValueError, match=name):
            MixtureDensityNetwork(*args, key=jax.random.key(0))


def test_standardized_respects_box_support_and_normalises():
    """A density wrapped with a box support map puts all mass inside the box, integrates to one
    there, and gives -inf outside."""
    low, high = jnp.array([-1.0, 0.0]), jnp.array([2.0, 0.5])
    to_base = Chain([BoxToReal(low, high), Invert(Affine(jnp.array([0.2, -0.1]), jnp.array([1.5, 0.8])))])
    q = Standardized(DENSITIES["mdn"], to_base, jnp.array([1.0, -1.0]), jnp.array([2.0, 0.5]))
    x = jnp.array([0.3, 0.1])
    s = q.sample(jax.random.key(6), x, (20_000,))
    assert bool(jnp.all((s >= low) & (s <= high)))
    g1 = np.linspace(-1, 2, 601)[1:-1]
    g2 = np.linspace(0, 0.5, 401)[1:-1]
    t1, t2 = np.meshgrid(g1, g2, indexing="ij")
    pts = jnp.asarray(np.stack([t1.ravel(), t2.ravel()], axis=1))
    total = float(jnp.exp(jax.jit(lambda t, c: q.log_prob(t, c))(pts, x)).sum()) * (g1[1] - g1[0]) * (g2[1] - g2[0])
    assert abs(total - 1.0) < 1e-2
    assert float(q.log_prob(jnp.array([2.5, 0.2]), x)) == -np.inf
    # No draws asked, with truncation to the box: an empty array (was a ZeroDivisionError).
    trunc = Standardized(DENSITIES["mdn"], Invert(Affine(jnp.zeros(2), jnp.ones(2))), jnp.zeros(2), jnp.ones(2),
                         low, high)
    assert trunc.sample(jax.random.key(7), x, (0,)).shape == (0, 2)
    assert float(q.log_prob(jnp.array([0.5, -0.1]), x)) == -np.inf


def test_z_scoring_leaves_constant_columns_alone_and_keeps_small_units():
    from jaxhep.densities.standardize import make_standardizer

    rng = np.random.default_rng(0)
    n = 1000
    # Columns: constant 0.1 (its float32 spread is rounding error, ~1e-8), constant 0, constant
    # 1/3, a varying column in units of 1e-9, and an ordinary one.
    x = np.stack([np.full(n, 0.1), np.zeros(n), np.full(n, 1 / 3), 1e-9 * (2.0 + rng.normal(size=n)),
                  5.0 + 2.0 * rng.normal(size=n)], axis=1).astype(np.float32)
    theta = rng.normal(size=(n, 2)).astype(np.float32)
    theta[:, 1] = 0.3
    _, x_loc, x_scale, _, _ = make_standardizer(theta, x)
    np.testing.assert_array_equal(np.asarray(x_scale[:3]), 1.0)
    np.testing.assert_allclose(np.asarray(x_scale[3:]), x[:, 3:].std(axis=0), rtol=1e-5)
    # An observation 1e-4 away from the constant value stays 1e-4 away in z-space.
    z = (np.float32(0.1001) - np.asarray(x_loc[0])) / np.asarray(x_scale[0])
    assert abs(z - 1e-4) < 1e-6
    to_base, *_ = make_standardizer(theta, x)
    u = np.asarray(to_base.transform(jnp.array([0.0, 0.3001])))
    assert abs(u[1] - 1e-4) < 1e-5


def test_z_scoring_statistics_are_taken_in_float64(x64):
    """Before: x of order 1e20 overflowed float32 squares (scale inf, every x standardised to 0),
    and a legal float64 theta just below a bound rounded past it in float32 ("outside the prior's
    support")."""
    import numpyro.distributions as dist

    from jaxhep.densities.standardize import make_standardizer

    rng = np.random.default_rng(0)
    theta = rng.uniform(0.0, 0.1, size=(500, 1))
    theta[0] = 0.1 - 1e-10
    x = 1e20 * (theta + rng.normal(size=(500, 1)))
    prior = dist.Uniform(jnp.zeros(1), jnp.full(1, 0.1)).to_event(1)
    to_base, x_loc, x_scale, _, _ = make_standardizer(theta, x, prior)
    np.testing.assert_allclose(np.asarray(x_scale), x.std(axis=0), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(to_base.transform(jnp.asarray(theta[0], jnp.float32)))))


def test_columns_float32_cannot_resolve_get_a_warning():
    from jaxhep.densities.standardize import make_standardizer

    rng = np.random.default_rng(0)
    theta = rng.normal(size=(1000, 1))
    x = np.concatenate([1e5 + 0.01 * theta, theta + rng.normal(size=(1000, 1))], axis=1)
    with pytest.warns(UserWarning, match=r"x column 0 has a spread of 0.00977 .* steps of 0.00781"):
        _, x_loc, x_scale, _, _ = make_standardizer(theta, x)
    # The statistics come from the float64 values: the spread is not that of ten float32 levels.
    np.testing.assert_allclose(np.asarray(x_scale), x.std(axis=0), rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_standardizer(theta, x - 1e5)


def test_training_a_standardized_density_leaves_its_standardisation_fixed():
    """`fit` on a `Standardized` module (fine-tuning a posterior's estimator) trains the base
    only. Its loss leaves out the z-scoring's log-det, so a trained z-scale would shrink z
    without bound: the loss would fall while log_prob got worse (it did before the fix)."""
    from jaxhep.densities.standardize import make_standardizer
    from jaxhep.training import fit

    rng = np.random.default_rng(0)
    theta = (1.0 + 3.0 * rng.normal(size=(2000, 1))).astype(np.float32)
    x = (theta + rng.normal(size=(2000, 1))).astype(np.float32)
    to_base, x_loc, x_scale, _, _ = make_standardizer(theta, x)
    model = Standardized(MixtureDensityNetwork(1, 1, 2, 16, key=jax.random.key(0)), to_base, x_loc, x_scale)

    def loss(m, key, batch):
        return jnp.mean(jax.vmap(m.loss, in_axes=(None, 0, 0))(key, *batch))

    trained, _ = fit(jax.random.key(1), model, loss, (theta, x), max_epochs=30, patience=30, progress=False,
                     learning_rate=1e-2)
    for before, after in zip(jax.tree_util.tree_leaves(model.to_base), jax.tree_util.tree_leaves(trained.to_base)):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    np.testing.assert_array_equal(np.asarray(trained.x_scale), np.asarray(x_scale))
    # The exact conditional p(theta | x) is N(0.1 + 0.9 x, 0.9): mean negative log-density 1.37.
    nll = -float(jnp.mean(trained.log_prob(theta, x)))
    assert nll < 1.45, nll


def test_transform_rows_matches_vmap_and_compiles_once_per_structure(monkeypatch):
    from jaxhep.densities import transform_rows

    traces = []
    original = BoxToReal.transform

    def counted(self, x, condition=None):
        traces.append(1)  # runs while tracing only
        return original(self, x, condition)

    monkeypatch.setattr(BoxToReal, "transform", counted)
    rng = np.random.default_rng(0)
    low, high = np.array([-1.0, 0.0], np.float32), np.array([2.0, 0.5], np.float32)
    theta = rng.uniform(low, high, size=(37, 2)).astype(np.float32)
    values = theta.copy()
    for box in (BoxToReal(low, high), BoxToReal(low - 1.0, high + 1.0)):
        out = transform_rows(box, values)
        assert isinstance(out, np.ndarray) and out.shape == (37, 2)
        expected = np.stack([np.asarray(original(box, jnp.asarray(row))) for row in theta])
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(values, theta)  # the input is not changed
    # A box with other bounds but the same structure and shapes reuses the compiled program: one
    # trace for both (37 rows, a shape no other test uses).
    assert len(traces) == 1


def test_rejection_refills_in_small_draws_and_keeps_the_truncated_distribution():
    """`Standardized.inside_only` with a standard normal `draw` and the box [-0.5, 2]: the kept
    samples follow the truncated normal (Kolmogorov-Smirnov), and every round draws
    n / REFILL_DIVISOR samples (one copy of `draw` in the program)."""
    from scipy import stats

    from jaxhep.densities.standardize import REFILL_DIVISOR

    base = MixtureDensityNetwork(1, 1, 2, 8, key=jax.random.key(0))
    est = Standardized(base, Affine(np.zeros(1), np.ones(1)), np.zeros(1), np.ones(1), np.array([-0.5]),
                       np.array([2.0]))
    sizes = []

    def draw(key, m):
        sizes.append(m)  # at trace time: the sizes the program draws
        return jax.random.normal(key, (m, 1))

    n = 4000
    kept = np.asarray(jax.jit(lambda k: est.inside_only(k, draw, n))(jax.random.key(1)))[:, 0]
    assert sizes == [n // REFILL_DIVISOR] * 2  # traced for its shape, then for the loop body
    assert kept.shape == (n,) and np.all((kept >= -0.5) & (kept <= 2.0))
    truth = stats.truncnorm(-0.5, 2.0)
    assert stats.kstest(kept, truth.cdf).pvalue > 0.01
    # About a third of a standard normal lies outside the box, so more than REFILL_DIVISOR rounds
    # were needed, and no round repeated another's draws (that would repeat hundreds of values;
    # float32 normals from 23-bit uniforms coincide by chance about once in 4000 draws).
    assert len(np.unique(kept)) >= n - 10


class _GaussianWithANaNRegion(AbstractConditionalDensity):
    """theta ~ N(x, diag(0.1, 3)^2), with log_prob NaN where theta_0 > x_0 + 0.2 (as a failed
    ODE solve would give): the mode, x, lies outside that region."""

    theta_dim: int = eqx.field(static=True, default=2)
    x_dim: int = eqx.field(static=True, default=2)

    def _log_prob(self, theta, x):
        scale = jnp.array([0.1, 3.0])
        lp = jnp.sum(-0.5 * ((theta - x) / scale) ** 2 - jnp.log(scale))
        return jnp.where(theta[0] > x[0] + 0.2, jnp.nan, lp)

    def _sample(self, key, x):
        return x + jnp.array([0.1, 3.0]) * jax.random.normal(key, (2,))


def test_map_ignores_points_whose_log_density_is_nan():
    """NaN ranked above every number in top_k and never lost to a finite value, so a NaN draw
    came back as the MAP ([1.25, -6.5] here before)."""
    q, x = _GaussianWithANaNRegion(), jnp.array([1.0, -2.0])
    best = q.map(jax.random.key(1), x)
    assert np.isfinite(float(q.log_prob(best, x)))
    np.testing.assert_allclose(np.asarray(best), [1.0, -2.0], atol=0.05)
