"""Generated scenes: a georeferenced 12-band GeoTIFF of a continuous landscape with landslides at known places, and
their true outlines, for maps, tests and benchmarks.

The landscape (:class:`~landslide.synth.landscape.Landscape`) has continuous land cover (no tiles), relief, rivers,
field parcels, clouds and confounders, and slides of the ``realistic`` patch profile's shapes and looks at random
places on vegetated slopes, so they cross window borders. Bands, order and units are the release's. With
``nodata_corner`` a triangle at the top-left corner has no data (value ``NODATA`` in every band), like the edge of
a swath. Beside ``<out>.tif`` go the truth: ``<out>_truth.tif`` (uint8, 1 inside a slide) and
``<out>_truth.geojson`` (one polygon per slide, WGS 84, with its area). The scene is drawn and written in strips
of rows, so any size fits in memory.

Run ``python -m landslide.synth.scene --out scene.tif --width 512 --height 512 --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from landslide.bands import RAW_NAMES
from landslide.geo import import_rasterio
from landslide.synth.landscape import Landscape, Slide

NODATA = -9999.0
#: rows drawn and written at once
STRIP = 64


def truth_paths(out: Path | str) -> tuple[Path, Path]:
    """The truth raster and polygons written beside a synthetic scene."""
    out = Path(out)
    return out.with_name(f"{out.stem}_truth.tif"), out.with_name(f"{out.stem}_truth.geojson")


def generate_scene(out: Path | str, width: int, height: int, seed: int, slides_per_km2: float,
                   cloud_cover: float, nodata_corner: bool, slides: list[Slide] | None = None,
                   crs: str = "EPSG:32633", origin: tuple[float, float] = (500_000.0, 5_000_000.0),
                   pixel_size: float = 10.0) -> dict:
    """Write the scene GeoTIFF (float32, 12 bands) and its truth; return a summary (the slides included).

    ``slides``: the slides to plant (:class:`Slide`, in pixel coordinates); None places ``slides_per_km2`` of them
    at random. ``cloud_cover``: the share of the scene under cloud."""
    rasterio = import_rasterio()
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    truth_tif, truth_json = truth_paths(out)
    land = Landscape(width, height, seed, slides_per_km2, cloud_cover, slides, pixel_size)
    rng = np.random.default_rng([seed, 99])
    transform = from_origin(*origin, pixel_size, pixel_size)
    common = {"driver": "GTiff", "width": width, "height": height, "crs": crs, "transform": transform,
              "tiled": True, "blockxsize": 256, "blockysize": 256}
    corner = min(width, height) // 4 if nodata_corner else 0
    with rasterio.open(out, "w", count=len(RAW_NAMES), dtype="float32", nodata=NODATA, **common) as scene, \
            rasterio.open(truth_tif, "w", count=1, dtype="uint8", nodata=None, **common) as truth:
        scene.descriptions = RAW_NAMES
        for top in range(0, height, STRIP):
            rows = min(STRIP, height - top)
            data, mask = land.render(top, top + rows, rng)
            yy, xx = np.mgrid[top : top + rows, 0:width]
            hole = (xx + yy) < corner
            data[hole] = NODATA
            mask &= ~hole
            window = Window(0, top, width, rows)
            scene.write(np.moveaxis(data, -1, 0), window=window)
            truth.write(mask.astype(np.uint8)[None], window=window)
    n_polygons = _truth_polygons(truth_tif, truth_json, pixel_size**2)
    return {"scene": str(out), "truth": str(truth_tif), "truth_polygons": str(truth_json), "width": width,
            "height": height, "crs": crs, "landslides": n_polygons,
            "slides": [asdict(s) for s in land.slides.items], "parcels": len(land.parcels.items),
            "old_scars": len(land.old_scars.items), "sar_changes": len(land.changes.items),
            "rivers": len(land.rivers), "cloud_cover": cloud_cover}


def ring_area(ring: list) -> float:
    """Area of a closed ring of (x, y) points (the shoelace formula)."""
    xy = np.asarray(ring, np.float64)
    return 0.5 * abs(float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1])))


def _truth_polygons(truth_tif: Path, out: Path, pixel_area: float) -> int:
    """One polygon (WGS 84) per connected slide of the truth raster, with its pixels and area."""
    rasterio = import_rasterio()
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    features = []
    with rasterio.open(truth_tif) as src:
        band = rasterio.band(src, 1)
        for geom, _ in shapes(band, mask=band, connectivity=8, transform=src.transform):
            rings = geom["coordinates"]
            area = ring_area(rings[0]) - sum(ring_area(r) for r in rings[1:])
            features.append({"type": "Feature", "geometry": transform_geom(src.crs, "EPSG:4326", geom),
                             "properties": {"id": len(features), "area_m2": round(area, 1),
                                            "pixels": round(area / pixel_area)}})
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    tmp.replace(out)
    return len(features)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="scene GeoTIFF to write")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slides-per-km2", type=float, default=0.8, help="landslides per km² (10 m pixels)")
    parser.add_argument("--cloud-cover", type=float, default=0.1, help="share of the scene under cloud")
    parser.add_argument("--no-nodata-corner", action="store_true", help="data everywhere")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summary = generate_scene(args.out, args.width, args.height, args.seed, args.slides_per_km2, args.cloud_cover,
                             not args.no_nodata_corner)
    print(f"wrote {args.out} ({args.width} x {args.height} px, {summary['landslides']} landslides) and its truth "
          f"in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
