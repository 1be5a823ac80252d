"""Multilayer perceptrons with configurable width, depth and activation."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.checks import check_int_at_least
from jaxhep.nn.init import linear, numpy_rng

RESIDUAL_STYLES = ("jaxhep", "nflows")

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "sin": jnp.sin,
}


def get_activation(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """Return an activation function from its name or pass a callable through.

    Arguments:
        activation: a name (relu, gelu, silu, tanh, elu, softplus, sin) or a callable.

    Returns:
        The activation function.

    Raises:
        ValueError: for an unknown name.
    """
    if callable(activation):
        return activation
    try:
        return _ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)} or a callable"
        ) from None


def _check_sizes(in_size: int, out_size: int, width: int, depth: int) -> None:
    for name, value, least in (("in_size", in_size, 0), ("out_size", out_size, 1), ("width", width, 1), ("depth", depth, 0)):
        check_int_at_least(name, value, least)


class MLP(eqx.Module):
    """Fully connected network mapping a vector of `in_size` to one of `out_size`.

    Arguments:
        in_size: input dimension (0 is allowed and means an input-free bias network).
        out_size: output dimension.
        width: hidden units per layer.
        depth: number of hidden layers.
        activation: name or callable applied after every hidden layer.
        final_zero: initialise the last layer to zero (flows then start at the identity).
        key: PRNG key for initialisation (keyword-only).
    """

    layers: tuple[eqx.nn.Linear, ...]
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int = 64, depth: int = 2,
                 activation: str | Callable = "relu", final_zero: bool = False, *, key: PRNGKeyArray):
        _check_sizes(in_size, out_size, width, depth)
        sizes = [in_size] + [width] * depth + [out_size]
        rng = numpy_rng(key)
        n = len(sizes) - 1
        self.layers = tuple(linear(a, b, rng, zero=final_zero and i == n - 1)
                            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
        self.activation = get_activation(activation)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        if x.shape[-1] == 0:
            x = jnp.zeros((1,), x.dtype)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class _ResidualBlock(eqx.Module):
    first: eqx.nn.Linear
    second: eqx.nn.Linear
    context: eqx.nn.Linear | None
    gate: bool = eqx.field(static=True, default=False)

    def context_term(self, ctx):
        """What the block takes from the context: the sigmoid gate, or the term added."""
        term = self.context(ctx)
        return jax.nn.sigmoid(term) if self.gate else term

    def __call__(self, h, term, activation):
        t = activation(h)
        t = self.first(t)
        if term is not None and not self.gate:
            t = t + term
        t = activation(t)
        t = self.second(t)
        if term is not None and self.gate:
            t = t * term  # a GLU with the context as the gate
        return h + t


class ResidualMLP(eqx.Module):
    """Residual network: a linear input layer, residual blocks of two linear layers, a linear output.

    The context vector, when given, enters the input layer and, through a linear map of its
    own, every block, so that every block is conditioned rather than only the first layer.

    Two layouts. "jaxhep" (the default): each block adds the context's map after its first
    layer, and the activation is applied before the output layer. "nflows": nflows'
    `ResidualNet`, the conditioner of PyTorch sbi's NSF: each block's output is gated by a
    sigmoid of the context's map (a GLU), there is no activation before the output layer, and
    each block's second layer starts with weights and biases uniform on +-1e-3 (in "jaxhep",
    only its weights are that small).

    Arguments:
        in_size: input dimension.
        out_size: output dimension.
        width: hidden units.
        num_blocks: number of residual blocks.
        context_size: size of an optional context vector (0 for none).
        activation: name or callable.
        final_zero: initialise the output layer to zero.
        style: "jaxhep" or "nflows" (see above).
        key: PRNG key (keyword-only).
    """

    initial: eqx.nn.Linear
    blocks: tuple[_ResidualBlock, ...]
    final: eqx.nn.Linear
    activation: Callable[[Array], Array] = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    style: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int = 64, num_blocks: int = 2,
                 context_size: int = 0, activation: str | Callable = "relu", final_zero: bool = False,
                 style: str = "jaxhep", *, key: PRNGKeyArray):
        _check_sizes(in_size, out_size, width, num_blocks)
        check_int_at_least("context_size", context_size, 0)
        if style not in RESIDUAL_STYLES:
            raise ValueError(f"style must be one of {RESIDUAL_STYLES}, got {style!r}")
        nflows = style == "nflows"
        context_size = int(context_size)
        rng = numpy_rng(key)
        self.initial = linear(max(in_size, 1) + context_size, width, rng)
        blocks = []
        for _ in range(num_blocks):
            first = linear(width, width, rng)
            # Small last-layer init keeps each block close to the identity at the start.
            second = linear(width, width, rng, weight_scale=1e-3)
            if nflows:
                second = eqx.tree_at(lambda l: l.bias, second,
                                     jax.device_put(rng.uniform(-1e-3, 1e-3, (width,)).astype(np.float32)))
            ctx = linear(context_size, width, rng) if context_size > 0 else None
            blocks.append(_ResidualBlock(first, second, ctx, gate=nflows))
        self.blocks = tuple(blocks)
        self.final = linear(width, out_size, rng, zero=final_zero)
        self.activation = get_activation(activation)
        self.context_size = context_size
        self.style = style

    def context_features(self, context: Float[Array, " c"] | None) -> tuple | None:
        """The context and what every block computes from it alone (the term it adds, or the
        sigmoid gate). `apply(x, context_features(c))` equals `self(x, c)`; computing the
        features once lets a caller hoist them out of a loop, e.g. for all the layers of a
        stacked flow at once (`jaxhep.bijections.Stacked`). The input layer's share stays in
        `apply`: splitting its weight there cost more than it saved."""
        if self.context_size == 0:
            if context is not None:
                raise ValueError("this network was built without a context (context_size=0), but one was given")
            return None
        if context is None or jnp.shape(context) != (self.context_size,):
            got = "none" if context is None else f"shape {jnp.shape(context)}"
            raise ValueError(f"this network expects a context vector of shape ({self.context_size},), got {got}")
        return context, tuple(block.context_term(context) for block in self.blocks)

    def apply(self, x: Float[Array, " in_size"], features: tuple | None) -> Float[Array, " out_size"]:
        """The network on `x`, given `context_features(context)` (None without a context)."""
        if x.shape[-1] == 0:
            x = jnp.zeros((1,), x.dtype)
        if features is None:
            h, terms = self.initial(x), (None,) * len(self.blocks)
        else:
            context, terms = features
            h = self.initial(jnp.concatenate([x, context]))
        for block, term in zip(self.blocks, terms):
            h = block(h, term, self.activation)
        return self.final(h if self.style == "nflows" else self.activation(h))

    def __call__(self, x: Float[Array, " in_size"], context: Float[Array, " c"] | None = None) -> Float[Array, " out_size"]:
        return self.apply(x, self.context_features(context))
