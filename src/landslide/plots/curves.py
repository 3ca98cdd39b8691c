"""Training and comparison figures: a fold's validation F1 per epoch, curves per epoch with their spread over folds,
the approaches of a multirun side by side, and a table drawn as a figure. Axes stay readable for runs of one or a
few epochs: whole epochs on the x axis, markers on short curves, an F1 axis that ends at 1."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from landslide.files import atomic_output

#: curves with fewer points than this are drawn with markers (a one-epoch curve is a point)
MARKERS_BELOW = 15


def epoch_axis(ax: Axes, epochs: int) -> None:
    """Whole epochs (counted from 1) on the x axis, with half an epoch of margin on short runs."""
    if epochs < MARKERS_BELOW:
        ax.set_xticks(range(1, max(epochs, 1) + 1))
        ax.set_xlim(0.5, max(epochs, 1) + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def f1_axis(ax: Axes, values: Sequence[float] | np.ndarray) -> None:
    """An F1 axis from a round value at least 0.1 below the lowest point (0 at most) up to just above 1, so that
    a few close points do not fill the axis (matplotlib would spread 0.99 and 1.0 over the whole height)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    low = float(finite.min()) if finite.size else 0.0
    bottom = max(0.0, math.floor((min(low, 1.0) - 0.1) * 20) / 20)
    ax.set_ylim(bottom, 1.01)


def _marker(n: int) -> str | None:
    return "o" if n < MARKERS_BELOW else None


def f1_curve_figure(history: list[dict], title: str) -> Figure:
    """Validation F1 (at 0.5 and at the best threshold) per epoch of one fold."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] + 1 for h in history]
    for key, label in (("val/f1", "F1 at 0.5"), ("val/f1_best", "F1 at best threshold")):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], label=label, marker=_marker(len(epochs)))
    ax.set(ylabel="validation F1", title=title, ylim=(0, 1.02))
    epoch_axis(ax, max(epochs, default=0))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def mean_curves_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], ylabel: str, title: str,
                       f1: bool = False) -> Figure:
    """Curves per epoch, each a mean over folds with a band of one standard deviation: ``{label: (mean, std)}``.
    ``f1``: an F1 axis (see :func:`f1_axis`); else from 0 up."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    longest = max((len(mean) for mean, _ in curves.values()), default=0)
    for label, (mean, std) in curves.items():
        x = np.arange(1, len(mean) + 1)
        line = ax.plot(x, mean, label=label, marker=_marker(len(mean)))[0]
        if len(mean) > 1:
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        else:
            ax.errorbar(x, mean, yerr=std, color=line.get_color(), capsize=4, linestyle="none")
    if f1:
        f1_axis(ax, np.concatenate([m - s for m, s in curves.values()]) if curves else [])
    else:
        ax.set_ylim(bottom=0)
    epoch_axis(ax, longest)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    fig.tight_layout()
    return fig


def approach_curves_figure(curves: dict[str, np.ndarray]) -> Figure:
    """Validation F1 per epoch (mean over folds) of each approach, by name."""
    many = len(curves) > 8
    fig, ax = plt.subplots(figsize=(7, 4.5 + (0.22 * len(curves) if many else 0)))
    longest = max((len(c) for c in curves.values()), default=0)
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker=_marker(len(curve)), label=name)
    f1_axis(ax, np.concatenate(list(curves.values())) if curves else [])
    epoch_axis(ax, longest)
    ax.set_ylabel("validation F1 (mean over folds, threshold 0.5)")
    ax.set_title("Validation F1 per approach" + (" (one epoch)" if longest == 1 else ""))
    ax.grid(alpha=0.3)
    if many:  # long labels (trials named by their parameters) below the axes
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=7, ncol=1, frameon=False)
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def table_figure(frame: pd.DataFrame) -> Figure:
    """A table of results as a figure (floats with 4 decimals)."""
    fig, ax = plt.subplots(figsize=(min(2 + 1.3 * len(frame.columns), 16), 0.6 + 0.4 * len(frame)))
    ax.axis("off")
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    ax.table(cellText=cells, colLabels=list(frame.columns), loc="center").auto_set_font_size(True)
    fig.tight_layout()
    return fig


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> None:
    """Write ``figure`` as a PNG at ``path`` and close it."""
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(figure)
