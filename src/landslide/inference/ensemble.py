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
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from landslide.bands import CHANNEL_NAMES, channel_indices
from landslide.checkpoint import load_module
from landslide.data.cache import cache_key, load_or_build_split
from landslide.data.release import read_split_index
from landslide.errors import RunError, first_line
from landslide.features import compute_features
from landslide.features.cached import split_features
from landslide.files import OutputSet, read_json
from landslide.filter.negative import load_filter
from landslide.hardware import bf16_supported
from landslide.inference.options import check_predict_options, check_prediction_out
from landslide.inference.segment import segment_views
from landslide.localisation import localise as localise_views
from landslide.metrics import calibrate
from landslide.prediction import predict_probs, resolve_device
from landslide.run_record import (
    lookup,
    read_prediction_settings,
    read_run_config,
    recorded_fingerprint,
    recorded_nan_policy,
)
from landslide.timing import phase, timing_report

log = logging.getLogger(__name__)

# phases of predict.py and map.py (landslide.timing)
LOAD_RUN = "load_run"  # the run's config, checkpoints and filters
DATA = "data"  # the test split read, validated and cached
FEATURES = "features"  # the hand-crafted features for the filters
NETWORK = "network"  # the fold networks with test-time views, calibrated
FILTER = "filter"  # the fold filters' votes
WRITE = "write"  # submission and predictions files

__all__ = ["RunError", "load_run", "predict_run", "write_submission"]


def _check_summary(path: Path, summary: Any) -> list[dict]:
    """The folds of a CV summary, checked: each names its fold and its threshold."""
    if not isinstance(summary, dict):
        raise RunError(f"{path}: not a CV summary (a JSON object)")
    if summary.get("oof_f1") is None:
        raise RunError(f"{path}: the run trained no network (stage=filter?)")
    folds = summary.get("folds")
    ok = isinstance(folds, list) and folds and all(
        isinstance(f, dict) and isinstance(f.get("fold"), int) and isinstance(f.get("threshold"), int | float)
        for f in folds)
    if not ok:
        raise RunError(f"{path}: damaged (its folds do not each name a fold and a threshold); train the run again or "
                       "restore the file")
    return folds


def load_run(run_dir: Path) -> tuple[dict, dict, list[Path]]:
    """The run's config (as recorded, plain values), CV summary and fold folders, checking that every artefact is
    present; one :class:`RunError` line naming what is missing or damaged."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not found; run_dir must be a training run's folder")
    summary_path = run_dir / "cv_summary.json"
    if not summary_path.is_file():
        raise RunError(f"{summary_path}: not found; is {run_dir} a finished training run?")
    config = read_run_config(run_dir)
    summary = read_json(summary_path)
    fold_dirs = []
    for fold in _check_summary(summary_path, summary):
        fold_dir = run_dir / "folds" / f"fold_{fold['fold']}"
        for name in ("model.ckpt", "filter.json"):
            if not (fold_dir / name).is_file():
                raise RunError(f"{fold_dir / name}: missing; fold {fold['fold']} cannot be used")
        fold_dirs.append(fold_dir)
    return config, summary, fold_dirs


def _fold_filter(fold_dir: Path):
    try:
        return load_filter(fold_dir)
    except Exception as err:  # a missing or foreign model file, a broken JSON
        text = first_line(err)
        said = text if text.startswith(str(fold_dir)) else f"{fold_dir / 'filter.json'}: {text}"  # the file named
        raise RunError(f"{said} (the fold's filter cannot be loaded)") from None


def _settings(config: dict, run_dir: Path, overrides: dict) -> dict:
    """What the run recorded for prediction, with the user's overrides (a warning names each that differs)."""
    recorded = read_prediction_settings(run_dir) or {
        "tta": bool(lookup(config, "tta", True)), "precision": str(lookup(config, "trainer.precision")),
        "channels": None, "bands": str(lookup(config, "data.bands")),
        "cloud_threshold": float(lookup(config, "data.cloud_threshold")),
        "nan_policy": str(lookup(config, "data.nan_policy")),
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
    """Write ``ID,label`` to ``path`` (a staged file of an :class:`OutputSet`) after checking that every expected ID
    is there exactly once, in order."""
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].tolist()
    if missing or extra or dup or list(ids) != list(expected):
        raise ValueError(
            f"refusing to write {path}: {len(missing)} missing ID(s) {missing[:5]}, {len(dup)} duplicated "
            f"{dup[:5]}, {len(extra)} unknown {extra[:5]}, order differs from Test.csv: {list(ids) != list(expected)}"
        )
    pd.DataFrame({"ID": ids, "label": np.asarray(labels).astype(int)}).to_csv(path, index=False)


