"""Equinox networks used across jaxhep."""

from jaxhep.nn.mlp import MLP, ResidualMLP, get_activation

__all__ = ["MLP", "ResidualMLP", "get_activation"]
