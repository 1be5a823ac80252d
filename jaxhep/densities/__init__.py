"""Conditional density estimators q(theta | x) behind one interface."""

from jaxhep.densities.base import AbstractConditionalDensity, check_finite, check_last_dim
from jaxhep.densities.embedded import Embedded, embedding_size
from jaxhep.densities.flows import Flow, maf, nsf
from jaxhep.densities.mixture import MixtureDensityNetwork
from jaxhep.densities.standardize import SUPPORTS, Standardized, check_support, make_standardizer, transform_rows

__all__ = [
    "AbstractConditionalDensity", "Embedded", "Flow", "MixtureDensityNetwork", "Standardized", "check_finite",
    "SUPPORTS", "check_last_dim", "check_support", "embedding_size", "maf", "make_standardizer", "nsf",
    "transform_rows",
]

from jaxhep.densities.flow_matching import FlowMatching  # noqa: E402
from jaxhep.densities.ode import (NETWORKS, AbstractODEDensity, TimeConditionedMLP,  # noqa: E402
                                  TimeConditionedResNet, check_network, time_features)
from jaxhep.densities.score import SDES, ScoreDiffusion  # noqa: E402

__all__ += ["AbstractODEDensity", "FlowMatching", "NETWORKS", "SDES", "ScoreDiffusion", "TimeConditionedMLP",
            "TimeConditionedResNet", "check_network", "time_features"]
