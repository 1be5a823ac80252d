"""Exact reference results: the free scalar field and 2D U(1) Wilson gauge theory on a finite torus."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ive

from jaxhep.checks import warn_caller


def free_field_two_point(L: int, m2: float) -> np.ndarray:
    """Exact <phi(x) phi(0)> for lam = 0 with the action S = sum_x [sum_mu (d_mu phi)^2 + m2 phi^2].

    S = phi^T A phi with A = -Laplacian + m2, so exp(-S) is Gaussian with covariance (2A)^-1 and
    G(x) = (1/V) sum_p cos(p.x) / (2 (p_hat^2 + m2)), p_hat^2 = sum_mu 4 sin^2(p_mu / 2).

    Arguments:
        L: lattice extent.
        m2: mass squared, must be positive.

    Returns:
        G as an (L, L) array indexed by the separation x.

    Raises:
        ValueError: if m2 <= 0 (the free theory is then unstable).
    """
    if not m2 > 0:
        raise ValueError(f"the free field needs m2 > 0; got {m2}")
    p = 2 * np.pi * np.arange(L) / L
    phat2 = 4 * np.sin(p[:, None] / 2) ** 2 + 4 * np.sin(p[None, :] / 2) ** 2
    prop = 1.0 / (2 * (phat2 + m2))
    return np.real(np.fft.ifft2(prop))


def _character_ratios(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """n = -40..40 and I_n(beta) / I_0(beta), the characters of one plaquette scaled by I_0 so that
    their V-th powers do not overflow (the terms beyond |n| = 40 are negligible)."""
    n = np.arange(-40, 41)
    return n, ive(n, beta) / ive(0, beta)


def u1_exact_plaquette(beta: float, L: int) -> float:
    """Exact <cos P> of 2D U(1) with the Wilson action on an L x L torus (character expansion).

    Z = sum_n I_n(beta)^V with V = L^2 plaquettes, hence
    <cos P> = sum_n I_n^(V-1) (I_{n-1} + I_{n+1}) / 2 / sum_n I_n^V.
    """
    V = L * L
    n, r = _character_ratios(beta)  # the common factor I_0^V cancels
    num = np.sum(r ** (V - 1) * 0.5 * (ive(n - 1, beta) + ive(n + 1, beta)) / ive(0, beta))
    return float(num / np.sum(r**V))


def u1_exact_charge_distribution(beta: float, L: int, q_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact distribution of the geometric topological charge of 2D U(1) on an L x L torus.

    The V = L^2 wrapped plaquette angles are independent with density ~ exp(beta cos t) on [-pi, pi),
    constrained to sum to 2 pi Q. So P(Q) is proportional to the density of their sum at 2 pi Q,
    (1/2 pi) int dk chi(k)^V exp(-2 pi i k Q), with chi(k) the characteristic function of one angle.
    Both integrals are done by quadrature.

    Arguments:
        beta: inverse coupling.
        L: lattice extent.
        q_max: charges -q_max..q_max are included (probabilities renormalised over them). None:
            8 standard deviations of Q (at least 12), from the variance V E[t^2] / (2 pi)^2 of the
            sum of the angles, which leaves out less than 1e-14 of the probability. A given
            q_max that cuts off more than 1e-9 of it gets a warning.

    Returns:
        (Q values, probabilities).
    """
    V = L * L
    t, wt = np.polynomial.legendre.leggauss(400)
    t = np.pi * t
    wt = np.pi * wt
    dens = np.exp(beta * (np.cos(t) - 1))
    dens /= np.sum(wt * dens)
    # chi(k)^V is negligible beyond |k| of a few units for V >= 16; the cutoff scales with 1/sqrt(V)
    if q_max is None:
        sd_q = math.sqrt(V * float(np.sum(wt * dens * t**2))) / (2 * math.pi)
        q_max = max(12, math.ceil(8 * sd_q))
    kmax = max(8.0, 60.0 / math.sqrt(V))
    k = np.linspace(-kmax, kmax, 8001)
    chi = (np.cos(np.outer(k, t)) * dens * wt).sum(axis=1)
    q = np.arange(-q_max, q_max + 1)
    integrand = np.sign(chi)[None, :] ** V * np.exp(V * np.log(np.abs(chi) + 1e-300))[None, :] * np.cos(2 * np.pi * np.outer(q, k))
    pq = np.trapezoid(integrand, k, axis=1) / (2 * np.pi)
    pq = np.maximum(pq, 0.0)
    # Over all charges, sum_Q density(2 pi Q) = (1/2 pi) sum_n chi(n)^V (Poisson summation), with
    # chi(n) = I_n(beta) / I_0(beta) at integer n: what the charges up to q_max miss of that is the
    # probability cut off.
    total = np.sum(_character_ratios(beta)[1] ** V) / (2 * np.pi)
    missed = 1.0 - pq.sum() / total
    if missed > 1e-9:
        warn_caller(f"charges up to |Q| = {q_max} hold only {1 - missed:.6g} of the probability at beta={beta}, "
                    f"L={L}; raise q_max (or leave it None)", RuntimeWarning)
    return q, pq / pq.sum()


def u1_exact_topological_susceptibility(beta: float, L: int, *, per_volume: bool = False) -> float:
    """Exact topological susceptibility of 2D U(1) on an L x L torus: <Q^2> (the convention of
    `observables.topological_susceptibility` and of Albergo et al.'s tutorial), or <Q^2> / V with
    `per_volume` (see `u1_exact_charge_distribution`)."""
    q, p = u1_exact_charge_distribution(beta, L)
    return float(np.sum(q**2 * p) / (L * L if per_volume else 1))
