"""Observables with errors: phi^4 magnetization, susceptibility, correlation length; U(1) plaquette and topology.

Errors come from a blocked (binned) bootstrap, which covers both autocorrelation (blocks longer than
the autocorrelation time) and non-linear estimators (functions of several means); integrated
autocorrelation times use the Madras-Sokal self-consistent window (J. Stat. Phys. 50 (1988) 109).
Post-processing runs eagerly on arrays of per-configuration measurements.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .actions import plaquette_angles, topological_charge

# ----------------------------------------------------------------------------- per-configuration measurements


def magnetization(phi: Float[Array, "*batch L L"]) -> Float[Array, "*batch"]:
    """Site-averaged field M = (1/V) sum_x phi(x) of each configuration."""
    return jnp.mean(phi, axis=(-2, -1))


def correlator_per_config(phi: Float[Array, "*batch L L"]) -> Float[Array, "*batch L L"]:
    """C(x) = (1/V) sum_y phi(y) phi(y + x) of each configuration, by FFT."""
    f = jnp.fft.fft2(phi)
    return jnp.real(jnp.fft.ifft2(f * jnp.conj(f))) / (phi.shape[-1] * phi.shape[-2])


def average_plaquette(theta: Float[Array, "*batch 2 L L"]) -> Float[Array, "*batch"]:
    """(1/V) sum_x cos P(x) of each configuration."""
    return jnp.mean(jnp.cos(plaquette_angles(theta)), axis=(-2, -1))


# ----------------------------------------------------------------------------- errors


class Estimate(NamedTuple):
    """A value with its standard error."""

    value: float
    error: float


def block(data: Float[Array, "n ..."], block_size: int) -> np.ndarray:
    """Means over consecutive blocks of `block_size` (a trailing remainder is dropped)."""
    data = np.asarray(data)
    nb = data.shape[0] // block_size
    if nb < 2:
        raise ValueError(f"need at least 2 blocks; got {data.shape[0]} samples for block_size {block_size}")
    return data[: nb * block_size].reshape(nb, block_size, *data.shape[1:]).mean(axis=1)


def bootstrap(
    key: PRNGKeyArray,
    data: Float[Array, "n ..."],
    statistic: Callable[[np.ndarray], float] = lambda m: m,
    *,
    n_boot: int = 500,
    block_size: int = 1,
) -> Estimate:
    """Blocked bootstrap of `statistic(mean over samples of data)`.

    Arguments:
        key: PRNG key for the resampling.
        data: per-configuration measurements, leading axis the Monte Carlo time.
        statistic: function of the sample mean (over axis 0) of `data` returning one number;
            default the mean itself (for data of shape (n,)).
        n_boot: bootstrap resamples.
        block_size: consecutive samples per block (choose >= a few tau_int for Markov chains).

    Returns:
        `Estimate(statistic(mean), bootstrap standard deviation)`.

    Raises:
        ValueError: if fewer than two blocks remain, or `statistic` does not return one number.
    """
    blocks = block(data, block_size)
    nb = blocks.shape[0]
    idx = np.asarray(jax.random.randint(key, (n_boot, nb), 0, nb))
    value = np.asarray(statistic(blocks.mean(axis=0)))
    if value.ndim != 0:
        raise ValueError(f"statistic must return one number, got shape {value.shape} (data of shape "
                         f"{np.shape(data)}: pass a statistic that reduces the mean, e.g. lambda m: m[0])")
    value = float(value)
    boots = np.array([np.asarray(statistic(blocks[i].mean(axis=0))) for i in idx], dtype=float)
    return Estimate(value, float(boots.std(ddof=1)))


class TauInt(NamedTuple):
    """Integrated autocorrelation time (convention tau = 1/2 + sum_t rho(t)), its error and window."""

    tau: float
    error: float
    window: int


def autocorrelation(x: Float[Array, " n"]) -> np.ndarray:
    """Normalised autocorrelation function rho(t) of a scalar series (FFT, biased estimator)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    d = x - x.mean()
    f = np.fft.rfft(d, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / n
    if acf[0] == 0:
        return np.concatenate([[1.0], np.zeros(n - 1)])
    return acf / acf[0]


def integrated_autocorrelation_time(x: Float[Array, " n"], c: float = 5.0) -> TauInt:
    """tau_int = 1/2 + sum_{t=1}^W rho(t) with the smallest window W >= c tau_int(W) (Madras-Sokal).

    With this convention the variance of a mean of n samples is 2 tau_int var(x) / n; i.i.d. data
    have tau_int = 1/2.

    Arguments:
        x: scalar time series (one chain).
        c: window factor.

    Returns:
        `TauInt(tau, error, window)`; the error is the Madras-Sokal estimate tau sqrt(2(2W+1)/n).

    Raises:
        ValueError: for fewer than 10 samples.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    if x.ndim != 1 or n < 10:
        raise ValueError(f"need a 1-D series of at least 10 samples; got shape {x.shape}")
    rho = autocorrelation(x)
    tau = 0.5
    W = n - 1
    for t in range(1, n):
        tau += rho[t]
        if t >= c * tau:
            W = t
            break
    tau = max(tau, 0.5)
    return TauInt(float(tau), float(tau * math.sqrt(2 * (2 * W + 1) / n)), int(W))


# ----------------------------------------------------------------------------- phi^4 ensembles


def two_point_susceptibility(key: PRNGKeyArray, phi: Float[Array, "n L L"], *, block_size: int = 1, n_boot: int = 500) -> Estimate:
    """chi_2 = sum_x G_c(x) = V (<M^2> - <M>^2), with M the site-averaged field.

    This equals the tutorial's sum over the connected two-point function
    G_c(x) = (1/V) sum_y [<phi(y) phi(y+x)> - <phi(y)><phi(y+x)>].

    Arguments:
        key: PRNG key for the bootstrap.
        phi: ensemble of configurations (a Markov chain or i.i.d. draws).
        block_size: bootstrap block size.
        n_boot: bootstrap resamples.

    Returns:
        The estimate with its bootstrap error.
    """
    V = phi.shape[-1] * phi.shape[-2]
    m = np.asarray(magnetization(phi))
    data = np.stack([m, m**2], axis=1)
    return bootstrap(key, data, lambda a: V * (a[1] - a[0] ** 2), n_boot=n_boot, block_size=block_size)


def connected_two_point(phi: Float[Array, "n L L"]) -> np.ndarray:
    """G_c(x) = <C(x)> - <M>^2 estimated from an ensemble (C from `correlator_per_config`)."""
    c = np.asarray(correlator_per_config(phi)).mean(axis=0)
    return c - float(np.asarray(magnetization(phi)).mean()) ** 2


def second_moment_correlation_length(key: PRNGKeyArray, phi: Float[Array, "n L L"], *, block_size: int = 1, n_boot: int = 200) -> Estimate:
    """Second-moment correlation length xi = sqrt(chi / F - 1) / (2 sin(pi / L)).

    F is the connected momentum-space two-point function at the smallest non-zero momentum,
    averaged over the two directions: F = (1/V) <|phi~(2 pi / L e_mu)|^2>.

    Arguments:
        key: PRNG key for the bootstrap.
        phi: ensemble of configurations.
        block_size: bootstrap block size.
        n_boot: bootstrap resamples.

    Returns:
        The estimate with its bootstrap error (nan when chi / F < 1 in a resample).
    """
    L = phi.shape[-1]
    V = L * phi.shape[-2]
    f = np.asarray(jnp.fft.fft2(phi))
    m = np.asarray(magnetization(phi))
    fmin = 0.5 * (np.abs(f[:, 1, 0]) ** 2 + np.abs(f[:, 0, 1]) ** 2) / V
    data = np.stack([m, m**2, fmin], axis=1)

    def xi(a):
        chi = V * (a[1] - a[0] ** 2)
        r = chi / a[2] - 1
        return np.sqrt(r) / (2 * np.sin(np.pi / L)) if r > 0 else np.nan

    return bootstrap(key, data, xi, n_boot=n_boot, block_size=block_size)


def effective_mass(phi: Float[Array, "n L L"]) -> np.ndarray:
    """m_eff(t) = arccosh((C(t-1) + C(t+1)) / (2 C(t))) of the zero-momentum connected correlator.

    C(t) = sum_{x1} G_c(t, x1); entries where the argument of arccosh is below 1 are nan.
    """
    return effective_mass_from_correlator(connected_two_point(phi))


def effective_mass_from_correlator(g: Float[Array, "L L"]) -> np.ndarray:
    """Effective mass m_eff(t), t = 1..L-2, from a two-point function G(t, x1) (summed over x1).

    For C(t) = A cosh(E (t - L/2)) it returns E at every t.
    """
    ct = np.asarray(g).sum(axis=1)
    arg = (np.roll(ct, 1) + np.roll(ct, -1)) / (2 * ct)
    with np.errstate(invalid="ignore"):
        return np.where(arg >= 1, np.arccosh(np.maximum(arg, 1)), np.nan)[1:-1]


# ----------------------------------------------------------------------------- U(1) ensembles


def topological_susceptibility(
    key: PRNGKeyArray, theta: Float[Array, "n 2 L L"], *, per_volume: bool = False, block_size: int = 1, n_boot: int = 500
) -> Estimate:
    """Topological susceptibility <Q^2> (tutorial convention) or <Q^2> / V, Q the rounded geometric charge.

    The tutorial (Albergo et al., arXiv:2101.08176) quotes chi_Q = <Q^2> without the volume factor:
    its 1.23(2) at L=8, beta=2 matches the exact <Q^2> = 1.2393 (see `exact.py`), not <Q^2>/64.

    Arguments:
        key: PRNG key for the bootstrap.
        theta: ensemble of gauge configurations.
        per_volume: divide by the number of sites V.
        block_size: bootstrap block size.
        n_boot: bootstrap resamples.

    Returns:
        The estimate with its bootstrap error.
    """
    V = theta.shape[-1] * theta.shape[-2]
    q = np.rint(np.asarray(topological_charge(theta)))
    return bootstrap(key, q**2 / (V if per_volume else 1), n_boot=n_boot, block_size=block_size)
