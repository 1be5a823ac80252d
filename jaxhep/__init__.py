"""jaxhep: simulation-based inference and theory for high-energy physics, in JAX."""

__version__ = "0.1.0"
