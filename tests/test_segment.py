"""Segmentation: slide masks in generated releases, augmented with their images, the segmenting network, the pixel
loss's config checks and ``map.py mode=segment`` from a tiny ``experiment=segment`` run."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import entry
from conftest import REPO, map_settings
from landslide.bands import CHANNEL_NAMES, RAW_NAMES, band_set
from landslide.checkpoint import load_module
from landslide.data.augment import BatchAugment
from landslide.data.masks import MASKS_FOLDER, read_masks
from landslide.errors import ConfigError, ReleaseError, RunError
from landslide.inference.ensemble import FoldEnsemble
from landslide.inference.scene import predict_scene
from landslide.losses import pixel_loss
from landslide.models import NETWORKS, build_network
from landslide.models.segment import SegmentUNet
from landslide.module import LandslideModule
from landslide.synth.release import generate_release
from landslide.training.cv import parallel_folds

rasterio = pytest.importorskip("rasterio")

from landslide.synth.scene import generate_scene  # noqa: E402

CHANNELS = list(CHANNEL_NAMES)
TINY_NET = {"_target_": "landslide.models.segment.SegmentUNet", "widths": [8, 16], "patch_pool": 3}
#: a tiny segment run: one landscape of 40 windows, fold 0 of 2, one epoch, one view, a net of two levels
TINY_SEGMENT = ("experiment=segment", "debug=tiny", "data.synthetic.root=${paths.data_dir}/tiny_masks",
                "data.synthetic.n_train=40", "data.synthetic.n_test=4", "data.fold=0", "tta=false",
                "energy.enabled=false", "model.net.widths=[8,16]")


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, LANDSLIDE_ROOT=str(root), WANDB_MODE="offline", WANDB_SILENT="true",
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny experiment=segment run and its data root."""
    root = tmp_path_factory.mktemp("segment")
    done = entry.run("train.py", *TINY_SEGMENT, f"hydra.run.dir={root / 'run'}", env=_env(root), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "run", root


# ------------------------------------------------------------------ masks in a generated release
def test_masks_are_written_and_read_with_their_ids_in_the_patches_orientation(segment_run):
    _, root = segment_run
    release = root / "data" / "tiny_masks"
    ids = pd.read_csv(release / "Train.csv")["ID"].tolist()
    assert sorted(p.stem for p in (release / MASKS_FOLDER).glob("*.npy")) == sorted(ids)
    assert not (release / "test_masks").exists()
    masks, has = read_masks(release, ids)
    assert has.all() and masks.dtype == np.uint8 and masks.shape == (40, 64, 64)
    # each mask on its own patch, as the patch lies: the slide is bare (low NDVI) where its mask says, and the
    # mask turned or flipped lies less on bare ground
    nir, red = RAW_NAMES.index("nir"), RAW_NAMES.index("red")
    labels = pd.read_csv(release / "Train.csv")["label"].to_numpy()
    contrast = []
    for image_id, mask in zip(np.asarray(ids)[labels == 1], masks[labels == 1].astype(bool)):
        x = np.load(release / "train_data" / f"{image_id}.npy")
        ndvi = (x[..., nir] - x[..., red]) / (x[..., nir] + x[..., red] + 1e-6)
        contrast.append([ndvi[~m].mean() - ndvi[m].mean() for m in (mask, mask.T, mask[::-1], mask[:, ::-1])])
    contrast = np.array(contrast)
    assert len(contrast) >= 2 and (contrast[:, 0] > 0.2).mean() >= 0.8
    assert (contrast[:, 0] > contrast[:, 1:].max(axis=1)).mean() >= 0.8
    assert np.array_equal(labels, (masks.sum(axis=(1, 2)) >= 8).astype(int))
    assert masks[labels == 0].sum() == 0  # a negative's mask agrees with its label (partial windows included)


def test_a_release_without_masks_reads_as_before_and_masks_stop_with_one_line(tmp_path):
    generate_release(tmp_path, 4, 2, seed=0, workers=1)
    assert not (tmp_path / MASKS_FOLDER).exists()
    with pytest.raises(ReleaseError, match=f"{MASKS_FOLDER}: folder not found; data.masks=true"):
        read_masks(tmp_path, ["a"])
    (tmp_path / MASKS_FOLDER).mkdir()
    np.save(tmp_path / MASKS_FOLDER / "a.npy", np.full((64, 64), 2, np.uint8))
    with pytest.raises(ReleaseError, match=r"a.npy: mask values \[2\], expected 0 and 1"):
        read_masks(tmp_path, ["a", "b"])
    np.save(tmp_path / MASKS_FOLDER / "a.npy", np.zeros((64, 32), np.uint8))
    with pytest.raises(ReleaseError, match=r"a.npy: mask of shape \(64, 32\)"):
        read_masks(tmp_path, ["a"])
    np.save(tmp_path / MASKS_FOLDER / "a.npy", np.eye(64, dtype=bool))
    masks, has = read_masks(tmp_path, ["b", "a"])  # "b" has none: no pixel loss there
    assert has.tolist() == [False, True] and masks[1].sum() == 64 and masks[0].sum() == 0
    np.save(tmp_path / MASKS_FOLDER / "a_typo.npy", np.zeros((64, 64), np.uint8))
    with pytest.raises(ReleaseError, match=r"1 mask\(s\) named after no training ID \(e.g. a_typo.npy\)"):
        read_masks(tmp_path, ["b", "a"])
    with pytest.raises(ValueError, match="easy profile does not know its slides' pixels"):
        generate_release(tmp_path / "other", 4, 2, masks=True)


# ------------------------------------------------------------------ augmentation moves masks with images
@pytest.mark.parametrize("gather", [True, False])
def test_augmentation_moves_each_mask_with_its_image(gather):
    """Channel 0 of each image is its mask plus 2: after flips, turns and erasing the two still agree, and the mask
    is 0 where the image was erased."""
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(64, 64, 64, generator=g) > 0.7).to(torch.uint8)
    masks[:, :5, :2] = 1  # an L in a corner: every dihedral draw puts it elsewhere
    x = torch.randn(64, 3, 64, 64, generator=g)
    x[:, 0] = masks.float() + 2
    plain = BatchAugment(flip=True, rotate=True, erase_p=0.0, erase_scale=(0.02, 0.15), erase_log_ratio=(-1, 1),
                         dihedral_gather=gather)
    out, moved = plain(x, torch.Generator().manual_seed(1), masks=masks)
    assert moved.dtype == torch.uint8 and torch.equal(out[:, 0], moved.float() + 2)
    assert not torch.equal(moved, masks)  # some were moved
    assert torch.equal(out, plain(x, torch.Generator().manual_seed(1)))  # the same draws as without masks
    erasing = BatchAugment(flip=True, rotate=True, erase_p=1.0, erase_scale=(0.1, 0.2), erase_log_ratio=(-1, 1),
                           dihedral_gather=gather)
    out, moved = erasing(x, torch.Generator().manual_seed(2), masks=masks)
    erased = out[:, 0] == 0  # the fill (no means set: 0)
    assert erased.any() and not moved[erased].any()
    assert torch.equal(out[:, 0][~erased], moved[~erased].float() + 2)