def check_recorded_network(path: Path, net: Any, config: dict) -> None:
    """Stop when a fold's checkpoint holds another network than the run recorded (``model.net``): its class, or a
    setting both name with different values (a checkpoint copied in from another run)."""
    recorded = (config.get("model") or {}).get("net")
    if not isinstance(recorded, dict) or not isinstance(net, dict):
        return  # an older run without the record: nothing to compare
    differ = [k for k in recorded if k in net and net[k] != recorded[k]]
    if differ:
        said = "; ".join(f"{k}={net[k]!r} (the run recorded {recorded[k]!r})" for k in differ)
        raise RunError(f"{path}: another network than the run recorded: {said}")


class FoldEnsemble:
    """A run's fold models, filters and thresholds, loaded once (safely: see :mod:`landslide.checkpoint`); predicts
    batches of 13-channel images as the run recorded (TTA, precision) unless ``tta``/``precision`` override it.

    Each fold's probabilities over the views are calibrated (its out-of-fold threshold goes to 0.5); the ensemble's
    probability is their mean over folds and views, 0 where the majority of the fold filters reject the image.
    """

    def __init__(self, run_dir: Path | str, device: str, batch_size: int, tta: bool | None = None,
                 precision: str | None = None, nan_policy: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.config, self.summary, self.fold_dirs = load_run(self.run_dir)
        self.settings = _settings(self.config, self.run_dir, {"tta": tta, "precision": precision,
                                                           "nan_policy": nan_policy})
        self.tta = bool(self.settings["tta"])
        self.device = resolve_device(device)
        self.bf16 = str(self.settings["precision"]).startswith("bf16") and bf16_supported(self.device.type)
        self.batch_size = batch_size
        self.modules = [load_module(fold_dir / "model.ckpt", self.device) for fold_dir in self.fold_dirs]
        channels = list(self.modules[0].channels)
        for fold_dir, module in zip(self.fold_dirs, self.modules):
            check_recorded_network(fold_dir / "model.ckpt", module.hparams.get("net"), self.config)
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
        ``localised_with``, the method each fold used. ``localise="segment"`` (a run trained with pixel masks):
        ``pixel`` holds each fold's and view's calibrated pixel probabilities (the fold's threshold sent to 0.5,
        as for its patch probabilities), averaged the same way."""
        images = torch.as_tensor(images)
        if features is None:
            with phase(FEATURES):
                features = compute_features(images.cpu().numpy())
        net_in = images if self._picks is None else images.index_select(1, self._picks.to(images.device))
        net_in = net_in.to(self.device)
        per_fold, keeps, methods = [], [], []
        pixel = None
        for module, filt, threshold in zip(self.modules, self.filters, self.thresholds):
            with phase(NETWORK):  # the network's forward (and, localising, backward) passes
                if localise == "segment":
                    views, maps = segment_views(module, net_in, self.batch_size, self.tta, self.device, self.bf16)
                    views, maps = calibrate(views, threshold), calibrate(maps, threshold)
                    score = maps.sum(0)
                    pixel = score if pixel is None else pixel + score
                    per_fold.append(views.cpu().numpy())
                    methods.append("segment")
                elif localise:
                    views, maps, used = localise_views(module, net_in, self.batch_size, self.tta, self.device,
                                                       localise, self.bf16)
                    views = calibrate(views, threshold)
                    score = torch.einsum("vn,vnhw->nhw", views, maps)
                    pixel = score if pixel is None else pixel + score
                    per_fold.append(views.cpu().numpy())
                    methods.append(used)
                else:
                    views = torch.from_numpy(predict_probs(module, net_in, self.batch_size, self.tta, self.device,
                                                           bf16=self.bf16))
                    per_fold.append(calibrate(views, threshold).numpy())
            with phase(FILTER):
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


def check_training_release(root: Path, run_dir: Path, settings: dict) -> None:
    """Before predicting the run's own release: its training split is still the one the run was trained on."""
    recorded = recorded_fingerprint(run_dir)
    if recorded is None:
        return
    if not (root / "Train.csv").is_file():
        log.warning("%s: no Train.csv, so it cannot be checked to be the release %s was trained on", root, run_dir)
        return
    found = cache_key(read_split_index(root, "train"), settings["cloud_threshold"], recorded_nan_policy(run_dir))
    if found != recorded:
        raise RunError(f"{root}: its training split is not the one {run_dir} was trained on (Train.csv or its files "
                       "changed since); to predict another release's Test.csv on purpose, pass data.root=<release>")


def predict_run(run_dir: Path | str, out: Path | str | None, data_root: str | None, cache_dir: str | None,
                batch_size: int, tta: bool | None, device: str, precision: str | None = None,
                nan_policy: str | None = None) -> dict:
    """Predict ``Test.csv`` of the run's release (or of ``data_root``); write submission.csv, predictions.csv and
    predict_summary.json as one set (:class:`OutputSet`: the summary, written last, names the other two).

    Reads only ``Test.csv`` and ``test_data/`` (and, for the run's own release, the training split's file list, to
    check it is the release the run was trained on): statistics, filters and thresholds come from the run. TTA,
    precision and preprocessing follow the run's record unless overridden (with a warning)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    check_predict_options(tta=tta, precision=precision, nan_policy=nan_policy, device=device, batch_size=batch_size)
    out = Path(out) if out else run_dir / "predictions"
    check_prediction_out(run_dir, out)
    with phase(LOAD_RUN):
        ensemble = FoldEnsemble(run_dir, device, batch_size, tta, precision, nan_policy)
    config, summary, fold_dirs, settings = ensemble.config, ensemble.summary, ensemble.fold_dirs, ensemble.settings
    root = Path(data_root or lookup(config, "data.root"))
    with phase(DATA):
        if data_root is None:
            check_training_release(root, run_dir, settings)
        test_index = read_split_index(root, "test")
        log.info("predicting %d test images of %s (%s)", len(test_index.ids), root,
                 "the run's training release" if data_root is None else "data.root")
        split = load_or_build_split(test_index, cache_dir or lookup(config, "data.cache_dir"),
                                    settings["cloud_threshold"], settings["nan_policy"],
                                    int(lookup(config, "data.read_workers", 4)), bool(lookup(config, "data.progress")))
    with phase(FEATURES):
        features = split_features(split)
    result = ensemble.predict(torch.from_numpy(split.images), features)
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
    with phase(WRITE):
        # checked against Test.csv as it is on disk now, not against the list the predictions were made from
        expected = read_split_index(root, "test").ids
        with OutputSet(out / "predict_summary.json") as outputs:
            write_submission(outputs.stage(out / "submission.csv"), ids, labels, expected)
            table.to_csv(outputs.stage(out / "predictions.csv"), index=False)
            elapsed = time.perf_counter() - started
            report = {
                "run_dir": str(run_dir), "data_root": str(root), "out": str(out), "n_test": len(ids),
                "folds": len(fold_dirs), "tta": ensemble.tta, "bf16": ensemble.bf16, "positives": int(labels.sum()),
                "filtered": int(filtered.sum()), "seconds": round(elapsed, 2),
            }
            timing = timing_report()
            if timing is not None:  # the whole command (imports included) by phase; they add up to wall_seconds
                report.update(timing)
            outputs.commit(report)
    log.info("wrote %s (%d IDs, %d positive, %d filtered) in %.1fs", out / "submission.csv", len(ids),
             report["positives"], report["filtered"], elapsed)
    return report
