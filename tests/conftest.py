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


# Two CPU devices for the data-parallel tests (tests/test_parallel.py). JAX fixes its device count
# when it first runs, so this must come before any computation; the other tests run on the
# default device as before.
try:
    jax.config.update("jax_num_cpu_devices", 2)
except RuntimeError:  # JAX ran before the tests were collected: keep its devices
    pass
