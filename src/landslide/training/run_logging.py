"""The whole run on the loggers, read from the ``cv_summary.json`` dict once it is written (so that every key added
to the summary reaches them without change here):

- the run's figures as PNGs in ``figures/`` (``log_figures``): precision-recall curve and confusion matrix of the
  out-of-fold predictions at the run's threshold, validation F1 and losses per epoch (mean over folds), samples
  with their out-of-fold probability;
- a W&B run per ``logger`` entry of W&B (job type ``cv``, named after the approach, in the group of its folds):
  its summary holds the summary's figures, its history the mean curves per epoch, with the folds and the
  out-of-fold predictions as tables, the figures as images and, with ``log_model``, every fold's checkpoint and
  filter as one model artifact;
- a TensorBoard HParams session per TensorBoard entry (``<save_dir>/<name>/cv``): the settings that define the run
  (``run.json``) with the summary's metrics, the curves and the figures.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from landslide.cv_results import epoch_curve, epoch_rows, flat, summary_metrics, summary_values
from landslide.data.datamodule import LandslideDataModule
from landslide.files import read_json
from landslide.plots.curves import mean_curves_figure, save_figure
from landslide.plots.run import confusion_figure, pr_curve_figure, prediction_samples_figure
from landslide.run_record import MANIFEST
from landslide.training.loggers import logger_entries, remembered, wandb_group

log = logging.getLogger(__name__)

#: the run's summary, and its figures beside it
SUMMARY = "cv_summary.json"
FIGURES = "figures"
#: samples drawn of each outcome (true/false positive/negative) in the samples figure
SAMPLES_PER_OUTCOME = 2
#: where a run keeps the id of its own W&B run (a resumed run continues it)
WANDB_ID = "wandb_cv_id"


# ------------------------------------------------------------------------------------------ figures
def pick_samples(oof: pd.DataFrame, threshold: float, per_outcome: int = SAMPLES_PER_OUTCOME) -> pd.DataFrame:
    """Out-of-fold rows to show: the most confident true positives and false positives, the least confident
    false negatives and true negatives, ``per_outcome`` of each, with an ``outcome`` column."""
    pred, label = oof["prob"] >= threshold, oof["label"] == 1
    picks = []
    for name, mask, highest in (("TP", pred & label, True), ("FP", pred & ~label, True),
                                ("FN", ~pred & label, False), ("TN", ~pred & ~label, False)):
        part = oof[mask].sort_values("prob", ascending=not highest, kind="stable").head(per_outcome)
        picks.append(part.assign(outcome=[f"{name}, filtered" if f else name for f in part["filtered"]]))
    return pd.concat(picks)


def write_figures(cfg: DictConfig, out: Path, summary: dict, dm: LandslideDataModule) -> dict[str, Path]:
    """The run's figures as PNGs in ``out/figures``; their paths by name."""
    folder, name = out / FIGURES, str(cfg.name)
    paths: dict[str, Path] = {}

    def save(key: str, figure) -> None:
        paths[key] = folder / f"{key}.png"
        save_figure(figure, paths[key])

    n_folds = len(summary.get("folds", []))
    f1 = {label: epoch_curve(summary, key) for key, label in (("val/f1", "F1 at 0.5"),
                                                               ("val/f1_best", "F1 at each fold's best threshold"))}
    if any(len(m) for m, _ in f1.values()):
        save("f1_per_epoch", mean_curves_figure(f1, "validation F1", f"{name}: mean over {n_folds} folds (± std)",
                                                f1=True))
    loss = {label: epoch_curve(summary, key) for key, label in (("train/loss", "training"),
                                                                ("val/loss", "validation"))}
    if any(len(m) for m, _ in loss.values()):
        save("loss_per_epoch", mean_curves_figure(loss, "loss", f"{name}: mean over {n_folds} folds (± std)"))
    oof_path = out / "oof_predictions.csv"
    if summary.get("oof_f1") is None or not oof_path.is_file():
        return paths
    oof = pd.read_csv(oof_path)
    threshold = float(summary["oof_threshold"])
    title = f"{name}: out-of-fold, {len(oof)} images"
    save("pr_curve", pr_curve_figure(oof["label"].to_numpy(), oof["prob"].to_numpy(), threshold, title))
    save("confusion_matrix", confusion_figure(oof["label"].to_numpy(), oof["prob"].to_numpy(), threshold,
                                              f"{title}, F1 {summary['oof_f1']:.3f}"))
    picks = pick_samples(oof, threshold)
    row_of = {sample_id: i for i, sample_id in enumerate(dm.train_ids)}
    images = np.asarray(dm.gather("train", [row_of[i] for i in picks["ID"]]), dtype=np.float32)
    save("samples", prediction_samples_figure(list(images), dm.channels, list(picks["ID"]), list(picks["label"]),
                                              list(picks["prob"]), list(picks["outcome"]), threshold))
    return paths


# ------------------------------------------------------------------------------------------ W&B
def _fold_table(summary: dict):
    import wandb

    rows = [flat({k: v for k, v in f.items() if k != "history"}) for f in summary.get("folds", [])]
    frame = pd.DataFrame(rows)
    for column in frame.columns:  # one type per column: lists and mixed values as text
        if frame[column].map(lambda v: isinstance(v, list | dict)).any():
            frame[column] = frame[column].map(json.dumps)
    return wandb.Table(dataframe=frame)


