"""Parameter initialisation on the host.

Drawing each weight matrix with `jax.random` compiles one small XLA program per distinct
shape and per key split, which costs 0.05-0.1 s each on a CPU; a network of a few layers paid
about a second of compilation before training began (FMPE's 3-layer MLP: 1.0 s; NPE's flow
more). The initialisers here draw with numpy instead, from a generator seeded by the JAX key,
and move the arrays with `jax.device_put` (`jnp.asarray` of a numpy array also compiles a small
program per shape), so that networks are built without compiling anything and stay
reproducible from the key.
"""

from __future__ import annotations

import math
from functools import lru_cache

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PRNGKeyArray


def is_concrete(*arrays) -> bool:
    """True when none of the arrays is a tracer (so values can be read or checked on the host)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def numpy_rng(key: PRNGKeyArray | np.random.Generator) -> np.random.Generator:
    """A numpy generator seeded by the raw bits of a JAX key (typed or uint32); a generator is
    passed through, so that one can feed several layers in turn."""
    if isinstance(key, np.random.Generator):
        return key
    if not is_concrete(key):
        raise TypeError("jaxhep draws initial weights on the host from the bits of the key, so its networks cannot "
                        "be built inside jax.jit or jax.vmap (e.g. an ensemble by eqx.filter_vmap): build them in a "
                        "Python loop and stack their arrays")
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        if np.ndim(key) != 0:
            raise TypeError(f"expected a single JAX PRNG key, got a key array of shape {np.shape(key)}")
        key = jax.random.key_data(key)
    bits = np.asarray(key)
    if bits.dtype != np.uint32 or bits.ndim != 1:
        raise TypeError(f"expected a single JAX PRNG key (typed, or raw uint32 of shape (2,)), got dtype "
                        f"{bits.dtype} and shape {bits.shape}")
    return np.random.default_rng([int(b) for b in bits])


def typed_key(key: PRNGKeyArray) -> PRNGKeyArray:
    """`key` as a typed JAX key: a raw uint32 key (`jax.random.PRNGKey`) is wrapped with the default
    implementation, which gives the same random streams; TypeError for anything that is not a key."""
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        return key
    numpy_rng(key)  # the checks of a single raw key
    return jax.random.wrap_key_data(jax.device_put(np.asarray(key)))


def split_on_host(key: PRNGKeyArray, num: int) -> list[PRNGKeyArray]:
    """`num` new keys derived from `key` on the host, as a list (to unpack), like
    `jax.random.split(key, num)` but without compiling a program for each new `num` or for
    indexing the result (independent streams, not the same keys as `jax.random.split`). Typed
    keys give typed keys of the same implementation; raw uint32 keys give raw keys."""
    if not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num must be a non-negative integer, got {num!r}")
    typed = jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
    shape = np.shape(jax.random.key_data(key) if typed else key)
    bits = numpy_rng(key).integers(0, 2**32, (int(num),) + shape, dtype=np.uint64).astype(np.uint32)
    if typed:
        impl = jax.random.key_impl(key)
        return [jax.random.wrap_key_data(b, impl=impl) for b in bits]
    return [jax.device_put(b) for b in bits]


@lru_cache(maxsize=None)
def _linear_shape(in_size: int, out_size: int, use_bias: bool) -> eqx.nn.Linear:
    # The layer's structure without its arrays (traced, never compiled).
    return jax.eval_shape(lambda: eqx.nn.Linear(in_size, out_size, use_bias=use_bias, key=jax.random.key(0)))


def linear(in_size: int, out_size: int, key: PRNGKeyArray | np.random.Generator, *, use_bias: bool = True,
           weight_scale: float = 1.0, zero: bool = False) -> eqx.nn.Linear:
    """An `eqx.nn.Linear` with equinox's default initialisation (weights and bias uniform on
    +-1/sqrt(in_size)), drawn on the host.

    Arguments:
        in_size, out_size: layer sizes (in_size 0 is treated as 1, as the networks here do).
        key: a JAX key or a numpy generator (which is advanced).
        use_bias: include a bias.
        weight_scale: factor on the initial weights (not the bias).
        zero: start with zero weights and bias.

    Returns:
        The layer, with float32 arrays.
    """
    in_size = max(int(in_size), 1)
    skeleton = _linear_shape(in_size, int(out_size), bool(use_bias))
    rng = numpy_rng(key)
    lim = 1.0 / math.sqrt(in_size)
    if zero:
        w = np.zeros((out_size, in_size), np.float32)
        b = np.zeros((out_size,), np.float32)
    else:
        w = (weight_scale * rng.uniform(-lim, lim, (out_size, in_size))).astype(np.float32)
        b = rng.uniform(-lim, lim, (out_size,)).astype(np.float32)
    if not use_bias:
        return eqx.tree_at(lambda l: l.weight, skeleton, jax.device_put(w))
    return eqx.tree_at(lambda l: (l.weight, l.bias), skeleton, (jax.device_put(w), jax.device_put(b)))


__all__ = ["linear", "numpy_rng", "split_on_host"]
