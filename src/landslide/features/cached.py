"""Hand-crafted features of a cached split, computed once and kept beside its arrays."""

from __future__ import annotations

import numpy as np

from landslide.data.cache import CachedSplit
from landslide.features.handcrafted import FEATURE_NAMES, compute_features
from landslide.files import atomic_output


def split_features(split: CachedSplit) -> np.ndarray:
    """(n, 150) features of a cached split, read from ``features.npy`` in its cache folder when present."""
    path = split.folder / "features.npy"
    if path.is_file():
        feats = np.load(path)
        if feats.shape == (len(split.images), len(FEATURE_NAMES)):
            return feats
    feats = compute_features(split.images)
    with atomic_output(path) as tmp:
        np.save(tmp, feats)
    return feats
