"""Figures for inference results (matplotlib, Agg canvas, never shown on a display)."""

from jaxhep.plotting.figures import corner, coverage_curve, loss_curves, rank_histograms

__all__ = ["corner", "coverage_curve", "loss_curves", "rank_histograms"]
