"""Shared test utilities."""

import equinox as eqx
import jax


def perturb(module, key, scale=0.1):
    """A copy of `module` with Gaussian noise added to every trainable array.

    Flows start at the identity, which would make invertibility and normalisation tests pass
    trivially; perturbed parameters give non-trivial maps. Larger perturbations of spline
    conditioners give near-flat bins whose inverse is ill-conditioned in float32 (distrax's
    spline loses the same digits there), hence the small default.
    """
    params, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static)
