"""Fold-parallel training: one stacked step is K separate steps; folds keep their own streams and statistics."""

from __future__ import annotations

import copy
from functools import cache, partial

import lightning as L
import numpy as np
import pytest
import torch
import torch._dynamo
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from conftest import REPO, data_settings, model_settings
from landslide.bands import CHANNEL_NAMES
from landslide.data.augment import BatchAugment
from landslide.data.batches import IndexBatches
from landslide.module import LandslideModule
from landslide.training.cv import parallel_folds
from landslide.training.stacked import StackedTrainBatches, fold_history
from landslide.training.stacked_module import StackedLandslideModule, _slot


@cache
def train_config():
    """The composed training config (cv, trainer, stage, epoch selection and model as train.py sees them)."""
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("train")


NET = {"_target_": "landslide.models.fpn.MultiModalFPN", "branch_width": 8, "fusion_channels": 16,
       "stage_widths": [16, 24, 32], "pyramid_channels": 16, "head_units": 32, "head_dropout": 0.0}
K, B = 3, 6


def fold_module(k: int) -> LandslideModule:
    """Fold k's module: its own initial weights and normalisation statistics."""
    torch.manual_seed(100 + k)
    c = len(CHANNEL_NAMES)
    mean = (torch.randn(c) * 3).tolist()
    std = (torch.rand(c) * 2 + 0.5).tolist()
    # a weighted loss (pos_weight 2), so that the stacked step is seen to carry each fold's criterion
    settings = model_settings(channels_last=False, pos_weight=2.0,
                              optimizer=partial(torch.optim.Adam, lr=0.01, weight_decay=1e-4))
    return LandslideModule(net=NET, channels=list(CHANNEL_NAMES), norm_mean=mean, norm_std=std, **settings)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(K, B, len(CHANNEL_NAMES), 64, 64, generator=g) * 4 + 1
    y = (torch.rand(K, B, generator=g) < 0.4).float()
    return {"x": x, "y": y}


def one_step(module: L.LightningModule, batch: dict) -> None:
    """One real optimiser step through Lightning (configure_optimizers, scheduler, automatic optimisation)."""
    trainer = L.Trainer(accelerator="cpu", precision="32-true", max_steps=1, logger=False, limit_val_batches=0,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))


def test_stacked_step_equals_separate_steps(batch):
    templates = [fold_module(k) for k in range(K)]
    separate = [copy.deepcopy(t) for t in templates]
    stacked = StackedLandslideModule([copy.deepcopy(t) for t in templates], [B] * K, list(range(K)))

    # logits, losses and gradients of one forward/backward
    stacked.train()
    logits, losses = stacked(batch["x"], batch["y"])
    losses.sum().backward()
    probe = copy.deepcopy(separate)
    for k, module in enumerate(probe):
        module.train()
        lk = module(batch["x"][k])
        module.criterion(lk.float(), batch["y"][k]).backward()
        torch.testing.assert_close(logits[k], lk, atol=1e-5, rtol=1e-4)
        for name in stacked.param_names:  # float32 sums in another order: within 0.1% of the gradient's scale
            grad = module.net.get_parameter(name).grad
            atol = max(1e-5, 1e-3 * float(grad.abs().max()))
            torch.testing.assert_close(stacked.stacked_params[_slot(name)].grad[k], grad, rtol=1e-3, atol=atol,
                                       msg=f"gradient of {name}, fold {k}")
        for name in stacked.buffer_names:  # batch norm statistics moved per fold
            torch.testing.assert_close(stacked.stacked_buffers.get_buffer(_slot(name))[k],
                                       module.net.get_buffer(name), atol=1e-5, rtol=1e-4)
    assert len(stacked.buffer_names) > 10 and any("running_var" in n for n in stacked.buffer_names)

    # one optimiser step (Adam, weight decay groups, warm-up/cosine schedule) through Lightning on both sides
    stacked = StackedLandslideModule([copy.deepcopy(t) for t in templates], [B] * K, list(range(K)))
    one_step(stacked, batch)
    for k, module in enumerate(separate):
        one_step(module, {"x": batch["x"][k], "y": batch["y"][k]})
    # Adam's first step is about lr * g / (|g| + eps): where a gradient is as small as eps, float noise in it moves
    # the update by a fraction of lr, so a few elements may differ by that much; all the others agree closely
    lr, moved, off, total = 0.01, 0.0, 0, 0
    for k, (got, want) in enumerate(zip(stacked.unstack(), separate)):
        want_state, start = want.net.state_dict(), templates[k].net.state_dict()
        for name, value in got.net.state_dict().items():
            diff = (value.float() - want_state[name].float()).abs()
            assert float(diff.max()) < 0.2 * lr, f"{name}, fold {k}"
            off, total = off + int((diff > 1e-5).sum()), total + diff.numel()
            moved += float((value.float() - start[name].float()).abs().sum())
        state = got.net.state_dict()
        assert int(state["encoder.fuse.1.num_batches_tracked"]) == 1  # one step, counted per fold
        for name in stacked.buffer_names:  # running statistics after the step
            torch.testing.assert_close(state[name], want_state[name], atol=1e-5, rtol=1e-4)
    assert off / total < 1e-3
    assert moved > 1.0  # the step changed the weights: the comparison was not between two untouched copies


