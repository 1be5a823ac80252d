"""The interface every benchmark task meets, and the checks shared by all of them."""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.checks import check_positive_int
from jaxhep.simulators.sbibm_observations import OBSERVATIONS

# Observations. By default a task's observation i is sbibm's own (`sbibm_observations.py`, copied
# from the benchmark's files), so that results compare with sbibm's tables; sbibm chose them by
# hand in places (slcp skips seeds that give "extremely spiked posteriors"). Until 2026-12-01
# jaxhep had only its own draws, `source="jaxhep"`: observation i drawn with key
# `jax.random.key(_OBSERVATION_SEED + i)` from the same prior and simulator. Those keys do not
# depend on the task, so observations of different tasks are not independent of each other
# (gaussian_mixture's theta_true is 10 times two_moons', gaussian_linear and
# gaussian_linear_uniform share their noise); the ten of one task are independent draws, which is
# what a task's mean C2ST needs. They are kept so that results recorded on them can be rerun.
_OBSERVATION_SEED = 1_000_000
OBSERVATION_SOURCES = ("sbibm", "jaxhep")


def check_theta(theta: Array, theta_dim: int, *, allow_batch: bool = True) -> Array:
    """Check the trailing axis of `theta` and return it as a float32 array.

    Arguments:
        theta: parameters, shape (theta_dim,) or (..., theta_dim).
        theta_dim: the task's parameter dimension.
        allow_batch: whether leading batch axes are allowed.

    Returns:
        `theta` as a float32 array (a new array; the input is not modified).

    Raises:
        ValueError: for a missing or wrong trailing axis, or batch axes where none are allowed.
    """
    theta = jnp.asarray(theta, dtype=jnp.float32)
    if theta.ndim == 0 or theta.shape[-1] != theta_dim:
        raise ValueError(f"theta must have shape (..., {theta_dim}), got shape {tuple(theta.shape)}")
    if not allow_batch and theta.ndim != 1:
        raise ValueError(f"theta must have shape ({theta_dim},), got shape {tuple(theta.shape)}")
    return theta


def check_x(x: Array, x_dim: int, name: str = "x") -> Array:
    """Check the trailing axis of data `x` and return it as a float32 array.

    Raises:
        ValueError: for a missing or wrong trailing axis.
    """
    x = jnp.asarray(x, dtype=jnp.float32)
    if x.ndim == 0 or x.shape[-1] != x_dim:
        raise ValueError(f"{name} must have shape (..., {x_dim}), got shape {tuple(x.shape)}")
    return x


def check_num(n, name: str) -> int:
    """Check that `n` is a positive Python integer.

    Raises:
        ValueError: when it is not.
    """
    check_positive_int(name, n)
    return int(n)


# Simulators compile with XLA's defaults, not jaxhep.compilation's options: their outputs are
# data, which should not change (even by a rounding step) with how jaxhep compiles its own work.
@eqx.filter_jit
def _simulate(task: "AbstractTask", key: PRNGKeyArray, n: int):
    key_prior, key_sim = jax.random.split(key)
    theta = task.prior.sample(key_prior, (n,)).astype(jnp.float32)
    return theta, task.simulator(key_sim, theta)


# Compiled once per task and shape (and inlined under an outer jit or vmap): cheaper than
# dispatching the vmapped operations one by one.
@eqx.filter_jit
def _simulate_one_jit(task: "AbstractTask", key, theta):
    return task._simulate_one(key, theta).astype(jnp.float32)


@eqx.filter_jit
def _simulate_batch_jit(task: "AbstractTask", key, theta):
    keys = jax.random.split(key, theta.shape[0])
    return jax.vmap(task._simulate_one)(keys, theta).astype(jnp.float32)


@eqx.filter_jit
def _batched_log_likelihood(task: "AbstractTask", theta, x):
    return jax.vmap(task._log_likelihood_one)(theta, x)


@eqx.filter_jit
def _observation(task: "AbstractTask", key):
    key_prior, key_sim = jax.random.split(key)
    theta = task.prior.sample(key_prior).astype(jnp.float32)
    return theta, task._simulate_one(key_sim, theta).astype(jnp.float32)


