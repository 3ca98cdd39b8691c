"""Training and comparison figures: a fold's validation F1 per epoch, the approaches of a multirun side by side, and
a table drawn as a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def f1_curve_figure(history: list[dict], title: str) -> Figure:
    """Validation F1 (at 0.5 and at the best threshold) per epoch of one fold."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] + 1 for h in history]
    for key, label in (("val/f1", "F1 at 0.5"), ("val/f1_best", "F1 at best threshold")):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], label=label)
    ax.set(xlabel="epoch", ylabel="validation F1", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def approach_curves_figure(curves: dict[str, np.ndarray]) -> Figure:
    """Validation F1 per epoch (mean over folds) of each approach, by name."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o" if len(curve) < 15 else None, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation F1 (mean over folds, threshold 0.5)")
    ax.set_title("Validation F1 per approach")
    ax.grid(alpha=0.3)
    ax.legend()
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
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
