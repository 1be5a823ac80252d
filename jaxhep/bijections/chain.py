"""Composition of bijections and inversion of one."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxhep.bijections.base import AbstractBijection, AbstractFeatureBijection
from jaxhep.nn.init import is_concrete


class Chain(AbstractFeatureBijection):
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

    def condition_features(self, condition):
        return tuple(b.condition_features(condition) if b.cond_dim else None for b in self.bijections)

    def transform_with_features(self, x, features):
        total = jnp.zeros((), x.dtype)
        for b, f in zip(self.bijections, features):
            x, ld = b.transform_with_features(x, f) if b.cond_dim else b.transform_and_log_det(x)
            total = total + ld
        return x, total

    def inverse_with_features(self, y, features):
        total = jnp.zeros((), y.dtype)
        for b, f in zip(reversed(self.bijections), reversed(features)):
            y, ld = b.inverse_with_features(y, f) if b.cond_dim else b.inverse_and_log_det(y)
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


class Stacked(AbstractBijection):
    """Composition of bijections of identical structure, applied with `lax.scan`.

    Equivalent to `Chain(layers)`, but the layer is traced and compiled once instead of once
    per layer, which cuts compile time roughly by the number of layers. What the layers compute
    from the condition alone (`condition_features`, e.g. the context terms of coupling
    conditioners) is computed for all layers before the loop, in batched operations; NPE
    training epochs with sbi's network ran about 9% faster for it on two CPU devices.

    Arguments:
        layers: a non-empty sequence of bijections with the same pytree structure and static
            fields (e.g. coupling layers that differ only in parameters and mask).

    Raises:
        ValueError: when the layers differ in structure.
    """

    stacked: AbstractBijection
    num_layers: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)

    def __init__(self, layers: Sequence[AbstractBijection]):
        layers = tuple(layers)
        if not layers:
            raise ValueError("Stacked needs at least one layer")
        parts = [eqx.partition(layer, eqx.is_array) for layer in layers]
        statics = {jax.tree_util.tree_structure(p[0]) for p in parts}
        if len(statics) != 1 or any(not eqx.tree_equal(parts[0][1], p[1]) for p in parts[1:]):
            raise ValueError("Stacked layers must share pytree structure and static fields")
        arrays = jax.tree_util.tree_map(_stack, *[p[0] for p in parts])
        self.stacked = eqx.combine(arrays, parts[0][1])
        self.num_layers, self.dim, self.cond_dim = len(layers), layers[0].dim, layers[0].cond_dim

    def _scan(self, v, condition, inverse: bool):
        arrays, static = eqx.partition(self.stacked, eqx.is_array)
        conditional = self.cond_dim > 0
        # What every layer computes from the condition alone (e.g. the context's share of
        # each conditioner) is computed for all layers at once before the loop: one batched
        # product instead of one small one per layer and direction, forward and backward.
        features = (jax.vmap(lambda a: eqx.combine(a, static).condition_features(condition))(arrays)
                    if conditional else None)

        def body(carry, xs):
            v, total = carry
            layer_arrays, layer_features = xs
            layer = eqx.combine(layer_arrays, static)
            if conditional:
                fn = layer.inverse_with_features if inverse else layer.transform_with_features
                v, ld = fn(v, layer_features)
            else:
                fn = layer.inverse_and_log_det if inverse else layer.transform_and_log_det
                v, ld = fn(v, None)
            return (v, total + ld), None

        # A zero that depends on v (exactly 0.0 whatever v holds): under vmap and autodiff the
        # carried log-det is then batched and differentiated like v from the start, so that
        # scan's batching and linearisation rules settle in one pass instead of tracing the
        # layer again (about 0.07 s less tracing for NPE's training program).
        total = jnp.where(True, jnp.zeros((), v.dtype), v[0])
        (v, total), _ = jax.lax.scan(body, (v, total), (arrays, features), reverse=inverse)
        return v, total

    def transform_and_log_det(self, x, condition=None):
        return self._scan(x, condition, inverse=False)

    def inverse_and_log_det(self, y, condition=None):
        return self._scan(y, condition, inverse=True)

    def layer(self, i: int) -> AbstractBijection:
        """The i-th layer as a standalone bijection."""
        arrays, static = eqx.partition(self.stacked, eqx.is_array)
        return eqx.combine(jax.tree_util.tree_map(lambda a: a[i], arrays), static)


def _stack(*leaves):
    """Stack layer arrays along a new leading axis; concrete ones on the host, since an eager
    jnp.stack compiles a small program for every distinct leaf shape (about 20-70 ms each)."""
    if not is_concrete(*leaves):
        return jnp.stack(leaves)
    return jax.device_put(np.stack([np.asarray(leaf) for leaf in leaves]))
