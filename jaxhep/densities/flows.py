"""Conditional normalizing flows: a standard-normal base pushed through a conditional bijection."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.bijections import (AbstractBijection, Chain, Coupling, LULinear, MaskedAutoregressive, Permutation,
                               Stacked, alternating_mask)
from jaxhep.checks import check_positive_int
from jaxhep.densities.base import AbstractConditionalDensity
from jaxhep.nn.init import numpy_rng

_LOG_2PI = float(np.log(2 * np.pi))
NSF_LAYOUTS = ("jaxhep", "sbi")


def standard_normal_log_prob(z: Float[Array, " d"]) -> Float[Array, ""]:
    """Log-density of a standard normal vector."""
    return -0.5 * (jnp.sum(z**2) + z.shape[-1] * _LOG_2PI)


class Flow(AbstractConditionalDensity):
    """q(theta | x) = N(f(theta; x); 0, I) |det df/dtheta|, where `bijection` is f (theta -> z).

    Arguments:
        bijection: conditional bijection from theta to the latent space, with
            `cond_dim == x_dim`.
        theta_dim: dimension of theta.
        x_dim: dimension of x.

    Raises:
        ValueError: when the bijection's dimensions do not match.
    """

    bijection: AbstractBijection
    theta_dim: int = eqx.field(static=True)
    x_dim: int = eqx.field(static=True)

    def __init__(self, bijection: AbstractBijection, theta_dim: int, x_dim: int):
        if bijection.dim != theta_dim or bijection.cond_dim not in (0, x_dim):
            raise ValueError(f"bijection has dim={bijection.dim}, cond_dim={bijection.cond_dim}; "
                             f"expected dim={theta_dim}, cond_dim={x_dim}")
        self.bijection, self.theta_dim, self.x_dim = bijection, theta_dim, x_dim

    def _log_prob(self, theta, x):
        z, log_det = self.bijection.transform_and_log_det(theta, x)
        return standard_normal_log_prob(z) + log_det

    def _sample(self, key, x):
        z = jax.random.normal(key, (self.theta_dim,))
        return self.bijection.inverse(z, x)

    def sample_and_log_prob(self, key: PRNGKeyArray, x: Float[Array, " c"]) -> tuple[Array, Array]:
        """One sample and its log-density in a single inverse pass."""
        z = jax.random.normal(key, (self.theta_dim,))
        theta, log_det_inv = self.bijection.inverse_and_log_det(z, x)
        return theta, standard_normal_log_prob(z) - log_det_inv


def nsf(theta_dim: int, x_dim: int, *, num_transforms: int = 5, hidden_features: int = 50, num_bins: int = 10,
        num_blocks: int = 2, tail_bound: float = 3.0, autoregressive: bool = False, activation: str = "relu",
        layout: str = "jaxhep", key: PRNGKeyArray) -> Flow:
    """Neural spline flow (Durkan et al. 2019): rational-quadratic spline coupling layers, each
    followed by an LU-parameterised linear map (the layout of sbi's default NSF), or spline
    autoregressive layers with reversing permutations when `autoregressive` is True.

    Arguments:
        theta_dim, x_dim: dimensions of theta and x.
        num_transforms: number of spline layers.
        hidden_features: width of each conditioner.
        num_bins: spline bins on [-tail_bound, tail_bound].
        num_blocks: residual blocks (coupling) or hidden layers (autoregressive) per conditioner.
        tail_bound: spline interval half-width; linear (identity) tails outside.
        autoregressive: use MADE spline layers instead of coupling.
        activation: hidden activation.
        layout: "jaxhep" (the default) or "sbi". With "sbi" the network is the one PyTorch sbi
            builds for `posterior_nn("nsf")` (nflows' spline coupling layers, see
            `jaxhep.bijections.Coupling`'s layout "nflows", each followed by an LU linear map):
            the same function of the same trained parameters, so that a comparison with sbi
            compares like with like (experiments/benchmarks/check_sbi_layout.py copies an sbi
            network's weights into it and compares log-densities). Coupling layers and
            theta_dim >= 2 only (for one parameter, sbi builds another conditioner). The
            default layout differs inside the conditioners (see `jaxhep.nn.ResidualMLP`) and
            starts every coupling layer at the identity; it has the same size.
        key: PRNG key (keyword-only).

    Returns:
        A `Flow`.
    """
    _check_flow_args(theta_dim, x_dim, num_transforms)
    if layout not in NSF_LAYOUTS:
        raise ValueError(f"layout must be one of {NSF_LAYOUTS}, got {layout!r}")
    if layout == "sbi" and (autoregressive or theta_dim < 2):
        raise ValueError("layout='sbi' is sbi's spline coupling flow, built for theta_dim >= 2 (sbi uses another "
                         f"conditioner for one parameter); got theta_dim={theta_dim}, "
                         f"autoregressive={autoregressive}")
    # One host generator per layer (see jaxhep.nn.init: no compilation while building).
    keys = numpy_rng(key).spawn(num_transforms)
    # Every coupling layer gets as many transformer slots as the larger half of the
    # alternating mask, so that all layers share one structure (see `Coupling`).
    slots = int(max(alternating_mask(theta_dim, even).sum() for even in (True, False)))
    layers = []
    for i, k in enumerate(keys):
        if autoregressive:
            layers.append(MaskedAutoregressive(theta_dim, x_dim, "spline", hidden_features, num_blocks, activation,
                                               num_bins, tail_bound, key=k))
            if theta_dim > 1:
                layers.append(Permutation(np.arange(theta_dim)[::-1]))
        else:
            layers.append(Coupling(theta_dim, alternating_mask(theta_dim, even=i % 2 == 0), x_dim, "spline",
                                   hidden_features, num_blocks, activation, num_bins, tail_bound, slots,
                                   layout="nflows" if layout == "sbi" else "jaxhep", key=k))
            if theta_dim > 1:
                layers.append(LULinear(theta_dim))
    return Flow(_stack(layers, 2 if theta_dim > 1 else 1), theta_dim, x_dim)


def maf(theta_dim: int, x_dim: int, *, num_transforms: int = 5, hidden_features: int = 50, num_blocks: int = 2,
        activation: str = "tanh", key: PRNGKeyArray) -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017): affine MADE layers with reversing
    permutations in between.

    Arguments:
        theta_dim, x_dim: dimensions of theta and x.
        num_transforms: number of MADE layers.
        hidden_features: MADE hidden width.
        num_blocks: MADE hidden layers.
        activation: hidden activation.
        key: PRNG key (keyword-only).

    Returns:
        A `Flow`.
    """
    _check_flow_args(theta_dim, x_dim, num_transforms)
    layers = []
    for k in numpy_rng(key).spawn(num_transforms):
        layers.append(MaskedAutoregressive(theta_dim, x_dim, "affine", hidden_features, num_blocks, activation,
                                           key=k))
        if theta_dim > 1:
            layers.append(Permutation(np.arange(theta_dim)[::-1]))
    return Flow(_stack(layers, 2 if theta_dim > 1 else 1), theta_dim, x_dim)


def _stack(layers, per_block: int) -> Stacked:
    """Group consecutive layers into identical blocks and stack them for `lax.scan`."""
    blocks = [Chain(layers[i:i + per_block]) if per_block > 1 else layers[i] for i in range(0, len(layers), per_block)]
    return Stacked(blocks)


def _check_flow_args(theta_dim, x_dim, num_transforms):
    for name, value in (("theta_dim", theta_dim), ("x_dim", x_dim), ("num_transforms", num_transforms)):
        check_positive_int(name, value)
