"""The fold loop: for each fold, fit the filter on the training part, train the network on what it keeps,
predict the whole validation part with the two-stage pipeline, and write the run's summary.

A run directory holds ``folds/fold_<k>/`` (``model.ckpt``, ``filter.*``, ``result.json``), ``oof_predictions.csv``
and ``cv_summary.json``; it is the contract with prediction. Finished folds (those with ``result.json``) are
skipped when the same run directory is used again, and an interrupted fold resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from landslide.bands import BAND_SETS
from landslide.callbacks import EnergyTracker
from landslide.callbacks.energy import ENERGY
from landslide.callbacks.phases import TRAIN_STEP_IMAGES, TRAIN_STEPS
from landslide.data.datamodule import LandslideDataModule
from landslide.errors import ConfigError, RunError
from landslide.features.cached import split_features
from landslide.files import atomic_output, read_json, write_json
from landslide.gpu_monitor import GpuMonitor, by_phase, cuda_uuid
from landslide.hardware import cuda_sync
from landslide.module import LandslideModule
from landslide.run_record import RunManifest, defining_settings, prediction_settings
from landslide.timing import PhaseTimer, active_timer, add_counts, add_phases, phase
from landslide.training.fold import (
    LOGGERS,
    build_datamodule,
    check_initial_weights,
    drop_checkpoints,
    fit_filters,
    option_errors,
    train_fold,
    training_device,
)
from landslide.training.ranks import is_rank_zero, planned_processes
from landslide.training.run_logging import log_run
from landslide.training.stacked import train_stacked
from landslide.training.summary import check_result, print_summary, summarise

log = logging.getLogger(__name__)
#: the largest share of Train.csv that data.holdout_fraction may keep out of the folds
MAX_HOLDOUT = 0.5

# phases of a training run besides those of one fold (training.fold, callbacks.phases)
DATA = "data"  # the release generated or read, validated and cached; the folds
FEATURES = "features"  # the hand-crafted features (cached beside the arrays)
FILTER = "filter"  # every pending fold's filter fitted and applied
SUMMARY = "summary"  # the summary, the out-of-fold predictions file, the run folder's size


def check_options(cfg: DictConfig) -> None:
    """Stop with one line, before any work, on an option outside its range."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    data, trainer = cfg.data, cfg.trainer
    accelerator = trainer.get("accelerator", "auto")
    if isinstance(accelerator, str) and accelerator.lower() in ("gpu", "cuda"):
        need(torch.cuda.is_available(), f"trainer.accelerator={accelerator}: no CUDA GPU is available here; use "
                                        "trainer=cpu or trainer.accelerator=auto")
    need(cfg.stage in ("all", "filter"), f"stage must be all or filter, got {cfg.stage!r}")
    need(cfg.epoch_selection in ("last", "best"),
         f"epoch_selection must be last or best, got {cfg.epoch_selection!r}")
    need(data.bands in BAND_SETS, f"data.bands must be one of {', '.join(BAND_SETS)}, got {data.bands!r}")
    need(isinstance(data.num_folds, int) and data.num_folds >= 2,
         f"data.num_folds must be an integer >= 2, got {data.num_folds!r}")
    need(data.get("fold") is None or 0 <= int(data.fold) < data.num_folds,
         f"data.fold must be null or in [0, {data.num_folds}), got {data.get('fold')!r}")
    for key in ("batch_size", "eval_batch_size"):
        need(_integer(data[key]) and data[key] >= 1, f"data.{key} must be an integer >= 1, got {data[key]!r}")
    holdout = data.get("holdout_fraction")
    need(_number(holdout) and 0 <= holdout <= MAX_HOLDOUT,
         f"data.holdout_fraction must be in [0, {MAX_HOLDOUT}] (the folds need the rest), got {holdout!r}")
    need(not (planned_processes(cfg) > 1 and _local_multirun()),
         "a multi-device trainer (DDP) cannot run inside a local multirun: its processes would start the sweep "
         "again; run one job per command, or on SLURM one job per node (hydra.launcher.tasks_per_node = GPUs)")
    sample_secs = cfg.energy.get("gpu_sample_secs")
    need(sample_secs is None or (_number(sample_secs) and sample_secs >= 0),
         f"energy.gpu_sample_secs must be a number of seconds >= 0 (0: off), got {sample_secs!r}")
    pixel_weight = cfg.model.pixel_weight
    need(_number(pixel_weight) and pixel_weight >= 0,
         f"model.pixel_weight must be a number >= 0, got {pixel_weight!r}")
    need(not pixel_weight or bool(data.get("masks")),
         f"model.pixel_weight={pixel_weight} needs the slide masks: set data.masks=true (a release with train_masks/, "
         "e.g. experiment=segment)")
    if data.get("masks") and not pixel_weight:
        log.warning("data.masks=true but model.pixel_weight=0: the masks are read and augmented but teach nothing")
    if cfg.stage == "all" and not trainer.get("fast_dev_run"):
        epochs = trainer.get("max_epochs")
        need(isinstance(epochs, int) and epochs >= 1, f"trainer.max_epochs must be an integer >= 1, got {epochs!r}")


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _local_multirun() -> bool:
    """True in a Hydra multirun job whose processes are not started by SLURM (one task per device)."""
    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN and "SLURM_NTASKS" not in os.environ


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
    if k > 1 and cfg.model.pixel_weight:
        if value != "auto":
            raise ConfigError(f"cv.parallel_folds={value}: stacked folds train without slide masks, and "
                              f"model.pixel_weight={cfg.model.pixel_weight} needs them; use cv.parallel_folds=1")
        log.warning("model.pixel_weight > 0: stacked folds carry no masks, so the folds train one after another")
        return 1
    if k > 1 and get_class(cfg.model._target_) is not LandslideModule:
        log.warning("model._target_=%s: the stacked step is LandslideModule's own, so a subclass trains its folds "
                    "one after another", cfg.model._target_)
        return 1
    return max(1, min(k, pending))


