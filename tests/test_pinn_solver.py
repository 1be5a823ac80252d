"""PINN solver pieces against their definitions, and small problems trained to tolerance."""

import argparse
import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import compilations

from jaxhep.theory import pinn
from jaxhep.theory.pinn import (Box, Dirichlet, Initial, Neumann, Observations, PDEProblem, Periodic, PINNNet,
                                PINNSolver, TrainConfig, partial, rad_resample, solve, unit_sample)
from jaxhep.theory.pinn.cli import register



def _poisson1d(hard=False, unknown=None, data=None):
    box = Box([0.0], [1.0], names=("x",))

    def residual(u, x, c):
        return c["k"] * partial(u, x, 0, 0) + jnp.pi**2 * jnp.sin(jnp.pi * x[0])

    conds = [] if hard else [Dirichlet(0.0, 0, "both", n=16)]
    if data is not None:
        conds.append(Observations(*data))
    known = {} if unknown else {"k": 1.0}
    return PDEProblem(box, residual, conds, known=known, unknown=unknown or {}, name="poisson1d")


@pytest.mark.parametrize("lbfgs_rad_every", [0, 50], ids=["lbfgs-fixed-points", "lbfgs-rad-points"])
def test_small_problem_trains_to_tolerance(x64, lbfgs_rad_every):
    prob = _poisson1d()
    net = PINNNet(1, 1, width=16, depth=2, lower=[0.0], upper=[1.0], key=jax.random.key(0))
    cfg = TrainConfig(steps=200, batch=64, learning_rate=1e-2, warmup=20, decay_steps=100, sampler="lhs",
                      balance=True, balance_every=50, lbfgs_steps=150, lbfgs_points=64, chunk=50, progress=False,
                      lbfgs_rad_every=lbfgs_rad_every, rad_candidates=512)
    xs = np.linspace(0, 1, 101)[:, None]
    # The reference values as a column in one of the runs: they are taken in the predictions'
    # layout (they broadcast to (n, n) before, and the monitored error was meaningless).
    values = np.sin(np.pi * xs) if lbfgs_rad_every else np.sin(np.pi * xs[:, 0])
    with compilations() as compiled:
        model, hist = solve(jax.random.key(1), prob, net, cfg, eval_points=xs, eval_values=values)
    # One program for the four Adam chunks and one for the three L-BFGS chunks (optax's weakly
    # typed initial L-BFGS state compiled the second chunk again, about 2 s a solve).
    assert compiled.count("jit(run_chunk)") == 2, compiled
    err = float(pinn.relative_l2(prob.predict(model, xs), np.sin(np.pi * xs[:, 0])))
    assert err < 1e-3, err
    assert hist.phase[-1] == 1 and hist.loss[-1] < hist.loss[0]
    assert hist.error[-1] < 1e-3 and hist.term_names == ("res", "bc")
    # Each L-BFGS record's loss is the weighted sum of its terms: one point, not the loss of
    # the iterate before (it lagged by one step before).
    lb = hist.phase == 1
    np.testing.assert_allclose(hist.loss[lb], np.sum(hist.weights[lb] * hist.terms[lb], axis=1), rtol=1e-6)


def test_adam_phase_in_float32_then_lbfgs_in_float64(x64):
    prob = _poisson1d()
    net = PINNNet(1, 1, width=16, depth=2, lower=[0.0], upper=[1.0], key=jax.random.key(0))
    cfg = TrainConfig(steps=200, batch=64, learning_rate=1e-2, warmup=20, decay_steps=100, sampler="lhs",
                      balance=True, balance_every=50, lbfgs_steps=150, lbfgs_points=64, chunk=50, progress=False,
                      adam_float32=True)
    seen = []

    def callback(phase, step, m):
        seen.append((phase, {leaf.dtype for leaf in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array))}))

    xs = np.linspace(0, 1, 101)[:, None]
    model, hist = solve(jax.random.key(1), prob, net, cfg, eval_points=xs, eval_values=np.sin(np.pi * xs[:, 0]),
                        callback=callback)
    assert {p for p, _ in seen} == {0, 1}
    assert all(d == {jnp.dtype("float32")} for p, d in seen if p == 0)
    assert all(d == {jnp.dtype("float64")} for p, d in seen if p == 1)
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype("float64")}
    assert jax.config.jax_enable_x64  # the float32 phase restored the setting
    err = float(pinn.relative_l2(prob.predict(model, xs), np.sin(np.pi * xs[:, 0])))
    assert err < 1e-3, err
    assert np.all(np.isfinite(hist.error))


