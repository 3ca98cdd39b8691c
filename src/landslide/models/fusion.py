"""Early fusion at full resolution: every channel, and change channels computed from them, meet in the first
convolution, pixel by pixel, so that a small optical scar and a SAR change at the same place are seen together."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from landslide.bands import change_pairs, optical_index_pairs
from landslide.models.plain import conv_stack


class DerivedChannels(nn.Module):
    """Appends channels computed from the inputs by name (:mod:`landslide.bands`): the backscatter change (post -
    pre) of every SAR pass and polarisation present, and the optical differences of :data:`~landslide.bands.
    OPTICAL_INDICES` (NIR - red: a linear stand-in for NDVI, since the network sees standardised bands, not
    reflectances). The optical bands are post-event only, so they give an index, not a change.

    ``centre``: subtract each image's spatial mean from the derived channels, so that a calibration difference
    between the pre- and post-event passes (a change over the whole patch) or a gain of the optical bands does not
    shift them."""

    def __init__(self, channels: Sequence[str], change: bool, optical_index: bool, centre: bool) -> None:
        super().__init__()
        channels = list(channels)
        pairs = (change_pairs(channels) if change else []) + (optical_index_pairs(channels) if optical_index else [])
        self.register_buffer("first", torch.tensor([channels.index(a) for a, _ in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("second", torch.tensor([channels.index(b) for _, b in pairs], dtype=torch.long),
                             persistent=False)
        self.names = [f"{a}-{b}" for a, b in pairs]
        self.centre = centre
        self.out_channels = len(channels) + len(pairs)

    def forward(self, x: Tensor) -> Tensor:
        if not self.names:
            return x
        derived = x.index_select(1, self.first) - x.index_select(1, self.second)
        if self.centre:
            derived = derived - derived.mean(dim=(-2, -1), keepdim=True)
        return torch.cat([x, derived], 1)


class FusionCNN(nn.Module):
    """The channels and their derived change and index channels (:class:`DerivedChannels`) into one stack of 3x3
    convolutions with batch norm at full resolution (``stages``: widths; a 2x2 max-pool after each stage), global
    max and average pooling side by side (``pooling``: ``maxavg``, ``max`` or ``avg``; max keeps a few pixels of
    evidence from being averaged away), and a linear head (an MLP with ``head_units`` > 0). Returns logits (n,)."""

    def __init__(
        self,
        channels: list[str] | tuple[str, ...],
        stages: Sequence[Sequence[int]] = ((32, 32), (64, 64), (96,)),
        change: bool = True,
        optical_index: bool = True,
        centre: bool = True,
        pooling: str = "maxavg",
        head_units: int = 0,
        dropout: float = 0.0,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in ("maxavg", "max", "avg"):
            raise ValueError(f"pooling must be maxavg, max or avg, got {pooling!r}")
        self.derived = DerivedChannels(channels, change, optical_index, centre)
        self.features = conv_stack(self.derived.out_channels, stages, batch_norm=True, dropout=dropout)
        self.pooling = pooling
        width = list(stages)[-1][-1] * (2 if pooling == "maxavg" else 1)
        if head_units > 0:
            self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(width, head_units), nn.ReLU(inplace=True),
                                      nn.Dropout(head_dropout), nn.Linear(head_units, 1))
        else:
            self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(width, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(self.derived(x))
        pooled = []
        if self.pooling in ("maxavg", "max"):
            pooled.append(torch.amax(h, dim=(-2, -1)))
        if self.pooling in ("maxavg", "avg"):
            pooled.append(h.mean(dim=(-2, -1)))
        return self.head(torch.cat(pooled, 1)).squeeze(1)