def run_cv(cfg: DictConfig) -> dict:
    """Train every fold (or ``data.fold`` only) and write ``cv_summary.json`` and ``oof_predictions.csv``.

    The run directory's ``run.json`` records the settings that define the run: a later invocation in the same
    directory continues it (finished folds are skipped, an interrupted one resumes) only with equal settings.
    The seconds of the invocation go to the phases of the active :class:`~landslide.timing.PhaseTimer` (``train.py``
    starts one; without one the run times itself from here)."""
    timer = active_timer()
    check_options(cfg)
    if timer is None:
        with PhaseTimer(sync=cuda_sync).activate() as timer, sampled_gpu(cfg) as monitor:
            return _run_cv(cfg, timer, monitor)
    with sampled_gpu(cfg) as monitor:
        return _run_cv(cfg, timer, monitor)


@contextmanager
def sampled_gpu(cfg: DictConfig) -> Iterator[GpuMonitor | None]:
    """The training GPU's utilisation and power sampled every ``energy.gpu_sample_secs`` until the block ends,
    however it ends (None on a CPU, on other ranks than zero, or with 0)."""
    device, secs = training_device(cfg), float(cfg.energy.get("gpu_sample_secs") or 0)
    if device.type != "cuda" or secs <= 0 or not is_rank_zero():
        yield None
        return
    index = device.index or 0
    with GpuMonitor(secs, index, cuda_uuid(index)) as monitor:
        yield monitor


