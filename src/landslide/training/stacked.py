"""All K folds at once on one device: the fold networks as stacked weights, one ``vmap``-ed step on K batches.

Each fold keeps what the sequential loop gives it: its filter (fitted on its training part), its filtered training
stream, its normalisation statistics, its initial weights (seeded ``seed + fold``), its BatchNorm statistics, its
validation fold and its metrics (logged as ``val/<metric>/fold_<k>``). Weights and BatchNorm buffers are stacked
along a leading fold axis (``torch.func.stack_module_state``) and one network skeleton runs them all through
``functional_call`` under ``vmap``; Adam, AdamW, SGD and weight decay act per element, so one optimiser
(``model.optimizer``) over the stacked tensors is K optimisers (one that scales by a whole tensor's norm is not).

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
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state
from torch.utils.data import DataLoader, IterableDataset
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_precision_recall_curve,
    binary_recall,
)

from landslide.callbacks import EnergyCallback, MetricHistory
from landslide.data.batches import IndexBatches
from landslide.data.datamodule import LandslideDataModule
from landslide.errors import ConfigError
from landslide.files import atomic_output
from landslide.module import LandslideModule
from landslide.training.cv import (
    build_callbacks,
    build_module,
    fit_fold_filter,
    load_initial_weights,
    score_fold,
)
from landslide.training.loggers import build_loggers, f1_curve_figure, finish_loggers, log_figure
from landslide.training.ranks import planned_processes

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- dispatch
def parallel_folds(cfg: DictConfig, pending: int) -> int:
    """How many folds train at once: ``cv.parallel_folds`` (``auto``: all pending folds on a GPU, 1 on a CPU, where
    vmap's grouped convolutions are slower), capped by the pending folds; 1 where stacking does not apply (the
    filter stage, best-epoch selection, a ``model._target_`` other than LandslideModule, several processes)."""
    value = str(cfg.cv.parallel_folds)
    if planned_processes(cfg) > 1:  # DDP: one fold at a time over every device
        if value not in ("auto", "1"):
            raise ConfigError(f"cv.parallel_folds={value} trains folds stacked on one device and cannot be combined "
                              "with a multi-device trainer; use cv.parallel_folds=1, or train the folds as jobs, "
                              "one per GPU (python train.py -m data.fold=0,1,... hydra/launcher=submitit_slurm)")
        return 1
    if value == "auto":
        accelerator = str(cfg.trainer.accelerator)
        gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
        k = pending if gpu else 1
    elif value.isdigit() and int(value) >= 1:
        k = int(value)
    else:
        raise ValueError(f"cv.parallel_folds must be auto or a positive integer, got {value!r}")
    if k > 1 and cfg.stage == "filter":
        return 1
    if k > 1 and cfg.epoch_selection == "best":
        log.warning("epoch_selection=best picks an epoch per fold: the folds train one after another")
        return 1
    if k > 1 and get_class(cfg.model._target_) is not LandslideModule:
        log.warning("model._target_=%s: the stacked step is LandslideModule's own, so a subclass trains its folds "
                    "one after another", cfg.model._target_)
        return 1
    return max(1, min(k, pending))


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


# ---------------------------------------------------------------------------------------------------- module
def _slot(name: str) -> str:
    """A state-dict name made into an attribute name (no dots)."""
    return name.replace(".", "-")


class StackedLandslideModule(L.LightningModule):
    """K :class:`LandslideModule` networks trained at once as stacked weights (one leading fold axis).

    ``templates`` are the folds' own modules (initial weights, normalisation statistics, hyperparameters; the
    same architecture); they stay outside the module tree and receive the trained weights from :meth:`unstack`.
    ``val_sizes`` are the folds' numbers of validation images; ``folds`` their numbers, used in metric names.
    """

    def __init__(self, templates: list[LandslideModule], val_sizes: list[int], folds: list[int]) -> None:
        super().__init__()
        if len(templates) < 2:
            raise ValueError("stacking needs at least two folds")
        object.__setattr__(self, "templates", templates)
        self.folds, self.val_sizes = list(folds), list(val_sizes)
        self.hp = dict(templates[0].hparams)
        nets = [t.net for t in templates]
        persistent = set(nets[0].state_dict())
        params, buffers = stack_module_state(nets)
        self.param_names = list(params)
        self.buffer_names = [n for n in buffers if n in persistent]
        self.stacked_params = nn.ParameterDict({_slot(n): nn.Parameter(p.detach().clone()) for n, p in params.items()})
        self.stacked_buffers = nn.Module()
        for n in self.buffer_names:
            self.stacked_buffers.register_buffer(_slot(n), buffers[n].clone())
        # buffers that are not state (the branches' channel indices): one copy, shared by every fold
        self.shared = nn.Module()
        self.shared_names = [n for n, _ in nets[0].named_buffers() if n not in persistent]
        for n in self.shared_names:
            self.shared.register_buffer(_slot(n), nets[0].get_buffer(n).clone(), persistent=False)
        self.register_buffer("mean", torch.stack([t.mean for t in templates]))  # (K, 1, c, 1, 1)
        self.register_buffer("std", torch.stack([t.std for t in templates]))
        self.criterion = copy.deepcopy(templates[0].criterion)
        skeletons = {mode: copy.deepcopy(nets[0]).to("meta").train(mode) for mode in (True, False)}
        compile_ = bool(self.hp.get("compile"))
        object.__setattr__(self, "_steps", {
            mode: self._vmapped(skel, compile_) for mode, skel in skeletons.items()
        })
        k = len(templates)
        self.register_buffer("_train_loss", torch.zeros(k), persistent=False)
        self.register_buffer("_train_counts", torch.zeros(k, 3), persistent=False)  # tp, fp, fn
        self.register_buffer("_train_steps", torch.zeros(()), persistent=False)
        self._val_logits: Tensor | None = None
        self.train_history: list[dict] = []

    # ------------------------------------------------------------------ the stacked forward
    def _vmapped(self, skeleton: nn.Module, compile_: bool):
        criterion = self.criterion

        def one_fold(params: dict, buffers: dict, shared: dict, mean: Tensor, std: Tensor, x: Tensor, y: Tensor):
            logits = functional_call(skeleton, ({**params, **buffers, **shared},), ((x - mean) / std,))
            return logits, criterion(logits.float(), y)

        fn = torch.vmap(one_fold, in_dims=(0, 0, None, 0, 0, 0, 0), randomness="different")
        return torch.compile(fn) if compile_ else fn

    def _state(self) -> tuple[dict, dict, dict]:
        params = {n: self.stacked_params[_slot(n)] for n in self.param_names}
        buffers = {n: self.stacked_buffers.get_buffer(_slot(n)) for n in self.buffer_names}
        shared = {n: self.shared.get_buffer(_slot(n)) for n in self.shared_names}
        return params, buffers, shared

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits (K, n) and per-fold losses (K,) of a stacked batch ``x`` (K, n, c, h, w) in physical units."""
        if y is None:
            y = torch.zeros(x.shape[:2], device=x.device)
        return self._steps[self.training](*self._state(), self.mean, self.std, x, y)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        self._train_loss.zero_()
        self._train_counts.zero_()
        self._train_steps.zero_()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, losses = self(batch["x"], batch["y"])
        with torch.no_grad():  # accumulated on the device: no host synchronisation per step
            pred, y = logits.detach() > 0, batch["y"] > 0.5
            self._train_loss += losses.detach()
            self._train_counts += torch.stack([(pred & y).sum(1), (pred & ~y).sum(1), (~pred & y).sum(1)], 1)
            self._train_steps += 1
        # a sum: each fold's weights get the gradient of that fold's own mean loss
        return losses.sum()

    def on_train_epoch_end(self) -> None:
        loss = self._train_loss / self._train_steps.clamp_min(1)
        tp, fp, fn = self._train_counts.unbind(1)
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        metrics = {"train/loss": loss.mean(), "train/f1": f1.mean()}
        for k, fold in enumerate(self.folds):
            metrics[f"train/loss/fold_{fold}"] = loss[k]
            metrics[f"train/f1/fold_{fold}"] = f1[k]
        self.log_dict(metrics)
        # per-fold rows for the folds' own loggers after the run (one host copy an epoch)
        names = list(metrics)
        self.train_history.append({"epoch": self.current_epoch,
                                   **dict(zip(names, torch.stack(list(metrics.values())).tolist()))})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["train_history"] = self.train_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_history = list(checkpoint.get("train_history", []))

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_logits = torch.zeros(len(self.folds), max(self.val_sizes), device=self.device)
        self._val_prob = torch.zeros_like(self._val_logits)
        self._val_y = torch.zeros_like(self._val_logits)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["x"])[0].float()
        start, m = batch["start"], logits.shape[1]
        self._val_logits[:, start : start + m] = logits
        # the whole pipeline's prediction: images the negative filter removed count as predicted negative
        self._val_prob[:, start : start + m] = torch.sigmoid(logits) * batch["keep"]
        self._val_y[:, start : start + m] = batch["y"]

    def on_validation_epoch_end(self) -> None:
        metrics: dict[str, Tensor] = {}
        for k, (fold, n) in enumerate(zip(self.folds, self.val_sizes)):
            fold_metrics = fold_val_metrics(self._val_logits[k, :n], self._val_prob[k, :n], self._val_y[k, :n],
                                            self.criterion)
            metrics.update({f"{name}/fold_{fold}": value for name, value in fold_metrics.items()})
        for name in ("val/f1", "val/f1_best", "val/loss"):  # means over folds, e.g. for ModelCheckpoint
            metrics[name] = torch.stack([metrics[f"{name}/fold_{f}"] for f in self.folds]).mean()
        self.log_dict(metrics)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """The folds' optimiser and schedule (``model.optimizer``, ``model.scheduler``) over the stacked tensors,
        grouped as LandslideModule groups them (the fold axis does not count as a dimension)."""
        named = ((name, self.stacked_params[_slot(name)]) for name in self.param_names)
        return self.templates[0].optimization(named, self.trainer.estimated_stepping_batches, vector_ndim=2)

    # ------------------------------------------------------------------ back to K modules
    @torch.no_grad()
    def unstack(self) -> list[LandslideModule]:
        """The fold modules with the trained weights and BatchNorm statistics of their slice of the stack."""
        params, buffers, _ = self._state()
        for k, template in enumerate(self.templates):
            state = {n: t[k].detach().to("cpu") for n, t in {**params, **buffers}.items()}
            template.net.load_state_dict(state)
            template.to("cpu")
        return self.templates


