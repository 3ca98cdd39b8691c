"""Figures of a whole training run from its out-of-fold predictions: the precision-recall curve and the confusion
matrix at the chosen threshold, and samples titled with their predicted probability."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

from landslide.plots.samples import sample_panels, show_panel


def pr_curve_figure(labels: np.ndarray, probs: np.ndarray, threshold: float, title: str) -> Figure:
    """Precision against recall of ``probs``, with the point of ``threshold`` marked and the positive share as the
    chance level."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    precision, recall, _ = precision_recall_curve(labels, probs)
    pred = probs >= threshold
    tp = int(np.sum(pred & (labels == 1)))
    at_p = tp / max(int(pred.sum()), 1)
    at_r = tp / max(int(labels.sum()), 1)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot(recall, precision, drawstyle="steps-post",
            label=f"out-of-fold (AP {average_precision_score(labels, probs):.3f})")
    ax.plot([at_r], [at_p], "o", color="crimson", label=f"threshold {threshold:.3f}: P {at_p:.3f}, R {at_r:.3f}")
    ax.axhline(labels.mean(), color="grey", linestyle=":", label=f"positive share {labels.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(labels: np.ndarray, probs: np.ndarray, threshold: float, title: str) -> Figure:
    """The 2 x 2 confusion matrix of ``probs >= threshold``: counts and shares of each true class."""
    labels, pred = np.asarray(labels).astype(int), (np.asarray(probs, dtype=float) >= threshold).astype(int)
    counts = np.array([[np.sum((labels == t) & (pred == p)) for p in (0, 1)] for t in (0, 1)])
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for t in (0, 1):
        for p in (0, 1):
            ax.text(p, t, f"{counts[t, p]}\n{shares[t, p]:.1%}", ha="center", va="center",
                    color="white" if shares[t, p] > 0.6 else "black")
    names = ["no landslide", "landslide"]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set(xlabel=f"predicted (p >= {threshold:.3f})", ylabel="label", title=title)
    fig.tight_layout()
    return fig


def prediction_samples_figure(images: Sequence[np.ndarray], channels: Sequence[str], ids: Sequence[str],
                              labels: Sequence[int], probs: Sequence[float], outcomes: Sequence[str],
                              threshold: float) -> Figure:
    """One column per sample, (c, 64, 64) in physical units: its RGB and first SAR difference (the first two
    panels there are otherwise), titled with its ID, label, predicted probability and outcome at ``threshold``."""
    columns = []
    for image in images:
        panels = sample_panels(image, channels)
        first = next((p for p in panels if p[0] == "RGB"), panels[0] if panels else None)
        diff = next((p for p in panels if p[0].endswith("diff")), None)
        columns.append([p for p in (first, diff) if p is not None] or [("empty", np.zeros((2, 2)), "gray")])
    rows = max((len(c) for c in columns), default=1)
    fig, axes = plt.subplots(rows, max(len(columns), 1), figsize=(2.3 * max(len(columns), 1), 2.5 * rows + 0.8),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for j, (panels, sample_id, label, prob, outcome) in enumerate(zip(columns, ids, labels, probs, outcomes)):
        for i, (name, img, cmap) in enumerate(panels):
            show_panel(axes[i, j], img, cmap)
            axes[i, j].set_title(f"{sample_id}\nlabel {label}, p = {prob:.2f} ({outcome})\n{name}" if i == 0
                                 else name, fontsize=8)
    fig.suptitle(f"out-of-fold predictions at threshold {threshold:.3f}", fontsize=10)
    return fig
