"""Binary losses on logits: weighted BCE, focal, soft F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightedBCE(nn.Module):
    """Binary cross-entropy with the positive class weighted by ``pos_weight``."""

    def __init__(self, pos_weight: float) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al.), with ``alpha`` weighting the positive class."""

    def __init__(self, gamma: float, alpha: float) -> None:
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        alpha_t = self.alpha * target + (1 - self.alpha) * (1 - target)
        return (alpha_t * (1 - p_t) ** self.gamma * ce).mean()


class SoftF1Loss(nn.Module):
    """1 - F1 computed on probabilities (differentiable), over the batch."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p = torch.sigmoid(logits)
        tp = (p * target).sum()
        return 1 - 2 * tp / (p.sum() + target.sum()).clamp_min(1e-6)


def build_loss(name: str, *, pos_weight: float, focal_gamma: float, focal_alpha: float) -> nn.Module:
    """The loss ``name`` (``model.loss``) with the model config's settings: ``pos_weight`` for bce, ``focal_gamma``
    and ``focal_alpha`` for focal."""
    if name == "bce":
        return WeightedBCE(pos_weight)
    if name == "focal":
        return FocalLoss(focal_gamma, focal_alpha)
    if name == "soft_f1":
        return SoftF1Loss()
    raise ValueError(f"unknown loss {name!r}; choose bce, focal or soft_f1")


def pixel_loss(logits: Tensor, masks: Tensor, has_mask: Tensor | None = None) -> Tensor:
    """Per-pixel BCE plus soft Dice (over the batch's pixels, smoothed by 1) of (n, H, W) pixel logits against 0/1
    ``masks``, on the images ``has_mask`` marks (all by default); 0 (with a graph) when none is marked."""
    if has_mask is not None:
        logits, masks = logits[has_mask], masks[has_mask]
    if logits.numel() == 0:
        return logits.sum() * 0.0
    target = masks.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice
