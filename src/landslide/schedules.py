"""Learning-rate schedules that the model config names (``model.scheduler``, a ``_partial_`` target).

A scheduler factory takes the optimiser, and ``total_steps`` (the run's optimiser steps, known when the trainer
configures the optimisers) where its signature names it; the module steps it after every optimiser step.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, total: int, warmup_fraction: float, min_lr_ratio: float) -> float:
    """The learning-rate factor at ``step`` of ``total``: linear warm-up, then cosine annealing to ``min_lr_ratio``."""
    warmup = round(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: Optimizer, total_steps: int, *, warmup_fraction: float,
                           min_lr_ratio: float) -> LambdaLR:
    """:func:`warmup_cosine` over ``total_steps`` optimiser steps: a warm-up over ``warmup_fraction`` of them, then
    cosine annealing from the optimiser's learning rate to ``min_lr_ratio`` times it."""
    factor = partial(warmup_cosine, total=max(int(total_steps), 1), warmup_fraction=warmup_fraction,
                     min_lr_ratio=min_lr_ratio)
    return LambdaLR(optimizer, factor)
