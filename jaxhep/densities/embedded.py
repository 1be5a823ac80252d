"""A conditional density that sees x through a trainable embedding network."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxhep.densities.base import AbstractConditionalDensity, eval_user_network


def embedding_size(embedding, x_dim: int) -> int:
    """Output size of `embedding` on an x of size `x_dim` (found by abstract evaluation).

    Raises:
        ValueError: when the embedding fails on such an x or does not return a vector.
    """
    out = eval_user_network(embedding, (jax.ShapeDtypeStruct((x_dim,), jnp.float32),),
                            f"the embedding network failed on an x of shape ({x_dim},)")
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"the embedding network must map x of shape ({x_dim},) to a non-empty vector, got "
                         f"{shape if shape is not None else type(out).__name__}")
    return int(shape[0])


class Embedded(AbstractConditionalDensity):
    """q(theta | x) = base(theta | embedding(x)), with the embedding trained together with the base.

    Arguments:
        base: a density conditioned on the embedding's output.
        embedding: an equinox module mapping one x of size `x_dim` to a vector of size
            `base.x_dim`.
        x_dim: size of the raw x.

    Raises:
        ValueError: when the embedding's output size differs from the base's x_dim.
    """

    base: AbstractConditionalDensity
    embedding: eqx.Module
    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)

    def __init__(self, base: AbstractConditionalDensity, embedding: eqx.Module, x_dim: int):
        size = embedding_size(embedding, x_dim)
        if size != base.x_dim:
            raise ValueError(f"the embedding returns {size} features but the density is conditioned on "
                             f"{base.x_dim}")
        self.base, self.embedding = base, embedding
        self.theta_dim, self.x_dim = base.theta_dim, x_dim

    def _log_prob(self, theta: Float[Array, " d"], x: Float[Array, " c"]) -> Float[Array, ""]:
        return self.base._log_prob(theta, self.embedding(x))

    def _sample(self, key, x):
        return self.base._sample(key, self.embedding(x))

    def _sample_n(self, key, x, n):
        return self.base._sample_n(key, self.embedding(x), n)

    def loss(self, key, theta, x):
        return self.base.loss(key, theta, self.embedding(x))
