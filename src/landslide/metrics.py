"""Threshold helpers shared by training, cross-validation and inference."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor


def f1_optimal_threshold(probs: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> tuple[float, float]:
    """The threshold maximising F1 over all distinct predicted values, and that F1 (vectorised, sort-based).

    A sample is positive when ``prob >= threshold``. Returns (0.5, 0.0) when there is no positive.
    """
    p = torch.as_tensor(probs, dtype=torch.float64).flatten()
    t = torch.as_tensor(targets, dtype=torch.float64).flatten()
    n_pos = t.sum()
    if n_pos == 0 or p.numel() == 0:
        return 0.5, 0.0
    order = torch.argsort(p, descending=True)
    p, t = p[order], t[order]
    tp = torch.cumsum(t, 0)
    predicted = torch.arange(1, p.numel() + 1, dtype=torch.float64, device=p.device)
    # only the last position of each run of equal values is a valid cut
    last = torch.ones_like(p, dtype=torch.bool)
    last[:-1] = p[1:] != p[:-1]
    f1 = torch.where(last, 2 * tp / (predicted + n_pos), torch.zeros_like(tp))
    best = int(torch.argmax(f1))
    return float(p[best]), float(f1[best])


def f1_at(probs: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    pred = np.asarray(probs) >= threshold
    t = np.asarray(targets).astype(bool)
    tp = np.sum(pred & t)
    denom = pred.sum() + t.sum()
    return float(2 * tp / denom) if denom else 0.0


def calibrate(probs: Tensor, threshold: float) -> Tensor:
    """Monotone piecewise-linear map sending ``threshold`` to 0.5 (and 0 to 0, 1 to 1)."""
    t = min(max(float(threshold), 1e-6), 1 - 1e-6)
    return torch.where(probs < t, probs * (0.5 / t), 0.5 + (probs - t) * (0.5 / (1 - t)))



def roc_auc(probs: np.ndarray, targets: np.ndarray) -> float | None:
    """Area under the ROC curve (scikit-learn's), or None when one class is missing."""
    t = np.asarray(targets).astype(int).ravel()
    if len(np.unique(t)) < 2:
        return None
    return float(roc_auc_score(t, np.asarray(probs, np.float64).ravel()))
