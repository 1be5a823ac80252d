"""The one interface every conditional density estimator q(theta | x) meets."""

from __future__ import annotations

import abc
import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.checks import check_positive_finite, check_positive_int, sample_shape_tuple
from jaxhep.compilation import filter_jit
from jaxhep.nn.init import is_concrete


def check_finite(x: Array, name: str) -> Array:
    """Reject NaN/inf: a ValueError before tracing, an `eqx.error_if` under jit.

    Arguments:
        x: the array to check.
        name: what it is, for the message.

    Returns:
        `x`, unchanged (under jit, wrapped so that the check runs).

    Raises:
        ValueError: if `x` is concrete and holds a non-finite value.
    """
    if is_concrete(x):
        bad = ~np.isfinite(np.asarray(x))
        if bad.any():
            raise ValueError(
                f"{name} must be finite, but {int(bad.sum())} of its {bad.size} entries are NaN or inf"
            )
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"{name} must be finite (NaN or inf found)")


def check_last_dim(a: Array, dim: int, name: str) -> Array:
    """Check that `a` has trailing size `dim` (a vector or a batch of vectors).

    Returns:
        `a` as a JAX array of JAX's default float dtype (float32, or float64 under
        `jax_enable_x64`), so that results do not depend on the dtype a user's array happens to
        have: under x64, a float32 and a float64 copy of the same observation gave different
        samples for the same key (the draws took the input's dtype), and ODE log-densities of
        different accuracy.

    Raises:
        TypeError: for a tuple of arrays, which would silently become a batch (the usual slip:
            passing `task.get_observation(i)`, a `(theta_true, x_obs)` pair, as x).
        ValueError: when the trailing axis is missing or of the wrong size.
    """
    if isinstance(a, tuple) and any(np.ndim(item) > 0 for item in a):
        raise TypeError(
            f"{name} must be one array, got a tuple of {len(a)} arrays; task.get_observation(i) returns "
            f"(theta_true, x_obs), so take its second element, and stack several observations with "
            f"jnp.stack to pass them as a batch")
    a = jnp.asarray(a)
    if a.ndim == 0 or a.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}), got shape {tuple(a.shape)}")
    target = jax.dtypes.canonicalize_dtype(jnp.float64)
    return a if a.dtype == target else a.astype(target)


def eval_user_network(net, args: tuple, what: str):
    """Abstract evaluation (shapes only, no FLOPs) of a network the user supplied.

    Arguments:
        net: the network.
        args: `jax.ShapeDtypeStruct`s of its inputs.
        what: what failed, for the message (e.g. "the embedding network failed on an x of
            shape (3,)").

    Returns:
        The output's shape structure.

    Raises:
        ValueError: when the network fails on such inputs (with its own error appended).
    """
    try:
        return eqx.filter_eval_shape(net, *args)
    except Exception as err:  # the user's network: report what it was given
        raise ValueError(f"{what}: {err}") from err


