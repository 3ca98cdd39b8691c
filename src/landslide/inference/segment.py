"""Pixel probabilities of a segmenting network (``map.py mode=segment``), batched on the device.

A network trained with a pixel loss (:class:`~landslide.models.segment.SegmentUNet`, ``experiment=segment``) gives
a logit per pixel; its patch logit is pooled from them. For each of the 8 dihedral views (with ``tta``) the
pixel probabilities are turned back to the image's orientation; the caller calibrates them with the fold's
threshold like the patch probabilities (the patch logit is a local mean of pixel logits at its maximum, so the
fold's patch threshold is the pixel level at which the network calls a slide).
"""

from __future__ import annotations

import torch
from torch import Tensor

from landslide.data.augment import TTA_VIEWS, tta_views
from landslide.localisation import inverse_dihedral_view
from landslide.module import LandslideModule


def no_pixel_map(module: LandslideModule) -> str | None:
    """Why ``module`` cannot give mode=segment's pixel map (None when it can)."""
    target = module.hparams["net"].get("_target_")
    if not callable(getattr(module.net, "segment", None)):
        return f"its network {target} gives no pixel map (a patch classifier)"
    if not module.pixel_supervised:
        return f"its network {target} was trained without slide masks (model.pixel_weight=0)"
    return None


def segment_views(module: LandslideModule, images: Tensor, batch_size: int, tta: bool, device: torch.device,
                  bf16: bool) -> tuple[Tensor, Tensor]:
    """(views, n) patch probabilities and (views, n, H, W) pixel probabilities of ``images`` (physical units), each
    view's map turned back to the image's orientation, on ``device``; 8 dihedral views with ``tta``, else 1.
    ``batch_size`` bounds the images through the network at once, views included."""
    module = module.to(device).eval()
    views = TTA_VIEWS if tta else 1
    chunk = max(1, batch_size // views)
    probs, maps = [], []
    with torch.inference_mode():
        for start in range(0, images.shape[0], chunk):
            x = images[start : start + chunk].to(device, non_blocking=True)
            stacked = tta_views(x).flatten(0, 1) if tta else x
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pixel, logits = module.segment(stacked)
            m = torch.sigmoid(pixel.float()).view(views, x.shape[0], *pixel.shape[-2:])
            if tta:
                m = torch.stack([inverse_dihedral_view(m[k], k) for k in range(views)])
            probs.append(torch.sigmoid(logits.float()).view(views, x.shape[0]))
            maps.append(m)
    if not probs:
        size = images.shape[-2:]
        return torch.zeros(views, 0, device=device), torch.zeros(views, 0, *size, device=device)
    return torch.cat(probs, 1), torch.cat(maps, 1)
