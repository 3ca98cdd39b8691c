"""Landslide maps: a generated scene mapped by a tiny run trained on generated patches."""

from __future__ import annotations

import json
import os
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import entry
from conftest import REPO, map_settings, seed_tiny_data

rasterio = pytest.importorskip("rasterio")

from landslide.bands import RAW_NAMES  # noqa: E402
from landslide.data.scene import SceneError, SceneInfo, SceneReader  # noqa: E402
from landslide.inference.ensemble import FoldEnsemble  # noqa: E402
from landslide.inference.map_outputs import WindowSupport, chaikin, polygons  # noqa: E402
from landslide.inference.scene import Blender, predict_scene, window_origins, window_weights  # noqa: E402
from landslide.synth.landscape import Landscape  # noqa: E402
from landslide.synth.noise import LatticeNoise  # noqa: E402
from landslide.synth.scene import NODATA, generate_scene, truth_paths  # noqa: E402


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, LANDSLIDE_ROOT=str(root), WANDB_MODE="offline", WANDB_SILENT="true",
               PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _run(root: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return entry.run(script, *args, env=_env(root), check=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_data) -> Path:
    """One tiny run (2 folds, 4 epochs on 160 generated patches, 8 views) shared by this module's tests."""
    root = tmp_path_factory.mktemp("maps")
    seed_tiny_data(tiny_data, root)
    done = _run(root, "train.py", "debug=tiny", "trainer.max_epochs=4", "tta=true", f"hydra.run.dir={root / 'run'}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 200 x 190 px generated scene (windows flush with the last row and column, a nodata corner) with a few
    slides."""
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    summary = generate_scene(path, width=200, height=190, seed=4, slides_per_km2=1.5, cloud_cover=0.1,
                             nodata_corner=True)
    assert len(summary["slides"]) >= 3 and summary["landslides"] >= 3
    return path


def test_synthetic_scene_is_georeferenced_with_truth_where_planted(scene):
    truth_tif, truth_json = truth_paths(scene)
    with rasterio.open(scene) as src, rasterio.open(truth_tif) as truth:
        assert src.count == 12 and src.crs.to_epsg() == 32633 and src.res == (10.0, 10.0)
        assert src.nodata == NODATA and src.read(1)[0, 0] == NODATA and src.read(1)[-1, -1] != NODATA
        mask = truth.read(1).astype(bool)
        assert truth.transform == src.transform and 0 < mask.mean() < 0.2
    planted = json.loads(truth_json.read_text())["features"]
    assert planted and all(f["geometry"]["type"] == "Polygon" for f in planted)
    lon, lat = planted[0]["geometry"]["coordinates"][0][0]
    assert 14 < lon < 16 and 44 < lat < 46  # WGS 84 near UTM 33N's origin used by the generator
    assert sum(f["properties"]["pixels"] for f in planted) == mask.sum()


@pytest.mark.parametrize("spacing", [4.0, 21.3, 150.0])
def test_noise_on_a_grid_equals_the_noise_at_its_points(spacing):
    """The grid path (one interpolation along the columns per lattice row) gives the points' values exactly."""
    noise = LatticeNoise([7, 1], spacing, 300)
    yy, xx = np.mgrid[-9:70, 0:300].astype(np.float64)
    on_grid = noise.at(yy, xx)
    assert np.array_equal(on_grid, noise.at(yy.ravel(), xx.ravel()).reshape(yy.shape))
    assert on_grid.std() > 0.1  # a field, not zeros


def test_generated_scene_is_continuous_with_slides_across_window_borders(tmp_path):
    """No tile seams: neighbouring columns differ no more across the 64 px borders than elsewhere; slides of many
    sizes lie anywhere (several cross a 32 px window border); drawing in strips gives the scene drawn whole."""
    path = tmp_path / "scene.tif"
    summary = generate_scene(path, width=384, height=384, seed=3, slides_per_km2=1.5, cloud_cover=0.1,
                             nodata_corner=False)
    with rasterio.open(path) as src:
        nir = src.read(RAW_NAMES.index("nir") + 1).astype(np.float64)
        vv = src.read(RAW_NAMES.index("desc_vv") + 1).astype(np.float64)
    for band in (nir, vv):
        steps = np.abs(np.diff(band, axis=1)).mean(axis=0)  # (383,): the step from column j to j + 1
        border = steps[63::64]
        assert border.mean() < 1.3 * steps.mean(), (border.mean(), steps.mean())
    slides = summary["slides"]
    assert len(slides) >= 15 and summary["rivers"] >= 1 and summary["parcels"] > 0
    lengths = [s["half_length"] for s in slides]
    assert min(lengths) < 7 and max(lengths) > 15  # small and large slides
    crossing = [s for s in slides if any(abs(s[a] - 32 * round(s[a] / 32)) < s["half_width"] for a in ("x", "y"))]
    assert len(crossing) >= 3
    land = Landscape(384, 384, 3, 1.5, 0.1)
    rng = np.random.default_rng(0)
    whole = land.land_cover(*np.mgrid[0:128, 0:384].astype(float))
    parts = np.concatenate([land.land_cover(*np.mgrid[t : t + 64, 0:384].astype(float)) for t in (0, 64)])
    np.testing.assert_array_equal(whole, parts)
    _, fresh_whole = land.render(0, 128, rng)
    fresh_parts = np.concatenate([land.render(t, t + 64, rng)[1] for t in (0, 64)])
    np.testing.assert_array_equal(fresh_whole, fresh_parts)


def _map(run_dir: Path, scene: Path, folder: Path, mode: str) -> tuple[np.ndarray, np.ndarray, dict, list]:
    """Map ``scene`` with map.py in ``mode`` (polygons of any size, unsmoothed; a figure with the truth): the
    probabilities (NaN: nodata), the scene's nodata mask, the summary and the polygons."""
    out = folder / "map.tif"
    done = _run(run_dir.parent, "map.py", f"run_dir={run_dir}", f"scene={scene}", f"out={out}",
                f"vector={folder / 'map.geojson'}", f"figure={folder / 'map.png'}",
                f"truth={truth_paths(scene)[1]}", "progress=false", f"mode={mode}", "min_area_m2=0", "smooth=0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with rasterio.open(out) as prob_map, rasterio.open(scene) as src:
        assert prob_map.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert prob_map.crs == src.crs and prob_map.transform == src.transform and prob_map.dtypes[0] == "uint8"
        values = prob_map.read(1)
        nodata = src.read_masks(1) == 0
    assert prob_map.nodata == 255 and ((values == 255) == nodata).all()  # nodata exactly where the scene has none
    assert values[~nodata].max() <= 100
    summary = json.loads((folder / "map.json").read_text())
    polygons = json.loads((folder / "map.geojson").read_text())["features"]
    assert (folder / "map.png").stat().st_size > 10_000
    assert not [f for f in os.listdir(folder) if f.endswith(".part")]  # temporaries renamed or removed
    return np.where(nodata, np.nan, values / 100), nodata, summary, polygons


@pytest.fixture(scope="module")
def window_map(run_dir, scene, tmp_path_factory) -> tuple[np.ndarray, np.ndarray, dict, list]:
    return _map(run_dir, scene, tmp_path_factory.mktemp("window_map"), "window")


def test_window_map_is_higher_inside_planted_landslides(scene, window_map):
    p, nodata, summary, polygons = window_map
    with rasterio.open(truth_paths(scene)[0]) as truth:
        inside = truth.read(1).astype(bool)
    mean_in, mean_out = p[inside & ~nodata].mean(), p[~inside & ~nodata].mean()
    assert mean_in > mean_out + 0.15 and mean_in > 1.5 * mean_out, (mean_in, mean_out)
    assert summary["windows"] + summary["windows_skipped"] == len(window_origins(190, 32)) * len(
        window_origins(200, 32))
    assert summary["folds"] == 2 and summary["tta"] is True and summary["rows_read"] == 190
    assert summary["mode"] == "window" and summary["localised_with"] is None and summary["blend"] == "mean"
    assert summary["share_above_threshold"] == pytest.approx((p[~nodata] >= 0.5).mean(), abs=0.02)
    # where map.py's seconds went, the figure included: the phases add up to the command's wall time
    assert {"startup", "load_run", "read", "windows", "features", "network", "filter", "blend", "cog", "polygons",
            "figure", "other"} <= set(summary["phases"])
    assert sum(summary["phases"].values()) == pytest.approx(summary["wall_seconds"], rel=0.02)
    assert len(polygons) == summary["polygons"] >= 1
    for feature in polygons:
        props = feature["properties"]
        assert props["mean_prob"] >= 0.5 and props["area_m2"] == props["pixels"] * 100.0
        assert props["windows"] >= 1 and props["window_max_prob"] >= 0.5  # a window above 0.5 under it
    assert sum(f["properties"]["pixels"] for f in polygons) == pytest.approx((p[~nodata] >= 0.5).sum(), rel=0.02)


def test_cam_map_spreads_each_window_over_its_evidence(run_dir, scene, window_map, tmp_path):
    """A pixel of the cam map is the windows' probabilities times relative evidence (at most 1), so it never
    exceeds the window map, reaches it where the evidence peaks, and is finer than the windows."""
    p_window, nodata, _, _ = window_map
    p, nodata_cam, summary, polygons = _map(run_dir, scene, tmp_path, "cam")
    assert (nodata_cam == nodata).all() and summary["mode"] == "cam" and summary["localised_with"] == ["cam"]
    valid = ~nodata
    assert (p[valid] <= p_window[valid] + 0.011).all()  # uint8 rounding
    lit = valid & (p_window >= 0.1)
    assert lit.any() and p[lit].max() > 0.5 * p_window[lit].max()
    # finer than the windows: below the window map where the evidence is below its peak (a 4-epoch run's maps
    # are nearly flat, so the spread is small; a trained run's is not)
    assert (p[lit] < p_window[lit] - 0.02).any() and np.std(p[lit] / p_window[lit]) > 0.01
    assert len(polygons) == summary["polygons"]
    for feature in polygons:
        props = feature["properties"]
        assert props["mean_prob"] >= 0.5 and props["windows"] >= 1


def _peak(ensemble: FoldEnsemble, scene: Path, out: Path, mode: str) -> tuple[int, dict]:
    """Peak of the memory that Python and numpy allocate while mapping (the models are loaded before)."""
    tracemalloc.start()
    try:
        report = predict_scene(ensemble.run_dir, scene, out, **map_settings(stride=64, dtype="float32", mode=mode,
                               windows_per_batch=4, progress=False), vector=out.with_suffix(".geojson"),
                               ensemble=ensemble)
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("mode", ["window", pytest.param("cam", marks=pytest.mark.slow)])
def test_memory_stays_bounded_by_window_rows(run_dir, tmp_path, mode):
    """A 4x taller scene reads each row once, holds one strip of 64 rows and a batch's rows, and peaks no higher."""
    short, tall = tmp_path / "short.tif", tmp_path / "tall.tif"
    for path, height in ((short, 256), (tall, 1024)):
        generate_scene(path, width=128, height=height, seed=1, slides_per_km2=1.0, cloud_cover=0.1,
                       nodata_corner=False)
    ensemble = FoldEnsemble(run_dir, device="cpu", batch_size=map_settings()["batch_size"], tta=False)
    _peak(ensemble, short, tmp_path / "warm.tif", mode)  # first calls allocate lasting caches
    peak_short, report_short = _peak(ensemble, short, tmp_path / "short_map.tif", mode)
    peak_tall, report_tall = _peak(ensemble, tall, tmp_path / "tall_map.tif", mode)
    assert report_short["windows"] == 8 and report_tall["windows"] == 32
    assert report_tall["rows_read"] == 1024 and report_tall["max_rows_held"] == 64
    assert report_tall["max_rows_blended"] <= 64 + 64 * (4 // 2)  # 4 windows a batch, 2 a window row
    # the peak is the work of one batch (features of 4 windows, their maps), whatever the height
    print(f"tracemalloc peak: {peak_short} B (256 rows), {peak_tall} B (1024 rows)")
    assert peak_tall < 1.25 * peak_short + 256 * 1024, (peak_short, peak_tall)
    with rasterio.open(tmp_path / "tall_map.tif") as prob_map:
        values = prob_map.read(1)
        assert prob_map.dtypes[0] == "float32" and np.isnan(prob_map.nodata)
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1


def test_bad_scene_stops_with_one_line_naming_the_file(run_dir, scene, tmp_path):
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    eleven = tmp_path / "eleven.tif"
    with rasterio.open(eleven, "w", **{**profile, "count": 11}) as dst:
        dst.write(data[:11])
    done = _run(run_dir.parent, "map.py", f"run_dir={run_dir}", f"scene={eleven}", f"out={tmp_path / 'm.tif'}")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output
    lines = [line for line in output.splitlines() if str(eleven) in line]
    assert len(lines) == 1 and "11 bands, expected 12" in lines[0]
    assert not (tmp_path / "m.tif").exists()

    no_crs = tmp_path / "no_crs.tif"
    with rasterio.open(no_crs, "w", **{**profile, "crs": None}) as dst:
        dst.write(data)
    with pytest.raises(SceneError, match=rf"^{no_crs}: no CRS"):
        SceneReader(no_crs)
    coarse = tmp_path / "coarse.tif"
    transform = rasterio.transform.from_origin(500_000, 5_000_000, 30, 30)
    with rasterio.open(coarse, "w", **{**profile, "transform": transform}) as dst:
        dst.write(data)
    with pytest.raises(SceneError, match=rf"^{coarse}: pixels of 30.0 x 30.0 m, expected about 10 m"):
        SceneReader(coarse)
    lonlat = tmp_path / "lonlat.tif"  # geographic: measured at the scene's central latitude (45°)
    transform = rasterio.transform.from_origin(15.0, 45.0 + 95 * 9e-5, 10 / (111_320 * np.cos(np.radians(45))), 9e-5)
    with rasterio.open(lonlat, "w", **{**profile, "crs": "EPSG:4326", "transform": transform}) as dst:
        dst.write(data)
    with SceneReader(lonlat) as reader:
        assert reader.info.pixel_size_m == pytest.approx((10.0, 10.0), rel=0.01)


def test_band_mapping_reads_the_same_bands(scene, tmp_path):
    order = np.random.default_rng(0).permutation(12)  # file band k holds raw band order[k]
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    shuffled = tmp_path / "shuffled.tif"
    with rasterio.open(shuffled, "w", **profile) as dst:
        dst.write(data[order])
    mapping = {RAW_NAMES[raw]: k + 1 for k, raw in enumerate(order)}
    with SceneReader(scene) as plain, SceneReader(shuffled, mapping) as mapped:
        a, valid_a = plain.read_rows(10, 74)
        b, valid_b = mapped.read_rows(10, 74)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(valid_a, valid_b)
    with pytest.raises(SceneError, match="lacks \\['asc_diff_vh'\\]"):
        SceneReader(shuffled, {k: v for k, v in mapping.items() if k != "asc_diff_vh"})


def test_windows_cover_every_pixel_and_blend_to_the_mean():
    assert window_origins(200, 32) == [0, 32, 64, 96, 128, 136]
    assert window_origins(64, 32) == [0] and window_origins(100, 64) == [0, 36]
    with pytest.raises(ValueError, match="stride"):
        window_origins(100, 65)
    for blend in ("mean", "gaussian"):
        weights = window_weights(blend)
        assert weights.max() == pytest.approx(1.0, abs=0.01) and weights.min() > 0
        blender = Blender(100, weights)
        valid = np.ones((96, 100), bool)
        valid[5, 7] = False
        blender.extend(valid)
        blender.add(0, [0, 36], np.array([0.2, 0.6]))
        blender.add(32, [0], np.array([1.0]))
        rows = blender.pop(32)
        assert np.isnan(rows[5, 7]) and np.isnan(rows).sum() == 1  # the one pixel without data
        rows[5, 7] = 0.2
        assert np.allclose(rows[:, :36], 0.2) and np.allclose(rows[:, 64:], 0.6)
        assert ((rows[:, 36:64] > 0.2) & (rows[:, 36:64] < 0.6)).all()
        assert blender.top == 32 and np.isnan(blender.pop(64)[-1, 64:]).all()  # no window: no value
    gaussian = window_weights("gaussian")
    assert gaussian[31, 31] > 0.99 and gaussian[0, 0] < 0.15


def _raster(path: Path, values: np.ndarray, dtype: str, nodata) -> SceneInfo:
    transform = rasterio.transform.from_origin(500_000, 5_000_000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype=dtype, crs="EPSG:32633", transform=transform, nodata=nodata) as dst:
        dst.write(values.astype(dtype)[None])
    return SceneInfo(path, values.shape[1], values.shape[0], rasterio.crs.CRS.from_epsg(32633), transform,
                     (10.0, 10.0))


def test_polygons_drop_small_areas_fill_small_holes_and_name_their_windows(tmp_path):
    """Two blobs 10 px apart stay two polygons; a 3-pixel speck goes below min_area_m2; a 4-pixel hole is filled,
    a 100-pixel one kept; each polygon lists the windows at or above the threshold that overlap it."""
    prob = np.zeros((128, 128))
    prob[10:40, 10:30] = 0.9  # blob A, with a 2 x 2 hole
    prob[20:22, 20:22] = 0.1
    prob[10:40, 40:60] = 0.7  # blob B, 10 px of ground from A
    prob[80:120, 80:120] = 0.8  # blob C, with a 10 x 10 hole
    prob[95:105, 95:105] = 0.2
    prob[70, 10:13] = 0.6  # a speck of 3 px (300 m²)
    info = _raster(tmp_path / "map.tif", np.rint(prob * 100), "uint8", 255)
    _raster(tmp_path / "mask.tif", prob >= 0.5, "uint8", 0)
    support = WindowSupport(0.5)
    support.add(0, [0, 32, 64], np.array([0.9, 0.4, 0.6]))  # the window at column 32 is below the threshold
    support.add(64, [64], np.array([0.8]))
    out = tmp_path / "polygons.geojson"
    assert polygons(tmp_path / "mask.tif", tmp_path / "map.tif", info, out, 500.0, 2, support) == 3
    features = sorted(json.loads(out.read_text())["features"], key=lambda f: f["properties"]["pixels"])
    a, b, c = (f["properties"] for f in features)  # A and B have 600 px, A's hole filled: 600 + 0; B 600
    assert {a["max_prob"], b["max_prob"]} == {0.9, 0.7} and c["pixels"] == 1600 - 100
    assert a["pixels"] == b["pixels"] == 600 and a["area_m2"] == 60_000.0
    by_prob = {p["max_prob"]: p for p in (a, b, c)}
    assert by_prob[0.9]["window_origins"] == [[0, 0]] and by_prob[0.9]["windows"] == 1
    assert by_prob[0.7]["window_origins"] == [[0, 0]]  # the window at column 64 starts beyond B
    assert by_prob[0.8]["window_origins"] == [[64, 64]] and by_prob[0.8]["window_max_prob"] == 0.8
    rings = {len(f["geometry"]["coordinates"]) for f in features}
    assert rings == {1, 2}  # C keeps its hole, A's is filled
    smooth_ring = features[0]["geometry"]["coordinates"][0]
    assert smooth_ring[0] == smooth_ring[-1] and len(smooth_ring) > 4 * 4  # corners cut twice


def test_chaikin_cuts_corners_inside_the_ring():
    square = [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]
    once = chaikin(square, 1)
    assert once[0] == once[-1] and len(once) == 9
    assert [1.0, 0.0] in once and [3.0, 0.0] in once and all(0 <= x <= 4 and 0 <= y <= 4 for x, y in once)
    assert chaikin(square, 0) == [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]]
