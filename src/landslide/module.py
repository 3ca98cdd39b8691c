"""LandslideModule: wraps any network with normalisation, loss, optimiser, schedule and metrics."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.optim import Optimizer
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score

from landslide.bands import CHANNEL_NAMES
from landslide.data.augment import TTA_VIEWS, dihedral_view
from landslide.losses import build_loss, pixel_loss
from landslide.metrics import ValidationOutputs, binary_scores
from landslide.models import build_network


class LandslideModule(L.LightningModule):
    """The stage-2 classifier.

    ``net`` names one of this project's networks (``_target_``) and its plain arguments; it is built here, through
    the allow-list of :func:`landslide.models.build_network`, so that a checkpoint alone rebuilds the model and
    settings read from a file can build nothing else. Inputs are in physical units and are normalised with
    ``norm_mean``/``norm_std`` (one value per channel, fitted on the fold's training part), which the checkpoint
    also carries together with the channel names.

    ``optimizer`` and ``scheduler`` are factories (the config's ``_partial_`` targets): ``optimizer(param_groups)``
    and ``scheduler(optimizer[, total_steps=...])``, called in :meth:`configure_optimizers`; a module built for
    prediction needs neither. The saved hyperparameters hold only plain values: the factories are recorded as plain
    descriptions (their target and arguments), which a checkpoint carries as metadata and never builds (given such a
    description back, the module keeps it as it is and builds no optimiser). Every other setting comes from the
    config (``configs/model_base.yaml``); none has a default here.

    ``pixel_weight`` > 0 (``experiment=segment``): the network segments (``segment(x)`` gives pixel logits (n, H, W)
    and the patch logits, :class:`~landslide.models.segment.SegmentUNet`) and training batches carry slide masks
    (``data.masks``); the loss adds ``pixel_weight`` x (pixel BCE + Dice) on the images with a mask, and validation
    logs the pixel IoU at 0.5 (``val/pixel_iou``). ``configs/model_base.yaml`` gives 0 (patch labels only),
    ``experiment=segment`` 1; checkpoints made before it existed are completed with 0 (checkpoint.EARLIER_VALUES).
    """

    def __init__(
        self,
        net: dict,
        channels: list[str],
        norm_mean: list[float],
        norm_std: list[float],
        *,
        loss: str,
        pos_weight: float,
        focal_gamma: float,
        focal_alpha: float,
        channels_last: bool,
        compile: bool,
        pixel_weight: float,
        optimizer: Callable[..., Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
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
        for name, factory in (("optimizer", optimizer), ("scheduler", scheduler)):
            if factory is not None and not callable(factory) and not isinstance(factory, Mapping):
                raise ValueError(f"model.{name} must be a factory (a _partial_ target), got {factory!r}")
        # a Mapping is a recorded description (a checkpoint's settings, as Lightning's load_from_checkpoint passes
        # them back): metadata, never built, so such a module predicts but does not train
        self.optimizer_factory = optimizer if callable(optimizer) else None
        self.scheduler_factory = scheduler if callable(scheduler) else None
        # plain values only: a checkpoint is read with weights_only=True and rebuilt from these settings
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams.update(optimizer=describe(optimizer), scheduler=describe(scheduler))
        # what the loggers record (Lightning's frozen copy, taken before the update): the descriptions included
        self._hparams_initial = copy.deepcopy(self.hparams)
        self.channels = channels
        self.net = build_network(net, channels)
        self.register_buffer("mean", torch.tensor(norm_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(norm_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.criterion = build_loss(loss, pos_weight=pos_weight, focal_gamma=focal_gamma, focal_alpha=focal_alpha)
        if pixel_weight < 0:
            raise ValueError(f"model.pixel_weight must be >= 0, got {pixel_weight}")
        if pixel_weight > 0 and not callable(getattr(self.net, "segment", None)):
            raise ValueError(f"model.pixel_weight={pixel_weight} needs a network that segments (segment(x): pixel "
                             f"and patch logits, e.g. model=segment_unet); {net.get('_target_')} does not")
        self._pixel_counts = torch.zeros(2)  # validation pixels in both the prediction and the mask, in either
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # normalisation, layout and network in one compiled graph, so that Inductor fuses the input passes;
        # kept out of the module tree so that the state dict holds the weights once, under ``net.``
        object.__setattr__(self, "_forward", torch.compile(self._normalised_forward) if compile
                           else self._normalised_forward)
        # fed 0/1 predictions without argument checks: no host synchronisation per step
        self.train_metrics = MetricCollection({"f1": BinaryF1Score(validate_args=False)}, prefix="train/")
        # the epoch's outputs stay on the device; the scores are computed once per validation (val/<name>)
        self.val_outputs = ValidationOutputs()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        """Logits (n,) of a batch (n, c, 64, 64) in physical units."""
        return self._forward(x)

    def normalise(self, x: Tensor) -> Tensor:
        """A batch in physical units as the network takes it: standardised with the training statistics."""
        return (x - self.mean) / self.std

    def segment(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel logits (n, H, W) and patch logits (n,) of a batch in physical units (a segmenting network)."""
        x = self.normalise(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net.segment(x)

    @property
    def pixel_supervised(self) -> bool:
        """True when the network was trained with a pixel loss (its pixel map outlines slides)."""
        return float(self.hparams.get("pixel_weight", 0.0)) > 0 and callable(getattr(self.net, "segment", None))

    def _normalised_forward(self, x: Tensor) -> Tensor:
        x = self.normalise(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    @torch.no_grad()  # as Lightning validates inside fit: a graph compiled for validation batches is reused
    def predict_proba(self, x: Tensor, tta: bool = True) -> Tensor:
        """Probabilities (n,), or (8, n) over the dihedral test-time views when ``tta``."""
        if not tta:
            return torch.sigmoid(self(x).float())
        # the views concatenated (a tensor of its own, as a validation batch is, not a view of a stacked one)
        logits = self(torch.cat([dihedral_view(x, k) for k in range(TTA_VIEWS)])).float()
        return torch.sigmoid(logits).view(TTA_VIEWS, x.shape[0])

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.hparams.pixel_weight > 0:
            if "mask" not in batch:
                raise ValueError("model.pixel_weight > 0 needs slide masks in the batches: set data.masks=true")
            pixel, logits = self.segment(batch["x"])
            loss = self.criterion(logits.float(), batch["y"])
            part = pixel_loss(pixel.float(), batch["mask"], batch["has_mask"])
            self.log("train/pixel_loss", part, on_step=False, on_epoch=True, sync_dist=True)
            loss = loss + self.hparams.pixel_weight * part
        else:
            logits = self(batch["x"])
            loss = self.criterion(logits.float(), batch["y"])
        self.train_metrics.update((torch.sigmoid(logits.detach().float()) > 0.5).int(), batch["y"].int())
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.hparams.pixel_weight > 0 and "mask" in batch:
            pixel, logits = self.segment(batch["x"])
            logits = logits.float()
            has = batch["has_mask"]
            pred, truth = pixel[has] > 0, batch["mask"][has] > 0
            counts = torch.stack([(pred & truth).sum(), (pred | truth).sum()]).float()
            self._pixel_counts = self._pixel_counts.to(counts.device) + counts  # on the device: no host copy
        else:
            logits = self(batch["x"]).float()
        # the whole pipeline's prediction: images the negative filter removed count as predicted negative
        self.val_outputs.update(logits, torch.sigmoid(logits) * batch["keep"], batch["y"])

    def on_validation_epoch_end(self) -> None:
        # every process's outputs (torchmetrics gathers them); sync_dist only averages the equal values and keeps
        # Lightning quiet
        if self.val_outputs.update_count == 0:  # no validation batch ran
            return
        logits, prob, target = self.val_outputs.compute()
        self.val_outputs.reset()
        scores = {"val/loss": self.criterion(logits, target),
                  **{f"val/{k}": v[0] for k, v in binary_scores(prob[None], target[None]).items()}}
        if self._pixel_counts[1] > 0:
            scores["val/pixel_iou"] = (self._pixel_counts[0] / self._pixel_counts[1]).to(logits.device)
            self._pixel_counts = torch.zeros(2)
        values = torch.stack(list(scores.values())).tolist()  # one host copy per validation
        self.log_dict(dict(zip(scores, values)), sync_dist=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimization(self.net.named_parameters(), self.trainer.estimated_stepping_batches)

    def optimization(self, named_parameters: Iterable[tuple[str, Tensor]], total_steps: int | float,
                     vector_ndim: int = 1) -> dict[str, Any]:
        """The optimiser (``model.optimizer``) over ``named_parameters`` and its schedule (``model.scheduler``,
        stepped after every optimiser step, over ``total_steps``). Biases and parameters of at most ``vector_ndim``
        dimensions (normalisation weights) take no weight decay; the others the optimiser's own."""
        if self.optimizer_factory is None:
            raise ValueError("no optimizer: this module was built for prediction (model.optimizer is not set)")
        decay, no_decay = [], []
        for name, p in named_parameters:
            (no_decay if p.ndim <= vector_ndim or name.endswith(".bias") else decay).append(p)
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total = max(int(total_steps), 1)
        takes_total = "total_steps" in inspect.signature(self.scheduler_factory).parameters
        scheduler = self.scheduler_factory(optimizer, total_steps=total) if takes_total else \
            self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _plain(value: Any) -> Any:
    """``value`` as JSON-like plain data (numbers, strings, lists, dicts); anything else as its ``repr``."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return repr(value)


def describe(factory: Callable[..., Any] | None) -> dict[str, Any] | None:
    """A plain description of a factory, as the config wrote it: ``{"_target_": ..., "_partial_": True, **kwargs}``
    for a ``functools.partial`` (what Hydra builds from a ``_partial_`` target). Metadata for checkpoints and
    loggers: nothing ever builds an object from it."""
    if factory is None:
        return None
    if isinstance(factory, Mapping):  # already a description
        return _plain(factory)
    func, args, keywords = factory, (), {}
    if isinstance(factory, partial):
        func, args, keywords = factory.func, factory.args, factory.keywords
    name = getattr(func, "__qualname__", type(func).__qualname__)
    out: dict[str, Any] = {"_target_": f"{getattr(func, '__module__', None) or type(func).__module__}.{name}",
                           "_partial_": True}
    if args:
        out["_args_"] = _plain(list(args))
    out.update({k: _plain(v) for k, v in keywords.items()})
    return out
