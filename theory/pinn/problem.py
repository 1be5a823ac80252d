"""PDE problems: a domain, a residual, initial/boundary conditions, observations, unknown coefficients."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxhep.theory.pinn.derivatives import partial
from jaxhep.theory.pinn.domain import Box


def _target(value, x, out_shape_dtype):
    if callable(value):
        return value(x)
    return jnp.asarray(value, x.dtype)


@dataclasses.dataclass(frozen=True)
class Dirichlet:
    """u = value on a face of the box (the face where coordinate `dim` is at its `side` end).

    Arguments:
        value: a callable x -> target, or a constant.
        dim: coordinate index of the face normal.
        side: 0 (lower face), 1 (upper face) or "both".
        n: points drawn on the face(s) per step.
        name: loss-term name.
    """

    value: Callable | float
    dim: int
    side: int | str = "both"
    n: int = 256
    name: str = "bc"

    def sample(self, key, box: Box, method: str):
        sides = (0, 1) if self.side == "both" else (self.side,)
        keys = jax.random.split(key, len(sides))
        per = max(self.n // len(sides), 1)
        return jnp.concatenate([box.sample_face(k, per, self.dim, s, method) for k, s in zip(keys, sides)])

    def loss(self, u, pts, box: Box):
        err = jax.vmap(lambda x: u(x) - _target(self.value, x, None))(pts)
        return jnp.mean(err**2)


def Initial(value: Callable | float, time_dim: int, n: int = 256, name: str = "ic") -> Dirichlet:
    """Initial condition u(x, t0) = value(x): a Dirichlet condition on the lower time face."""
    return Dirichlet(value, time_dim, 0, n, name)


@dataclasses.dataclass(frozen=True)
class Neumann:
    """Outward normal derivative du/dn = value on a face (lower face: -du/dx_dim, upper: +du/dx_dim).

    Arguments:
        value: a callable x -> target, or a constant.
        dim, side, n, name: as for `Dirichlet`.
    """

    value: Callable | float
    dim: int
    side: int | str = "both"
    n: int = 256
    name: str = "neumann"

    def sample(self, key, box: Box, method: str):
        return Dirichlet(0.0, self.dim, self.side, self.n).sample(key, box, method)

    def loss(self, u, pts, box: Box):
        mid = 0.5 * (box.lower[self.dim] + box.upper[self.dim])

        def err(x):
            sign = jnp.where(x[self.dim] > mid, 1.0, -1.0)
            return sign * partial(u, x, self.dim) - _target(self.value, x, None)

        return jnp.mean(jax.vmap(err)(pts) ** 2)


@dataclasses.dataclass(frozen=True)
class Periodic:
    """Periodicity along `dim`: u and its first `derivatives` derivatives along `dim` agree on the two faces.

    (Exact periodicity is also available through `PINNNet(periodic=...)`, which makes this term zero.)
    """

    dim: int
    derivatives: int = 1
    n: int = 256
    name: str = "periodic"

    def sample(self, key, box: Box, method: str):
        return box.sample_face(key, self.n, self.dim, 0, method)

    def loss(self, u, pts, box: Box):
        shift = jnp.zeros(box.dim).at[self.dim].set(box.upper[self.dim] - box.lower[self.dim])

        def err(x):
            y = x + shift.astype(x.dtype)
            return jnp.stack([jnp.sum((partial(u, x, *([self.dim] * k)) - partial(u, y, *([self.dim] * k))) ** 2)
                              for k in range(self.derivatives + 1)])

        return jnp.mean(jnp.sum(jax.vmap(err)(pts), axis=-1))


@dataclasses.dataclass(frozen=True)
class Observations:
    """Noisy data u(x_i) ~ y_i, for inverse problems or data-assisted fits (fixed points, not resampled).

    Arguments:
        x: observation points (n, d).
        y: observed values (n,) for a scalar solution or (n, out) for a vector one.
        name: loss-term name.
    """

    x: Any
    y: Any
    name: str = "data"

    def sample(self, key, box: Box, method: str):
        return jnp.asarray(self.x)

    def loss(self, u, pts, box: Box):
        pred = jax.vmap(u)(pts)
        # (n, 1) values of a scalar solution must not broadcast against its (n,) predictions.
        y = jnp.asarray(self.y, pred.dtype).reshape(pred.shape)
        return jnp.mean((pred - y) ** 2)


Condition = Dirichlet | Neumann | Periodic | Observations


class PINNModel(eqx.Module):
    """What a PINN trains: the network and the raw values of any unknown PDE coefficients.

    Arguments:
        net: the network, x -> outputs of shape (out,).
        coeffs: dict of raw (unconstrained) coefficient values; the problem maps them to physical ones.
    """

    net: eqx.Module
    coeffs: dict[str, Array]


class PDEProblem(eqx.Module):
    """A forward or inverse PDE problem.

    The residual is `residual(u, x, coeffs)`: `u` is the solution as a function of one point
    (scalar-valued when there is one output), `x` the point, `coeffs` a dict of physical
    coefficients (known ones and the current values of the unknown ones); it returns the residual
    (a scalar or a vector of equations) written with `jaxhep.theory.pinn.derivatives`.

    Arguments:
        domain: the space-time box.
        residual: the residual function above.
        conditions: initial/boundary conditions and observations.
        out_size: number of solution components.
        known: known coefficients {name: value}.
        unknown: unknown coefficients {name: initial physical value}, fitted with the solution.
        coeff_transform: {name: (to_raw, to_physical)} for unknowns; default log/exp (positive values).
        output_transform: optional hard constraint (x, net_output) -> solution output.
        reference: optional callable points (n, d) -> reference solution (n,) or (n, out) for errors.
        name: problem name.

    Raises:
        ValueError: for an unknown/known name clash or a condition that does not fit the domain.
    """

    domain: Box
    residual: Callable = eqx.field(static=True)
    conditions: tuple = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    known: dict = eqx.field(static=True)
    unknown: dict = eqx.field(static=True)
    coeff_transform: dict = eqx.field(static=True)
    output_transform: Callable | None = eqx.field(static=True)
    reference: Callable | None = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(self, domain: Box, residual: Callable, conditions: Sequence[Condition] = (), out_size: int = 1,
                 known: Mapping[str, float] | None = None, unknown: Mapping[str, float] | None = None,
                 coeff_transform: Mapping[str, tuple[Callable, Callable]] | None = None,
                 output_transform: Callable | None = None, reference: Callable | None = None,
                 name: str = "pde"):
        known, unknown = dict(known or {}), dict(unknown or {})
        clash = set(known) & set(unknown)
        if clash:
            raise ValueError(f"coefficients {sorted(clash)} are given as both known and unknown")
        for c in conditions:
            dim = getattr(c, "dim", None)
            if dim is not None and not 0 <= dim < domain.dim:
                raise ValueError(f"condition {c.name!r} refers to coordinate {dim}, but the domain has {domain.dim}")
            if isinstance(c, Observations):
                x = np.asarray(c.x)
                y_ok = np.ndim(c.y) >= 1 and len(np.asarray(c.y)) == len(x) and np.size(c.y) == len(x) * out_size
                if x.ndim != 2 or x.shape[1] != domain.dim or not y_ok:
                    raise ValueError(f"observations need x of shape (n, {domain.dim}) and y with n rows of "
                                     f"{out_size} value(s); got x {x.shape}, y {np.shape(c.y)}")
                if not (np.all(np.isfinite(x)) and np.all(np.isfinite(np.asarray(c.y)))):
                    raise ValueError("observations contain NaN or inf")
        names = [c.name for c in conditions]
        if len(set(names)) != len(names) or "res" in names:
            raise ValueError(f"condition names must be unique and differ from 'res', got {names}")
        extra = sorted(set(coeff_transform or {}) - set(unknown))
        if extra:
            raise ValueError(f"coeff_transform names {extra}, which are not unknown coefficients (those are "
                             f"{sorted(unknown)})")
        transform = {k: (jnp.log, jnp.exp) for k in unknown}
        transform.update(dict(coeff_transform or {}))
        for k, value in unknown.items():
            if transform[k][0] is jnp.log and not np.all(np.asarray(value) > 0):
                raise ValueError(f"unknown coefficient {k!r} starts at {value!r}, but it is fitted in log space "
                                 "(positive values only); start it above 0 or give coeff_transform for it")
        self.domain, self.residual, self.conditions = domain, residual, tuple(conditions)
        self.out_size, self.known, self.unknown = out_size, known, unknown
        self.coeff_transform, self.output_transform = transform, output_transform
        self.reference, self.name = reference, name

    @property
    def term_names(self) -> tuple[str, ...]:
        """Names of the loss terms: "res" first, then one per condition."""
        return ("res",) + tuple(c.name for c in self.conditions)

    def init_model(self, net: eqx.Module) -> PINNModel:
        """Wrap a network together with the raw initial values of the unknown coefficients."""
        dtype = jnp.zeros(()).dtype
        coeffs = {k: self.coeff_transform[k][0](jnp.asarray(v, dtype)) for k, v in self.unknown.items()}
        return PINNModel(net, coeffs)

    def coefficients(self, model: PINNModel) -> dict[str, Array]:
        """Physical coefficients: the known ones and the model's current unknown ones."""
        out = {k: v for k, v in self.known.items()}
        out.update({k: self.coeff_transform[k][1](v) for k, v in model.coeffs.items()})
        return out

    def solution(self, model: PINNModel) -> Callable:
        """The solution as a function of one point (scalar when out_size is 1), hard constraints applied."""

        def u(x):
            y = model.net(x)
            if self.output_transform is not None:
                y = self.output_transform(x, y)
            return y[0] if self.out_size == 1 else y

        return u

    def residuals(self, model: PINNModel, pts: Float[Array, "n d"]) -> Array:
        """Residual at each point, shape (n,) or (n, equations)."""
        u = self.solution(model)
        coeffs = self.coefficients(model)
        return jax.vmap(lambda x: self.residual(u, x, coeffs))(pts)

    def predict(self, model: PINNModel, pts: Float[Array, "n d"]) -> Array:
        """The solution at many points."""
        return jax.vmap(self.solution(model))(jnp.asarray(pts))
