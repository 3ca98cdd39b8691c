"""One fold's steps, shared by the sequential loop (:mod:`landslide.training.cv`) and the stacked one
(:mod:`landslide.training.stacked`): the fold's filter (fitted on its training part only), its module, callbacks and
loggers, its training, and its score (the whole two-stage pipeline on the whole validation part)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from landslide.callbacks import EnergyCallback, MetricHistory, ResumeState
from landslide.checkpoint import load_module, network_weights, read_checkpoint
from landslide.data.datamodule import LandslideDataModule
from landslide.errors import ConfigError, RunError, first_line
from landslide.files import atomic_output
from landslide.filter.negative import filter_report, load_filter
from landslide.metrics import calibrate, f1_at, f1_optimal_threshold
from landslide.module import LandslideModule
from landslide.plots.curves import f1_curve_figure
from landslide.plots.samples import plot_split_sample
from landslide.prediction import predict_probs
from landslide.training.loggers import build_loggers, finish_loggers, log_figure
from landslide.training.ranks import is_rank_zero, wait_for_rank_zero

log = logging.getLogger(__name__)


@contextmanager
def option_errors(group: str) -> Iterator[None]:
    """A config group whose object refuses its options: one :class:`ConfigError` line naming the group."""
    try:
        yield
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{group}: {first_line(cause)}") from None
    except (ValueError, KeyError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{group}: {first_line(err)}") from None


def build_datamodule(cfg: DictConfig) -> LandslideDataModule:
    with option_errors("data"):
        dm: LandslideDataModule = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    return dm


def build_module(cfg: DictConfig, dm: LandslideDataModule) -> LandslideModule:
    """The LightningModule ``model._target_`` names (LandslideModule or a subclass) for the current fold, built from
    the ``model`` config with the fold's band set and statistics. Every other ``_target_`` of the node is built too
    (the optimiser and scheduler factories, ``_partial_``); the network alone is passed as its plain settings, for
    the module to build through the allow-list of :func:`landslide.models.build_network`, as a checkpoint is."""
    with option_errors("model"):
        try:
            target = get_class(cfg.model._target_)
        except (ImportError, ValueError):
            target = None
        if not (isinstance(target, type) and issubclass(target, LandslideModule)):
            raise ValueError(f"_target_ {cfg.model._target_!r} is not LandslideModule or a subclass of it")
        built = {key: instantiate(node, _convert_="all") for key, node in cfg.model.items()
                 if key != "net" and OmegaConf.is_dict(node) and "_target_" in node}
        return instantiate(cfg.model, channels=list(dm.channels), norm_mean=list(dm.norm_mean),
                           norm_std=list(dm.norm_std), **built, _recursive_=False, _convert_="all")


def build_callbacks(cfg: DictConfig, fold_dir: Path) -> list[Callback]:
    """The configured callbacks for one fold; progress bars are left out when ``trainer.enable_progress_bar``
    is false (Lightning refuses the pair). Checkpoint callbacks write under the fold's folder, energy callbacks
    there too."""
    callbacks: list[Callback] = []
    progress_bar = cfg.trainer.enable_progress_bar
    for _, entry in (cfg.get("callbacks") or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        cls = get_class(entry["_target_"])
        if not progress_bar and issubclass(cls, ProgressBar):
            continue
        extra: dict[str, Any] = {}
        if issubclass(cls, ModelCheckpoint):
            extra["dirpath"] = str(fold_dir / "checkpoints")
        if issubclass(cls, EnergyCallback):
            extra["output_dir"] = str(fold_dir)
        callbacks.append(instantiate(entry, **extra))
    callbacks.extend([MetricHistory(), ResumeState()])
    return callbacks


def find_callback(callbacks: list[Callback], kind: type) -> Any:
    return next((c for c in callbacks if isinstance(c, kind)), None)


def fit_fold_filter(cfg: DictConfig, feats: np.ndarray, labels: np.ndarray, train_part: np.ndarray,
                    val_part: np.ndarray, fold_dir: Path) -> tuple[Any, np.ndarray, np.ndarray, dict]:
    """Fit the fold's filter on its training part only, save it, and report what it keeps on both parts.

    With several processes (DDP) rank zero fits and saves it; the others wait for it and load the saved filter."""
    lead = is_rank_zero()
    if lead:
        with option_errors("filter"):
            filt = instantiate(cfg.filter)
        filt.fit(feats[train_part], labels[train_part], index=train_part)
        filt.save(fold_dir)
    wait_for_rank_zero()
    if not lead:
        filt = load_filter(fold_dir)
    keep_train = filt.keep(feats[train_part])
    keep_val = filt.keep(feats[val_part])
    report = {
        "kind": filt.kind,
        "threshold": float(filt.threshold),
        "train": filter_report(keep_train, labels[train_part]),
        "val": filter_report(keep_val, labels[val_part]),
        "calibration": getattr(filt, "calibration", {}),
    }
    return filt, keep_train, keep_val, report


def check_initial_weights(path: str, channels: list[str]) -> None:
    """Before any fold trains: ``init_weights`` is a readable checkpoint of a network on the same channels."""
    settings = read_checkpoint(path).get("hyper_parameters")
    trained_on = settings.get("channels") if isinstance(settings, dict) else None
    if trained_on is not None and list(trained_on) != channels:
        raise ConfigError(f"init_weights={path}: trained on channels {list(trained_on)}, this run uses {channels} "
                          "(another data.bands); start from weights of the same band set")


def load_initial_weights(module: LandslideModule, path: str) -> None:
    """Fine-tuning: the network weights of a checkpoint (the optimiser starts fresh), read without running code."""
    weights = network_weights(path)
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shapes differ
        raise ConfigError(f"init_weights={path} does not fit this model: "
                          f"{str(err).strip().splitlines()[-1].strip()}") from None
    missing = [k for k in missing if k.startswith("net.")]
    if missing or unexpected:
        raise ConfigError(f"init_weights={path} does not fit this model: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")


def resume_point(last: Path) -> str | None:
    """The checkpoint an interrupted fold continues from (None: none), read first without running code: a damaged
    or foreign one stops with one line naming it, not inside Lightning."""
    if not last.is_file():
        return None
    try:
        read_checkpoint(last)
    except RunError as err:
        raise RunError(f"{err}; delete it to train the fold again from its start") from None
    return str(last)


def fit_fold_network(cfg: DictConfig, dm: LandslideDataModule, fold: int, fold_dir: Path
                     ) -> tuple[LandslideModule, L.Trainer, list[Callback]]:
    """Train the fold's network (resuming from ``checkpoints/last.ckpt`` if present) and save ``model.ckpt``."""
    module = build_module(cfg, dm)
    if cfg.get("init_weights"):
        load_initial_weights(module, cfg.init_weights)
        log.info("fold %d starts from the weights of %s", fold, cfg.init_weights)
    callbacks = build_callbacks(cfg, fold_dir)
    loggers = build_loggers(cfg, fold, fold_dir)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(fold_dir))
    last = fold_dir / "checkpoints" / "last.ckpt"
    figures = bool(cfg.log_figures) and is_rank_zero()  # PNGs in the fold's figures/, and to the loggers
    if figures:
        positive = int(dm.val_index[np.argmax(dm.labels[dm.val_index])])
        figure = plot_split_sample(dm.gather, dm.channels, positive, labels=dm.labels, ids=dm.train_ids)
        log_figure(loggers, "samples/validation_positive", figure, folder=fold_dir / "figures")
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_point(last), weights_only=True)
        history = find_callback(callbacks, MetricHistory)
        if figures and history.history:
            figure = f1_curve_figure(history.history, f"{cfg.name}, fold {fold}")
            log_figure(loggers, "curves/val_f1", figure, step=trainer.global_step, folder=fold_dir / "figures")
    finally:
        finish_loggers(loggers)
    if trainer.interrupted:
        raise KeyboardInterrupt(f"fold {fold} was interrupted; run again with the same run directory to resume")

    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    model_path = fold_dir / "model.ckpt"
    if not trainer.is_global_zero:  # every process takes part in saving; rank zero writes
        trainer.save_checkpoint(model_path, weights_only=True)
    elif cfg.epoch_selection == "best" and checkpoint is not None and checkpoint.best_model_path:
        log.warning("fold %d: using the best epoch on the validation fold; its CV score is optimistically biased",
                    fold)
        with atomic_output(model_path) as tmp:
            shutil.copyfile(checkpoint.best_model_path, tmp)
        module = load_module(model_path)
    else:
        with atomic_output(model_path) as tmp:
            trainer.save_checkpoint(tmp, weights_only=True)
    return module, trainer, callbacks


