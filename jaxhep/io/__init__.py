"""Saving and loading trained objects (`save`, `load`; see `jaxhep.io.checkpoint`)."""

from jaxhep.io.checkpoint import FORMAT, VERSION, load, save

__all__ = ["FORMAT", "VERSION", "load", "save"]
