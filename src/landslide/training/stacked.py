"""All K folds at once on one device: the fold networks as stacked weights, one ``vmap``-ed step on K batches.

Each fold keeps what the sequential loop gives it: its filter (fitted on its training part), its filtered training
stream, its normalisation statistics, its initial weights (seeded ``seed + fold``), its BatchNorm statistics, its
validation fold and its metrics (logged as ``val/<metric>/fold_<k>``). The networks train as one
:class:`~landslide.training.stacked_module.StackedLandslideModule` (stacked weights, one ``vmap``-ed step).

**Equal step counts.** All folds take a step together, with ``b = min(batch_size, smallest fold)`` images each.
An epoch is ``max_k round(n_k / b)`` steps for every fold, ``n_k`` being the images fold k's filter kept: the
fold with the most images sees each of them once per epoch, exactly the batches the sequential loop gives it;
a fold with fewer images goes on through its own endless permutation stream (``IndexBatches``, seeded as in the
sequential loop), so each epoch it sees a few of its images twice and none never. With equal step counts the
folds' learning-rate schedules (warm-up, cosine) are one and the same schedule.

Validation runs all folds in one batched pass: their index lists are padded to the longest, predictions land in a
(K, longest) tensor on the device and the metrics of each fold are computed on its own part once per epoch.
At the end the stack is split into ordinary ``folds/fold_<k>/model.ckpt`` checkpoints of ``LandslideModule`` and
scored fold by fold with the sequential loop's own helpers, so the run directory is the same. The stacked module's
``last.ckpt`` (under ``stacked/folds_<...>/checkpoints``) is written every epoch; a rerun resumes from it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from landslide.callbacks import EnergyCallback, MetricHistory
from landslide.data.batches import IndexBatches
from landslide.data.datamodule import LandslideDataModule
from landslide.files import atomic_output
from landslide.module import LandslideModule
from landslide.plots.curves import f1_curve_figure
from landslide.training.fold import (
    build_callbacks,
    build_module,
    fit_fold_filter,
    load_initial_weights,
    resume_point,
    score_fold,
)
from landslide.training.loggers import build_loggers, finish_loggers, log_figure
from landslide.training.stacked_module import StackedLandslideModule

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- data
class StackedTrainBatches(IterableDataset):
    """(K, b) index batches: step i holds batch i of every fold's endless permutation stream (see the module doc)."""

    def __init__(self, streams: list[IndexBatches]) -> None:
        self.streams = streams
        self.batch_size = streams[0].batch_size
        self.steps = max(len(s) for s in streams)
        self.epoch_source = None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        b, steps = self.batch_size, self.steps
        epoch = self.epoch_source() if self.epoch_source is not None else 0
        order = torch.stack([s._stream(epoch * steps * b, (epoch + 1) * steps * b) for s in self.streams])
        for i in range(steps):
            yield {"source": "train", "index": order[:, i * b : (i + 1) * b]}


