"""What a landslide map writes: the probability raster (a temporary GeoTIFF made a Cloud-Optimised GeoTIFF), the
polygons above the threshold (GeoJSON) and the summary (JSON). The writers here write where they are told: the
map stages its files in an :class:`~landslide.files.OutputSet` and moves them in together, the summary last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from landslide.bands import PATCH_SIZE
from landslide.data.scene import SceneInfo, import_rasterio

#: nodata and scale of each output type: uint8 holds round(100 * p), float32 holds p
ENCODINGS: dict[str, tuple[float, float]] = {"uint8": (255, 100.0), "float32": (float("nan"), 1.0)}


class RasterSink:
    """A one-band temporary GeoTIFF of the scene's grid, written in row strips."""

    def __init__(self, path: Path, info: SceneInfo, dtype: str, nodata: float | None) -> None:
        rasterio = import_rasterio()
        self.path = path
        self.dtype = dtype
        self.dataset = rasterio.open(
            path, "w", driver="GTiff", width=info.width, height=info.height, count=1, dtype=dtype, crs=info.crs,
            transform=info.transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256, bigtiff="IF_SAFER",
        )

    def write(self, top: int, rows: np.ndarray) -> None:
        from rasterio.windows import Window

        self.dataset.write(rows.astype(self.dtype, copy=False)[None], window=Window(0, top, rows.shape[1],
                                                                                      rows.shape[0]))

    def close(self) -> None:
        self.dataset.close()


def encode(prob: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] (NaN where there is no prediction) as the output type, nodata included."""
    nodata, scale = ENCODINGS[dtype]
    if dtype == "float32":
        return prob.astype(np.float32)
    return np.where(np.isnan(prob), nodata, np.rint(np.nan_to_num(prob) * scale)).astype(np.uint8)


def to_cog(src: Path, out: Path) -> None:
    """Copy a GeoTIFF into a Cloud-Optimised GeoTIFF (DEFLATE, 512 px tiles, averaged overviews) at ``out`` (a
    staged file of the map's :class:`~landslide.files.OutputSet`)."""
    import_rasterio()
    from rasterio.shutil import copy

    copy(src, out, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, OVERVIEW_RESAMPLING="AVERAGE",
         BIGTIFF="IF_SAFER")


class WindowSupport:
    """The windows whose probability reached the threshold: their scene row and column (top-left) and
    probability, 12 bytes a window, for the polygons they support."""

    def __init__(self, threshold: float, window: int = PATCH_SIZE) -> None:
        self.threshold, self.window = threshold, window
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []
        self.rows = self.cols = np.zeros(0, np.int32)
        self.probs = np.zeros(0, np.float32)

    def add(self, top: int, cols: list[int], probs: np.ndarray) -> None:
        """Windows of one window row (scene row ``top``) at ``cols`` with their probabilities."""
        keep = np.flatnonzero(np.asarray(probs) >= self.threshold)
        if keep.size:
            self._rows.append(np.full(keep.size, top, np.int32))
            self._cols.append(np.asarray(cols, np.int32)[keep])
            self._probs.append(np.asarray(probs, np.float32)[keep])

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows)

    def freeze(self) -> None:
        """Gather the windows into arrays sorted by row (window rows arrive in order)."""
        if self._rows:
            self.rows, self.cols = np.concatenate(self._rows), np.concatenate(self._cols)
            self.probs = np.concatenate(self._probs)

    def covering(self, row_off: int, col_off: int, inside: np.ndarray) -> np.ndarray:
        """Indices of the windows that overlap the pixels ``inside`` (a mask whose top-left is at scene row
        ``row_off``, column ``col_off``)."""
        h, w = inside.shape
        lo, hi = np.searchsorted(self.rows, [row_off - self.window + 1, row_off + h])
        near = lo + np.flatnonzero((self.cols[lo:hi] > col_off - self.window) & (self.cols[lo:hi] < col_off + w))
        found = []
        for i in near:
            r0, c0 = max(0, self.rows[i] - row_off), max(0, self.cols[i] - col_off)
            r1, c1 = self.rows[i] - row_off + self.window, self.cols[i] - col_off + self.window
            if inside[r0:r1, c0:c1].any():
                found.append(i)
        return np.asarray(found, np.int64)


