"""Networks of a user's own package, for the registry tests: one registered with the decorator, one that a config
lists in ``model.trusted_networks``, and one that nothing trusts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landslide.models import register_network


class _Tiny(nn.Module):
    def __init__(self, channels: list[str], width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(len(channels), width, 3, padding=1)
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.conv(x)).amax(dim=(-2, -1))).squeeze(1)


@register_network
class DecoratedNet(_Tiny):
    """Registered when this module is imported."""


class ListedNet(_Tiny):
    """Trusted only where a config names it."""


class UntrustedNet(_Tiny):
    """Never registered."""
