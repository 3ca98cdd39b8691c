"""Splits ``Trainer.fit`` into the active :class:`~landslide.timing.PhaseTimer`'s phases."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from landslide.timing import active_timer, phase

FIRST_STEP = "first_step"
TRAIN_STEPS = "train_steps"
VALIDATION = "validation"
CHECKPOINTS = "checkpoints"
# the images of the batches the ``train_steps`` phase trained on (the first step's left out, like its seconds)
TRAIN_STEP_IMAGES = "train_step_images"


def batch_images(batch: Any) -> int:
    """Images in a training batch: ``x`` of (n, c, h, w), or of (folds, n, c, h, w) when folds are stacked."""
    x = batch.get("x") if isinstance(batch, dict) else None
    if x is None or x.dim() < 4:
        return 0
    return int(x.shape[0] * x.shape[1]) if x.dim() == 5 else int(x.shape[0])


class FitPhases(Callback):
    """The fit's seconds by phase: ``first_step`` (the first training step: compilation, warm-up, first batch),
    ``train_steps`` (the other steps with their batches' gathering and augmentation, and the per-epoch bookkeeping),
    ``validation`` and ``checkpoints`` (every ``trainer.save_checkpoint``: state gathering and, unless an
    asynchronous checkpoint plugin writes it in a thread, the write). The fit's own set-up and tear-down stay in the
    phase the caller opened around ``fit``. Counts the images of the ``train_steps`` batches
    (``train_step_images``). Does nothing without an active timer."""

    def __init__(self) -> None:
        self._save = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if active_timer() is None or self._save is not None:
            return
        save = self._save = trainer.save_checkpoint

        def timed_save(*args: Any, **kwargs: Any) -> Any:
            with phase(CHECKPOINTS):
                return save(*args, **kwargs)

        trainer.save_checkpoint = timed_save  # an instance attribute: this trainer only

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._save is not None:
            trainer.__dict__.pop("save_checkpoint", None)  # the class's method again
            self._save = None

    @staticmethod
    def _stop(*names: str) -> None:
        timer = active_timer()
        if timer is not None:
            for name in names:
                timer.stop(name)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = active_timer()
        if timer is not None:
            timer.start(FIRST_STEP)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        timer = active_timer()
        if timer is None:
            return
        if timer.current == FIRST_STEP:
            timer.stop(FIRST_STEP)
            timer.start(TRAIN_STEPS)
        elif timer.current == TRAIN_STEPS:
            timer.count(TRAIN_STEP_IMAGES, batch_images(batch))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = active_timer()
        if timer is not None:
            timer.start(VALIDATION)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(VALIDATION)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(TRAIN_STEPS, FIRST_STEP)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop(VALIDATION, TRAIN_STEPS, FIRST_STEP)
