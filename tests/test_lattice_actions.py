"""Lattice actions: conventions, closed-form values, autodiff forces, gauge invariance, topology."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep.theory.lattice import (
    Phi4Action,
    U1Action,
    gauge_transform,
    phi4_action,
    plaquette_angles,
    topological_charge,
    u1_action,
    wrap_angle,
)


def test_phi4_kinetic_form_equals_tutorial_form():
    phi = jax.random.normal(jax.random.key(0), (3, 6, 6))
    m2, lam = -4.0, 8.0
    hop = sum(phi * jnp.roll(phi, -1, ax) for ax in (-2, -1))
    tutorial = jnp.sum(-2 * hop + (m2 + 4) * phi**2 + lam * phi**4, axis=(-2, -1))
    np.testing.assert_allclose(phi4_action(phi, m2, lam), tutorial, rtol=1e-5)


def test_phi4_constant_field_closed_form():
    c, m2, lam, L = 0.9, -4.0, 8.0, 5
    s = phi4_action(jnp.full((L, L), c), m2, lam)
    np.testing.assert_allclose(s, L * L * (m2 * c**2 + lam * c**4), rtol=1e-5)


def test_phi4_force_matches_hand_derivative():
    phi = jax.random.normal(jax.random.key(1), (4, 4))
    m2, lam = 0.3, 1.7
    nbr = sum(jnp.roll(phi, s, ax) for ax in (0, 1) for s in (1, -1))
    expected = 2 * (4 * phi - nbr) + 2 * m2 * phi + 4 * lam * phi**3
    np.testing.assert_allclose(Phi4Action(4, m2, lam).grad(phi), expected, rtol=1e-5, atol=1e-5)


def test_u1_force_matches_hand_derivative():
    theta = jax.random.uniform(jax.random.key(2), (2, 4, 4), minval=-3, maxval=3)
    beta = 1.3
    p = plaquette_angles(theta)
    # theta_0(x) enters P(x) with + and P(x - e1) with -; theta_1(x) enters P(x - e0) with + and P(x) with -
    g0 = beta * (jnp.sin(p) - jnp.roll(jnp.sin(p), 1, axis=1))
    g1 = beta * (jnp.roll(jnp.sin(p), 1, axis=0) - jnp.sin(p))
    np.testing.assert_allclose(U1Action(4, beta).grad(theta), jnp.stack([g0, g1]), rtol=1e-5, atol=1e-5)


def test_u1_gauge_invariance_of_action_and_charge():
    k1, k2 = jax.random.split(jax.random.key(3))
    theta = jax.random.uniform(k1, (5, 2, 8, 8), minval=-math.pi, maxval=math.pi)
    alpha = jax.random.uniform(k2, (5, 8, 8), minval=-math.pi, maxval=math.pi)
    g = wrap_angle(gauge_transform(theta, alpha))
    np.testing.assert_allclose(u1_action(g, 2.0), u1_action(theta, 2.0), rtol=1e-5)
    np.testing.assert_allclose(topological_charge(g), topological_charge(theta), atol=1e-4)
    q = topological_charge(theta)
    np.testing.assert_allclose(q, jnp.round(q), atol=1e-4)  # integer on the torus


def test_pure_gauge_has_minimal_action_and_zero_charge():
    alpha = jax.random.uniform(jax.random.key(4), (6, 6), minval=-3, maxval=3)
    theta = gauge_transform(jnp.zeros((2, 6, 6)), alpha)
    np.testing.assert_allclose(u1_action(theta, 1.5), -1.5 * 36, rtol=1e-5)
    assert abs(float(topological_charge(theta))) < 1e-4


def test_unit_charge_configuration():
    # uniform field strength 2 pi / V: every plaquette equals 2 pi / L^2, so Q = 1
    L = 6
    x0 = jnp.arange(L)[:, None] * jnp.ones((1, L))
    x1 = jnp.ones((L, 1)) * jnp.arange(L)[None, :]
    t1 = 2 * math.pi * x0 / L**2
    t0 = jnp.where(x0 == L - 1, -2 * math.pi * x1 / L, 0.0)
    theta = jnp.stack([t0, t1])
    np.testing.assert_allclose(wrap_angle(plaquette_angles(theta)), 2 * math.pi / L**2, atol=1e-5)
    np.testing.assert_allclose(topological_charge(theta), 1.0, atol=1e-5)
    np.testing.assert_allclose(u1_action(theta, 2.0), -2.0 * L**2 * math.cos(2 * math.pi / L**2), rtol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="square"):
        phi4_action(jnp.zeros((4, 5)), 1.0, 1.0)
    with pytest.raises(ValueError, match="two link directions"):
        u1_action(jnp.zeros((3, 4, 4)), 1.0)
