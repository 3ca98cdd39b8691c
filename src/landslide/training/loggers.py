"""Per-fold Lightning loggers from the ``logger`` config group (CSV, TensorBoard, W&B)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf


def build_loggers(cfg: DictConfig, fold: int, fold_dir: Path) -> list[Logger]:
    """One logger per configured entry, versioned by fold. W&B runs of one CV run share a group and keep their
    run id in ``fold_dir/wandb_id`` so that a resumed fold continues the same W&B run."""
    loggers: list[Logger] = []
    for _, entry in (cfg.get("logger") or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        target = entry["_target_"]
        extra: dict[str, Any] = {}
        if target.endswith("WandbLogger"):
            id_file = fold_dir / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
            fold_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id)
            extra = {"name": f"{cfg.name}-fold{fold}", "id": run_id, "resume": "allow"}
        elif target.endswith(("CSVLogger", "TensorBoardLogger")):
            extra = {"version": f"fold_{fold}"}
        logger = instantiate(entry, **extra)
        if target.endswith("WandbLogger"):
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        loggers.append(logger)
    return loggers


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so that multirun jobs and failures do not leak them into the next run."""
    for logger in loggers:
        logger.finalize("success")
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
