"""One fold's steps, shared by the sequential loop (:mod:`landslide.training.cv`) and the stacked one
(:mod:`landslide.training.stacked`): the fold's filter (fitted on its training part only), its module, callbacks and
loggers, its training, and its score (the whole two-stage pipeline on the whole validation part)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from landslide.callbacks import EnergyCallback, FitPhases, MetricHistory, ResumeState, ValidateLastEpoch
from landslide.callbacks.phases import CHECKPOINTS
from landslide.checkpoint import load_module, network_weights, read_checkpoint
from landslide.data.datamodule import LandslideDataModule
from landslide.errors import ConfigError, RunError, first_line
from landslide.files import atomic_output
from landslide.filter.negative import filter_report, load_filter
from landslide.hardware import bf16_supported
from landslide.metrics import calibrate, f1_at, f1_optimal_threshold
from landslide.models import import_network_module, trust_networks
from landslide.module import LandslideModule
from landslide.plots.curves import f1_curve_figure
from landslide.plots.samples import plot_split_sample
from landslide.prediction import predict_probs
from landslide.timing import phase
from landslide.training.loggers import build_loggers, finish_loggers, log_figure
from landslide.training.ranks import is_rank_zero, wait_for_rank_zero

log = logging.getLogger(__name__)

# phases of a training run (landslide.timing) that the fold's steps mark; the fit's own are in callbacks.phases
SETUP = "setup"  # module, callbacks, trainer
LIGHTNING = "lightning"  # Trainer.fit's own set-up, hooks and tear-down (FitPhases splits out the rest)
SCORING = "scoring"  # out-of-fold predictions with test-time views
LOGGERS = "loggers"  # loggers made, replayed, finished; figures


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


def training_device(cfg: DictConfig) -> torch.device:
    """The device ``cfg.trainer`` trains on (this process's GPU under DDP), known before the trainer is built."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


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
        # the user's own network classes that this config trusts: registered here, never passed to the module (so
        # never in a checkpoint)
        trust_networks(list(cfg.model.get("trusted_networks") or []))
        # the config is the user's: its network's module is imported, so that classes decorated there register
        import_network_module(str(cfg.model.net.get("_target_")))
        settings = OmegaConf.to_container(cfg.model, resolve=True)
        node = OmegaConf.create({k: v for k, v in settings.items() if k != "trusted_networks"})
        built = {key: instantiate(value, _convert_="all") for key, value in node.items()
                 if key != "net" and OmegaConf.is_dict(value) and "_target_" in value}
        return instantiate(node, channels=list(dm.channels), norm_mean=list(dm.norm_mean),
                           norm_std=list(dm.norm_std), **built, _recursive_=False, _convert_="all")


def build_callbacks(cfg: DictConfig, fold_dir: Path) -> list[Callback]:
    """The configured callbacks for one fold; progress bars are left out when ``trainer.enable_progress_bar``
    is false (Lightning refuses the pair), and a monitored checkpoint (the best epoch) unless
    ``epoch_selection=best`` reads it. Checkpoint callbacks write under the fold's folder, energy callbacks there
    too. Entries that are not callbacks (``callbacks.keep_checkpoints``) are settings."""
    callbacks: list[Callback] = []
    progress_bar = cfg.trainer.enable_progress_bar
    for _, entry in (cfg.get("callbacks") or {}).items():
        if not OmegaConf.is_dict(entry) or "_target_" not in entry:
            continue
        cls = get_class(entry["_target_"])
        if not progress_bar and issubclass(cls, ProgressBar):
            continue
        extra: dict[str, Any] = {}
        if issubclass(cls, ModelCheckpoint):
            if entry.get("monitor") and cfg.epoch_selection != "best":
                continue  # nothing else reads the best epoch's checkpoint
            extra["dirpath"] = str(fold_dir / "checkpoints")
        if issubclass(cls, EnergyCallback):
            extra["output_dir"] = str(fold_dir)
        callbacks.append(instantiate(entry, **extra))
    callbacks.extend([MetricHistory(), ResumeState(), ValidateLastEpoch(), FitPhases()])
    return callbacks


def drop_checkpoints(cfg: DictConfig, folder: Path) -> None:
    """Remove a finished fold's (or stacked folds') ``checkpoints/`` (``last.ckpt``, the best epoch's copy): a
    finished fold is never resumed and prediction reads ``model.ckpt``. Kept with ``callbacks.keep_checkpoints``."""
    if OmegaConf.select(cfg, "callbacks.keep_checkpoints", default=False):
        return
    with phase(CHECKPOINTS):
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)