def test_folds_keep_their_own_statistics_and_history():
    templates = [fold_module(k) for k in range(2)]
    stacked = StackedLandslideModule(templates, [4, 5], [3, 7])
    assert not torch.equal(stacked.mean[0], stacked.mean[1]) and stacked.mean.shape == (2, 1, 13, 1, 1)
    history = [{"epoch": 0, "val/f1/fold_3": 0.5, "val/f1/fold_7": 0.9, "val/f1": 0.7}]
    assert fold_history(history, 7) == [{"epoch": 0, "val/f1": 0.9}]
    with pytest.raises(ValueError, match="at least two"):
        StackedLandslideModule(templates[:1], [4], [0])


def test_folds_step_together_each_on_its_own_stream():
    """The fold with the most images gets exactly its sequential batches; the other one continues its own stream."""
    big, small = np.arange(50), np.arange(100, 130)
    streams = [IndexBatches("train", big, 8, True, seed=7), IndexBatches("train", small, 8, True, seed=9)]
    stacked = StackedTrainBatches(streams)
    assert len(stacked) == round(50 / 8) == 6
    alone = IndexBatches("train", big, 8, True, seed=7)
    for epoch in (0, 1):
        stacked.epoch_source = alone.epoch_source = lambda e=epoch: e
        batches = [b["index"] for b in stacked]
        assert all(b.shape == (2, 8) for b in batches)
        assert all(torch.equal(s[0], a["index"]) for s, a in zip(batches, alone))
        seen = torch.cat([b[1] for b in batches])
        expected = IndexBatches("train", small, 8, True, seed=9)._stream(epoch * 48, (epoch + 1) * 48)
        assert torch.equal(seen, expected) and set(seen.tolist()) == set(small.tolist())


def test_erasing_fills_each_sample_with_its_own_values():
    augment = BatchAugment(**{**data_settings()["augment"], "flip": False, "rotate": False, "erase_p": 1.0})
    fill = torch.tensor([[5.0, 5.0], [-7.0, -7.0]])
    out = augment(torch.zeros(2, 2, 16, 16), fill=fill)
    assert set(out[0].unique().tolist()) == {0.0, 5.0} and set(out[1].unique().tolist()) == {0.0, -7.0}


