"""Validation every N epochs that never skips the epoch a run keeps."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class ValidateLastEpoch(Callback):
    """With ``trainer.check_val_every_n_epoch`` = N > 1 Lightning validates epochs N, 2N, ...; this validates the
    last epoch too (``trainer.max_epochs``), the one ``epoch_selection=last`` keeps and the summary reports."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        if last and trainer.check_val_every_n_epoch not in (None, 1):
            trainer.check_val_every_n_epoch = 1