class AbstractTask(eqx.Module):
    """A simulation-based inference benchmark task: prior, simulator, likelihood, reference posterior.

    Subclasses define `prior`, the single-sample simulator `_simulate_one(key, theta)`, the
    single-sample log-likelihood `_log_likelihood_one(theta, x)` and `reference_posterior`.
    The public `simulator`, `simulate`, `log_likelihood` and `get_observation` are written
    once here on top of them.

    Attributes:
        name: the sbibm name of the task.
        theta_dim: dimension of the parameters.
        x_dim: dimension of the data.
        num_observations: number of fixed observations, 10 as in sbibm.
        iid_items: (number of items, size of each) when x is a set of iid draws that
            `x.reshape(number, size)` recovers (slcp: four 2-D points); None otherwise. An
            embedding such as `jaxhep.nn.PermutationInvariant(*task.iid_items)` can use it.
    """

    name: eqx.AbstractClassVar[str]
    theta_dim: eqx.AbstractClassVar[int]
    x_dim: eqx.AbstractClassVar[int]
    num_observations: eqx.AbstractClassVar[int]
    iid_items: ClassVar[tuple[int, int] | None] = None

    @property
    @abc.abstractmethod
    def prior(self):
        """The prior, a numpyro distribution with event shape (theta_dim,)."""

    @abc.abstractmethod
    def _simulate_one(self, key: PRNGKeyArray, theta: Float[Array, " d"]) -> Float[Array, " m"]:
        """One draw of x given one theta."""

    @abc.abstractmethod
    def _log_likelihood_one(self, theta: Float[Array, " d"], x: Float[Array, " m"]) -> Float[Array, ""]:
        """Exact log p(x | theta) for one theta and one x."""

    @abc.abstractmethod
    def reference_posterior(
        self, key: PRNGKeyArray, x_obs: Float[Array, " m"], num_samples: int
    ) -> Float[Array, "n d"]:
        """Samples from the exact posterior p(theta | x_obs)."""

    def simulator(self, key: PRNGKeyArray, theta: Float[Array, "*n d"]) -> Float[Array, "*n m"]:
        """Run the simulator for one parameter vector or a batch of them.

        Arguments:
            key: PRNG key.
            theta: parameters, shape (theta_dim,) or (n, theta_dim).

        Returns:
            Data of shape (x_dim,) or (n, x_dim), float32.

        Raises:
            ValueError: if theta is not of shape (theta_dim,) or (n, theta_dim).
        """
        theta = check_theta(theta, self.theta_dim)
        if theta.ndim == 1:
            return _simulate_one_jit(self, key, theta)
        if theta.ndim != 2:
            raise ValueError(
                f"theta must have shape ({self.theta_dim},) or (n, {self.theta_dim}), "
                f"got shape {tuple(theta.shape)}"
            )
        return _simulate_batch_jit(self, key, theta)

    def simulate(self, key: PRNGKeyArray, n: int) -> tuple[Float[Array, "n d"], Float[Array, "n m"]]:
        """Draw `n` pairs (theta, x) from the joint: theta from the prior, x from the simulator.

        Arguments:
            key: PRNG key.
            n: number of pairs.

        Returns:
            `(theta, x)` with shapes (n, theta_dim) and (n, x_dim), float32.

        Raises:
            ValueError: if `n` is not a positive integer.
        """
        n = check_num(n, "n")
        return _simulate(self, key, n)

    def log_likelihood(self, theta: Float[Array, "*b d"], x: Float[Array, "*b m"]) -> Float[Array, "*b"]:
        """Exact log-likelihood log p(x | theta), vectorised over leading axes.

        Arguments:
            theta: parameters, shape (..., theta_dim).
            x: data, shape (..., x_dim); its leading axes broadcast with theta's (one
                observation x of shape (x_dim,) against a batch of theta is the usual case).

        Returns:
            Log-likelihoods with the broadcast leading shape.

        Raises:
            ValueError: for wrong trailing dimensions or leading axes that do not broadcast.
        """
        theta = check_theta(theta, self.theta_dim)
        x = check_x(x, self.x_dim)
        try:
            batch = jnp.broadcast_shapes(theta.shape[:-1], x.shape[:-1])
        except ValueError:
            raise ValueError(f"the leading axes of theta {tuple(theta.shape)} and x {tuple(x.shape)} do not broadcast: "
                             "give one x for many theta, one theta for many x, or the same number of each") from None
        theta = jnp.broadcast_to(theta, batch + (self.theta_dim,)).reshape(-1, self.theta_dim)
        x = jnp.broadcast_to(x, batch + (self.x_dim,)).reshape(-1, self.x_dim)
        return _batched_log_likelihood(self, theta, x).reshape(batch)

    def log_posterior_unnormalised(self, theta: Float[Array, "*b d"], x_obs: Float[Array, " m"]) -> Float[Array, "*b"]:
        """log p(x_obs | theta) + log p(theta), vectorised over leading axes of theta.

        Raises:
            ValueError: for wrong trailing dimensions.
        """
        theta = check_theta(theta, self.theta_dim)
        return self.log_likelihood(theta, x_obs) + self.prior.log_prob(theta)

    def _observation_key(self, i: int) -> PRNGKeyArray:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 1 <= i <= self.num_observations:
            raise ValueError(
                f"observation index must be an integer in 1..{self.num_observations}, got {i!r}"
            )
        return jax.random.key(_OBSERVATION_SEED + int(i))

    def get_observation(self, i: int, source: str | None = None) -> tuple[Float[Array, " d"], Float[Array, " m"]]:
        """The i-th fixed observation: a true parameter and data simulated from it.

        Arguments:
            i: observation number, 1..num_observations.
            source: "sbibm" (the default for the sbibm tasks): sbibm's own observation i, the
                values of its data files (`jaxhep.simulators.sbibm_observations`), so that results
                compare with sbibm's published tables. "jaxhep" (the default for a task sbibm
                does not have): jaxhep's own draws, theta_true from the prior and x_obs from the
                simulator with the fixed key `jax.random.key(1_000_000 + i)`, the observations
                of every result recorded before 2026-12-01; they are drawn in float32 whether or
                not x64 is enabled (JAX's samplers give other numbers in float64).

        Returns:
            `(theta_true, x_obs)` of shapes (theta_dim,) and (x_dim,), float32.

        Raises:
            ValueError: for an index outside 1..num_observations, an unknown source, or
                source="sbibm" for a task sbibm does not have.
        """
        key = self._observation_key(i)
        if source is None:
            source = "sbibm" if self.name in OBSERVATIONS else "jaxhep"
        if source not in OBSERVATION_SOURCES:
            raise ValueError(f"source must be one of {OBSERVATION_SOURCES} or None, got {source!r}")
        if source == "jaxhep":
            return self._own_observation(i, key)
        if self.name not in OBSERVATIONS:
            raise ValueError(f"sbibm has no observations of a task named {self.name!r}; use source='jaxhep'")
        rows = OBSERVATIONS[self.name][int(i) - 1]
        # float32 values written with enough digits to come back exactly (they were float32 in sbibm).
        theta, x = (np.array(row.split(","), dtype=np.float64).astype(np.float32) for row in rows)
        return jax.device_put(theta), jax.device_put(x)

    def _own_observation(self, i: int, key: PRNGKeyArray) -> tuple[Float[Array, " d"], Float[Array, " m"]]:
        """jaxhep's observation i (source="jaxhep"), drawn with `key`."""
        with jax.enable_x64(False):
            return _observation(self, key)


