"""Unconditional linear bijections: elementwise affine, permutation, LU-parameterised dense map."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.bijections.base import AbstractBijection, _check_dims
from jaxhep.nn.init import is_concrete


class Affine(AbstractBijection):
    """Elementwise y = loc + scale * x (scale > 0 per dimension).

    Arguments:
        loc: shift vector.
        scale: positive scale vector.
    """

    loc: Float[Array, " d"]
    log_scale: Float[Array, " d"]
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True, default=0)

    def __init__(self, loc, scale):
        if is_concrete(loc, scale):
            # On the host, then placed once: eager jnp ops compile a small program each.
            loc = np.atleast_1d(np.asarray(loc, dtype=jnp.result_type(float)))
            scale = np.broadcast_to(np.asarray(scale, dtype=loc.dtype), loc.shape)
            if np.any(scale <= 0):
                raise ValueError(f"scale must be positive, got {scale}")
            self.loc, self.log_scale = jax.device_put(loc), jax.device_put(np.log(scale))
        else:
            loc = jnp.atleast_1d(jnp.asarray(loc, dtype=float))
            self.loc, self.log_scale = loc, jnp.log(jnp.broadcast_to(jnp.asarray(scale, dtype=float), loc.shape))
        self.dim, self.cond_dim = int(self.loc.shape[0]), 0

    def transform_and_log_det(self, x, condition=None):
        return self.loc + jnp.exp(self.log_scale) * x, jnp.sum(self.log_scale)

    def inverse_and_log_det(self, y, condition=None):
        return (y - self.loc) * jnp.exp(-self.log_scale), -jnp.sum(self.log_scale)


class Permutation(AbstractBijection):
    """Fixed permutation y = x[perm] (log-det 0)."""

    perm: tuple[int, ...] = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True, default=0)

    def __init__(self, perm):
        perm = np.asarray(perm)
        if sorted(perm.tolist()) != list(range(len(perm))):
            raise ValueError(f"perm must be a permutation of 0..{len(perm) - 1}, got {perm.tolist()}")
        self.perm, self.dim, self.cond_dim = tuple(int(p) for p in perm), len(perm), 0

    @staticmethod
    def random(dim: int, *, key: PRNGKeyArray) -> "Permutation":
        """A random permutation of `dim` dimensions."""
        return Permutation(np.asarray(jax.random.permutation(key, dim)))

    def transform_and_log_det(self, x, condition=None):
        return x[jnp.asarray(self.perm)], jnp.zeros((), x.dtype)

    def inverse_and_log_det(self, y, condition=None):
        return y[jnp.asarray(np.argsort(self.perm))], jnp.zeros((), y.dtype)


class LULinear(AbstractBijection):
    """Dense invertible map y = L U x + b with L unit lower- and U upper-triangular.

    The diagonal of U is softplus-positive, so log|det| = sum log diag(U) costs O(d).
    Initialised at the identity.

    Arguments:
        dim: vector size.
        key: PRNG key (keyword-only; unused at identity initialisation but kept for a uniform API).
    """

    lower: Float[Array, "d d"]
    upper: Float[Array, "d d"]
    raw_diag: Float[Array, " d"]
    bias: Float[Array, " d"]
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True, default=0)

    def __init__(self, dim: int, *, key: PRNGKeyArray | None = None):
        _check_dims(dim, 0)
        del key
        self.dim, self.cond_dim = dim, 0
        # A strong dtype (weak-typed leaves change type after one update), built on the host
        # (eager jnp.zeros would compile a small program per shape).
        dtype = jnp.result_type(float)
        self.lower = jax.device_put(np.zeros((dim, dim), dtype))
        self.upper = jax.device_put(np.zeros((dim, dim), dtype))
        self.raw_diag = jax.device_put(np.full((dim,), np.log(np.expm1(1.0 - 1e-3)), dtype))
        self.bias = jax.device_put(np.zeros((dim,), dtype))

    def _factors(self):
        eye = jnp.eye(self.dim)
        lower = jnp.tril(self.lower, -1) + eye
        diag = jax.nn.softplus(self.raw_diag) + 1e-3
        upper = jnp.triu(self.upper, 1) + jnp.diag(diag)
        return lower, upper, diag

    def transform_and_log_det(self, x, condition=None):
        lower, upper, diag = self._factors()
        return lower @ (upper @ x) + self.bias, jnp.sum(jnp.log(diag))

    def inverse_and_log_det(self, y, condition=None):
        lower, upper, diag = self._factors()
        z = jsl.solve_triangular(lower, y - self.bias, lower=True, unit_diagonal=True)
        x = jsl.solve_triangular(upper, z, lower=False)
        return x, -jnp.sum(jnp.log(diag))
