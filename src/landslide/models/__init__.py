"""Plain ``nn.Module`` networks. They take (n, c, 64, 64) normalised tensors and know nothing about files."""

from landslide.models.fpn import MultiModalCNN, MultiModalFPN
from landslide.models.seed import SeedFPN

__all__ = ["MultiModalCNN", "MultiModalFPN", "SeedFPN"]
