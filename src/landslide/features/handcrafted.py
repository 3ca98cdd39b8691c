"""150 named features: 6 statistics of 25 maps per image, vectorised over batches with torch.

The 25 maps: the 13 model channels; the 4 SAR changes (post - pre); the VV-VH polarisation difference (dB, post)
of each pass; and NDVI, SAVI, GNDVI, EVI, NDWI and NGRDI computed pixel by pixel on reflectance
(digital numbers / 10000) with guarded denominators. Statistics: mean, std, min, max, 10th and 90th percentile.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from landslide.bands import CHANNEL_NAMES

REFLECTANCE_SCALE = 10000.0
EPS = 1e-6
SAR_CHANGES = ("desc_diff_vv", "desc_diff_vh", "asc_diff_vv", "asc_diff_vh")
POLARISATION = ("desc_pol_diff", "asc_pol_diff")
INDICES = ("ndvi", "savi", "gndvi", "evi", "ndwi", "ngrdi")
MAP_NAMES: tuple[str, ...] = CHANNEL_NAMES + SAR_CHANGES + POLARISATION + INDICES
STATISTICS = ("mean", "std", "min", "max", "q10", "q90")
FEATURE_NAMES: tuple[str, ...] = tuple(f"{m}_{s}" for m in MAP_NAMES for s in STATISTICS)


def safe_ratio(num: Tensor, den: Tensor, bound: float = 1.0) -> Tensor:
    """``num / den`` where ``|den| > EPS``, else 0; clipped to ``[-bound, bound]`` (indices are bounded)."""
    ok = den.abs() > EPS
    out = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
    return out.clamp(-bound, bound)


def index_maps(red: Tensor, green: Tensor, blue: Tensor, nir: Tensor) -> dict[str, Tensor]:
    """Vegetation and water indices from reflectances in [0, 1] (any shape)."""
    return {
        "ndvi": safe_ratio(nir - red, nir + red),
        "savi": safe_ratio(1.5 * (nir - red), nir + red + 0.5, bound=1.5),
        "gndvi": safe_ratio(nir - green, nir + green),
        "evi": safe_ratio(2.5 * (nir - red), nir + 6 * red - 7.5 * blue + 1, bound=2.5),
        "ndwi": safe_ratio(green - nir, green + nir),
        "ngrdi": safe_ratio(green - red, green + red),
    }


def feature_maps(images: Tensor) -> Tensor:
    """(n, 13, h, w) model channels in physical units -> (n, 25, h, w) maps in ``MAP_NAMES`` order."""
    if images.shape[1] != len(CHANNEL_NAMES):
        raise ValueError(f"features need all {len(CHANNEL_NAMES)} channels, got {images.shape[1]}")
    ch = {name: images[:, i] for i, name in enumerate(CHANNEL_NAMES)}
    maps = [images]
    for orbit in ("desc", "asc"):
        for pol in ("vv", "vh"):
            maps.append((ch[f"{orbit}_{pol}_post"] - ch[f"{orbit}_{pol}_pre"]).unsqueeze(1))
    for orbit in ("desc", "asc"):
        maps.append((ch[f"{orbit}_vv_post"] - ch[f"{orbit}_vh_post"]).unsqueeze(1))
    refl = {b: ch[b].clamp_min(0) / REFLECTANCE_SCALE for b in ("red", "green", "blue", "nir")}
    idx = index_maps(refl["red"], refl["green"], refl["blue"], refl["nir"])
    maps.extend(idx[name].unsqueeze(1) for name in INDICES)
    return torch.cat(maps, 1)


def _percentiles(flat: np.ndarray, ranks: list[int], workers: int) -> np.ndarray:
    """Order statistics at ``ranks`` along the last axis, by introselect in ``workers`` threads."""
    rows = flat.reshape(-1, flat.shape[-1])
    chunks = np.array_split(rows, max(1, min(workers, len(rows))))
    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(lambda c: np.partition(c, ranks, axis=-1)[:, ranks], chunks))
    return np.concatenate(parts).reshape(*flat.shape[:-1], len(ranks))


def _statistics(maps: Tensor, workers: int) -> Tensor:
    flat = maps.flatten(2)  # (n, m, p)
    p = flat.shape[-1]
    ranks = [round(0.1 * (p - 1)), round(0.9 * (p - 1))]
    q = torch.from_numpy(_percentiles(flat.numpy(), ranks, workers))
    std, mean = torch.std_mean(flat, dim=-1, correction=0)
    stats = torch.stack([mean, std, flat.amin(-1), flat.amax(-1), q[..., 0], q[..., 1]], -1)  # (n, m, 6)
    return stats.flatten(1)


def compute_features(images: np.ndarray | Tensor, batch_size: int = 512, workers: int | None = None) -> np.ndarray:
    """(n, 13, h, w) images -> (n, 150) float32 features in ``FEATURE_NAMES`` order."""
    workers = workers or torch.get_num_threads()
    n = images.shape[0]
    out = np.empty((n, len(FEATURE_NAMES)), np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            block = torch.from_numpy(np.array(images[start : start + batch_size], dtype=np.float32))
            out[start : start + block.shape[0]] = _statistics(feature_maps(block), workers).numpy()
    return out