def rejection_sample(key: PRNGKeyArray, propose, accept, args, num_samples: int, dim: int, *, max_rounds: int = 1000):
    """Exact rejection sampling, vectorised: draw batches of proposals and keep accepted ones.

    Arguments:
        key: PRNG key.
        propose: `propose(key, n, args) -> (n, dim)` proposals; a module-level function, so
            that the compiled batch draw is cached across calls.
        accept: `accept(key, samples, args) -> (n,)` booleans; accepted proposals are exact draws.
        args: a pytree of arrays passed to both (the observation, the task).
        num_samples: how many accepted draws to return.
        dim: dimension of a draw.
        max_rounds: give up after this many batches.

    Returns:
        An array (num_samples, dim) of accepted draws, in proposal order.

    Raises:
        RuntimeError: if fewer than `num_samples` draws are accepted within `max_rounds` batches.
    """
    num_samples = check_num(num_samples, "num_samples")
    kept, total, tried, accepted = [], 0, 0, 0
    batch = _round_batch(2 * num_samples)
    for _ in range(max_rounds):
        key, sub = jax.random.split(key)
        samples, ok = _propose_accept(sub, batch, propose, accept, args)
        ok = np.asarray(ok)
        tried += batch
        accepted += int(ok.sum())
        if ok.any():
            kept.append(np.asarray(samples)[ok])
            total += int(ok.sum())
        if total >= num_samples:
            return jnp.asarray(np.concatenate(kept)[:num_samples], dtype=jnp.float32).reshape(num_samples, dim)
    raise RuntimeError(
        f"rejection sampling accepted only {total} of {num_samples} draws in {max_rounds} rounds "
        f"(acceptance rate {accepted / tried:.2e})"
    )