class AbstractConditionalDensity(eqx.Module):
    """A conditional density q(theta | x) with log-density and sampling.

    Subclasses implement the single-sample methods `_log_prob(theta, x)` and
    `_sample(key, x)`; the public `log_prob` and `sample` vectorise them over leading batch
    axes. `loss(key, theta, x)` is the per-sample training loss (negative log-likelihood by
    default; score and flow-matching models override it with their regression losses).

    Attributes (declared by subclasses as static fields):
        theta_dim: dimension of theta.
        x_dim: dimension of the conditioning vector x.
    """

    theta_dim: eqx.AbstractVar[int]
    x_dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def _log_prob(self, theta: Float[Array, " d"], x: Float[Array, " c"]) -> Float[Array, ""]:
        """Log-density of one theta given one x."""

    @abc.abstractmethod
    def _sample(self, key: PRNGKeyArray, x: Float[Array, " c"]) -> Float[Array, " d"]:
        """One sample of theta given one x."""

    def _sample_n(self, key: PRNGKeyArray, x: Float[Array, " c"], n: int) -> Float[Array, "n d"]:
        """`n` samples given one x; override where sharing work across samples pays."""
        return jax.vmap(self._sample, in_axes=(0, None))(jax.random.split(key, n), x)

    def loss(self, key: PRNGKeyArray, theta: Float[Array, " d"], x: Float[Array, " c"]) -> Float[Array, ""]:
        """Training loss for one (theta, x) pair: the negative log-density by default."""
        del key
        return -self._log_prob(theta, x)

    def log_prob(self, theta: Float[Array, "*b1 d"], x: Float[Array, "*b2 c"]) -> Float[Array, "*b"]:
        """Log-density of theta given x, broadcasting leading batch axes.

        Arguments:
            theta: parameters, shape (..., theta_dim).
            x: conditioning data, shape (..., x_dim); its batch axes broadcast with theta's.

        Returns:
            Log-densities with the broadcast batch shape.

        Raises:
            ValueError: for trailing dimensions that do not match the model, or non-finite x
                (before tracing; a runtime error under jit).
        """
        theta = check_last_dim(theta, self.theta_dim, "theta")
        x = check_last_dim(x, self.x_dim, "x")
        x = check_finite(x, "x")
        return _log_prob_entry(self, theta, x)

    def sample(self, key: PRNGKeyArray, x: Float[Array, "*b c"], sample_shape: tuple[int, ...] = ()) -> Float[Array, "*s *b d"]:
        """Draw samples of theta given x.

        Arguments:
            key: PRNG key.
            x: conditioning data, shape (x_dim,) or (..., x_dim) for several observations.
            sample_shape: leading shape of the draws for each x.

        Returns:
            Samples of shape sample_shape + x.shape[:-1] + (theta_dim,).

        Raises:
            ValueError: for a wrong trailing dimension or non-finite x (before tracing).
        """
        x = check_last_dim(x, self.x_dim, "x")
        x = check_finite(x, "x")
        return _sample_entry(self, key, x, sample_shape_tuple(sample_shape))

    def map(self, key: PRNGKeyArray, x: Float[Array, "*b c"], *, num_init: int = 1000, num_to_optimize: int = 100,
            num_steps: int = 500, learning_rate: float = 0.01) -> Float[Array, "*b d"]:
        """The maximum a posteriori estimate: the theta of highest log-density given x.

        Draws `num_init` samples, keeps the `num_to_optimize` of highest log-density, climbs
        the log-density from each with `num_steps` Adam steps, and returns the best point any
        of them reached (as sbi's `posterior.map()` does). The climb runs in coordinates
        scaled by the spread of the initial draws, so `learning_rate` is in units of the
        posterior's width and needs no tuning per problem. A step that leaves the density's
        support (log-density -inf, e.g. outside a bounded prior) goes back to that candidate's
        best point. One jit-compiled program; for several observations the searches run side
        by side. For NPSE/FMPE posteriors each step differentiates an ODE solve, which costs
        far more than for a flow.

        Arguments:
            key: PRNG key.
            x: conditioning data, shape (x_dim,) or (..., x_dim) for several observations.
            num_init: initial draws.
            num_to_optimize: how many of the best draws are climbed from (at most num_init).
            num_steps: Adam steps per candidate.
            learning_rate: Adam's step size, in units of the draws' standard deviation.

        Returns:
            The estimate, shape x.shape[:-1] + (theta_dim,).

        Raises:
            ValueError: for a wrong trailing dimension, non-finite x or bad settings.
        """
        x = check_last_dim(x, self.x_dim, "x")
        x = check_finite(x, "x")
        for name, value in (("num_init", num_init), ("num_to_optimize", num_to_optimize), ("num_steps", num_steps)):
            check_positive_int(name, value)
        if num_to_optimize > num_init:
            raise ValueError(f"num_to_optimize ({num_to_optimize}) cannot exceed num_init ({num_init})")
        check_positive_finite("learning_rate", learning_rate)
        return _map_entry(self, key, x, int(num_init), int(num_to_optimize), int(num_steps),
                          jnp.asarray(float(learning_rate), jnp.float32))


