"""Densities defined by an ODE that carries Gaussian noise to theta (diffusion, flow matching).

Sampling integrates dtheta/dt = v(theta, x, t) from the noise time to the data time with an
adaptive diffrax solver, one solve for the whole batch of samples. The log-density follows
from the instantaneous change of variables, d log p(theta(t), t) / dt = -div v, integrated
alongside theta (Chen et al. 2018, "Neural ordinary differential equations"; Grathwohl et al.
2019, FFJORD), with the divergence taken exactly (a Jacobian trace) or by Hutchinson's
estimator.
"""

from __future__ import annotations

import abc
import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.checks import check_positive_int
from jaxhep.densities.base import AbstractConditionalDensity, check_last_dim, eval_user_network
from jaxhep.nn import MLP, ResidualMLP


def time_features(t: Float[Array, ""], num_frequencies: int) -> Float[Array, " f"]:
    """Sinusoidal embedding of a time in [0, 1]: t itself, then sin and cos at octave frequencies.

    Arguments:
        t: scalar time.
        num_frequencies: number of frequencies pi * 2^k, k = 0..num_frequencies-1.

    Returns:
        Features of size 1 + 2 * num_frequencies.
    """
    t = jnp.asarray(t, jnp.float32)
    freqs = math.pi * 2.0 ** jnp.arange(num_frequencies, dtype=jnp.float32)
    return jnp.concatenate([t[None], jnp.sin(freqs * t), jnp.cos(freqs * t)])


def _checked_num_frequencies(num_frequencies: int) -> int:
    if not isinstance(num_frequencies, int) or num_frequencies < 0:
        raise ValueError(f"num_frequencies must be a non-negative integer, got {num_frequencies!r}")
    return num_frequencies


class TimeConditionedMLP(eqx.Module):
    """An MLP f(theta, x, t) -> R^d with a sinusoidal time embedding.

    Arguments:
        theta_dim: dimension of theta (and of the output).
        x_dim: dimension of the conditioning vector.
        width: hidden units per layer.
        depth: hidden layers.
        num_frequencies: frequencies of the time embedding.
        activation: hidden activation.
        key: PRNG key (keyword-only).
    """

    mlp: MLP
    num_frequencies: int = eqx.field(static=True)

    def __init__(self, theta_dim: int, x_dim: int, width: int = 128, depth: int = 3, num_frequencies: int = 8,
                 activation: str = "silu", *, key: PRNGKeyArray):
        self.num_frequencies = _checked_num_frequencies(num_frequencies)
        self.mlp = MLP(theta_dim + x_dim + 1 + 2 * num_frequencies, theta_dim, width, depth, activation, key=key)

    def __call__(self, theta: Float[Array, " d"], x: Float[Array, " c"], t: Float[Array, ""]) -> Float[Array, " d"]:
        return self.mlp(jnp.concatenate([theta, x, time_features(t, self.num_frequencies)]))


class TimeConditionedResNet(eqx.Module):
    """A residual network f(theta, x, t) -> R^d whose every block is conditioned on (x, t).

    theta enters the input layer together with x and the sinusoidal time embedding; the
    embedding and x are also added inside each residual block through their own linear layer
    (`jaxhep.nn.ResidualMLP` with a context), so the condition reaches every depth, as in the
    separate condition and time layers of PyTorch sbi's vector-field networks.

    Arguments:
        theta_dim: dimension of theta (and of the output).
        x_dim: dimension of the conditioning vector.
        width: hidden units.
        depth: residual blocks (two linear layers each).
        num_frequencies: frequencies of the time embedding.
        activation: hidden activation.
        key: PRNG key (keyword-only).
    """

    net: ResidualMLP
    num_frequencies: int = eqx.field(static=True)

    def __init__(self, theta_dim: int, x_dim: int, width: int = 128, depth: int = 2, num_frequencies: int = 8,
                 activation: str = "silu", *, key: PRNGKeyArray):
        self.num_frequencies = _checked_num_frequencies(num_frequencies)
        self.net = ResidualMLP(theta_dim, theta_dim, width, depth, context_size=x_dim + 1 + 2 * num_frequencies,
                               activation=activation, key=key)

    def __call__(self, theta: Float[Array, " d"], x: Float[Array, " c"], t: Float[Array, ""]) -> Float[Array, " d"]:
        return self.net(theta, jnp.concatenate([x, time_features(t, self.num_frequencies)]))


