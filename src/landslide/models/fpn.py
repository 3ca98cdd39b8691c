"""The multi-modal FPN and its "no FPN" ablation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landslide.models.blocks import ConvUnit, Head, MultiModalEncoder


class MultiModalFPN(nn.Module):
    """Encoder, lateral 1x1 convolutions, a top-down path with nearest upsampling, 3x3 smoothing,
    global average pooling of the three pyramid levels and an MLP head. Returns logits of shape (n,)."""

    def __init__(
        self,
        channels: list[str] | tuple[str, ...],
        branch_width: int = 32,
        fusion_channels: int = 128,
        stage_widths: tuple[int, ...] | list[int] = (64, 96, 128),
        pyramid_channels: int = 64,
        head_units: int = 256,
        dropout: float = 0.0,
        head_dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.encoder = MultiModalEncoder(channels, branch_width, fusion_channels, stage_widths, dropout)
        self.laterals = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in self.encoder.out_channels)
        self.smooth = nn.ModuleList(ConvUnit(pyramid_channels, pyramid_channels) for _ in self.encoder.out_channels)
        self.head = Head(pyramid_channels * len(self.laterals), head_units, head_dropout)

    def forward(self, x: Tensor) -> Tensor:
        levels = self.encoder(x)
        top = self.laterals[-1](levels[-1])
        pyramid = [top]
        for lateral, level in zip(reversed(self.laterals[:-1]), reversed(levels[:-1])):
            top = lateral(level) + F.interpolate(top, size=level.shape[-2:], mode="nearest")
            pyramid.insert(0, top)
        pooled = [smooth(p).mean(dim=(-2, -1)) for smooth, p in zip(self.smooth, pyramid)]
        return self.head(torch.cat(pooled, 1)).squeeze(1)


class MultiModalCNN(nn.Module):
    """The same branches and bottom-up path, pooling the top level only (the "no FPN" ablation)."""

    def __init__(
        self,
        channels: list[str] | tuple[str, ...],
        branch_width: int = 32,
        fusion_channels: int = 128,
        stage_widths: tuple[int, ...] | list[int] = (64, 96, 128),
        head_units: int = 256,
        dropout: float = 0.0,
        head_dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.encoder = MultiModalEncoder(channels, branch_width, fusion_channels, stage_widths, dropout)
        self.head = Head(self.encoder.out_channels[-1], head_units, head_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)[-1].mean(dim=(-2, -1))).squeeze(1)
