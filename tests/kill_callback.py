"""A callback that kills the training process as ``kill -9`` would, for the resume tests (used through
``+callbacks.kill._target_=kill_callback.KillAtEpoch``; the tests put this folder on PYTHONPATH)."""

import os

from lightning.pytorch.callbacks import Callback


class KillAtEpoch(Callback):
    """Ends the process without any clean-up when epoch ``epoch`` (0-based) starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os._exit(9)