def _model_artifact(run, out: Path, summary: dict):
    """Every fold's network and filter, the run record and the summary: all prediction needs, as one artifact.
    Files are referenced where they lie (immutable), not copied into W&B's staging folder."""
    import wandb

    artifact = wandb.Artifact(f"model-{run.id}", type="model",
                              metadata={k: v for k, v in summary_metrics(summary).items() if not k.startswith("_")})
    for name in (MANIFEST, SUMMARY):
        if (out / name).is_file():
            artifact.add_file(str(out / name), name=name, policy="immutable")
    for fold_dir in sorted((out / "folds").glob("fold_*")):
        for path in sorted(fold_dir.iterdir()):
            if path.is_file() and (path.name == "model.ckpt" or path.name.startswith("filter.")):
                artifact.add_file(str(path), name=f"{fold_dir.name}/{path.name}", policy="immutable")
    return artifact


def log_wandb_run(cfg: DictConfig, entry: DictConfig, out: Path, summary: dict, figures: dict[str, Path]) -> str:
    """The run's own W&B run for logger entry ``entry``; returns its id (kept in ``out/wandb_cv_id``)."""
    import wandb

    settings = OmegaConf.to_container(entry, resolve=True)
    run_id = remembered(out / WANDB_ID, uuid.uuid4().hex[:12])
    init = {k: settings[k] for k in ("project", "entity", "notes") if settings.get(k) is not None}
    with wandb.init(**init, id=run_id, resume="allow", name=str(cfg.name), job_type="cv",
                    group=wandb_group(out, settings.get("group")), tags=list(settings.get("tags") or []),
                    dir=str(settings.get("save_dir") or settings.get("dir") or out),
                    mode="offline" if settings.get("offline") else None, reinit="finish_previous",
                    config=OmegaConf.to_container(cfg, resolve=True)) as run:
        run.define_metric("epoch")
        run.define_metric("cv/*", step_metric="epoch")
        for row in epoch_rows(summary):
            run.log(row)
        media: dict[str, Any] = {"folds": _fold_table(summary)}
        oof_path = out / "oof_predictions.csv"
        if summary.get("oof_f1") is not None and oof_path.is_file():
            media["oof_predictions"] = wandb.Table(dataframe=pd.read_csv(oof_path))
        media.update({f"figures/{key}": wandb.Image(str(path)) for key, path in figures.items()})
        run.log(media)
        run.summary.update(summary_values(summary))
        if settings.get("log_model"):
            run.log_artifact(_model_artifact(run, out, summary), aliases=["latest"])
        return run.id


# ------------------------------------------------------------------------------------------ TensorBoard
def _hparam(value: Any) -> str | int | float | bool:
    return value if isinstance(value, str | int | float | bool) else json.dumps(value)


def run_hparams(cfg: DictConfig, out: Path) -> dict[str, str | int | float | bool]:
    """The approach's name, the config groups chosen and the settings that define the run (``run.json``)."""
    params: dict[str, Any] = {"name": str(cfg.name)}
    if HydraConfig.initialized():
        params.update({f"choice.{group}": str(choice) for group, choice in HydraConfig.get().runtime.choices.items()
                       if not group.startswith("hydra") and choice is not None})
    if (out / MANIFEST).is_file():
        params.update(flat(read_json(out / MANIFEST).get("defining", {}), sep="."))
    return {k: _hparam(v) for k, v in params.items()}


def log_tensorboard_session(cfg: DictConfig, entry: DictConfig, out: Path, summary: dict,
                            figures: dict[str, Path]) -> Path:
    """The run as one TensorBoard HParams session in ``<save_dir>/<name>/cv``, written anew from the summary;
    returns its folder."""
    import matplotlib.pyplot as plt

    logger: TensorBoardLogger = instantiate(entry, version="cv")
    folder = Path(logger.log_dir)
    for old in folder.glob("events.out.tfevents.*"):  # an earlier invocation's session: the summary replaces it
        old.unlink()
    logger.log_hyperparams(run_hparams(cfg, out), {f"cv/{k}": v for k, v in summary_metrics(summary).items()})
    for row in epoch_rows(summary):
        epoch = row.pop("epoch")
        logger.log_metrics(row, step=epoch)
    for key, path in figures.items():
        logger.experiment.add_image(f"figures/{key}", plt.imread(path)[..., :3], dataformats="HWC")
    logger.finalize("success")
    return folder


# ------------------------------------------------------------------------------------------ the run
def log_run(cfg: DictConfig, out: Path, dm: LandslideDataModule) -> dict[str, Path]:
    """Figures, W&B run and TensorBoard session of a run whose ``cv_summary.json`` is written (rank zero only);
    returns the figures' paths."""
    summary = read_json(out / SUMMARY)
    figures = write_figures(cfg, out, summary, dm) if cfg.get("log_figures") else {}
    for entry in logger_entries(cfg, WandbLogger):
        run_id = log_wandb_run(cfg, entry, out, summary, figures)
        log.info("W&B run %s (job type cv) holds the run's summary, tables and figures", run_id)
    for entry in logger_entries(cfg, TensorBoardLogger):
        folder = log_tensorboard_session(cfg, entry, out, summary, figures)
        log.info("TensorBoard HParams session: %s", folder)
    return figures
