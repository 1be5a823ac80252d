"""Embedding networks: learned summaries of x that a density estimator is conditioned on."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.nn.init import numpy_rng
from jaxhep.nn.mlp import MLP


class PermutationInvariant(eqx.Module):
    """A permutation-invariant summary of x made of `num_items` exchangeable items (Deep Sets).

    x of size num_items * item_size is read as num_items rows of item_size (row-major, as
    `x.reshape(num_items, item_size)`); each row goes through the same network phi, the rows'
    features are averaged, and a second network rho maps the average to `out_size` features
    (Zaheer et al. 2017, "Deep Sets"). Use it when x holds iid draws, e.g. the four points of
    slcp: the summary cannot tell the order of the items apart, which a plain MLP has to learn.

    Arguments:
        num_items: number of exchangeable items in x.
        item_size: size of each item.
        out_size: number of output features.
        width, depth: hidden width and depth of phi and of rho.
        activation: hidden activation.
        key: PRNG key (keyword-only).

    Raises:
        ValueError: for non-positive sizes.
    """

    phi: MLP
    rho: MLP
    num_items: int = eqx.field(static=True)
    item_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, num_items: int, item_size: int, out_size: int = 20, width: int = 64, depth: int = 2,
                 activation: str | Callable = "silu", *, key: PRNGKeyArray):
        for name, value in (("num_items", num_items), ("item_size", item_size), ("out_size", out_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        k_phi, k_rho = numpy_rng(key).spawn(2)
        self.num_items, self.item_size, self.out_size = num_items, item_size, out_size
        self.phi = MLP(item_size, width, width, depth, activation, key=k_phi)
        self.rho = MLP(width, out_size, width, depth, activation, key=k_rho)

    def __call__(self, x: Float[Array, " c"]) -> Float[Array, " out_size"]:
        if x.shape != (self.num_items * self.item_size,):
            raise ValueError(f"PermutationInvariant expects x of shape ({self.num_items * self.item_size},) "
                             f"= {self.num_items} items of size {self.item_size}, got {x.shape}")
        items = x.reshape(self.num_items, self.item_size)
        return self.rho(jnp.mean(jax.vmap(self.phi)(items), axis=0))
