"""Normalizing flows on the lattice: equivariant couplings for phi^4 and gauge-equivariant U(1) couplings.

Every layer maps one configuration to one configuration and returns `(output, log|det J|)`;
flows vectorise over a leading batch axis with `jax.vmap`.

Scalar fields (shape `(L, L)`): checkerboard-masked coupling layers whose conditioner is a
convolutional network with circular padding. Periodic convolutions commute with lattice
translations, so each layer is equivariant under the translations that preserve the
checkerboard (even shifts), as in Albergo, Kanwar, Shanahan, PRD 100 034515 (2019).

U(1) gauge fields (shape `(2, L, L)` of link angles): the coupling of Kanwar et al., PRL 125
121601 (2020). A layer updates the links of one direction `mu` on every fourth row
(`x_nu = off mod 4`, `nu != mu`); each such link sits in exactly one "active" plaquette with the
same base site, which is transformed by an invertible map of the circle conditioned on the
gauge-invariant "frozen" plaquettes (rows `off+1`, `off+2`), and the link absorbs the change.
Because the conditioner sees only plaquettes (gauge invariant) and the update shifts a link by a
gauge-invariant amount, the layer commutes with gauge transformations.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .actions import plaquette_angles, wrap_angle

# ----------------------------------------------------------------------------- priors


class GaussianPrior(eqx.Module):
    """Independent standard normal variables on every site.

    Attributes:
        shape: shape of one configuration.
    """

    shape: tuple[int, ...] = eqx.field(static=True)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n ..."]:
        """Draw `n` configurations."""
        return jax.random.normal(key, (n, *self.shape))

    def log_prob(self, z: Float[Array, "..."]) -> Float[Array, ""]:
        """Log density of one configuration."""
        return -0.5 * jnp.sum(z**2) - 0.5 * z.size * math.log(2 * math.pi)


class HaarPrior(eqx.Module):
    """Uniform (Haar) measure on U(1) links: independent angles uniform on [-pi, pi).

    Attributes:
        shape: shape of one configuration, (2, L, L).
    """

    shape: tuple[int, ...] = eqx.field(static=True)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n ..."]:
        """Draw `n` configurations."""
        return jax.random.uniform(key, (n, *self.shape), minval=-math.pi, maxval=math.pi)

    def log_prob(self, z: Float[Array, "..."]) -> Float[Array, ""]:
        """Log density of one configuration (a constant)."""
        return jnp.asarray(-math.prod(self.shape) * math.log(2 * math.pi), dtype=jnp.result_type(float))


# ----------------------------------------------------------------------------- conditioner


class CircularConvNet(eqx.Module):
    """Convolutional network with circular (periodic) padding: commutes with lattice translations.

    Attributes:
        layers: the `eqx.nn.Conv2d` layers (no built-in padding; padding is periodic via `jnp.pad`).
        kernel_size: odd kernel size.
        final_tanh: whether a tanh bounds the output.
    """

    layers: tuple[eqx.nn.Conv2d, ...]
    kernel_size: int = eqx.field(static=True)
    final_tanh: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: Sequence[int] = (8, 8),
        kernel_size: int = 3,
        final_tanh: bool = True,
        init_scale: float = 0.1,
        *,
        key: PRNGKeyArray,
    ):
        """Build the network.

        Arguments:
            in_channels: input channels.
            out_channels: output channels.
            hidden_channels: channels of the hidden layers.
            kernel_size: odd kernel size.
            final_tanh: bound the output with tanh.
            init_scale: factor on the last layer's initial weights (small: layers start near identity).
            key: PRNG key for the initial weights.

        Raises:
            ValueError: if the kernel size is even or not positive.
        """
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer; got {kernel_size}")
        sizes = [in_channels, *hidden_channels, out_channels]
        keys = jax.random.split(key, len(sizes) - 1)
        layers = [
            eqx.nn.Conv2d(a, b, kernel_size, padding=0, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)
        ]
        last = layers[-1]
        last = eqx.tree_at(lambda c: (c.weight, c.bias), last, (last.weight * init_scale, last.bias * init_scale))
        layers[-1] = last
        self.layers = tuple(layers)
        self.kernel_size = kernel_size
        self.final_tanh = final_tanh

    def __call__(self, x: Float[Array, "C L L"]) -> Float[Array, "C_out L L"]:
        # Same maths as each Conv2d applied to the wrap-padded input (tests check this), evaluated as
        # one matmul over the k*k shifted copies: on CPU this is faster than XLA's tiny convolutions.
        k = self.kernel_size
        p = k // 2
        L0, L1 = x.shape[-2:]
        for i, layer in enumerate(self.layers):
            xp = jnp.pad(x, ((0, 0), (p, p), (p, p)), mode="wrap")
            patches = jnp.stack([xp[:, a : a + L0, b : b + L1] for a in range(k) for b in range(k)], axis=1)
            w = layer.weight.reshape(layer.weight.shape[0], -1)
            x = (w @ patches.reshape(-1, L0 * L1)).reshape(-1, L0, L1) + layer.bias
            if i < len(self.layers) - 1:
                x = jax.nn.leaky_relu(x)
        return jnp.tanh(x) if self.final_tanh else x

    def reference_call(self, x: Float[Array, "C L L"]) -> Float[Array, "C_out L L"]:
        """The same network evaluated with `eqx.nn.Conv2d` on `jnp.pad(mode="wrap")` inputs (for checks)."""
        p = self.kernel_size // 2
        for i, layer in enumerate(self.layers):
            x = layer(jnp.pad(x, ((0, 0), (p, p), (p, p)), mode="wrap"))
            if i < len(self.layers) - 1:
                x = jax.nn.leaky_relu(x)
        return jnp.tanh(x) if self.final_tanh else x


def checkerboard(L: int, parity: int) -> Float[Array, "L L"]:
    """Checkerboard mask: 1 where (x0 + x1) % 2 == parity, else 0."""
    idx = jnp.arange(L)
    return ((idx[:, None] + idx[None, :]) % 2 == parity).astype(jnp.result_type(float))


# ----------------------------------------------------------------------------- scalar couplings


class AffineCoupling(eqx.Module):
    """Checkerboard affine coupling: x_active -> x_active * exp(s) + t, (s, t) from the frozen sites.

    Attributes:
        net: conditioner, 1 input channel -> 2 output channels (s, t).
        parity: which checkerboard colour is frozen (conditions the update).
    """

    net: CircularConvNet
    parity: Array  # integer scalar: an array rather than a static field so that layers stack for `lax.scan`

    def __init__(self, parity: int, hidden_channels: Sequence[int] = (8, 8), kernel_size: int = 3, *, key: PRNGKeyArray):
        """Arguments: parity (0 or 1) of the frozen sites; conditioner sizes; PRNG key."""
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1; got {parity}")
        self.net = CircularConvNet(1, 2, hidden_channels, kernel_size, final_tanh=True, key=key)
        self.parity = jnp.asarray(parity, jnp.int32)

    def _params(self, x):
        frozen = checkerboard(x.shape[-1], self.parity)
        out = self.net((frozen * x)[None])
        return frozen, out[0], out[1]

    def forward(self, x: Float[Array, "L L"]) -> tuple[Float[Array, "L L"], Float[Array, ""]]:
        """Apply the layer; returns (output, log|det J|)."""
        frozen, s, t = self._params(x)
        active = 1 - frozen
        y = frozen * x + active * (x * jnp.exp(s) + t)
        return y, jnp.sum(active * s)

    def inverse(self, y: Float[Array, "L L"]) -> tuple[Float[Array, "L L"], Float[Array, ""]]:
        """Invert the layer; returns (input, log|det J^-1|)."""
        frozen, s, t = self._params(y)
        active = 1 - frozen
        x = frozen * y + active * (y - t) * jnp.exp(-s)
        return x, -jnp.sum(active * s)


def rational_quadratic_spline(
    x: Array, widths: Array, heights: Array, derivatives: Array, bound: float, inverse: bool = False
) -> tuple[Array, Array]:
    """Monotone rational-quadratic spline on [-bound, bound], identity outside (Durkan et al., 2019).

    Arguments:
        x: points, any shape `S`.
        widths: unnormalised bin widths, shape `S + (K,)`.
        heights: unnormalised bin heights, shape `S + (K,)`.
        derivatives: unconstrained interior knot derivatives, shape `S + (K - 1,)`.
        bound: half-width of the interval.
        inverse: evaluate the inverse map instead.

    Returns:
        (y, log|dy/dx|) elementwise; for `inverse=True`, (x, log|dx/dy|).
    """
    K = widths.shape[-1]
    min_bin = 1e-3
    w = min_bin + (1 - min_bin * K) * jax.nn.softmax(widths, axis=-1)
    h = min_bin + (1 - min_bin * K) * jax.nn.softmax(heights, axis=-1)
    zeros = jnp.zeros((*w.shape[:-1], 1), w.dtype)
    xk = 2 * bound * jnp.concatenate([zeros, jnp.cumsum(w, -1)], -1) - bound
    yk = 2 * bound * jnp.concatenate([zeros, jnp.cumsum(h, -1)], -1) - bound
    xk = xk.at[..., -1].set(bound)
    yk = yk.at[..., -1].set(bound)
    ones = jnp.ones_like(zeros)
    d = jnp.concatenate([ones, 1e-3 + jax.nn.softplus(derivatives + math.log(math.e - 1)), ones], -1)

    inside = (x > -bound) & (x < bound)
    xs = jnp.clip(x, -bound, bound)
    knots = yk if inverse else xk
    k = jnp.clip(jnp.sum(xs[..., None] >= knots[..., 1:-1], axis=-1), 0, K - 1)

    def pick(a, j):
        return jnp.take_along_axis(a, j[..., None], axis=-1)[..., 0]

    x0, x1, y0, y1 = pick(xk, k), pick(xk, k + 1), pick(yk, k), pick(yk, k + 1)
    d0, d1 = pick(d, k), pick(d, k + 1)
    bw, bh = x1 - x0, y1 - y0
    s = bh / bw
    if not inverse:
        xi = (xs - x0) / bw
        denom = s + (d1 + d0 - 2 * s) * xi * (1 - xi)
        y = y0 + bh * (s * xi**2 + d0 * xi * (1 - xi)) / denom
        dydx = s**2 * (d1 * xi**2 + 2 * s * xi * (1 - xi) + d0 * (1 - xi) ** 2) / denom**2
        return jnp.where(inside, y, x), jnp.where(inside, jnp.log(dydx), 0.0)
    dy = xs - y0
    c2 = d1 + d0 - 2 * s
    a = bh * (s - d0) + dy * c2
    b = bh * d0 - dy * c2
    c = -s * dy
    disc = jnp.maximum(b**2 - 4 * a * c, 0.0)
    xi = 2 * c / (-b - jnp.sqrt(disc))
    out = x0 + xi * bw
    denom = s + c2 * xi * (1 - xi)
    dydx = s**2 * (d1 * xi**2 + 2 * s * xi * (1 - xi) + d0 * (1 - xi) ** 2) / denom**2
    return jnp.where(inside, out, x), jnp.where(inside, -jnp.log(dydx), 0.0)


class SplineCoupling(eqx.Module):
    """Checkerboard rational-quadratic spline coupling with a periodic convolutional conditioner.

    Attributes:
        net: conditioner, 1 input channel -> 3K - 1 output channels.
        parity: which checkerboard colour is frozen.
        n_bins: number of spline bins K.
        bound: the spline acts on [-bound, bound] and is the identity outside.
    """

    net: CircularConvNet
    parity: Array
    n_bins: int = eqx.field(static=True)
    bound: float = eqx.field(static=True)

    def __init__(
        self,
        parity: int,
        n_bins: int = 8,
        bound: float = 4.0,
        hidden_channels: Sequence[int] = (8, 8),
        kernel_size: int = 3,
        *,
        key: PRNGKeyArray,
    ):
        """Arguments: frozen parity; bins; interval half-width; conditioner sizes; PRNG key."""
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1; got {parity}")
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2; got {n_bins}")
        self.net = CircularConvNet(1, 3 * n_bins - 1, hidden_channels, kernel_size, final_tanh=False, key=key)
        self.parity = jnp.asarray(parity, jnp.int32)
        self.n_bins = n_bins
        self.bound = float(bound)

    def _apply(self, x, inverse):
        frozen = checkerboard(x.shape[-1], self.parity)
        out = jnp.moveaxis(self.net((frozen * x)[None]), 0, -1)
        K = self.n_bins
        y, ld = rational_quadratic_spline(x, out[..., :K], out[..., K : 2 * K], out[..., 2 * K :], self.bound, inverse)
        active = 1 - frozen
        return frozen * x + active * y, jnp.sum(active * ld)

    def forward(self, x: Float[Array, "L L"]) -> tuple[Float[Array, "L L"], Float[Array, ""]]:
        """Apply the layer; returns (output, log|det J|)."""
        return self._apply(x, False)

    def inverse(self, y: Float[Array, "L L"]) -> tuple[Float[Array, "L L"], Float[Array, ""]]:
        """Invert the layer; returns (input, log|det J^-1|)."""
        return self._apply(y, True)


# ----------------------------------------------------------------------------- U(1) couplings


def _ncp(x, s, w):
    """Mixture of non-compact projections x -> 2 atan(s tan(x/2)) on (-pi, pi); returns (y, dy/dx)."""
    half = x[..., None] / 2
    tn = jnp.tan(half)
    y = jnp.sum(w * 2 * jnp.arctan(s * tn), axis=-1)
    c, sn = jnp.cos(half), jnp.sin(half)
    dydx = jnp.sum(w * s / (c**2 + (s * sn) ** 2), axis=-1)
    return y, dydx


def _ncp_inverse(y, s, w, iters: int = 60):
    """Invert the monotone NCP mixture: the root by bisection on [-pi, pi], its derivatives (with
    respect to y, s and w) by the implicit function theorem, dx = (dy - df) / f'(x), since the
    bisection's comparisons carry none."""
    root = jax.lax.stop_gradient(_ncp_bisect(y, s, w, iters))
    fx, dfdx = _ncp(root, s, w)
    # Zero in value (the root is kept as bisection found it), the implicit derivative in gradient.
    change = (y - jax.lax.stop_gradient(y)) - (fx - jax.lax.stop_gradient(fx))
    return root + change / jax.lax.stop_gradient(dfdx)


