"""A scene's RGB beside its landslide probability map, with true outlines: one PNG, read at a bounded size."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from landslide.bands import RAW_NAMES
from landslide.geo import import_rasterio


def _read_small(path: Path | str, indexes: list[int], max_side: int) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Bands at most ``max_side`` px on a side (averaged), their validity, the reduction factor and the file's
    data type."""
    rasterio = import_rasterio()
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        factor = max(1.0, max(src.width, src.height) / max_side)
        shape = (len(indexes), max(1, round(src.height / factor)), max(1, round(src.width / factor)))
        data = src.read(indexes, out_shape=shape, resampling=Resampling.average, masked=True)
        dtype = src.dtypes[0]
    return data.astype(np.float32).filled(np.nan), ~np.ma.getmaskarray(data).any(0), factor, dtype


def _outlines(truth: Path | str, scene: Path | str, factor: float) -> list[np.ndarray]:
    """Exterior rings of a GeoJSON's polygons (WGS 84) in the reduced scene's pixel coordinates."""
    rasterio = import_rasterio()
    from rasterio.warp import transform_geom

    with rasterio.open(scene) as src:
        crs, inverse = src.crs, ~src.transform
    rings = []
    for feature in json.loads(Path(truth).read_text())["features"]:
        geom = transform_geom("EPSG:4326", crs, feature["geometry"])
        polys = geom["coordinates"] if geom["type"] == "MultiPolygon" else [geom["coordinates"]]
        for poly in polys:
            x, y = np.asarray(poly[0], dtype=np.float64).T
            xy = np.stack([inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f], -1)
            xy /= factor
            rings.append(xy)
    return rings


def plot_scene_map(scene: Path | str, prob_map: Path | str, path: Path | str | None = None,
                   truth: Path | str | None = None, threshold: float = 0.5, band_map: dict[str, int] | None = None,
                   max_side: int = 1024) -> Figure:
    """RGB (2-98% stretch) | probability map (0-1, nodata blank) | map at ``threshold``; ``truth`` outlines drawn on
    all three. Saved as PNG when ``path`` is given."""
    indexes = [int((band_map or {}).get(b, RAW_NAMES.index(b) + 1)) for b in ("red", "green", "blue")]
    rgb, valid, factor, _ = _read_small(scene, indexes, max_side)
    rgb = np.moveaxis(rgb, 0, -1)
    low, high = np.nanpercentile(rgb[valid], (2, 98)) if valid.any() else (0.0, 1.0)
    rgb = np.clip((np.nan_to_num(rgb, nan=low) - low) / max(high - low, 1e-6), 0, 1)
    rgb[~valid] = 1.0
    prob, _, _, dtype = _read_small(prob_map, [1], max_side)
    prob = prob[0] / (100 if dtype == "uint8" else 1)  # uint8 maps hold 100 * p
    rings = _outlines(truth, scene, factor) if truth else []
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), constrained_layout=True)
    axes[0].imshow(rgb)
    axes[0].set_title("scene RGB")
    shown = axes[1].imshow(np.ma.masked_invalid(prob), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("landslide probability")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    axes[2].imshow(np.ma.masked_invalid(np.where(np.isnan(prob), np.nan, prob >= threshold)), cmap="Reds",
                   vmin=0, vmax=1.3, interpolation="nearest")
    axes[2].set_title(f"probability >= {threshold:g}")
    for ax in axes:
        for ring in rings:
            ax.plot(ring[:, 0] - 0.5, ring[:, 1] - 0.5, color="cyan", lw=0.8)
        ax.set_axis_off()
    if truth:
        axes[0].plot([], [], color="cyan", lw=0.8, label="planted / true landslides")
        axes[0].legend(loc="lower right", fontsize=8)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, format="png")  # by name, not by suffix: the path may be a staged temporary one
        plt.close(fig)
    return fig