def save_weights(trainer: L.Trainer, path: Path) -> None:
    """``model.ckpt``: the trained weights as a weights-only Lightning checkpoint, written atomically and finished
    before returning (also with an asynchronous checkpoint plugin)."""
    with phase(CHECKPOINTS), atomic_output(path) as tmp:
        trainer.save_checkpoint(tmp, weights_only=True)
        trainer.strategy.checkpoint_io.teardown()  # waits for a write in a thread


def build_trainer(cfg: DictConfig, name: int | str, folder: Path) -> tuple[L.Trainer, list[Callback], list[Logger]]:
    """The Trainer of one fold (or of stacked folds) writing under ``folder``, with its callbacks and loggers
    (``name``: the fold, or the stack's tag)."""
    with phase(SETUP):
        callbacks = build_callbacks(cfg, folder)
    with phase(LOGGERS):
        loggers = build_loggers(cfg, name, folder)
    with phase(SETUP):
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                         default_root_dir=str(folder))
    return trainer, callbacks, loggers


def find_callback(callbacks: list[Callback], kind: type) -> Any:
    return next((c for c in callbacks if isinstance(c, kind)), None)


@dataclass
class FoldFilter:
    """A fold's fitted filter, what it keeps of the fold's training and validation parts, its report, and the
    seconds its fit took."""

    filt: Any
    keep_train: np.ndarray
    keep_val: np.ndarray
    report: dict
    seconds: float