def test_inverse_problem_recovers_coefficient(x64):
    xs = np.linspace(0, 1, 40)[:, None]
    prob = _poisson1d(hard=True, unknown={"k": 2.0}, data=(xs, np.sin(np.pi * xs[:, 0])))
    net = PINNNet(1, 1, width=16, depth=2, lower=[0.0], upper=[1.0], key=jax.random.key(2))
    # Adam only (the L-BFGS path is covered above and is slow to compile on a loaded CPU).
    cfg = TrainConfig(steps=2000, batch=64, learning_rate=1e-2, warmup=20, decay_steps=500, decay_rate=0.7,
                      balance=True, balance_every=50, chunk=500, progress=False)
    model, _ = solve(jax.random.key(3), prob, net, cfg)
    k = float(prob.coefficients(model)["k"])
    # Exact data and residual: k = 1 is the only consistent value.
    assert abs(k - 1.0) < 1e-2, k


def test_gradient_norm_balancing_matches_definition(x64):
    prob = _poisson1d()
    net = PINNNet(1, 1, width=8, depth=1, lower=[0.0], upper=[1.0], key=jax.random.key(4))
    model = prob.init_model(net)
    solver = PINNSolver(prob, TrainConfig(batch=32, balance_alpha=0.0))
    pts = solver.sample_points(jax.random.key(5), jnp.zeros((1, 1)))
    w = eqx.filter_jit(solver.balanced_weights)(model, pts, jnp.ones(2))

    @eqx.filter_jit
    def norm(m, i):
        g = eqx.filter_grad(lambda m: solver.loss_terms(m, pts)[0][i])(m)
        return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(g)))

    norms = [float(norm(model, i)) for i in range(2)]
    np.testing.assert_allclose(np.asarray(w), sum(norms) / np.asarray(norms), rtol=1e-8)


def test_causal_weights_match_definition(x64):
    box = Box([0.0, 0.0], [1.0, 1.0], time_dim=1)
    prob = PDEProblem(box, lambda u, x, c: u(x) - x[1] ** 2, [], name="toy")
    net = PINNNet(2, 1, width=8, depth=1, key=jax.random.key(6))
    model = prob.init_model(net)
    solver = PINNSolver(prob, TrainConfig(batch=64, causal=True, causal_chunks=4, causal_eps=3.0))
    pts = solver.sample_points(jax.random.key(7), jnp.zeros((1, 2)))
    assert np.all(np.diff(np.asarray(pts["res"][:, 1])) >= 0)  # sorted in time
    terms, wmin = eqx.filter_jit(solver.loss_terms)(model, pts)
    r2 = np.asarray(eqx.filter_jit(prob.residuals)(model, pts["res"])) ** 2
    chunk = r2.reshape(4, 16).mean(axis=1)
    weights = np.exp(-3.0 * np.concatenate([[0.0], np.cumsum(chunk)[:-1]]))
    np.testing.assert_allclose(float(terms[0]), np.mean(weights * chunk), rtol=1e-10)
    np.testing.assert_allclose(float(wmin), weights[-1], rtol=1e-10)


def test_latin_hypercube_has_one_point_per_stratum():
    u = np.asarray(unit_sample(jax.random.key(8), 50, 3, "lhs"))
    for d in range(3):
        np.testing.assert_array_equal(np.sort(np.floor(u[:, d] * 50)), np.arange(50))
    s = np.asarray(unit_sample(jax.random.key(9), 64, 2, "sobol"))
    assert s.shape == (64, 2) and np.all((s >= 0) & (s < 1))
    # A scrambled Sobol set of 2^m points is a (0, m, 2)-net: one point per elementary 1/8 x 1/8 box.
    cells = np.floor(s * 8).astype(int)
    assert len({tuple(c) for c in cells}) == 64


