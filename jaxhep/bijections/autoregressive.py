"""Masked autoregressive bijection (MADE conditioner): y_i = tau(x_i; NN(x_<i, condition))."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from jaxhep.bijections.base import AbstractFeatureBijection, _check_condition, _check_dims
from jaxhep.bijections.elementwise import AffineTransformer, SplineTransformer, make_transformer
from jaxhep.checks import check_positive_int
from jaxhep.nn import get_activation
from jaxhep.nn.init import linear, numpy_rng


class _MaskedLinear(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    mask: jax.Array  # boolean, so never trained

    def __call__(self, h):
        return jnp.where(self.mask, self.weight, 0.0) @ h + self.bias


def _made_masks(dim: int, width: int, depth: int, params_per_dim: int, conditional: bool = False):
    """Connectivity masks of MADE (Germain et al. 2015): output i sees inputs < i only.

    With a condition, hidden degrees start at 0: units of degree 0 see no input but the
    condition (added to the first hidden layer), and they feed every output, so that the first
    dimension's transform depends on the condition too. (With degrees from 1, as in nflows'
    MADE, output 0 is connected to no hidden unit: its transform is a constant, and a
    one-dimensional conditional MAF ignores its condition altogether.)
    """
    in_deg = np.arange(1, dim + 1)
    if conditional:
        hidden_deg = [np.arange(width) % dim for _ in range(depth)]
    else:
        hidden_deg = [(np.arange(width) % max(dim - 1, 1)) + 1 for _ in range(depth)]
    masks, prev = [], in_deg
    for deg in hidden_deg:
        masks.append(jnp.asarray(deg[:, None] >= prev[None, :]))
        prev = deg
    out_deg = np.repeat(in_deg, params_per_dim)  # outputs grouped per dimension
    masks.append(jnp.asarray(out_deg[:, None] > prev[None, :]))
    return masks


class MaskedAutoregressive(AbstractFeatureBijection):
    """Autoregressive bijection with a MADE conditioner; the forward pass is one network call,
    the inverse is `dim` sequential calls.

    Arguments:
        dim: vector size.
        cond_dim: conditioning vector size (fed to every hidden unit).
        transformer: 'affine' (MAF) or 'spline' (autoregressive NSF).
        width, depth, activation: MADE settings.
        num_bins, bound: spline settings.
        key: PRNG key (keyword-only).
    """

    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)
    transformer: AffineTransformer | SplineTransformer
    layers: tuple[_MaskedLinear, ...]
    context_layer: eqx.nn.Linear | None
    activation: Callable = eqx.field(static=True)

    def __init__(self, dim: int, cond_dim: int = 0, transformer: str = "affine", width: int = 50,
                 depth: int = 2, activation: str | Callable = "relu", num_bins: int = 10,
                 bound: float = 3.0, *, key: PRNGKeyArray):
        _check_dims(dim, cond_dim)
        check_positive_int("depth", depth, numpy_ints=False)
        check_positive_int("width", width, numpy_ints=False)
        self.dim, self.cond_dim = dim, cond_dim
        self.transformer = make_transformer(transformer, num_bins, bound)
        p = self.transformer.num_params
        masks = _made_masks(dim, width, depth, p, conditional=cond_dim > 0)
        sizes = [dim] + [width] * depth + [dim * p]
        rng = numpy_rng(key)
        layers = []
        for i, m in enumerate(masks):
            # The last layer starts at zero: the identity at initialisation.
            lin = linear(sizes[i], sizes[i + 1], rng, zero=i == len(masks) - 1)
            layers.append(_MaskedLinear(lin.weight, lin.bias, m))
        self.layers = tuple(layers)
        self.context_layer = linear(cond_dim, width, rng) if cond_dim > 0 else None
        self.activation = get_activation(activation)

    def condition_features(self, condition):
        """The context layer's output: the same for every autoregressive step of the inverse and,
        inside `Stacked`, computed for all layers before the loop."""
        _check_condition(condition, self.cond_dim, "MaskedAutoregressive")
        return None if self.context_layer is None else self.context_layer(condition)

    def _params(self, x, context_term):
        h = self.layers[0](x)
        if context_term is not None:
            h = h + context_term
        h = self.activation(h)
        for layer in self.layers[1:-1]:
            h = self.activation(layer(h))
        return self.layers[-1](h).reshape(self.dim, self.transformer.num_params)

    def transform_with_features(self, x, features):
        y, ld = self.transformer.forward(x, self._params(x, features))
        return y, jnp.sum(ld)

    def inverse_with_features(self, y, features):
        def body(i, x):
            xi, _ = self.transformer.inverse(y, self._params(x, features))
            return x.at[i].set(xi[i])

        x = jax.lax.fori_loop(0, self.dim, body, jnp.zeros_like(y))
        _, ld = self.transformer.inverse(y, self._params(x, features))
        return x, jnp.sum(ld)
