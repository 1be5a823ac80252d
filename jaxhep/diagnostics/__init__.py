"""Diagnostics for posterior estimators: C2ST, SBC ranks, expected coverage, TARP, and a summary of coverage curves."""

from jaxhep.diagnostics.c2st import c2st, c2st_scores
from jaxhep.diagnostics.calibration import coverage_summary, expected_coverage, sbc_ranks, sbc_uniformity, tarp

__all__ = ["c2st", "c2st_scores", "coverage_summary", "expected_coverage", "sbc_ranks", "sbc_uniformity", "tarp"]