def _ncp_bisect(y, s, w, iters):
    lo = jnp.full_like(y, -math.pi)
    hi = jnp.full_like(y, math.pi)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = _ncp(mid, s, w)[0] < y
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return 0.5 * (lo + hi)


def u1_coupling_masks(L: int, mu: int, off: int) -> tuple[Array, Array]:
    """Active and frozen plaquette masks of the Kanwar et al. pattern for links of direction `mu`.

    Arguments:
        L: lattice extent (a multiple of 4).
        mu: direction of the links that are updated (0 or 1).
        off: offset 0..3 of the updated rows along the other direction.

    Returns:
        (active, frozen), each (L, L): the plaquettes transformed, and those the conditioner sees.
    """
    nu_coord = jnp.arange(L)
    row_active = nu_coord % 4 == off % 4
    row_frozen = ((nu_coord - off) % 4 == 1) | ((nu_coord - off) % 4 == 2)
    dtype = jnp.result_type(float)
    # mu may be traced: links theta_0(x) sit on rows x_1 = off mod 4 (axis -1), theta_1(x) on x_0 = off (axis -2)
    active = jnp.where(mu == 0, row_active[None, :], row_active[:, None])
    frozen = jnp.where(mu == 0, row_frozen[None, :], row_frozen[:, None])
    return active.astype(dtype), frozen.astype(dtype)


