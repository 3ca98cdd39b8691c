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
(K, longest) tensor on the device and the metrics of every fold are computed at once, each on its own part, with
one host copy per validation. At the end the folds' out-of-fold probabilities come from one stacked pass per
test-time view (``cv.stacked_scoring``), the stack is split into ordinary ``folds/fold_<k>/model.ckpt`` checkpoints
of ``LandslideModule`` and each fold is scored with the sequential loop's own helpers, so the run directory is the
same. The stacked module's ``last.ckpt`` (under ``stacked/stacked_<folds>/checkpoints``) is written every
``callbacks.last_checkpoint.every_n_epochs`` epochs; a rerun resumes from it, and it is removed once the folds
have finished.
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
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from landslide.callbacks import EnergyCallback, MetricHistory
from landslide.callbacks.phases import CHECKPOINTS
from landslide.data.augment import TTA_VIEWS, dihedral_view
from landslide.data.batches import IndexBatches
from landslide.data.datamodule import LandslideDataModule
from landslide.errors import ConfigError
from landslide.files import atomic_output
from landslide.hardware import bf16_supported, inference_autocast
from landslide.module import LandslideModule
from landslide.plots.curves import f1_curve_figure
from landslide.timing import phase
from landslide.training.fold import (
    LIGHTNING,
    LOGGERS,
    SCORING,
    SETUP,
    FoldFilter,
    build_module,
    build_trainer,
    load_initial_weights,
    resume_point,
    score_fold,
    score_probs,
    scoring_bf16,
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
        # columns per validation (and scoring) batch: as many as the evaluation batch allows, balanced so that the
        # padded matrix wastes least; every batch then has one shape (one compiled graph, no recompilation)
        widest = max(1, dm.eval_batch_size // len(parts))
        batches = max(1, -(-longest // widest))
        self.val_chunk = max(1, -(-longest // batches))
        # padding repeats the fold's own rows up to whole batches; it is never scored
        pad = [np.resize(p.val_index, batches * self.val_chunk) for p in parts]
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
        # private generators: making an iterator draws nothing from the global random state, so how often
        # validation runs (or whether a fit was resumed) does not change the augmentations
        return DataLoader(dataset, batch_size=None, num_workers=0, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(StackedValBatches(self.val_index, self.val_chunk), batch_size=None, num_workers=0,
                          generator=torch.Generator())

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


def _prepare(cfg: DictConfig, dm: LandslideDataModule, fold: int, out: Path, fitted: FoldFilter
             ) -> tuple[FoldPart, LandslideModule]:
    """Fold ``fold``'s part of the stack (its fitted filter) and its module, built exactly as the sequential loop
    builds it."""
    fold_dir = out / "folds" / f"fold_{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    val_part = dm.folds()[fold][1]
    L.seed_everything(int(cfg.seed) + fold, workers=True)
    dm.set_fold(fold, train_keep=fitted.keep_train, val_keep=fitted.keep_val)
    norm_mean = list(dm.norm_mean)  # the fold's statistics (a phase of their own)
    with phase(SETUP):
        module = build_module(cfg, dm)
        if cfg.get("init_weights"):
            load_initial_weights(module, cfg.init_weights)
            log.info("fold %d starts from the weights of %s", fold, cfg.init_weights)
    part = FoldPart(fold, fold_dir, dm.train_index.copy(), val_part, np.asarray(fitted.keep_val, bool), dm.epoch_seed,
                    norm_mean, fitted.filt, fitted.report)
    return part, module


@torch.no_grad()  # as Lightning validates inside fit: the compiled validation graph's guards hold
def stacked_network_probs(stacked: StackedLandslideModule, dm: LandslideDataModule, index: Tensor, chunk: int,
                          tta: bool, device: torch.device, bf16: bool | None = None) -> np.ndarray:
    """(K, n) probabilities of training rows ``index`` (K, n) (row k for fold k), the mean over the test-time views:
    every fold's network in one stacked pass per view and chunk of ``chunk`` columns (the validation batches'
    shape, so compiled graphs are reused). The same values as :func:`landslide.prediction.predict_probs` of each
    fold's module alone, to rounding (``bf16=None``: bf16 autocast where the device runs it fast, as there)."""
    bf16 = bf16_supported(device.type) if bf16 is None else bf16
    stacked = stacked.to(device).eval()
    views = TTA_VIEWS if tta else 1
    k, n = index.shape
    # whole chunks only, even for fewer rows than a chunk (the last padded with the first columns, never returned):
    # one shape, one compiled graph
    index = index[:, torch.arange(max(1, -(-n // chunk)) * chunk) % max(n, 1)]
    out = torch.zeros(views, k, index.shape[1], device=device)
    for start in range(0, index.shape[1], chunk):
        rows = index[:, start : start + chunk].to(device)
        flat = dm.gather("train", rows.reshape(-1), device)
        for view in range(views):
            # built as the validation batches are (a view of the gathered images, contiguous, Lightning's autocast
            # without a weight cache, no_grad): the graph compiled for validation is reused, nothing recompiles
            viewed = dihedral_view(flat, view).contiguous() if tta else flat
            with inference_autocast(device.type, bf16):
                logits = stacked(viewed.view(k, rows.shape[1], *flat.shape[1:]))[0]
            out[view, :, start : start + rows.shape[1]] = torch.sigmoid(logits.float())
    return out[:, :, :n].cpu().numpy().mean(0)


def stacked_scoring(cfg: DictConfig, device: torch.device) -> bool:
    """``cv.stacked_scoring``: ``auto`` scores stacked folds in one stacked pass on a GPU and fold by fold on a CPU
    (where vmap's grouped convolutions are slower than the separate networks)."""
    value = str(cfg.cv.stacked_scoring).lower()
    if value not in ("auto", "true", "false"):
        raise ConfigError(f"cv.stacked_scoring must be auto, true or false, got {cfg.cv.stacked_scoring!r}")
    return device.type == "cuda" if value == "auto" else value == "true"


def score_stacked(cfg: DictConfig, data: StackedFoldsData, stacked: StackedLandslideModule, feats: np.ndarray,
                  device: torch.device) -> dict[int, dict]:
    """Every fold's :func:`~landslide.training.fold.score_probs`, its network probabilities from one stacked
    test-time pass (``cv.stacked_scoring``)."""
    dm, parts = data.dm, data.parts
    bf16 = scoring_bf16(cfg, device)
    val = stacked_network_probs(stacked, dm, data.val_index, data.val_chunk, bool(cfg.tta), device, bf16)
    holdout = dm.holdout_index
    hold = None
    if len(holdout):
        rows = torch.as_tensor(holdout, dtype=torch.long).expand(len(parts), -1)
        hold = stacked_network_probs(stacked, dm, rows, data.val_chunk, bool(cfg.tta), device, bf16)
    return {p.fold: score_probs(dm, p.filt, feats, p.val_index, p.keep_val, val[k, : len(p.val_index)],
                                None if hold is None else hold[k])
            for k, p in enumerate(parts)}


def train_stacked(cfg: DictConfig, dm: LandslideDataModule, folds: list[int], feats: np.ndarray, out: Path,
                  fitted: dict[int, FoldFilter]) -> dict[int, dict]:
    """Train (all ``folds`` at once, each with its fitted filter) and score the folds; save their artefacts;
    return their results."""
    started = time.perf_counter()
    parts, templates = zip(*(_prepare(cfg, dm, fold, out, fitted[fold]) for fold in folds))
    L.seed_everything(int(cfg.seed) + folds[0], workers=True)
    tag = "stacked_" + "_".join(map(str, folds))
    stack_dir = out / "stacked" / tag
    with phase(SETUP):
        data = StackedFoldsData(dm, list(parts))
        stacked = StackedLandslideModule(list(templates), [len(p.val_index) for p in parts], list(folds))
    trainer, callbacks, loggers = build_trainer(cfg, tag, stack_dir)
    last = stack_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("folds %s resume from %s", folds, last)
    log.info("folds %s train at once (stacked weights): %d steps of %d images per fold an epoch", folds,
             max(len(s) for s in data.streams), data.streams[0].batch_size)
    try:
        with phase(LIGHTNING):
            trainer.fit(stacked, datamodule=data, ckpt_path=resume_point(last), weights_only=True)
    finally:
        with phase(LOGGERS):
            finish_loggers(loggers)
    if trainer.interrupted:
        raise KeyboardInterrupt(f"folds {folds} were interrupted; run again with the same run directory to resume")
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        log.warning("no ModelCheckpoint callback: an interrupted stacked run cannot resume")

    device = trainer.strategy.root_device
    with phase(SCORING):
        scores = score_stacked(cfg, data, stacked, feats, device) if stacked_scoring(cfg, device) else None
        modules = stacked.unstack()
        if scores is None:  # each fold's module alone, one after another
            scores = {p.fold: score_fold(cfg, dm, m, p.filt, feats, p.val_index, p.keep_val, device)
                      for p, m in zip(parts, modules)}
    history = next(c for c in callbacks if isinstance(c, MetricHistory)).history
    energy = next((c for c in callbacks if isinstance(c, EnergyCallback)), None)
    steps = max(len(s) for s in data.streams)
    results: dict[int, dict] = {}
    for part, module in zip(parts, modules):
        with phase(CHECKPOINTS):
            save_fold_checkpoint(module, part.fold_dir / "model.ckpt", trainer.current_epoch, trainer.global_step)
        # training metrics from the module's own record (MetricHistory reads them before the module logs them)
        train_rows = {r["epoch"]: r for r in fold_history(stacked.train_history, part.fold)}
        by_epoch = {e: dict(r) for e, r in train_rows.items()}
        for row in fold_history(history, part.fold):
            by_epoch.setdefault(row["epoch"], {}).update(
                {k: v for k, v in row.items() if not k.startswith("train/")})
        with phase(LOGGERS):
            _replay(cfg, module, part.fold, part.fold_dir, [by_epoch[e] for e in sorted(by_epoch)], steps)
        # the history the sequential loop keeps: validation metrics and the training loss of each epoch
        fold_hist = [{k: v for k, v in by_epoch[e].items() if not k.startswith("train/") or k == "train/loss"}
                     for e in sorted(by_epoch)]
        result: dict[str, Any] = {"fold": part.fold, "filter": part.report}
        result.update(scores[part.fold])
        result.update({
            "epochs": int(trainer.current_epoch),
            "epoch_selection": cfg.epoch_selection,
            "energy_wh": energy.wh / len(folds) if energy else None,  # the shared run's energy, split evenly
            "history": fold_hist,
            "parallel_folds": list(folds),
        })
        results[part.fold] = result
    # the shared run's time split evenly, and each fold's filter fit
    wall = (time.perf_counter() - started) / len(folds)
    for fold, result in results.items():
        result["wall_seconds"] = round(wall + fitted[fold].seconds, 2)
        result["oof"] = result.pop("oof")
    return results