# ------------------------------------------------------------------ the network
def test_the_segmenting_network_gives_a_pixel_map_and_a_patch_logit_from_it():
    net = build_network({"_target_": "landslide.models.segment.SegmentUNet"}, CHANNELS).eval()
    assert "landslide.models.segment.SegmentUNet" in NETWORKS and isinstance(net, SegmentUNet)
    assert sum(p.numel() for p in net.parameters()) < 300_000
    x = torch.randn(3, len(CHANNELS), 64, 64)
    with torch.no_grad():
        pixel, patch = net.segment(x)
        assert pixel.shape == (3, 64, 64) and patch.shape == (3,)
        assert torch.allclose(net(x), patch) and torch.allclose(net.pixel_logits(x), pixel)
        local = torch.nn.functional.avg_pool2d(pixel[:, None], 3, 1, 1, count_include_pad=False)
        assert torch.allclose(patch, local.amax(dim=(-2, -1))[:, 0])
    sar = list(band_set("sar"))
    assert build_network(TINY_NET, sar)(torch.randn(2, len(sar), 64, 64)).shape == (2,)
    for pool in (2, 3.5, 0):  # from a checkpoint's settings too: refused when built, not at the first image
        with pytest.raises(ValueError, match="patch_pool must be an odd number"):
            build_network({**TINY_NET, "patch_pool": pool}, CHANNELS)
    with pytest.raises(ValueError, match="needs a network that segments"):
        LandslideModule({"_target_": "landslide.models.plain.PlainCNN"}, CHANNELS, [0.0] * 13, [1.0] * 13,
                        loss="bce", pos_weight=1.0, focal_gamma=2.0, focal_alpha=0.75, channels_last=False,
                        compile=False, pixel_weight=1.0)