@pytest.mark.parametrize(("setting", "extra", "pending", "expected"), [
    ("auto", {}, 10, 10 if torch.cuda.is_available() else 1),
    ("2", {}, 10, 2), ("4", {}, 3, 3), ("1", {}, 10, 1), ("10", {}, 1, 1),
    ("10", {"epoch_selection": "best"}, 10, 1), ("10", {"stage": "filter"}, 10, 1),
])
def test_parallel_folds_setting(setting, extra, pending, expected):
    cfg = OmegaConf.merge(train_config(), {"cv": {"parallel_folds": setting}, "trainer": {"accelerator": "auto"},
                                           **extra})
    assert parallel_folds(cfg, pending) == expected


def test_parallel_folds_refuses_nonsense():
    with pytest.raises(ValueError, match="auto or a positive integer"):
        parallel_folds(OmegaConf.merge(train_config(), {"cv": {"parallel_folds": "0"}}), 4)


def test_the_full_resolution_networks_stack(batch):
    """The early-fusion and plain networks (derived channels by index, max pooling) run stacked as they run alone."""
    for net in ({"_target_": "landslide.models.fusion.FusionCNN", "stages": [[8], [12]], "head_units": 8},
                {"_target_": "landslide.models.plain.PlainCNN", "stages": [[8], [12]], "batch_norm": True}):
        templates = []
        for k in range(K):
            torch.manual_seed(200 + k)
            templates.append(LandslideModule(net=net, channels=list(CHANNEL_NAMES), norm_mean=[0.0] * 13,
                                             norm_std=[1.0] * 13, **model_settings(channels_last=False)))
        stacked = StackedLandslideModule([copy.deepcopy(t) for t in templates], [B] * K, list(range(K))).train()
        logits, losses = stacked(batch["x"], batch["y"])
        losses.sum().backward()
        for k, module in enumerate(templates):
            module.train()
            torch.testing.assert_close(logits[k], module(batch["x"][k]), atol=1e-5, rtol=1e-4)


def test_one_stacked_scoring_pass_gives_each_fold_its_own_probabilities(tiny_release, tmp_path):
    """Out-of-fold scoring of all folds in one stacked pass (8 test-time views) against each fold's module scored
    alone (``predict_probs``), on padded validation parts of different lengths."""
    from landslide.data.datamodule import LandslideDataModule
    from landslide.prediction import predict_probs
    from landslide.training.stacked import stacked_network_probs

    dm = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(num_folds=3, progress=False))
    dm.prepare_data()
    dm.setup()
    templates = [fold_module(k) for k in range(2)]
    for t in templates:  # trained-looking BatchNorm statistics, so that eval mode matters
        t.train()
        t(dm.gather("train", np.arange(40)))
    rows = [dm.folds()[0][1], dm.folds()[1][1][:-5]]
    stacked = StackedLandslideModule([copy.deepcopy(t) for t in templates], [len(r) for r in rows], [0, 1])
    index = torch.as_tensor(np.stack([np.resize(r, len(rows[0])) for r in rows]))
    got = stacked_network_probs(stacked, dm, index, chunk=7, tta=True, device=torch.device("cpu"), bf16=False)
    for k, (template, r) in enumerate(zip(templates, rows)):
        alone = predict_probs(template, dm.gather("train", r), 56, True, "cpu", bf16=False).mean(0)
        np.testing.assert_allclose(got[k, : len(r)], alone, atol=2e-5)
    # fewer rows than a chunk (a small holdout): padded to the chunk's shape, only the rows returned
    few = torch.as_tensor(np.stack([r[:3] for r in rows]))
    got = stacked_network_probs(stacked, dm, few, chunk=7, tta=False, device=torch.device("cpu"), bf16=False)
    assert got.shape == (2, 3)
    for k, template in enumerate(templates):
        alone = predict_probs(template, dm.gather("train", rows[k][:3]), 56, False, "cpu", bf16=False).mean(0)
        np.testing.assert_allclose(got[k], alone, atol=2e-5)


