"""The seed solution's multi-modal FPN, layer for layer: full-resolution branches, max-pooled bottom-up blocks,
an FPN with one shared smoothing convolution, and an MLP head (about 740k parameters with all bands)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landslide.bands import branch_channels


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    """A 3x3 convolution (with bias, as the seed had), batch norm and ReLU."""
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SeedBranch(nn.Sequential):
    """conv3x3 16 - BN - ReLU, conv3x3 32 - BN - ReLU at full resolution, then max-pool 2 and Dropout2d."""

    def __init__(self, cin: int, widths: tuple[int, int] = (16, 32), dropout: float = 0.0) -> None:
        super().__init__(*conv_bn_relu(cin, widths[0]), *conv_bn_relu(widths[0], widths[1]), nn.MaxPool2d(2),
                         nn.Dropout2d(dropout))


class SeedBlock(nn.Sequential):
    """A bottom-up block: conv3x3 - BN - ReLU - max-pool 2 - Dropout2d."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__(*conv_bn_relu(cin, cout), nn.MaxPool2d(2), nn.Dropout2d(dropout))


class SeedFPN(nn.Module):
    """Optical branch (cloud mask, R, G, B, NIR) and one SAR branch shared by both passes, concatenated at half
    resolution; bottom-up blocks (64, 128, 256); 1x1 laterals to ``pyramid_channels``; a nearest-upsampling
    top-down path; one shared 3x3 smoothing convolution on each level; global average pooling; Linear -
    ReLU - Dropout - Linear. Only the branches whose channels are present are built. Returns logits (n,)."""

    def __init__(
        self,
        channels: list[str] | tuple[str, ...],
        branch_widths: tuple[int, int] | list[int] = (16, 32),
        block_widths: tuple[int, ...] | list[int] = (64, 128, 256),
        pyramid_channels: int = 128,
        head_units: int = 256,
        dropout: float = 0.0,
        head_dropout: float = 0.25,
    ) -> None:
        super().__init__()
        channels = list(channels)
        branches = branch_channels(channels)
        branch_widths = tuple(branch_widths)
        self.views: list[str] = []
        if "optical" in branches:
            self.optical = SeedBranch(len(branches["optical"]), branch_widths, dropout)
            self.views.append("optical")
        sar_passes = [p for p in ("sar_desc", "sar_asc") if p in branches]
        if sar_passes:
            self.sar = SeedBranch(len(branches[sar_passes[0]]), branch_widths, dropout)
            self.views.extend(sar_passes)
        for view in self.views:
            index = torch.tensor([channels.index(c) for c in branches[view]], dtype=torch.long)
            self.register_buffer(f"{view}_index", index, persistent=False)
        blocks, cin = [], branch_widths[1] * len(self.views)
        for width in block_widths:
            blocks.append(SeedBlock(cin, width, dropout))
            cin = width
        self.blocks = nn.ModuleList(blocks)
        self.laterals = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in block_widths)
        self.smooth = nn.Conv2d(pyramid_channels, pyramid_channels, 3, padding=1)
        self.head = nn.Sequential(
            nn.Linear(pyramid_channels * len(block_widths), head_units), nn.ReLU(inplace=True),
            nn.Dropout(head_dropout), nn.Linear(head_units, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        feats = []
        for view in self.views:
            part = x.index_select(1, getattr(self, f"{view}_index"))
            feats.append(self.optical(part) if view == "optical" else self.sar(part))
        h = torch.cat(feats, 1)
        levels = []
        for block in self.blocks:
            h = block(h)
            levels.append(h)
        top = self.laterals[-1](levels[-1])
        pyramid = [top]
        for lateral, level in zip(reversed(self.laterals[:-1]), reversed(levels[:-1])):
            top = lateral(level) + F.interpolate(top, scale_factor=2, mode="nearest")
            pyramid.insert(0, top)
        pooled = [self.smooth(p).mean(dim=(-2, -1)) for p in pyramid]
        return self.head(torch.cat(pooled, 1)).squeeze(1)