def test_the_pixel_loss_takes_only_the_images_with_a_mask():
    logits = torch.randn(3, 8, 8, requires_grad=True)
    masks = (torch.rand(3, 8, 8) > 0.7).to(torch.uint8)
    has = torch.tensor([True, False, True])
    loss = pixel_loss(logits, masks, has)
    assert torch.allclose(loss, pixel_loss(logits[has], masks[has]))
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    none = pixel_loss(logits, masks, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad
    right = (masks.float() * 2 - 1) * 20  # confident and right: BCE and Dice near 0
    assert pixel_loss(right, masks) < 0.01 < pixel_loss(-right, masks)


def _save(module: LandslideModule, path: Path, **changes) -> Path:
    settings = {k: v for k, v in module.hparams.items() if k not in ("optimizer", "scheduler")}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {**settings, **changes}}, path)
    return path


def test_a_checkpoint_with_a_planted_target_builds_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = LandslideModule(TINY_NET, CHANNELS, [0.0] * 13, [1.0] * 13, loss="bce", pos_weight=1.0,
                             focal_gamma=2.0, focal_alpha=0.75, channels_last=False, compile=False, pixel_weight=1.0)
    path = tmp_path / "model.ckpt"
    _save(module, path, net={**TINY_NET, "_target_": "os.system"})
    with pytest.raises(RunError, match="refusing to build network 'os.system'"):
        load_module(path)
    _save(module, path, net={**TINY_NET, "widths": {"_target_": "os.system", "_args_": ["touch pwned.txt"]}})
    with pytest.raises(RunError, match="not plain numbers"):
        load_module(path)
    assert not (tmp_path / "pwned.txt").exists()
    again = load_module(_save(module, path))  # the honest one round-trips, pixel map and all
    x = torch.randn(2, 13, 64, 64)
    assert again.pixel_supervised and torch.equal(again.segment(x)[0], module.eval().segment(x)[0])


# ------------------------------------------------------------------ training options
def test_the_segment_experiment_says_what_it_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSLIDE_ROOT", str(tmp_path))
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=segment"])
        default = compose("train")
    assert cfg.model.net._target_ == "landslide.models.segment.SegmentUNet" and cfg.model.pixel_weight == 1.0
    assert cfg.data.masks and cfg.data.synthetic.masks and cfg.data.synthetic.difficulty == "scenes"
    assert cfg.data.augment.erase_p == 0.0 and cfg.data.root.endswith("scenes_masks")
    assert not default.data.masks and not default.data.synthetic.masks and default.model.pixel_weight == 0
    assert instantiate(cfg.data).masks
    assert parallel_folds(cfg, 2) == 1  # auto: one after another, with a warning
    cfg.cv.parallel_folds = 2
    with pytest.raises(ConfigError, match="cv.parallel_folds=2: stacked folds train without slide masks"):
        parallel_folds(cfg, 2)


