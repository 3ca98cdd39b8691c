"""Predict a test set with every fold of a training run: TTA, per-model calibration, averaging, filter last.

Each fold's probabilities are mapped by a monotone piecewise-linear calibration that sends the fold's
out-of-fold F1-optimal threshold to 0.5; they are averaged over folds and the 8 views, and their standard
deviation is the uncertainty. The filter acts last: an image that the majority of the fold filters reject is
predicted 0 and marked ``filtered``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from landslide.data.datamodule import LandslideDataModule
from landslide.filter.negative import load_filter
from landslide.inference.predictor import predict_probs, resolve_device
from landslide.metrics import calibrate
from landslide.module import LandslideModule
from landslide.training.stage1 import release_features

log = logging.getLogger(__name__)


class RunError(FileNotFoundError):
    """A training run directory lacks something prediction needs."""


def load_run(run_dir: Path) -> tuple[DictConfig, dict, list[Path]]:
    """The run's config, CV summary and fold folders, checking that every artefact is present."""
    config = run_dir / ".hydra" / "config.yaml"
    summary_path = run_dir / "cv_summary.json"
    for path in (config, summary_path):
        if not path.is_file():
            raise RunError(f"{path}: not found; is {run_dir} a finished training run?")
    summary = json.loads(summary_path.read_text())
    if summary.get("oof_f1") is None:
        raise RunError(f"{summary_path}: the run trained no network (stage=filter?)")
    fold_dirs = []
    for fold in summary["folds"]:
        fold_dir = run_dir / "folds" / f"fold_{fold['fold']}"
        for name in ("model.ckpt", "filter.json"):
            if not (fold_dir / name).is_file():
                raise RunError(f"{fold_dir / name}: missing; fold {fold['fold']} cannot be used")
        fold_dirs.append(fold_dir)
    return OmegaConf.load(config), summary, fold_dirs


def write_submission(path: Path, ids: list[str], labels: np.ndarray, expected: list[str]) -> None:
    """Write ``ID,label`` after checking that every expected ID is there exactly once, in order."""
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].tolist()
    if missing or extra or dup or list(ids) != list(expected):
        raise ValueError(
            f"refusing to write {path}: {len(missing)} missing ID(s) {missing[:5]}, {len(dup)} duplicated "
            f"{dup[:5]}, {len(extra)} unknown {extra[:5]}, order differs from Test.csv: {list(ids) != list(expected)}"
        )
    pd.DataFrame({"ID": ids, "label": np.asarray(labels).astype(int)}).to_csv(path, index=False)


def predict_run(run_dir: Path | str, out: Path | str | None = None, data_root: str | None = None,
                cache_dir: str | None = None, batch_size: int = 1024, tta: bool = True,
                device: str = "auto") -> dict:
    """Predict ``Test.csv`` of the run's release (or of ``data_root``); write submission.csv and predictions.csv."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    cfg, summary, fold_dirs = load_run(run_dir)
    out = Path(out) if out else run_dir / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("_target_", None)
    if data_root:
        data_cfg["root"] = data_root
    if cache_dir:
        data_cfg["cache_dir"] = cache_dir
    data_cfg["fold"] = None
    dm = LandslideDataModule(**data_cfg)
    dm.prepare_data()
    dm.setup()
    _, test_feats = release_features(dm.release)
    dev = resolve_device(device)
    images = dm.gather("test", device=dev)
    per_fold, keeps = [], []
    for fold_dir, fold in zip(fold_dirs, summary["folds"]):
        module = LandslideModule.load_from_checkpoint(fold_dir / "model.ckpt", map_location=dev)
        if list(module.channels) != list(dm.channels):
            raise RunError(f"{fold_dir / 'model.ckpt'}: trained on {module.channels}, data gives {dm.channels}")
        views = torch.from_numpy(predict_probs(module, images, batch_size, tta, dev))
        per_fold.append(calibrate(views, fold["threshold"]).numpy())
        keeps.append(load_filter(fold_dir).keep(test_feats))
    probs = np.stack(per_fold)  # (folds, views, n)
    votes = 1 - np.mean(keeps, axis=0)
    filtered = votes > 0.5
    network = probs.mean(axis=(0, 1))
    prob = np.where(filtered, 0.0, network)
    labels = (prob >= 0.5).astype(int)
    ids = dm.test_ids
    table = pd.DataFrame({
        "ID": ids,
        "prob": np.round(prob, 6),
        "std": np.round(probs.std(axis=(0, 1)), 6),
        "filtered": filtered,
        "filter_votes": np.round(votes, 3),
        "network_prob": np.round(network, 6),
        **{f"fold_{f['fold']}": np.round(p.mean(0), 6) for f, p in zip(summary["folds"], probs)},
    })
    # checked against Test.csv as it is on disk now, not against the list the predictions were made from
    expected = pd.read_csv(dm.root / "Test.csv", dtype={"ID": str})["ID"].tolist()
    write_submission(out / "submission.csv", ids, labels, expected)
    table.to_csv(out / "predictions.csv", index=False)
    elapsed = time.perf_counter() - started
    report = {
        "run_dir": str(run_dir), "out": str(out), "n_test": len(ids), "folds": len(fold_dirs), "tta": tta,
        "positives": int(labels.sum()), "filtered": int(filtered.sum()), "seconds": round(elapsed, 2),
    }
    (out / "predict_summary.json").write_text(json.dumps(report, indent=2))
    log.info("wrote %s (%d IDs, %d positive, %d filtered) in %.1fs", out / "submission.csv", len(ids),
             report["positives"], report["filtered"], elapsed)
    return report