# The public methods are the jit entry points (building blocks stay un-jitted): calls from
# Python compile once per model structure and shape; inside a user's jit or vmap they inline.
@filter_jit
def _log_prob_entry(model: AbstractConditionalDensity, theta, x):
    batch = jnp.broadcast_shapes(theta.shape[:-1], x.shape[:-1])
    theta = jnp.broadcast_to(theta, batch + (model.theta_dim,)).reshape(-1, model.theta_dim)
    x = jnp.broadcast_to(x, batch + (model.x_dim,)).reshape(-1, model.x_dim)
    return jax.vmap(model._log_prob)(theta, x).reshape(batch)


@filter_jit
def _sample_entry(model: AbstractConditionalDensity, key, x, sample_shape: tuple[int, ...]):
    n = math.prod(sample_shape)
    batch = x.shape[:-1]
    flat = x.reshape(-1, model.x_dim)
    keys = jax.random.split(key, flat.shape[0])
    draws = jax.vmap(model._sample_n, in_axes=(0, 0, None))(keys, flat, n)  # (B, n, d)
    draws = jnp.swapaxes(draws, 0, 1)
    return draws.reshape(sample_shape + batch + (model.theta_dim,))


@filter_jit
def _map_entry(model: AbstractConditionalDensity, key, x, num_init: int, num_to_optimize: int, num_steps: int,
               learning_rate):
    batch = x.shape[:-1]
    flat = x.reshape(-1, model.x_dim)
    keys = jax.random.split(key, flat.shape[0])
    search = functools.partial(_map_one, model, num_init=num_init, num_to_optimize=num_to_optimize,
                               num_steps=num_steps, learning_rate=learning_rate)
    return jax.vmap(search)(keys, flat).reshape(batch + (model.theta_dim,))


def _map_one(model, key, x, *, num_init, num_to_optimize, num_steps, learning_rate):
    """MAP search for one x (see `AbstractConditionalDensity.map`)."""
    draws = model._sample_n(key, x, num_init)
    log_p = jax.vmap(model._log_prob, in_axes=(0, None))(draws, x)
    # NaN (a failed evaluation) ranks above every number in top_k and never loses in
    # keep_better: it counts as -inf, like a point outside the support.
    log_p = jnp.where(jnp.isnan(log_p), -jnp.inf, log_p)
    loc = jnp.mean(draws, axis=0)
    scale = jnp.std(draws, axis=0)
    scale = jnp.where(scale > 0, scale, 1.0)
    best_lp, idx = jax.lax.top_k(log_p, num_to_optimize)
    best_v = (draws[idx] - loc) / scale  # candidates in scaled coordinates

    def value(v):
        return model._log_prob(loc + scale * v, x)

    value_and_grad = jax.vmap(jax.value_and_grad(value))
    optimizer = optax.adam(learning_rate)

    def keep_better(v, lp, best_v, best_lp):
        better = lp > best_lp  # False for NaN and -inf
        return jnp.where(better[:, None], v, best_v), jnp.where(better, lp, best_lp)

    def step(carry, _):
        v, best_v, best_lp, state = carry
        lp, grad = value_and_grad(v)
        best_v, best_lp = keep_better(v, lp, best_v, best_lp)
        # Outside the support (or at a NaN): back to the candidate's best point, no gradient.
        bad = (~jnp.isfinite(lp) | ~jnp.all(jnp.isfinite(grad), axis=-1))[:, None]
        v = jnp.where(bad, best_v, v)
        updates, state = optimizer.update(-jnp.where(bad, 0.0, grad), state, v)
        return (v + updates, best_v, best_lp, state), None

    carry = (best_v, best_v, best_lp, optimizer.init(best_v))
    (v, best_v, best_lp, _), _ = jax.lax.scan(step, carry, None, length=num_steps)
    best_v, best_lp = keep_better(v, jax.vmap(value)(v), best_v, best_lp)
    return loc + scale * best_v[jnp.argmax(best_lp)]
