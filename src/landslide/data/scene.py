"""A Sentinel-1/2 scene on disk: a multi-band GeoTIFF checked, mapped to the 12 raw bands and read in row strips.

The scene holds the release's 12 bands in its order (see :mod:`landslide.bands`) and units (S2 reflectance x 10000,
S1 dB), or any bands that ``band_map`` (raw band name -> 1-based band index in the file) points at. A pixel is
valid where every mapped band has data (GDAL's masks: the nodata value, an alpha band or an internal mask) and is
finite. Only the rows asked for are read: :class:`SceneReader` counts them, and the most it held at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landslide.bands import PATCH_SIZE, RAW_NAMES
from landslide.errors import SceneError, first_line
from landslide.geo import import_rasterio

#: metres per degree of latitude (and of longitude at the equator), for scenes in geographic coordinates
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class SceneInfo:
    """What a map needs to know of its scene."""

    path: Path
    width: int
    height: int
    crs: Any
    transform: Any
    pixel_size_m: tuple[float, float]  # (x, y)

    @property
    def pixel_area_m2(self) -> float:
        return self.pixel_size_m[0] * self.pixel_size_m[1]


def pixel_size_m(crs: Any, transform: Any, width: int, height: int) -> tuple[float, float]:
    """Pixel width and height in metres (geographic CRSs at the scene's central latitude)."""
    res_x = math.hypot(transform.a, transform.d)
    res_y = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        lat = transform.d * width / 2 + transform.e * height / 2 + transform.f
        return res_x * METRES_PER_DEGREE * math.cos(math.radians(lat)), res_y * METRES_PER_DEGREE
    factor = crs.linear_units_factor[1]
    return res_x * factor, res_y * factor


def band_indexes(path: Path, count: int, band_map: dict[str, int] | None) -> list[int]:
    """1-based file band of each raw band, in release order."""
    if band_map is None:
        if count != len(RAW_NAMES):
            raise SceneError(
                f"{path}: {count} bands, expected {len(RAW_NAMES)} in the release's order ({', '.join(RAW_NAMES)}) "
                "or a band mapping (bands={red: 1, ...})"
            )
        return list(range(1, count + 1))
    unknown = sorted(set(band_map) - set(RAW_NAMES))
    missing = [name for name in RAW_NAMES if name not in band_map]
    if unknown or missing:
        raise SceneError(f"{path}: the band mapping names unknown bands {unknown} and lacks {missing}")
    indexes = [int(band_map[name]) for name in RAW_NAMES]
    bad = [i for i in indexes if not 1 <= i <= count]
    if bad:
        raise SceneError(f"{path}: the band mapping points at bands {bad}, but the file has bands 1..{count}")
    return indexes


class SceneReader:
    """Open and check a scene; read rows ``[top, bottom)`` as (rows, width, 12) float32 raw bands and a validity
    mask. Raises :class:`SceneError` for a file that is not a raster, has the wrong bands, no CRS, a pixel size
    further than ``tolerance`` (relative) from ``resolution_m``, or is smaller than one window."""

    def __init__(self, path: Path | str, band_map: dict[str, int] | None = None, resolution_m: float = 10.0,
                 tolerance: float = 0.2) -> None:
        rasterio = import_rasterio()
        self.path = Path(path)
        try:
            self.dataset = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as err:
            raise SceneError(f"{self.path}: cannot be read as a raster ({err})") from None
        ds = self.dataset
        try:
            self.indexes = band_indexes(self.path, ds.count, None if band_map is None else dict(band_map))
            if ds.crs is None:
                raise SceneError(f"{self.path}: no CRS; a map needs a georeferenced scene")
            size = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
            if max(abs(s - resolution_m) for s in size) > tolerance * resolution_m:
                raise SceneError(
                    f"{self.path}: pixels of {size[0]:.1f} x {size[1]:.1f} m, expected about {resolution_m:g} m "
                    f"(within {tolerance:.0%}); resample the scene to {resolution_m:g} m first"
                )
            if ds.width < PATCH_SIZE or ds.height < PATCH_SIZE:
                raise SceneError(f"{self.path}: {ds.width} x {ds.height} pixels, smaller than one "
                                 f"{PATCH_SIZE} x {PATCH_SIZE} window")
        except SceneError:
            ds.close()
            raise
        self.info = SceneInfo(self.path, ds.width, ds.height, ds.crs, ds.transform, size)
        self.rows_read = 0
        self.max_rows_held = 0

    def read_rows(self, top: int, bottom: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[top, bottom)``: raw bands (rows, width, 12) float32 and valid (rows, width) bool."""
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        window = Window(0, top, self.info.width, bottom - top)
        try:
            data = self.dataset.read(self.indexes, window=window, out_dtype="float32")
            valid = (self.dataset.read_masks(self.indexes, window=window) > 0).all(axis=0)
        except RasterioIOError as err:  # a file cut short or damaged past its header
            raise SceneError(f"{self.path}: rows {top}-{bottom} cannot be read; the file is truncated or damaged "
                             f"({first_line(err)})") from None
        valid &= np.isfinite(data).all(axis=0)
        self.rows_read += bottom - top
        return np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid

    def hold(self, rows: int) -> None:
        """Record that the caller holds ``rows`` rows of the scene at once."""
        self.max_rows_held = max(self.max_rows_held, rows)

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
