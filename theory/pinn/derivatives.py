"""Exact derivatives of a network with respect to its input, by forward-mode autodiff.

A residual is written in terms of a solution function `u(x)` of one point `x` (a vector of
space-time coordinates). Derivatives are taken with nested `jax.jvp` along coordinate axes, which
costs one forward pass per order and never forms a full Jacobian or Hessian unless asked to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _along(f: Callable, dim: int) -> Callable:
    def df(x):
        tangent = jnp.zeros_like(x).at[dim].set(1.0)
        return jax.jvp(f, (x,), (tangent,))[1]

    return df


def partial(u: Callable, x: Float[Array, " d"], *dims: int) -> Array:
    """Mixed partial derivative of `u` at `x` along the coordinate axes `dims`, in that order.

    `partial(u, x, 0)` is du/dx0, `partial(u, x, 1, 1)` is d2u/dx1^2, `partial(u, x)` is u(x).

    Arguments:
        u: function of one point, returning a scalar or a vector of outputs.
        x: the point, shape (d,).
        dims: coordinate indices, each in [0, d).

    Returns:
        The derivative, with the shape of u(x).

    Raises:
        ValueError: for an index outside [0, d).
    """
    if jnp.ndim(x) != 1:
        raise ValueError(f"x must be one point of shape (d,), got shape {jnp.shape(x)}; use jax.vmap over "
                         "a batch of points")
    d = x.shape[-1]
    for dim in dims:
        if not 0 <= dim < d:
            raise ValueError(f"derivative index {dim} is outside the {d} input coordinates")
    f = u
    for dim in dims:
        f = _along(f, dim)
    return f(x)


def gradient(u: Callable, x: Float[Array, " d"]) -> Array:
    """Gradient (Jacobian for vector outputs) of `u` at `x` by forward mode; shape u(x).shape + (d,)."""
    return jax.jacfwd(u)(x)


def hessian(u: Callable, x: Float[Array, " d"]) -> Array:
    """Hessian of `u` at `x` (`jax.hessian`); shape u(x).shape + (d, d)."""
    return jax.hessian(u)(x)


def laplacian(u: Callable, x: Float[Array, " d"], dims: Sequence[int] | None = None) -> Array:
    """Sum of second derivatives of `u` along `dims` (all coordinates by default).

    Arguments:
        u: function of one point.
        x: the point, shape (d,).
        dims: the coordinates to sum over, e.g. the spatial ones only for a time-dependent problem.

    Returns:
        The Laplacian, with the shape of u(x).
    """
    dims = range(x.shape[-1]) if dims is None else dims
    return sum(partial(u, x, i, i) for i in dims)
