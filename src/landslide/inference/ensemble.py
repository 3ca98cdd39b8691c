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
from torch import Tensor

from landslide.bands import CHANNEL_NAMES, band_set, channel_indices
from landslide.data.datamodule import LandslideDataModule
from landslide.features import compute_features
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


class FoldEnsemble:
    """A run's fold models, filters and thresholds, loaded once; predicts batches of 13-channel images.

    Each fold's probabilities over the views are calibrated (its out-of-fold threshold goes to 0.5); the ensemble's
    probability is their mean over folds and views, 0 where the majority of the fold filters reject the image.
    """

    def __init__(self, run_dir: Path | str, device: str = "auto", batch_size: int = 1024, tta: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.cfg, self.summary, self.fold_dirs = load_run(self.run_dir)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tta = tta
        channels = list(band_set(self.cfg.data.get("bands", "all")))
        self.modules: list[LandslideModule] = []
        self.filters = []
        for fold_dir in self.fold_dirs:
            module = LandslideModule.load_from_checkpoint(fold_dir / "model.ckpt", map_location=self.device)
            if list(module.channels) != channels:
                raise RunError(f"{fold_dir / 'model.ckpt'}: trained on {module.channels}, data gives {channels}")
            self.modules.append(module)
            self.filters.append(load_filter(fold_dir))
        self.thresholds = [float(fold["threshold"]) for fold in self.summary["folds"]]
        picks = channel_indices(channels)
        self._picks = None if picks == list(range(len(CHANNEL_NAMES))) else torch.tensor(picks)

    def predict(self, images: Tensor | np.ndarray, features: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Predict (n, 13, 64, 64) images in physical units (``features``: their 150 features, computed if None).

        Returns ``prob`` (n,), ``std``, ``filtered``, ``filter_votes``, ``network_prob`` and ``per_fold``
        (folds, views, n) calibrated probabilities."""
        images = torch.as_tensor(images)
        if features is None:
            features = compute_features(images.cpu().numpy())
        net_in = images if self._picks is None else images.index_select(1, self._picks.to(images.device))
        per_fold, keeps = [], []
        for module, filt, threshold in zip(self.modules, self.filters, self.thresholds):
            views = torch.from_numpy(predict_probs(module, net_in, self.batch_size, self.tta, self.device))
            per_fold.append(calibrate(views, threshold).numpy())
            keeps.append(filt.keep(features))
        probs = np.stack(per_fold)  # (folds, views, n)
        votes = 1 - np.mean(keeps, axis=0)
        filtered = votes > 0.5
        network = probs.mean(axis=(0, 1))
        return {
            "prob": np.where(filtered, 0.0, network), "std": probs.std(axis=(0, 1)), "filtered": filtered,
            "filter_votes": votes, "network_prob": network, "per_fold": probs,
        }


def predict_run(run_dir: Path | str, out: Path | str | None = None, data_root: str | None = None,
                cache_dir: str | None = None, batch_size: int = 1024, tta: bool = True,
                device: str = "auto") -> dict:
    """Predict ``Test.csv`` of the run's release (or of ``data_root``); write submission.csv and predictions.csv."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    ensemble = FoldEnsemble(run_dir, device, batch_size, tta)
    cfg, summary, fold_dirs = ensemble.cfg, ensemble.summary, ensemble.fold_dirs
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
    result = ensemble.predict(dm.resident("test", ensemble.device), test_feats)
    probs, filtered, prob = result["per_fold"], result["filtered"], result["prob"]
    labels = (prob >= 0.5).astype(int)
    ids = dm.test_ids
    table = pd.DataFrame({
        "ID": ids,
        "prob": np.round(prob, 6),
        "std": np.round(result["std"], 6),
        "filtered": filtered,
        "filter_votes": np.round(result["filter_votes"], 3),
        "network_prob": np.round(result["network_prob"], 6),
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
