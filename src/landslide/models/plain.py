"""A plain CNN: 3x3 convolutions at full resolution, max-pooling, global max pooling, one linear layer.

The accuracy benchmark's plain baseline is this network trained by a short fixed loop; ``model=plain_cnn`` trains it
through the project's pipeline instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def conv_stack(cin: int, stages: Sequence[Sequence[int]], batch_norm: bool, dropout: float = 0.0) -> nn.Sequential:
    """3x3 convolutions (padding 1), ReLU and optional batch norm; a 2x2 max-pool (and Dropout2d) after each stage."""
    layers: list[nn.Module] = []
    for stage in stages:
        for width in stage:
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(width)] if batch_norm else []
            layers += [nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class PlainCNN(nn.Module):
    """Every channel into one stack of 3x3 convolutions (``stages``: widths, a max-pool after each stage), global max
    pooling and one linear layer: about 68k parameters with the default 32-32 / 64-64. Returns logits (n,)."""

    def __init__(
        self,
        channels: list[str] | tuple[str, ...],
        stages: Sequence[Sequence[int]] = ((32, 32), (64, 64)),
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.features = conv_stack(len(channels), stages, batch_norm)
        self.head = nn.Linear(list(stages)[-1][-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.amax(self.features(x), dim=(-2, -1))).squeeze(1)