class GaugeEquivariantCoupling(eqx.Module):
    """Gauge-equivariant U(1) coupling (Kanwar et al. 2020) with a mixture of non-compact projections.

    The active plaquette P is mapped to wrap(sum_k w_k 2 atan(s_k tan(P/2)) + t), with s_k > 0,
    w_k (softmax) and t produced per site from cos/sin of the frozen plaquettes.

    Attributes:
        net: conditioner, 2 input channels -> 2 n_mix + 1 output channels.
        mu: direction of the updated links.
        off: row offset (0..3) of the updated links.
        n_mix: number of mixture components.
    """

    net: CircularConvNet
    mu: Array  # integer scalars: arrays rather than static fields so that layers stack for `lax.scan`
    off: Array
    n_mix: int = eqx.field(static=True)

    def __init__(self, mu: int, off: int, n_mix: int = 6, hidden_channels: Sequence[int] = (8, 8), kernel_size: int = 3, *, key: PRNGKeyArray):
        """Arguments: link direction; row offset; mixture size; conditioner sizes; PRNG key."""
        if mu not in (0, 1):
            raise ValueError(f"mu must be 0 or 1; got {mu}")
        if n_mix < 1:
            raise ValueError(f"n_mix must be at least 1; got {n_mix}")
        self.net = CircularConvNet(2, 2 * n_mix + 1, hidden_channels, kernel_size, final_tanh=False, key=key)
        self.mu = jnp.asarray(mu, jnp.int32)
        self.off = jnp.asarray(off % 4, jnp.int32)
        self.n_mix = n_mix

    def _params(self, P, frozen):
        ctx = jnp.stack([jnp.cos(P) * frozen, jnp.sin(P) * frozen])
        out = jnp.moveaxis(self.net(ctx), 0, -1)
        n = self.n_mix
        s = jax.nn.softplus(out[..., :n] + math.log(math.e - 1)) + 1e-3
        w = jax.nn.softmax(out[..., n : 2 * n], axis=-1)
        return s, w, out[..., 2 * n]

    def _link_update(self, delta):
        # theta_mu(x) enters P(x) with sign +1 for mu = 0 and -1 for mu = 1
        sign = (1 - 2 * self.mu).astype(delta.dtype)
        onehot = (jnp.arange(2) == self.mu).astype(delta.dtype)[:, None, None]
        return onehot * sign * delta[None]

    def _check(self, theta):
        L = theta.shape[-1]
        if theta.shape != (2, L, L) or L % 4:
            raise ValueError(f"a gauge coupling acts on one configuration of shape (2, L, L) with L a multiple of 4; got {theta.shape}")
        return L

    def forward(self, theta: Float[Array, "2 L L"]) -> tuple[Float[Array, "2 L L"], Float[Array, ""]]:
        """Apply the layer; returns (output links wrapped to [-pi, pi), log|det J|)."""
        L = self._check(theta)
        active, frozen = u1_coupling_masks(L, self.mu, self.off)
        P = wrap_angle(plaquette_angles(theta))
        s, w, t = self._params(P, frozen)
        fP, dfdx = _ncp(P, s, w)
        delta = active * (wrap_angle(fP + t) - P)
        out = theta + self._link_update(delta)
        return wrap_angle(out), jnp.sum(active * jnp.log(dfdx))

    def inverse(self, theta: Float[Array, "2 L L"]) -> tuple[Float[Array, "2 L L"], Float[Array, ""]]:
        """Invert the layer; returns (input links wrapped to [-pi, pi), log|det J^-1|)."""
        L = self._check(theta)
        active, frozen = u1_coupling_masks(L, self.mu, self.off)
        P = wrap_angle(plaquette_angles(theta))
        s, w, t = self._params(P, frozen)
        P_old = _ncp_inverse(wrap_angle(P - t), s, w)
        _, dfdx = _ncp(P_old, s, w)
        delta = active * (P - P_old)
        out = theta - self._link_update(delta)
        return wrap_angle(out), -jnp.sum(active * jnp.log(dfdx))


