"""Equinox networks used across jaxhep."""

from jaxhep.nn.embedding import PermutationInvariant
from jaxhep.nn.mlp import MLP, ResidualMLP, get_activation

__all__ = ["MLP", "PermutationInvariant", "ResidualMLP", "get_activation"]
