"""Opening a saved model without trusting it: tensors and plain values only (``weights_only``), and the network
rebuilt through :func:`landslide.models.build_network`'s allow-list. Any problem is one :class:`RunError` line
that names the file."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from landslide.errors import RunError, first_line
from landslide.module import LandslideModule


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """A checkpoint's contents, loaded with ``weights_only=True`` (no pickled objects, no code)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, empty, foreign or unsafe: torch says which in its first line
        raise RunError(f"{path}: cannot be read as a checkpoint of weights ({first_line(err)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise RunError(f"{path}: not a model checkpoint (no state_dict)")
    return ckpt


def network_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """The ``net.*`` weights of a checkpoint (for fine-tuning)."""
    weights = {k: v for k, v in read_checkpoint(path)["state_dict"].items() if k.startswith("net.")}
    if not weights:
        raise RunError(f"{path}: holds no network weights")
    return weights


#: Training-only settings a checkpoint may carry: the optimiser and schedule as plain descriptions (metadata, never
#: built), and the plain settings they replaced in checkpoints written before they became factories.
TRAINING_ONLY = frozenset({"optimizer", "scheduler", "lr", "weight_decay", "warmup_fraction", "min_lr_ratio"})
#: Settings that checkpoints written before they existed lack, with the value the code then used.
EARLIER_VALUES = {"focal_alpha": 0.75, "pixel_weight": 0.0}


def module_settings(path: Path | str, settings: Any) -> dict[str, Any]:
    """The checkpoint's settings as :class:`LandslideModule` takes them for prediction: training-only ones left
    out, earlier checkpoints completed; anything unknown is refused."""
    if not isinstance(settings, dict) or "net" not in settings:
        raise RunError(f"{path}: no network settings; not a model of this project")
    settings = {k: v for k, v in settings.items() if k not in TRAINING_ONLY}
    for key, value in EARLIER_VALUES.items():
        settings.setdefault(key, value)
    accepted = set(inspect.signature(LandslideModule).parameters) - TRAINING_ONLY
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise RunError(f"{path}: unknown model setting(s) {unknown}")
    return settings


def load_module(path: Path | str, device: torch.device | str = "cpu") -> LandslideModule:
    """The LandslideModule saved in ``path``, rebuilt from its plain settings and weights, in eval mode (with no
    optimiser: the recorded one is metadata). A checkpoint of a subclass is rebuilt as LandslideModule."""
    ckpt = read_checkpoint(path)
    settings = module_settings(path, ckpt.get("hyper_parameters"))
    try:
        module = LandslideModule(**settings)
        module.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise RunError(f"{path}: {first_line(err)}") from None
    return module.to(device).eval()
