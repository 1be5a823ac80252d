"""Fixtures shared by several test modules."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body in float64 (jaxhep.theory.pinn.float64) and check that the global
    setting is back afterwards."""
    from jaxhep.theory.pinn import float64

    before = jax.config.jax_enable_x64
    with float64():
        yield
    assert jax.config.jax_enable_x64 == before
