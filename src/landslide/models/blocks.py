"""Building blocks: convolution units, the modality branches and the shared bottom-up encoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landslide.bands import branch_channels


class ConvUnit(nn.Sequential):
    """Convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class Branch(nn.Sequential):
    """A modality branch: a strided stem to half resolution and one more convolution."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__(ConvUnit(cin, width, stride=2), ConvUnit(width, width))


class MultiModalEncoder(nn.Module):
    """Optical branch + one SAR branch shared by both passes, fused, then a bottom-up path of three stages.

    Only the branches whose channels are present are built, so band-set ablations need no code.
    ``forward`` returns the three stage outputs (1/4, 1/8 and 1/16 of the input size).
    """

    def __init__(
        self,
        channels: list[str] | tuple[str, ...],
        branch_width: int = 32,
        fusion_channels: int = 128,
        stage_widths: tuple[int, ...] | list[int] = (64, 96, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = list(channels)
        self.channels = channels
        branches = branch_channels(channels)
        self.views: list[str] = []
        if "optical" in branches:
            self.optical = Branch(len(branches["optical"]), branch_width)
            self.register_buffer("optical_index", self._index(channels, branches["optical"]), persistent=False)
            self.views.append("optical")
        sar_passes = [p for p in ("sar_desc", "sar_asc") if p in branches]
        if sar_passes:
            self.sar = Branch(len(branches[sar_passes[0]]), branch_width)
            for p in sar_passes:
                self.register_buffer(f"{p}_index", self._index(channels, branches[p]), persistent=False)
            self.views.extend(sar_passes)
        self.fuse = ConvUnit(branch_width * len(self.views), fusion_channels, kernel=1)
        stages, cin = [], fusion_channels
        for width in stage_widths:
            stages.append(nn.Sequential(ConvUnit(cin, width, stride=2), ConvUnit(width, width), nn.Dropout2d(dropout)))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(stage_widths)

    @staticmethod
    def _index(channels: list[str], wanted: tuple[str, ...]) -> Tensor:
        return torch.tensor([channels.index(c) for c in wanted], dtype=torch.long)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for view in self.views:
            part = x.index_select(1, getattr(self, f"{view}_index"))
            feats.append(self.optical(part) if view == "optical" else self.sar(part))
        h = self.fuse(torch.cat(feats, 1))
        levels = []
        for stage in self.stages:
            h = stage(h)
            levels.append(h)
        return levels


class Head(nn.Sequential):
    """A small MLP giving one logit."""

    def __init__(self, cin: int, hidden: int = 256, dropout: float = 0.25) -> None:
        super().__init__(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 1))
