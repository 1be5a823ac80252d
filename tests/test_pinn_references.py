"""Built-in reference solutions against independent computations (finite differences, quadrature orders)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep.theory.pinn import allen_cahn_spectral, burgers_cole_hopf

NU = 0.01 / np.pi



def _rk4_periodic(rhs, u0, dt, t_out):
    """Classical RK4 for du/dt = rhs(u), returning u at the times t_out (multiples of dt)."""

    def step(u, _):
        k1 = rhs(u)
        k2 = rhs(u + dt / 2 * k1)
        k3 = rhs(u + dt / 2 * k2)
        k4 = rhs(u + dt * k3)
        return u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    run = jax.jit(lambda u, m: jax.lax.scan(step, u, None, length=m)[0], static_argnums=1)
    out, u, t = [], u0, 0.0
    for to in t_out:
        u = run(u, int(round((to - t) / dt)))
        t = to
        out.append(np.asarray(u))
    return np.array(out)


def _burgers_fd(n, t_out, dt):
    # Energy-conserving central flux (u_i^2 + u_i u_{i+1} + u_{i+1}^2)/6 and central viscosity, periodic
    # on [-1, 1): for the odd initial data this is the Dirichlet problem u(+-1, t) = 0.
    dx = 2.0 / n
    x = -1 + dx * jnp.arange(n)

    def rhs(u):
        up, um = jnp.roll(u, -1), jnp.roll(u, 1)
        flux_p = (u * u + u * up + up * up) / 6
        flux_m = (um * um + um * u + u * u) / 6
        return -(flux_p - flux_m) / dx + NU * (up - 2 * u + um) / dx**2

    return np.asarray(x), _rk4_periodic(rhs, -jnp.sin(jnp.pi * x), dt, t_out)


def test_burgers_cole_hopf_matches_finite_differences(x64):
    times = [0.25, 0.5, 1.0]
    errs = {}
    for n in (512, 1024):
        x, us = _burgers_fd(n, times, 2.5e-4)
        ref = burgers_cole_hopf(x[None, :], np.array(times)[:, None])
        errs[n] = np.array([np.linalg.norm(us[i] - ref[i]) / np.linalg.norm(ref[i]) for i in range(len(times))])
    # The scheme is second order: against an exact reference its error must fall by ~4 when dx halves
    # (a wrong reference would leave an error floor). Measured: 1.9e-3 -> 4.6e-4 at t = 0.5.
    assert np.all(errs[1024] < 6e-4), errs
    ratio = errs[512] / errs[1024]
    assert np.all((ratio > 3.5) & (ratio < 4.5)), ratio


def test_burgers_cole_hopf_initial_condition_and_quadrature_convergence():
    x = np.linspace(-1, 1, 41)
    np.testing.assert_allclose(burgers_cole_hopf(x, 0.0), -np.sin(np.pi * x), atol=1e-14)
    xs, ts = np.meshgrid(np.linspace(-1, 1, 33), np.linspace(0.05, 1, 9))
    a = burgers_cole_hopf(xs, ts, nodes=120)
    b = burgers_cole_hopf(xs, ts, nodes=200)
    np.testing.assert_allclose(a, b, atol=1e-12)
    # Odd symmetry u(-x) = -u(x) and the boundary values u(+-1) = 0.
    np.testing.assert_allclose(burgers_cole_hopf(-xs, ts), -b, atol=1e-12)
    np.testing.assert_allclose(burgers_cole_hopf(np.ones(9), ts[:, 0]), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="t >= 0"):
        burgers_cole_hopf(0.0, -1.0)


def test_allen_cahn_spectral_matches_fourth_order_finite_differences(x64):
    x, t, u = allen_cahn_spectral(save_every=2500)
    np.testing.assert_allclose(t, [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-12)
    n = 1024
    dx = 2.0 / n
    xf = -1 + dx * jnp.arange(n)

    def rhs(v):
        lap = (-jnp.roll(v, 2) + 16 * jnp.roll(v, 1) - 30 * v + 16 * jnp.roll(v, -1) - jnp.roll(v, -2)) / (12 * dx**2)
        return 1e-4 * lap + 5 * (v - v**3)

    uf = _rk4_periodic(rhs, xf**2 * jnp.cos(jnp.pi * xf), 1e-3, [0.5, 1.0])
    # The finite-difference grid contains the spectral one (every second point).
    for i, ti in enumerate([0.5, 1.0]):
        ref = u[list(t).index(ti)]
        err = np.linalg.norm(uf[i][::2] - ref) / np.linalg.norm(ref)
        assert err < 1e-3, (ti, err)
    # The solution stays within the stable states +-1 and develops the expected interfaces.
    assert np.max(np.abs(u)) < 1.0 + 1e-6
