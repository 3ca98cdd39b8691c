"""Per-fold Lightning loggers from the ``logger`` config group (CSV, TensorBoard, W&B)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from landslide.files import atomic_output
from landslide.training.ranks import is_rank_zero

#: where a resumed fold keeps the metrics of its earlier invocations (Lightning's CSV logger starts a new file)
EARLIER_METRICS = "metrics.earlier.csv"


def _remembered(path: Path, value: str | None) -> str | None:
    """The value stored in ``path`` by an earlier (interrupted) run, else ``value``, stored for the next one."""
    if path.is_file():
        return path.read_text().strip()
    if value is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(value))
    return value


def build_loggers(cfg: DictConfig, fold: int, fold_dir: Path) -> list[Logger]:
    """One logger per configured entry, versioned by fold. W&B runs of one CV run share a group (kept in the run's
    ``wandb_group``) and each keeps its run id in ``fold_dir/wandb_id``, so a resumed run continues the same W&B
    runs in the same group. With several processes (DDP) every process has the loggers (Lightning logs from rank
    zero only) and only rank zero touches the fold's files."""
    lead = is_rank_zero()
    loggers: list[Logger] = []
    for _, entry in (cfg.get("logger") or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        cls = get_class(entry["_target_"])
        extra: dict[str, Any] = {}
        if issubclass(cls, WandbLogger) and lead:
            extra = {"name": f"{cfg.name}-fold{fold}", "id": _remembered(fold_dir / "wandb_id", uuid.uuid4().hex[:12]),
                     "group": _remembered(fold_dir.parent.parent / "wandb_group", entry.get("group")),
                     "resume": "allow"}
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
    """Send a matplotlib figure through each logger's image API (W&B images, TensorBoard figures); loggers
    without one (CSV) get a PNG in ``folder``."""
    import matplotlib.pyplot as plt

    saved = False
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[figure], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, figure, global_step=step, close=False)
        elif folder is not None and not saved:
            folder.mkdir(parents=True, exist_ok=True)
            figure.savefig(folder / f"{key.replace('/', '_')}.png", dpi=90)
            saved = True
    plt.close(figure)
