"""Figures for inference results: corner plots, loss curves, SBC rank histograms, coverage curves.

Figures are built as `matplotlib.figure.Figure` objects attached to an Agg canvas, without
`pyplot`: nothing is ever shown on a display, no global figure registry grows, and the functions
are safe to call on headless machines and in threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import ArrayLike, Float, Int
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxhep.checks import check_positive_int

__all__ = ["corner", "coverage_curve", "loss_curves", "rank_histograms"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike | None) -> None:
    if path is None:
        return
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    # The format follows the file's extension (PNG without one); a fixed "png" wrote PNG bytes
    # into a file named .pdf.
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    fig.savefig(path, format=ext or "png", bbox_inches="tight")


def _as_2d(name: str, a) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be an array of shape (n, d) with n, d >= 1 (or (n,)), got {np.shape(a)}")
    return arr


def _check_probability(name: str, value) -> float:
    """A probability strictly between 0 and 1 (a band or an enclosed mass), as a float."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if not 0.0 < p < 1.0:
        raise ValueError(f"{name} must be a probability strictly between 0 and 1, got {value!r}")
    return p


def _smooth(hist: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian smoothing of a 2-d histogram (sigma in bins), so contours are not noise."""
    if sigma <= 0:
        return hist
    radius = int(math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 0, hist)
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, out)


def _mass_levels(hist: np.ndarray, masses: Sequence[float]) -> list[float]:
    """Histogram heights whose superlevel sets hold the given probability masses."""
    flat = np.sort(hist.ravel())[::-1]
    cum = np.cumsum(flat)
    total = cum[-1]
    levels = []
    for m in sorted(masses, reverse=True):
        i = min(int(np.searchsorted(cum, m * total)), flat.size - 1)
        levels.append(flat[i])
    levels = np.unique(levels)
    return [lv for lv in levels if lv > 0]


def corner(
    samples: Mapping[str, Float[ArrayLike, "n d"]] | Float[ArrayLike, "n d"],
    labels: Sequence[str] | None = None,
    truth: Float[ArrayLike, " d"] | None = None,
    path: str | os.PathLike | None = None,
    *,
    bins: int = 40,
    masses: Sequence[float] = (0.68, 0.95),
    scatter_below: int = 500,
    smooth: float = 1.0,
    limits: Sequence[tuple[float, float]] | None = None,
) -> Figure:
    """Pair (corner) plot of one or several sample sets over the same d parameters.

    The diagonal shows normalised 1-d histograms; below it, each pair of parameters shows the
    contours enclosing `masses` of a 2-d histogram (or a scatter plot for sets with fewer than
    `scatter_below` samples). Panels above the diagonal are hidden, so the figure always has
    d x d axes.

    Arguments:
        samples: an array of shape (n, d), or a mapping from a set's name to its array; sets may
            differ in size but not in d. Not modified.
        labels: names of the d parameters (default theta_1 ... theta_d).
        truth: true parameter values, shape (d,), drawn as lines.
        path: where to save the figure, in the format its extension names (.png, .pdf, .svg; PNG
            without one); folders are created. None to skip saving.
        bins: histogram bins per axis.
        masses: probability masses enclosed by the 2-d contours.
        scatter_below: sets with fewer samples are drawn as scatter plots.
        smooth: width (in bins) of the Gaussian smoothing of 2-d histograms before contouring.
        limits: (low, high) per parameter; by default the 0.5% and 99.5% quantiles of all sets.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: for sets of different dimension, non-finite samples, labels, truth or
            limits of the wrong length, or masses outside (0, 1).
    """
    masses = [_check_probability("each of masses", m) for m in np.atleast_1d(np.asarray(masses, dtype=object))]
    sets = dict(samples) if isinstance(samples, Mapping) else {"samples": samples}
    if not sets:
        raise ValueError("samples is empty: expected an array of shape (n, d) or a mapping of such arrays")
    names = [str(k) for k in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"the names of the sample sets must differ as text (they label the legend), got "
                         f"{list(sets)}")
    check_positive_int("bins", bins)
    sets = {str(k): _as_2d(f"samples[{k!r}]", v) for k, v in sets.items()}
    dims = {k: v.shape[1] for k, v in sets.items()}
    d = next(iter(dims.values()))
    if len(set(dims.values())) != 1:
        raise ValueError(f"all sample sets must have the same dimension d; got {dims}")
    for k, v in sets.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"samples[{k!r}] contains NaN or inf")
    if labels is None:
        labels = [rf"$\theta_{{{i + 1}}}$" for i in range(d)]
    if len(labels) != d:
        raise ValueError(f"labels must have one entry per dimension ({d}), got {len(labels)}")
    if truth is not None:
        truth = np.asarray(truth, dtype=float).reshape(-1)
        if truth.shape != (d,):
            raise ValueError(f"truth must have shape ({d},), got {truth.shape}")
        if not np.all(np.isfinite(truth)):
            raise ValueError(f"truth must be finite, got {truth}")
    if limits is None:
        stacked = np.concatenate(list(sets.values()))
        lo = np.quantile(stacked, 0.005, axis=0)
        hi = np.quantile(stacked, 0.995, axis=0)
        if truth is not None:
            lo, hi = np.minimum(lo, truth), np.maximum(hi, truth)
        pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
        limits = list(zip(lo - pad, hi + pad))
    if len(limits) != d:
        raise ValueError(f"limits must have one (low, high) pair per dimension ({d}), got {len(limits)}")
    if not all(np.isfinite(lo) and np.isfinite(hi) and lo < hi for lo, hi in limits):
        raise ValueError(f"limits must be finite (low, high) pairs with low < high, got {list(limits)}")

    size = max(2.0, min(2.6, 12.0 / d))
    fig = _new_figure(size * d, size * d)
    axes = fig.subplots(d, d, squeeze=False)
    edges = [np.linspace(lo, hi, bins + 1) for lo, hi in limits]
    for s, (name, arr) in enumerate(sets.items()):
        color = _COLORS[s % len(_COLORS)]
        for i in range(d):
            axes[i, i].hist(arr[:, i], bins=edges[i], density=True, histtype="step", color=color, label=name)
            for j in range(i):
                ax = axes[i, j]
                if arr.shape[0] < scatter_below:
                    ax.scatter(arr[:, j], arr[:, i], s=3, alpha=0.5, color=color, linewidths=0)
                    continue
                hist, xe, ye = np.histogram2d(arr[:, j], arr[:, i], bins=[edges[j], edges[i]])
                hist = _smooth(hist, smooth)
                levels = _mass_levels(hist, masses)
                centers_x = 0.5 * (xe[1:] + xe[:-1])
                centers_y = 0.5 * (ye[1:] + ye[:-1])
                if len(levels) >= 1 and hist.max() > min(levels):
                    ax.contour(centers_x, centers_y, hist.T, levels=sorted(levels), colors=[color],
                               linewidths=1.0)
                else:
                    ax.scatter(arr[:, j], arr[:, i], s=2, alpha=0.3, color=color, linewidths=0)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            ax.set_xlim(*limits[j])
            if j < i:
                ax.set_ylim(*limits[i])
                if truth is not None:
                    ax.axvline(truth[j], color="k", lw=0.8)
                    ax.axhline(truth[i], color="k", lw=0.8)
                    ax.plot(truth[j], truth[i], "s", color="k", ms=3)
            else:
                ax.set_yticks([])
                if truth is not None:
                    ax.axvline(truth[i], color="k", lw=0.8)
            if i == d - 1:
                ax.set_xlabel(labels[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
            elif j > 0 and j < i:
                ax.set_yticklabels([])
    if len(sets) > 1 or isinstance(samples, Mapping):
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="upper right", frameon=False)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    _save(fig, path)
    return fig


def _history_curves(name: str, value) -> list[tuple[str, np.ndarray, str]]:
    """(label, losses, line style) for a History or a 1-d array."""
    train = getattr(value, "train_loss", None)
    if train is not None:
        curves = [(f"{name} train" if name else "train", np.asarray(train, dtype=float).reshape(-1), "-")]
        val = np.asarray(getattr(value, "val_loss", []), dtype=float).reshape(-1)
        if val.size:
            curves.append((f"{name} validation" if name else "validation", val, "--"))
        return curves
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"loss curve {name!r} must be a 1-d array or a History, got shape {arr.shape}")
    return [(name, arr, "-")]


def loss_curves(history_or_dict, path: str | os.PathLike | None = None, *, log_scale: bool | None = None) -> Figure:
    """Training and validation losses per epoch.

    Arguments:
        history_or_dict: a `jaxhep.training.History` (its `train_loss` and `val_loss`), or a
            mapping from names to Histories or to 1-d arrays of losses per epoch.
        path: where to save the figure (format from the extension, PNG without one); None to skip.
        log_scale: log-scaled loss axis; by default when all losses are positive and span more
            than a factor of 20.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: for an empty input or curves that are not 1-d.
    """
    if isinstance(history_or_dict, Mapping):
        # One colour per entry; a History's validation curve shares its colour, dashed.
        groups = [_history_curves(str(name), value) for name, value in history_or_dict.items()]
    else:
        groups = [[(label, values, style)] for label, values, style in _history_curves("", history_or_dict)]
    curves = [(label, values, style, _COLORS[g % len(_COLORS)])
              for g, group in enumerate(groups) for label, values, style in group if values.size]
    if not curves:
        raise ValueError("no loss values to plot")
    finite = np.concatenate([values[np.isfinite(values)] for _, values, _, _ in curves])
    if log_scale is None:
        log_scale = bool(finite.size and finite.min() > 0 and finite.max() > 20 * finite.min())
    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for label, values, style, color in curves:
        ax.plot(np.arange(1, values.size + 1), values, style, color=color, label=label)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if any(label for label, _, _, _ in curves):  # a lone array has no name to show
        ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return fig


def rank_histograms(
    ranks: Int[ArrayLike, "n d"],
    path: str | os.PathLike | None = None,
    *,
    num_posterior_samples: int | None = None,
    bins: int | None = None,
    labels: Sequence[str] | None = None,
    band: float = 0.99,
) -> Figure:
    """Histograms of SBC ranks, one panel per parameter, with the band expected under uniformity.

    Arguments:
        ranks: ranks from `jaxhep.diagnostics.sbc_ranks`, shape (n, d) (or (n,)).
        path: where to save the figure (format from the extension, PNG without one); None to skip.
        num_posterior_samples: L, the largest possible rank (default: the largest rank seen).
        bins: histogram bins (default min(20, L + 1, n // 5), at least 2).
        labels: parameter names.
        band: central probability of the binomial band drawn for each bin's count.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: for ranks that are not integers, negative, above L, or of the wrong shape;
            a band outside (0, 1); bins outside 1..L + 1.
    """
    ranks = _as_2d("ranks", ranks)
    n, d = ranks.shape
    if not np.all(np.isfinite(ranks)) or not np.all(ranks == np.round(ranks)):
        raise ValueError("ranks must be finite integers (counts of posterior draws below the truth)")
    if num_posterior_samples is not None:
        check_positive_int("num_posterior_samples", num_posterior_samples)
    L = int(ranks.max()) if num_posterior_samples is None else int(num_posterior_samples)
    if ranks.min() < 0 or ranks.max() > L:
        raise ValueError(f"ranks must lie in [0, {L}], got values in [{ranks.min():g}, {ranks.max():g}]")
    band = _check_probability("band", band)
    if bins is None:
        bins = max(2, min(20, L + 1, n // 5))
    elif not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or not 1 <= bins <= L + 1:
        raise ValueError(f"bins must be an integer from 1 to L + 1 = {L + 1} (one rank value per bin at most), "
                         f"got {bins!r}")
    if labels is None:
        labels = [rf"$\theta_{{{i + 1}}}$" for i in range(d)]
    if len(labels) != d:
        raise ValueError(f"labels must have one entry per dimension ({d}), got {len(labels)}")
    # Bin edges between integer ranks so that every bin holds whole rank values.
    edges = np.unique(np.floor(np.linspace(0, L + 1, bins + 1))) - 0.5
    widths = np.diff(edges)
    probs = widths / (L + 1)
    z = _normal_quantile(0.5 + band / 2)
    mean = n * probs
    half = z * np.sqrt(n * probs * (1 - probs))
    cols = min(d, 4)
    rows = math.ceil(d / cols)
    fig = _new_figure(3.2 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i in range(d):
        ax = axes[i]
        ax.fill_between(np.repeat(edges, 2)[1:-1], np.repeat(mean - half, 2), np.repeat(mean + half, 2),
                        color="0.8", label=f"{band:.0%} band (uniform)")
        ax.stairs(np.repeat(mean, 1), edges, color="0.4", lw=0.8, linestyle="--")
        ax.hist(ranks[:, i], bins=edges, histtype="step", lw=1.5, color=_COLORS[0], label="ranks")
        ax.set_xlabel(f"rank of {labels[i]}")
        ax.set_xlim(edges[0], edges[-1])
        if i % cols == 0:
            ax.set_ylabel("count")
    for ax in axes[d:]:
        ax.set_visible(False)
    axes[0].legend(frameon=False, fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    return fig


def _normal_quantile(p: float) -> float:
    """Standard normal quantile by bisection on the error function (no SciPy needed)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def coverage_curve(
    levels: Float[ArrayLike, " k"],
    coverage: Float[ArrayLike, " k"] | Float[ArrayLike, "k m"] | Mapping[str, Float[ArrayLike, " k"]],
    path: str | os.PathLike | None = None,
    *,
    num_pairs: int | None = None,
    band: float = 0.95,
    labels: Sequence[str] | None = None,
    exact: Mapping[str, Float[ArrayLike, " k"]] | None = None,
    xlabel: str = "credibility level",
    ylabel: str = "expected coverage",
) -> Figure:
    """Expected coverage against credibility level, with the diagonal of perfect calibration.

    Curves below the diagonal mean over-confident posteriors, above it under-confident ones.

    Arguments:
        levels: credibility levels, shape (k,).
        coverage: coverage at those levels: shape (k,), (k, m) for m curves (e.g. per dimension
            from `expected_coverage(..., method="central")`), or a mapping of names to (k,) arrays.
        path: where to save the figure (format from the extension, PNG without one); None to skip.
        num_pairs: number of test pairs behind the estimate; when given, the binomial band of
            probability `band` around the diagonal is drawn.
        band: central probability of that band.
        labels: names of the m curves of a (k, m) array.
        exact: known true coverage curves, drawn dashed in the colour of the measured curve
            of the same name (for checks against closed forms).
        xlabel: x-axis label.
        ylabel: y-axis label.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: when a curve's length differs from that of `levels`, for a `num_pairs` that
            is not a positive integer, or a band outside (0, 1).
    """
    levels = np.asarray(levels, dtype=float).reshape(-1)
    if num_pairs is not None:
        check_positive_int("num_pairs", num_pairs)
        band = _check_probability("band", band)
    if isinstance(coverage, Mapping):
        curves = {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in coverage.items()}
    else:
        cov = np.asarray(coverage, dtype=float)
        if cov.ndim == 1:
            cov = cov[:, None]
        if cov.ndim != 2:
            raise ValueError(f"coverage must have shape (k,) or (k, m), got {cov.shape}")
        if labels is None:
            labels = ["coverage"] if cov.shape[1] == 1 else [rf"$\theta_{{{i + 1}}}$" for i in range(cov.shape[1])]
        if len(labels) != cov.shape[1]:
            raise ValueError(f"labels must have one entry per curve ({cov.shape[1]}), got {len(labels)}")
        curves = {lab: cov[:, i] for i, lab in enumerate(labels)}
    exact = {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in (exact or {}).items()}
    for name, values in list(curves.items()) + list(exact.items()):
        if values.shape != levels.shape:
            raise ValueError(f"coverage curve {name!r} has {values.size} values for {levels.size} levels")
    fig = _new_figure(4.5, 4.5)
    ax = fig.add_subplot()
    grid = np.linspace(0, 1, 201)
    if num_pairs is not None:
        z = _normal_quantile(0.5 + band / 2)
        half = z * np.sqrt(grid * (1 - grid) / num_pairs)
        ax.fill_between(grid, grid - half, grid + half, color="0.85", label=f"{band:.0%} band (n = {num_pairs})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    colors = {name: _COLORS[s % len(_COLORS)] for s, (name) in enumerate(curves)}
    for name, values in curves.items():
        ax.plot(levels, values, "-o", ms=3, color=colors[name], label=name)
    for name, values in exact.items():
        ax.plot(levels, values, ":", lw=1.5, color=colors.get(name, "0.3"),
                label=f"{name} (exact)" if name not in colors else None)
    if exact:
        ax.plot([], [], ":", color="0.3", label="exact")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return fig
