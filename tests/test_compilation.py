"""jaxhep.compilation: jit entry points compiled with the CPU options, also when nested."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import compilations

from jaxhep import compilation
from jaxhep.compilation import filter_jit, jit, jit_kwargs

def compiles(call):
    """The number of XLA compilations `call()` starts."""
    with compilations() as seen:
        jax.block_until_ready(call())
    return len(seen)


def test_jit_kwargs_follow_the_options(monkeypatch):
    options = compilation.compiler_options()
    assert jit_kwargs() == ({} if options is None else {"compiler_options": options})
    if jax.default_backend() == "cpu":
        assert options and options.items() <= compilation.CPU_COMPILER_OPTIONS.items()
    monkeypatch.setattr(compilation, "CPU_COMPILER_OPTIONS", {})
    assert jit_kwargs() == {} and compilation.compiler_options() is None


def test_wrappers_pass_the_options_and_follow_changes(monkeypatch):
    seen = {"filter_jit": [], "jit": []}
    original = {"filter_jit": eqx.filter_jit, "jit": jax.jit}
    monkeypatch.setattr(compilation.eqx, "filter_jit",
                        lambda fun, **kw: seen["filter_jit"].append(kw) or original["filter_jit"](fun, **kw))
    monkeypatch.setattr(compilation.jax, "jit", lambda fun, **kw: seen["jit"].append(kw) or original["jit"](fun, **kw))
    double = filter_jit(lambda a: 2 * a)
    power = jit(lambda a, n: a**n, static_argnames="n")
    options = jit_kwargs()
    assert float(double(jnp.float32(1.5))) == 3.0 and float(power(jnp.float32(2.0), n=3)) == 8.0
    # (equinox's filter_jit calls jax.jit itself, so the jit spy sees that call too.)
    assert seen["filter_jit"] == [options] and seen["jit"][-1] == {"static_argnames": "n", **options}
    double(jnp.float32(2.0))  # the compiled function is kept
    assert len(seen["filter_jit"]) == 1
    # A change of options takes effect at the next call.
    monkeypatch.setattr(compilation, "CPU_COMPILER_OPTIONS", {})
    assert float(double(jnp.float32(1.5))) == 3.0 and seen["filter_jit"][-1] == {}


def test_nested_calls_give_the_same_values():
    # Options are for a top-level jit only; inside a user's jit, vmap or grad the entry point
    # becomes part of the outer program.
    f = filter_jit(lambda a, b: jnp.sin(a) * b)
    g = jit(lambda a, n: a**n, static_argnames="n")
    a = jnp.linspace(0.0, 1.0, 5)
    top = f(a, 2.0)
    np.testing.assert_allclose(jax.jit(f)(a, 2.0), top, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(f, in_axes=(0, None))(a, 2.0), top, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda x: f(x, 2.0).sum())(a), 2 * jnp.cos(a), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda x: g(x, n=2))(a), a**2, rtol=1e-6)


def test_density_entry_points_compile_with_the_options_and_agree_without(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the options apply to XLA's CPU compiler only")
    from jaxhep.densities import nsf

    flow = nsf(2, 3, num_transforms=2, hidden_features=8, key=jax.random.key(0))
    theta = jax.random.normal(jax.random.key(1), (7, 2))
    x = jax.random.normal(jax.random.key(2), (7, 3))
    tuned = flow.log_prob(theta, x)
    assert compiles(lambda: flow.log_prob(theta, x)) == 0
    monkeypatch.setattr(compilation, "CPU_COMPILER_OPTIONS", {})
    # Another program (XLA's defaults) is compiled, and gives the same values up to rounding.
    assert compiles(lambda: flow.log_prob(theta, x)) >= 1
    np.testing.assert_allclose(flow.log_prob(theta, x), tuned, rtol=1e-5, atol=1e-5)
