"""Batched probabilities of a trained module on a resident tensor, with the 8 dihedral views.

A room below training and inference: both score with it (out-of-fold probabilities, test sets, maps), and it
imports neither."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from landslide.data.augment import TTA_VIEWS
from landslide.hardware import bf16_supported, inference_autocast
from landslide.module import LandslideModule


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU where there is one, else the CPU; any other name as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()  # as Lightning validates inside fit: a graph compiled for validation batches is reused
def predict_probs(module: LandslideModule, images: Tensor, batch_size: int, tta: bool, device: torch.device | str,
                  bf16: bool | None = None) -> np.ndarray:
    """(views, n) float32 probabilities: 8 views with ``tta``, else 1. ``images`` in physical units.

    ``batch_size`` bounds the images that pass through the network at once, views included (with ``tta`` each
    chunk holds ``batch_size // 8`` images). The chunks run as Lightning's validation does (``no_grad``, bf16
    autocast without a weight cache), so a compiled network reuses the graph compiled for validation.
    ``bf16=None`` uses bf16 autocast where the device runs it fast (see :func:`bf16_supported`)."""
    device = torch.device(device)
    bf16 = bf16_supported(device.type) if bf16 is None else bf16
    module = module.to(device).eval()
    views = TTA_VIEWS if tta else 1
    chunk = max(1, batch_size // views)
    out = []
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(device, non_blocking=True)
        with inference_autocast(device.type, bf16):
            probs = module.predict_proba(x, tta=tta)
        out.append(probs.view(-1, x.shape[0]).float())
    if not out:
        return np.zeros((views, 0), np.float32)
    return torch.cat(out, 1).cpu().numpy()
