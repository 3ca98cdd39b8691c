"""Keeps the validation metrics of every epoch, for the cross-validation summary and the ablation figure."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class MetricHistory(Callback):
    """Records ``val/*`` metrics after each validation run (outside the sanity check), once the module logged them."""

    def __init__(self, prefix: str = "val/") -> None:
        self.prefix = prefix
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(self.prefix):
                row[key] = float(value)
        self.history.append(row)

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