# ----------------------------------------------------------------------------- flows


class LatticeFlow(eqx.Module):
    """A prior and a sequence of coupling layers; x = f(z), log q(x) = log p(z) - log|det df/dz|.

    Attributes:
        prior: `GaussianPrior` or `HaarPrior`.
        layers: the coupling layers, applied in order.
    """

    prior: GaussianPrior | HaarPrior
    layers: eqx.Module  # the layers stacked along a leading axis of every array leaf
    n_layers: int = eqx.field(static=True)

    def __init__(self, prior: GaussianPrior | HaarPrior, layers: Sequence[eqx.Module]):
        """Build a flow from a prior and layers of one class and one structure (they are stacked).

        Raises:
            ValueError: if no layers are given or they differ in class or structure.
        """
        layers = tuple(layers)
        if not layers:
            raise ValueError("a LatticeFlow needs at least one layer")
        structures = {jax.tree_util.tree_structure(layer) for layer in layers}
        if len(structures) != 1:
            raise ValueError("all layers of a LatticeFlow must share one class and structure (they are scanned over)")
        self.prior = prior
        # one scanned layer body instead of n unrolled copies: compilation time independent of depth
        self.layers = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *layers)
        self.n_layers = len(layers)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        return self.prior.shape

    def layer(self, i: int) -> eqx.Module:
        """The i-th layer as a stand-alone module."""
        return jax.tree_util.tree_map(lambda a: a[i], self.layers)

    def _scan(self, x, reverse):
        params, static = eqx.partition(self.layers, eqx.is_array)
        # The loop carries one dtype: promote x once to that of the layers' float arrays (a float32
        # configuration given to a flow built in float64 would otherwise change type in the loop).
        floats = [p for p in jax.tree_util.tree_leaves(params) if jnp.issubdtype(p.dtype, jnp.inexact)]
        x = jnp.asarray(x)
        x = x.astype(jnp.result_type(x, *floats))

        def body(carry, p):
            layer = eqx.combine(p, static)
            y, ld = layer.inverse(carry) if reverse else layer.forward(carry)
            return y, ld

        x, lds = jax.lax.scan(body, x, params, reverse=reverse)
        return x, jnp.sum(lds)

    def forward(self, z: Float[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, ""]]:
        """Push one prior draw through the layers; returns (x, log|det df/dz|)."""
        return self._scan(z, False)

    def inverse(self, x: Float[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, ""]]:
        """Map one configuration back to the prior; returns (z, log|det df^-1/dx|)."""
        return self._scan(x, True)

    def log_prob(self, x: Float[Array, "*batch ..."]) -> Float[Array, "*batch"]:
        """Model log density log q(x), vectorised over leading batch axes.

        Raises:
            ValueError: if the trailing axes of `x` are not the configuration shape.
        """
        nd = len(self.shape)
        if tuple(x.shape[x.ndim - nd :]) != self.shape:
            raise ValueError(f"x must end with the configuration shape {self.shape}; got {x.shape}")
        return _log_prob_entry(self, x)

    def sample_and_log_prob(self, key: PRNGKeyArray, n: int) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """Draw `n` configurations and their model log densities in one pass."""
        # n as a Python int (a numpy or concrete JAX integer too): the entry's static argument.
        return _sample_and_log_prob_entry(self, key, operator.index(n))

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n ..."]:
        """Draw `n` configurations."""
        return self.sample_and_log_prob(key, n)[0]


