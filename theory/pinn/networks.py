"""PINN networks: MLP and modified MLP, with Fourier features, random weight factorization and
exact periodic embeddings (Wang, Wang & Perdikaris; Wang et al. 2023, the jaxpi architectures).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhep.checks import check_positive_int
from jaxhep.nn import get_activation


def _glorot(key, out_size, in_size, dtype):
    std = jnp.sqrt(2.0 / (in_size + out_size))
    return std * jax.random.normal(key, (out_size, in_size), dtype)


class Dense(eqx.Module):
    """Linear layer, optionally with random weight factorization W = diag(exp(s)) V.

    Arguments:
        in_size, out_size: sizes.
        factorization: (mean, std) of the log-scales s, or None for a plain W.
        key: PRNG key (keyword-only).
    """

    v: Float[Array, "out in"]
    s: Float[Array, " out"] | None
    b: Float[Array, " out"]

    def __init__(self, in_size: int, out_size: int, factorization: tuple[float, float] | None = None,
                 *, key: PRNGKeyArray):
        dtype = jnp.zeros(()).dtype
        kw, ks = jax.random.split(key)
        w = _glorot(kw, out_size, in_size, dtype)
        if factorization is None:
            self.v, self.s = w, None
        else:
            mean, std = factorization
            s = mean + std * jax.random.normal(ks, (out_size,), dtype)
            # Factor the Glorot matrix exactly, so the network starts where a plain one would.
            self.v, self.s = w / jnp.exp(s)[:, None], s
        self.b = jnp.zeros((out_size,), dtype)

    def __call__(self, x: Array) -> Array:
        w = self.v if self.s is None else jnp.exp(self.s)[:, None] * self.v
        return w @ x + self.b


class PINNNet(eqx.Module):
    """Network u_theta(x) for a PINN: embeddings then an MLP or modified MLP.

    Inputs are first mapped to [-1, 1] along every non-periodic coordinate; a periodic coordinate
    with period P is replaced by (cos(2 pi k x / P), sin(2 pi k x / P)), k = 1..harmonics, which
    makes the output exactly periodic. Random Fourier features [cos(B z), sin(B z)] with
    B ~ N(0, sigma^2) may follow (B is fixed, not trained).

    Arguments:
        in_size: number of input coordinates.
        out_size: number of outputs.
        width: hidden units.
        depth: number of hidden layers.
        activation: name or callable (tanh by default, the usual choice for PINNs).
        arch: "mlp" or "modified" (modified MLP with two encoder gates U, V).
        lower, upper: the domain box, used to normalise inputs (default [-1, 1]).
        periodic: {coordinate: period} for exact periodicity.
        harmonics: number of harmonics of the periodic embedding.
        fourier_scale: sigma of the random Fourier features, None to switch them off.
        fourier_features: number of random frequencies (the embedding has twice as many entries).
        factorization: (mean, std) of random weight factorization, None to switch it off
            (jaxpi uses (1.0, 0.1)).
        key: PRNG key (keyword-only).

    Raises:
        ValueError: for an unknown arch, bad sizes or a periodic index outside the inputs.
    """

    hidden: tuple[Dense, ...]
    out: Dense
    gate_u: Dense | None
    gate_v: Dense | None
    fourier_b: Float[Array, "m e"] | None
    activation: Callable = eqx.field(static=True)
    lower: tuple[float, ...] = eqx.field(static=True)
    upper: tuple[float, ...] = eqx.field(static=True)
    periodic: tuple[tuple[int, float], ...] = eqx.field(static=True)
    harmonics: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int = 1, width: int = 64, depth: int = 4,
                 activation: str | Callable = "tanh", arch: str = "mlp",
                 lower: Sequence[float] | None = None, upper: Sequence[float] | None = None,
                 periodic: Mapping[int, float] | None = None, harmonics: int = 1,
                 fourier_scale: float | None = None, fourier_features: int = 64,
                 factorization: tuple[float, float] | None = None, *, key: PRNGKeyArray):
        if arch not in ("mlp", "modified"):
            raise ValueError(f"arch must be 'mlp' or 'modified', got {arch!r}")
        for name, value in (("in_size", in_size), ("out_size", out_size), ("width", width), ("depth", depth),
                            ("harmonics", harmonics), ("fourier_features", fourier_features)):
            check_positive_int(name, value, numpy_ints=False)
        lower = tuple(float(v) for v in (lower if lower is not None else [-1.0] * in_size))
        upper = tuple(float(v) for v in (upper if upper is not None else [1.0] * in_size))
        if len(lower) != in_size or len(upper) != in_size:
            raise ValueError(f"lower/upper must have {in_size} entries, got {len(lower)} and {len(upper)}")
        periodic = dict(periodic or {})
        for dim, period in periodic.items():
            if not 0 <= dim < in_size or period <= 0:
                raise ValueError(f"periodic entries must map an input index in [0, {in_size}) to a positive "
                                 f"period, got {dim}: {period}")
        self.lower, self.upper, self.out_size = lower, upper, out_size
        self.periodic = tuple(sorted((int(k), float(v)) for k, v in periodic.items()))
        self.harmonics = harmonics
        self.activation = get_activation(activation)
        dtype = jnp.zeros(()).dtype
        kf, ku, kv, ko, *kh = jax.random.split(key, 4 + depth)
        embed = in_size + len(self.periodic) * (2 * harmonics - 1)
        if fourier_scale is not None:
            self.fourier_b = fourier_scale * jax.random.normal(kf, (fourier_features, embed), dtype)
            embed = 2 * fourier_features
        else:
            self.fourier_b = None
        sizes = [embed] + [width] * depth
        self.hidden = tuple(Dense(a, b, factorization, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], kh))
        if arch == "modified":
            self.gate_u = Dense(embed, width, factorization, key=ku)
            self.gate_v = Dense(embed, width, factorization, key=kv)
        else:
            self.gate_u = self.gate_v = None
        self.out = Dense(width, out_size, factorization, key=ko)

    def embed(self, x: Float[Array, " d"]) -> Array:
        """The input embedding (normalisation, periodic and Fourier features) of one point."""
        lo = jnp.asarray(self.lower, x.dtype)
        hi = jnp.asarray(self.upper, x.dtype)
        z = 2.0 * (x - lo) / (hi - lo) - 1.0
        if self.periodic:
            pdims = [d for d, _ in self.periodic]
            keep = [i for i in range(x.shape[-1]) if i not in pdims]
            parts = [z[jnp.asarray(keep, int)]] if keep else []
            k = jnp.arange(1, self.harmonics + 1, dtype=x.dtype)
            for d, period in self.periodic:
                angle = 2.0 * jnp.pi * k * x[d] / period
                parts += [jnp.cos(angle), jnp.sin(angle)]
            z = jnp.concatenate(parts)
        if self.fourier_b is not None:
            bz = jax.lax.stop_gradient(self.fourier_b) @ z
            z = jnp.concatenate([jnp.cos(bz), jnp.sin(bz)])
        return z

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        z = self.embed(x)
        h = z
        if self.gate_u is not None:
            gu = self.activation(self.gate_u(z))
            gv = self.activation(self.gate_v(z))
        for layer in self.hidden:
            h = self.activation(layer(h))
            if self.gate_u is not None:
                h = h * gu + (1.0 - h) * gv
        return self.out(h)
