"""A scene in sliding windows -> a per-pixel landslide probability map (COG), polygons and a summary.

Windows of 64 x 64 px start every ``stride`` px along both axes, plus one flush with the last row and column, so
every pixel is covered. Each window is predicted like a test patch (:class:`FoldEnsemble`: fold models, test-time
views, per-fold calibration, filter last). ``mode=window``: a window gives all its pixels its probability;
``mode=cam`` or ``gradient``: each pixel gets the window's probability times the network's relative evidence there
(:mod:`landslide.localisation`: 1 where the evidence peaks), per fold and view, so a map outlines what the network
saw; ``mode=segment`` (a run trained with slide masks, ``experiment=segment``): each pixel gets the network's own
pixel probability, calibrated per fold like the window's (:mod:`landslide.inference.segment`). Blending: a pixel's value
is the weighted mean of the windows that cover it, with weight 1 everywhere in a window (``blend=mean``) or a
Gaussian of the distance to the window's centre (``blend=gaussian``, sigma 16 px, 1 at the centre and 0.14 in the
corners: a pixel follows the windows it lies in the middle of). Pixels with nodata in the scene, and pixels that no
predicted window covers, are nodata in the map. A window with less than ``min_valid`` of its pixels valid is not
predicted; the other windows' invalid pixels take the window's mean of each band.

Memory: the scene is read in row strips. Window rows are done in order; the strip buffer holds the 64 rows of the
current window row (each scene row is read once). Windows wait until ``windows_per_batch`` of them (one or more
window rows) can be predicted together; the blend accumulator holds the map rows those windows touch, and writes
them out as soon as no later window can. Nothing grows with the scene's height; the windows at or above the
threshold (row, column, probability: 12 bytes each) are kept for the polygons' support.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from landslide.bands import PATCH_SIZE
from landslide.data.preprocess import to_channels
from landslide.data.scene import SceneInfo, SceneReader, import_rasterio
from landslide.errors import ConfigError, RunError, SceneError
from landslide.files import OutputSet, temporary_path
from landslide.inference.ensemble import LOAD_RUN, FoldEnsemble
from landslide.inference.map_outputs import ENCODINGS, RasterSink, WindowSupport, encode, polygons, to_cog
from landslide.inference.options import BLENDS, check_map_options, check_map_outputs, map_outputs
from landslide.inference.segment import no_pixel_map
from landslide.timing import phase, timed, timing_report

log = logging.getLogger(__name__)
# phases of map.py (landslide.timing), beside those of the ensemble's prediction
READ = "read"  # the scene's rows
WINDOWS = "windows"  # windows cut, gaps filled, model channels
BLEND = "blend"  # window probabilities blended and the map's rows written
COG = "cog"  # the Cloud-Optimised GeoTIFF
POLYGONS = "polygons"
FIGURE = "figure"  # the map's figure beside the scene


def no_valid_pixels(scene: Path, valid_read: int, min_valid: float) -> str:
    """Why a map would be empty: a scene that is nodata everywhere, or windows all below ``min_valid``."""
    if not valid_read:
        return f"{scene}: no valid pixel (nodata, or not finite, in every band everywhere); nothing to map"
    return (f"{scene}: {valid_read} valid pixel(s), but no 64 x 64 window has min_valid={min_valid:g} of its pixels "
            "valid; nothing to map")


def window_origins(size: int, stride: int, window: int = PATCH_SIZE) -> list[int]:
    """Start of every window along an axis of ``size`` px: every ``stride`` px, and one ending at the edge."""
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, {window}], got {stride}")
    origins = list(range(0, size - window + 1, stride))
    if origins[-1] != size - window:
        origins.append(size - window)
    return origins


def window_weights(blend: str, window: int = PATCH_SIZE) -> np.ndarray:
    """(window, window) float32 weight of each pixel of a window in the blend."""
    if blend == "mean":
        return np.ones((window, window), np.float32)
    if blend == "gaussian":
        centre = (window - 1) / 2
        d2 = (np.arange(window) - centre) ** 2
        return np.exp(-(d2[:, None] + d2[None, :]) / (2 * (window / 4) ** 2)).astype(np.float32)
    raise ValueError(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")


def strips(reader: SceneReader, origins: list[int], window: int = PATCH_SIZE
           ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(top, raw (window, width, 12), valid (window, width)) for each window row; each scene row is read once."""
    data = valid = None
    end = 0
    for top in origins:
        new_data, new_valid = reader.read_rows(max(top, end), top + window)
        if data is None:
            data, valid = new_data, new_valid
        else:
            keep = end - top  # rows of the last strip that this one shares
            data = np.concatenate([data[window - keep :], new_data]) if keep > 0 else new_data
            valid = np.concatenate([valid[window - keep :], new_valid]) if keep > 0 else new_valid
        end = top + window
        reader.hold(data.shape[0])
        yield top, data, valid