def test_a_pixel_loss_without_masks_or_with_stacked_folds_stops_with_one_line(tmp_path):
    done = entry.run("train.py", *TINY_SEGMENT, "data.masks=false", f"hydra.run.dir={tmp_path / 'run'}",
                     env=_env(tmp_path), check=False)
    assert done.returncode == 2 and "model.pixel_weight=1.0 needs the slide masks: set data.masks=true" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "data").exists()


# ------------------------------------------------------------------ map.py mode=segment
@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    generate_scene(path, width=128, height=96, seed=2, slides_per_km2=2.0, cloud_cover=0.0, nodata_corner=False)
    return path


def test_map_in_segment_mode_writes_the_cog_and_polygons(segment_run, scene, tmp_path):
    run_dir, root = segment_run
    out, vector = tmp_path / "map.tif", tmp_path / "map.geojson"
    done = entry.run("map.py", f"run_dir={run_dir}", f"scene={scene}", f"out={out}", f"vector={vector}",
                     "mode=segment", "tta=true", "progress=false", "threshold=0.2",
                     f"hydra.run.dir={tmp_path / 'hydra'}",
                     env=_env(root), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["mode"] == "segment" and summary["localised_with"] == ["segment"] and summary["tta"]
    assert summary["blend"] == "gaussian"  # blend=null: the mode's own
    assert summary["windows"] == 6
    with rasterio.open(out) as src, rasterio.open(scene) as ref:
        values = src.read(1)
        assert src.crs == ref.crs and src.transform == ref.transform and src.dtypes[0] == "uint8"
        assert (values != 255).all() and values.max() > values.min()  # a map, not one value per window
    polygons = json.loads(vector.read_text())["features"]
    assert all(f["geometry"]["type"] == "Polygon" and f["properties"]["pixels"] > 0 for f in polygons)
    above = int(((values >= 20) & (values != 255)).sum())
    assert sum(f["properties"]["pixels"] for f in polygons) <= above


def test_a_run_without_pixel_supervision_stops_segment_mode_with_one_line(segment_run, scene, tmp_path):
    """A copy of the tiny run whose fold's network is a patch classifier, then a segmenting network trained without
    masks (pixel_weight 0): exit 2 and one line, nothing written."""
    run_dir, root = segment_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    checkpoint = copy / "folds" / "fold_0" / "model.ckpt"
    trained = load_module(checkpoint)
    kw = {k: trained.hparams[k] for k in ("channels", "norm_mean", "norm_std")}
    classifier = LandslideModule({"_target_": "landslide.models.plain.PlainCNN", "stages": [[4]]}, **kw, loss="bce",
                                 pos_weight=1.0, focal_gamma=2.0, focal_alpha=0.75, channels_last=False,
                                 compile=False, pixel_weight=0.0)
    record_file = copy / "run.json"
    record = json.loads(record_file.read_text())
    for module, why in ((classifier, "PlainCNN gives no pixel map"),
                        (trained, "SegmentUNet was trained without slide masks")):
        _save(module, checkpoint, **({"pixel_weight": 0.0} if module is trained else {}))
        record["config"]["model"]["net"] = dict(module.hparams["net"])  # the run records the network it holds
        record_file.write_text(json.dumps(record))
        out = tmp_path / "map.tif"
        done = entry.run("map.py", f"run_dir={copy}", f"scene={scene}", f"out={out}", "mode=segment",
                         "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}", env=_env(root), check=False)
        line = entry.one_error_line(done)
        assert "mode=segment needs a run trained with experiment=segment" in line and str(checkpoint) in line
        assert why in line and not out.exists()


def test_segment_mode_memory_stays_bounded_by_window_rows(segment_run, tmp_path):
    """As the other modes (tests/test_maps.py): a 4x taller scene reads each row once, holds one strip and a batch's
    rows, and its tracemalloc peak stays within 25% of the short scene's."""
    run_dir, _ = segment_run
    # fp32 whatever the CPU: in bf16 this untrained network's map hovers at the threshold and speckles into 4x more
    # polygons on the tall scene, whose features (held until the vector file is written) then dominate the peak
    ensemble = FoldEnsemble(run_dir, device="cpu", batch_size=map_settings()["batch_size"], tta=False,
                            precision="32-true")
    peaks, reports = [], []
    for name, height in (("warm", 256), ("short", 256), ("tall", 1024)):
        scene = tmp_path / f"{height}.tif"
        if not scene.exists():
            generate_scene(scene, width=128, height=height, seed=1, slides_per_km2=1.0, cloud_cover=0.1,
                           nodata_corner=False)
        out = tmp_path / f"{name}.tif"
        tracemalloc.start()
        try:
            reports.append(predict_scene(run_dir, scene, out, **map_settings(
                stride=64, dtype="float32", mode="segment", windows_per_batch=4, progress=False),
                vector=out.with_suffix(".geojson"), ensemble=ensemble))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    (_, short, tall), (_, peak_short, peak_tall) = reports, peaks
    assert short["windows"] == 8 and tall["windows"] == 32
    assert tall["rows_read"] == 1024 and tall["max_rows_held"] == 64 and tall["max_rows_blended"] <= 64 + 64 * 2
    assert peak_tall < 1.25 * peak_short + 256 * 1024, (peak_short, peak_tall)


def test_segment_pixels_are_calibrated_per_fold_and_gated_by_the_filter(segment_run):
    """Each fold's pixel probabilities go through its own threshold (sent to 0.5) before the folds are averaged, and
    an image most filters reject gets no pixel above 0."""
    from landslide.data.preprocess import to_channels
    from landslide.inference.segment import segment_views
    from landslide.metrics import calibrate

    run_dir, root = segment_run
    release = root / "data" / "tiny_masks"
    ids = pd.read_csv(release / "Train.csv")["ID"].tolist()[:6]
    images = torch.from_numpy(to_channels(np.stack([np.load(release / "train_data" / f"{i}.npy") for i in ids])))
    ensemble = FoldEnsemble(run_dir, device="cpu", batch_size=64, tta=False)
    (module,), (filt,) = ensemble.modules, ensemble.filters
    # two folds of the same network with thresholds far apart: the map is the mean of two different calibrations
    ensemble.modules, ensemble.filters, ensemble.thresholds = [module, module], [filt, filt], [0.2, 0.8]
    filt.threshold = -np.inf  # the filter keeps everything
    out = ensemble.predict(images, localise="segment")
    _, raw = segment_views(module, images, 64, False, torch.device("cpu"), ensemble.bf16)  # as the run predicts
    expected = ((calibrate(raw, 0.2) + calibrate(raw, 0.8)) / 2)[0].numpy()
    np.testing.assert_allclose(out["pixel"], expected, atol=1e-6)
    assert not np.allclose(calibrate(raw, 0.2).numpy(), calibrate(raw, 0.8).numpy())
    filt.threshold = np.inf  # every filter rejects every image: no pixel left
    gated = ensemble.predict(images, localise="segment")
    assert gated["filtered"].all() and (gated["pixel"] == 0).all() and (gated["prob"] == 0).all()


def test_training_with_masks_on_a_release_without_them_stops_with_one_line(tmp_path):
    done = entry.run("train.py", "debug=tiny", "model=segment_unet", "model.pixel_weight=1", "data.masks=true",
                     "data.synthetic.n_train=16", "data.synthetic.n_test=4", f"hydra.run.dir={tmp_path / 'run'}",
                     env=_env(tmp_path), check=False)
    line = entry.one_error_line(done)
    assert f"{MASKS_FOLDER}: folder not found; data.masks=true needs the training patches' slide masks" in line
