"""Predict a test set with every fold of a training run: TTA, per-model calibration, averaging, filter last.

Each fold's probabilities are mapped by a monotone piecewise-linear calibration that sends the fold's
out-of-fold F1-optimal threshold to 0.5; they are averaged over folds and the 8 views, and their standard
deviation is the uncertainty. The filter acts last: an image that the majority of the fold filters reject is
predicted 0 and marked ``filtered``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor

from landslide.bands import CHANNEL_NAMES, channel_indices
from landslide.checkpoint import load_module
from landslide.data.cache import load_or_build_split
from landslide.data.release import read_split_index
from landslide.errors import RunError, first_line
from landslide.features import compute_features
from landslide.features.cached import split_features
from landslide.files import atomic_output, read_config, read_json, write_json
from landslide.filter.negative import load_filter
from landslide.hardware import bf16_supported
from landslide.localisation import localise as localise_views
from landslide.metrics import calibrate
from landslide.prediction import predict_probs, resolve_device
from landslide.run_record import read_prediction_settings

log = logging.getLogger(__name__)

__all__ = ["RunError", "load_run", "predict_run", "write_submission"]


def load_run(run_dir: Path) -> tuple[DictConfig, dict, list[Path]]:
    """The run's config, CV summary and fold folders, checking that every artefact is present."""
    config = run_dir / ".hydra" / "config.yaml"
    summary_path = run_dir / "cv_summary.json"
    for path in (config, summary_path):
        if not path.is_file():
            raise RunError(f"{path}: not found; is {run_dir} a finished training run?")
    summary = read_json(summary_path)
    if summary.get("oof_f1") is None:
        raise RunError(f"{summary_path}: the run trained no network (stage=filter?)")
    fold_dirs = []
    for fold in summary["folds"]:
        fold_dir = run_dir / "folds" / f"fold_{fold['fold']}"
        for name in ("model.ckpt", "filter.json"):
            if not (fold_dir / name).is_file():
                raise RunError(f"{fold_dir / name}: missing; fold {fold['fold']} cannot be used")
        fold_dirs.append(fold_dir)
    return read_config(config), summary, fold_dirs


def _fold_filter(fold_dir: Path):
    try:
        return load_filter(fold_dir)
    except Exception as err:  # a missing or foreign model file, a broken JSON
        raise RunError(f"{fold_dir / 'filter.json'}: the fold's filter cannot be loaded "
                       f"({first_line(err)})") from None


def _settings(cfg: DictConfig, run_dir: Path, overrides: dict) -> dict:
    """What the run recorded for prediction, with the user's overrides (a warning names each that differs)."""
    recorded = read_prediction_settings(run_dir) or {
        "tta": bool(cfg.get("tta", True)), "precision": str(cfg.trainer.precision),
        "channels": None, "bands": str(cfg.data.bands), "cloud_threshold": float(cfg.data.cloud_threshold),
        "nan_policy": str(cfg.data.nan_policy),
    }
    settings = dict(recorded)
    for key, value in overrides.items():
        if value is None:
            continue
        if value != recorded.get(key):
            log.warning("predicting with %s=%s although the run was trained and its thresholds fitted with %s=%s",
                        key, value, key, recorded.get(key))
        settings[key] = value
    return settings


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
    with atomic_output(path) as tmp:
        pd.DataFrame({"ID": ids, "label": np.asarray(labels).astype(int)}).to_csv(tmp, index=False)


