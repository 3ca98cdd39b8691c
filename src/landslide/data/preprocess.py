"""Turn raw release patches into the 13 model channels, and compute per-channel statistics.

Channels (see :mod:`landslide.bands`): the cloud mask, the 4 optical bands and, for each SAR pass, VV/VH after
and before the event. The pre-event SAR bands are rebuilt as ``pre = post - diff``.

Cloud mask rule: a pixel is cloudy when the mean of its red, green and blue values exceeds ``cloud_threshold``
(digital numbers, reflectance x 10000; default 3500 = 35% reflectance, well above bare soil and urban areas).
Normalisation is not applied here: the arrays stay in physical units so that the filter's indices work on
reflectance, and the network normalises with statistics fitted on each fold's training part.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from landslide.bands import CHANNEL_NAMES, UNNORMALISED, raw_index

DEFAULT_CLOUD_THRESHOLD = 3500.0


def cloud_mask(raw: np.ndarray, threshold: float = DEFAULT_CLOUD_THRESHOLD) -> np.ndarray:
    """(n, 64, 64) float32 mask, 1 where the visible bands are brighter than ``threshold`` on average."""
    visible = raw[..., [raw_index("red"), raw_index("green"), raw_index("blue")]].mean(axis=-1)
    return (visible > threshold).astype(np.float32)


def to_channels(raw: np.ndarray, cloud_threshold: float = DEFAULT_CLOUD_THRESHOLD) -> np.ndarray:
    """(n, 64, 64, 12) raw patches -> (n, 13, 64, 64) float32 model channels, in ``CHANNEL_NAMES`` order."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 4 or raw.shape[-1] != 12:
        raise ValueError(f"expected raw patches of shape (n, 64, 64, 12), got {raw.shape}")
    planes: dict[str, np.ndarray] = {"cloud_mask": cloud_mask(raw, cloud_threshold)}
    for name in ("red", "green", "blue", "nir"):
        planes[name] = raw[..., raw_index(name)]
    for orbit in ("desc", "asc"):
        for pol in ("vv", "vh"):
            post = raw[..., raw_index(f"{orbit}_{pol}")]
            diff = raw[..., raw_index(f"{orbit}_diff_{pol}")]
            planes[f"{orbit}_{pol}_post"] = post
            planes[f"{orbit}_{pol}_pre"] = post - diff
    return np.stack([planes[name] for name in CHANNEL_NAMES], axis=1)


def channel_stats(
    images: np.ndarray, channels: tuple[str, ...] | list[str], chunk: int = 512
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of (n, c, h, w) images, streamed in float64 chunks.

    Unnormalised channels (the cloud mask) get mean 0 and std 1.
    """
    if images.shape[1] != len(channels):
        raise ValueError(f"{images.shape[1]} image channels but {len(channels)} channel names")
    total = np.zeros(len(channels))
    total_sq = np.zeros(len(channels))
    count = 0
    for start in range(0, images.shape[0], chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64)
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
        count += block.shape[0] * block.shape[2] * block.shape[3]
    if count == 0:
        raise ValueError("cannot compute statistics of an empty set")
    return _finish_stats(channels, total, total_sq, count)


def resident_channel_stats(gather: Callable[[np.ndarray], torch.Tensor], index: np.ndarray,
                           channels: tuple[str, ...] | list[str], chunk: int = 1024) -> tuple[list[float], list[float]]:
    """:func:`channel_stats` of the rows ``index`` that ``gather(rows)`` returns as (n, c, h, w) tensors, summed in
    float64 where the tensors live (the split's resident copy on the training device): one host copy of 2 x c sums
    at the end instead of the images."""
    total = total_sq = None
    count = 0
    for start in range(0, len(index), chunk):
        block = gather(index[start : start + chunk]).double()
        if block.shape[1] != len(channels):
            raise ValueError(f"{block.shape[1]} image channels but {len(channels)} channel names")
        sums, squares = block.sum(dim=(0, 2, 3)), block.square().sum(dim=(0, 2, 3))
        total = sums if total is None else total + sums
        total_sq = squares if total_sq is None else total_sq + squares
        count += block.shape[0] * block.shape[2] * block.shape[3]
    if total is None:
        raise ValueError("cannot compute statistics of an empty set")
    both = torch.stack([total, total_sq]).cpu().numpy()
    return _finish_stats(channels, both[0], both[1], count)


def _finish_stats(channels: tuple[str, ...] | list[str], total: np.ndarray, total_sq: np.ndarray, count: int
                  ) -> tuple[list[float], list[float]]:
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    means, stds = [], []
    for name, m, s in zip(channels, mean, std):
        unnormalised = name in UNNORMALISED
        means.append(0.0 if unnormalised else float(m))
        stds.append(1.0 if unnormalised else float(max(s, 1e-6)))
    return means, stds
