import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep.nn import MLP, ResidualMLP, get_activation


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


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        get_activation("swishy")
    with pytest.raises(ValueError, match="width"):
        MLP(2, 2, width=0, key=jax.random.key(0))
