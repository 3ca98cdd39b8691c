"""Hand-crafted features of a cached release, computed once and cached beside its arrays."""

from __future__ import annotations

import numpy as np

from landslide.data.cache import CachedRelease
from landslide.features import FEATURE_NAMES, compute_features


def release_features(release: CachedRelease) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) feature matrices, read from ``features_{split}.npy`` in the cache folder when present."""
    out = []
    for split in ("train", "test"):
        path = release.folder / f"features_{split}.npy"
        images = getattr(release, split).images
        if path.is_file():
            feats = np.load(path)
            if feats.shape == (len(images), len(FEATURE_NAMES)):
                out.append(feats)
                continue
        feats = compute_features(images)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        tmp.rename(path)
        out.append(feats)
    return out[0], out[1]
