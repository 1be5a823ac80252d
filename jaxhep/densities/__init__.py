"""Conditional density estimators q(theta | x) behind one interface."""

from jaxhep.densities.base import AbstractConditionalDensity, check_finite, check_last_dim

__all__ = ["AbstractConditionalDensity", "check_finite", "check_last_dim"]