def fold_val_metrics(logits: Tensor, prob: Tensor, y: Tensor, criterion: nn.Module) -> dict[str, Tensor]:
    """The validation metrics LandslideModule logs, for one fold's whole validation part."""
    target = y.int()
    precision, recall, thresholds = binary_precision_recall_curve(prob, target)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    best = torch.argmax(f1[:-1]) if thresholds.numel() else torch.tensor(0)
    return {
        "val/loss": criterion(logits, y),
        "val/f1": binary_f1_score(prob, target),
        "val/precision": binary_precision(prob, target),
        "val/recall": binary_recall(prob, target),
        "val/auroc": binary_auroc(prob, target),
        "val/ap": binary_average_precision(prob, target),
        "val/f1_best": f1[best],
        "val/best_threshold": thresholds[best] if thresholds.numel() else torch.tensor(0.5),
    }


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
        if cfg.log_figures and loggers and history:
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
        trainer.fit(stacked, datamodule=data, ckpt_path=str(last) if last.is_file() else None, weights_only=True)
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
        fold_hist = fold_history(history, part.fold)
        by_epoch = {r["epoch"]: dict(r) for r in fold_history(stacked.train_history, part.fold)}
        for row in fold_hist:
            by_epoch.setdefault(row["epoch"], {}).update(row)
        _replay(cfg, module, part.fold, part.fold_dir, [by_epoch[e] for e in sorted(by_epoch)], steps)
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
