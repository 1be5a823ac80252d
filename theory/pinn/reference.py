"""Reference solutions computed inside the project: Burgers by Cole-Hopf with Gauss-Hermite
quadrature, Allen-Cahn by a Fourier spectral ETDRK4 solver in JAX.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxhep.theory.pinn.precision import float64


def burgers_cole_hopf(x: Float[Array, " n"], t: Float[Array, " n"], nu: float = 0.01 / np.pi,
                      nodes: int = 200) -> np.ndarray:
    """Viscous Burgers u_t + u u_x = nu u_xx with u(x, 0) = -sin(pi x), by the Cole-Hopf transform.

    With phi_0(y) = exp(-cos(pi y) / (2 pi nu)) and eta = sqrt(4 nu t) z,
        u(x, t) = -sum_i w_i sin(pi (x - eta_i)) phi_0(x - eta_i) / sum_i w_i phi_0(x - eta_i),
    where (z_i, w_i) are Gauss-Hermite nodes and weights (weight exp(-z^2)). The sums are formed
    in log space because phi_0 spans exp(+-1/(2 pi nu)). The result is exact for the periodic
    problem, which for this odd initial condition also has u(+-1, t) = 0.

    Arguments:
        x, t: coordinates (broadcast together), t >= 0.
        nu: viscosity.
        nodes: number of Gauss-Hermite nodes (results agree to 1e-15 between 100 and 200).

    Returns:
        u at the points, as a float64 numpy array (computed in numpy, independent of JAX settings).

    Raises:
        ValueError: for negative times or a non-positive viscosity.
    """
    x, t = np.broadcast_arrays(np.asarray(x, float), np.asarray(t, float))
    if np.any(t < 0) or nu <= 0:
        raise ValueError(f"need t >= 0 and nu > 0, got min t = {t.min()}, nu = {nu}")
    if not 2 <= nodes <= 300:
        raise ValueError(f"nodes must lie in [2, 300] (numpy's Gauss-Hermite weights overflow beyond), got {nodes}")
    z, w = np.polynomial.hermite.hermgauss(nodes)
    y = x.ravel()[:, None] - np.sqrt(4.0 * nu * t.ravel())[:, None] * z[None, :]
    logphi = -np.cos(np.pi * y) / (2.0 * np.pi * nu) + np.log(w)[None, :]
    phi = np.exp(logphi - np.max(logphi, axis=1, keepdims=True))
    u = -np.sum(np.sin(np.pi * y) * phi, axis=1) / np.sum(phi, axis=1)
    return u.reshape(x.shape)


def _etdrk4_coefficients(lin, h, contour_points=64):
    # Kassam & Trefethen (2005): phi-functions by a contour average, stable for small h*L.
    r = jnp.exp(1j * jnp.pi * (jnp.arange(1, contour_points + 1) - 0.5) / contour_points)
    lr = h * lin[:, None] + r[None, :]
    q = h * jnp.real(jnp.mean((jnp.exp(lr / 2) - 1) / lr, axis=1))
    f1 = h * jnp.real(jnp.mean((-4 - lr + jnp.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=1))
    f2 = h * jnp.real(jnp.mean((2 + lr + jnp.exp(lr) * (-2 + lr)) / lr**3, axis=1))
    f3 = h * jnp.real(jnp.mean((-4 - 3 * lr - lr**2 + jnp.exp(lr) * (4 - lr)) / lr**3, axis=1))
    return q, f1, f2, f3


def allen_cahn_spectral(n: int = 512, t_final: float = 1.0, dt: float = 1e-4, save_every: int = 50,
                        diffusion: float = 1e-4, reaction: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Allen-Cahn u_t = D u_xx + a (u - u^3) on periodic [-1, 1), u(x, 0) = x^2 cos(pi x), by ETDRK4.

    Fourier pseudo-spectral in space (n modes), exponential time differencing RK4 in time
    (Cox & Matthews; coefficients as in Kassam & Trefethen 2005), all in JAX under float64.

    Arguments:
        n: grid points (x_j = -1 + 2 j / n).
        t_final: final time.
        dt: time step.
        save_every: steps between saved snapshots.
        diffusion: D (1e-4 in the PINN benchmark).
        reaction: a (5 in the PINN benchmark).

    Returns:
        (x of shape (n,), t of shape (m,), u of shape (m, n)).

    Raises:
        ValueError: when t_final is not a whole number of saved intervals.
    """
    steps = int(round(t_final / dt))
    if steps % save_every or abs(steps * dt - t_final) > 1e-9:
        raise ValueError(f"t_final / dt must be an integer multiple of save_every; got {t_final}/{dt}, {save_every}")
    with float64():
        x = -1.0 + 2.0 * jnp.arange(n) / n
        k = jnp.pi * jnp.fft.fftfreq(n, d=1.0 / n)
        lin = -diffusion * k**2
        e, e2 = jnp.exp(dt * lin), jnp.exp(dt * lin / 2)
        q, f1, f2, f3 = _etdrk4_coefficients(lin, dt)

        def nonlin(v):
            u = jnp.real(jnp.fft.ifft(v))
            return reaction * jnp.fft.fft(u - u**3)

        def step(v, _):
            nv = nonlin(v)
            a = e2 * v + q * nv
            na = nonlin(a)
            b = e2 * v + q * na
            nb = nonlin(b)
            c = e2 * a + q * (2 * nb - nv)
            nc = nonlin(c)
            return e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3, None

        def block(v, _):
            v, _ = jax.lax.scan(step, v, None, length=save_every)
            return v, jnp.real(jnp.fft.ifft(v))

        u0 = x**2 * jnp.cos(jnp.pi * x)
        _, us = jax.jit(lambda v: jax.lax.scan(block, v, None, length=steps // save_every))(jnp.fft.fft(u0))
        u = np.concatenate([np.asarray(u0)[None], np.asarray(us)])
        t = np.arange(u.shape[0]) * dt * save_every
        return np.asarray(x), t, u
