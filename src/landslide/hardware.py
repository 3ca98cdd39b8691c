"""What the hardware supports, for configs and inference: bf16 autocast on this device or not."""

from __future__ import annotations

import torch


def bf16_supported(device_type: str) -> bool:
    """True where bf16 autocast is fast: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX (oneDNN)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def best_precision(accelerator: str = "auto") -> str:
    """Lightning precision for ``accelerator``: ``bf16-mixed`` where :func:`bf16_supported`, else ``32-true``."""
    if accelerator in ("auto", "gpu", "cuda"):
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device_type = accelerator
    return "bf16-mixed" if bf16_supported(device_type) else "32-true"
