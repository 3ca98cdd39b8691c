"""Per-fold Lightning loggers from the ``logger`` config group (CSV, TensorBoard, W&B)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from landslide.files import atomic_output
from landslide.training.ranks import is_rank_zero

#: where a resumed fold keeps the metrics of its earlier invocations (Lightning's CSV logger starts a new file)
EARLIER_METRICS = "metrics.earlier.csv"


def remembered(path: Path, value: str | None) -> str | None:
    """The value stored in ``path`` by an earlier (interrupted) run, else ``value``, stored for the next one."""
    if path.is_file():
        return path.read_text().strip()
    if value is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(value))
    return value


def logger_entries(cfg: DictConfig, kind: type) -> list[DictConfig]:
    """The entries of the ``logger`` group whose ``_target_`` is ``kind`` or a subclass of it."""
    return [entry for entry in (cfg.get("logger") or {}).values()
            if entry is not None and "_target_" in entry and issubclass(get_class(entry["_target_"]), kind)]


def wandb_group(run_dir: Path, configured: str | None) -> str | None:
    """The W&B group of a CV run's runs (its folds and the run itself): ``logger.wandb.group``, with the job's
    number in a multirun (each job is a CV run of its own), kept in ``run_dir/wandb_group`` so that a resumed run
    stays in it."""
    if configured is not None and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        configured = f"{configured}-{HydraConfig.get().job.num}"
    return remembered(run_dir / "wandb_group", configured)


def build_loggers(cfg: DictConfig, fold: int, fold_dir: Path) -> list[Logger]:
    """One logger per configured entry, versioned by fold. W&B runs of one CV run share a group (see
    :func:`wandb_group`) and each keeps its run id in ``fold_dir/wandb_id``, so a resumed run continues the same W&B
    runs in the same group; the fold runs upload no checkpoints (the run's own W&B run holds them all, see
    :mod:`landslide.training.run_logging`). With several processes (DDP) every process has the loggers (Lightning
    logs from rank zero only) and only rank zero touches the fold's files."""
    lead = is_rank_zero()
    loggers: list[Logger] = []
    for _, entry in (cfg.get("logger") or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        cls = get_class(entry["_target_"])
        extra: dict[str, Any] = {}
        if issubclass(cls, WandbLogger) and lead:
            extra = {"name": f"{cfg.name}-fold{fold}", "id": remembered(fold_dir / "wandb_id", uuid.uuid4().hex[:12]),
                     "group": wandb_group(fold_dir.parent.parent, entry.get("group")),
                     "resume": "allow", "log_model": False}
        elif issubclass(cls, (CSVLogger, TensorBoardLogger)):
            extra = {"version": f"fold_{fold}"}
        logger = instantiate(entry, **extra)
        if isinstance(logger, WandbLogger):
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if isinstance(logger, CSVLogger) and lead:
            _set_aside_metrics(Path(logger.log_dir))
        loggers.append(logger)
    return loggers


def _concat_csv(paths: list[Path], out: Path) -> None:
    frames = [pd.read_csv(p) for p in paths if p.is_file() and p.stat().st_size]
    if frames:
        with atomic_output(out) as tmp:
            pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)


def _set_aside_metrics(log_dir: Path) -> None:
    """Keep the metrics a killed invocation wrote (Lightning's CSV logger would delete them)."""
    current, earlier = log_dir / "metrics.csv", log_dir / EARLIER_METRICS
    if current.is_file():
        _concat_csv([earlier, current], earlier)
        current.unlink()


def _restore_metrics(log_dir: Path) -> None:
    """One ``metrics.csv`` holding the rows of every invocation of the fold, oldest first. Rows of an interrupted
    invocation from the epoch the resumed one restarted at (its last checkpoint) on are left out: that invocation
    trained those epochs again."""
    current, earlier = log_dir / "metrics.csv", log_dir / EARLIER_METRICS
    if earlier.is_file():
        if current.is_file() and current.stat().st_size and earlier.stat().st_size:
            now, before = pd.read_csv(current), pd.read_csv(earlier)
            if "epoch" in now and "epoch" in before and now["epoch"].notna().any():
                restart = now["epoch"].min()
                with atomic_output(earlier) as tmp:
                    before[~(before["epoch"] >= restart)].to_csv(tmp, index=False)
        _concat_csv([earlier, current], current)
        earlier.unlink()


def finish_loggers(loggers: list[Logger]) -> None:
    """Flush every logger, put a resumed fold's earlier CSV rows back, and close W&B runs so that multirun jobs
    and failures do not leak them into the next run."""
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, CSVLogger) and is_rank_zero():
            _restore_metrics(Path(logger.log_dir))
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()


def log_figure(loggers: list[Logger], key: str, figure, step: int = 0, folder: Path | None = None) -> None:
    """Write a matplotlib figure as a PNG in ``folder`` (named after ``key``) and send it through each logger's
    image API (W&B images, TensorBoard figures)."""
    import matplotlib.pyplot as plt

    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(folder / f"{key.replace('/', '_')}.png") as tmp:
            figure.savefig(tmp, dpi=90, format="png")
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[figure], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, figure, global_step=step, close=False)
    plt.close(figure)
