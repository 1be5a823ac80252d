"""Flax networks as equinox modules, so that a Flax (Linen or NNX) network can serve wherever
jaxhep takes one: an `embedding_net`, the network of NPSE/FMPE (`network=`), or any module
trained with `jaxhep.training.fit`.

The wrapper holds the network's parameters as its arrays (trained like any other module's) and
its definition as a static field. Only stateless networks are supported: Flax state other than
parameters (batch statistics, dropout RNG streams) would be changed by the call and the change
lost, so networks holding it are refused.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jaxtyping import PRNGKeyArray, PyTree

__all__ = ["FlaxLinen", "FlaxNNX", "from_flax"]


class FlaxLinen(eqx.Module):
    """A Flax Linen module with its parameters: `wrapper(*args) = module.apply({"params": params}, *args)`.

    Arguments:
        module: the Linen module (its definition; Linen modules hold no arrays).
        params: its parameters, the "params" collection of `module.init(...)`.
    """

    module: Any = eqx.field(static=True)
    params: PyTree

    def __call__(self, *args, **kwargs):
        return self.module.apply({"params": self.params}, *args, **kwargs)


class FlaxNNX(eqx.Module):
    """A Flax NNX module split into its graph definition (static) and its parameters.

    Arguments:
        module: an initialised NNX module whose only state is `nnx.Param` variables. It is not
            changed; later changes to it do not reach the wrapper.

    Raises:
        ValueError: when the module holds state other than parameters.
    """

    graphdef: Any = eqx.field(static=True)
    params: PyTree

    def __init__(self, module):
        from flax import nnx

        # A clone: the split state would otherwise hold the very Variables of `module`.
        graphdef, params, rest = nnx.split(nnx.clone(module), nnx.Param, ...)
        kinds = _state_kinds(rest)
        if kinds:
            raise ValueError(f"the NNX module holds state other than parameters ({', '.join(kinds)}); only "
                             "stateless networks can be wrapped (no BatchNorm statistics or dropout RNGs)")
        self.graphdef, self.params = graphdef, params

    def __call__(self, *args, **kwargs):
        from flax import nnx

        return nnx.merge(self.graphdef, self.params)(*args, **kwargs)


def _state_kinds(state) -> list[str]:
    """The variable types in an NNX state, with where each first occurs."""
    from flax import nnx

    seen = {}
    for path, variable in nnx.to_flat_state(state):
        seen.setdefault(type(variable).__name__, ".".join(str(p) for p in path))
    return [f"{kind} at {path}" for kind, path in sorted(seen.items())]


def from_flax(module, *example_args, key: PRNGKeyArray | None = None, **example_kwargs) -> FlaxLinen | FlaxNNX:
    """Wrap a Flax network as an equinox module.

    Arguments:
        module: a Linen module (initialised here, from `key` and the example inputs) or an
            initialised NNX module (used as it is).
        example_args, example_kwargs: inputs of the shape the network will be called with (one
            x for an embedding net; theta, x and t for an NPSE/FMPE network). Needed for Linen.
        key: PRNG key for Linen's initialisation (keyword-only); not used for NNX.

    Returns:
        A `FlaxLinen` or `FlaxNNX` module.

    Raises:
        TypeError: when `module` is not a Flax module.
        ValueError: when a Linen module comes without key or example input, or a network holds
            state other than parameters.
    """
    from flax import linen, nnx

    if isinstance(module, nnx.Module):
        return FlaxNNX(module)
    if not isinstance(module, linen.Module):
        raise TypeError(f"expected a Flax Linen or NNX module, got {type(module).__name__}")
    if key is None:
        raise ValueError("a Linen module needs key= to initialise its parameters")
    if not example_args and not example_kwargs:
        raise ValueError("a Linen module needs an example input to initialise its parameters, e.g. "
                         "from_flax(net, jnp.zeros(x_dim), key=key)")
    variables = module.init(key, *example_args, **example_kwargs)
    others = sorted(set(variables) - {"params"})
    if others:
        raise ValueError(f"the Linen module holds collections other than params ({', '.join(others)}); only "
                         "stateless networks can be wrapped (no BatchNorm statistics or other mutable state)")
    return FlaxLinen(module, variables.get("params", {}))