# The public methods are jit entry points: called from Python they compile once per flow
# structure and shape (run op by op, every call traced its layer scan anew and compiled it again,
# about a second each on a CPU); inside a caller's jit, grad or vmap they inline. XLA's default
# options, as for the lattice samplers (see jaxhep.compilation).
@eqx.filter_jit
def _log_prob_entry(flow: LatticeFlow, x):
    nd = len(flow.shape)

    def single(xi):
        z, ld = flow.inverse(xi)
        return flow.prior.log_prob(z) + ld

    flat = x.reshape(-1, *flow.shape)
    return jax.vmap(single)(flat).reshape(x.shape[: x.ndim - nd])


@eqx.filter_jit
def _sample_and_log_prob_entry(flow: LatticeFlow, key, n: int):
    z = flow.prior.sample(key, n)
    logp = jax.vmap(flow.prior.log_prob)(z)
    x, logdet = jax.vmap(flow.forward)(z)
    return x, logp - logdet


def make_phi4_flow(
    L: int,
    n_layers: int = 16,
    coupling: str = "affine",
    hidden_channels: Sequence[int] = (8, 8),
    kernel_size: int = 3,
    n_bins: int = 8,
    bound: float = 4.0,
    *,
    key: PRNGKeyArray,
) -> LatticeFlow:
    """Flow for an L x L real scalar field: Gaussian prior, alternating checkerboard couplings.

    Arguments:
        L: lattice extent (even).
        n_layers: number of coupling layers (the tutorial uses 16 affine layers).
        coupling: "affine" or "spline" (rational-quadratic).
        hidden_channels: conditioner hidden channels.
        kernel_size: conditioner kernel size.
        n_bins: spline bins (spline only).
        bound: spline interval half-width (spline only).
        key: PRNG key.

    Returns:
        The untrained `LatticeFlow`.

    Raises:
        ValueError: for odd L, non-positive n_layers or an unknown coupling.
    """
    if L < 2 or L % 2:
        raise ValueError(f"L must be even and >= 2 for checkerboard masks; got {L}")
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive; got {n_layers}")
    if coupling not in ("affine", "spline"):
        raise ValueError(f"coupling must be 'affine' or 'spline'; got {coupling!r}")
    keys = jax.random.split(key, n_layers)
    if coupling == "affine":
        layers = tuple(AffineCoupling(i % 2, hidden_channels, kernel_size, key=k) for i, k in enumerate(keys))
    else:
        layers = tuple(SplineCoupling(i % 2, n_bins, bound, hidden_channels, kernel_size, key=k) for i, k in enumerate(keys))
    return LatticeFlow(GaussianPrior((L, L)), layers)