def test_rad_resample_frequencies():
    cand = jnp.arange(4.0)[:, None]
    r = jnp.array([0.0, 0.0, 1.0, 3.0])
    n = 20000
    pts = np.asarray(rad_resample(jax.random.key(10), cand, r, n, k=1.0, c=0.5))[:, 0]
    p = np.array([0.0, 0.0, 1.0, 3.0]) / 1.0 + 0.5
    p = p / p.sum()
    freq = np.bincount(pts.astype(int), minlength=4) / n
    # Five binomial standard deviations.
    np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(p * (1 - p) / n).max())


def test_rad_resample_with_all_residuals_zero_is_uniform():
    cand = jnp.arange(4.0)[:, None]
    pts = np.asarray(rad_resample(jax.random.key(11), cand, jnp.zeros(4), 8000, k=1.0, c=0.0))[:, 0]
    freq = np.bincount(pts.astype(int), minlength=4) / 8000
    np.testing.assert_allclose(freq, 0.25, atol=5 * np.sqrt(0.25 * 0.75 / 8000))


def test_observations_of_a_scalar_solution_may_be_a_column():
    # y of shape (n, 1) once broadcast against the (n,) predictions: a loss of all pairs.
    box = Box([0.0], [1.0], time_dim=None)
    x = np.linspace(0, 1, 7)[:, None]
    u = lambda p: jnp.sin(p[0])  # noqa: E731
    for y in (np.sin(x[:, 0]), np.sin(x)):
        obs = Observations(x, y)
        PDEProblem(box, lambda u, x, c: u(x), [obs])
        assert float(obs.loss(u, jnp.asarray(x), box)) < 1e-12


def test_network_embeddings(x64):
    net = PINNNet(2, 1, width=16, depth=2, arch="modified", periodic={0: 2.0}, harmonics=2, fourier_scale=2.0,
                  fourier_features=8, factorization=(1.0, 0.1), key=jax.random.key(11))
    pts = jax.random.uniform(jax.random.key(12), (10, 2))
    shifted = pts.at[:, 0].add(2.0)
    apply = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    np.testing.assert_allclose(apply(net, pts), apply(net, shifted), rtol=1e-12, atol=1e-12)
    # Factorised layers start at the same weights as plain ones from the same key.
    plain = PINNNet(2, 1, width=16, depth=2, key=jax.random.key(13))
    fact = PINNNet(2, 1, width=16, depth=2, factorization=(1.0, 0.1), key=jax.random.key(13))
    np.testing.assert_allclose(apply(plain, pts), apply(fact, pts), rtol=1e-10, atol=1e-12)
    # The random Fourier matrix is fixed: no gradient flows into it.
    g = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(pts) ** 2)))(net)
    assert float(jnp.max(jnp.abs(g.fourier_b))) == 0.0
    assert float(jnp.max(jnp.abs(g.hidden[0].v))) > 0.0


def test_neumann_and_periodic_losses_vanish_for_exact_functions(x64):
    box = Box([0.0, 0.0], [1.0, 1.0], time_dim=1)
    u = lambda x: jnp.cos(2 * jnp.pi * x[0]) * jnp.exp(-x[1])  # noqa: E731
    v = lambda x: x[0] ** 2  # noqa: E731 - outward derivative 0 at x = 0 and 2 at x = 1
    per = Periodic(0, derivatives=2, n=32)
    neu = Neumann(0.0, 0, "both", n=32)
    ic = Initial(lambda x: jnp.cos(2 * jnp.pi * x[0]), 1, n=32)

    @jax.jit
    def losses(key):
        k1, k2, k3 = jax.random.split(key, 3)
        pn = neu.sample(k2, box, "uniform")
        return (per.loss(u, per.sample(k1, box, "uniform"), box), neu.loss(u, pn, box), neu.loss(v, pn, box),
                ic.loss(u, ic.sample(k3, box, "lhs"), box))

    lp, ln, wrong, li = losses(jax.random.key(14))
    assert float(lp) < 1e-26 and float(ln) < 1e-26 and float(li) < 1e-26
    np.testing.assert_allclose(float(wrong), 2.0, rtol=1e-12)  # half the points see error 2^2, half 0


