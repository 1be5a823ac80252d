"""Flow-vs-HMC studies of the tutorial setups, shared by `experiments/lattice_*.py` and the CLI.

Each study trains a flow by reverse KL, runs independence Metropolis with it, runs an HMC baseline,
and measures the same observables on both chains, returning a JSON-ready dict.
"""

from __future__ import annotations

import json
import math
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .actions import Phi4Action, U1Action, topological_charge
from .exact import u1_exact_plaquette, u1_exact_topological_susceptibility
from .flows import make_phi4_flow, make_u1_flow
from .mcmc import HMC, flow_metropolis_chain, reweight, run_chain
from .observables import (
    average_plaquette,
    bootstrap,
    integrated_autocorrelation_time,
    magnetization,
    second_moment_correlation_length,
    two_point_susceptibility,
)
from .train import train_reverse_kl

# Published reference values (Albergo et al., arXiv:2101.08176, tutorial setups).
PUBLISHED_PHI4_CHI2 = (0.75, 0.01)  # HMC, L=8, m2=-4, lam=8
PUBLISHED_U1_CHI_Q = (1.23, 0.02)  # <Q^2>, L=8, beta=2
PUBLISHED_U1_FLOW_ACCEPTANCE = 0.24


def _block_size(tau: float, n: int) -> int:
    """Blocks of about 4 tau_int, but at least 50 blocks."""
    return int(max(1, min(math.ceil(4 * tau), n // 50)))


def _tau_dict(t) -> dict:
    return {"tau_int": t.tau, "tau_int_error": t.error, "window": t.window}


def _flatten(chains: np.ndarray) -> np.ndarray:
    return np.asarray(chains).reshape(-1, *np.shape(chains)[2:])


def _hmc(key, action_single, x0, *, n_chains, n_steps, burn_in, step_size, n_leapfrog, observe):
    """Run `n_chains` independent HMC chains (vmapped); returns (observations (chains, steps, ...), acceptance, seconds)."""
    kernel = HMC(action_single, step_size, n_leapfrog)

    @jax.jit
    def go(key, x0):
        state = jax.vmap(kernel.init)(x0)
        kb, ks = jax.random.split(key)
        state, _, _ = jax.vmap(lambda k, s: run_chain(k, kernel, s, burn_in))(jax.random.split(kb, n_chains), state)
        _, values, info = jax.vmap(lambda k, s: run_chain(k, kernel, s, n_steps, observe))(jax.random.split(ks, n_chains), state)
        return values, jnp.mean(info.accepted)

    start = time.perf_counter()
    values, acc = go(key, x0)
    values = jax.block_until_ready(values)
    return values, float(acc), time.perf_counter() - start


def run_phi4_study(
    key,
    *,
    L: int = 8,
    m2: float = -4.0,
    lam: float = 8.0,
    n_layers: int = 16,
    coupling: str = "affine",
    hidden_channels=(8, 8),
    train_steps: int = 2500,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    max_train_seconds: float | None = 600.0,
    n_mh: int = 16384,
    hmc_chains: int = 4,
    hmc_steps: int = 5000,
    hmc_burn_in: int = 500,
    hmc_step_size: float = 0.1,
    hmc_n_leapfrog: int = 10,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Flow + independence Metropolis vs HMC for 2D phi^4 (tutorial setup by default).

    Arguments:
        key: PRNG key.
        L, m2, lam: lattice and couplings.
        n_layers, coupling, hidden_channels: flow architecture.
        train_steps, batch_size, learning_rate, max_train_seconds: reverse-KL training.
        n_mh: length of the flow Metropolis chain.
        hmc_chains, hmc_steps, hmc_burn_in, hmc_step_size, hmc_n_leapfrog: HMC baseline.
        progress: show progress bars.

    Returns:
        (JSON-ready results, arrays for plotting).
    """
    kf, kt, km, kh, kb = jax.random.split(key, 5)
    action = Phi4Action(L, m2, lam)
    flow = make_phi4_flow(L, n_layers, coupling, hidden_channels, key=kf)
    cpu0 = time.process_time()
    flow, hist = train_reverse_kl(
        kt, flow, action, steps=train_steps, batch_size=batch_size, learning_rate=learning_rate,
        max_seconds=max_train_seconds, progress=progress,
    )
    train_cpu = time.process_time() - cpu0
    start = time.perf_counter()
    chain = flow_metropolis_chain(km, flow, action, n_mh)
    phi_flow = np.asarray(jax.block_until_ready(chain.samples))
    mh_seconds = time.perf_counter() - start

    x0 = 0.1 * jax.random.normal(kh, (hmc_chains, L, L))
    phi_hmc, hmc_acc, hmc_seconds = _hmc(
        kh, action, x0, n_chains=hmc_chains, n_steps=hmc_steps, burn_in=hmc_burn_in,
        step_size=hmc_step_size, n_leapfrog=hmc_n_leapfrog, observe=lambda x: x,
    )
    phi_hmc = np.asarray(phi_hmc)

    def measure(phi_chains, key):
        """phi_chains: (chains, steps, L, L)."""
        m = np.asarray(magnetization(phi_chains))
        taus_m2 = [integrated_autocorrelation_time(c**2) for c in m]
        taus_absm = [integrated_autocorrelation_time(np.abs(c)) for c in m]
        tau = float(np.mean([t.tau for t in taus_m2]))
        flat = _flatten(phi_chains)
        bs = _block_size(tau, m.shape[1])
        # blocks within each chain: blocking the concatenation mixes at most chains-1 blocks
        k1, k2, k3 = jax.random.split(key, 3)
        chi2 = two_point_susceptibility(k1, flat, block_size=bs)
        absm = bootstrap(k2, np.abs(m.reshape(-1)), block_size=bs)
        xi = second_moment_correlation_length(k3, flat, block_size=bs)
        return {
            "chi2": chi2._asdict(),
            "abs_magnetization": absm._asdict(),
            "xi_second_moment": xi._asdict(),
            "tau_int_M2": {"tau_int": tau, "tau_int_error": float(np.mean([t.error for t in taus_m2]))},
            "tau_int_absM": {"tau_int": float(np.mean([t.tau for t in taus_absm])),
                             "tau_int_error": float(np.mean([t.error for t in taus_absm]))},
            "block_size": bs,
            "n_samples": int(flat.shape[0]),
        }

    k1, k2, k3 = jax.random.split(kb, 3)
    flow_obs = measure(phi_flow[None], k1)
    hmc_obs = measure(phi_hmc, k2)
    # reweighting of the i.i.d. proposals: an independent, exact-in-the-limit estimate
    lw = np.asarray(chain.proposal_log_weights)
    m_prop = np.asarray(magnetization(chain.proposals))
    V = L * L
    chi2_rw = V * (float(reweight(jnp.asarray(m_prop**2), jnp.asarray(lw))) - float(reweight(jnp.asarray(m_prop), jnp.asarray(lw))) ** 2)
    results = {
        "theory": "phi4",
        "setup": {"L": L, "m2": m2, "lam": lam, "n_layers": n_layers, "coupling": coupling,
                  "hidden_channels": list(hidden_channels), "batch_size": batch_size, "learning_rate": learning_rate},
        "action_convention": "S = sum_x [sum_mu (phi(x+mu)-phi(x))^2 + m2 phi^2 + lam phi^4], identical to the tutorial's "
        "S = sum_x [-2 sum_mu phi(x)phi(x+mu) + (m2+4) phi^2 + lam phi^4]",
        "training": {"steps": int(hist.loss.shape[0]), "seconds": hist.seconds, "cpu_seconds_all_threads": train_cpu,
                     "final_loss_mean_last100": float(np.mean(np.asarray(hist.loss)[-100:])),
                     "final_batch_ess_mean_last100": float(np.mean(np.asarray(hist.ess)[-100:]))},
        "flow": {**flow_obs, "acceptance": float(chain.acceptance), "ess_per_sample": float(chain.ess_per_sample),
                 "mh_seconds": mh_seconds, "train_seconds": hist.seconds,
                 "wall_seconds": mh_seconds + hist.seconds, "chi2_reweighted_iid": chi2_rw},
        "hmc": {**hmc_obs, "acceptance": hmc_acc, "seconds": hmc_seconds, "chains": hmc_chains,
                "trajectories_per_chain": hmc_steps, "step_size": hmc_step_size, "n_leapfrog": hmc_n_leapfrog,
                "wall_seconds": hmc_seconds},
        "published": {"chi2_hmc": list(PUBLISHED_PHI4_CHI2)},
    }
    arrays = {"flow": flow, "loss": np.asarray(hist.loss), "ess": np.asarray(hist.ess),
              "m_flow": np.asarray(magnetization(phi_flow)), "m_hmc": np.asarray(magnetization(phi_hmc))[0],
              "log_weights": lw}
    return results, arrays


def run_u1_study(
    key,
    *,
    L: int = 8,
    beta: float = 2.0,
    n_layers: int = 24,
    n_mix: int = 6,
    hidden_channels=(8, 8),
    train_steps: int = 3000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    max_train_seconds: float | None = 600.0,
    n_mh: int = 16384,
    hmc_chains: int = 4,
    hmc_steps: int = 5000,
    hmc_burn_in: int = 500,
    hmc_step_size: float = 0.1,
    hmc_n_leapfrog: int = 10,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Gauge-equivariant flow + independence Metropolis vs HMC for 2D U(1) (tutorial setup by default).

    Arguments:
        key: PRNG key.
        L, beta: lattice and coupling.
        n_layers, n_mix, hidden_channels: flow architecture.
        train_steps, batch_size, learning_rate, max_train_seconds: reverse-KL training.
        n_mh: length of the flow Metropolis chain.
        hmc_chains, hmc_steps, hmc_burn_in, hmc_step_size, hmc_n_leapfrog: HMC baseline.
        progress: show progress bars.

    Returns:
        (JSON-ready results, arrays for plotting).
    """
    kf, kt, km, kh, kb = jax.random.split(key, 5)
    action = U1Action(L, beta)
    flow = make_u1_flow(L, n_layers, n_mix, hidden_channels, key=kf)
    cpu0 = time.process_time()
    flow, hist = train_reverse_kl(
        kt, flow, action, steps=train_steps, batch_size=batch_size, learning_rate=learning_rate,
        max_seconds=max_train_seconds, progress=progress,
    )
    train_cpu = time.process_time() - cpu0
    start = time.perf_counter()
    chain = flow_metropolis_chain(km, flow, action, n_mh)
    th_flow = np.asarray(jax.block_until_ready(chain.samples))
    mh_seconds = time.perf_counter() - start

    x0 = jax.random.uniform(kh, (hmc_chains, 2, L, L), minval=-math.pi, maxval=math.pi)
    obs_fn = lambda th: jnp.stack([topological_charge(th), average_plaquette(th)])
    vals, hmc_acc, hmc_seconds = _hmc(
        kh, action, x0, n_chains=hmc_chains, n_steps=hmc_steps, burn_in=hmc_burn_in,
        step_size=hmc_step_size, n_leapfrog=hmc_n_leapfrog, observe=obs_fn,
    )
    vals = np.asarray(vals)  # (chains, steps, 2)
    q_hmc = np.rint(vals[..., 0])
    plaq_hmc = vals[..., 1]
    q_flow = np.rint(np.asarray(topological_charge(th_flow)))[None]
    plaq_flow = np.asarray(average_plaquette(th_flow))[None]

    def measure(q, plaq, key):
        taus_q = [integrated_autocorrelation_time(c) for c in q]
        taus_q2 = [integrated_autocorrelation_time(c**2) for c in q]
        tau = max(float(np.mean([t.tau for t in taus_q])), float(np.mean([t.tau for t in taus_q2])))
        bs = _block_size(tau, q.shape[1])
        k1, k2 = jax.random.split(key)
        chi = bootstrap(k1, q.reshape(-1) ** 2, block_size=bs)
        pl = bootstrap(k2, plaq.reshape(-1), block_size=bs)
        return {
            "chi_Q": chi._asdict(),
            "chi_Q_per_volume": {"value": chi.value / (L * L), "error": chi.error / (L * L)},
            "plaquette": pl._asdict(),
            "tau_int_Q": {"tau_int": float(np.mean([t.tau for t in taus_q])),
                          "tau_int_error": float(np.mean([t.error for t in taus_q]))},
            "tau_int_Q2": {"tau_int": float(np.mean([t.tau for t in taus_q2])),
                           "tau_int_error": float(np.mean([t.error for t in taus_q2]))},
            "block_size": bs,
            "n_samples": int(q.size),
        }

    k1, k2 = jax.random.split(kb)
    results = {
        "theory": "u1",
        "setup": {"L": L, "beta": beta, "n_layers": n_layers, "n_mix": n_mix, "hidden_channels": list(hidden_channels),
                  "batch_size": batch_size, "learning_rate": learning_rate},
        "chi_Q_convention": "chi_Q = <Q^2> (tutorial convention, no 1/V); chi_Q_per_volume = <Q^2>/V",
        "training": {"steps": int(hist.loss.shape[0]), "seconds": hist.seconds, "cpu_seconds_all_threads": train_cpu,
                     "final_loss_mean_last100": float(np.mean(np.asarray(hist.loss)[-100:])),
                     "final_batch_ess_mean_last100": float(np.mean(np.asarray(hist.ess)[-100:]))},
        "flow": {**measure(q_flow, plaq_flow, k1), "acceptance": float(chain.acceptance),
                 "ess_per_sample": float(chain.ess_per_sample), "mh_seconds": mh_seconds,
                 "train_seconds": hist.seconds, "wall_seconds": mh_seconds + hist.seconds},
        "hmc": {**measure(q_hmc, plaq_hmc, k2), "acceptance": hmc_acc, "seconds": hmc_seconds, "chains": hmc_chains,
                "trajectories_per_chain": hmc_steps, "step_size": hmc_step_size, "n_leapfrog": hmc_n_leapfrog,
                "wall_seconds": hmc_seconds},
        "exact": {"chi_Q": u1_exact_topological_susceptibility(beta, L),
                  "plaquette": u1_exact_plaquette(beta, L)},
        "published": {"chi_Q": list(PUBLISHED_U1_CHI_Q), "flow_acceptance": PUBLISHED_U1_FLOW_ACCEPTANCE},
    }
    arrays = {"flow": flow, "loss": np.asarray(hist.loss), "ess": np.asarray(hist.ess), "q_flow": q_flow[0], "q_hmc": q_hmc[0]}
    return results, arrays


def format_table(results: dict) -> str:
    """Flow-vs-HMC table: observable, error, acceptance, ESS, tau_int, wall time."""
    rows = []
    if results["theory"] == "phi4":
        obs = [("chi2", "chi2"), ("|M|", "abs_magnetization"), ("xi_2nd", "xi_second_moment")]
        tau_key = "tau_int_M2"
    else:
        obs = [("<Q^2>", "chi_Q"), ("<cos P>", "plaquette")]
        tau_key = "tau_int_Q"
    head = f"{'sampler':<8}" + "".join(f"{name:>22}" for name, _ in obs) + f"{'accept':>9}{'ESS/N':>8}{tau_key:>16}{'wall[s]':>10}"
    rows.append(head)
    for sampler in ("flow", "hmc"):
        r = results[sampler]
        line = f"{sampler:<8}"
        for _, k in obs:
            line += f"{r[k]['value']:>13.4f} +- {r[k]['error']:<6.4f}"
        # flow: importance ESS of the proposals; HMC: 1 / (2 tau_int), the chain's effective fraction
        ess = r["ess_per_sample"] if sampler == "flow" else 1 / (2 * r[tau_key]["tau_int"])
        line += f"{r['acceptance']:>9.3f}{ess:>8.3f}{r[tau_key]['tau_int']:>9.2f}+-{r[tau_key]['tau_int_error']:<5.2f}{r['wall_seconds']:>10.1f}"
        rows.append(line)
    return "\n".join(rows)


def save_outputs(results: dict, arrays: dict, out_dir: str, name: str) -> tuple[str, str]:
    """Write `<name>.json`, `<name>.png` (training curve and observable histories) and the trained flow.

    The flow's parameters go to `<name>.eqx` (`eqx.tree_serialise_leaves`); reload them with
    `eqx.tree_deserialise_leaves(path, make_phi4_flow(...) or make_u1_flow(...))` built with the same settings.
    """
    os.makedirs(out_dir, exist_ok=True)
    if "flow" in arrays:
        eqx.tree_serialise_leaves(os.path.join(out_dir, f"{name}.eqx"), arrays["flow"])
    jpath = os.path.join(out_dir, f"{name}.json")
    with open(jpath, "w") as f:
        json.dump(results, f, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    loss = np.asarray(arrays["loss"])
    axes[0].plot(loss, lw=0.5)
    axes[0].set(xlabel="step", ylabel="reverse KL + log Z", title="training loss")
    tail = loss[len(loss) // 50:]
    tail = tail[np.isfinite(tail)]
    if tail.size > 1:  # the first steps' loss is orders of magnitude larger: zoom on the rest
        lo, hi = np.min(tail), np.percentile(tail, 99)
        axes[0].set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    axes[1].plot(arrays["ess"], lw=0.5)
    axes[1].set(xlabel="step", ylabel="batch ESS / N", title="training ESS", ylim=(0, 1))
    if results["theory"] == "phi4":
        axes[2].hist(arrays["m_hmc"], bins=60, density=True, alpha=0.5, label="HMC")
        axes[2].hist(arrays["m_flow"], bins=60, density=True, alpha=0.5, label="flow + MH")
        axes[2].set(xlabel="M = mean phi", title="magnetization")
    else:
        n = min(1000, len(arrays["q_flow"]), len(arrays["q_hmc"]))
        axes[2].plot(arrays["q_hmc"][:n], lw=0.7, label="HMC (per trajectory)")
        axes[2].plot(arrays["q_flow"][:n], lw=0.7, label="flow + MH (per proposal)")
        axes[2].set(xlabel="Markov step", ylabel="Q", title="topological charge history")
    axes[2].legend()
    fig.tight_layout()
    ppath = os.path.join(out_dir, f"{name}.png")
    fig.savefig(ppath, dpi=100)
    plt.close(fig)
    return jpath, ppath
