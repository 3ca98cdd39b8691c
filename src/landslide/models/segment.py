"""A small U-Net that segments: a logit per pixel at full resolution, and the patch logit pooled from it.

``pixel_logits`` gives (n, H, W); ``forward`` the patch logit (n,), the maximum over the image of the pixel logits
averaged over ``patch_pool`` x ``patch_pool`` px (a slide must cover a few pixels, not one), so the same network
classifies patches for the pipeline (cross-validation, thresholds, filter, ensembles) and outlines slides for
``map.py mode=segment``. Trained with a pixel loss on slide masks (``model.pixel_weight``, ``experiment=segment``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landslide.models.blocks import ConvUnit


class DoubleConv(nn.Sequential):
    """Two 3x3 convolution units."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [ConvUnit(cin, cout), ConvUnit(cout, cout)]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class SegmentUNet(nn.Module):
    """Encoder of ``widths`` (2x2 max-pool between levels), decoder with bilinear upsampling and skip connections,
    a 1x1 convolution to one logit per pixel. About 230k parameters with the default (16, 32, 48, 64)."""

    def __init__(
        self,
        channels: list[str] | tuple[str, ...],
        widths: Sequence[int] = (16, 32, 48, 64),
        patch_pool: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"widths must name at least two levels, got {widths}")
        if not isinstance(patch_pool, int) or patch_pool < 1 or patch_pool % 2 == 0:
            raise ValueError(f"patch_pool must be an odd number of pixels >= 1, got {patch_pool}")
        self.patch_pool = patch_pool
        self.down = nn.ModuleList()
        cin = len(channels)
        for i, width in enumerate(widths):
            self.down.append(DoubleConv(cin, width, dropout if i == len(widths) - 1 else 0.0))
            cin = width
        self.up = nn.ModuleList(DoubleConv(widths[i + 1] + widths[i], widths[i])
                                for i in reversed(range(len(widths) - 1)))
        self.out = nn.Conv2d(widths[0], 1, 1)

    def pixel_logits(self, x: Tensor) -> Tensor:
        """(n, H, W) logits of a slide at each pixel of normalised ``x`` (n, c, H, W); H and W divisible by
        2 ** (levels - 1)."""
        skips = []
        h = x
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1))
        return self.out(h)[:, 0]

    def patch_logit(self, pixel: Tensor) -> Tensor:
        """(n,) patch logits from (n, H, W) pixel logits: the maximum of their ``patch_pool`` px local means."""
        local = pixel[:, None]
        if self.patch_pool > 1:
            local = F.avg_pool2d(local, self.patch_pool, stride=1, padding=self.patch_pool // 2,
                                 count_include_pad=False)
        return torch.amax(local, dim=(-2, -1))[:, 0]

    def segment(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel logits (n, H, W) and patch logits (n,) in one pass."""
        pixel = self.pixel_logits(x)
        return pixel, self.patch_logit(pixel)

    def forward(self, x: Tensor) -> Tensor:
        return self.segment(x)[1]
