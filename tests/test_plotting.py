"""Plotting: PNGs are written and decodable, figures have the expected panels and data."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

import jax.numpy as jnp
from jaxhep.plotting import corner, coverage_curve, loss_curves, rank_histograms
from jaxhep.training import History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # Something was drawn: the pixels are not all one colour.
    assert image[..., :3].std() > 0.01


def test_corner_several_sets_with_truth(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4000, 3))
    approx = 0.7 * rng.normal(size=(3000, 3)) + 0.4
    ref_copy = ref.copy()
    path = tmp_path / "sub" / "corner.png"
    fig = corner({"reference": ref, "approx": approx}, labels=["a", "b", "c"], truth=[0.0, 0.1, -0.2], path=path)
    assert isinstance(fig, Figure)
    _check_png(path, 20_000)
    assert len(fig.axes) == 9
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6  # lower triangle with diagonal
    np.testing.assert_array_equal(ref, ref_copy)
    # Diagonal histograms are densities: each set's bars integrate to its share inside the limits.
    diag = fig.axes[0]
    for patch in diag.patches:
        verts = patch.get_path().vertices
        xs, ys = verts[:, 0], verts[:, 1]
        area = np.sum(np.diff(xs) * ys[:-1])
        assert 0.95 < area <= 1.0 + 1e-6


def test_corner_single_array_small_set_uses_scatter(tmp_path):
    samples = np.random.default_rng(1).normal(size=(200, 2))
    path = tmp_path / "corner_small.png"
    fig = corner(samples, path=path)
    _check_png(path)
    assert len(fig.axes) == 4
    lower = fig.axes[2]  # row 1, column 0
    offsets = lower.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(offsets), samples[:, [0, 1]])


def test_corner_without_path_writes_nothing(tmp_path):
    fig = corner(np.random.default_rng(2).normal(size=(1000, 1)))
    assert len(fig.axes) == 1
    assert list(tmp_path.iterdir()) == []


def test_corner_rejects_bad_input():
    with pytest.raises(ValueError, match="same dimension"):
        corner({"a": np.zeros((10, 2)), "b": np.zeros((10, 3))})
    with pytest.raises(ValueError, match="labels"):
        corner(np.zeros((10, 2)), labels=["x"])
    with pytest.raises(ValueError, match="truth"):
        corner(np.zeros((10, 2)), truth=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        corner(np.full((10, 2), np.nan))
    # Keys equal as text (one set was dropped), NaN truth and bad limits (matplotlib's or numpy's
    # messages before), bins < 1.
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="must differ as text"):
        corner({1: x, "1": x})
    with pytest.raises(ValueError, match="truth must be finite"):
        corner(x, truth=[0.0, np.nan])
    with pytest.raises(ValueError, match="low < high"):
        corner(x, limits=[(1.0, -1.0), (-1.0, 1.0)])
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        corner(x, bins=0)


def test_figures_are_saved_in_the_format_their_extension_names(tmp_path):
    """A .pdf path got PNG bytes before."""
    x = np.random.default_rng(0).normal(size=(200, 2))
    corner(x, path=tmp_path / "c.pdf")
    corner(x, path=tmp_path / "c.png")
    corner(x, path=tmp_path / "c")
    assert (tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "c").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_curves_from_history_and_dict(tmp_path):
    epochs = np.arange(30)
    history = History(train_loss=jnp.asarray(2.0 * np.exp(-epochs / 8) + 1.0),
                      val_loss=jnp.asarray(2.0 * np.exp(-epochs / 8) + 1.1),
                      best_epoch=29, epochs=30, stopped_early=False, seconds=1.0)
    path = tmp_path / "loss.png"
    fig = loss_curves(history, path)
    _check_png(path)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), np.asarray(history.train_loss))
    np.testing.assert_allclose(lines[1].get_ydata(), np.asarray(history.val_loss))
    fig = loss_curves({"run A": history, "plain": np.linspace(3, 1, 10)}, tmp_path / "loss2.png")
    assert len(fig.axes[0].get_lines()) == 3
    with pytest.raises(ValueError, match="no loss"):
        loss_curves({"empty": np.array([])})


def test_rank_histograms(tmp_path):
    L = 50
    ranks = np.random.default_rng(3).integers(0, L + 1, size=(400, 3))
    path = tmp_path / "ranks.png"
    fig = rank_histograms(ranks, path, num_posterior_samples=L)
    _check_png(path)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    # The step outline of each panel holds the histogram counts, which sum to n.
    for i, ax in enumerate(visible):
        counts = ax.patches[-1].get_path().vertices[:, 1]
        assert counts.max() <= 400
        hist, _ = np.histogram(ranks[:, i], bins=np.unique(np.floor(np.linspace(0, L + 1, 21))) - 0.5)
        assert hist.sum() == 400
        assert set(hist.tolist()) <= set(np.round(counts).astype(int).tolist())
    with pytest.raises(ValueError, match="lie in"):
        rank_histograms(ranks, num_posterior_samples=10)


def test_coverage_curve(tmp_path):
    levels = np.linspace(0, 1, 11)
    path = tmp_path / "coverage.png"
    fig = coverage_curve(levels, {"exact": levels, "overconfident": levels**2}, path, num_pairs=500)
    _check_png(path)
    (ax,) = fig.axes
    data = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    np.testing.assert_allclose(data["overconfident"], levels**2)
    np.testing.assert_allclose(data["calibrated"], [0, 1])
    fig = coverage_curve(levels, np.stack([levels, levels**0.5], axis=1), tmp_path / "cov2.png")
    assert len(fig.axes[0].get_lines()) == 3
    with pytest.raises(ValueError, match="levels"):
        coverage_curve(levels, levels[:5])


def test_coverage_curve_with_exact_reference(tmp_path):
    levels = np.linspace(0, 1, 11)
    fig = coverage_curve(levels, {"w": levels**1.1}, tmp_path / "c.png", exact={"w": levels**1.2})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    exact_lines = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":" and line.get_xdata().size]
    assert len(exact_lines) == 1
    np.testing.assert_allclose(exact_lines[0].get_ydata(), levels**1.2)
    assert exact_lines[0].get_color() == lines["w"].get_color()
    with pytest.raises(ValueError, match="levels"):
        coverage_curve(levels, {"w": levels}, exact={"w": levels[:3]})


def test_plot_settings_are_checked_and_a_lone_curve_needs_no_legend(recwarn):
    ranks = np.random.default_rng(4).integers(0, 21, size=(100, 2))
    # NaN and fractional ranks used to pass (every comparison with NaN is False).
    for bad in (np.where(ranks == 3, np.nan, ranks), ranks + 0.5):
        with pytest.raises(ValueError, match="finite integers"):
            rank_histograms(bad, num_posterior_samples=20)
    for band in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="band must be a probability"):
            rank_histograms(ranks, num_posterior_samples=20, band=band)
        with pytest.raises(ValueError, match="band must be a probability"):
            coverage_curve(np.linspace(0, 1, 5), np.linspace(0, 1, 5), num_pairs=100, band=band)
    for bins in (0, 22, 2.5):
        with pytest.raises(ValueError, match="bins must be an integer from 1"):
            rank_histograms(ranks, num_posterior_samples=20, bins=bins)
    with pytest.raises(ValueError, match="num_posterior_samples"):
        rank_histograms(ranks, num_posterior_samples=0)
    for n in (0, -5, 2.5):
        with pytest.raises(ValueError, match="num_pairs"):
            coverage_curve(np.linspace(0, 1, 5), np.linspace(0, 1, 5), num_pairs=n)
    samples = np.random.default_rng(5).normal(size=(1000, 2))
    for masses in ((0.68, 1.0), (0.0,), ("high",)):
        with pytest.raises(ValueError, match="masses must be a probability"):
            corner(samples, masses=masses)
    # One bin holding every rank, and a single unnamed loss curve: no legend warning.
    rank_histograms(ranks, num_posterior_samples=20, bins=1)
    fig = loss_curves(np.linspace(2, 1, 10))
    assert fig.axes[0].get_legend() is None
    assert not [w for w in recwarn if "legend" in str(w.message).lower()]
