"""Equinox networks used across jaxhep."""

from jaxhep.nn.embedding import SET_EMBEDDINGS, PermutationInvariant, set_embedding
from jaxhep.nn.mlp import MLP, ResidualMLP, get_activation

__all__ = ["MLP", "PermutationInvariant", "ResidualMLP", "SET_EMBEDDINGS", "get_activation", "set_embedding"]
