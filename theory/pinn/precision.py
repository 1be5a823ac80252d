"""Local float64: a context manager that enables 64-bit JAX types only inside PINN entry points.

PINN training with L-BFGS is limited by float32 round-off well above the 1e-4 error level, so the
solvers run in float64. Flipping `jax_enable_x64` globally would change the dtype of every array
that the rest of jaxhep creates in the same process, so it is switched on only for the duration
of a `with float64():` block (JAX's thread-local context), and restored on exit.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import equinox as eqx
import jax


@contextlib.contextmanager
def float64(enabled: bool = True) -> Iterator[None]:
    """Enable (or, with `enabled=False`, leave as is) 64-bit JAX types inside the block.

    Arguments:
        enabled: whether to switch float64 on; False makes the block a no-op.

    Returns:
        A context manager; the previous setting is restored on exit, exceptions included.
    """
    if not enabled:
        yield
        return
    with jax.enable_x64(True):
        yield


def with_float64(fn: Callable) -> Callable:
    """Decorate an entry point so that it runs under `float64()` when called with `float64=True`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        use = kwargs.get("float64", True)
        with float64(bool(use)):
            return fn(*args, **kwargs)

    return wrapper


def cast_floats(tree, dtype):
    """The pytree with its floating-point arrays cast to `dtype` (other leaves untouched)."""
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)
