"""What every amortized posterior estimator shares: input checks, standardisation, training, the posterior."""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.densities import (AbstractConditionalDensity, Embedded, Standardized, check_support, embedding_size,
                              make_standardizer, transform_rows)
from jaxhep.nn.init import split_on_host
from jaxhep.checks import check_positive_finite
from jaxhep.training import (History, check_clip_norm, check_devices, check_ema_decay, check_lr_decay,
                             check_positive_int, check_weight_decay, drop_nonfinite, fit)


class Posterior(AbstractConditionalDensity):
    """An amortized posterior q(theta | x): a trained density in the user's space of theta and x.

    It meets the density interface (`log_prob(theta, x)`, `sample(key, x, sample_shape)`),
    is an immutable pytree (jit/vmap/save like any equinox module) and carries its training
    history. With `support="truncate"` (a bounded prior), `log_prob` is not renormalised over the
    prior's box, while `sample` draws from the renormalised density (see `Standardized`).
    `jax.jit(posterior.log_prob)` fails on the bound method (as for any equinox module); jit a
    function that takes the posterior, or use `eqx.filter_jit(posterior.log_prob)`.

    Attributes:
        estimator: the trained density, wrapped in its standardisation and support map.
        history: the training history.
        method: the name of the method that trained it.
    """

    estimator: AbstractConditionalDensity
    history: History
    method: str = eqx.field(static=True)
    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)

    def __init__(self, estimator: AbstractConditionalDensity, history: History, method: str):
        self.estimator, self.history, self.method = estimator, history, method
        self.theta_dim, self.x_dim = estimator.theta_dim, estimator.x_dim

    # The public methods go through the estimator's own entry points: their compiled programs
    # depend on the estimator's structure only, not on this fit's history (its epoch count and
    # seconds are static), so every posterior of equal settings and shapes shares them.
    def log_prob(self, theta, x):
        return self.estimator.log_prob(theta, x)

    def sample(self, key, x, sample_shape=()):
        return self.estimator.sample(key, x, sample_shape)

    def map(self, key, x, **settings):
        return self.estimator.map(key, x, **settings)

    map.__doc__ = AbstractConditionalDensity.map.__doc__

    def _log_prob(self, theta, x):
        return self.estimator._log_prob(theta, x)

    def _sample(self, key, x):
        return self.estimator._sample(key, x)

    def _sample_n(self, key, x, n):
        return self.estimator._sample_n(key, x, n)


