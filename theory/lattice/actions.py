"""Lattice actions as pure functions of a field configuration, with autodiff forces.

Conventions. A real scalar configuration is an array of shape `(..., L, L)`; a U(1) gauge
configuration is an array of link angles `theta` of shape `(..., 2, L, L)`, with
`theta[..., mu, x0, x1]` the angle of the link leaving site `x = (x0, x1)` in direction `mu`
(direction 0 runs along axis -2, direction 1 along axis -1). Boundaries are periodic. All
functions reduce over the lattice axes only, so leading batch axes pass through.

phi^4. The action is

    S[phi] = sum_x [ sum_mu (phi(x+mu) - phi(x))^2 + m2 phi(x)^2 + lam phi(x)^4 ].

Expanding the square, sum_mu (phi(x+mu)-phi(x))^2 summed over x equals
sum_x [4 phi(x)^2 - 2 sum_mu phi(x) phi(x+mu)] in two dimensions, so this is *the same* action as
the tutorial's S = sum_x [-2 sum_mu phi(x) phi(x+mu) + (m2 + 4) phi^2 + lam phi^4]
(Albergo et al., arXiv:2101.08176, eq. for the lattice phi^4 action): there is no relative factor
1/2 between the two forms, and the published chi_2 = 0.75 at m2=-4, lam=8, L=8 refers to it.

U(1). The plaquette angle is P(x) = theta_0(x) + theta_1(x+0) - theta_0(x+1) - theta_1(x) and the
Wilson action S = -beta sum_x cos P(x). The topological charge is Q = sum_x wrap(P(x)) / (2 pi) with
wrap onto [-pi, pi); on the torus it is an integer.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _check_lattice(x: Array, name: str, min_ndim: int) -> None:
    shape = jnp.shape(x)
    if len(shape) < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes; got shape {shape}")
    if shape[-1] != shape[-2]:
        raise ValueError(f"{name} must be on a square L x L lattice (last two axes equal); got shape {shape}")


def phi4_action(phi: Float[Array, "*batch L L"], m2: float, lam: float) -> Float[Array, "*batch"]:
    """Euclidean action of 2D real scalar phi^4 theory with periodic boundaries.

    Arguments:
        phi: field configuration(s), last two axes the lattice.
        m2: bare mass squared (may be negative).
        lam: quartic coupling.

    Returns:
        S[phi] for each configuration (leading axes kept).

    Raises:
        ValueError: if `phi` is not at least 2-dimensional with square last two axes.
    """
    _check_lattice(phi, "phi", 2)
    kinetic = sum((jnp.roll(phi, -1, axis=ax) - phi) ** 2 for ax in (-2, -1))
    density = kinetic + m2 * phi**2 + lam * phi**4
    return jnp.sum(density, axis=(-2, -1))


def plaquette_angles(theta: Float[Array, "*batch 2 L L"]) -> Float[Array, "*batch L L"]:
    """Plaquette angles P(x) = theta_0(x) + theta_1(x+0) - theta_0(x+1) - theta_1(x), not wrapped.

    Arguments:
        theta: link angles, axis -3 the direction.

    Returns:
        The plaquette angle at every site.

    Raises:
        ValueError: if `theta` does not have shape (..., 2, L, L).
    """
    _check_lattice(theta, "theta", 3)
    if jnp.shape(theta)[-3] != 2:
        raise ValueError(f"theta must have shape (..., 2, L, L) (two link directions); got {jnp.shape(theta)}")
    t0 = theta[..., 0, :, :]
    t1 = theta[..., 1, :, :]
    return t0 + jnp.roll(t1, -1, axis=-2) - jnp.roll(t0, -1, axis=-1) - t1


def wrap_angle(a: Array) -> Array:
    """Map angles onto [-pi, pi)."""
    return jnp.mod(a + math.pi, 2 * math.pi) - math.pi


def u1_action(theta: Float[Array, "*batch 2 L L"], beta: float) -> Float[Array, "*batch"]:
    """Wilson action S = -beta sum_x cos P(x) of 2D U(1) gauge theory.

    Arguments:
        theta: link angles of shape (..., 2, L, L).
        beta: inverse gauge coupling.

    Returns:
        S[theta] for each configuration.

    Raises:
        ValueError: if `theta` does not have shape (..., 2, L, L).
    """
    return -beta * jnp.sum(jnp.cos(plaquette_angles(theta)), axis=(-2, -1))


def topological_charge(theta: Float[Array, "*batch 2 L L"]) -> Float[Array, "*batch"]:
    """Geometric topological charge Q = sum_x wrap(P(x)) / (2 pi) (an integer on the torus).

    Arguments:
        theta: link angles of shape (..., 2, L, L).

    Returns:
        Q for each configuration, as a float (rounding is left to the caller).

    Raises:
        ValueError: if `theta` does not have shape (..., 2, L, L).
    """
    return jnp.sum(wrap_angle(plaquette_angles(theta)), axis=(-2, -1)) / (2 * math.pi)


def gauge_transform(theta: Float[Array, "*batch 2 L L"], alpha: Float[Array, "*batch L L"]) -> Float[Array, "*batch 2 L L"]:
    """Apply the gauge transformation theta_mu(x) -> alpha(x) + theta_mu(x) - alpha(x + mu).

    Arguments:
        theta: link angles of shape (..., 2, L, L).
        alpha: one angle per site, shape (..., L, L).

    Returns:
        The transformed link angles (not wrapped).
    """
    t0 = theta[..., 0, :, :] + alpha - jnp.roll(alpha, -1, axis=-2)
    t1 = theta[..., 1, :, :] + alpha - jnp.roll(alpha, -1, axis=-1)
    return jnp.stack([t0, t1], axis=-3)


class AbstractAction(eqx.Module):
    """An action S of one configuration; `grad` is its autodiff gradient dS/dfield."""

    def __call__(self, field: Array) -> Array:
        raise NotImplementedError

    def grad(self, field: Array) -> Array:
        """dS/dfield for one configuration or a batch (sums over the batch are independent)."""
        return jax.grad(lambda f: jnp.sum(self(f)))(field)

    @property
    def field_shape(self) -> tuple[int, ...]:
        raise NotImplementedError


class Phi4Action(AbstractAction):
    """phi^4 action with fixed couplings on an L x L lattice (callable, with `grad`).

    Attributes:
        L: lattice extent.
        m2: bare mass squared.
        lam: quartic coupling.
    """

    L: int = eqx.field(static=True)
    m2: float = eqx.field(static=True)
    lam: float = eqx.field(static=True)

    def __check_init__(self):
        if self.L < 2:
            raise ValueError(f"L must be at least 2; got {self.L}")

    def __call__(self, phi: Float[Array, "*batch L L"]) -> Float[Array, "*batch"]:
        return phi4_action(phi, self.m2, self.lam)

    @property
    def field_shape(self) -> tuple[int, int]:
        return (self.L, self.L)


class U1Action(AbstractAction):
    """2D U(1) Wilson gauge action with fixed beta on an L x L lattice (callable, with `grad`).

    Attributes:
        L: lattice extent.
        beta: inverse coupling.
    """

    L: int = eqx.field(static=True)
    beta: float = eqx.field(static=True)

    def __check_init__(self):
        if self.L < 2:
            raise ValueError(f"L must be at least 2; got {self.L}")

    def __call__(self, theta: Float[Array, "*batch 2 L L"]) -> Float[Array, "*batch"]:
        return u1_action(theta, self.beta)

    @property
    def field_shape(self) -> tuple[int, int, int]:
        return (2, self.L, self.L)
