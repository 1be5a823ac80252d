"""Derivatives of residuals against analytic derivatives; exact solutions against their PDEs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep.theory.pinn import PINNNet, float64, gradient, hessian, laplacian, partial
from jaxhep.theory.pinn import problems



def f(x):
    return jnp.sin(2 * x[0]) * jnp.exp(-x[1]) + x[0] ** 3 * x[1] ** 2


def _analytic(x):
    s, c, e = jnp.sin(2 * x[0]), jnp.cos(2 * x[0]), jnp.exp(-x[1])
    return {
        (): f(x),
        (0,): 2 * c * e + 3 * x[0] ** 2 * x[1] ** 2,
        (1,): -s * e + 2 * x[0] ** 3 * x[1],
        (0, 0): -4 * s * e + 6 * x[0] * x[1] ** 2,
        (1, 1): s * e + 2 * x[0] ** 3,
        (0, 1): -2 * c * e + 6 * x[0] ** 2 * x[1],
        (1, 0): -2 * c * e + 6 * x[0] ** 2 * x[1],
        (0, 0, 0): -8 * c * e + 6 * x[1] ** 2,
    }


def test_partials_match_analytic(x64):
    pts = jax.random.uniform(jax.random.key(0), (20, 2), minval=-2, maxval=2)

    @jax.jit
    @jax.vmap
    def both(x):
        exp = _analytic(x)
        got = {str(dims): partial(f, x, *dims) for dims in exp}
        exp = {str(k): v for k, v in exp.items()}
        a = _analytic(x)
        got["lap"], exp["lap"] = laplacian(f, x), a[(0, 0)] + a[(1, 1)]
        got["lap0"], exp["lap0"] = laplacian(f, x, dims=[0]), a[(0, 0)]
        got["grad"], exp["grad"] = gradient(f, x), jnp.stack([a[(0,)], a[(1,)]])
        got["hess"] = hessian(f, x)
        exp["hess"] = jnp.array([[a[(0, 0)], a[(0, 1)]], [a[(1, 0)], a[(1, 1)]]])
        return got, exp

    got, exp = both(pts)
    for k in exp:
        np.testing.assert_allclose(got[k], exp[k], rtol=1e-12, atol=1e-12, err_msg=str(k))


def test_partials_of_network_match_hessian_and_finite_differences(x64):
    net = PINNNet(2, 1, width=16, depth=2, arch="modified", fourier_scale=1.0, fourier_features=8,
                  factorization=(0.5, 0.1), periodic={0: 2.0}, key=jax.random.key(1))
    u = lambda x: net(x)[0]  # noqa: E731
    x = jnp.array([0.3, -0.4])
    eps = 1e-5
    e0 = jnp.array([eps, 0.0])

    @jax.jit
    def values(x):
        h = jax.hessian(u)(x)
        fd = (u(x + e0) - 2 * u(x) + u(x - e0)) / eps**2
        return partial(u, x, 0, 1), h[0, 1], partial(u, x, 1, 1), h[1, 1], partial(u, x, 0, 0), fd

    d01, h01, d11, h11, d00, fd = values(x)
    np.testing.assert_allclose(d01, h01, rtol=1e-10)
    np.testing.assert_allclose(d11, h11, rtol=1e-10)
    # Central differences in float64 with step 1e-5: truncation ~1e-10, round-off ~1e-16/1e-10 = 1e-6.
    np.testing.assert_allclose(d00, fd, rtol=1e-4, atol=1e-5)


def test_partial_rejects_bad_index():
    with pytest.raises(ValueError, match="outside"):
        partial(f, jnp.zeros(2), 2)
    # A batch of points once gave a derivative along a point instead of a coordinate.
    with pytest.raises(ValueError, match=r"one point of shape \(d,\), got shape \(3, 2\); use jax.vmap"):
        partial(f, jnp.zeros((3, 2)), 0)


def test_inverse_burgers_builds_in_float64():
    # It wrote into a read-only view of a float64 jax array.
    from jaxhep.theory.pinn import float64

    with float64():
        bench = problems.inverse_burgers(n_obs=50)
    assert np.asarray(bench.problem.conditions[0].x).shape == (50, 2)


def test_float64_context_restores_setting():
    before = jax.config.jax_enable_x64
    with float64():
        assert jnp.ones(1).dtype == jnp.float64
    assert jax.config.jax_enable_x64 == before
    with float64(False):
        assert jax.config.jax_enable_x64 == before


@pytest.mark.parametrize("name", ["advection", "heat", "poisson"])
def test_exact_solutions_satisfy_their_pde(x64, name):
    if name == "advection":
        speed = 50.0
        bench = problems.advection(speed)
        exact = lambda x: jnp.sin(x[0] - speed * x[1])  # noqa: E731
    elif name == "heat":
        bench = problems.heat(hard=False)
        exact = lambda x: problems.heat_exact(x[0], x[1])  # noqa: E731
    else:
        bench = problems.poisson(hard=False)
        exact = problems.poisson_exact
    prob = bench.problem
    pts = bench.problem.domain.sample(jax.random.key(2), 200)
    coeffs = dict(prob.known)
    r = jax.jit(jax.vmap(lambda x: prob.residual(exact, x, coeffs)))(pts)
    scale = 5 * np.pi**2 if name == "poisson" else 50.0
    assert float(jnp.max(jnp.abs(r))) < 1e-11 * scale
    # The grid reference is the exact solution, and the conditions hold for it.
    grid = jnp.asarray(bench.points())
    np.testing.assert_allclose(bench.reference.ravel(), jax.vmap(exact)(grid), atol=1e-12)
    for cond in prob.conditions:
        pts_c = cond.sample(jax.random.key(3), prob.domain, "uniform")
        assert float(cond.loss(exact, pts_c, prob.domain)) < 1e-24
