"""Simulation-based inference (`jaxhep.sbi`): amortized posterior estimators and their posteriors."""

from jaxhep.sbi.base import AbstractPosteriorEstimator, Posterior, check_training_data
from jaxhep.sbi.npe import DENSITY_ESTIMATORS, NPE

__all__ = ["AbstractPosteriorEstimator", "DENSITY_ESTIMATORS", "NPE", "Posterior", "check_training_data"]