def cut_windows(data: np.ndarray, valid: np.ndarray, cols: list[int], window: int = PATCH_SIZE
                ) -> tuple[np.ndarray, np.ndarray]:
    """(n, window, window, 12) windows at ``cols`` with invalid pixels set to the window's band means, and their
    valid shares (n,)."""
    raw = np.stack([data[:, c : c + window] for c in cols])
    ok = np.stack([valid[:, c : c + window] for c in cols])
    share = ok.mean(axis=(1, 2))
    if share.min() < 1:
        okf = ok[..., None].astype(np.float32)
        clean = np.where(ok[..., None], raw, 0.0)
        means = clean.sum(axis=(1, 2)) / np.maximum(okf.sum(axis=(1, 2)), 1)
        raw = np.where(ok[..., None], clean, means[:, None, None, :]).astype(np.float32)
    return raw, share


def check_segmenting(run_dir: Path | str, ensemble: FoldEnsemble) -> None:
    """mode=segment needs every fold's network to segment, trained with slide masks; else one line."""
    for fold_dir, module in zip(ensemble.fold_dirs, ensemble.modules):
        why = no_pixel_map(module)
        if why:
            raise RunError(f"{fold_dir / 'model.ckpt'}: mode=segment needs a run trained with experiment=segment, "
                           f"and {why}; map {run_dir} with mode=gradient, cam or window")


