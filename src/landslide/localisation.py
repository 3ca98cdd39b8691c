"""Where in a patch a classifier sees a landslide: pixel evidence maps from any network, batched on the device.

``cam`` (class activation maps, generalised): every global pooling of a spatial feature map (a mean, max, sum or
log-sum-exp of a 4-D tensor over its two spatial axes, or an adaptive pooling to 1 x 1) is caught as the network
runs (a :class:`torch.overrides.TorchFunctionMode`, so networks need no hooks or names), and its input ``A`` (n, c,
h, w) becomes a leaf of the autograd graph. One backward pass through the head gives the gradient of the logit
with respect to each pooled channel, ``w_c`` (the sum of the gradient over ``A``'s pixels); a level's map is
``sum_c w_c A_c``, upsampled to the input's size, and the levels (an FPN pools three) are summed. With a linear
head on average pooling this is exactly Zhou et al.'s CAM (the map's mean is the logit less the bias); with an MLP
head it is Grad-CAM at the pooled maps (first order); with max pooling the same weights score every pixel as the
pooling would score it. Only the head is differentiated: the parameters are frozen and nothing before the pooling
records a graph, so a map costs about one forward pass.

``gradient`` (input x gradient): the logit's gradient with respect to the normalised input times the input, summed
over channels; needs a full backward pass, and is the fallback for a network whose pooling is not caught (a
flatten, a strided reduction).

Either way a map is the positive part of the evidence, divided by its peak in the image: 1 where the network's
evidence for a landslide peaks, 0 where there is none (:func:`relative_evidence`). Input x gradient is noisy from
pixel to pixel: its positive part is smoothed by a Gaussian of ``GRADIENT_SIGMA_PX`` and its peak is the 99th
percentile (clipped at 1), so that a few pixels do not set the scale of the whole window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from landslide.data.augment import TTA_VIEWS, tta_views
from landslide.module import LandslideModule

METHODS = ("cam", "gradient")
#: smoothing of input x gradient maps (px, Gaussian sigma) and the share of pixels below their peak
GRADIENT_SIGMA_PX = 3.0
GRADIENT_PEAK_QUANTILE = 0.99

_REDUCTIONS = {torch.mean, torch.Tensor.mean, torch.amax, torch.Tensor.amax, torch.sum, torch.Tensor.sum,
               torch.logsumexp, torch.Tensor.logsumexp, torch.nansum, torch.Tensor.nansum}
_ADAPTIVE = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices}


def _is_global_pooling(func, args: tuple, kwargs: dict) -> bool:
    """True for a reduction of a 4-D tensor over exactly its two spatial axes to (n, c), or an adaptive pooling
    of a 4-D tensor to 1 x 1."""
    if not args or not isinstance(args[0], Tensor) or args[0].ndim != 4:
        return False
    if func in _ADAPTIVE:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    if func not in _REDUCTIONS:
        return False
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 and isinstance(args[2], bool) else kwargs.get("keepdim", False)
    if dim is None or keepdim:
        return False
    dims = {int(d) % 4 for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
    return dims == {2, 3}


class PoolingTap(TorchFunctionMode):
    """While active, every global pooling of a spatial map pools a detached copy that requires grad instead;
    :attr:`maps` holds those copies, in the order the network pooled them."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: list[Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_global_pooling(func, args, kwargs):
            leaf = args[0].detach().requires_grad_(True)
            self.maps.append(leaf)
            args = (leaf, *args[1:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """The network's parameters require no gradient inside (restored after), so that only what the caller marks
    records a graph."""
    flags = [(p, p.requires_grad) for p in net.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def class_activation(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor] | None:
    """Logits (n,) and class activation maps (n, H, W) of ``net`` on normalised ``x`` (n, c, H, W); None when the
    network pools no spatial map that :class:`PoolingTap` catches (or none of them reaches the logit)."""
    tap = PoolingTap()
    with frozen(net), torch.enable_grad(), tap:
        logits = net(x)
    if not tap.maps or not logits.requires_grad:
        return None
    grads = torch.autograd.grad(logits.float().sum(), tap.maps, allow_unused=True)
    cam = None
    with torch.autocast(x.device.type, enabled=False):  # the maps in float32, whatever the forward ran in
        for a, g in zip(tap.maps, grads):
            if g is None:
                continue
            weights = g.float().sum(dim=(-2, -1))  # d logit / d pooled channel, for mean and max pooling alike
            level = torch.einsum("nc,nchw->nhw", weights, a.detach().float())
            level = F.interpolate(level[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            cam = level if cam is None else cam + level
    return (logits.detach().float(), cam) if cam is not None else None


def input_gradient(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (n,) and input x gradient maps (n, H, W), summed over channels, of ``net`` on normalised ``x``."""
    x = x.detach().requires_grad_(True)
    with frozen(net), torch.enable_grad():
        logits = net(x)
        (grad,) = torch.autograd.grad(logits.float().sum(), x)
    with torch.autocast(x.device.type, enabled=False):
        return logits.detach().float(), (grad.float() * x.detach().float()).sum(1)


def relative_evidence(maps: Tensor, peak_quantile: float = 1.0) -> Tensor:
    """(n, H, W) evidence as shares of each image's peak: the positive part divided by its maximum, or by its
    ``peak_quantile`` quantile and clipped at 1 (0 where the image holds no positive evidence)."""
    positive = maps.clamp_min(0)
    if peak_quantile >= 1.0:
        peak = positive.amax(dim=(-2, -1), keepdim=True)
    else:  # kthvalue: no size limit (torch.quantile has one)
        flat = positive.flatten(-2)
        k = max(1, min(flat.shape[-1], round(peak_quantile * flat.shape[-1])))
        peak = flat.kthvalue(k, dim=-1).values[..., None, None]
        peak = torch.where(peak > 0, peak, positive.amax(dim=(-2, -1), keepdim=True))
    return torch.where(peak > 0, (positive / peak.clamp_min(1e-12)).clamp_max(1.0), torch.zeros_like(positive))


def gaussian_smooth(maps: Tensor, sigma: float) -> Tensor:
    """(n, H, W) maps smoothed by a separable Gaussian of ``sigma`` px (edges replicated)."""
    radius = max(1, int(3 * sigma))
    taps = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(maps[:, None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))[:, 0]


def inverse_dihedral_view(x: Tensor, k: int) -> Tensor:
    """Undo :func:`~landslide.data.augment.dihedral_view` ``k`` on the last two axes."""
    out = torch.rot90(x, -1, (-2, -1)) if k >= 4 else x
    flip_dims = ((), (-1,), (-2,), (-2, -1))[k % 4]
    return out.flip(flip_dims) if flip_dims else out


def evidence(module: LandslideModule, images: Tensor, method: str) -> tuple[Tensor, Tensor, str]:
    """Probabilities (n,) and relative evidence maps (n, H, W) of ``module`` on ``images`` in physical units, and
    the method used (``cam`` falls back to ``gradient`` for a network whose pooling is not caught)."""
    if method not in METHODS:
        raise ValueError(f"unknown localisation method {method!r}; choose one of {', '.join(METHODS)}")
    x = module.normalise(images)
    if module.hparams.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    found = class_activation(module.net, x) if method == "cam" else None
    if found is None:
        method = "gradient"
        found = input_gradient(module.net, x)
    logits, maps = found
    if method == "gradient":
        with torch.autocast(x.device.type, enabled=False):
            relative = relative_evidence(gaussian_smooth(maps.float().clamp_min(0), GRADIENT_SIGMA_PX),
                                         GRADIENT_PEAK_QUANTILE)
        return torch.sigmoid(logits), relative, method
    return torch.sigmoid(logits), relative_evidence(maps), method


def localise(module: LandslideModule, images: Tensor, batch_size: int, tta: bool, device: torch.device,
             method: str, bf16: bool) -> tuple[Tensor, Tensor, str]:
    """(views, n) probabilities and (views, n, H, W) relative evidence, each view's map turned back to the image's
    orientation, on ``device``; 8 dihedral views with ``tta``, else 1. ``batch_size`` bounds the images through the
    network at once, views included. Returns the method used too."""
    module = module.to(device).eval()
    views = TTA_VIEWS if tta else 1
    chunk = max(1, batch_size // views)
    probs, maps, used = [], [], method
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(device, non_blocking=True)
        stacked = tta_views(x).flatten(0, 1) if tta else x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            p, m, used = evidence(module, stacked, method)
        m = m.view(views, x.shape[0], *m.shape[-2:])
        if tta:
            m = torch.stack([inverse_dihedral_view(m[k], k) for k in range(views)])
        probs.append(p.view(views, x.shape[0]))
        maps.append(m)
    if not probs:
        size = images.shape[-2:]
        return torch.zeros(views, 0, device=device), torch.zeros(views, 0, *size, device=device), method
    return torch.cat(probs, 1), torch.cat(maps, 1), used