def network_probs(cfg: DictConfig, module: LandslideModule, dm: LandslideDataModule, index: np.ndarray,
                  device: torch.device) -> np.ndarray:
    """Mean probability over the test-time views of training rows ``index``."""
    images = dm.gather("train", index)
    return predict_probs(module, images, cfg.data.eval_batch_size, bool(cfg.tta), device).mean(0)


def train_fold(cfg: DictConfig, dm: LandslideDataModule, fold: int, feats: np.ndarray, fold_dir: Path) -> dict:
    """Filter, train and score one fold; save its artefacts; return its result."""
    started = time.perf_counter()
    labels = dm.labels
    train_part, val_part = dm.folds()[fold]
    filt, keep_train, keep_val, report = fit_fold_filter(cfg, feats, labels, train_part, val_part, fold_dir)
    result: dict[str, Any] = {"fold": fold, "filter": report}
    if cfg.stage == "filter":
        result["wall_seconds"] = round(time.perf_counter() - started, 2)
        return result

    L.seed_everything(int(cfg.seed) + fold, workers=True)
    dm.set_fold(fold, train_keep=keep_train, val_keep=keep_val)
    module, trainer, callbacks = fit_fold_network(cfg, dm, fold, fold_dir)
    if not trainer.is_global_zero:
        return result

    device = trainer.strategy.root_device
    result.update(score_fold(cfg, dm, module, filt, feats, val_part, keep_val, device))
    energy = find_callback(callbacks, EnergyCallback)
    history = find_callback(callbacks, MetricHistory)
    result.update({
        "epochs": int(trainer.current_epoch),
        "epoch_selection": cfg.epoch_selection,
        "energy_wh": energy.wh if energy else None,
        "history": history.history,
        "wall_seconds": round(time.perf_counter() - started, 2),
    })
    result["oof"] = result.pop("oof")
    return result


