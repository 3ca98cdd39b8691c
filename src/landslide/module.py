"""LandslideModule: wraps any network with normalisation, loss, optimiser, schedule and metrics."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryPrecision,
    BinaryPrecisionRecallCurve,
    BinaryRecall,
)

from landslide.bands import CHANNEL_NAMES
from landslide.data.augment import TTA_VIEWS, tta_views
from landslide.losses import build_loss
from landslide.models import build_network


class LandslideModule(L.LightningModule):
    """The stage-2 classifier.

    ``net`` names one of this project's networks (``_target_``) and its plain arguments; it is built here, through
    the allow-list of :func:`landslide.models.build_network`, so that a checkpoint alone rebuilds the model and
    settings read from a file can build nothing else. Inputs are in physical units and are normalised with
    ``norm_mean``/``norm_std`` (one value per channel, fitted on the fold's training part), which the checkpoint
    also carries together with the channel names.
    """

    def __init__(
        self,
        net: dict,
        channels: list[str],
        norm_mean: list[float],
        norm_std: list[float],
        loss: str = "bce",
        pos_weight: float = 2.0,
        focal_gamma: float = 2.0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.1,
        min_lr_ratio: float = 0.01,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        channels = list(channels)
        unknown = [c for c in channels if c not in CHANNEL_NAMES]
        if unknown:
            raise ValueError(f"unknown channels {unknown}")
        if not (len(norm_mean) == len(norm_std) == len(channels)):
            raise ValueError(
                f"normalisation statistics do not match the band set: {len(channels)} channels "
                f"({', '.join(channels)}) but {len(norm_mean)} means and {len(norm_std)} standard deviations"
            )
        if min(norm_std) <= 0:
            raise ValueError("normalisation standard deviations must be positive")
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"unknown optimizer {optimizer!r}; choose adam or adamw")
        self.save_hyperparameters()
        self.channels = channels
        self.net = build_network(net, channels)
        self.register_buffer("mean", torch.tensor(norm_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(norm_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.criterion = build_loss(loss, pos_weight, focal_gamma)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # normalisation, layout and network in one compiled graph, so that Inductor fuses the input passes;
        # kept out of the module tree so that the state dict holds the weights once, under ``net.``
        object.__setattr__(self, "_forward", torch.compile(self._normalised_forward) if compile
                           else self._normalised_forward)
        at_half = {"threshold": 0.5}
        self.train_metrics = MetricCollection({"f1": BinaryF1Score(**at_half)}, prefix="train/")
        self.val_metrics = MetricCollection(
            {
                "f1": BinaryF1Score(**at_half),
                "precision": BinaryPrecision(**at_half),
                "recall": BinaryRecall(**at_half),
                "auroc": BinaryAUROC(),
                "ap": BinaryAveragePrecision(),
            },
            prefix="val/",
        )
        self.val_curve = BinaryPrecisionRecallCurve()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        """Logits (n,) of a batch (n, c, 64, 64) in physical units."""
        return self._forward(x)

    def normalise(self, x: Tensor) -> Tensor:
        """A batch in physical units as the network takes it: standardised with the training statistics."""
        return (x - self.mean) / self.std

    def _normalised_forward(self, x: Tensor) -> Tensor:
        x = self.normalise(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    @torch.inference_mode()
    def predict_proba(self, x: Tensor, tta: bool = True) -> Tensor:
        """Probabilities (n,), or (8, n) over the dihedral test-time views when ``tta``."""
        if not tta:
            return torch.sigmoid(self(x).float())
        views = tta_views(x)
        logits = self(views.flatten(0, 1)).float()
        return torch.sigmoid(logits).view(TTA_VIEWS, x.shape[0])

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch["x"])
        loss = self.criterion(logits.float(), batch["y"])
        self.train_metrics.update(torch.sigmoid(logits.detach().float()), batch["y"].int())
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["x"]).float()
        self.log("val/loss", self.criterion(logits, batch["y"]), on_step=False, on_epoch=True, sync_dist=True)
        # the whole pipeline's prediction: images the negative filter removed count as predicted negative
        prob = torch.sigmoid(logits) * batch["keep"]
        target = batch["y"].int()
        self.val_metrics.update(prob, target)
        self.val_curve.update(prob, target)

    def on_validation_epoch_end(self) -> None:
        # metrics gather every process's states; sync_dist only averages the equal values and keeps Lightning quiet
        self.log_dict(self.val_metrics.compute(), prog_bar=False, sync_dist=True)
        self.val_metrics.reset()
        precision, recall, thresholds = self.val_curve.compute()
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        best = torch.argmax(f1[:-1]) if thresholds.numel() else torch.tensor(0)
        self.log("val/f1_best", f1[best], sync_dist=True)
        self.log("val/best_threshold", thresholds[best] if thresholds.numel() else torch.tensor(0.5), sync_dist=True)
        self.val_curve.reset()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        optimizer = cls(groups, lr=hp.lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        factor = partial(warmup_cosine, total=total, warmup_fraction=hp.warmup_fraction, min_lr_ratio=hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine(step: int, total: int, warmup_fraction: float, min_lr_ratio: float) -> float:
    """The learning-rate factor at ``step`` of ``total``: linear warm-up, then cosine annealing to ``min_lr_ratio``."""
    warmup = round(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
