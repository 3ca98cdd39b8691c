"""What a training job needs to know about the hyperparameter search it may be a trial of."""

from __future__ import annotations

import logging

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from landslide.training.ranks import is_rank_zero

log = logging.getLogger(__name__)


def search_sweeper() -> str | None:
    """The ``_target_`` of the sweeper running this job when it is a trial of a search (any sweeper but Hydra's
    basic one, which runs a fixed list of jobs), else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    target = str(HydraConfig.get().sweeper.get("_target_", ""))
    return None if target.endswith("BasicSweeper") else target


def warn_without_holdout(cfg: DictConfig) -> bool:
    """One warning line, in a search's first trial (rank zero), when no hold-out part is kept out of the folds: the
    search then optimises the very cross-validated score it reports. Returns whether it warned."""
    if (search_sweeper() is None or HydraConfig.get().job.num != 0 or not is_rank_zero()
            or float(cfg.data.holdout_fraction) > 0 or str(cfg.optimized_metric).startswith("holdout")):
        return False
    log.warning("no hold-out (data.holdout_fraction=0): the search's objective %s is the cross-validated score "
                "itself, biased upwards for the best trial; keep one out with data.holdout_fraction=0.2 and read "
                "holdout_f1 in cv_summary.json", cfg.optimized_metric)
    return True
