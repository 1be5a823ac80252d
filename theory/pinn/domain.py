"""Space-time boxes and the samplers that draw collocation points from them."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

SAMPLERS = ("uniform", "lhs", "sobol", "rad")


class Box(eqx.Module):
    """An axis-aligned box in space-time, [lower_i, upper_i] along every coordinate.

    Arguments:
        lower: lower corner, one value per coordinate.
        upper: upper corner, each entry larger than the lower one.
        time_dim: index of the time coordinate, or None for a stationary problem.
        names: optional coordinate names for plots (default x0, x1, ...).

    Raises:
        ValueError: when the corners differ in length or a side has no positive length.
    """

    lower: tuple[float, ...] = eqx.field(static=True)
    upper: tuple[float, ...] = eqx.field(static=True)
    time_dim: int | None = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, lower: Sequence[float], upper: Sequence[float], time_dim: int | None = None,
                 names: Sequence[str] | None = None):
        lower = tuple(float(v) for v in lower)
        upper = tuple(float(v) for v in upper)
        if len(lower) != len(upper) or not lower:
            raise ValueError(f"lower and upper must be non-empty and of equal length, got {lower} and {upper}")
        if any(u <= l for l, u in zip(lower, upper)):
            raise ValueError(f"every side of the box must have upper > lower, got lower={lower}, upper={upper}")
        if time_dim is not None and not 0 <= time_dim < len(lower):
            raise ValueError(f"time_dim must index one of the {len(lower)} coordinates, got {time_dim}")
        names = tuple(names) if names is not None else tuple(f"x{i}" for i in range(len(lower)))
        if len(names) != len(lower):
            raise ValueError(f"expected {len(lower)} coordinate names, got {len(names)}")
        self.lower, self.upper, self.time_dim, self.names = lower, upper, time_dim, names

    @property
    def dim(self) -> int:
        """Number of coordinates."""
        return len(self.lower)

    def scale(self, u: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """Map points of the unit cube onto the box."""
        lo = jnp.asarray(self.lower, u.dtype)
        hi = jnp.asarray(self.upper, u.dtype)
        return lo + (hi - lo) * u

    def sample(self, key: PRNGKeyArray, n: int, method: str = "uniform") -> Float[Array, "n d"]:
        """Draw `n` points inside the box.

        Arguments:
            key: PRNG key.
            n: number of points.
            method: "uniform" (i.i.d.), "lhs" (Latin hypercube) or "sobol" (scrambled Sobol with a
                random shift; generated outside jit by scipy, so pass a concrete key).

        Returns:
            Points of shape (n, d).

        Raises:
            ValueError: for an unknown method.
        """
        return self.scale(unit_sample(key, n, self.dim, method))

    def sample_face(self, key: PRNGKeyArray, n: int, dim: int, side: int,
                    method: str = "uniform") -> Float[Array, "n d"]:
        """Draw `n` points on the face where coordinate `dim` is at its lower (side 0) or upper (side 1) end."""
        if side not in (0, 1):
            raise ValueError(f"side must be 0 (lower face) or 1 (upper face), got {side}")
        pts = self.sample(key, n, method)
        value = self.lower[dim] if side == 0 else self.upper[dim]
        return pts.at[:, dim].set(value)

    def grid(self, sizes: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """A tensor grid including the corners: (list of 1-D axes, points of shape (prod(sizes), d))."""
        axes = [np.linspace(l, u, s) for l, u, s in zip(self.lower, self.upper, sizes)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return axes, np.stack([m.ravel() for m in mesh], axis=-1)


def _lhs(key, n, d, dtype):
    kperm, kjit = jax.random.split(key)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(kperm, d)).T
    jitter = jax.random.uniform(kjit, (n, d), dtype)
    return (perms.astype(dtype) + jitter) / n


def _sobol(key, n, d, dtype):
    from scipy.stats import qmc

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    m = int(np.ceil(np.log2(max(n, 2))))
    pts = qmc.Sobol(d, scramble=True, seed=seed).random_base2(m)[:n]
    return jnp.asarray(pts, dtype)


def unit_sample(key: PRNGKeyArray, n: int, d: int, method: str = "uniform") -> Float[Array, "n d"]:
    """Draw `n` points in the unit cube [0, 1]^d by the named method (see `Box.sample`)."""
    dtype = jnp.zeros(()).dtype  # float64 inside a float64() block, float32 outside
    if method == "uniform":
        return jax.random.uniform(key, (n, d), dtype)
    if method == "lhs":
        return _lhs(key, n, d, dtype)
    if method == "sobol":
        return _sobol(key, n, d, dtype)
    raise ValueError(f"unknown sampler {method!r}; expected one of 'uniform', 'lhs', 'sobol'")


def rad_resample(key: PRNGKeyArray, candidates: Float[Array, "m d"], residual_abs: Float[Array, " m"],
                 n: int, k: float = 1.0, c: float = 1.0) -> Float[Array, "n d"]:
    """Residual-based adaptive resampling (RAD, Wu et al. 2023): draw `n` of the candidates.

    A candidate is drawn with probability proportional to |r|^k / mean(|r|^k) + c, so that points
    where the residual is large are favoured while c keeps a uniform floor.

    Arguments:
        key: PRNG key.
        candidates: candidate points (m, d).
        residual_abs: |residual| at each candidate, shape (m,).
        n: number of points to return.
        k: sharpness exponent.
        c: uniform floor.

    Returns:
        The chosen points, shape (n, d) (drawn with replacement).
    """
    e = residual_abs**k
    # All residuals zero: no point is favoured (instead of 0/0 probabilities).
    mean = jnp.mean(e)
    p = jnp.where(mean > 0, e / jnp.where(mean > 0, mean, 1.0), 1.0) + c
    idx = jax.random.choice(key, candidates.shape[0], (n,), p=p / jnp.sum(p))
    return candidates[idx]