def test_stacked_validation_batches_have_one_shape(tiny_release, tmp_path):
    """Validation (and scoring) batches of stacked folds all have one shape, so that a compiled graph is never
    recompiled for a shorter last batch: the columns are balanced and the last batch padded with the fold's own rows,
    each fold's part first and whole."""
    from landslide.data.datamodule import LandslideDataModule
    from landslide.training.stacked import FoldPart, StackedFoldsData, StackedValBatches

    dm = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(num_folds=3, progress=False,
                                                                               eval_batch_size=40))
    dm.prepare_data()
    dm.setup()
    parts = []
    for fold in range(3):
        train, val = dm.folds()[fold]
        val = val[: len(val) - 3 * fold]  # parts of different lengths
        parts.append(FoldPart(fold, tmp_path, train, val, np.ones(len(val), bool), 0, [0.0] * 13, None, {}))
    data = StackedFoldsData(dm, parts)
    longest = max(len(p.val_index) for p in parts)
    batches = list(StackedValBatches(data.val_index, data.val_chunk))
    assert {tuple(b["index"].shape) for b in batches} == {(3, data.val_chunk)} and len(batches) > 1
    assert data.val_chunk <= 40 // 3 and 0 <= data.val_index.shape[1] - longest < len(batches)
    for k, part in enumerate(parts):
        assert data.val_index[k, : len(part.val_index)].tolist() == part.val_index.tolist()
        assert set(data.val_index[k].tolist()) == set(part.val_index.tolist())  # padding: the fold's own rows