def _run_cv(cfg: DictConfig, timer: PhaseTimer, monitor: GpuMonitor | None) -> dict:
    out = Path(cfg.paths.output_dir)
    started_at = time.time() - timer.wall()  # when the command's timer started
    energy = cfg.energy
    lead = is_rank_zero()  # with several processes (DDP) the others only train
    tracker = EnergyTracker(out, "landslide-cv", country_iso_code=str(energy.country_iso_code),
                            measure_power_secs=float(energy.measure_power_secs), enabled=bool(energy.enabled) and lead)
    manifest: RunManifest | None = None
    trained: list[int] = []
    finished = False
    with phase(ENERGY):
        tracker.start()
    try:
        with phase(DATA):
            dm = build_datamodule(cfg)
            dm.place(training_device(cfg))
            with option_errors("data"):
                dm.folds()  # enough images of each class for the folds, checked before any training
        if cfg.get("init_weights") and cfg.stage == "all":
            check_initial_weights(str(cfg.init_weights), list(dm.channels))
        if lead:
            record = RunManifest(out)
            defining = defining_settings(cfg, dm.split("train").meta["key"],
                                         None if dm.exclusion is None else dm.exclusion.record())
            record.claim(defining, prediction_settings(cfg, dm.channels), OmegaConf.to_container(cfg, resolve=True))
            if dm.exclusion is not None:
                record.data["excluded_ids"] = dm.exclusion.ids
                record.save()
            manifest = record  # only an invocation that continues the recorded run is added to it
        with phase(FEATURES):
            feats = split_features(dm.split("train"))
        folds = [int(cfg.data.fold)] if cfg.data.get("fold") is not None else list(range(dm.num_folds))
        results: dict[int, dict] = {}
        for fold in folds:
            done = out / "folds" / f"fold_{fold}" / "result.json"
            if done.is_file():
                log.info("fold %d already finished; skipping it", fold)
                try:  # what the summary reads, checked: a damaged result is named, not a traceback at the end
                    results[fold] = check_result(read_json(done), fold, len(dm.labels), done)
                except RunError as err:
                    raise RunError(f"{err} Delete it to train fold {fold} again.") from None
        pending = [f for f in folds if f not in results]
        with phase(FILTER):
            fitted = fit_filters(cfg, feats, dm.labels, {f: dm.folds()[f] for f in pending}, out)
        at_once = parallel_folds(cfg, len(pending))
        for start in range(0, len(pending), at_once):
            chunk = pending[start : start + at_once]
            if len(chunk) > 1:
                log.info("folds %s/%d at once", ", ".join(str(f + 1) for f in chunk), dm.num_folds)
                done_now = train_stacked(cfg, dm, chunk, feats, out, {f: fitted[f] for f in chunk})
            else:
                fold = chunk[0]
                fold_dir = out / "folds" / f"fold_{fold}"
                fold_dir.mkdir(parents=True, exist_ok=True)
                log.info("fold %d/%d", fold + 1, dm.num_folds)
                done_now = {fold: train_fold(cfg, dm, fold, feats, fold_dir, fitted[fold])}
            if not lead:
                continue
            for fold, result in done_now.items():
                write_json(out / "folds" / f"fold_{fold}" / "result.json", result, indent=None)
                trained.append(fold)
                results[fold] = result
                drop_checkpoints(cfg, out / "folds" / f"fold_{fold}")
            if len(chunk) > 1:
                drop_checkpoints(cfg, out / "stacked" / ("stacked_" + "_".join(map(str, chunk))))
        results = [results[f] for f in folds] if lead else []
        finished = True
    finally:
        with phase(ENERGY):
            run_wh = tracker.stop()
        if manifest is not None and not finished:  # a failed or interrupted invocation still counts
            report = timer.report()
            manifest.add_invocation(started_at, report["wall_seconds"], run_wh, trained, report["phases"],
                                    report["counts"])
    if not lead:
        return {}
    with phase(SUMMARY):
        summary = summarise(cfg, dm, results, 0.0, 0.0)
        if summary.get("oof_f1") is not None:
            write_oof(out / "oof_predictions.csv", dm, results)
        if monitor is not None:  # the GPU's samples up to here, so that the loggers show them too
            summary["gpu"] = gpu_report(monitor, timer)
        add_totals(summary, manifest, out, timer.report(), run_wh)  # this invocation so far, not yet recorded
        write_json(out / "cv_summary.json", summary)
    with phase(LOGGERS):
        log_run(cfg, out, dm)  # figures, the run's W&B run and TensorBoard session, from the summary written
    # the invocation recorded with every second up to here; the summary again, with its figures' seconds and size
    report = timer.report()
    manifest.add_invocation(started_at, report["wall_seconds"], run_wh, trained, report["phases"],
                            report["counts"])
    add_totals(summary, manifest, out)
    write_json(out / "cv_summary.json", summary)
    manifest.keep_hydra_files()
    print_summary(summary)
    return summary


