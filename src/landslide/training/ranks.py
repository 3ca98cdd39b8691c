"""Which process of a multi-process (DDP) run this is, and what only one of them may do.

Under Lightning's DDP strategy the script runs once per device: the first process starts the others when its
first ``Trainer.fit`` begins (each rerunning ``train.py`` with the same overrides and ``LOCAL_RANK`` set), and
every process runs the same fold loop. Side effects (fitting and saving filters, run files, CodeCarbon, loggers,
figures, the summary) belong to rank zero; the others only train and wait where they need its results.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, ListConfig


def is_rank_zero() -> bool:
    """True in the first (or only) process; Lightning reads the rank from the launcher's environment."""
    return (getattr(rank_zero_only, "rank", 0) or 0) == 0


def wait_for_rank_zero() -> None:
    """A barrier across the processes once the process group runs (after the first ``fit``); a no-op before."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def planned_processes(cfg: DictConfig) -> int:
    """How many processes the configured trainer trains with: 1 unless its strategy is a DDP one over several
    devices or nodes."""
    trainer = cfg.get("trainer")
    if trainer is None:
        return 1
    strategy = trainer.get("strategy", "auto")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy)
    if "ddp" not in name.lower():
        return 1
    devices = trainer.get("devices", "auto")
    if isinstance(devices, ListConfig):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:  # "0,1": device indices
        count = len([d for d in devices.split(",") if d.strip()])
    elif str(devices).lstrip("-").isdigit() and int(devices) > 0:
        count = int(devices)
    else:  # auto or -1: every GPU when training on GPUs, else one process
        accelerator = str(trainer.get("accelerator", "auto"))
        gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
        count = torch.cuda.device_count() if gpu else 1
    return max(1, count) * int(trainer.get("num_nodes", 1) or 1)
