"""landslide: two-stage landslide detection in bi-temporal Sentinel-1/Sentinel-2 patches."""

__version__ = "0.1.0"
