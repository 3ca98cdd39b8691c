"""Data layer: the release reader, preprocessing, the cache, synthetic data and the datamodule."""