def chaikin(ring: list, iterations: int) -> list:
    """A closed ring smoothed by ``iterations`` rounds of Chaikin's corner cutting (each edge's quarter points
    replace its corners): pixel staircases become curves, and the ring stays inside the original's hull."""
    xy = np.asarray(ring, np.float64)[:-1]
    for _ in range(iterations):
        if len(xy) < 3:
            break
        nxt = np.roll(xy, -1, axis=0)
        xy = np.stack([0.75 * xy + 0.25 * nxt, 0.25 * xy + 0.75 * nxt], 1).reshape(-1, 2)
    return [*xy.tolist(), xy[0].tolist()]


def ring_pixels(ring: list, transform) -> float:
    """Area of a ring in the raster's pixels (the shoelace formula in map units over the pixel's area)."""
    xy = np.asarray(ring, np.float64)
    area = 0.5 * abs(float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1])))
    return area / abs(transform.a * transform.e - transform.b * transform.d)


def polygons(mask_path: Path, map_path: Path, info: SceneInfo, out: Path, min_area_m2: float, smooth: int,
             support: WindowSupport) -> int:
    """GeoJSON (WGS 84) of the connected areas of ``mask_path`` (1 = above the threshold) of at least
    ``min_area_m2``, holes smaller than that filled and rings smoothed by ``smooth`` rounds of Chaikin's corner
    cutting (0: pixel edges). Each polygon holds its mean and highest probability in ``map_path``, its pixel count
    and area in m² (of the raster's region, before smoothing) and the windows that support it (``support``: the
    windows at or above the threshold that overlap it; their scene row and column and highest probability).
    GDAL polygonises the mask band by band scanlines, and each polygon's statistics read only its bounding window.
    Returns the number of polygons."""
    rasterio = import_rasterio()
    from rasterio.features import geometry_mask, geometry_window, shapes
    from rasterio.warp import transform_geom

    support.freeze()
    min_pixels = min_area_m2 / info.pixel_area_m2
    count = 0
    # streamed: one feature a line as it is made, so memory does not grow with the number of polygons
    with rasterio.open(mask_path) as mask, rasterio.open(map_path) as prob_map, open(out, "w") as stream:
        stream.write('{"type": "FeatureCollection", "features": [')
        scale = ENCODINGS[prob_map.dtypes[0]][1]
        band = rasterio.band(mask, 1)
        for geom, _ in shapes(band, mask=band, connectivity=8, transform=mask.transform):
            if ring_pixels(geom["coordinates"][0], mask.transform) < min_pixels:
                continue
            window = geometry_window(prob_map, [geom])
            values = prob_map.read(1, window=window, masked=True)
            rings = [geom["coordinates"][0]] + [r for r in geom["coordinates"][1:]
                                                if ring_pixels(r, mask.transform) >= min_pixels]
            filled = {"type": "Polygon", "coordinates": rings}
            inside = geometry_mask([filled], out_shape=values.shape, transform=prob_map.window_transform(window),
                                   invert=True) & ~np.ma.getmaskarray(values)
            picked = values.data[inside].astype(np.float64) / scale
            windows = support.covering(int(window.row_off), int(window.col_off), inside)
            shape = {"type": "Polygon", "coordinates": [chaikin(r, smooth) for r in rings]} if smooth else filled
            feature = {
                "type": "Feature",
                "geometry": transform_geom(info.crs, "EPSG:4326", shape),
                "properties": {
                    "id": count,
                    "mean_prob": round(float(picked.mean()), 4) if picked.size else None,
                    "max_prob": round(float(picked.max()), 4) if picked.size else None,
                    "pixels": int(inside.sum()),
                    "area_m2": round(float(inside.sum()) * info.pixel_area_m2, 1),
                    "windows": len(windows),
                    "window_max_prob": round(float(support.probs[windows].max()), 4) if len(windows) else None,
                    "window_origins": [[int(support.rows[i]), int(support.cols[i])] for i in windows],
                },
            }
            stream.write(("\n" if count == 0 else ",\n") + json.dumps(feature))
            count += 1
        stream.write("\n]}\n")
    return count
