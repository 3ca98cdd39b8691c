"""Hand-crafted per-image features for the stage-1 negative filter."""

from landslide.features.handcrafted import FEATURE_NAMES, MAP_NAMES, compute_features, index_maps

__all__ = ["FEATURE_NAMES", "MAP_NAMES", "compute_features", "index_maps"]
