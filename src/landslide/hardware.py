"""What the hardware supports (bf16 autocast or not) and host settings that make it run at its speed."""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


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


def inference_autocast(device_type: str, bf16: bool) -> AbstractContextManager:
    """bf16 autocast for a forward pass without gradients, entered as Lightning's precision plugin enters it
    (no weight cache), or nothing: a graph compiled inside ``fit`` is then reused outside it."""
    return torch.autocast(device_type, torch.bfloat16, cache_enabled=False) if bf16 else nullcontext()


def device_type(accelerator: str) -> str:
    """The torch device type a Lightning ``accelerator`` (or a ``device`` setting) runs on: ``auto``, ``gpu`` and
    ``cuda`` (``cuda:1``) are ``cuda`` where a CUDA GPU is present, else ``cpu``; anything else is itself (``mps``).
    Case does not matter."""
    accelerator = str(accelerator).lower()
    if accelerator in ("auto", "gpu") or accelerator.startswith("cuda"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return accelerator


def best_precision(accelerator: str = "auto") -> str:
    """Lightning precision for ``accelerator``: ``bf16-mixed`` where :func:`bf16_supported`, else ``32-true``."""
    return "bf16-mixed" if bf16_supported(device_type(accelerator)) else "32-true"


def on_gpu(accelerator: str, gpu_value: Any, other_value: Any) -> Any:
    """Config resolver ``${on_gpu:ACCELERATOR,GPU_VALUE,OTHER_VALUE}``: the first value where ``accelerator`` runs on a
    CUDA GPU, else the second (a CPU, MPS). E.g. inference batches: large ones keep a GPU busy, while on a CPU a
    batch's activations must stay in cache, so small ones run faster."""
    return gpu_value if device_type(accelerator) == "cuda" else other_value


def tune_host_allocator(keep_bytes: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the system.

    A training step on the CPU allocates and frees tens of MB of activations; with glibc's defaults the freed
    memory goes back to the system and every page of the next step's tensors is faulted in again (on a 2-core
    Xeon that was 20-40% of a step). This keeps up to ``keep_bytes`` of free heap and serves blocks below
    ``mmap_threshold`` (32 MiB, glibc's maximum) from the heap. The process keeps its peak heap size. Applies to
    the whole process from now on; returns False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = 2**31 - 1
    settings = {_M_TRIM_THRESHOLD: min(keep_bytes, limit), _M_TOP_PAD: min(keep_bytes // 4, limit),
                _M_MMAP_THRESHOLD: min(mmap_threshold, 32 << 20)}
    applied = all(mallopt(param, value) == 1 for param, value in settings.items())
    if not applied:
        log.debug("mallopt refused some host allocator settings")
    return applied


def cuda_sync() -> None:
    """Wait for the GPU's queued work, where this process uses CUDA (a no-op otherwise: it starts nothing)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
