"""Elementwise transformers (affine, rational-quadratic spline) whose parameters come from a conditioner.

They are the per-dimension maps inside coupling and autoregressive layers. Each takes a raw
parameter array of shape (n, num_params) from a network and maps n scalars.
"""

from __future__ import annotations


import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxhep.bijections.rqs import num_spline_params, rqs_forward, rqs_inverse
from jaxhep.checks import check_positive_finite, check_positive_int


class AffineTransformer(eqx.Module):
    """y = x * exp(s) + t, with the log-scale softly bounded to keep training stable."""

    max_log_scale: float = eqx.field(static=True, default=3.0)

    @property
    def num_params(self) -> int:
        return 2

    def _unpack(self, params):
        shift, raw = params[..., 0], params[..., 1]
        # tanh bound: the scale stays in [e^-b, e^b] whatever the network outputs.
        log_scale = self.max_log_scale * jnp.tanh(raw / self.max_log_scale)
        return shift, log_scale

    def forward(self, x, params):
        shift, log_scale = self._unpack(params)
        return x * jnp.exp(log_scale) + shift, log_scale

    def inverse(self, y, params):
        shift, log_scale = self._unpack(params)
        return (y - shift) * jnp.exp(-log_scale), -log_scale


class SplineTransformer(eqx.Module):
    """Monotone rational-quadratic spline on [-bound, bound], identity outside (linear tails).

    Raw parameters: with `style='distrax'` (default), 3 * num_bins + 1 per dimension, in distrax's
    `RationalQuadraticSpline` parameterisation; with `style='nflows'`, 3 * num_bins - 1, in that
    of nflows (PyTorch sbi's NSF), whose width and height logits are divided by `logit_scale`
    (see `jaxhep.bijections.rqs`). `backend='jaxhep'` (default) uses the batched implementation
    in `jaxhep.bijections.rqs`, which compiles faster; `backend='distrax'` builds distrax's
    bijector inside each call (distrax style only). Both give the same map.
    """

    num_bins: int = eqx.field(static=True, default=10)
    bound: float = eqx.field(static=True, default=3.0)
    backend: str = eqx.field(static=True, default="jaxhep")
    style: str = eqx.field(static=True, default="distrax")
    logit_scale: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        check_positive_int("num_bins", self.num_bins)
        check_positive_finite("bound", self.bound)
        check_positive_finite("logit_scale", self.logit_scale)
        if self.backend not in ("jaxhep", "distrax"):
            raise ValueError(f"backend must be 'jaxhep' or 'distrax', got {self.backend!r}")
        num_spline_params(self.num_bins, self.style)  # checks the style
        if self.backend == "distrax" and (self.style != "distrax" or self.logit_scale != 1.0):
            raise ValueError("backend='distrax' computes distrax's parameterisation only (style='distrax', "
                             "logit_scale=1)")

    @property
    def num_params(self) -> int:
        return num_spline_params(self.num_bins, self.style)

    def _spline(self, params):
        return distrax.RationalQuadraticSpline(
            params, range_min=-self.bound, range_max=self.bound, boundary_slopes="identity")

    def forward(self, x, params):
        if self.backend == "distrax":
            return self._spline(params).forward_and_log_det(x)
        return rqs_forward(x, params, self.bound, self.style, self.logit_scale)

    def inverse(self, y, params):
        if self.backend == "distrax":
            return self._spline(params).inverse_and_log_det(y)
        return rqs_inverse(y, params, self.bound, self.style, self.logit_scale)


def make_transformer(kind: str, num_bins: int = 10, bound: float = 3.0, style: str = "distrax",
                     logit_scale: float = 1.0):
    """Build a transformer by name ('affine' or 'spline'; `style` and `logit_scale` as in
    `SplineTransformer`).

    Raises:
        ValueError: for another name.
    """
    if kind == "affine":
        return AffineTransformer()
    if kind == "spline":
        check_positive_finite("bound", bound)
        return SplineTransformer(num_bins=num_bins, bound=float(bound), style=style, logit_scale=float(logit_scale))
    raise ValueError(f"unknown transformer {kind!r}; expected 'affine' or 'spline'")


def zero_init(linear: eqx.nn.Linear) -> eqx.nn.Linear:
    """A copy of a linear layer with zero weights and biases (for identity-initialised flows)."""
    # Host zeros: jnp.zeros_like would compile a small program per shape.
    return eqx.tree_at(lambda l: (l.weight, l.bias), linear,
                       (jax.device_put(np.zeros(linear.weight.shape, linear.weight.dtype)),
                        jax.device_put(np.zeros(linear.bias.shape, linear.bias.dtype))))


__all__ = ["AffineTransformer", "SplineTransformer", "make_transformer", "zero_init"]
