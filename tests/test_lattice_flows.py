"""Lattice flows: exact symmetries, invertibility, log-determinants against jax.jacobian."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import compilations, perturb
from jax.flatten_util import ravel_pytree

from jaxhep.theory.lattice import (
    CircularConvNet,
    LatticeFlow,
    gauge_transform,
    make_phi4_flow,
    make_u1_flow,
    rational_quadratic_spline,
    u1_coupling_masks,
    wrap_angle,
)


@pytest.fixture(scope="module")
def phi4_flows():
    out = {}
    # the spline is perturbed less: strongly warped splines make float32 inverses ill-conditioned
    for coupling, scale in (("affine", 0.3), ("spline", 0.1)):
        flow = make_phi4_flow(4, 2, coupling, hidden_channels=(4,), n_bins=4, key=jax.random.key(0))
        out[coupling] = perturb(flow, jax.random.key(1), scale)
    return out


@pytest.fixture(scope="module")
def u1_flow():
    flow = make_u1_flow(4, 4, n_mix=3, hidden_channels=(4,), key=jax.random.key(2))
    return perturb(flow, jax.random.key(3), 0.5)


def test_conditioner_is_translation_equivariant_and_matches_conv2d():
    net = CircularConvNet(2, 3, (5, 5), 3, final_tanh=False, init_scale=1.0, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6))
    y = net(x)
    for shift in [(1, 0), (0, 1), (2, 3), (5, 4)]:
        np.testing.assert_allclose(net(jnp.roll(x, shift, axis=(1, 2))), jnp.roll(y, shift, axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(y, net.reference_call(x), atol=1e-5)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_phi4_flow_logdet_inverse_and_equivariance(phi4_flows, coupling):
    flow = phi4_flows[coupling]
    z = jax.random.normal(jax.random.key(4), (4, 4))
    x, logdet = flow.forward(z)
    jac = jax.jacobian(lambda v: flow.forward(v)[0])(z).reshape(16, 16)
    np.testing.assert_allclose(logdet, jnp.linalg.slogdet(jac)[1], atol=2e-3)
    assert abs(float(logdet)) > 0.1  # the check above is not trivially 0 == 0
    z_back, logdet_inv = flow.inverse(x)
    np.testing.assert_allclose(z_back, z, atol=1e-4)
    np.testing.assert_allclose(logdet_inv, -logdet, atol=1e-4)
    # checkerboard layers commute with translations that keep the checkerboard: even shifts
    xs, lds = flow.forward(jnp.roll(z, (2, 0), axis=(0, 1)))
    np.testing.assert_allclose(xs, jnp.roll(x, (2, 0), axis=(0, 1)), atol=1e-5)
    np.testing.assert_allclose(lds, logdet, atol=1e-4)
    xd = jnp.roll(x, (1, 1), axis=(0, 1))  # a diagonal shift also preserves the colouring
    np.testing.assert_allclose(flow.log_prob(xd), flow.log_prob(x), atol=1e-4)


def test_spline_inverse_and_derivative():
    ks = jax.random.split(jax.random.key(5), 4)
    n, K = 500, 6
    w, h, d = (jax.random.normal(k, (n, s)) for k, s in zip(ks[:3], (K, K, K - 1)))
    x = jax.random.uniform(ks[3], (n,), minval=-4, maxval=4)
    y, ld = rational_quadratic_spline(x, w, h, d, 3.0)
    xb, ldb = rational_quadratic_spline(y, w, h, d, 3.0, inverse=True)
    # float32 round trip: the error in x is the rounding error in y times the local dx/dy
    np.testing.assert_array_less(jnp.abs(xb - x), 1e-5 * jnp.maximum(1.0, jnp.exp(-ld)) * 10)
    np.testing.assert_allclose(ldb, -ld, atol=1e-3)
    g = jax.vmap(jax.grad(lambda a, b, c, e: rational_quadratic_spline(a, b, c, e, 3.0)[0]))(x, w, h, d)
    np.testing.assert_allclose(jnp.log(g), ld, atol=1e-3)
    outside = jnp.abs(x) > 3
    np.testing.assert_array_equal(y[outside], x[outside])
    assert bool(jnp.all(g > 0))  # strictly increasing


def test_u1_masks_follow_the_kanwar_pattern():
    for mu in (0, 1):
        for off in range(4):
            active, frozen = u1_coupling_masks(8, mu, off)
            assert float(jnp.sum(active * frozen)) == 0.0
            assert float(jnp.sum(active)) == 16 and float(jnp.sum(frozen)) == 32
            rows = active.sum(axis=mu)  # count per row of the orthogonal coordinate
            assert set(np.nonzero(np.asarray(rows))[0].tolist()) == {off, off + 4}


def test_u1_flow_logdet_inverse(u1_flow):
    z = u1_flow.prior.sample(jax.random.key(6), 1)[0]
    x, logdet = u1_flow.forward(z)
    jac = jax.jacobian(lambda v: u1_flow.forward(v)[0])(z).reshape(32, 32)
    np.testing.assert_allclose(logdet, jnp.linalg.slogdet(jac)[1], atol=2e-3)
    assert abs(float(logdet)) > 0.1
    z_back, logdet_inv = u1_flow.inverse(x)
    np.testing.assert_allclose(wrap_angle(z_back - z), 0.0, atol=1e-3)  # float32 bisection inverse
    np.testing.assert_allclose(logdet_inv, -logdet, atol=1e-3)


def test_u1_log_prob_gradients_match_finite_differences(x64):
    """log q of a U(1) flow goes through the bisection inverse of the NCP mixture, whose
    comparisons carry no derivative; the gradients in the parameters (forward-KL training) and in
    the links (the flow's score) must still be right. Before the implicit-function derivative,
    autodiff gave -19.3 against -603.5 (parameters) and 8.3 against 146.1 (links) on a flow of
    this size."""
    flow = perturb(make_u1_flow(4, 2, n_mix=2, hidden_channels=(4,), key=jax.random.key(0)), jax.random.key(1), 0.5)
    links = jax.random.uniform(jax.random.key(2), (3, 2, 4, 4), jnp.float64, -math.pi, math.pi)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    assert flat.dtype == jnp.float64

    def total(v, x):
        return jnp.sum(eqx.combine(unravel(v), static).log_prob(x))

    @jax.jit  # one program for both gradients and the four evaluations
    def check(v, x, dv, dx, h=1e-6):
        gv, gx = jax.grad(total, argnums=(0, 1))(v, x)
        auto = jnp.stack([jnp.vdot(gv, dv), jnp.vdot(gx, dx)])
        numeric = jnp.stack([total(v + h * dv, x) - total(v - h * dv, x), total(v, x + h * dx) - total(v, x - h * dx)])
        return auto, numeric / (2 * h)

    dv = jax.random.normal(jax.random.key(3), flat.shape, flat.dtype)
    dx = jax.random.normal(jax.random.key(4), links.shape, links.dtype)
    auto, numeric = (np.asarray(a) for a in check(flat, links, dv, dx))
    np.testing.assert_allclose(auto, numeric, rtol=1e-4)
    assert np.all(np.abs(numeric) > 1.0)


def test_float64_flows_take_float32_configurations(x64):
    """Under x64 a flow's masks and weights are float64; a float32 configuration is promoted
    once, instead of changing type inside the layer loop (a TypeError before)."""
    for flow in (make_phi4_flow(4, 2, hidden_channels=(4,), key=jax.random.key(0)),
                 make_u1_flow(4, 2, hidden_channels=(4,), key=jax.random.key(0))):
        x = flow.sample(jax.random.key(1), 2)
        assert x.dtype == jnp.float64
        x32 = x.astype(jnp.float32)
        lp32 = flow.log_prob(x32)
        assert lp32.dtype == jnp.float64
        np.testing.assert_allclose(lp32, flow.log_prob(x32.astype(jnp.float64)), rtol=1e-12)


def test_u1_flow_gauge_equivariance_and_invariant_density(u1_flow):
    k1, k2 = jax.random.split(jax.random.key(7))
    z = u1_flow.prior.sample(k1, 1)[0]
    alpha = jax.random.uniform(k2, (4, 4), minval=-math.pi, maxval=math.pi)
    x, logdet = u1_flow.forward(z)
    xg, logdet_g = u1_flow.forward(wrap_angle(gauge_transform(z, alpha)))
    np.testing.assert_allclose(wrap_angle(xg - gauge_transform(x, alpha) + 1.0), 1.0, atol=1e-4)
    np.testing.assert_allclose(logdet_g, logdet, atol=1e-4)
    lq = u1_flow.log_prob(jnp.stack([x, wrap_angle(gauge_transform(x, alpha))]))
    np.testing.assert_allclose(lq[1], lq[0], atol=1e-3)
    # translations by the mask period are symmetries too
    np.testing.assert_allclose(u1_flow.log_prob(jnp.roll(x, 4, axis=-1)), lq[0], atol=1e-3)


@pytest.mark.slow
def test_flow_density_integrates_to_one():
    # on a 2x2 lattice the density of a strongly non-trivial affine flow integrates to one
    flow = perturb(make_phi4_flow(2, 2, "affine", hidden_channels=(3,), key=jax.random.key(8)), jax.random.key(9), 0.5)
    # importance sampling with a wide Gaussian: E_g[q / g] = 1
    n, s = 200_000, 2.0
    x = s * jax.random.normal(jax.random.key(10), (n, 2, 2))
    log_g = -0.5 * jnp.sum((x / s) ** 2, axis=(1, 2)) - 4 * math.log(s * math.sqrt(2 * math.pi))
    r = jnp.exp(flow.log_prob(x) - log_g)
    mean, err = float(r.mean()), float(r.std() / math.sqrt(n))
    assert err < 0.02
    assert abs(mean - 1.0) < 4 * err


def test_flow_validation():
    with pytest.raises(ValueError, match="multiple of 4"):
        make_u1_flow(6, key=jax.random.key(0))
    with pytest.raises(ValueError, match="even"):
        make_phi4_flow(5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="coupling"):
        make_phi4_flow(4, coupling="nope", key=jax.random.key(0))
    flow = make_phi4_flow(4, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="configuration shape"):
        flow.log_prob(jnp.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="at least one layer"):
        LatticeFlow(flow.prior, [])


def test_eager_calls_reuse_their_compiled_programs():
    """Called from Python, log_prob and sample compile once per flow structure and shape: run op by
    op, every call traced the layer scan anew and compiled it again (about a second a call)."""
    flow = make_phi4_flow(4, 2, hidden_channels=(4,), key=jax.random.key(0))
    other = perturb(flow, jax.random.key(1), 0.3)  # same structure, other weights
    x = flow.sample(jax.random.key(2), 3)
    lp = flow.log_prob(x)
    with compilations() as compiles:
        y, lq = other.sample_and_log_prob(jax.random.key(3), np.int64(3))  # a numpy count is a count
        lp_other = other.log_prob(x)
        assert compiles == []
    assert y.shape == x.shape and lq.shape == lp.shape == (3,)
    assert not np.allclose(lp_other, lp)
    np.testing.assert_allclose(other.log_prob(y), lq, rtol=1e-4, atol=1e-4)