def _as_2d(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (num_simulations, dim), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr


def check_training_data(theta, x, prior=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate simulations and drop the invalid ones (NaN/inf, with a warning).

    Returns float64 copies (the statistics of the z-scoring are computed from them; training
    runs in float32 after it); the caller's arrays are left untouched.

    Raises:
        ValueError: when row counts differ, or theta's dimension disagrees with the prior's.
    """
    theta, x = _as_2d(theta, "theta"), _as_2d(x, "x")
    if theta.shape[0] != x.shape[0]:
        raise ValueError(f"theta and x must have the same number of rows (simulations), got "
                         f"{theta.shape[0]} and {x.shape[0]}")
    if prior is not None:
        event = tuple(getattr(prior, "batch_shape", ())) + tuple(getattr(prior, "event_shape", ()))
        if event != (theta.shape[1],):
            hint = " (for one parameter, e.g. dist.Uniform(0.0, 1.0).expand([1]).to_event(1))" if event == () else ""
            raise ValueError(f"theta has dimension {theta.shape[1]} but the prior is over shape {event}; "
                             f"expected a prior over vectors of size {theta.shape[1]}{hint}")
    (theta, x), _ = drop_nonfinite((theta.astype(np.float64), x.astype(np.float64)))
    big = float(np.finfo(np.float32).max)
    for name, arr in (("theta", theta), ("x", x)):
        if np.any(np.abs(arr) > big):
            raise ValueError(f"{name} holds values beyond float32's range (|value| > {big:.3g}), in which training "
                             f"and sampling run; rescale {name} (e.g. take logarithms) before fitting")
    return theta, x


class AbstractPosteriorEstimator(eqx.Module):
    """Amortized posterior estimation: fit a conditional density q(theta | x) on (theta, x) pairs.

    Subclasses name their method and build the density (`build`); `fit` is shared: it checks
    the data, z-scores theta (after mapping a bounded prior's support to R^d, or, with
    support="truncate", keeping theta as it is and rejecting samples outside the prior) and x, trains
    with `jaxhep.training.fit` on the density's own loss, and returns a `Posterior`. With an
    `embedding_net`, the density is conditioned on the embedding of the z-scored x, and the
    embedding is trained with it (`jaxhep.densities.Embedded`).
    """

    batch_size: eqx.AbstractVar[int]
    learning_rate: eqx.AbstractVar[float]
    validation_fraction: eqx.AbstractVar[float]
    patience: eqx.AbstractVar[int]
    max_epochs: eqx.AbstractVar[int]
    progress: eqx.AbstractVar[bool]
    clip_norm: eqx.AbstractVar[float | None]
    z_score_theta: eqx.AbstractVar[bool]
    z_score_x: eqx.AbstractVar[bool]
    ema_decay: eqx.AbstractVar[float | None]
    validation_draws: eqx.AbstractVar[int]
    lr_decay_factor: eqx.AbstractVar[float | None]
    lr_decay_patience: eqx.AbstractVar[int]
    weight_decay: eqx.AbstractVar[float]
    embedding_net: eqx.AbstractVar[eqx.Module | None]
    support: eqx.AbstractVar[str]
    devices: eqx.AbstractVar[None | str | int | tuple]

    def __check_init__(self):
        # Equinox runs this for every subclass, beside the subclass's own checks.
        for name in ("batch_size", "patience", "max_epochs", "validation_draws"):
            check_positive_int(name, getattr(self, name), numpy_ints=False)
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction}")
        check_positive_finite("learning_rate", self.learning_rate)
        check_ema_decay(self.ema_decay)
        check_lr_decay(self.lr_decay_factor, self.lr_decay_patience)
        check_clip_norm(self.clip_norm)
        check_weight_decay(self.weight_decay)
        check_support(self.support)
        check_devices(self.devices)
        if isinstance(self.devices, (int, np.integer)) and self.batch_size % self.devices:  # bool refused above
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of devices={self.devices}")
        if self.embedding_net is not None and not callable(self.embedding_net):
            raise TypeError(f"embedding_net must be a callable equinox module mapping one x to a vector, got "
                            f"{type(self.embedding_net).__name__}")

    @property
    @abc.abstractmethod
    def method(self) -> str:
        """Short name of the method, e.g. 'npe'."""

    @abc.abstractmethod
    def build(self, key: PRNGKeyArray, theta_dim: int, x_dim: int) -> AbstractConditionalDensity:
        """A fresh, untrained density for the given dimensions."""

    def fit(self, key: PRNGKeyArray, theta: Float[Array, "n d"], x: Float[Array, "n c"], prior=None,
            *, density: AbstractConditionalDensity | None = None) -> Posterior:
        """Train on simulations and return the amortized posterior.

        Arguments:
            key: PRNG key.
            theta: (num_simulations, theta_dim) parameters.
            x: (num_simulations, x_dim) simulated data.
            prior: the numpyro prior that generated theta (its support bounds are respected);
                None for an unbounded problem.
            density: an untrained density to use instead of `build` (e.g. a custom flow),
                meeting `AbstractConditionalDensity`.

        Returns:
            A `Posterior`.

        Raises:
            ValueError: on inconsistent shapes, theta outside the prior's support, or a prior of
                another dimension. Simulations with NaN/inf are dropped with a warning.
        """
        theta, x = check_training_data(theta, x, prior)
        to_base, x_loc, x_scale, low, high = make_standardizer(
            theta, x, prior, z_score_theta=self.z_score_theta, z_score_x=self.z_score_x, support=self.support)
        z = transform_rows(to_base, theta.astype(np.float32))
        # In float64, then float32: the offset goes before the rounding.
        xz = (x - np.asarray(x_loc, np.float64)) / np.asarray(x_scale, np.float64)
        k_build, k_fit = split_on_host(key, 2)
        if density is None:
            if self.embedding_net is None:
                density = self.build(k_build, theta.shape[1], x.shape[1])
            else:
                size = embedding_size(self.embedding_net, x.shape[1])
                density = Embedded(self.build(k_build, theta.shape[1], size), self.embedding_net, x.shape[1])
        elif (density.theta_dim, density.x_dim) != (theta.shape[1], x.shape[1]):
            raise ValueError(f"density has theta_dim={density.theta_dim}, x_dim={density.x_dim}; the data have "
                             f"{theta.shape[1]} and {x.shape[1]}")
        trained, history = fit(
            k_fit, density, _mean_loss, (z, np.asarray(xz, np.float32)),
            learning_rate=self.learning_rate, clip_norm=self.clip_norm, batch_size=self.batch_size,
            max_epochs=self.max_epochs, validation_fraction=self.validation_fraction, patience=self.patience,
            progress=self.progress, description=f"{self.method} training", ema_decay=self.ema_decay,
            validation_draws=self.validation_draws, lr_decay_factor=self.lr_decay_factor,
            lr_decay_patience=self.lr_decay_patience, weight_decay=self.weight_decay, devices=self.devices)
        posterior = Posterior(Standardized(trained, to_base, x_loc, x_scale, low, high), history, self.method)
        return self._after_fit(posterior, z)

    def _after_fit(self, posterior: Posterior, z: np.ndarray) -> Posterior:
        """What a method adds to the trained posterior (nothing by default); `z` holds the
        training theta (after dropping invalid simulations) mapped to the standardised space."""
        return posterior


def _mean_loss(model: AbstractConditionalDensity, key, batch) -> Float[Array, ""]:
    theta, x = batch
    keys = jax.random.split(key, theta.shape[0])
    return jnp.mean(jax.vmap(model.loss)(keys, theta, x))


DensityBuilder = Callable[[PRNGKeyArray, int, int], AbstractConditionalDensity]
