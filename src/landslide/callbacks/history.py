"""Keeps the metrics of every epoch, for the cross-validation summary, the run's curves and the ablation figure."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback


class MetricHistory(Callback):
    """One row per epoch: the ``val/*`` metrics after each validation run (outside the sanity check), and the
    training loss at the end of the training epoch.

    Only metrics logged in ``training_step`` are final when a callback's ``on_train_epoch_end`` runs (Lightning calls
    it before the module's own), hence ``train_keys``: the epoch-mean ``train/loss`` LandslideModule logs per step."""

    def __init__(self, prefix: str = "val/", train_keys: Sequence[str] = ("train/loss",)) -> None:
        self.prefix = prefix
        self.train_keys = tuple(train_keys)
        self.history: list[dict[str, float]] = []

    def _row(self, epoch: int) -> dict[str, float]:
        """The row of ``epoch``, appended when the epoch has none yet."""
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history.append({"epoch": epoch})
        return self.history[-1]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = self._row(trainer.current_epoch)
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        found = {k: float(trainer.callback_metrics[k]) for k in self.train_keys if k in trainer.callback_metrics}
        if found:
            self._row(trainer.current_epoch).update(found)

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
