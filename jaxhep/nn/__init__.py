"""Equinox networks used across jaxhep, and the adapter for Flax networks."""

from jaxhep.nn.embedding import SET_EMBEDDINGS, PermutationInvariant, set_embedding
from jaxhep.nn.flax_adapter import FlaxLinen, FlaxNNX, from_flax
from jaxhep.nn.mlp import MLP, ResidualMLP, get_activation

__all__ = ["FlaxLinen", "FlaxNNX", "MLP", "PermutationInvariant", "ResidualMLP", "SET_EMBEDDINGS", "from_flax",
           "get_activation", "set_embedding"]