def score_fold(cfg: DictConfig, dm: LandslideDataModule, module: LandslideModule, filt: Any, feats: np.ndarray,
               val_part: np.ndarray, keep_val: np.ndarray, device: torch.device) -> dict:
    """The whole two-stage pipeline on the whole validation part (filtered images are predicted negative): F1 at
    0.5 and at the fold's F1-optimal threshold, the out-of-fold probabilities, and the held-out rows if any."""
    labels = dm.labels
    prob = network_probs(cfg, module, dm, val_part, device) * keep_val
    threshold, best_f1 = f1_optimal_threshold(prob, labels[val_part])
    result: dict[str, Any] = {}
    holdout = dm.holdout_index
    if len(holdout):
        hold_prob = calibrate(torch.from_numpy(network_probs(cfg, module, dm, holdout, device)), threshold).numpy()
        result["holdout"] = {"index": holdout.tolist(), "prob": (hold_prob * filt.keep(feats[holdout])).tolist()}
    result.update({
        "n_val": len(val_part),
        "f1_at_0.5": f1_at(prob, labels[val_part], 0.5),
        "f1_at_threshold": best_f1,
        "threshold": threshold,
        "oof": {"index": val_part.tolist(), "prob": prob.tolist(), "keep": np.asarray(keep_val).tolist()},
    })
    return result
