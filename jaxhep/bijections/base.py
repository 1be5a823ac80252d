"""The bijection interface: invertible maps with log-determinants, optionally conditioned on a vector."""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from jaxhep.checks import check_positive_int


class AbstractBijection(eqx.Module):
    """An invertible map y = f(x; condition) on vectors of size `dim`.

    Subclasses implement `transform_and_log_det` and `inverse_and_log_det` for one
    (unbatched) vector; use `jax.vmap` for batches. The log-determinants are
    log|det df/dx| and log|det df^{-1}/dy| respectively.

    Attributes (static fields of subclasses):
        dim: size of the vectors it maps.
        cond_dim: size of the conditioning vector (0 when unconditional).
    """

    dim: eqx.AbstractVar[int]
    cond_dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def transform_and_log_det(self, x: Float[Array, " d"], condition: Float[Array, " c"] | None = None
                              ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """Forward map and log|det J| of the forward map."""

    @abc.abstractmethod
    def inverse_and_log_det(self, y: Float[Array, " d"], condition: Float[Array, " c"] | None = None
                            ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """Inverse map and log|det J| of the inverse map."""

    def condition_features(self, condition: Float[Array, " c"] | None):
        """What this bijection computes from the condition alone, in a form that
        `transform_with_features` and `inverse_with_features` take instead of the condition.

        The default is the condition itself. Bijections whose networks spend work on the
        condition (e.g. a coupling layer's conditioner) override it, so that a stack of layers
        can compute every layer's share at once, outside its loop over layers (see `Stacked`).
        """
        return condition

    def transform_with_features(self, x: Float[Array, " d"], features) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """`transform_and_log_det(x, condition)` given `condition_features(condition)`."""
        return self.transform_and_log_det(x, features)

    def inverse_with_features(self, y: Float[Array, " d"], features) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """`inverse_and_log_det(y, condition)` given `condition_features(condition)`."""
        return self.inverse_and_log_det(y, features)

    def transform(self, x, condition=None):
        """Forward map only."""
        return self.transform_and_log_det(x, condition)[0]

    def inverse(self, y, condition=None):
        """Inverse map only."""
        return self.inverse_and_log_det(y, condition)[0]

    def in_domain(self, x: Float[Array, " d"]) -> Bool[Array, ""]:
        """Whether `x` lies in the forward map's domain (all of R^d unless overridden)."""
        return jnp.asarray(True)


class AbstractFeatureBijection(AbstractBijection):
    """A bijection written on its condition's features: subclasses implement
    `condition_features`, `transform_with_features` and `inverse_with_features`, and
    `transform_and_log_det` / `inverse_and_log_det` compute the features and call those."""

    @abc.abstractmethod
    def transform_with_features(self, x, features):
        """Forward map and log|det J| given `condition_features(condition)`."""

    @abc.abstractmethod
    def inverse_with_features(self, y, features):
        """Inverse map and log|det J| of the inverse given `condition_features(condition)`."""

    def transform_and_log_det(self, x, condition=None):
        return self.transform_with_features(x, self.condition_features(condition))

    def inverse_and_log_det(self, y, condition=None):
        return self.inverse_with_features(y, self.condition_features(condition))


def _check_dims(dim: int, cond_dim: int) -> None:
    check_positive_int("dim", dim, numpy_ints=False)
    if not isinstance(cond_dim, int) or cond_dim < 0:
        raise ValueError(f"cond_dim must be a non-negative integer, got {cond_dim!r}")


def _check_condition(condition, cond_dim: int, name: str) -> None:
    """Raise ValueError unless a conditional bijection got a vector of size `cond_dim` (shapes
    are static, so this also runs under jit)."""
    if cond_dim == 0:
        return
    if condition is None:
        raise ValueError(f"{name} is conditional: expected a condition vector of size {cond_dim}, got None")
    if jnp.shape(condition) != (cond_dim,):
        raise ValueError(f"{name} expects a condition vector of shape ({cond_dim},), got shape "
                         f"{jnp.shape(condition)} (transform one vector at a time; vmap over batches)")
