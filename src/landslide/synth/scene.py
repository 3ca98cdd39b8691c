"""Synthetic scenes: a georeferenced 12-band GeoTIFF with landslides planted at known places, for maps and tests.

A scene is a grid of 64 x 64 tiles drawn by the patch generator (:func:`landslide.synth.easy.draw_patches`):
``positive`` tiles (a share ``positive_share``, at random places) carry fresh scars, the others are the patch
generator's negative kinds in their usual proportions. Bands, order and units are the release's; the grid is
cropped to ``width`` x ``height``. With ``nodata_corner`` a triangle at the top-left corner has no data (value
``NODATA`` in every band), like the edge of a swath. Beside ``<out>.tif`` go the truth: ``<out>_truth.tif``
(uint8, 1 inside a planted landslide) and ``<out>_truth.geojson`` (its polygons, WGS 84). Tiles are drawn and
written one row at a time, so any size fits in memory.

Run ``python -m landslide.synth.scene --out scene.tif --width 512 --height 512 --seed 0``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from landslide.bands import PATCH_SIZE, RAW_NAMES
from landslide.geo import import_rasterio
from landslide.synth.easy import KIND_SHARES, KINDS, draw_patches

NODATA = -9999.0
NEGATIVE_KINDS = [i for i, k in enumerate(KINDS) if k != "positive"]


def truth_paths(out: Path | str) -> tuple[Path, Path]:
    """The truth raster and polygons written beside a synthetic scene."""
    out = Path(out)
    return out.with_name(f"{out.stem}_truth.tif"), out.with_name(f"{out.stem}_truth.geojson")


def tile_kinds(rng: np.random.Generator, rows: int, cols: int, positive_share: float) -> np.ndarray:
    """(rows, cols) kind index of every tile."""
    shares = np.asarray(KIND_SHARES)[NEGATIVE_KINDS]
    kinds = rng.choice(NEGATIVE_KINDS, (rows, cols), p=shares / shares.sum())
    kinds[rng.random((rows, cols)) < positive_share] = KINDS.index("positive")
    return kinds


def generate_scene(out: Path | str, width: int = 512, height: int = 512, seed: int = 0,
                   positive_share: float = 0.2, nodata_corner: bool = True, crs: str = "EPSG:32633",
                   origin: tuple[float, float] = (500_000.0, 5_000_000.0), pixel_size: float = 10.0) -> dict:
    """Write the scene GeoTIFF (float32, 12 bands) and its truth; return a summary with the positive tiles."""
    rasterio = import_rasterio()
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    truth_tif, truth_json = truth_paths(out)
    rng = np.random.default_rng(seed)
    tiles = tile_kinds(rng, -(-height // PATCH_SIZE), -(-width // PATCH_SIZE), positive_share)
    transform = from_origin(*origin, pixel_size, pixel_size)
    common = {"driver": "GTiff", "width": width, "height": height, "crs": crs, "transform": transform,
              "tiled": True, "blockxsize": 256, "blockysize": 256}
    corner = min(width, height) // 4 if nodata_corner else 0
    with rasterio.open(out, "w", count=len(RAW_NAMES), dtype="float32", nodata=NODATA, **common) as scene, \
            rasterio.open(truth_tif, "w", count=1, dtype="uint8", nodata=None, **common) as truth:
        scene.descriptions = RAW_NAMES
        for ty, kinds in enumerate(tiles):
            patches, _, fresh = draw_patches(rng, kinds)
            top = ty * PATCH_SIZE
            rows = min(PATCH_SIZE, height - top)
            data = np.concatenate(list(patches), axis=1)[:rows, :width].astype(np.float32)
            mask = np.concatenate(list(fresh), axis=1)[:rows, :width]
            yy, xx = np.mgrid[top : top + rows, 0:width]
            hole = (xx + yy) < corner
            data[hole] = NODATA
            mask &= ~hole
            window = Window(0, top, width, rows)
            scene.write(np.moveaxis(data, -1, 0), window=window)
            truth.write(mask.astype(np.uint8)[None], window=window)
    n_polygons = _truth_polygons(truth_tif, truth_json)
    positives = np.argwhere(tiles == KINDS.index("positive"))
    return {"scene": str(out), "truth": str(truth_tif), "truth_polygons": str(truth_json), "width": width,
            "height": height, "crs": crs, "positive_tiles": positives.tolist(), "landslides": n_polygons}


def _truth_polygons(truth_tif: Path, out: Path) -> int:
    rasterio = import_rasterio()
    import json

    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    with rasterio.open(truth_tif) as src:
        band = rasterio.band(src, 1)
        features = [{"type": "Feature", "properties": {"id": i},
                     "geometry": transform_geom(src.crs, "EPSG:4326", geom)}
                    for i, (geom, _) in enumerate(shapes(band, mask=band, connectivity=8, transform=src.transform))]
    out.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return len(features)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="scene GeoTIFF to write")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--positive-share", type=float, default=0.2, help="share of tiles with landslides")
    parser.add_argument("--no-nodata-corner", action="store_true", help="data everywhere")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summary = generate_scene(args.out, args.width, args.height, args.seed, args.positive_share,
                             not args.no_nodata_corner)
    print(f"wrote {args.out} ({args.width} x {args.height} px, {summary['landslides']} landslides) and its truth "
          f"in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
