"""Threshold helpers shared by training, cross-validation and inference."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor
from torchmetrics import Metric


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


VALIDATION_SCORES = ("f1", "precision", "recall", "auroc", "ap", "f1_best", "best_threshold")
"""What :func:`binary_scores` returns, as ``val/<name>`` in the loggers."""


def binary_scores(prob: Tensor, target: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
    """The validation scores of K sets of predictions at once, on their device, with no host synchronisation and no
    argument checks: ``prob`` and ``target`` (K, n) (probabilities in [0, 1], 0/1 labels), ``valid`` (K, n) marking
    the real entries of each row (padding is left out). Returns name -> (K,) float32 tensors:

    ``f1``, ``precision``, ``recall`` at ``prob > 0.5``; ``auroc`` and ``ap`` (average precision) over the distinct
    predicted values; ``f1_best`` the highest F1 over those thresholds and ``best_threshold`` the lowest threshold
    that reaches it. The same values as torchmetrics' binary metrics (and precision-recall curve) on each row's
    valid entries, to float32 rounding; a row without positives or negatives scores 0 where they are undefined."""
    prob = prob.float()
    valid = torch.ones_like(prob, dtype=torch.bool) if valid is None else valid.bool()
    y = (target > 0.5) & valid
    neg = ~(target > 0.5) & valid
    positives, negatives = y.sum(1).float(), neg.sum(1).float()

    def ratio(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(b > 0, a / b.clamp_min(1e-12), torch.zeros_like(a))

    pred = (prob > 0.5) & valid
    tp, fp = (pred & y).sum(1).float(), (pred & neg).sum(1).float()
    fn = positives - tp
    scores = {"precision": ratio(tp, tp + fp), "recall": ratio(tp, positives), "f1": ratio(2 * tp, 2 * tp + fp + fn)}

    # curves: each row sorted by probability, padding last; a threshold is the last position of a run of equal values
    key = torch.where(valid, prob, torch.full_like(prob, -1.0))
    key, order = torch.sort(key, dim=1, descending=True, stable=True)
    ys, negs, vs = y.gather(1, order).float(), neg.gather(1, order).float(), valid.gather(1, order)
    tps, fps = ys.cumsum(1), negs.cumsum(1)
    cut = vs.clone()
    cut[:, :-1] &= key[:, 1:] != key[:, :-1]
    precision = ratio(tps, tps + fps)
    recall = ratio(tps, positives[:, None].expand_as(tps))
    f1 = torch.where(cut, 2 * precision * recall / (precision + recall).clamp_min(1e-12), torch.full_like(tps, -1.0))
    # the lowest threshold of the best F1 (as an argmax over thresholds in increasing order picks it)
    last = f1.shape[1] - 1 - torch.argmax(f1.flip(1), dim=1)
    scores["f1_best"] = f1.gather(1, last[:, None]).squeeze(1).clamp_min(0.0)
    scores["best_threshold"] = torch.where(cut.any(1), key.gather(1, last[:, None]).squeeze(1),
                                           torch.full_like(positives, 0.5))

    def held(values: Tensor) -> Tensor:
        """The value at the last threshold so far (non-decreasing values)."""
        return torch.cummax(torch.where(cut, values, torch.zeros_like(values)), dim=1).values

    def previous(values: Tensor) -> Tensor:
        return torch.nn.functional.pad(values, (1, 0))[:, :-1]

    tpr, fpr = held(recall), held(ratio(fps, negatives[:, None].expand_as(fps)))
    auroc = ((fpr - previous(fpr)) * (tpr + previous(tpr)) / 2).sum(1)
    ap = torch.where(cut, (tpr - previous(tpr)) * precision, torch.zeros_like(tpr)).sum(1)
    defined = (positives > 0) & (negatives > 0)
    scores["auroc"] = torch.where(defined, auroc, torch.zeros_like(auroc))
    scores["ap"] = torch.where(positives > 0, ap, torch.zeros_like(ap))
    return {name: scores[name] for name in VALIDATION_SCORES}


class ValidationOutputs(Metric):
    """A validation epoch's logits, probabilities and targets, kept on the device (no checks, no host copy per
    batch) and gathered across processes (DDP, uneven parts included) by torchmetrics when computed. ``compute``
    returns the three concatenated tensors."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("logits", "prob", "target"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, prob: Tensor, target: Tensor) -> None:
        self.logits.append(logits.detach().float().flatten())
        self.prob.append(prob.detach().float().flatten())
        self.target.append(target.detach().float().flatten())

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        def cat(states: list[Tensor] | Tensor) -> Tensor:
            return torch.cat(states) if isinstance(states, list) else states

        return cat(self.logits), cat(self.prob), cat(self.target)


def roc_auc(probs: np.ndarray, targets: np.ndarray) -> float | None:
    """Area under the ROC curve (scikit-learn's), or None when one class is missing."""
    t = np.asarray(targets).astype(int).ravel()
    if len(np.unique(t)) < 2:
        return None
    return float(roc_auc_score(t, np.asarray(probs, np.float64).ravel()))