def test_errors_name_the_problem():
    box = Box([0.0, 0.0], [1.0, 1.0], time_dim=None)
    prob = PDEProblem(box, lambda u, x, c: u(x), [])
    with pytest.raises(ValueError, match="time coordinate"):
        PINNSolver(prob, TrainConfig(causal=True))
    with pytest.raises(ValueError, match="sampler"):
        PINNSolver(prob, TrainConfig(sampler="grid"))
    with pytest.raises(ValueError, match="multiple of causal_chunks"):
        PINNSolver(PDEProblem(Box([0, 0], [1, 1], time_dim=1), lambda u, x, c: u(x)),
                   TrainConfig(causal=True, batch=100, causal_chunks=16))
    with pytest.raises(ValueError, match="upper > lower"):
        Box([0.0], [0.0])
    with pytest.raises(ValueError, match="coordinate 3"):
        PDEProblem(box, lambda u, x, c: u(x), [Dirichlet(0.0, 3)])
    with pytest.raises(ValueError, match="NaN"):
        PDEProblem(box, lambda u, x, c: u(x), [Observations(np.zeros((2, 2)), np.array([0.0, np.nan]))])
    with pytest.raises(ValueError, match="both known and unknown"):
        PDEProblem(box, lambda u, x, c: u(x), [], known={"a": 1.0}, unknown={"a": 2.0})
    with pytest.raises(ValueError, match="fitted in log space"):
        PDEProblem(box, lambda u, x, c: u(x), [], unknown={"a": -0.1})
    PDEProblem(box, lambda u, x, c: u(x), [], unknown={"a": -0.1}, coeff_transform={"a": (lambda v: v, lambda v: v)})
    # A misspelt name was accepted and the coefficient silently fitted in log space.
    with pytest.raises(ValueError, match=r"coeff_transform names \['A'\], which are not unknown"):
        PDEProblem(box, lambda u, x, c: u(x), [], unknown={"a": 0.1}, coeff_transform={"A": (lambda v: v, lambda v: v)})
    # causal_chunks=0 divided by zero before its check.
    with pytest.raises(ValueError, match="causal_chunks must be >= 1"):
        PINNSolver(PDEProblem(Box([0, 0], [1, 1], time_dim=1), lambda u, x, c: u(x)),
                   TrainConfig(causal=True, causal_chunks=0))
    with pytest.raises(ValueError, match=r"relative_l2 needs arrays of one shape, got \(3,\) and \(3, 1\)"):
        pinn.relative_l2(np.zeros(3), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"y with n rows of 1 value\(s\)"):
        PDEProblem(box, lambda u, x, c: u(x), [Observations(np.zeros((2, 2)), np.zeros((2, 2)))])
    with pytest.raises(ValueError, match="unknown PINN problem"):
        pinn.get_benchmark("navier_stokes")
    with pytest.raises(ValueError, match="arch"):
        PINNNet(2, 1, arch="kan", key=jax.random.key(0))


def test_observations_are_not_modified(x64):
    x = np.linspace(0, 1, 5)[:, None]
    y = np.sin(x[:, 0])
    x0, y0 = x.copy(), y.copy()
    prob = _poisson1d(hard=True, unknown={"k": 2.0}, data=(x, y))
    solver = PINNSolver(prob, TrainConfig(batch=8, chunk=1))
    state = solver.init(jax.random.key(0), prob.init_model(PINNNet(1, 1, width=4, depth=1, key=jax.random.key(1))))
    eqx.filter_jit(solver.step)(jax.random.key(2), state)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_cli_registers_pinn_subcommand():
    parser = argparse.ArgumentParser(prog="jaxhep")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pinn", "burgers", "--steps", "10", "--seed", "3", "--no-progress"])
    assert args.problem == "burgers" and args.steps == 10 and args.seed == 3 and args.no_progress
    assert args.out == "./jaxhep-out" and args.func.__name__ == "handler"
    with pytest.raises(SystemExit):
        parser.parse_args(["pinn", "navier_stokes"])


