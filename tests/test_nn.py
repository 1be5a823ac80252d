import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep.nn import MLP, SET_EMBEDDINGS, PermutationInvariant, ResidualMLP, get_activation, set_embedding


def test_mlp_depth_width_and_zero_init():
    net = MLP(3, 2, width=7, depth=4, activation="tanh", final_zero=True, key=jax.random.key(0))
    assert len(net.layers) == 5
    assert net.layers[0].weight.shape == (7, 3)
    np.testing.assert_array_equal(net(jnp.ones(3)), jnp.zeros(2))


def test_residual_mlp_uses_context():
    net = ResidualMLP(2, 3, width=8, num_blocks=2, context_size=4, key=jax.random.key(1))
    x = jnp.array([0.1, -0.3])
    a, b = net(x, jnp.zeros(4)), net(x, jnp.ones(4))
    assert a.shape == (3,)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4
    with pytest.raises(ValueError, match="context"):
        net(x)
    with pytest.raises(ValueError, match=r"shape \(4,\), got shape \(3,\)"):
        net(x, jnp.ones(3))
    # A network built without a context refuses one instead of ignoring it.
    plain = ResidualMLP(2, 3, width=8, key=jax.random.key(1))
    with pytest.raises(ValueError, match="without a context"):
        plain(x, jnp.ones(4))


def test_residual_mlp_nflows_style_in_closed_form():
    """Style "nflows" (nflows' ResidualNet): each block's output is gated by a sigmoid of the
    context's map, and no activation comes before the output layer."""
    net = ResidualMLP(2, 3, width=5, num_blocks=2, context_size=2, style="nflows", key=jax.random.key(4))
    x, c = np.array([0.3, -0.7]), np.array([1.1, 0.4])

    def lin(layer, v):
        return np.asarray(layer.weight) @ v + np.asarray(layer.bias)

    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h = lin(net.initial, np.concatenate([x, c]))
    for block in net.blocks:
        t = lin(block.second, relu(lin(block.first, relu(h))))
        h = h + t / (1.0 + np.exp(-lin(block.context, c)))
    np.testing.assert_allclose(net(jnp.asarray(x), jnp.asarray(c)), lin(net.final, h), rtol=1e-5, atol=1e-6)
    # Its blocks' second layers start near zero, biases included (uniform on +-1e-3).
    assert all(float(jnp.max(jnp.abs(b.second.bias))) <= 1e-3 for b in net.blocks)
    with pytest.raises(ValueError, match="style"):
        ResidualMLP(2, 3, style="torch", key=jax.random.key(0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        get_activation("swishy")
    with pytest.raises(ValueError, match="width"):
        MLP(2, 2, width=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="context_size"):
        ResidualMLP(2, 2, context_size=-1, key=jax.random.key(0))
    # numpy integers are integers.
    assert MLP(np.int64(3), 2, width=np.int32(4), key=jax.random.key(0))(jnp.ones(3)).shape == (2,)


def test_permutation_invariant_summary():
    net = PermutationInvariant(5, 3, out_size=4, width=16, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (15,))
    items = x.reshape(5, 3)
    shuffled = items[jnp.array([3, 0, 4, 2, 1])].ravel()
    out = net(x)
    assert out.shape == (4,)
    np.testing.assert_allclose(np.asarray(net(shuffled)), np.asarray(out), rtol=1e-5, atol=1e-6)
    # Not invariant to permutations inside an item: the summary does see each item's content.
    assert not np.allclose(np.asarray(net(items[:, ::-1].ravel())), np.asarray(out))
    with pytest.raises(ValueError, match="5 items of size 3"):
        net(jnp.zeros(14))
    with pytest.raises(ValueError, match="num_items"):
        PermutationInvariant(0, 3, key=jax.random.key(0))


def test_standardized_set_summary_is_the_documented_function():
    net = PermutationInvariant(5, 3, out_size=4, width=16, standardize=True, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (15,)) * jnp.tile(jnp.array([0.01, 1.0, 30.0]), 5)
    items = x.reshape(5, 3)
    out = net(x)
    assert out.shape == (4,)
    mean, var = items.mean(0), items.var(0) + net.eps
    pooled = jnp.mean(jax.vmap(net.phi)((items - mean) / jnp.sqrt(var)), axis=0)
    expected = net.rho(jnp.concatenate([pooled, mean, 0.5 * jnp.log(var)]))
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-4, atol=1e-5)
    shuffled = items[jnp.array([3, 0, 4, 2, 1])].ravel()
    np.testing.assert_allclose(np.asarray(net(shuffled)), np.asarray(out), rtol=1e-5, atol=1e-5)
    # What phi sees does not change under a positive rescaling and shift of each coordinate.
    scale, shift = jnp.array([100.0, 0.5, 2.0]), jnp.array([-3.0, 7.0, 0.0])
    phi_in = lambda it: (it - it.mean(0)) / jnp.sqrt(it.var(0))  # noqa: E731
    np.testing.assert_allclose(np.asarray(phi_in(items * scale + shift)), np.asarray(phi_in(items)), atol=1e-4)
    # A set of identical items (zero spread) stays finite, value and gradient.
    same = jnp.tile(jnp.array([0.3, -1.0, 2.0]), 5)
    assert np.all(np.isfinite(np.asarray(net(same))))
    grad = jax.grad(lambda v: net(v).sum())(same)
    assert np.all(np.isfinite(np.asarray(grad)))
    # The plain summary has a narrower rho input; the options are checked.
    assert PermutationInvariant(5, 3, width=16, key=jax.random.key(0)).rho.layers[0].weight.shape[1] == 16
    assert net.rho.layers[0].weight.shape[1] == 16 + 6
    with pytest.raises(TypeError, match="standardize"):
        PermutationInvariant(5, 3, standardize="yes", key=jax.random.key(0))
    with pytest.raises(ValueError, match="eps"):
        PermutationInvariant(5, 3, standardize=True, eps=0.0, key=jax.random.key(0))


def test_named_set_embeddings():
    for kind, standardize in (("deepsets", False), ("setnorm", True)):
        emb = set_embedding(kind, (4, 2), key=jax.random.key(0))
        assert isinstance(emb, PermutationInvariant) and emb.standardize is standardize
        assert (emb.num_items, emb.item_size) == (4, 2)
        assert emb(jnp.arange(8.0)).shape == (20,)
    assert sorted(SET_EMBEDDINGS) == ["deepsets", "setnorm"]
    with pytest.raises(ValueError, match="unknown set embedding 'mean'; expected one of: deepsets, setnorm"):
        set_embedding("mean", (4, 2), key=jax.random.key(0))