def filter_workers(cfg: DictConfig, pending: int) -> int:
    """How many folds' filters ``cv.parallel_filters`` fits at once: ``auto`` as many as the host's cores hold at
    ``filter.params.n_jobs`` threads each (1 where a fit takes every core), at most the pending folds."""
    value = str(cfg.cv.parallel_filters)
    if value == "auto":
        threads = OmegaConf.select(cfg, "filter.params.n_jobs", default=1)
        threads = int(threads) if threads is not None else 1
        workers = 1 if threads <= 0 else max(1, (os.cpu_count() or 1) // threads)
    elif value.isdigit() and int(value) >= 1:
        workers = int(value)
    else:
        raise ConfigError(f"cv.parallel_filters must be auto or a positive integer, got {value!r}")
    return max(1, min(workers, pending))


def fit_filters(cfg: DictConfig, feats: np.ndarray, labels: np.ndarray, parts: dict[int, tuple[np.ndarray, np.ndarray]],
                out: Path) -> dict[int, FoldFilter]:
    """Fit each fold's filter on its training part only (``filter.fit``, whatever it is), save it in
    ``folds/fold_<k>/``, and report what it keeps of both parts. ``cv.parallel_filters`` folds at once, in threads
    (the fits release the GIL; each is seeded, so the filters are those of fits one after another).

    With several processes (DDP) rank zero fits and saves them; the others wait for it and load the saved filters."""
    lead = is_rank_zero()
    folders = {fold: out / "folds" / f"fold_{fold}" for fold in parts}
    fitted: dict[int, FoldFilter] = {}

    def kept(fold: int, filt: Any, seconds: float) -> FoldFilter:
        train_part, val_part = parts[fold]
        keep_train, keep_val = filt.keep(feats[train_part]), filt.keep(feats[val_part])
        report = {
            "kind": filt.kind,
            "threshold": float(filt.threshold),
            "train": filter_report(keep_train, labels[train_part]),
            "val": filter_report(keep_val, labels[val_part]),
            "calibration": getattr(filt, "calibration", {}),
        }
        return FoldFilter(filt, keep_train, keep_val, report, seconds)

    if lead:
        with option_errors("filter"):
            filters = {fold: instantiate(cfg.filter) for fold in parts}  # configs are read on this thread only

        def fit(fold: int) -> None:
            started = time.perf_counter()
            filt, train_part = filters[fold], parts[fold][0]
            filt.fit(feats[train_part], labels[train_part], index=train_part)
            filt.save(folders[fold])
            fitted[fold] = kept(fold, filt, time.perf_counter() - started)

        workers = filter_workers(cfg, len(parts))
        log.info("fitting the filters of %d fold(s), %d at once", len(parts), workers)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fit, parts))  # re-raises a fit's error here
    wait_for_rank_zero()
    if not lead:
        fitted = {fold: kept(fold, load_filter(folders[fold]), 0.0) for fold in parts}
    return {fold: fitted[fold] for fold in parts}


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
    with phase(SETUP):
        module = build_module(cfg, dm)
        if cfg.get("init_weights"):
            load_initial_weights(module, cfg.init_weights)
            log.info("fold %d starts from the weights of %s", fold, cfg.init_weights)
    trainer, callbacks, loggers = build_trainer(cfg, fold, fold_dir)
    last = fold_dir / "checkpoints" / "last.ckpt"
    figures = bool(cfg.log_figures) and is_rank_zero()  # PNGs in the fold's figures/, and to the loggers
    if figures:
        with phase(LOGGERS):
            positive = int(dm.val_index[np.argmax(dm.labels[dm.val_index])])
            figure = plot_split_sample(dm.gather, dm.channels, positive, labels=dm.labels, ids=dm.train_ids)
            log_figure(loggers, "samples/validation_positive", figure, folder=fold_dir / "figures")
    try:
        with phase(LIGHTNING):
            trainer.fit(module, datamodule=dm, ckpt_path=resume_point(last), weights_only=True)
        history = find_callback(callbacks, MetricHistory)
        if figures and history.history:
            with phase(LOGGERS):
                figure = f1_curve_figure(history.history, f"{cfg.name}, fold {fold}")
                log_figure(loggers, "curves/val_f1", figure, step=trainer.global_step, folder=fold_dir / "figures")
    finally:
        with phase(LOGGERS):
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
        with phase(CHECKPOINTS), atomic_output(model_path) as tmp:
            shutil.copyfile(checkpoint.best_model_path, tmp)
        module = load_module(model_path)
    else:
        save_weights(trainer, model_path)
    return module, trainer, callbacks


def scoring_bf16(cfg: DictConfig, device: torch.device) -> bool:
    """Whether out-of-fold scoring runs in bf16 autocast: as the folds trained and validated
    (``trainer.precision``), where the device runs it fast (as prediction decides from a run's precision)."""
    return str(cfg.trainer.precision).startswith("bf16") and bf16_supported(device.type)


def network_probs(cfg: DictConfig, module: LandslideModule, dm: LandslideDataModule, index: np.ndarray,
                  device: torch.device) -> np.ndarray:
    """Mean probability over the test-time views of training rows ``index``."""
    images = dm.gather("train", index)
    return predict_probs(module, images, cfg.data.eval_batch_size, bool(cfg.tta), device,
                         bf16=scoring_bf16(cfg, device)).mean(0)


