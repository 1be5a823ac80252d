"""Masked coupling layer: one subset of dimensions conditions an elementwise map of the rest."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from jaxhep.bijections.base import AbstractBijection, _check_dims
from jaxhep.bijections.elementwise import AffineTransformer, SplineTransformer, make_transformer, zero_init
from jaxhep.nn import ResidualMLP


class Coupling(AbstractBijection):
    """Masked coupling layer: y = where(mask, tau(x; NN(x * (1 - mask), condition)), x).

    The conditioner sees the untransformed dimensions (the others are zeroed) and outputs
    transformer parameters for every dimension, of which the masked ones are used. Keeping the
    mask as data rather than structure makes layers with different masks identical in
    structure, so a stack of them compiles once under `Stacked`.

    Arguments:
        dim: vector size.
        mask: boolean array of length `dim`; True marks the dimensions that are transformed.
        cond_dim: size of the conditioning vector (0 for none).
        transformer: 'affine' or 'spline'.
        width, num_blocks, activation: residual conditioner network settings.
        num_bins, bound: spline settings.
        key: PRNG key (keyword-only).
    """

    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)
    mask: jax.Array  # boolean, so never trained
    transformer: AffineTransformer | SplineTransformer
    conditioner: ResidualMLP

    def __init__(self, dim: int, mask, cond_dim: int = 0, transformer: str = "spline", width: int = 50,
                 num_blocks: int = 2, activation: str | Callable = "relu", num_bins: int = 10,
                 bound: float = 3.0, *, key: PRNGKeyArray):
        _check_dims(dim, cond_dim)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (dim,) or not mask.any():
            raise ValueError(f"mask must be a boolean array of shape ({dim},) with at least one True, got {mask}")
        self.dim, self.cond_dim = dim, cond_dim
        self.mask = jnp.asarray(mask)
        self.transformer = make_transformer(transformer, num_bins, bound)
        net = ResidualMLP(dim, dim * self.transformer.num_params, width, num_blocks, context_size=cond_dim,
                          activation=activation, key=key)
        self.conditioner = eqx.tree_at(lambda n: n.final, net, zero_init(net.final))

    def _apply(self, x, condition, inverse: bool):
        ctx = condition if self.cond_dim > 0 else None
        raw = self.conditioner(jnp.where(self.mask, 0.0, x), ctx)
        params = raw.reshape(self.dim, self.transformer.num_params)
        fn = self.transformer.inverse if inverse else self.transformer.forward
        y, ld = fn(x, params)
        return jnp.where(self.mask, y, x), jnp.sum(jnp.where(self.mask, ld, 0.0))

    def transform_and_log_det(self, x, condition=None):
        return self._apply(x, condition, inverse=False)

    def inverse_and_log_det(self, y, condition=None):
        return self._apply(y, condition, inverse=True)


def alternating_mask(dim: int, even: bool) -> np.ndarray:
    """Mask marking every other dimension (starting at 0 when `even`); for dim 1, the only one."""
    if dim == 1:
        return np.array([True])
    mask = np.arange(dim) % 2 == (0 if even else 1)
    return mask


