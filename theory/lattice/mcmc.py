"""Exact sampling: independence Metropolis-Hastings with a flow proposal, reweighting, and an HMC baseline.

Both samplers follow the house `init -> state`, `step(key, state) -> (state, info)` pattern, with
immutable NamedTuple states; `run_chain` scans a kernel's `step` with `lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .flows import LatticeFlow
from .train import ess_per_sample

# ----------------------------------------------------------------------------- independence MH


class IMHState(NamedTuple):
    """State of the independence sampler: the current configuration and its log weight -S - log q."""

    x: Array
    log_weight: Array


class IMHInfo(NamedTuple):
    """Per-step information: whether the proposal was accepted and its acceptance probability."""

    accepted: Array
    acceptance_prob: Array


def imh_accept(key: PRNGKeyArray, state: IMHState, x_new: Array, logw_new: Array) -> tuple[IMHState, IMHInfo]:
    """Metropolis-Hastings test for an independence proposal with log weight log p~ - log q.

    Arguments:
        key: PRNG key.
        state: current state.
        x_new: proposed configuration, drawn from q independently of the state.
        logw_new: its log weight -S(x_new) - log q(x_new).

    Returns:
        (new state, info). The acceptance probability is min(1, w_new / w_current).
    """
    log_ratio = logw_new - state.log_weight
    p = jnp.exp(jnp.minimum(log_ratio, 0.0))
    accept = jnp.log(jax.random.uniform(key)) < log_ratio
    x = jnp.where(accept, x_new, state.x)
    lw = jnp.where(accept, logw_new, state.log_weight)
    return IMHState(x, lw), IMHInfo(accept, p)


class FlowMetropolis(eqx.Module):
    """Independence Metropolis-Hastings kernel with a trained flow as proposal; exact for exp(-S).

    Attributes:
        flow: the proposal q.
        action: batched action S.
    """

    flow: LatticeFlow
    action: Callable

    def init(self, key: PRNGKeyArray) -> IMHState:
        """Start the chain from one flow draw."""
        x, logq = self.flow.sample_and_log_prob(key, 1)
        return IMHState(x[0], (-self.action(x) - logq)[0])

    def step(self, key: PRNGKeyArray, state: IMHState) -> tuple[IMHState, IMHInfo]:
        """Propose one flow draw and accept or reject it."""
        k1, k2 = jax.random.split(key)
        x, logq = self.flow.sample_and_log_prob(k1, 1)
        return imh_accept(k2, state, x[0], (-self.action(x) - logq)[0])


class FlowChain(NamedTuple):
    """Output of `flow_metropolis_chain`.

    Attributes:
        samples: the Markov chain, (n_steps, ...).
        proposals: the i.i.d. proposals in the order they were offered, (n_steps, ...).
        accepted: whether each step accepted its proposal.
        proposal_log_weights: log weights -S - log q of all proposals (i.i.d. draws of q).
        acceptance: the fraction of accepted proposals.
        ess_per_sample: (sum w)^2 / (n sum w^2) of the proposals.
    """

    samples: Array
    proposals: Array
    accepted: Array
    proposal_log_weights: Array
    acceptance: Array
    ess_per_sample: Array


def flow_metropolis_chain(
    key: PRNGKeyArray, flow: LatticeFlow, action: Callable, n_steps: int, batch_size: int = 1024
) -> FlowChain:
    """Run independence Metropolis with proposals drawn in batches (same chain as `FlowMetropolis.step`).

    Proposals of an independence sampler do not depend on the state, so they are drawn in batches of
    `batch_size` first and the accept/reject pass is a `lax.scan`. The first proposal starts the chain.

    Arguments:
        key: PRNG key.
        flow: trained flow (proposal).
        action: batched action.
        n_steps: chain length.
        batch_size: proposals drawn per flow call.

    Returns:
        A `FlowChain`.

    Raises:
        ValueError: if n_steps or batch_size is not positive.
    """
    if n_steps < 1 or batch_size < 1:
        raise ValueError(f"n_steps and batch_size must be positive; got {n_steps}, {batch_size}")
    n_batches = -(-n_steps // batch_size)
    kp, ka = jax.random.split(key)

    @eqx.filter_jit
    def propose(flow, k):
        x, logq = flow.sample_and_log_prob(k, batch_size)
        return x, -action(x) - logq

    xs, lws = [], []
    for k in jax.random.split(kp, n_batches):
        x, lw = propose(flow, k)
        xs.append(x)
        lws.append(lw)
    x = jnp.concatenate(xs)[:n_steps]
    lw = jnp.concatenate(lws)[:n_steps]
    chain_idx, accepted = _imh_indices(ka, lw)
    return FlowChain(x[chain_idx], x, accepted, lw, jnp.mean(accepted), ess_per_sample(lw))


@jax.jit
def _imh_indices(key, lw):
    def body(carry, inp):
        cur, cur_lw = carry
        k, i = inp
        accept = jnp.log(jax.random.uniform(k)) < lw[i] - cur_lw
        cur = jnp.where(accept, i, cur)
        return (cur, jnp.where(accept, lw[i], cur_lw)), (cur, accept)

    n = lw.shape[0]
    keys = jax.random.split(key, n)
    # the first proposal is always accepted: it initialises the chain
    keys, idx = keys[1:], jnp.arange(1, n)
    _, (chain, acc) = jax.lax.scan(body, (jnp.asarray(0), lw[0]), (keys, idx))
    return jnp.concatenate([jnp.zeros(1, chain.dtype), chain]), jnp.concatenate([jnp.ones(1, bool), acc])


def reweight(values: Float[Array, " n"], log_weights: Float[Array, " n"]) -> Float[Array, ""]:
    """Self-normalised importance estimate sum(w O) / sum(w) of <O>_p from flow draws.

    Arguments:
        values: observable on each i.i.d. flow draw.
        log_weights: log p~ - log q on each draw.

    Returns:
        The reweighted expectation.

    Raises:
        ValueError: if the two arrays differ in length.
    """
    if values.shape[:1] != log_weights.shape:
        raise ValueError(f"values and log_weights must share their leading axis; got {values.shape} and {log_weights.shape}")
    w = jax.nn.softmax(log_weights)
    return jnp.tensordot(w, values, axes=1)


# ----------------------------------------------------------------------------- HMC


class HMCState(NamedTuple):
    """HMC state: the configuration, its action and its force dS/dx."""

    x: Array
    action: Array
    grad: Array


class HMCInfo(NamedTuple):
    """Per-trajectory information: acceptance flag, acceptance probability, energy violation dH."""

    accepted: Array
    acceptance_prob: Array
    delta_h: Array


class HMC(eqx.Module):
    """Hybrid Monte Carlo for exp(-S): leapfrog trajectories with a Metropolis test (unit mass).

    The step size of each trajectory is drawn uniformly from step_size * [1 - jitter, 1 + jitter]
    (independently of the state, so detailed balance holds). Without jitter, Fourier modes whose
    leapfrog rotation over one trajectory is close to a multiple of pi barely move and never
    equilibrate; on free fields this visibly biases two-point functions.

    Attributes:
        action: action of one configuration (scalar output).
        step_size: mean leapfrog step.
        n_leapfrog: leapfrog steps per trajectory.
        jitter: relative half-width of the step-size randomisation, in [0, 1).
    """

    action: Callable
    step_size: float = eqx.field(static=True)
    n_leapfrog: int = eqx.field(static=True)
    jitter: float = eqx.field(static=True, default=0.2)

    def __check_init__(self):
        if not self.step_size > 0 or self.n_leapfrog < 1:
            raise ValueError(f"need step_size > 0 and n_leapfrog >= 1; got {self.step_size}, {self.n_leapfrog}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must lie in [0, 1); got {self.jitter}")

    def _s_and_grad(self, x):
        return jax.value_and_grad(lambda y: jnp.sum(self.action(y)))(x)

    def init(self, x: Array) -> HMCState:
        """State at configuration `x` (one configuration; vmap for many chains)."""
        s, g = self._s_and_grad(x)
        return HMCState(x, s, g)

    def step(self, key: PRNGKeyArray, state: HMCState) -> tuple[HMCState, HMCInfo]:
        """One trajectory and Metropolis test."""
        k1, k2, k3 = jax.random.split(key, 3)
        p0 = jax.random.normal(k1, state.x.shape, state.x.dtype)
        eps = self.step_size * jax.random.uniform(k3, (), state.x.dtype, 1 - self.jitter, 1 + self.jitter)

        def leap(carry, _):
            x, p, g = carry
            p = p - 0.5 * eps * g
            x = x + eps * p
            s, g = self._s_and_grad(x)
            p = p - 0.5 * eps * g
            return (x, p, g), s

        (x, p, g), ss = jax.lax.scan(leap, (state.x, p0, state.grad), None, length=self.n_leapfrog)
        s = ss[-1]
        dh = (s + 0.5 * jnp.sum(p**2)) - (state.action + 0.5 * jnp.sum(p0**2))
        dh = jnp.where(jnp.isfinite(dh), dh, jnp.inf)
        accept = jnp.log(jax.random.uniform(k2)) < -dh
        new = HMCState(jnp.where(accept, x, state.x), jnp.where(accept, s, state.action), jnp.where(accept, g, state.grad))
        return new, HMCInfo(accept, jnp.exp(jnp.minimum(-dh, 0.0)), dh)


def run_chain(
    key: PRNGKeyArray,
    kernel,
    state,
    n_steps: int,
    observe: Callable[[Array], Array] | None = None,
    thin: int = 1,
) -> tuple[object, Array, object]:
    """Run `kernel.step` for `n_steps` with `lax.scan`, recording `observe(state.x)` every `thin` steps.

    Arguments:
        key: PRNG key.
        kernel: an object with `step(key, state) -> (state, info)` (HMC, FlowMetropolis).
        state: the initial state.
        n_steps: number of recorded steps (the kernel runs n_steps * thin times).
        observe: function of a configuration to record (default: the configuration).
        thin: kernel steps between records.

    Returns:
        (final state, recorded values stacked over steps, infos of the recorded steps).

    Raises:
        ValueError: if n_steps or thin is not positive.
    """
    if n_steps < 1 or thin < 1:
        raise ValueError(f"n_steps and thin must be positive; got {n_steps}, {thin}")
    observe = observe if observe is not None else (lambda x: x)

    def outer(state, k):
        def inner(st, kk):
            return kernel.step(kk, st)

        state, infos = jax.lax.scan(inner, state, jax.random.split(k, thin))
        last = jax.tree_util.tree_map(lambda a: a[-1], infos)
        return state, (observe(state.x), last)

    state, (values, infos) = jax.lax.scan(outer, state, jax.random.split(key, n_steps))
    return state, values, infos
