"""``train``, ``predict`` and ``make_map``: compose, instantiate, run. The thin entry points call these."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from landslide.errors import user_errors

log = logging.getLogger(__name__)

def _ensure_dir(path: str) -> str:
    """Config resolver ``${ensure_dir:...}``: the folder, created if missing (e.g. for the Optuna storage)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def register_resolvers() -> None:
    """``${ensure_dir:PATH}`` and ``${best_precision:ACCELERATOR}`` for the configs."""
    from landslide.hardware import best_precision

    if not OmegaConf.has_resolver("ensure_dir"):
        OmegaConf.register_new_resolver("ensure_dir", _ensure_dir)
    if not OmegaConf.has_resolver("best_precision"):
        OmegaConf.register_new_resolver("best_precision", best_precision)


register_resolvers()

CONFIG_DIR = os.environ.get("LANDSLIDE_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "configs"))


def _drop_advertisements(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _quiet_third_parties() -> None:
    """Silence, at their source, warnings that do not concern the user."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*", module="lightning")
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*", module="lightning.pytorch.utilities._pytree")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    logging.getLogger("rasterio").setLevel(logging.WARNING)  # GDAL's errors reach the user as our one line
    # Lightning prints through its own handler and through Hydra's: keep Hydra's (it also writes the run's log)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_advertisements)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def _tune_host(cfg: DictConfig) -> None:
    from landslide.hardware import tune_host_allocator

    if cfg.tune_host_allocator and tune_host_allocator():
        log.debug("host allocator tuned: freed memory stays in the process")


def print_config(cfg: DictConfig) -> None:
    """The composed config as a rich tree."""
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config")
    for key in cfg:
        branch = tree.add(str(key))
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml"))
    rprint(tree)


def train(cfg: DictConfig) -> float | None:
    """Train the two-stage pipeline over the folds; return the out-of-fold F1 (the value sweepers optimise)."""
    import lightning as L

    from landslide.training.cv import run_cv
    from landslide.training.ranks import is_rank_zero

    _quiet_third_parties()
    _tune_host(cfg)
    if cfg.print_config and is_rank_zero():
        print_config(cfg)
    L.seed_everything(int(cfg.seed), workers=True)
    with user_errors():
        summary = run_cv(cfg)
    value = summary.get(cfg.optimized_metric)
    return None if value is None else float(value)


def predict(cfg: DictConfig) -> dict:
    """Predict a test set with a training run's fold ensemble."""
    from landslide.inference.ensemble import predict_run

    _quiet_third_parties()
    _tune_host(cfg)
    with user_errors():
        return predict_run(
            cfg.run_dir, cfg.out, cfg.data.get("root"), cfg.data.get("cache_dir"), int(cfg.batch_size),
            cfg.get("tta"), str(cfg.device), cfg.get("precision"), cfg.data.get("nan_policy"),
        )


def make_map(cfg: DictConfig) -> dict:
    """Map a scene with a training run's fold ensemble: probability COG, optional polygons and figure, summary."""
    from landslide.inference.scene import predict_scene

    _quiet_third_parties()
    _tune_host(cfg)
    with user_errors():
        bands = cfg.get("bands")
        report = predict_scene(
            cfg.run_dir, cfg.scene, cfg.out, mode=str(cfg.mode), stride=int(cfg.stride), blend=str(cfg.blend),
            dtype=str(cfg.dtype), threshold=float(cfg.threshold), min_valid=float(cfg.min_valid),
            min_area_m2=float(cfg.min_area_m2), smooth=int(cfg.smooth), resolution_m=float(cfg.resolution_m),
            resolution_tolerance=float(cfg.resolution_tolerance), windows_per_batch=int(cfg.windows_per_batch),
            batch_size=int(cfg.batch_size), tta=cfg.tta, device=str(cfg.device), progress=bool(cfg.progress),
            gdal_cache_mb=int(cfg.gdal_cache_mb), vector=cfg.vector, summary=cfg.summary,
            band_map=None if bands is None else OmegaConf.to_container(bands),
        )
        if cfg.get("figure"):
            from landslide.plots.scene import plot_scene_map

            plot_scene_map(cfg.scene, cfg.out, cfg.figure, cfg.get("truth"), float(cfg.threshold),
                           None if bands is None else OmegaConf.to_container(bands))
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train_entry(cfg: DictConfig) -> float | None:
    return train(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def predict_entry(cfg: DictConfig) -> dict:
    return predict(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="map")
def map_entry(cfg: DictConfig) -> dict:
    return make_map(cfg)