class StackedValBatches(IterableDataset):
    """Columns ``start:start + m`` of the (K, longest) padded validation index matrix, in order."""

    def __init__(self, index: Tensor, chunk: int) -> None:
        self.index, self.chunk = index, max(1, chunk)

    def __len__(self) -> int:
        return -(-self.index.shape[1] // self.chunk)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for start in range(0, self.index.shape[1], self.chunk):
            yield {"source": "val", "index": self.index[:, start : start + self.chunk], "start": start}


@dataclass
class FoldPart:
    """What one fold brings to the stack (fitted on its training part only)."""

    fold: int
    fold_dir: Path
    train_index: np.ndarray
    val_index: np.ndarray
    keep_val: np.ndarray
    epoch_seed: int
    norm_mean: list[float]
    filt: Any
    report: dict


class StackedFoldsData(L.LightningDataModule):
    """K folds of one :class:`LandslideDataModule` served at once: training batches ``x`` (K, b, c, h, w) and ``y``
    (K, b), each fold augmented with its own fill values; validation batches padded to the longest fold with
    ``keep`` (K, m) and the column ``start``."""

    def __init__(self, dm: LandslideDataModule, parts: list[FoldPart]) -> None:
        super().__init__()
        self.dm, self.parts = dm, parts
        b = min(dm.batch_size, *(len(p.train_index) for p in parts))
        self.streams = [IndexBatches("train", p.train_index, b, True, p.epoch_seed) for p in parts]
        longest = max(len(p.val_index) for p in parts)
        pad = [np.resize(p.val_index, longest) for p in parts]  # padding repeats the fold's own rows; never scored
        self.val_index = torch.as_tensor(np.stack(pad), dtype=torch.long)
        keep = np.ones(self.val_index.shape, bool)
        for k, p in enumerate(parts):
            keep[k, : len(p.keep_val)] = p.keep_val
        self.val_keep = torch.from_numpy(keep)
        self.fill = torch.tensor([p.norm_mean for p in parts], dtype=torch.float32)
        self.augment = copy.deepcopy(dm.augment)
        self._on: dict[tuple[str, str], Tensor] = {}

    def train_dataloader(self) -> DataLoader:
        dataset = StackedTrainBatches(self.streams)
        if getattr(self, "trainer", None) is not None:  # a resumed run continues the streams where they stopped
            dataset.epoch_source = lambda: self.trainer.current_epoch
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        chunk = self.dm.eval_batch_size // len(self.parts)
        return DataLoader(StackedValBatches(self.val_index, chunk), batch_size=None, num_workers=0)

    def _device(self, name: str, tensor: Tensor, device: torch.device) -> Tensor:
        key = (name, str(device))
        if key not in self._on:
            self._on[key] = tensor.to(device)
        return self._on[key]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        if not isinstance(batch, dict) or "source" not in batch:
            return batch
        index = batch["index"]
        k, m = index.shape
        device = index.device
        x = self.dm.gather("train", index.reshape(-1), device)
        out: dict[str, Any] = {"index": index, "y": self.dm.labels_on(device)[index]}
        if batch["source"] == "train":
            trainer = getattr(self, "trainer", None)
            if trainer is None or trainer.training:
                fill = self._device("fill", self.fill, device).repeat_interleave(m, 0)
                x = self.augment(x, fill=fill)
        else:
            start = batch["start"]
            out["keep"] = self._device("keep", self.val_keep, device)[:, start : start + m]
            out["start"] = start
        out["x"] = x.view(k, m, *x.shape[1:])
        return out


def fold_history(history: list[dict], fold: int) -> list[dict]:
    """Fold ``fold``'s rows of a stacked metric history, named as the sequential loop names them."""
    suffix = f"/fold_{fold}"
    return [{"epoch": row["epoch"], **{k.removesuffix(suffix): v for k, v in row.items() if k.endswith(suffix)}}
            for row in history]


def save_fold_checkpoint(module: LandslideModule, path: Path, epoch: int, global_step: int) -> None:
    """A weights-only Lightning checkpoint of one fold, as ``trainer.save_checkpoint(weights_only=True)`` writes
    it: :func:`landslide.checkpoint.load_module` rebuilds the module from it."""
    with atomic_output(path) as tmp:
        torch.save({
            "epoch": epoch,
            "global_step": global_step,
            "pytorch-lightning_version": L.__version__,
            "state_dict": module.state_dict(),
            "hparams_name": "kwargs",
            "hyper_parameters": dict(module.hparams),
        }, tmp)


# ---------------------------------------------------------------------------------------------------- the run
def _replay(cfg: DictConfig, module: LandslideModule, fold: int, fold_dir: Path, rows: list[dict],
            steps_per_epoch: int) -> None:
    """Write one fold's per-epoch metrics to its own loggers (``csv/fold_<k>``, its W&B run), as if it had trained
    alone, and its F1 curve figure."""
    loggers = build_loggers(cfg, fold, fold_dir)
    try:
        for logger in loggers:
            logger.log_hyperparams(dict(module.hparams))
        for row in rows:
            metrics = {k: v for k, v in row.items() if k != "epoch"}
            for logger in loggers:
                logger.log_metrics({**metrics, "epoch": row["epoch"]}, step=(row["epoch"] + 1) * steps_per_epoch - 1)
        history = [r for r in rows if any(k.startswith("val/") for k in r)]
        if cfg.log_figures and history:
            figure = f1_curve_figure(history, f"{cfg.name}, fold {fold}")
            log_figure(loggers, "curves/val_f1", figure, step=len(rows) * steps_per_epoch,
                       folder=fold_dir / "figures")
    finally:
        finish_loggers(loggers)


def _prepare(cfg: DictConfig, dm: LandslideDataModule, fold: int, feats: np.ndarray, out: Path
             ) -> tuple[FoldPart, LandslideModule]:
    """Fit fold ``fold``'s filter and build its module exactly as the sequential loop does."""
    fold_dir = out / "folds" / f"fold_{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_part, val_part = dm.folds()[fold]
    filt, keep_train, keep_val, report = fit_fold_filter(cfg, feats, dm.labels, train_part, val_part, fold_dir)
    L.seed_everything(int(cfg.seed) + fold, workers=True)
    dm.set_fold(fold, train_keep=keep_train, val_keep=keep_val)
    module = build_module(cfg, dm)
    if cfg.get("init_weights"):
        load_initial_weights(module, cfg.init_weights)
        log.info("fold %d starts from the weights of %s", fold, cfg.init_weights)
    part = FoldPart(fold, fold_dir, dm.train_index.copy(), val_part, np.asarray(keep_val, bool), dm.epoch_seed,
                    list(dm.norm_mean), filt, report)
    return part, module


def train_stacked(cfg: DictConfig, dm: LandslideDataModule, folds: list[int], feats: np.ndarray, out: Path
                  ) -> dict[int, dict]:
    """Filter, train (all ``folds`` at once) and score the folds; save their artefacts; return their results."""
    started = time.perf_counter()
    parts, templates = zip(*(_prepare(cfg, dm, fold, feats, out) for fold in folds))
    L.seed_everything(int(cfg.seed) + folds[0], workers=True)
    data = StackedFoldsData(dm, list(parts))
    stacked = StackedLandslideModule(list(templates), [len(p.val_index) for p in parts], list(folds))
    tag = "stacked_" + "_".join(map(str, folds))
    stack_dir = out / "stacked" / tag
    callbacks = build_callbacks(cfg, stack_dir)
    loggers = build_loggers(cfg, tag, stack_dir)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(stack_dir))
    last = stack_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("folds %s resume from %s", folds, last)
    log.info("folds %s train at once (stacked weights): %d steps of %d images per fold an epoch", folds,
             max(len(s) for s in data.streams), data.streams[0].batch_size)
    try:
        trainer.fit(stacked, datamodule=data, ckpt_path=resume_point(last), weights_only=True)
    finally:
        finish_loggers(loggers)
    if trainer.interrupted:
        raise KeyboardInterrupt(f"folds {folds} were interrupted; run again with the same run directory to resume")
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        log.warning("no ModelCheckpoint callback: an interrupted stacked run cannot resume")

    modules = stacked.unstack()
    history = next(c for c in callbacks if isinstance(c, MetricHistory)).history
    energy = next((c for c in callbacks if isinstance(c, EnergyCallback)), None)
    device = trainer.strategy.root_device
    steps = max(len(s) for s in data.streams)
    results: dict[int, dict] = {}
    for part, module in zip(parts, modules):
        save_fold_checkpoint(module, part.fold_dir / "model.ckpt", trainer.current_epoch, trainer.global_step)
        # training metrics from the module's own record (MetricHistory reads them before the module logs them)
        train_rows = {r["epoch"]: r for r in fold_history(stacked.train_history, part.fold)}
        by_epoch = {e: dict(r) for e, r in train_rows.items()}
        for row in fold_history(history, part.fold):
            by_epoch.setdefault(row["epoch"], {}).update(
                {k: v for k, v in row.items() if not k.startswith("train/")})
        _replay(cfg, module, part.fold, part.fold_dir, [by_epoch[e] for e in sorted(by_epoch)], steps)
        # the history the sequential loop keeps: validation metrics and the training loss of each epoch
        fold_hist = [{k: v for k, v in by_epoch[e].items() if not k.startswith("train/") or k == "train/loss"}
                     for e in sorted(by_epoch)]
        result: dict[str, Any] = {"fold": part.fold, "filter": part.report}
        result.update(score_fold(cfg, dm, module, part.filt, feats, part.val_index, part.keep_val, device))
        result.update({
            "epochs": int(trainer.current_epoch),
            "epoch_selection": cfg.epoch_selection,
            "energy_wh": energy.wh / len(folds) if energy else None,  # the shared run's energy, split evenly
            "history": fold_hist,
            "parallel_folds": list(folds),
        })
        results[part.fold] = result
    wall = round((time.perf_counter() - started) / len(folds), 2)  # the shared run's time, split evenly
    for result in results.values():
        result["wall_seconds"] = wall
        result["oof"] = result.pop("oof")
    return results