def make_u1_flow(
    L: int,
    n_layers: int = 24,
    n_mix: int = 6,
    hidden_channels: Sequence[int] = (8, 8),
    kernel_size: int = 3,
    *,
    key: PRNGKeyArray,
) -> LatticeFlow:
    """Gauge-equivariant flow for 2D U(1) on an L x L lattice: Haar prior, Kanwar et al. couplings.

    Layer i updates direction mu = i % 2 at offset (i // 2) % 4, so 8 layers touch every link once.

    Arguments:
        L: lattice extent (a multiple of 4).
        n_layers: number of couplings (the tutorial uses 24).
        n_mix: NCP mixture components.
        hidden_channels: conditioner hidden channels.
        kernel_size: conditioner kernel size.
        key: PRNG key.

    Returns:
        The untrained `LatticeFlow`.

    Raises:
        ValueError: if L is not a positive multiple of 4 or n_layers is not positive.
    """
    if L < 4 or L % 4:
        raise ValueError(f"L must be a positive multiple of 4 for the Kanwar et al. masks; got {L}")
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive; got {n_layers}")
    keys = jax.random.split(key, n_layers)
    layers = tuple(
        GaugeEquivariantCoupling(i % 2, (i // 2) % 4, n_mix, hidden_channels, kernel_size, key=k) for i, k in enumerate(keys)
    )
    return LatticeFlow(HaarPrior((2, L, L)), layers)
