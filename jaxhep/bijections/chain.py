"""Composition of bijections and inversion of one."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp

from jaxhep.bijections.base import AbstractBijection


class Chain(AbstractBijection):
    """Composition applying `bijections[0]` first; all share the same dim and condition.

    Arguments:
        bijections: a non-empty sequence of bijections of equal `dim`.

    Raises:
        ValueError: for an empty sequence or mismatched dimensions.
    """

    bijections: tuple[AbstractBijection, ...]
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)

    def __init__(self, bijections: Sequence[AbstractBijection]):
        bijections = tuple(bijections)
        if not bijections:
            raise ValueError("Chain needs at least one bijection")
        dims = {b.dim for b in bijections}
        if len(dims) != 1:
            raise ValueError(f"all bijections in a Chain must share dim; got {[b.dim for b in bijections]}")
        conds = {b.cond_dim for b in bijections if b.cond_dim > 0}
        if len(conds) > 1:
            raise ValueError(f"conditional bijections in a Chain must share cond_dim; got {sorted(conds)}")
        self.bijections, self.dim, self.cond_dim = bijections, dims.pop(), (conds.pop() if conds else 0)

    def transform_and_log_det(self, x, condition=None):
        total = jnp.zeros((), x.dtype)
        for b in self.bijections:
            x, ld = b.transform_and_log_det(x, condition if b.cond_dim else None)
            total = total + ld
        return x, total

    def inverse_and_log_det(self, y, condition=None):
        total = jnp.zeros((), y.dtype)
        for b in reversed(self.bijections):
            y, ld = b.inverse_and_log_det(y, condition if b.cond_dim else None)
            total = total + ld
        return y, total

    def in_domain(self, x):
        return self.bijections[0].in_domain(x)


class Invert(AbstractBijection):
    """The inverse of a bijection, with forward and inverse swapped."""

    bijection: AbstractBijection
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)

    def __init__(self, bijection: AbstractBijection):
        self.bijection, self.dim, self.cond_dim = bijection, bijection.dim, bijection.cond_dim

    def transform_and_log_det(self, x, condition=None):
        return self.bijection.inverse_and_log_det(x, condition)

    def inverse_and_log_det(self, y, condition=None):
        return self.bijection.transform_and_log_det(y, condition)
