"""Conditional density estimators q(theta | x) behind one interface."""

from jaxhep.densities.base import AbstractConditionalDensity, check_finite, check_last_dim
from jaxhep.densities.flows import Flow, maf, nsf
from jaxhep.densities.mixture import MixtureDensityNetwork
from jaxhep.densities.standardize import Standardized, make_standardizer

__all__ = [
    "AbstractConditionalDensity", "Flow", "MixtureDensityNetwork", "Standardized", "check_finite",
    "check_last_dim", "maf", "make_standardizer", "nsf",
]