def rejection_sample_independent(key: PRNGKeyArray, propose, accept, args, num_samples: int, dim: int, *, max_rounds: int = 1000):
    """Exact rejection sampling of a target whose coordinates are independent, one coordinate at a time.

    When target and proposal both factorise over coordinates, accepting each coordinate on its
    own is exact and the cost is set by the worst coordinate's acceptance rate instead of
    the product of all of them.

    Arguments:
        key: PRNG key.
        propose: `propose(key, n, args) -> (n, dim)` proposals, independent across coordinates.
        accept: `accept(key, samples, args) -> (n, dim)` booleans, one per coordinate.
        args: a pytree of arrays passed to both.
        num_samples: how many draws to return.
        dim: dimension of a draw.
        max_rounds: give up after this many batches.

    Returns:
        An array (num_samples, dim): column j holds the first accepted values of coordinate j.

    Raises:
        RuntimeError: if some coordinate has fewer than `num_samples` accepted values in time.
    """
    num_samples = check_num(num_samples, "num_samples")
    columns = [[] for _ in range(dim)]
    counts = np.zeros(dim, dtype=np.int64)
    tried = 0
    batch = _round_batch(2 * num_samples)
    for _ in range(max_rounds):
        key, sub = jax.random.split(key)
        samples, ok = _propose_accept(sub, batch, propose, accept, args)
        samples, ok = np.asarray(samples), np.asarray(ok)
        tried += batch
        for j in range(dim):
            if counts[j] < num_samples:
                columns[j].append(samples[ok[:, j], j])
                counts[j] += int(ok[:, j].sum())
        if counts.min() >= num_samples:
            out = np.stack([np.concatenate(c)[:num_samples] for c in columns], axis=1)
            return jnp.asarray(out, dtype=jnp.float32)
    raise RuntimeError(
        f"rejection sampling: a coordinate accepted only {counts.min()} of {num_samples} draws "
        f"in {max_rounds} rounds"
    )


def _round_batch(n: float) -> int:
    # One fixed batch size per call (a power of two, at least 2^16), so that a call compiles
    # the batch draw once and calls of similar size share it.
    return int(2 ** math.ceil(math.log2(max(n, 2**16))))


@eqx.filter_jit
def _propose_accept(key, n, propose, accept, args):
    kp, ka = jax.random.split(key)
    samples = propose(kp, n, args)
    return samples, accept(ka, samples, args)


def box_prior(bound: float, dim: int):
    """Uniform on [-bound, bound]^dim, with numpy bounds (building it compiles nothing; eager jnp
    ops would compile a small program each)."""
    return dist.Uniform(np.full(dim, -bound, np.float32), np.full(dim, bound, np.float32)).to_event(1)


def in_box(theta: Array, low: float, high: float) -> Array:
    """Whether every coordinate of each row lies inside [low, high]."""
    return jnp.all((theta >= low) & (theta <= high), axis=-1)