def test_stacked_validation_logs_each_folds_own_scores():
    templates = [fold_module(k) for k in range(2)]
    stacked = StackedLandslideModule(templates, [5, 3], [4, 9])
    logged = {}
    stacked.log_dict = logged.update
    stacked.on_validation_epoch_start()
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0], [-2.0, 3.0, -0.1, 9.0, 9.0]])
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0, 0.0]])
    keep = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])
    stacked._val_logits[:], stacked._val_prob[:], stacked._val_y[:] = logits, torch.sigmoid(logits) * keep, y
    stacked.on_validation_epoch_end()
    # fold 4: 5 images (the fifth filtered); fold 9: its first 3, the two confident "positives" are padding
    assert logged["val/f1/fold_4"] == pytest.approx(1.0) and logged["val/f1/fold_9"] == pytest.approx(2 / 3)
    assert logged["val/recall/fold_9"] == pytest.approx(0.5) and logged["val/auroc/fold_9"] == pytest.approx(1.0)
    assert logged["val/f1_best/fold_9"] == pytest.approx(1.0)
    assert logged["val/f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert all(isinstance(v, float) for v in logged.values())  # plain numbers: copied to the host once


def test_stacked_scoring_setting():
    from landslide.training.stacked import stacked_scoring

    def cfg(value):
        return OmegaConf.merge(train_config(), {"cv": {"stacked_scoring": value}})

    assert stacked_scoring(cfg("auto"), torch.device("cuda")) and not stacked_scoring(cfg("auto"), torch.device("cpu"))
    assert stacked_scoring(cfg(True), torch.device("cpu")) and not stacked_scoring(cfg(False), torch.device("cuda"))
    with pytest.raises(ValueError, match="cv.stacked_scoring must be auto, true or false"):
        stacked_scoring(cfg("sometimes"), torch.device("cpu"))


def test_scoring_runs_in_the_precision_the_folds_trained_in(monkeypatch):
    """Out-of-fold scoring in bf16 only where the folds trained and validated in it (and the device runs it fast):
    a 32-bit run on a bf16 GPU is scored in 32 bits, as validated (and its compiled validation graph is reused)."""
    import landslide.training.fold as fold
    from landslide.training.fold import scoring_bf16

    def cfg(precision):
        return OmegaConf.merge(train_config(), {"trainer": {"precision": precision}})

    monkeypatch.setattr(fold, "bf16_supported", lambda device_type: device_type == "cuda")  # a bf16 GPU, a CPU without
    assert scoring_bf16(cfg("bf16-mixed"), torch.device("cuda"))
    assert not scoring_bf16(cfg("32-true"), torch.device("cuda")) and not scoring_bf16(cfg("16-mixed"),
                                                                                        torch.device("cuda"))
    assert not scoring_bf16(cfg("bf16-mixed"), torch.device("cpu"))


TINY_NET = {"_target_": "landslide.models.plain.PlainCNN", "stages": [[4], [8]], "batch_norm": True}


def compiled_fold_module(compile: bool = True) -> LandslideModule:
    """A tiny fold module, compiled and channels-last as the fast recipe's."""
    torch.manual_seed(0)
    zeros, ones = [0.0] * len(CHANNEL_NAMES), [1.0] * len(CHANNEL_NAMES)
    return LandslideModule(net=TINY_NET, channels=list(CHANNEL_NAMES), norm_mean=zeros, norm_std=ones,
                           **model_settings(channels_last=True, compile=compile))


def fit_one_epoch(module: L.LightningModule, data: L.LightningDataModule) -> None:
    """Two training steps and a validation, through Lightning (validation inside fit, as train.py runs it)."""
    torch._dynamo.reset()
    trainer = L.Trainer(accelerator="cpu", precision="32-true", max_epochs=1, limit_train_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)


def test_fold_scoring_reuses_the_graph_compiled_for_validation(tiny_release, tmp_path):
    """A fold's out-of-fold scoring (8 test-time views, the last chunk shorter) runs the graph compiled for its
    validation batches inside fit: nothing is compiled again after training."""
    from landslide.data.datamodule import LandslideDataModule
    from landslide.prediction import predict_probs

    dm = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(num_folds=2, progress=False,
                                                                               batch_size=8, eval_batch_size=16))
    dm.prepare_data()
    dm.setup()
    dm.set_fold(0)
    module = compiled_fold_module()
    fit_one_epoch(module, dm)
    images = dm.gather("train", dm.val_index)
    images = images[: len(images) // 2 * 2 - 1]  # chunks of 2 images (16 views): the last shorter, padded
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            probs = predict_probs(module, images, 16, True, "cpu", bf16=False)
    finally:
        torch._dynamo.reset()
    eager = compiled_fold_module(compile=False)
    eager.load_state_dict(module.state_dict())
    # the padded chunk's rows are the images' own: the same probabilities as the uncompiled network's, image by image
    alone = np.concatenate([predict_probs(eager, images[i : i + 1], 8, True, "cpu", bf16=False)
                            for i in range(len(images))], 1)
    np.testing.assert_allclose(probs, alone, atol=1e-5)


def test_stacked_scoring_reuses_the_graph_compiled_for_validation(tiny_release, tmp_path):
    """Out-of-fold scoring of stacked folds (8 test-time views) runs the graph compiled for validation inside fit:
    nothing is compiled again after training (each recompilation costs seconds on a GPU)."""
    from landslide.data.datamodule import LandslideDataModule
    from landslide.training.stacked import FoldPart, StackedFoldsData, stacked_network_probs

    dm = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(num_folds=2, progress=False,
                                                                               batch_size=8, eval_batch_size=16))
    dm.prepare_data()
    dm.setup()
    parts = []
    for fold in range(2):
        train, val = dm.folds()[fold]
        val = val[: len(val) - fold]
        parts.append(FoldPart(fold, tmp_path, train, val, np.ones(len(val), bool), 0, [0.0] * len(CHANNEL_NAMES),
                              None, {}))
    data = StackedFoldsData(dm, parts)
    stacked = StackedLandslideModule([compiled_fold_module() for _ in parts], [len(p.val_index) for p in parts],
                                     [0, 1])
    fit_one_epoch(stacked, data)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            probs = stacked_network_probs(stacked, dm, data.val_index, data.val_chunk, True, torch.device("cpu"),
                                          bf16=False)
    finally:
        torch._dynamo.reset()
    assert probs.shape == tuple(data.val_index.shape) and np.isfinite(probs).all()