def test_time_windows_dispatch_by_time():
    from jaxhep.theory.pinn.marching import TimeWindows

    nets = [lambda x, v=v: jnp.array([v]) for v in (1.0, 2.0, 3.0)]
    tw = TimeWindows(nets, [0.0, 0.5, 0.75, 1.0], time_dim=1)
    ts = jnp.array([0.0, 0.49, 0.5, 0.6, 0.75, 1.0])
    out = jax.vmap(lambda t: tw(jnp.array([0.3, t])))(ts)
    np.testing.assert_array_equal(np.asarray(out[:, 0]), [1, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="window edges"):
        TimeWindows(nets, [0.0, 1.0], time_dim=1)


def test_time_marching_carries_the_solution_across_windows(x64):
    # u_t + 3 u_x = 0, periodic in x, u0 = sin x: exact u = sin(x - 3 t). Two windows, each
    # starting from the previous window's solution at its end.
    from jaxhep.theory.pinn.marching import solve_time_marching

    speed = 3.0
    box = Box([0.0, 0.0], [2 * np.pi, 1.0], time_dim=1, names=("x", "t"))
    prob = PDEProblem(box, lambda u, x, c: partial(u, x, 1) + c["c"] * partial(u, x, 0),
                      [Initial(lambda x: jnp.sin(x[0]), 1, n=64)], known={"c": speed}, name="adv")
    # Steps are for the whole run: 200 Adam steps and 200 L-BFGS iterations per window.
    cfg = TrainConfig(steps=400, batch=128, learning_rate=5e-3, warmup=20, decay_steps=100, sampler="lhs",
                      balance=False, lbfgs_steps=400, lbfgs_points=128, chunk=100, progress=False)

    def make_net(k, b):
        return PINNNet(2, 1, width=16, depth=2, lower=b.lower, upper=b.upper, periodic={0: 2 * np.pi}, key=k)

    g = np.stack(np.meshgrid(np.linspace(0, 2 * np.pi, 40), np.linspace(0, 1, 31), indexing="ij"), -1).reshape(-1, 2)
    exact = np.sin(g[:, 0] - speed * g[:, 1])
    model, hist = solve_time_marching(jax.random.key(0), prob, make_net, cfg, 2, eval_points=g, eval_values=exact)
    assert len(model.net.nets) == 2 and model.net.edges == (0.0, 0.5, 1.0)
    # The second window's Adam phase can run in float32 from the first window's float64 solution.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model32, _ = solve_time_marching(jax.random.key(0), prob, make_net,
                                         dataclasses.replace(cfg, adam_float32=True, lbfgs_steps=0), 2)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(eqx.filter(model32, eqx.is_inexact_array))} == {
        jnp.dtype("float64")}
    err32 = float(pinn.relative_l2(prob.predict(model32, g), exact))
    assert err32 < 0.5, err32  # Adam alone, 200 steps per window: a rough solution, not a diverged one
    assert np.all(np.diff(hist.step) > 0) and np.all(np.diff(hist.seconds) >= 0)
    assert hist.step[-1] <= 800 and np.sum(hist.phase == 0) == 4  # two Adam chunks of 100 per window
    err = float(pinn.relative_l2(prob.predict(model, g), exact))
    assert err < 2e-2, err
    with pytest.raises(ValueError, match="exactly one initial condition"):
        solve_time_marching(jax.random.key(0), PDEProblem(box, prob.residual, [], known={"c": speed}), make_net,
                            cfg, 2)
    with pytest.raises(ValueError, match="unknown coefficients"):
        solve_time_marching(jax.random.key(0), PDEProblem(box, prob.residual, prob.conditions,
                                                          unknown={"c": 1.0}), make_net, cfg, 2)
    # Observations went to every window whole, which then fitted the data outside its time range.
    data = Observations(np.array([[0.1, 0.2], [0.5, 0.9]]), np.zeros(2))
    with pytest.raises(ValueError, match="does not support Observations"):
        solve_time_marching(jax.random.key(0), PDEProblem(box, prob.residual, (*prob.conditions, data),
                                                          known={"c": speed}), make_net, cfg, 2)