NETWORKS = {"mlp": TimeConditionedMLP, "resnet": TimeConditionedResNet}
"""The networks an ODE density can be built with, by name."""


def check_network(network) -> None:
    """Raise ValueError unless `network` names one of `NETWORKS` or is a callable that builds one."""
    if callable(network):
        return
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; expected one of {sorted(NETWORKS)} or a callable "
                         "(key, theta_dim, x_dim) -> module f(theta, x, t)")


def time_conditioned_network(network, theta_dim: int, x_dim: int, width: int, depth: int,
                             num_frequencies: int, activation: str, *, key: PRNGKeyArray) -> eqx.Module:
    """Build a network (theta, x, t) -> R^theta_dim: the one `network` names (see `NETWORKS`), or
    `network(key, theta_dim, x_dim)` when it is a callable (the width, depth, frequencies and
    activation are then the callable's business).

    Raises:
        ValueError: for an unknown name, or a built network that does not map (theta, x, t) of
            shapes (theta_dim,), (x_dim,), () to a vector of size theta_dim.
    """
    check_network(network)
    if callable(network):
        net = network(key, theta_dim, x_dim)
        args = (jax.ShapeDtypeStruct((theta_dim,), jnp.float32), jax.ShapeDtypeStruct((x_dim,), jnp.float32),
                jax.ShapeDtypeStruct((), jnp.float32))
        out = eval_user_network(net, args, f"the network built by {network!r} failed on (theta, x, t) of shapes "
                                           f"({theta_dim},), ({x_dim},), ()")
        if getattr(out, "shape", None) != (theta_dim,):
            raise ValueError(f"the network built by {network!r} must map (theta, x, t) to a vector of shape "
                             f"({theta_dim},), got {getattr(out, 'shape', type(out).__name__)}")
        return net
    return NETWORKS[network](theta_dim, x_dim, width, depth, num_frequencies, activation, key=key)


def _solve(vector_field, y0, t0: float, t1: float, rtol: float, atol: float, max_steps: int):
    term = diffrax.ODETerm(lambda t, y, args: vector_field(t, y))
    sol = diffrax.diffeqsolve(
        term, diffrax.Tsit5(), t0, t1, dt0=None, y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, saveat=diffrax.SaveAt(t1=True))
    return jax.tree_util.tree_map(lambda a: a[0], sol.ys), sol.stats["num_steps"]


