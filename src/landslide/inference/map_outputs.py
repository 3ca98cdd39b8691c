"""What a landslide map writes: the probability raster (a temporary GeoTIFF made a Cloud-Optimised GeoTIFF), the
polygons above the threshold (GeoJSON) and the summary (JSON). The writers here write where they are told: the
map stages its files in an :class:`~landslide.files.OutputSet` and moves them in together, the summary last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def polygons(mask_path: Path, map_path: Path, info: SceneInfo, out: Path) -> int:
    """GeoJSON (WGS 84) of the connected areas of ``mask_path`` (1 = above the threshold), each with its mean and
    highest probability in ``map_path``, its pixel count and area in m². GDAL polygonises the mask band by band
    scanlines, and each polygon's statistics read only its bounding window. Returns the number of polygons."""
    rasterio = import_rasterio()
    from rasterio.features import geometry_mask, geometry_window, shapes
    from rasterio.warp import transform_geom

    features = []
    with rasterio.open(mask_path) as mask, rasterio.open(map_path) as prob_map:
        scale = ENCODINGS[prob_map.dtypes[0]][1]
        band = rasterio.band(mask, 1)
        for geom, _ in shapes(band, mask=band, connectivity=8, transform=mask.transform):
            window = geometry_window(prob_map, [geom])
            values = prob_map.read(1, window=window, masked=True)
            inside = geometry_mask([geom], out_shape=values.shape, transform=prob_map.window_transform(window),
                                   invert=True) & ~np.ma.getmaskarray(values)
            picked = values.data[inside].astype(np.float64) / scale
            features.append({
                "type": "Feature",
                "geometry": transform_geom(info.crs, "EPSG:4326", geom),
                "properties": {
                    "id": len(features),
                    "mean_prob": round(float(picked.mean()), 4) if picked.size else None,
                    "max_prob": round(float(picked.max()), 4) if picked.size else None,
                    "pixels": int(inside.sum()),
                    "area_m2": round(float(inside.sum()) * info.pixel_area_m2, 1),
                },
            })
    out.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=2))
    return len(features)
