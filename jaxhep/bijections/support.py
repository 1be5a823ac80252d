"""Bijections from a constrained support to R^d, used to keep densities inside a prior's support."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxhep.bijections.base import AbstractBijection


class BoxToReal(AbstractBijection):
    """Map the open box (low, high) to R^d by a scaled logit; the inverse is a scaled sigmoid.

    Dimensions whose bounds are infinite are passed through unchanged; a dimension bounded
    on one side only uses log(x - low) or log(high - x).

    Arguments:
        low: lower bounds (may be -inf).
        high: upper bounds (may be +inf).
    """

    low: Float[Array, " d"]
    high: Float[Array, " d"]
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True, default=0)

    def __init__(self, low, high):
        low = jnp.atleast_1d(jnp.asarray(low, dtype=float))
        high = jnp.broadcast_to(jnp.asarray(high, dtype=float), low.shape)
        if np.any(np.asarray(high) <= np.asarray(low)):
            raise ValueError(f"need low < high in every dimension, got low={low}, high={high}")
        self.low, self.high, self.dim, self.cond_dim = low, high, int(low.shape[0]), 0

    def _kinds(self):
        lo_f, hi_f = jnp.isfinite(self.low), jnp.isfinite(self.high)
        return lo_f & hi_f, lo_f & ~hi_f, ~lo_f & hi_f

    def _safe_bounds(self):
        lo = jnp.where(jnp.isfinite(self.low), self.low, 0.0)
        hi = jnp.where(jnp.isfinite(self.high), self.high, 1.0)
        return lo, hi

    def in_domain(self, x):
        # Closed bounds: float32 sigmoids round onto the bounds for large inputs.
        return jnp.all((x >= self.low) & (x <= self.high))

    def transform_and_log_det(self, x, condition=None):
        box, lower_only, upper_only = self._kinds()
        lo, hi = self._safe_bounds()
        width = jnp.where(box, hi - lo, 1.0)
        # From the distances to the two bounds, each floored at the dtype's resolution next to
        # that bound: a point that rounded onto a bound (float32 sigmoids reach 1 from y of about
        # 17) maps to where that rounding starts, not to +-69. (A clip of u = (x - lo) / width to
        # 1 - 1e-7 did this for the upper end only, and in float64 too, where it made the map
        # non-invertible within 1e-7 of the bound.)
        eps = jnp.finfo(jnp.result_type(x)).eps
        d_low = jnp.maximum(x - lo, jnp.maximum(eps * jnp.abs(lo), 1e-30))
        d_high = jnp.maximum(hi - x, jnp.maximum(eps * jnp.abs(hi), 1e-30))
        y_box = jnp.log(d_low) - jnp.log(d_high)
        ld_box = jnp.log(width) - jnp.log(d_low) - jnp.log(d_high)
        y = jnp.where(box, y_box, jnp.where(lower_only, jnp.log(d_low), jnp.where(upper_only, -jnp.log(d_high), x)))
        ld = jnp.where(box, ld_box, jnp.where(lower_only, -jnp.log(d_low), jnp.where(upper_only, -jnp.log(d_high), 0.0)))
        return y, jnp.sum(ld)

    def inverse_and_log_det(self, y, condition=None):
        box, lower_only, upper_only = self._kinds()
        lo, hi = self._safe_bounds()
        width = jnp.where(box, hi - lo, 1.0)
        x_box = lo + width * jax.nn.sigmoid(y)
        ld_box = jnp.log(width) + jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)
        # Each exponential sees y only where its branch is taken: an overflow to inf in a branch
        # jnp.where discards still sent NaN into the gradient (0 * inf).
        up = jnp.exp(jnp.where(lower_only, y, 0.0))
        down = jnp.exp(-jnp.where(upper_only, y, 0.0))
        x = jnp.where(box, x_box, jnp.where(lower_only, lo + up, jnp.where(upper_only, hi - down, y)))
        ld = jnp.where(box, ld_box, jnp.where(lower_only, y, jnp.where(upper_only, -y, 0.0)))
        return x, jnp.sum(ld)


def support_bounds(prior, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of a numpyro distribution's support (±inf where unbounded).

    Arguments:
        prior: a numpyro distribution over vectors of size `dim`.
        dim: the expected event size.

    Returns:
        (low, high) arrays of shape (dim,).

    Raises:
        ValueError: for supports that are not boxes (e.g. a simplex).
    """
    from numpyro.distributions import constraints

    support = prior.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    low = np.full(dim, -np.inf)
    high = np.full(dim, np.inf)
    if support in (constraints.real, constraints.real_vector):
        pass
    elif isinstance(support, constraints.interval) or hasattr(support, "lower_bound") and hasattr(support, "upper_bound"):
        low = np.broadcast_to(np.asarray(support.lower_bound, dtype=float), (dim,)).copy()
        high = np.broadcast_to(np.asarray(support.upper_bound, dtype=float), (dim,)).copy()
    elif support is constraints.positive:
        low = np.zeros(dim)
    elif hasattr(support, "lower_bound"):
        low = np.broadcast_to(np.asarray(support.lower_bound, dtype=float), (dim,)).copy()
    elif hasattr(support, "upper_bound"):
        high = np.broadcast_to(np.asarray(support.upper_bound, dtype=float), (dim,)).copy()
    else:
        raise ValueError(
            f"prior support {prior.support} is not a box; jaxhep handles real, interval, "
            "lower-bounded and upper-bounded supports"
        )
    return low, high
