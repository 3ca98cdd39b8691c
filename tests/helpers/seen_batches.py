"""A callback that notes, in ``folder/rank<r>.jsonl``, the image indices of every training and validation batch each
process sees: the multi-process tests read which images every rank trained on."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SeenBatches(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def _note(self, trainer, stage: str, batch) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        row = {"run": str(trainer.default_root_dir), "stage": stage, "epoch": trainer.current_epoch,
               "step": trainer.global_step, "world": trainer.world_size, "index": batch["index"].tolist()}
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._note(trainer, "train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._note(trainer, "val", batch)