class FoldEnsemble:
    """A run's fold models, filters and thresholds, loaded once (safely: see :mod:`landslide.checkpoint`); predicts
    batches of 13-channel images as the run recorded (TTA, precision) unless ``tta``/``precision`` override it.

    Each fold's probabilities over the views are calibrated (its out-of-fold threshold goes to 0.5); the ensemble's
    probability is their mean over folds and views, 0 where the majority of the fold filters reject the image.
    """

    def __init__(self, run_dir: Path | str, device: str, batch_size: int, tta: bool | None = None,
                 precision: str | None = None, nan_policy: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.cfg, self.summary, self.fold_dirs = load_run(self.run_dir)
        self.settings = _settings(self.cfg, self.run_dir, {"tta": tta, "precision": precision,
                                                           "nan_policy": nan_policy})
        self.tta = bool(self.settings["tta"])
        self.device = resolve_device(device)
        self.bf16 = str(self.settings["precision"]).startswith("bf16") and bf16_supported(self.device.type)
        self.batch_size = batch_size
        self.modules = [load_module(fold_dir / "model.ckpt", self.device) for fold_dir in self.fold_dirs]
        channels = list(self.modules[0].channels)
        for fold_dir, module in zip(self.fold_dirs, self.modules):
            if list(module.channels) != channels:
                raise RunError(f"{fold_dir / 'model.ckpt'}: trained on {module.channels}, fold 0 on {channels}")
        self.filters = [_fold_filter(fold_dir) for fold_dir in self.fold_dirs]
        self.thresholds = [float(fold["threshold"]) for fold in self.summary["folds"]]
        picks = channel_indices(channels)
        self._picks = None if picks == list(range(len(CHANNEL_NAMES))) else torch.tensor(picks)

    def predict(self, images: Tensor | np.ndarray, features: np.ndarray | None = None,
                localise: str | None = None) -> dict[str, np.ndarray]:
        """Predict (n, 13, 64, 64) images in physical units (``features``: their 150 features, computed if None).

        Returns ``prob`` (n,), ``std``, ``filtered``, ``filter_votes``, ``network_prob`` and ``per_fold``
        (folds, views, n) calibrated probabilities. With ``localise`` (a method of :mod:`landslide.localisation`:
        ``cam`` or ``gradient``) also ``pixel`` (n, 64, 64): each fold's and view's calibrated probability times
        its relative evidence map, averaged like ``prob`` (0 where the filter rejects the image), and
        ``localised_with``, the method each fold used."""
        images = torch.as_tensor(images)
        if features is None:
            features = compute_features(images.cpu().numpy())
        net_in = images if self._picks is None else images.index_select(1, self._picks.to(images.device))
        net_in = net_in.to(self.device)
        per_fold, keeps, methods = [], [], []
        pixel = None
        for module, filt, threshold in zip(self.modules, self.filters, self.thresholds):
            if localise:
                views, maps, used = localise_views(module, net_in, self.batch_size, self.tta, self.device, localise,
                                                   self.bf16)
                views = calibrate(views, threshold)
                score = torch.einsum("vn,vnhw->nhw", views, maps)
                pixel = score if pixel is None else pixel + score
                per_fold.append(views.cpu().numpy())
                methods.append(used)
            else:
                views = torch.from_numpy(predict_probs(module, net_in, self.batch_size, self.tta, self.device,
                                                       bf16=self.bf16))
                per_fold.append(calibrate(views, threshold).numpy())
            keeps.append(filt.keep(features))
        probs = np.stack(per_fold)  # (folds, views, n)
        votes = 1 - np.mean(keeps, axis=0)
        filtered = votes > 0.5
        network = probs.mean(axis=(0, 1))
        out = {
            "prob": np.where(filtered, 0.0, network), "std": probs.std(axis=(0, 1)), "filtered": filtered,
            "filter_votes": votes, "network_prob": network, "per_fold": probs,
        }
        if localise:
            mean = (pixel / (probs.shape[0] * probs.shape[1])).cpu().numpy()
            out["pixel"] = np.where(filtered[:, None, None], 0.0, mean).astype(np.float32)
            out["localised_with"] = methods
        return out


def predict_run(run_dir: Path | str, out: Path | str | None, data_root: str | None, cache_dir: str | None,
                batch_size: int, tta: bool | None, device: str, precision: str | None = None,
                nan_policy: str | None = None) -> dict:
    """Predict ``Test.csv`` of the run's release (or of ``data_root``); write submission.csv and predictions.csv.

    Reads only ``Test.csv`` and ``test_data/``: statistics, filters and thresholds come from the run. TTA, precision
    and preprocessing follow the run's record unless overridden (with a warning)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    ensemble = FoldEnsemble(run_dir, device, batch_size, tta, precision, nan_policy)
    cfg, summary, fold_dirs, settings = ensemble.cfg, ensemble.summary, ensemble.fold_dirs, ensemble.settings
    out = Path(out) if out else run_dir / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root or cfg.data.root)
    split = load_or_build_split(read_split_index(root, "test"), cache_dir or cfg.data.cache_dir,
                                settings["cloud_threshold"], settings["nan_policy"], int(cfg.data.read_workers),
                                bool(cfg.data.progress))
    result = ensemble.predict(torch.from_numpy(split.images), split_features(split))
    probs, filtered, prob = result["per_fold"], result["filtered"], result["prob"]
    labels = (prob >= 0.5).astype(int)
    ids = split.ids
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
    expected = read_split_index(root, "test").ids
    write_submission(out / "submission.csv", ids, labels, expected)
    with atomic_output(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    elapsed = time.perf_counter() - started
    report = {
        "run_dir": str(run_dir), "out": str(out), "n_test": len(ids), "folds": len(fold_dirs),
        "tta": ensemble.tta, "bf16": ensemble.bf16, "positives": int(labels.sum()), "filtered": int(filtered.sum()),
        "seconds": round(elapsed, 2),
    }
    write_json(out / "predict_summary.json", report)
    log.info("wrote %s (%d IDs, %d positive, %d filtered) in %.1fs", out / "submission.csv", len(ids),
             report["positives"], report["filtered"], elapsed)
    return report
