"""Training lattice flows by reverse KL (self-training from the action), optionally with forward KL from samples."""

from __future__ import annotations

import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

from .flows import LatticeFlow


class TrainHistory(eqx.Module):
    """Per-step record of a lattice-flow training run.

    Attributes:
        loss: the minimised loss at each step.
        reverse_kl: batch estimate of KL(q || p) up to log Z, i.e. mean(log q + S), at each step.
        ess: batch effective sample size per sample, (sum w)^2 / (n sum w^2), w = exp(-S - log q).
        seconds: wall time of the run, compilation included.
    """

    loss: Float[Array, " steps"]
    reverse_kl: Float[Array, " steps"]
    ess: Float[Array, " steps"]
    seconds: float = eqx.field(static=True)


def ess_per_sample(log_weights: Float[Array, " n"]) -> Float[Array, ""]:
    """Effective sample size per sample (sum w)^2 / (n sum w^2) from unnormalised log weights.

    Arguments:
        log_weights: log importance weights log p~(x) - log q(x), any constant offset.

    Returns:
        A number in (0, 1]; 1 means q equals p.
    """
    lw = log_weights - jnp.max(log_weights)
    w = jnp.exp(lw)
    return jnp.sum(w) ** 2 / (log_weights.shape[0] * jnp.sum(w**2))


def reverse_kl_loss(flow: LatticeFlow, key: PRNGKeyArray, action: Callable, batch_size: int):
    """Reverse-KL loss mean(log q(x) + S(x)) = KL(q || p) - log Z on a batch x ~ q.

    Returns:
        (loss, log q of the batch, log importance weights -S - log q of the batch).
    """
    x, logq = flow.sample_and_log_prob(key, batch_size)
    s = action(x)
    return jnp.mean(logq + s), logq, -s - logq


def train_reverse_kl(
    key: PRNGKeyArray,
    flow: LatticeFlow,
    action: Callable[[Array], Array],
    *,
    steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    data: Float[Array, "n ..."] | None = None,
    forward_weight: float = 1.0,
    chunk: int = 50,
    max_seconds: float | None = None,
    progress: bool = True,
) -> tuple[LatticeFlow, TrainHistory]:
    """Train a lattice flow by minimising KL(q || p) with p ~ exp(-S), from the action alone.

    With `data` (samples of p, e.g. from HMC) a forward-KL term `forward_weight * mean(-log q(x))`
    over a random minibatch of the data is added at each step. Steps run in jitted chunks of
    `chunk` steps inside `lax.scan`; a progress bar tracks the chunks.

    Arguments:
        key: PRNG key.
        flow: the flow to train (not modified; the trained copy is returned).
        action: batched action S(x) for configurations of the flow's shape.
        steps: number of optimizer steps.
        batch_size: flow samples per step.
        learning_rate: Adam learning rate (ignored when `optimizer` is given).
        optimizer: an optax optimizer (default Adam).
        data: optional samples of p for a forward-KL term.
        forward_weight: weight of the forward-KL term.
        chunk: steps per jitted chunk.
        max_seconds: stop after the first chunk that ends past this wall time (None: run all steps).
        progress: show a tqdm progress bar.

    Returns:
        (trained flow, `TrainHistory`).

    Raises:
        ValueError: for non-positive steps/batch size/chunk, or data of the wrong shape.
    """
    if steps < 1 or batch_size < 1 or chunk < 1:
        raise ValueError(f"steps, batch_size and chunk must be positive; got {steps}, {batch_size}, {chunk}")
    if data is not None:
        data = jnp.asarray(data)
        if data.ndim != len(flow.shape) + 1 or tuple(data.shape[1:]) != flow.shape:
            raise ValueError(f"data must have shape (n, {', '.join(map(str, flow.shape))}); got {data.shape}")
    optimizer = optimizer if optimizer is not None else optax.adam(learning_rate)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    def loss_fn(params, key):
        model = eqx.combine(params, static)
        k1, k2 = jax.random.split(key)
        rkl, _, logw = reverse_kl_loss(model, k1, action, batch_size)
        loss = rkl
        if data is not None:
            idx = jax.random.randint(k2, (batch_size,), 0, data.shape[0])
            loss = loss + forward_weight * (-jnp.mean(model.log_prob(data[idx])))
        return loss, (rkl, ess_per_sample(logw))

    def one_step(carry, key):
        params, opt_state = carry
        (loss, (rkl, ess)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (loss, rkl, ess)

    @eqx.filter_jit
    def run_chunk(params, opt_state, keys):
        (params, opt_state), out = jax.lax.scan(one_step, (params, opt_state), keys)
        return params, opt_state, out

    start = time.perf_counter()
    records = []
    n_chunks = -(-steps // chunk)
    keys = jax.random.split(key, steps)
    bar = tqdm(total=steps, disable=not progress, desc="reverse-KL training")
    for c in range(n_chunks):
        ks = keys[c * chunk : (c + 1) * chunk]
        params, opt_state, out = run_chunk(params, opt_state, ks)
        out = jax.tree_util.tree_map(np.asarray, out)
        records.append(out)
        bar.update(len(ks))
        bar.set_postfix(loss=f"{out[0][-1]:.3f}", ess=f"{np.mean(out[2]):.3f}")
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    bar.close()
    loss, rkl, ess = (np.concatenate([r[i] for r in records]) for i in range(3))
    history = TrainHistory(jnp.asarray(loss), jnp.asarray(rkl), jnp.asarray(ess), time.perf_counter() - start)
    return eqx.combine(params, static), history
