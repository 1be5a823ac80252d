"""z-scoring and prior-support handling that wrap any conditional density estimator."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxhep.bijections import AbstractBijection, Affine, BoxToReal, Chain, Invert, support_bounds
from jaxhep.densities.base import AbstractConditionalDensity


class Standardized(AbstractConditionalDensity):
    """A density trained in a standardised space, seen from the user's space.

    theta is mapped by `to_base` (support map to R^d, then z-scoring) and x is z-scored; the
    wrapped `base` density lives in that space. Points outside the support get log-density
    -inf and samples always lie inside it, since they are images of R^d.

    Arguments:
        base: the density in the standardised space.
        to_base: unconditional bijection from theta to the base's space.
        x_loc, x_scale: z-scoring of x.
    """

    base: AbstractConditionalDensity
    to_base: AbstractBijection
    x_loc: Float[Array, " c"]
    x_scale: Float[Array, " c"]
    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)

    def __init__(self, base, to_base, x_loc, x_scale):
        self.base, self.to_base = base, to_base
        self.x_loc, self.x_scale = jnp.asarray(x_loc), jnp.asarray(x_scale)
        self.theta_dim, self.x_dim = base.theta_dim, base.x_dim

    def standardize_x(self, x):
        """x in the base's space."""
        return (x - jax.lax.stop_gradient(self.x_loc)) / jax.lax.stop_gradient(self.x_scale)

    def _log_prob(self, theta, x):
        z, log_det = self.to_base.transform_and_log_det(theta)
        lp = self.base._log_prob(z, self.standardize_x(x)) + log_det
        return jnp.where(self.to_base.in_domain(theta), lp, -jnp.inf)

    def _sample(self, key, x):
        return self.to_base.inverse(self.base._sample(key, self.standardize_x(x)))

    def _sample_n(self, key, x, n):
        z = self.base._sample_n(key, self.standardize_x(x), n)
        return jax.vmap(self.to_base.inverse)(z)

    def loss(self, key, theta, x):
        return self.base.loss(key, self.to_base.transform(theta), self.standardize_x(x))


def _robust_loc_scale(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    loc = a.mean(axis=0)
    scale = a.std(axis=0)
    # Constant columns carry no information; a unit scale keeps them finite.
    scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(loc)), scale, 1.0)
    return loc, scale


def make_standardizer(theta, x, prior=None, *, z_score_theta: bool = True, z_score_x: bool = True):
    """Fit the support map and z-scoring used by `Standardized` on training data.

    Arguments:
        theta: (n, d) parameters, inside the prior's support.
        x: (n, c) data.
        prior: numpyro prior whose support bounds are respected (None: unbounded).
        z_score_theta, z_score_x: whether to z-score each.

    Returns:
        (to_base bijection, x_loc, x_scale).

    Raises:
        ValueError: when training theta lies outside the prior's support.
    """
    theta = np.asarray(theta, dtype=np.float32)
    d = theta.shape[1]
    layers = []
    u = theta
    if prior is not None:
        low, high = support_bounds(prior, d)
        outside = ~np.all((theta >= low) & (theta <= high), axis=1)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} of {len(theta)} training theta lie outside the prior's support "
                             f"[{low.tolist()}, {high.tolist()}]")
        if np.isfinite(low).any() or np.isfinite(high).any():
            box = BoxToReal(low, high)
            layers.append(box)
            u = np.asarray(jax.jit(jax.vmap(box.transform))(theta))
    if z_score_theta:
        loc, scale = _robust_loc_scale(u)
        layers.append(Invert(Affine(loc, scale)))
    if not layers:
        layers.append(Affine(np.zeros(d), np.ones(d)))
    to_base = Chain(layers) if len(layers) > 1 else layers[0]
    x = np.asarray(x, dtype=np.float32)
    if z_score_x:
        x_loc, x_scale = _robust_loc_scale(x)
    else:
        x_loc, x_scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    return to_base, jnp.asarray(x_loc, jnp.float32), jnp.asarray(x_scale, jnp.float32)
