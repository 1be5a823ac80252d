"""Samplers and observables against exact results: free field, exact 2D U(1), AR(1) autocorrelation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep.theory.lattice import (
    HMC,
    FlowMetropolis,
    Phi4Action,
    U1Action,
    average_plaquette,
    bootstrap,
    correlator_per_config,
    effective_mass_from_correlator,
    ess_per_sample,
    flow_metropolis_chain,
    free_field_two_point,
    integrated_autocorrelation_time,
    make_phi4_flow,
    reweight,
    run_chain,
    second_moment_correlation_length,
    topological_charge,
    train_reverse_kl,
    two_point_susceptibility,
    u1_exact_charge_distribution,
    u1_exact_plaquette,
    u1_exact_topological_susceptibility,
)


def _free_field_samples(key, n, L, m2):
    """Exact i.i.d. draws of the free field: independent Fourier modes with variance V G~(p)."""
    g = free_field_two_point(L, m2)
    power = np.real(np.fft.fft2(g))  # G~(p) = 1 / (2 (p_hat^2 + m2))
    white = jax.random.normal(key, (n, L, L))
    return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(white) * jnp.sqrt(jnp.asarray(power))))


def test_exact_free_field_results():
    L, m2 = 8, 0.5
    g = free_field_two_point(L, m2)
    np.testing.assert_allclose(g.sum(), 1 / (2 * m2), rtol=1e-12)  # chi_2 = G~(0)
    # zero-momentum correlator is a pure cosh with energy arccosh(1 + m2/2)
    np.testing.assert_allclose(effective_mass_from_correlator(g), np.arccosh(1 + m2 / 2), rtol=1e-10)
    # the quadratic action is phi^T A phi, so <phi(0)^2> = [(2A)^-1]_00; check against a dense inverse
    V = L * L
    A = np.asarray(jax.hessian(lambda f: Phi4Action(L, m2, 0.0)(f.reshape(L, L)))(jnp.zeros(V, jnp.float32)))
    np.testing.assert_allclose(np.linalg.inv(A)[0].reshape(L, L), g, rtol=1e-4, atol=1e-6)


def test_observables_on_exact_free_field_samples():
    L, m2, n = 8, 0.5, 4000
    phi = _free_field_samples(jax.random.key(0), n, L, m2)
    chi = two_point_susceptibility(jax.random.key(1), phi, n_boot=200)
    assert abs(chi.value - 1 / (2 * m2)) < 4 * chi.error
    xi = second_moment_correlation_length(jax.random.key(2), phi, n_boot=200)
    assert abs(xi.value - 1 / math.sqrt(m2)) < 4 * xi.error  # xi_2nd = 1/m exactly for the free field
    c = np.asarray(correlator_per_config(phi)).mean(0)
    err = np.asarray(correlator_per_config(phi)).std(0) / math.sqrt(n)
    assert np.all(np.abs(c - free_field_two_point(L, m2)) < 4.5 * err)


def test_bootstrap_error_of_a_mean():
    x = jax.random.normal(jax.random.key(3), (10000,))
    est = bootstrap(jax.random.key(4), x, n_boot=400)
    np.testing.assert_allclose(est.error, 0.01, rtol=0.15)  # sigma / sqrt(n)
    assert abs(est.value) < 4 * 0.01
    with pytest.raises(ValueError, match="statistic must return one number"):
        bootstrap(jax.random.key(4), jnp.zeros((100, 2)))
    assert bootstrap(jax.random.key(4), jnp.ones((100, 2)), lambda m: m[0] + m[1]).value == 2.0


def test_tau_int_of_ar1_process():
    rho, n = 0.8, 200_000
    rng = np.random.default_rng(0)
    eps = rng.normal(size=n)
    x = np.empty(n)
    x[0] = eps[0] / math.sqrt(1 - rho**2)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + eps[t]
    t = integrated_autocorrelation_time(x)
    exact = 0.5 * (1 + rho) / (1 - rho)  # 1/2 + sum_t rho^t
    assert abs(t.tau - exact) < 4 * t.error
    iid = integrated_autocorrelation_time(rng.normal(size=20000))
    assert abs(iid.tau - 0.5) < 4 * iid.error


def test_hmc_reproduces_free_field_two_point_function():
    L, m2, chains, steps = 4, 1.0, 32, 400
    kernel = HMC(Phi4Action(L, m2, 0.0), step_size=0.2, n_leapfrog=5)

    @jax.jit
    def go(key):
        k0, k1 = jax.random.split(key)
        state = jax.vmap(kernel.init)(jax.random.normal(k0, (chains, L, L)))
        run = lambda k, s: run_chain(k, kernel, s, steps, observe=correlator_per_config)
        _, corr, info = jax.vmap(run)(jax.random.split(k1, chains), state)
        return corr, info.accepted.mean()

    corr, acc = go(jax.random.key(5))
    corr = np.asarray(corr)[:, 50:]  # drop burn-in
    per_chain = corr.mean(axis=1)  # independent chains give an honest error bar
    mean = per_chain.mean(0)
    err = per_chain.std(0, ddof=1) / math.sqrt(chains)
    exact = free_field_two_point(L, m2)
    assert acc > 0.6
    assert np.all(np.abs(mean - exact) < 4.5 * err), (mean, exact, err)
    assert np.all(err < 0.1 * np.abs(exact).max())  # the check has power


@pytest.mark.slow
def test_hmc_u1_plaquette_and_charge_match_exact_solution():
    L, beta, chains, steps = 4, 2.0, 32, 300
    kernel = HMC(U1Action(L, beta), step_size=0.15, n_leapfrog=8)
    obs = lambda th: jnp.stack([average_plaquette(th), jnp.round(topological_charge(th)) ** 2])

    @jax.jit
    def go(key):
        k0, k1 = jax.random.split(key)
        state = jax.vmap(kernel.init)(jax.random.uniform(k0, (chains, 2, L, L), minval=-math.pi, maxval=math.pi))
        _, vals, info = jax.vmap(lambda k, s: run_chain(k, kernel, s, steps, observe=obs))(jax.random.split(k1, chains), state)
        return vals, info.accepted.mean()

    vals, acc = go(jax.random.key(6))
    per_chain = np.asarray(vals)[:, 50:].mean(axis=1)
    mean, err = per_chain.mean(0), per_chain.std(0, ddof=1) / math.sqrt(chains)
    q, p = u1_exact_charge_distribution(beta, L)
    assert acc > 0.6
    assert abs(mean[0] - u1_exact_plaquette(beta, L)) < 4.5 * err[0]
    assert abs(mean[1] - float(np.sum(q**2 * p))) < 4.5 * err[1]


def test_exact_u1_charge_distribution_is_consistent():
    # infinite-volume limit of the plaquette is I1/I0; the charge distribution is symmetric and normalised
    from scipy.special import iv

    np.testing.assert_allclose(u1_exact_plaquette(2.0, 16), iv(1, 2.0) / iv(0, 2.0), rtol=1e-8)
    q, p = u1_exact_charge_distribution(2.0, 8)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p, p[::-1], atol=1e-10)
    np.testing.assert_allclose(np.sum(q**2 * p), 1.2393, atol=1e-3)  # the tutorial quotes 1.23(2)
    assert u1_exact_topological_susceptibility(2.0, 8) == pytest.approx(np.sum(q**2 * p), rel=1e-12)
    assert u1_exact_topological_susceptibility(2.0, 8, per_volume=True) == pytest.approx(np.sum(q**2 * p) / 64)


def _charge_q2_by_convolution(beta, L, n_grid=801):
    """<Q^2> from the density of the sum of the V plaquette angles, built by V-fold convolution
    of the one-angle density on a grid (FFT), read off at the multiples of 2 pi: a computation
    independent of the characteristic-function quadrature in `exact.py`."""
    V = L * L
    t = np.linspace(-math.pi, math.pi, n_grid)
    h = t[1] - t[0]
    weights = np.ones(n_grid)
    weights[[0, -1]] = 0.5
    one = np.exp(beta * (np.cos(t) - 1)) * weights
    one /= one.sum() * h
    n_out = V * (n_grid - 1) + 1
    size = 1 << (n_out - 1).bit_length()
    total = np.fft.irfft(np.fft.rfft(one * h, size) ** V, size)[:n_out] / h
    s = -V * math.pi + h * np.arange(n_out)
    q = np.arange(-(V // 2), V // 2 + 1)
    p = np.maximum(total[np.rint((2 * math.pi * q - s[0]) / h).astype(int)], 0.0)
    return float(np.sum(q**2 * p) / p.sum())


@pytest.mark.parametrize("beta, L", [(1.0, 16), (1.0, 24), (0.5, 32)])
def test_exact_u1_charge_distribution_keeps_enough_charges_on_large_lattices(beta, L):
    """The default charge range grows with the spread of Q. A fixed |Q| <= 12 gave <Q^2> 7% low
    at beta=1, L=24 and 40% low at beta=0.5, L=32; a range that cuts off probability warns."""
    reference = _charge_q2_by_convolution(beta, L)
    assert u1_exact_topological_susceptibility(beta, L) == pytest.approx(reference, rel=1e-4)
    if L >= 24:
        with pytest.warns(RuntimeWarning, match="raise q_max"):
            u1_exact_charge_distribution(beta, L, q_max=12)


@pytest.fixture(scope="module")
def small_problem():
    """A 2x2 free field (4 sites) and a briefly trained small flow: MH must correct what training misses."""
    L, m2 = 2, 1.0
    action = Phi4Action(L, m2, 0.0)
    flow = make_phi4_flow(L, 2, "affine", hidden_channels=(4,), key=jax.random.key(7))
    flow, hist = train_reverse_kl(jax.random.key(8), flow, action, steps=40, batch_size=64, chunk=40, progress=False)
    return L, m2, action, flow, hist


def test_reverse_kl_training_respects_the_free_energy_bound(small_problem):
    L, m2, action, flow, hist = small_problem
    # exp(-phi^T A phi): log Z = (V/2) log(pi) - (1/2) log det A; the loss mean(log q + S) >= -log Z
    A = np.asarray(jax.hessian(lambda f: action(f.reshape(L, L)))(jnp.zeros(L * L))) / 2
    log_z = 0.5 * L * L * math.log(math.pi) - 0.5 * np.linalg.slogdet(A)[1]
    x, logq = flow.sample_and_log_prob(jax.random.key(9), 20000)
    kl = np.asarray(logq + action(x)) + log_z  # per-sample log(q/p): its mean is KL(q||p) >= 0
    assert kl.mean() > -4 * kl.std() / math.sqrt(kl.size)
    assert float(hist.loss[-10:].mean()) < float(hist.loss[:10].mean())  # training made progress


def test_flow_metropolis_is_exact_and_reweighting_agrees(small_problem):
    L, m2, action, flow, _ = small_problem
    exact_chi = 1 / (2 * m2)
    chain = flow_metropolis_chain(jax.random.key(10), flow, action, 40000, batch_size=8192)
    assert 0.05 < float(chain.acceptance) < 1.0
    assert 0.0 < float(chain.ess_per_sample) <= 1.0
    m2_chain = np.asarray(jnp.mean(chain.samples, axis=(1, 2))) ** 2 * L * L  # V M^2 (<M> = 0 by symmetry)
    tau = integrated_autocorrelation_time(m2_chain)
    err = m2_chain.std() * math.sqrt(2 * tau.tau / m2_chain.size)
    assert abs(m2_chain.mean() - exact_chi) < 4 * err
    m_prop = jnp.mean(chain.proposals, axis=(1, 2))
    rw = float(reweight(L * L * m_prop**2, chain.proposal_log_weights))
    assert abs(rw - exact_chi) < 4 * err / math.sqrt(float(chain.ess_per_sample))
    # the step-by-step kernel gives the same stationary law
    kern = FlowMetropolis(flow, action)
    _, vals, info = jax.jit(lambda k: run_chain(k, kern, kern.init(jax.random.key(11)), 4000, observe=lambda x: jnp.mean(x) ** 2 * L * L))(jax.random.key(12))
    vals = np.asarray(vals)
    t2 = integrated_autocorrelation_time(vals)
    assert abs(vals.mean() - exact_chi) < 4 * vals.std() * math.sqrt(2 * t2.tau / vals.size)


def test_ess_per_sample_limits():
    np.testing.assert_allclose(ess_per_sample(jnp.zeros(100)), 1.0, rtol=1e-6)
    lw = jnp.array([0.0] + [-1e3] * 99)
    np.testing.assert_allclose(ess_per_sample(lw), 0.01, rtol=1e-5)


@pytest.mark.slow
def test_forward_kl_term_from_samples_respects_gibbs_inequality():
    # cross-entropy -E_p[log q] >= entropy H(p), with H of the Gaussian exp(-phi^T A phi) in closed form
    L, m2 = 2, 1.0
    action = Phi4Action(L, m2, 0.0)
    data = _free_field_samples(jax.random.key(13), 4096, L, m2)
    test = _free_field_samples(jax.random.key(14), 20000, L, m2)
    flow = make_phi4_flow(L, 2, "affine", hidden_channels=(4,), key=jax.random.key(15))
    before = -float(flow.log_prob(test).mean())
    flow, _ = train_reverse_kl(
        jax.random.key(16), flow, action, steps=60, batch_size=64, learning_rate=3e-3, data=data, chunk=60, progress=False
    )
    ce = -np.asarray(flow.log_prob(test))
    A = np.asarray(jax.hessian(lambda f: action(f.reshape(L, L)))(jnp.zeros(L * L))) / 2
    cov = np.linalg.inv(2 * A)
    entropy = 0.5 * L * L * math.log(2 * math.pi * math.e) + 0.5 * np.linalg.slogdet(cov)[1]
    assert ce.mean() > entropy - 4 * ce.std() / math.sqrt(ce.size)
    assert ce.mean() < before  # the data term pulled q towards p
    with pytest.raises(ValueError, match="data must have shape"):
        train_reverse_kl(jax.random.key(0), flow, action, steps=1, data=jnp.zeros((10, 3, 3)), progress=False)
