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


class FitPhases(Callback):
    """The fit's seconds by phase: ``first_step`` (the first training step: compilation, warm-up, first batch),
    ``train_steps`` (the other steps with their batches' gathering and augmentation, and the per-epoch bookkeeping),
    ``validation`` and ``checkpoints`` (every ``trainer.save_checkpoint``: state gathering and, unless an
    asynchronous checkpoint plugin writes it in a thread, the write). The fit's own set-up and tear-down stay in the
    phase the caller opened around ``fit``. Does nothing without an active timer."""

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
        if timer is not None and timer.current == FIRST_STEP:
            timer.stop(FIRST_STEP)
            timer.start(TRAIN_STEPS)

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