class AbstractODEDensity(AbstractConditionalDensity):
    """A conditional density whose samples solve dtheta/dt = v(theta, x, t) from Gaussian noise.

    Subclasses provide the velocity `velocity(theta, x, t)`, the times `t_noise` (where the
    state is Gaussian, `noise_scale` times a standard normal) and `t_data` (where it is theta),
    and the solver settings `rtol`, `atol`, `max_steps` as fields.
    """

    rtol: eqx.AbstractVar[float]
    atol: eqx.AbstractVar[float]
    max_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def velocity(self, theta: Float[Array, " d"], x: Float[Array, " c"], t: Float[Array, ""]) -> Float[Array, " d"]:
        """The ODE's right-hand side at one point."""

    @property
    @abc.abstractmethod
    def t_noise(self) -> float:
        """Time at which the state is the Gaussian noise."""

    @property
    @abc.abstractmethod
    def t_data(self) -> float:
        """Time at which the state is theta."""

    @property
    @abc.abstractmethod
    def noise_scale(self) -> float:
        """Standard deviation of the (centred, isotropic) noise distribution."""

    def noise_log_prob(self, z: Float[Array, " d"]) -> Float[Array, ""]:
        """Log-density of the noise distribution."""
        s = self.noise_scale
        return -0.5 * jnp.sum((z / s) ** 2) - self.theta_dim * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def _batched_velocity(self, x):
        return jax.vmap(self.velocity, in_axes=(0, None, None))

    def integrate(self, z: Float[Array, "n d"], x: Float[Array, " c"], *, to_data: bool = True,
                  rtol: float | None = None, atol: float | None = None) -> tuple[Float[Array, "n d"], Array]:
        """Carry a batch of states between the noise and the data time in one adaptive solve.

        Arguments:
            z: states, shape (n, theta_dim).
            x: one conditioning vector.
            to_data: integrate from `t_noise` to `t_data` (sampling) or the other way.
            rtol, atol: solver tolerances (the module's by default).

        Returns:
            (end states, number of solver steps).
        """
        t0, t1 = (self.t_noise, self.t_data) if to_data else (self.t_data, self.t_noise)
        vf = jax.vmap(self.velocity, in_axes=(0, None, None))
        return _solve(lambda t, y: vf(y, x, t), z, t0, t1, rtol or self.rtol, atol or self.atol, self.max_steps)

    def _sample_n(self, key, x, n):
        z = self.noise_scale * jax.random.normal(key, (n, self.theta_dim))
        return self.integrate(z, x)[0]

    def _sample(self, key, x):
        return self._sample_n(key, x, 1)[0]

    def _log_prob(self, theta, x):
        def vf(t, state):
            y, _ = state
            v, jvp_fn = jax.linearize(lambda u: self.velocity(u, x, t), y)
            # Exact divergence: the trace of the Jacobian, one column at a time.
            jac = jax.vmap(jvp_fn)(jnp.eye(self.theta_dim, dtype=y.dtype))
            return v, jnp.trace(jac)

        (z, delta), _ = _solve(vf, (theta, jnp.zeros((), theta.dtype)), self.t_data, self.t_noise,
                               self.rtol, self.atol, self.max_steps)
        # log p_data(theta) = log p_noise(z) + integral of div v from t_data to t_noise.
        return self.noise_log_prob(z) + delta

    def log_prob_hutchinson(self, key: PRNGKeyArray, theta: Float[Array, "*b d"], x: Float[Array, "*b c"],
                            num_probes: int = 1) -> Float[Array, "*b"]:
        """Unbiased log-density estimate with Hutchinson's trace estimator (for high dimensions).

        The divergence is estimated as the mean of e^T J e over `num_probes` Rademacher
        vectors e, held fixed along each ODE solve; each estimate costs `num_probes`
        Jacobian-vector products per evaluation instead of theta_dim.

        Arguments:
            key: PRNG key for the probes.
            theta: points, shape (..., theta_dim).
            x: conditioning data, shape (..., x_dim), broadcasting with theta's batch axes.
            num_probes: probe vectors per point.

        Returns:
            Log-density estimates of the broadcast batch shape.

        Raises:
            ValueError: for mismatched trailing dimensions or num_probes < 1.
        """
        check_positive_int("num_probes", num_probes, numpy_ints=False)
        theta = check_last_dim(theta, self.theta_dim, "theta")
        x = check_last_dim(x, self.x_dim, "x")
        batch = jnp.broadcast_shapes(theta.shape[:-1], x.shape[:-1])
        theta = jnp.broadcast_to(theta, batch + (self.theta_dim,)).reshape(-1, self.theta_dim)
        x = jnp.broadcast_to(x, batch + (self.x_dim,)).reshape(-1, self.x_dim)
        keys = jax.random.split(key, theta.shape[0])

        def one(k, th, xx):
            probes = jax.random.rademacher(k, (num_probes, self.theta_dim), dtype=th.dtype)

            def vf(t, state):
                y, _ = state
                v, jvp_fn = jax.linearize(lambda u: self.velocity(u, xx, t), y)
                return v, jnp.mean(jnp.sum(jax.vmap(jvp_fn)(probes) * probes, axis=-1))

            (z, delta), _ = _solve(vf, (th, jnp.zeros((), th.dtype)), self.t_data, self.t_noise,
                                   self.rtol, self.atol, self.max_steps)
            return self.noise_log_prob(z) + delta

        return jax.vmap(one)(keys, theta, x).reshape(batch)
