"""Masked coupling layer: one subset of dimensions conditions an elementwise map of the rest."""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from jaxhep.bijections.base import AbstractFeatureBijection, _check_condition, _check_dims
from jaxhep.bijections.elementwise import AffineTransformer, SplineTransformer, make_transformer, zero_init
from jaxhep.checks import check_positive_int
from jaxhep.nn import ResidualMLP


class Coupling(AbstractFeatureBijection):
    """Masked coupling layer: y = where(mask, tau(x; NN(x * (1 - mask), condition)), x).

    The conditioner sees the untransformed dimensions (the others are zeroed) and outputs
    transformer parameters for `slots` dimensions only: the transformed ones, gathered by an
    index array, so no transformer work is spent on dimensions that pass through. The mask and
    the index are data rather than structure, so layers with different masks but the same
    number of slots are identical in structure and a stack of them compiles once under
    `Stacked`. A layer with fewer transformed dimensions than slots (e.g. the smaller half of
    an odd-sized alternating mask) fills the spare slots with distinct pass-through dimensions,
    whose outputs are discarded.

    Arguments:
        dim: vector size.
        mask: boolean array of length `dim`; True marks the dimensions that are transformed.
        cond_dim: size of the conditioning vector (0 for none).
        transformer: 'affine' or 'spline'.
        width, num_blocks, activation: residual conditioner network settings.
        num_bins, bound: spline settings.
        slots: transformer slots, from the number of True entries of `mask` (the default) up to
            `dim`.
        layout: "jaxhep" (the default: a `ResidualMLP` of style "jaxhep" whose output layer
            starts at zero, so the layer starts as the identity; splines in distrax's
            parameterisation) or "nflows", the coupling layer of PyTorch sbi's NSF (nflows'
            `PiecewiseRationalQuadraticCouplingTransform` with a `ResidualNet`): a conditioner of
            style "nflows" with the default initialisation of every layer (the input layer's as
            for the untransformed dimensions and the condition only, the inputs nflows gives
            it), and splines in nflows' parameterisation with the logits scaled by
            1/sqrt(width). Spline transformer only.
        key: PRNG key (keyword-only).
    """

    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)
    slots: int = eqx.field(static=True)
    mask: jax.Array  # boolean, so never trained
    index: jax.Array  # integer: the dimension each slot transforms
    valid: jax.Array  # boolean: which slots hold a transformed dimension
    transformer: AffineTransformer | SplineTransformer
    conditioner: ResidualMLP

    def __init__(self, dim: int, mask, cond_dim: int = 0, transformer: str = "spline", width: int = 50,
                 num_blocks: int = 2, activation: str | Callable = "relu", num_bins: int = 10,
                 bound: float = 3.0, slots: int | None = None, layout: str = "jaxhep", *, key: PRNGKeyArray):
        _check_dims(dim, cond_dim)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (dim,) or not mask.any():
            raise ValueError(f"mask must be a boolean array of shape ({dim},) with at least one True, got {mask}")
        transformed, passed = np.flatnonzero(mask), np.flatnonzero(~mask)
        slots = len(transformed) if slots is None else slots
        if not isinstance(slots, (int, np.integer)) or not len(transformed) <= slots <= dim:
            raise ValueError(f"slots must be an integer from the {len(transformed)} transformed dimensions up to "
                             f"dim={dim}, got {slots!r}")
        self.dim, self.cond_dim, self.slots = dim, cond_dim, int(slots)
        # device_put, not jnp.asarray: the latter compiles a small program per shape and dtype.
        self.mask = jax.device_put(mask)
        # Spare slots take distinct pass-through dimensions: a repeated index would make the
        # scatter in `_apply` count that dimension's gradient twice.
        spare = self.slots - len(transformed)
        self.index = jax.device_put(np.concatenate([transformed, passed[:spare]]).astype(np.int32))
        self.valid = jax.device_put(np.arange(self.slots) < len(transformed))
        if layout not in COUPLING_LAYOUTS:
            raise ValueError(f"layout must be one of {COUPLING_LAYOUTS}, got {layout!r}")
        if layout == "nflows":
            if transformer != "spline":
                raise ValueError("layout='nflows' is nflows' spline coupling layer: transformer must be 'spline'")
            check_positive_int("width", width)
            self.transformer = make_transformer("spline", num_bins, bound, style="nflows",
                                                logit_scale=math.sqrt(width))
            net = ResidualMLP(dim, self.slots * self.transformer.num_params, width, num_blocks,
                              context_size=cond_dim, activation=activation, style="nflows", key=key)
            # The input layer is drawn for `dim + cond_dim` inputs, of which the transformed
            # dimensions are always zero; nflows draws it for the others only: the limits of
            # the uniform initialisation scale by sqrt(fan-in ratio).
            ratio = math.sqrt(max(dim, 1) + cond_dim) / math.sqrt(max(len(passed), 1) + cond_dim)
            # On the host (an eager jnp product would compile a small program per shape).
            scaled = [jax.device_put((np.asarray(a) * ratio).astype(np.asarray(a).dtype))
                      for a in (net.initial.weight, net.initial.bias)]
            self.conditioner = eqx.tree_at(lambda n: (n.initial.weight, n.initial.bias), net, tuple(scaled))
        else:
            self.transformer = make_transformer(transformer, num_bins, bound)
            net = ResidualMLP(dim, self.slots * self.transformer.num_params, width, num_blocks,
                              context_size=cond_dim, activation=activation, key=key)
            self.conditioner = eqx.tree_at(lambda n: n.final, net, zero_init(net.final))

    def condition_features(self, condition):
        _check_condition(condition, self.cond_dim, "Coupling")
        return self.conditioner.context_features(condition if self.cond_dim > 0 else None)

    def _apply(self, x, features, inverse: bool):
        raw = self.conditioner.apply(jnp.where(self.mask, 0.0, x), features)
        params = raw.reshape(self.slots, self.transformer.num_params)
        fn = self.transformer.inverse if inverse else self.transformer.forward
        picked = x[self.index]
        y, ld = fn(picked, params)
        return x.at[self.index].set(jnp.where(self.valid, y, picked)), jnp.sum(jnp.where(self.valid, ld, 0.0))

    def transform_with_features(self, x, features):
        return self._apply(x, features, inverse=False)

    def inverse_with_features(self, y, features):
        return self._apply(y, features, inverse=True)


COUPLING_LAYOUTS = ("jaxhep", "nflows")


def alternating_mask(dim: int, even: bool) -> np.ndarray:
    """Mask marking every other dimension (starting at 0 when `even`); for dim 1, the only one."""
    if dim == 1:
        return np.array([True])
    mask = np.arange(dim) % 2 == (0 if even else 1)
    return mask


