"""The resolvers the configs use (``${ensure_dir:..}``, ``${best_precision:..}``, ``${on_gpu:..}``,
``${unique_id:}``), registered once for every command and every reader of a run's config."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf


def _ensure_dir(path: str) -> str:
    """Config resolver ``${ensure_dir:...}``: the folder, created if missing (e.g. for the Optuna storage)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def _unique_id() -> str:
    """Config resolver ``${unique_id:}``: this process's id and a random suffix, the same everywhere in one config
    (cached): two commands started in the same second never share an output folder."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"


def register_resolvers() -> None:
    """``${ensure_dir:PATH}``, ``${best_precision:ACCELERATOR}``, ``${on_gpu:ACCELERATOR,GPU_VALUE,OTHER_VALUE}`` and
    ``${unique_id:}`` for the configs."""
    from landslide.hardware import best_precision, on_gpu

    if not OmegaConf.has_resolver("ensure_dir"):
        OmegaConf.register_new_resolver("ensure_dir", _ensure_dir)
    if not OmegaConf.has_resolver("best_precision"):
        OmegaConf.register_new_resolver("best_precision", best_precision)
    if not OmegaConf.has_resolver("on_gpu"):
        OmegaConf.register_new_resolver("on_gpu", on_gpu)
    if not OmegaConf.has_resolver("unique_id"):
        OmegaConf.register_new_resolver("unique_id", _unique_id, use_cache=True)
