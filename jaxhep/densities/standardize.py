"""z-scoring and prior-support handling that wrap any conditional density estimator."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxhep.bijections import AbstractBijection, Affine, BoxToReal, Chain, Invert, support_bounds
from jaxhep.checks import warn_caller
from jaxhep.densities.base import AbstractConditionalDensity


SUPPORTS = ("transform", "truncate")
MAX_REJECTION_ROUNDS = 100  # draws of the requested size, at most, in rejection sampling
REFILL_DIVISOR = 8  # rejection sampling draws n / REFILL_DIVISOR at a time
# In the error of rejection sampling that gives up (raised inside jit, so only its text says
# what it is; the CLI recognises it by this phrase).
LEAK_PHRASE = "the posterior leaks almost all its mass"


# XLA's defaults (not jaxhep.compilation's options), like the simulators: this prepares training
# data, which should not change by a rounding step with how jaxhep compiles.
@eqx.filter_jit
def _transform_rows(bijection: AbstractBijection, values):
    return jax.vmap(bijection.transform)(values)


def transform_rows(bijection: AbstractBijection, values) -> np.ndarray:
    """`bijection.transform` of each row of `values`, as a numpy array.

    One compiled program per bijection structure and shape, shared by every call in the process
    (a `jax.jit` of a new `jax.vmap(bijection.transform)` would compile again for each bijection:
    about 0.1-0.2 s of every posterior fit).
    """
    return np.asarray(_transform_rows(bijection, values))


class Standardized(AbstractConditionalDensity):
    """A density trained in a standardised space, seen from the user's space.

    theta is mapped by `to_base` (z-scoring, after a support map to R^d when the prior is
    bounded and support="transform") and x is z-scored; the wrapped `base` density lives in
    that space. Points outside the support get log-density -inf, and samples always lie inside
    it: with the support map because they are images of R^d, with truncation (`low`/`high`
    given) because draws outside the box are rejected and drawn again.

    Arguments:
        base: the density in the standardised space.
        to_base: unconditional bijection from theta to the base's space.
        x_loc, x_scale: z-scoring of x.
        `to_base`, `x_loc` and `x_scale` are fixed maps: no gradient reaches their arrays, so
        training this module with `jaxhep.training.fit` (e.g. fine-tuning a posterior's
        estimator) trains `base` only. (Decoupled weight decay would still shrink them; pass a
        `filter_spec` that leaves them out when fine-tuning with it.)
        low, high: the prior's box for truncation (None: no truncation). With truncation,
            `log_prob` is the model's density inside the box without renormalisation, i.e. low by
            log(1 - leaked mass); sampling stops with an error if fewer than the requested
            draws lie inside after `MAX_REJECTION_ROUNDS` rounds.
    """

    base: AbstractConditionalDensity
    to_base: AbstractBijection
    x_loc: Float[Array, " c"]
    x_scale: Float[Array, " c"]
    low: Float[Array, " d"] | None
    high: Float[Array, " d"] | None
    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)

    def __init__(self, base, to_base, x_loc, x_scale, low=None, high=None):
        self.base, self.to_base = base, to_base
        self.x_loc, self.x_scale = jnp.asarray(x_loc), jnp.asarray(x_scale)
        if (low is None) != (high is None):
            raise ValueError("give both low and high for truncation, or neither")
        self.low = None if low is None else jnp.asarray(low, jnp.float32)
        self.high = None if high is None else jnp.asarray(high, jnp.float32)
        self.theta_dim, self.x_dim = base.theta_dim, base.x_dim

    def _inside(self, theta):
        inside = self.to_base.in_domain(theta)
        if self.low is not None:
            inside = inside & jnp.all((theta >= self.low) & (theta <= self.high), axis=-1)
        return inside

    def standardize_x(self, x):
        """x in the base's space."""
        return (x - jax.lax.stop_gradient(self.x_loc)) / jax.lax.stop_gradient(self.x_scale)

    def _fixed_to_base(self) -> AbstractBijection:
        """`to_base` with its arrays behind stop_gradient. The loss below leaves out its log-det
        (a constant while the map is fixed); a trained scale would shrink z without bound."""
        return jax.tree_util.tree_map(lambda a: jax.lax.stop_gradient(a) if eqx.is_inexact_array(a) else a,
                                      self.to_base)

    def _log_prob(self, theta, x):
        z, log_det = self._fixed_to_base().transform_and_log_det(theta)
        # Outside the support (NaN theta included) the base is evaluated at z = 0 and the result
        # discarded: an ODE-based base would otherwise integrate from NaN until its step limit.
        inside = self._inside(theta) & jnp.all(jnp.isfinite(z))
        lp = self.base._log_prob(jnp.where(inside, z, 0.0), self.standardize_x(x)) + log_det
        return jnp.where(inside, lp, -jnp.inf)

    def _sample(self, key, x):
        if self.low is not None:
            return self._sample_n(key, x, 1)[0]
        return self.to_base.inverse(self.base._sample(key, self.standardize_x(x)))

    def _draw(self, key, x, n):
        return jax.vmap(self.to_base.inverse)(self.base._sample_n(key, self.standardize_x(x), n))

    def _sample_n(self, key, x, n):
        return self.inside_only(key, lambda k, m: self._draw(k, x, m), n)

    def inside_only(self, key, draw, n: int):
        """Rejection inside the prior's box: `draw(key, m)` returns (m, d) samples. Rounds of
        draws of m = n / `REFILL_DIVISOR` (rounded up) keep the samples inside, in order, until n
        are kept; an error once `MAX_REJECTION_ROUNDS` times n samples have been drawn without
        that. With draws smaller than n, the few samples outside the box of a trained posterior
        cost an extra eighth of the work rather than a second draw of n, and the program holds
        one copy of `draw`. Without truncation (`low` None) this is one call of `draw(key, n)`."""
        if self.low is None:
            return draw(key, n)
        if n == 0:
            out = jax.eval_shape(lambda k: draw(k, 1), key)
            return jnp.zeros((0,) + out.shape[1:], out.dtype)
        m = -(-n // REFILL_DIVISOR)
        max_rounds = MAX_REJECTION_ROUNDS * (-(-n // m))
        out = jax.eval_shape(lambda k: draw(k, m), key)

        def more(state):
            return (state[2] < n) & (state[3] < max_rounds)

        def round_(state):
            k, out, kept, rounds = state
            k, sub = jax.random.split(k)
            theta = draw(sub, m)
            ok = jax.vmap(self._inside)(theta)
            slot = jnp.where(ok, kept + jnp.cumsum(ok, dtype=jnp.int32) - 1, n)  # n and beyond: dropped
            return k, out.at[slot].set(theta, mode="drop"), kept + jnp.sum(ok, dtype=jnp.int32), rounds + 1

        start = (key, jnp.zeros((n,) + out.shape[1:], out.dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        _, out, kept, _ = jax.lax.while_loop(more, round_, start)
        return eqx.error_if(out, kept < n, f"fewer than the requested samples fell inside the prior's support "
                                           f"after drawing {MAX_REJECTION_ROUNDS} times as many: {LEAK_PHRASE}; "
                                           f"fit with support='transform'")

    def loss(self, key, theta, x):
        return self.base.loss(key, self._fixed_to_base().transform(theta), self.standardize_x(x))


def _robust_loc_scale(a: np.ndarray, name: str = "x") -> tuple[np.ndarray, np.ndarray]:
    # In float64 on the host: float32 squares overflow from about 1e19, and a float32 copy of
    # data with a large offset (1e5 + 0.01 * signal) keeps only a few distinct values.
    a = np.asarray(a, np.float64)
    loc = a.mean(axis=0)
    scale = a.std(axis=0)
    if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(scale))):
        raise ValueError(f"the mean or spread of some column of {name} is not finite in float64 (values near "
                         f"1e154 or beyond); rescale {name} before fitting")
    # Constant columns carry no information: they get their value as location and a unit
    # scale. They are found by comparing values, not by a small standard deviation: in float32
    # the mean and spread of 1000 copies of 0.1 come out with errors of ~1e-6, and dividing by
    # such a spread would send an observation 1e-4 away to a z-score of 100.
    constant = np.all(a == a[:1], axis=0)
    loc = np.where(constant, a[0], loc)
    scale = np.where(constant | ~(scale > 0), 1.0, scale)
    return loc, scale


def make_standardizer(theta, x, prior=None, *, z_score_theta: bool = True, z_score_x: bool = True,
                      support: str = "transform"):
    """Fit the support handling and z-scoring used by `Standardized` on training data.

    Arguments:
        theta: (n, d) parameters, inside the prior's support.
        x: (n, c) data.
        prior: numpyro prior whose support bounds are respected (None: unbounded).
        z_score_theta, z_score_x: whether to z-score each.
        support: for a bounded prior, "transform" (a logit-type map of the box to R^d before
            z-scoring) or "truncate" (z-scoring only; `Standardized` then rejects draws outside
            the box returned as `low`, `high`).

    Returns:
        (to_base bijection, x_loc, x_scale, low, high): `low` and `high` are the prior's box
        for `Standardized`'s truncation, or None (support="transform", or an unbounded prior).

    Raises:
        ValueError: when training theta lies outside the prior's support, or for an unknown
            `support`.
    """
    check_support(support)
    # The support check and the statistics in the caller's precision (float64 where given): a
    # legal theta just below a bound can round onto or past it in float32.
    theta = np.asarray(theta)
    if not np.issubdtype(theta.dtype, np.floating):
        theta = theta.astype(np.float64)
    d = theta.shape[1]
    layers = []
    u = theta
    trunc_low = trunc_high = None
    if prior is not None:
        low, high = support_bounds(prior, d)
        outside = ~np.all((theta >= low) & (theta <= high), axis=1)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} of {len(theta)} training theta lie outside the prior's support "
                             f"[{low.tolist()}, {high.tolist()}]")
        if np.isfinite(low).any() or np.isfinite(high).any():
            if support == "truncate":
                trunc_low, trunc_high = low, high
            else:
                box = BoxToReal(low, high)
                layers.append(box)
                u = transform_rows(box, theta)
    if z_score_theta:
        loc, scale = _robust_loc_scale(u, "theta")
        layers.append(Invert(Affine(loc, scale)))
    if not layers:
        layers.append(Affine(np.zeros(d), np.ones(d)))
    to_base = Chain(layers) if len(layers) > 1 else layers[0]
    x = np.asarray(x, dtype=np.float64)
    warn_if_float32_loses_resolution(theta, "theta")
    warn_if_float32_loses_resolution(x, "x")
    if z_score_x:
        x_loc, x_scale = _robust_loc_scale(x)
    else:
        x_loc, x_scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    return to_base, jnp.asarray(x_loc, jnp.float32), jnp.asarray(x_scale, jnp.float32), trunc_low, trunc_high


def warn_if_float32_loses_resolution(a: np.ndarray, name: str, *, tolerance: float = 0.01) -> None:
    """Warn for columns of `a` that float32, in which jaxhep's networks and standardisation run,
    cannot resolve: where its step at the column's largest magnitude exceeds `tolerance` times
    the column's standard deviation (e.g. 1e5 + 0.01 * signal, step 0.0078). Observations and
    samples of such a column lose that precision; subtracting an offset first keeps it. Silent
    under x64 (jax_enable_x64), where the arrays stay float64."""
    if jax.config.jax_enable_x64 or a.size == 0:
        return
    a = np.asarray(a, np.float64)
    step = np.spacing(np.max(np.abs(a), axis=0).astype(np.float32)).astype(np.float64)
    spread = a.std(axis=0)
    coarse = np.flatnonzero((spread > 0) & (step > tolerance * spread))
    if coarse.size:
        j = int(coarse[0])
        more = f" (and {coarse.size - 1} more)" if coarse.size > 1 else ""
        warn_caller(f"{name} column {j}{more} has a spread of {spread[j]:.3g} at magnitudes up "
                    f"to {np.max(np.abs(a[:, j])):.3g}, where float32 resolves only steps of {step[j]:.3g}: its "
                    f"values lose precision in float32; subtract an offset (e.g. the column's mean) before fitting "
                    f"and sampling")


def check_support(support: str) -> None:
    """Raise ValueError unless `support` is one of `SUPPORTS`."""
    if support not in SUPPORTS:
        raise ValueError(f"unknown support {support!r}; expected one of {SUPPORTS}")
