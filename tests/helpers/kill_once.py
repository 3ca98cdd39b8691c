"""A callback that kills its own process (SIGKILL, no clean-up) once, at the start of a given epoch: a real crash
for resume tests. It notes every epoch it sees start in ``folder/epochs_started``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class KillOnce(Callback):
    def __init__(self, epoch: int, folder: str) -> None:
        self.epoch, self.folder = epoch, Path(folder)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "epochs_started", "a") as f:
            f.write(f"{trainer.current_epoch}\n")
        marker = self.folder / "killed"
        if trainer.current_epoch == self.epoch and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
