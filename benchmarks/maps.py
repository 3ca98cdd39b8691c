"""Map benchmark: how well each map mode outlines the slides of a generated scene, and how fast.

``python benchmarks/maps.py --run RUN_DIR [--segment-run SEG_RUN] [--size 1024] [--modes window cam gradient segment]
[--json out.json]``

It generates a realistic scene (:mod:`landslide.synth.scene`: continuous land cover, rivers, fields, clouds,
confounders, slides of the realistic patch profile's shapes crossing window borders) and a scene of slide pairs
100 m apart, maps both with ``map.py`` in each mode and scores the maps against the true outlines:

- pixel IoU and F1 of the map at the threshold against the true mask (valid pixels);
- object recall: the share of true slides that a polygon touches; false polygons per km²: polygons that touch no
  slide, per km² of valid scene; polygons per true slide touched;
- pairs: of the slide pairs 100 m (10 px) apart, how many a map keeps apart (each slide touched by a polygon, no
  polygon touching both);
- speed: windows/s and km²/s (the map's summary: mapping time, models loaded included).

``--run`` names a training run; ``--train`` trains one first with ``train.py`` on windows cut from generated
scenes (``data=scenes data.num_folds=3 data.fold=0 trainer.max_epochs=20``: one fold of three), whose
slides have the scene's shapes and looks. ``mode=segment`` maps with ``--segment-run`` (a run of
``experiment=segment``), or one trained first with ``--train-segment`` (``experiment=segment data.num_folds=3
data.fold=0 trainer.max_epochs=20``); the other modes map with ``--run`` or, without one, the segment run (its
network classifies windows too). Extra arguments after ``--`` go to every ``map.py`` call. The scenes and
maps go to a temporary folder (removed) unless ``--keep`` names one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from landslide.synth.landscape import Slide
from landslide.synth.scene import generate_scene, truth_paths

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["data=scenes", "data.num_folds=3", "data.fold=0", "trainer.max_epochs=20"]
TRAIN_SEGMENT = ["experiment=segment", "data.num_folds=3", "data.fold=0", "trainer.max_epochs=20"]
MODES = ("window", "cam", "gradient", "segment")
#: the gap between the two slides of a pair, in pixels (10 m)
PAIR_GAP = 10


def run(cmd: list[str], env: dict) -> float:
    """Run a command from the repository root; stop with its last lines if it fails; return its wall time."""
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({done.returncode}):\n{tail}")
    return time.perf_counter() - started


def gap_between(a: Slide, b: Slide) -> float:
    """Pixels of ground between two slides at their closest (the distance between their nearest pixel centres,
    less one)."""
    reach = math.ceil(max(a.radius, b.radius) + math.hypot(a.x - b.x, a.y - b.y))
    y0, x0 = int(min(a.y, b.y)) - reach, int(min(a.x, b.x)) - reach
    yy, xx = np.mgrid[y0 : y0 + 3 * reach, x0 : x0 + 3 * reach].astype(np.float64)
    pa, pb = np.argwhere(a.mask(yy, xx)), np.argwhere(b.mask(yy, xx))
    if not len(pa) or not len(pb):
        return math.inf
    d2 = ((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)
    return math.sqrt(float(d2.min())) - 1


def _pair(cx: float, cy: float, angle: float, half_len: float, half_wid: float, seeds: list[int], offset: float
          ) -> list[Slide]:
    """Two like slides side by side, their centres ``offset`` px either side of (``cx``, ``cy``)."""
    nx, ny = -math.sin(angle), math.cos(angle)
    return [Slide(cx + side * offset * nx, cy + side * offset * ny, half_len, half_wid, angle, s, bare=0.9,
                  brightness=1.0, seen=(0.8, 0.8)) for side, s in zip((-1, 1), seeds)]


def pair_slides(width: int, height: int, gap: float = PAIR_GAP, seed: int = 0) -> list[Slide]:
    """Pairs of slides side by side with ``gap`` px of ground between them at their closest, one pair per 128 x
    128 px cell (a slide's long axis 20-32 px, its width 6-9 px)."""
    rng = np.random.default_rng(seed)
    slides = []
    for cy in range(64, height - 63, 128):
        for cx in range(64, width - 63, 128):
            angle, half_len, half_wid = rng.uniform(0, np.pi), rng.uniform(10, 16), rng.uniform(3.0, 4.5)
            seeds = [int(s) for s in rng.integers(1 << 31, size=2)]
            pair = partial(_pair, cx, cy, angle, half_len, half_wid, seeds)
            offset = half_wid / 0.6 + gap / 2 + 1
            for _ in range(6):  # the ragged edges: move the slides until the gap is right
                miss = gap - gap_between(*pair(offset))
                if abs(miss) < 0.25:
                    break
                offset += miss / 2
            while gap_between(*pair(offset)) < gap - 0.3:  # never closer than asked
                offset += 0.2
            slides.extend(pair(offset))
    return slides


def _rasterise(features: list[dict], crs, transform, shape: tuple[int, int]) -> np.ndarray:
    """Feature i (WGS 84) burnt as i + 1 on the scene's grid (0: none)."""
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    shapes = [(transform_geom("EPSG:4326", crs, f["geometry"]), i + 1) for i, f in enumerate(features)]
    if not shapes:
        return np.zeros(shape, np.int32)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")


def slide_ids(slides: list[Slide], shape: tuple[int, int]) -> np.ndarray:
    """Slide i of ``slides`` drawn as i + 1 on a grid of ``shape`` (later slides over earlier ones)."""
    ids = np.zeros(shape, np.int32)
    for i, slide in enumerate(slides):
        r = math.ceil(slide.radius)
        y0, x0 = max(0, int(slide.y) - r), max(0, int(slide.x) - r)
        y1, x1 = min(shape[0], int(slide.y) + r + 1), min(shape[1], int(slide.x) + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        ids[y0:y1, x0:x1][slide.mask(yy, xx)] = i + 1
    return ids


def score_map(map_path: Path, vector: Path, scene: Path, threshold: float, slides: list[Slide] | None = None
              ) -> dict:
    """Pixel and object scores of a map and its polygons against the scene's truth; objects are the truth's
    polygons, or ``slides`` (as planted: then ``pairs`` counts slides 1-2, 3-4, ... kept apart)."""
    import rasterio

    truth_tif, truth_json = truth_paths(scene)
    with rasterio.open(map_path) as src, rasterio.open(truth_tif) as truth_src:
        values = src.read(1)
        nodata, scale = (255, 100.0) if src.dtypes[0] == "uint8" else (None, 1.0)
        valid = values != nodata if nodata is not None else ~np.isnan(values)
        prob = values.astype(np.float64) / scale
        truth = truth_src.read(1).astype(bool) & valid
        crs, transform, shape = src.crs, src.transform, values.shape
        pixel_km2 = abs(transform.a * transform.e) / 1e6
    pred = (prob >= threshold) & valid
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    truth_ids = slide_ids(slides, shape) if slides else None
    slides = slides or json.loads(truth_json.read_text())["features"]
    truth_ids = _rasterise(slides, crs, transform, shape) if truth_ids is None else truth_ids
    found = json.loads(vector.read_text())["features"]
    polygon_ids = _rasterise(found, crs, transform, shape)
    both = (truth_ids > 0) & (polygon_ids > 0)
    pairs = set(zip(truth_ids[both].tolist(), polygon_ids[both].tolist()))
    touched = {s for s, _ in pairs}
    true_polygons = {p for _, p in pairs}
    km2 = float(valid.sum()) * pixel_km2
    return {
        "pixel_iou": round(tp / max(tp + fp + fn, 1), 4), "pixel_f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4),
        "pixel_precision": round(tp / max(tp + fp, 1), 4), "pixel_recall": round(tp / max(tp + fn, 1), 4),
        "slides": len(slides), "slides_found": len(touched),
        "object_recall": round(len(touched) / max(len(slides), 1), 4),
        "polygons": len(found), "false_polygons": len(found) - len(true_polygons),
        "false_polygons_per_km2": round((len(found) - len(true_polygons)) / max(km2, 1e-9), 3),
        "polygons_per_found_slide": round(len(true_polygons) / max(len(touched), 1), 3),
        "pairs": _pairs_apart(pairs, len(slides)),
    }


def _pairs_apart(pairs: set[tuple[int, int]], n_slides: int) -> int:
    """Of the slides taken two by two in their order (1-2, 3-4, ...), the pairs whose slides are each touched by a
    polygon and share none."""
    apart = 0
    for first in range(1, n_slides, 2):
        a = {p for s, p in pairs if s == first}
        b = {p for s, p in pairs if s == first + 1}
        apart += bool(a and b and not (a & b))
    return apart


def map_scene(run_dir: Path, scene: Path, out: Path, mode: str, extra: list[str], env: dict) -> dict:
    """Map ``scene`` with ``map.py`` in ``mode``; the summary, with the process's wall time."""
    vector = out.with_suffix(".geojson")
    wall = run([sys.executable, "map.py", f"run_dir={run_dir}", f"scene={scene}", f"out={out}", f"vector={vector}",
                f"mode={mode}", "progress=false", f"hydra.run.dir={out.parent / 'hydra' / out.stem}", *extra], env)
    summary = json.loads(out.with_suffix(".json").read_text())
    summary["process_seconds"] = round(wall, 1)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, help="a finished training run to map with")
    source.add_argument("--train", action="store_true", help="train a run first (train.py on generated windows)")
    segment = parser.add_mutually_exclusive_group()
    segment.add_argument("--segment-run", type=Path, help="a finished run of experiment=segment (mode=segment)")
    segment.add_argument("--train-segment", action="store_true", help="train an experiment=segment run first")
    parser.add_argument("--size", type=int, default=1024, help="the scene's width and height in pixels")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["window", "cam"], choices=MODES)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--keep", type=Path, help="folder for the scenes and maps (kept)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("extra", nargs="*", help="map.py overrides (after --)")
    args = parser.parse_args(argv)
    if not (args.run or args.train or args.segment_run or args.train_segment):
        parser.error("name a run (--run, --segment-run) or train one (--train, --train-segment)")
    if "segment" in args.modes and not (args.segment_run or args.train_segment):
        parser.error("mode segment needs --segment-run or --train-segment")
    work = args.keep or Path(tempfile.mkdtemp(prefix="maps-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WANDB_MODE="offline", LANDSLIDE_ROOT=str(work), PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    try:
        result: dict = {"size": args.size, "seed": args.seed, "threshold": args.threshold, "extra": args.extra}
        run_dir, segment_dir = args.run, args.segment_run
        if args.train:
            run_dir = work / "run"
            result["train_seconds"] = round(run([sys.executable, "train.py", *TRAIN, f"hydra.run.dir={run_dir}"],
                                                env), 1)
        if args.train_segment:
            segment_dir = work / "run_segment"
            result["train_segment_seconds"] = round(run([sys.executable, "train.py", *TRAIN_SEGMENT,
                                                         f"hydra.run.dir={segment_dir}"], env), 1)
        run_dir = run_dir or segment_dir
        result["run_dir"], result["segment_run_dir"] = str(run_dir), str(segment_dir) if segment_dir else None
        scene, pairs = work / "scene.tif", work / "pairs.tif"
        started = time.perf_counter()
        planted = generate_scene(scene, args.size, args.size, args.seed, 0.8, 0.1, False)
        result["scene_seconds"] = round(time.perf_counter() - started, 1)
        twins = pair_slides(512, 512, seed=args.seed)
        generate_scene(pairs, 512, 512, args.seed, 0.0, 0.0, False, slides=twins)
        result["slides"] = planted["landslides"]
        for mode in args.modes:
            mode_run = segment_dir if mode == "segment" else run_dir
            summary = map_scene(mode_run, scene, work / f"map_{mode}.tif", mode, args.extra, env)
            scores = score_map(work / f"map_{mode}.tif", work / f"map_{mode}.geojson", scene, args.threshold)
            map_scene(mode_run, pairs, work / f"pairs_{mode}.tif", mode, args.extra, env)
            pair_scores = score_map(work / f"pairs_{mode}.tif", work / f"pairs_{mode}.geojson", pairs,
                                    args.threshold, twins)
            km2 = summary["width"] * summary["height"] * math.prod(summary["pixel_size_m"]) / 1e6
            result[mode] = {**{k: v for k, v in scores.items() if k != "pairs"},
                            "pairs_apart": pair_scores["pairs"], "pairs": pair_scores["slides"] // 2,
                            "windows": summary["windows"], "seconds": summary["seconds"],
                            "windows_per_second": summary["windows_per_second"],
                            "km2_per_second": round(km2 / summary["seconds"], 3),
                            "localised_with": summary["localised_with"], "run_dir": str(mode_run)}
        _print(result, args.modes)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2))
        return result
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _print(result: dict, modes: list[str]) -> None:
    rows = [("pixel IoU", "pixel_iou"), ("pixel F1", "pixel_f1"), ("pixel precision", "pixel_precision"),
            ("pixel recall", "pixel_recall"), ("object recall", "object_recall"), ("polygons", "polygons"),
            ("false polygons / km²", "false_polygons_per_km2"), ("polygons per found slide",
                                                                 "polygons_per_found_slide"),
            ("pairs kept apart", "pairs_apart"), ("windows/s", "windows_per_second"), ("km²/s", "km2_per_second"),
            ("seconds", "seconds")]
    print(f"scene {result['size']} x {result['size']} px, seed {result['seed']}, {result['slides']} slides; "
          f"run {result['run_dir']}")
    print(f"{'':26s}" + "".join(f"{m:>12s}" for m in modes))
    for label, key in rows:
        cells = []
        for m in modes:
            value = result[m][key]
            cells.append(f"{value}/{result[m]['pairs']}" if key == "pairs_apart" else f"{value}")
        print(f"{label:26s}" + "".join(f"{c:>12s}" for c in cells))


if __name__ == "__main__":
    main()
