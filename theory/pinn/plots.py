"""Plots of a PINN result: solution, reference, error field and loss curves (matplotlib)."""

from __future__ import annotations

import numpy as np


def plot_result(path: str, axes, pred: np.ndarray, ref: np.ndarray, history, names=("x", "t"),
                title: str = "") -> None:
    """Write a four-panel figure: prediction, reference, |error| on the grid, loss/error curves.

    Arguments:
        path: output file (png, pdf, ...).
        axes: the two 1-D grid axes.
        pred, ref: prediction and reference on the grid, shape (len(axes[0]), len(axes[1])).
        history: the solver's `History`.
        names: coordinate names.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(20, 4.2))
    extent = (axes[1][0], axes[1][-1], axes[0][0], axes[0][-1])
    vmin, vmax = float(np.min(ref)), float(np.max(ref))
    for a, field, label in ((ax[0], pred, "PINN"), (ax[1], ref, "reference")):
        im = a.imshow(field, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=vmin, vmax=vmax)
        a.set_title(label)
        a.set_xlabel(names[1])
        a.set_ylabel(names[0])
        fig.colorbar(im, ax=a)
    im = ax[2].imshow(np.abs(pred - ref), origin="lower", aspect="auto", extent=extent, cmap="magma")
    ax[2].set_title("|PINN - reference|")
    ax[2].set_xlabel(names[1])
    fig.colorbar(im, ax=ax[2])
    steps = np.asarray(history.step)
    for i, name in enumerate(history.term_names):
        ax[3].semilogy(steps, np.asarray(history.terms)[:, i], label=f"loss {name}")
    ax[3].semilogy(steps, history.loss, "k", lw=1.5, label="weighted total")
    if np.any(np.isfinite(history.error)):
        ax[3].semilogy(steps, history.error, "r--", label="rel. L2 error")
    lb = steps[np.asarray(history.phase) == 1]
    if lb.size:
        ax[3].axvline(lb[0], color="grey", ls=":", label="L-BFGS starts")
    ax[3].set_xlabel("step")
    ax[3].legend(fontsize=7)
    ax[3].set_title("training")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
