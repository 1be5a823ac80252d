"""Host-side initialisation (jaxhep.nn.init): distributions, reproducibility, and no compilation."""

import logging

import equinox as eqx
import jax
import numpy as np
import pytest

from jaxhep.densities.flows import nsf
from jaxhep.nn import MLP, ResidualMLP
from jaxhep.nn.init import linear, numpy_rng, split_on_host


def test_linear_draws_equinox_default_distribution_reproducibly():
    layer = linear(50, 400, jax.random.key(0))
    w, b = np.asarray(layer.weight), np.asarray(layer.bias)
    assert w.shape == (400, 50) and b.shape == (400,) and w.dtype == np.float32
    lim = 1 / np.sqrt(50)
    assert np.abs(w).max() <= lim and np.abs(b).max() <= lim
    # Uniform on +-lim: mean 0 and variance lim^2 / 3, to within a few standard errors (20000 draws).
    assert abs(w.mean()) < 4 * lim / np.sqrt(3 * w.size)
    np.testing.assert_allclose(w.var(), lim**2 / 3, rtol=0.05)
    np.testing.assert_array_equal(w, np.asarray(linear(50, 400, jax.random.key(0)).weight))
    assert not np.array_equal(w, np.asarray(linear(50, 400, jax.random.key(1)).weight))
    zero = linear(3, 2, jax.random.key(0), zero=True)
    assert not np.any(np.asarray(zero.weight)) and not np.any(np.asarray(zero.bias))
    scaled = linear(3, 2, jax.random.key(0), weight_scale=1e-3)
    np.testing.assert_allclose(np.asarray(scaled.weight), 1e-3 * np.asarray(linear(3, 2, jax.random.key(0)).weight),
                               rtol=1e-6)
    assert linear(3, 2, jax.random.key(0), use_bias=False).bias is None
    np.testing.assert_allclose(np.asarray(layer(np.ones(50, np.float32))), w.sum(axis=1) + b, rtol=1e-5, atol=1e-6)


def test_split_on_host_gives_distinct_reproducible_keys_of_the_same_kind():
    key = jax.random.key(5)
    keys = split_on_host(key, 4)
    assert len(keys) == 4 and all(k.dtype == key.dtype and k.shape == () for k in keys)
    draws = [float(jax.random.normal(k)) for k in keys]
    assert len(set(draws)) == 4
    assert draws == [float(jax.random.normal(k)) for k in split_on_host(key, 4)]
    raw = split_on_host(jax.random.PRNGKey(0), 2)
    assert all(r.dtype == np.uint32 and r.shape == (2,) for r in raw)
    assert split_on_host(key, 0) == []
    with pytest.raises(ValueError, match="non-negative integer"):
        split_on_host(key, -1)


def test_numpy_rng_rejects_what_is_not_one_key():
    with pytest.raises(TypeError, match="single JAX PRNG key"):
        numpy_rng(jax.random.split(jax.random.key(0), 3))
    with pytest.raises(TypeError, match="single JAX PRNG key"):
        numpy_rng(np.zeros(2, np.float32))
    rng = np.random.default_rng(0)
    assert numpy_rng(rng) is rng
    # Under vmap the key is a tracer: a message saying why, not a TracerArrayConversionError.
    with pytest.raises(TypeError, match="cannot be built inside jax.jit or jax.vmap"):
        eqx.filter_vmap(lambda k: MLP(2, 2, key=k))(jax.random.split(jax.random.key(0), 3))


def test_building_networks_compiles_nothing(caplog):
    # Warm up what is shared with everything else (key creation), then build fresh shapes.
    key = jax.random.key(123)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        MLP(7, 3, width=37, depth=3, key=key)
        ResidualMLP(5, 11, width=29, num_blocks=2, context_size=4, key=key)
        # A whole spline flow: coupling layers (with a spare slot, odd dimension), LU layers, and
        # their stacking for lax.scan.
        nsf(5, 3, num_transforms=3, hidden_features=31, num_bins=7, key=key)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