def gpu_report(monitor: GpuMonitor, timer: PhaseTimer) -> dict:
    """This invocation's GPU samples up to its summary (``invocation``: not summed over a resumed run's, unlike the
    seconds): over the whole of it, and by phase (``phases``; e.g. the utilisation while the training steps ran).
    Empty where the GPU could not be read."""
    whole = monitor.stop()
    if not whole:
        return {}
    timer.report()  # closes the stretch that is running, so the last samples have a phase
    return {"invocation": "last", **whole, "phases": by_phase(monitor.samples, timer.timeline, monitor.interval)}


def add_totals(summary: dict, manifest: RunManifest, out: Path, pending: dict | None = None,
               pending_wh: float = 0.0) -> None:
    """The run's wall time, energy, invocations and seconds per phase (every recorded invocation, and ``pending``,
    a timer report of this one if it is not recorded yet) and the run folder's size, into ``summary``."""
    wall, wh = manifest.totals()
    phases, counts = manifest.phase_totals(), manifest.count_totals()
    invocations = len(manifest.invocations)
    if pending is not None:
        wall, wh, invocations = wall + pending["wall_seconds"], wh + pending_wh, invocations + 1
        phases, counts = add_phases(phases, pending["phases"]), add_counts(counts, pending["counts"])
    summary.update({"wall_seconds": round(wall, 2), "energy_wh": round(wh, 6), "invocations": invocations,
                    "phases": phases, "run_dir_mb": round(folder_bytes(out) / 1e6, 1),
                    **training_rate(phases, counts)})


def training_rate(phases: dict[str, float], counts: dict[str, int]) -> dict:
    """The training steps' own rate: the images of their batches (``train_step_images``) over their seconds, each
    fit's first step (compilation) left out of both; None where nothing was counted."""
    steps_s, images = phases.get(TRAIN_STEPS, 0.0), counts.get(TRAIN_STEP_IMAGES, 0)
    return {TRAIN_STEP_IMAGES: images,
            "train_steps_images_per_s": round(images / steps_s, 1) if images and steps_s else None}


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_oof(path: Path, dm: LandslideDataModule, results: list[dict]) -> None:
    """``ID,label,prob,filtered,fold`` of every validated training image (the pipeline's out-of-fold probability),
    with ``network_prob`` (the network alone) and ``features_score`` (the filter's classifier) where the run has
    them: what the label audit reads."""
    rows = []
    for r in results:
        oof = r["oof"]
        frame = pd.DataFrame({
            "ID": [dm.train_ids[i] for i in oof["index"]],
            "label": dm.labels[oof["index"]],
            "prob": np.round(oof["prob"], 6),
            "filtered": ~np.asarray(oof["keep"], bool),
            "fold": r["fold"],
        })
        if "network_prob" in oof:
            frame["network_prob"] = np.round(oof["network_prob"], 6)
        features = r.get("features_oof")
        if features is not None and features["index"] == oof["index"]:
            frame["features_score"] = np.round(features["score"], 6)
        rows.append(frame)
    with atomic_output(path) as tmp:
        pd.concat(rows).to_csv(tmp, index=False)
