"""Simulation-based inference (`jaxhep.sbi`): amortized posterior estimators and their posteriors."""

from jaxhep.sbi.base import AbstractPosteriorEstimator, Posterior, check_training_data
from jaxhep.sbi.npe import DENSITY_ESTIMATORS, NPE

__all__ = ["AbstractPosteriorEstimator", "DENSITY_ESTIMATORS", "NPE", "Posterior", "check_training_data"]

from jaxhep.sbi.fmpe import FMPE  # noqa: E402
from jaxhep.sbi.npse import NPSE, sample_iid  # noqa: E402

__all__ += ["FMPE", "NPSE", "sample_iid"]
