"""K fold networks as one module: weights and BatchNorm buffers stacked along a leading fold axis
(``torch.func.stack_module_state``), one network skeleton running them all through ``functional_call`` under
``vmap``. Adam, AdamW, SGD and weight decay act per element, so one optimiser over the stacked tensors is K
optimisers (one that scales by a whole tensor's norm is not). Each fold's metrics are computed on its own
validation part and logged as ``val/<metric>/fold_<k>``; :meth:`StackedLandslideModule.unstack` gives the fold
modules back with their trained weights."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from landslide.metrics import binary_scores
from landslide.module import LandslideModule


def _slot(name: str) -> str:
    """A state-dict name made into an attribute name (no dots)."""
    return name.replace(".", "-")


class StackedLandslideModule(L.LightningModule):
    """K :class:`LandslideModule` networks trained at once as stacked weights (one leading fold axis).

    ``templates`` are the folds' own modules (initial weights, normalisation statistics, hyperparameters; the
    same architecture); they stay outside the module tree and receive the trained weights from :meth:`unstack`.
    ``val_sizes`` are the folds' numbers of validation images; ``folds`` their numbers, used in metric names.
    """

    def __init__(self, templates: list[LandslideModule], val_sizes: list[int], folds: list[int]) -> None:
        super().__init__()
        if len(templates) < 2:
            raise ValueError("stacking needs at least two folds")
        object.__setattr__(self, "templates", templates)
        self.folds, self.val_sizes = list(folds), list(val_sizes)
        self.hp = dict(templates[0].hparams)
        nets = [t.net for t in templates]
        persistent = set(nets[0].state_dict())
        params, buffers = stack_module_state(nets)
        self.param_names = list(params)
        self.buffer_names = [n for n in buffers if n in persistent]
        self.stacked_params = nn.ParameterDict({_slot(n): nn.Parameter(p.detach().clone()) for n, p in params.items()})
        self.stacked_buffers = nn.Module()
        for n in self.buffer_names:
            self.stacked_buffers.register_buffer(_slot(n), buffers[n].clone())
        # buffers that are not state (the branches' channel indices): one copy, shared by every fold
        self.shared = nn.Module()
        self.shared_names = [n for n, _ in nets[0].named_buffers() if n not in persistent]
        for n in self.shared_names:
            self.shared.register_buffer(_slot(n), nets[0].get_buffer(n).clone(), persistent=False)
        self.register_buffer("mean", torch.stack([t.mean for t in templates]))  # (K, 1, c, 1, 1)
        self.register_buffer("std", torch.stack([t.std for t in templates]))
        self.criterion = copy.deepcopy(templates[0].criterion)
        skeletons = {mode: copy.deepcopy(nets[0]).to("meta").train(mode) for mode in (True, False)}
        compile_ = bool(self.hp.get("compile"))
        object.__setattr__(self, "_steps", {
            mode: self._vmapped(skel, compile_) for mode, skel in skeletons.items()
        })
        k = len(templates)
        self.register_buffer("_train_loss", torch.zeros(k), persistent=False)
        self.register_buffer("_train_counts", torch.zeros(k, 3), persistent=False)  # tp, fp, fn
        self.register_buffer("_train_steps", torch.zeros(()), persistent=False)
        self._val_logits: Tensor | None = None
        self.train_history: list[dict] = []

    # ------------------------------------------------------------------ the stacked forward
    def _vmapped(self, skeleton: nn.Module, compile_: bool):
        criterion = self.criterion

        def one_fold(params: dict, buffers: dict, shared: dict, mean: Tensor, std: Tensor, x: Tensor, y: Tensor):
            logits = functional_call(skeleton, ({**params, **buffers, **shared},), ((x - mean) / std,))
            return logits, criterion(logits.float(), y)

        fn = torch.vmap(one_fold, in_dims=(0, 0, None, 0, 0, 0, 0), randomness="different")
        # static shapes: the stacked batches have one training and one evaluation shape (padded), so each graph is
        # specialised to its shape instead of recompiled shape-generic when the second shape arrives
        return torch.compile(fn, dynamic=False) if compile_ else fn

    def _state(self) -> tuple[dict, dict, dict]:
        params = {n: self.stacked_params[_slot(n)] for n in self.param_names}
        buffers = {n: self.stacked_buffers.get_buffer(_slot(n)) for n in self.buffer_names}
        shared = {n: self.shared.get_buffer(_slot(n)) for n in self.shared_names}
        return params, buffers, shared

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits (K, n) and per-fold losses (K,) of a stacked batch ``x`` (K, n, c, h, w) in physical units."""
        if y is None:
            y = torch.zeros(x.shape[:2], device=x.device)
        return self._steps[self.training](*self._state(), self.mean, self.std, x, y)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        self._train_loss.zero_()
        self._train_counts.zero_()
        self._train_steps.zero_()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, losses = self(batch["x"], batch["y"])
        with torch.no_grad():  # accumulated on the device: no host synchronisation per step
            pred, y = logits.detach() > 0, batch["y"] > 0.5
            self._train_loss += losses.detach()
            self._train_counts += torch.stack([(pred & y).sum(1), (pred & ~y).sum(1), (~pred & y).sum(1)], 1)
            self._train_steps += 1
        # a sum: each fold's weights get the gradient of that fold's own mean loss
        return losses.sum()

    def on_train_epoch_end(self) -> None:
        loss = self._train_loss / self._train_steps.clamp_min(1)
        tp, fp, fn = self._train_counts.unbind(1)
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        metrics = {"train/loss": loss.mean(), "train/f1": f1.mean()}
        for k, fold in enumerate(self.folds):
            metrics[f"train/loss/fold_{fold}"] = loss[k]
            metrics[f"train/f1/fold_{fold}"] = f1[k]
        self.log_dict(metrics)
        # per-fold rows for the folds' own loggers after the run (one host copy an epoch)
        names = list(metrics)
        self.train_history.append({"epoch": self.current_epoch,
                                   **dict(zip(names, torch.stack(list(metrics.values())).tolist()))})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["train_history"] = self.train_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_history = list(checkpoint.get("train_history", []))

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_logits = torch.zeros(len(self.folds), max(self.val_sizes), device=self.device)
        self._val_prob = torch.zeros_like(self._val_logits)
        self._val_y = torch.zeros_like(self._val_logits)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        start = batch["start"]
        # the last batch may run past the longest fold (padding to whole batches): those columns are dropped
        m = min(batch["x"].shape[1], self._val_logits.shape[1] - start)
        logits = self(batch["x"])[0].float()[:, :m]
        self._val_logits[:, start : start + m] = logits
        # the whole pipeline's prediction: images the negative filter removed count as predicted negative
        self._val_prob[:, start : start + m] = torch.sigmoid(logits) * batch["keep"][:, :m]
        self._val_y[:, start : start + m] = batch["y"][:, :m]

    def on_validation_epoch_end(self) -> None:
        """Every fold's scores at once on the device (:func:`landslide.metrics.binary_scores` over the padded
        (K, longest) predictions, each fold on its own part), one host copy, plain numbers to the loggers."""
        sizes = torch.tensor(self.val_sizes, device=self._val_prob.device)
        valid = torch.arange(self._val_prob.shape[1], device=sizes.device)[None] < sizes[:, None]
        scores = {f"val/{k}": v for k, v in binary_scores(self._val_prob, self._val_y, valid).items()}
        scores["val/loss"] = torch.stack([self.criterion(self._val_logits[k, :n], self._val_y[k, :n])
                                          for k, n in enumerate(self.val_sizes)])
        names = list(scores)
        table = torch.stack([scores[n] for n in names]).cpu()  # (metrics, K): one host copy per validation
        metrics: dict[str, float] = {}
        for i, name in enumerate(names):
            metrics.update({f"{name}/fold_{fold}": float(table[i, k]) for k, fold in enumerate(self.folds)})
        for i, name in enumerate(names):
            if name in ("val/f1", "val/f1_best", "val/loss"):  # means over folds, e.g. for ModelCheckpoint
                metrics[name] = float(table[i].mean())
        self.log_dict(metrics)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """The folds' optimiser and schedule (``model.optimizer``, ``model.scheduler``) over the stacked tensors,
        grouped as LandslideModule groups them (the fold axis does not count as a dimension)."""
        named = ((name, self.stacked_params[_slot(name)]) for name in self.param_names)
        return self.templates[0].optimization(named, self.trainer.estimated_stepping_batches, vector_ndim=2)

    # ------------------------------------------------------------------ back to K modules
    @torch.no_grad()
    def unstack(self) -> list[LandslideModule]:
        """The fold modules with the trained weights and BatchNorm statistics of their slice of the stack."""
        params, buffers, _ = self._state()
        for k, template in enumerate(self.templates):
            state = {n: t[k].detach().to("cpu") for n, t in {**params, **buffers}.items()}
            template.net.load_state_dict(state)
            template.to("cpu")
        return self.templates