class Blender:
    """Weighted sums of window probabilities over the map rows from ``top`` on, with the scene's validity there.

    Rows come in with :meth:`extend` (as their strip is read), windows add to them, and :meth:`pop` hands the
    finished rows out; only the rows between the oldest unfinished window row and the newest strip are held."""

    def __init__(self, width: int, weights: np.ndarray) -> None:
        self.weights = weights
        self.window = weights.shape[0]
        self.top = 0
        self.sum = np.zeros((0, width), np.float32)
        self.weight = np.zeros((0, width), np.float32)
        self.valid = np.zeros((0, width), bool)
        self.max_rows = 0

    @property
    def end(self) -> int:
        return self.top + self.sum.shape[0]

    def extend(self, valid: np.ndarray) -> None:
        """Append the next rows of the scene (their validity)."""
        zeros = np.zeros(valid.shape, np.float32)
        self.sum = np.concatenate([self.sum, zeros])
        self.weight = np.concatenate([self.weight, zeros])
        self.valid = np.concatenate([self.valid, valid])
        self.max_rows = max(self.max_rows, self.sum.shape[0])

    def add(self, top: int, cols: list[int], probs: np.ndarray) -> None:
        """Windows of one window row starting at scene row ``top``, at columns ``cols``: one value per window
        (n,), or one per pixel (n, window, window)."""
        r = top - self.top
        for c, p in zip(cols, probs):
            self.sum[r : r + self.window, c : c + self.window] += p * self.weights
            self.weight[r : r + self.window, c : c + self.window] += self.weights

    def pop(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows as probabilities, NaN where the scene has no data or no window covered them."""
        weight, valid = self.weight[:rows], self.valid[:rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where((weight > 0) & valid, self.sum[:rows] / weight, np.nan)
        self.sum, self.weight, self.valid = self.sum[rows:], self.weight[rows:], self.valid[rows:]
        self.top += rows
        return out


class MapSink:
    """The map's rasters (probability; above-threshold mask for the polygons) and the counts for the summary."""

    def __init__(self, raw_path: Path, mask_path: Path | None, info: SceneInfo, dtype: str,
                 threshold: float) -> None:
        self.dtype, self.threshold = dtype, threshold
        self.prob = RasterSink(raw_path, info, dtype, ENCODINGS[dtype][0])
        self.mask = RasterSink(mask_path, info, "uint8", 0) if mask_path else None
        self.valid = self.above = 0

    def write(self, top: int, prob: np.ndarray) -> None:
        known = ~np.isnan(prob)
        above = known & (prob >= self.threshold)
        self.valid += int(known.sum())
        self.above += int(above.sum())
        self.prob.write(top, encode(prob, self.dtype))
        if self.mask is not None:
            self.mask.write(top, above.astype(np.uint8))

    def close(self) -> None:
        for sink in (self.prob, self.mask):
            if sink is not None and not sink.dataset.closed:
                sink.close()


def predict_scene(run_dir: Path | str, scene: Path | str, out: Path | str, *, mode: str, stride: int,
                  blend: str | None, blend_by_mode: Mapping[str, str],
                  dtype: str, threshold: float, min_valid: float, min_area_m2: float, smooth: int,
                  resolution_m: float, resolution_tolerance: float, windows_per_batch: int, batch_size: int,
                  tta: bool | None, device: str, progress: bool, gdal_cache_mb: int, vector: Path | str | None = None,
                  summary: Path | str | None = None, figure: Path | str | None = None,
                  truth: Path | str | None = None, band_map: dict[str, int] | None = None,
                  ensemble: FoldEnsemble | None = None) -> dict:
    """Map ``scene`` with the fold ensemble of ``run_dir`` (or an ``ensemble`` already loaded from it) in ``mode``
    (window, cam, gradient or segment): write the COG ``out``, optionally the GeoJSON ``vector`` (polygons of at least
    ``min_area_m2``, rings smoothed ``smooth`` times) and the PNG ``figure`` (with the outlines of ``truth``), and
    the summary (default ``out`` with ``.json``); return the summary.

    The files are one set (:class:`~landslide.files.OutputSet`): written under temporary names, moved in together,
    the summary last, naming the others. No output may be an input or another output; a scene without a valid
    window stops with a :class:`SceneError` and writes nothing.

    Window rows are cut as their strip is read and predicted together once ``windows_per_batch`` windows wait
    (narrow scenes batch several window rows), so memory is bounded by the batch and one strip, not the scene.
    GDAL's block cache is capped at ``gdal_cache_mb`` (its default, 5% of the machine's memory, would fill up
    with the scene's blocks)."""
    check_map_options(mode=mode, stride=stride, blend=blend, blend_by_mode=blend_by_mode, dtype=dtype,
                      threshold=threshold, min_valid=min_valid, min_area_m2=min_area_m2, smooth=smooth,
                      windows_per_batch=windows_per_batch, batch_size=batch_size, tta=tta, device=device)
    if truth and not Path(truth).is_file():
        raise ConfigError(f"truth={truth}: not found")
    named = map_outputs(out, vector, summary, figure)
    check_map_outputs(named, {"scene": scene, "truth": truth})
    localise = None if mode == "window" else mode
    blend = blend or blend_by_mode[mode]
    weights = window_weights(blend)
    started = time.perf_counter()
    out, summary_path = named["out"], named["summary"]
    with import_rasterio().Env(GDAL_CACHEMAX=int(gdal_cache_mb)), \
            SceneReader(scene, band_map, resolution_m, resolution_tolerance) as reader, \
            OutputSet(summary_path) as outputs:
        info = reader.info
        rows, cols = window_origins(info.height, stride), window_origins(info.width, stride)
        with phase(LOAD_RUN):
            ensemble = ensemble or FoldEnsemble(run_dir, device, batch_size, tta)
        if mode == "segment":
            check_segmenting(run_dir, ensemble)
        cloud_threshold = float(ensemble.settings["cloud_threshold"])
        out.parent.mkdir(parents=True, exist_ok=True)
        raw_path = temporary_path(out.with_name(f"{out.stem}.raw.tif"))
        mask_path = temporary_path(out.with_name(f"{out.stem}.mask.tif"))
        sink = MapSink(raw_path, mask_path if vector else None, info, dtype, threshold)
        blender = Blender(info.width, weights)
        counts = {"windows": 0, "skipped": 0, "filtered": 0, "valid_read": 0}
        support = WindowSupport(threshold)
        methods: set[str] = set()
        pending: list[tuple[int, list[int], np.ndarray]] = []  # (top, columns, raw windows) awaiting prediction
        bar = tqdm(total=len(rows) * len(cols), unit="win", desc=f"mapping {info.path.name}", disable=not progress)
        try:
            for i, (top, data, valid) in enumerate(timed(READ, strips(reader, rows))):
                fresh = valid[blender.end - top :]
                counts["valid_read"] += int(fresh.sum())
                blender.extend(fresh)
                with phase(WINDOWS):
                    raw, share = cut_windows(data, valid, cols)
                keep = np.flatnonzero(share >= min_valid)
                pending.append((top, [cols[j] for j in keep], raw[keep]))
                counts["windows"] += len(keep)
                counts["skipped"] += len(cols) - len(keep)
                last = i + 1 == len(rows)
                if sum(len(p[1]) for p in pending) < windows_per_batch and not last:
                    continue
                batch = np.concatenate([p[2] for p in pending])
                probs, values = [], []
                for start in range(0, len(batch), windows_per_batch):
                    with phase(WINDOWS):
                        channels = to_channels(batch[start : start + windows_per_batch], cloud_threshold)
                    result = ensemble.predict(channels, localise=localise)
                    probs.append(result["prob"])
                    values.append(result["pixel"] if localise else result["prob"])
                    methods.update(result.get("localised_with", ()))
                    counts["filtered"] += int(result["filtered"].sum())
                probs = np.concatenate(probs) if probs else np.zeros(0)
                values = np.concatenate(values) if values else np.zeros(0)
                with phase(BLEND):
                    splits = np.cumsum([len(p[1]) for p in pending])[:-1]
                    for (row_top, row_cols, _), row_probs, row_values in zip(pending, np.split(probs, splits),
                                                                             np.split(values, splits)):
                        blender.add(row_top, row_cols, row_values)
                        support.add(row_top, row_cols, row_probs)
                    bar.update(len(cols) * len(pending))
                    pending, batch = [], None
                    done_top = blender.top
                    sink.write(done_top, blender.pop((info.height if last else rows[i + 1]) - done_top))
            bar.close()
            with phase(COG):
                sink.close()
                if not sink.valid:
                    raise SceneError(no_valid_pixels(info.path, counts["valid_read"], min_valid))
                to_cog(raw_path, outputs.stage(out))
            with phase(POLYGONS):
                n_polygons = (polygons(mask_path, outputs.staged_path(out), info, outputs.stage(vector), min_area_m2,
                                       smooth, support) if vector else None)
            if figure:
                from landslide.plots.scene import plot_scene_map

                with phase(FIGURE):
                    plot_scene_map(scene, outputs.staged_path(out), outputs.stage(figure), truth, threshold, band_map)
        finally:
            sink.close()
            raw_path.unlink(missing_ok=True)
            mask_path.unlink(missing_ok=True)
        elapsed = time.perf_counter() - started
        report = {
            "scene": str(info.path), "run_dir": str(run_dir), "out": str(out),
            "vector": str(vector) if vector else None, "figure": str(figure) if figure else None,
            "width": info.width, "height": info.height, "crs": str(info.crs),
            "pixel_size_m": [round(s, 3) for s in info.pixel_size_m], "mode": mode,
            "localised_with": sorted(methods) or None, "stride": stride, "blend": blend,
            "dtype": dtype, "threshold": threshold, "windows": counts["windows"], "windows_skipped": counts["skipped"],
            "windows_filtered": counts["filtered"], "windows_above_threshold": len(support),
            "folds": len(ensemble.modules), "tta": ensemble.tta,
            "device": str(ensemble.device), "seconds": round(elapsed, 2),
            "windows_per_second": round(counts["windows"] / max(elapsed, 1e-9), 1),
            "valid_pixels": sink.valid, "share_above_threshold": round(sink.above / max(sink.valid, 1), 6),
            "polygons": n_polygons, "rows_read": reader.rows_read, "max_rows_held": reader.max_rows_held,
            "max_rows_blended": blender.max_rows, "summary": str(summary_path),
        }
        timing = timing_report()
        if timing is not None:  # the whole command (imports included) by phase; they add up to wall_seconds
            report.update(timing)
        outputs.commit(report)
    log.info("wrote %s (%d windows in %.1fs, %.1f windows/s; %.2f%% of valid pixels above %.2f)", out,
             counts["windows"], elapsed, report["windows_per_second"], 100 * report["share_above_threshold"],
             threshold)
    return report