def train_fold(cfg: DictConfig, dm: LandslideDataModule, fold: int, feats: np.ndarray, fold_dir: Path,
               fitted: FoldFilter) -> dict:
    """Train and score one fold with its fitted filter; save its artefacts; return its result."""
    started = time.perf_counter()
    result: dict[str, Any] = {"fold": fold, "filter": fitted.report}
    if cfg.stage == "filter":
        result["features_oof"] = features_oof(fitted.filt, feats, dm.folds()[fold][1])
        result["wall_seconds"] = round(fitted.seconds, 2)
        return result

    L.seed_everything(int(cfg.seed) + fold, workers=True)
    dm.set_fold(fold, train_keep=fitted.keep_train, val_keep=fitted.keep_val)
    module, trainer, callbacks = fit_fold_network(cfg, dm, fold, fold_dir)
    if not trainer.is_global_zero:
        return result

    device = trainer.strategy.root_device
    val_part = dm.folds()[fold][1]
    with phase(SCORING):
        result.update(score_fold(cfg, dm, module, fitted.filt, feats, val_part, fitted.keep_val, device))
    energy = find_callback(callbacks, EnergyCallback)
    history = find_callback(callbacks, MetricHistory)
    result.update({
        "epochs": int(trainer.current_epoch),
        "epoch_selection": cfg.epoch_selection,
        "energy_wh": energy.wh if energy else None,
        "history": history.history,
        # this fold's own seconds: its filter's fit and its training and scoring
        "wall_seconds": round(time.perf_counter() - started + fitted.seconds, 2),
    })
    result["oof"] = result.pop("oof")
    return result


def features_oof(filt: Any, feats: np.ndarray, val_part: np.ndarray) -> dict | None:
    """The filter's features + XGBoost classifier as a baseline: its scores of the validation part (it was fitted on
    the training part only), or None for a filter without a model (``filter=none``)."""
    if getattr(filt, "model", None) is None:
        return None
    return {"index": val_part.tolist(), "score": np.round(filt.scores(feats[val_part]), 6).tolist()}


def score_fold(cfg: DictConfig, dm: LandslideDataModule, module: LandslideModule, filt: Any, feats: np.ndarray,
               val_part: np.ndarray, keep_val: np.ndarray, device: torch.device) -> dict:
    """The whole two-stage pipeline on the whole validation part (filtered images are predicted negative): F1 at
    0.5 and at the fold's F1-optimal threshold, the out-of-fold probabilities (also the network's alone), the filter's
    classifier's scores (the run's baseline), and the held-out rows if any."""
    holdout = dm.holdout_index
    hold_net = network_probs(cfg, module, dm, holdout, device) if len(holdout) else None
    return score_probs(dm, filt, feats, val_part, keep_val, network_probs(cfg, module, dm, val_part, device),
                       hold_net)


def score_probs(dm: LandslideDataModule, filt: Any, feats: np.ndarray, val_part: np.ndarray, keep_val: np.ndarray,
                val_net: np.ndarray, hold_net: np.ndarray | None) -> dict:
    """:func:`score_fold` from the network's probabilities (mean over the test-time views) of the validation part
    and of the held-out rows (``dm.holdout_index``; None when there are none)."""
    labels = dm.labels
    if not (np.isfinite(val_net).all() and (hold_net is None or np.isfinite(hold_net).all())):
        raise RunError("the network's out-of-fold probabilities are not numbers (NaN): its training diverged; lower "
                       "model.optimizer.lr, or train in full precision (trainer.precision=32-true)")
    prob = val_net * keep_val
    threshold, best_f1 = f1_optimal_threshold(prob, labels[val_part])
    result: dict[str, Any] = {}
    holdout = dm.holdout_index
    if hold_net is not None and len(holdout):
        hold_prob = calibrate(torch.from_numpy(hold_net), threshold).numpy()
        result["holdout"] = {"index": holdout.tolist(), "prob": (hold_prob * filt.keep(feats[holdout])).tolist()}
    result.update({
        "n_val": len(val_part),
        "f1_at_0.5": f1_at(prob, labels[val_part], 0.5),
        "f1_at_threshold": best_f1,
        "threshold": threshold,
        "oof": {"index": val_part.tolist(), "prob": prob.tolist(), "keep": np.asarray(keep_val).tolist(),
                "network_prob": np.asarray(val_net).tolist()},
        "features_oof": features_oof(filt, feats, val_part),
    })
    return result
