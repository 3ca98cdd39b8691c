"""The config is the whole API: what a config names is what trains (optimiser, scheduler, module class, loss and
augmentation settings), checkpoints keep plain settings only, defaults live in the configs, and the rooms import
one way."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from conftest import REPO, data_settings
from landslide.bands import CHANNEL_NAMES
from landslide.callbacks.energy import EnergyCallback, EnergyTracker
from landslide.checkpoint import load_module
from landslide.data.augment import BatchAugment
from landslide.data.datamodule import LandslideDataModule
from landslide.errors import ConfigError, RunError
from landslide.filter.negative import NegativeFilter
from landslide.losses import FocalLoss
from landslide.module import LandslideModule
from landslide.schedules import warmup_cosine
from landslide.training.cv import parallel_folds
from landslide.training.fold import build_module
from landslide.training.stacked_module import StackedLandslideModule

CONFIGS = str(REPO / "configs")
SRC = REPO / "src" / "landslide"
# a small network, so that a few real optimiser steps take a moment; weight decay on, so that the parameter groups
# with and without it are told apart
SMALL = ["model=mm_cnn", "model.net.branch_width=8", "model.net.fusion_channels=8", "model.net.stage_widths=[8,8,8]",
         "model.net.head_units=8", "model.channels_last=false", "model.optimizer.lr=0.002",
         "model.optimizer.weight_decay=0.0001"]
FOLD = SimpleNamespace(channels=CHANNEL_NAMES, norm_mean=[0.0] * 13, norm_std=[1.0] * 13)


class MarkedModule(LandslideModule):
    """A subclass that a config names (``model._target_``), with one setting of its own."""

    def __init__(self, *args, marker: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker


def train_config(*overrides: str):
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


def fit_steps(module: L.LightningModule, steps: int = 2, folds: int = 0) -> L.Trainer:
    """``steps`` real optimiser steps through Lightning (configure_optimizers, the scheduler) on random batches
    (stacked along a fold axis when ``folds``)."""
    g = torch.Generator().manual_seed(0)
    shape = (folds, 4) if folds else (4,)
    batch = {"x": torch.randn(*shape, 13, 64, 64, generator=g), "y": (torch.rand(*shape, generator=g) < 0.5).float()}
    trainer = L.Trainer(accelerator="cpu", precision="32-true", max_steps=steps, logger=False, limit_val_batches=0,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=DataLoader([batch] * steps, batch_size=None))
    return trainer


def assert_plain(value, where: str = "hyper_parameters") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), where
            assert_plain(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_plain(v, f"{where}[{i}]")
    else:
        assert isinstance(value, (bool, int, float, str, type(None))), f"{where} is {type(value).__name__}"


# ------------------------------------------------------------------ the optimiser and schedule the config names
@pytest.mark.parametrize(("overrides", "cls"), [
    ([], torch.optim.Adam),
    (["model.optimizer._target_=torch.optim.AdamW"], torch.optim.AdamW),
    (["model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.05", "+model.optimizer.momentum=0.9"],
     torch.optim.SGD),
])
def test_the_configured_optimiser_is_the_one_that_trains(overrides, cls):
    module = build_module(train_config(*overrides), FOLD)
    trainer = fit_steps(module)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is cls
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0  # biases and norms take none
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.net.parameters()))
    assert all(optimizer.state[p] for p in decay["params"])  # it stepped
    if cls is torch.optim.SGD:
        assert optimizer.defaults["momentum"] == 0.9 and "momentum_buffer" in optimizer.state[decay["params"][0]]
    (config,) = trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, LambdaLR) and config.interval == "step"
    assert module.hparams.optimizer["_target_"] == f"{cls.__module__}.{cls.__name__}"


def test_the_schedule_is_warm_up_then_cosine_over_the_run_and_null_is_constant():
    module = build_module(train_config("model.scheduler.min_lr_ratio=0.05"), FOLD)
    trainer = fit_steps(module, steps=5)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.002 * warmup_cosine(5, 5, 0.1, 0.05)) and lr == pytest.approx(0.002 * 0.05)

    constant = build_module(train_config("model.scheduler=null", "model.optimizer.lr=0.003"), FOLD)
    trainer = fit_steps(constant, steps=3)
    assert not trainer.lr_scheduler_configs and trainer.optimizers[0].param_groups[0]["lr"] == 0.003
    assert constant.hparams.scheduler is None


def test_stacked_folds_train_with_the_configured_optimiser():
    cfg = train_config("model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.05")
    stacked = StackedLandslideModule([build_module(cfg, FOLD) for _ in range(2)], [4, 4], [0, 1])
    optimizer = fit_steps(stacked, folds=2).optimizers[0]
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["lr"] == 0.05
    decay, no_decay = optimizer.param_groups
    assert all(p.ndim > 2 for p in decay["params"]) and all(p.ndim <= 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4


# ------------------------------------------------------------------ the module class the config names
def test_model_target_names_the_module_class():
    cfg = train_config(f"model._target_={__name__}.MarkedModule", "+model.marker=7")
    module = build_module(cfg, FOLD)
    assert type(module) is MarkedModule and module.marker == 7
    # the stacked step is LandslideModule's own: a subclass trains its folds one after another
    both = OmegaConf.merge(cfg, {"cv": {"parallel_folds": 2}})
    assert parallel_folds(both, 2) == 1
    assert parallel_folds(OmegaConf.merge(train_config(), {"cv": {"parallel_folds": 2}}), 2) == 2

    with pytest.raises(ConfigError, match=r"model: _target_ 'torch.nn.Linear' is not LandslideModule"):
        build_module(train_config("model._target_=torch.nn.Linear"), FOLD)
    with pytest.raises(ConfigError, match=r"^model: .*unknown loss 'dice'"):
        build_module(train_config("model.loss=dice"), FOLD)


# ------------------------------------------------------------------ checkpoints: plain settings, the allow-list
def test_a_checkpoint_holds_plain_settings_and_loads_through_the_allow_list(tmp_path):
    module = build_module(train_config(), FOLD)
    trainer = fit_steps(module)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    settings = torch.load(path, weights_only=True)["hyper_parameters"]
    assert_plain(settings)
    assert settings["optimizer"] == {"_target_": "torch.optim.adam.Adam", "_partial_": True, "lr": 0.002,
                                     "weight_decay": 0.0001}
    assert settings["scheduler"] == {"_target_": "landslide.schedules.warmup_cosine_schedule", "_partial_": True,
                                     "warmup_fraction": 0.1, "min_lr_ratio": 0.01}
    assert module.hparams_initial["optimizer"] == settings["optimizer"]  # what the loggers record
    assert not any(callable(v) for v in module.hparams.values())

    again = load_module(path)
    assert type(again) is LandslideModule and again.optimizer_factory is None and again.scheduler_factory is None
    x = torch.randn(3, 13, 64, 64)
    assert torch.equal(module.eval()(x), again(x))
    # Lightning's own loader passes the descriptions back: kept as metadata, nothing built
    lightning = LandslideModule.load_from_checkpoint(path, map_location="cpu")
    assert lightning.optimizer_factory is None and lightning.hparams.optimizer == settings["optimizer"]
    assert torch.equal(lightning.eval()(x), again(x))


def test_earlier_checkpoints_load_and_the_recorded_optimiser_is_never_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = build_module(train_config(), FOLD)
    settings = {k: v for k, v in module.hparams.items() if k not in ("optimizer", "scheduler", "focal_alpha")}
    path = tmp_path / "model.ckpt"
    # as this project wrote them before the optimiser became a factory: plain optimiser settings, no focal_alpha
    earlier = {**settings, "optimizer": "adam", "lr": 0.001, "weight_decay": 0.0001, "warmup_fraction": 0.1,
               "min_lr_ratio": 0.01}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": earlier}, path)
    again = load_module(path)
    assert again.hparams.focal_alpha == 0.75 and torch.equal(again.net.head[0].weight, module.net.head[0].weight)

    planted = {**settings, "focal_alpha": 0.75, "optimizer": {"_target_": "os.system", "_args_": ["touch pwned.txt"]},
               "scheduler": {"_target_": "os.system", "_args_": ["touch pwned.txt"], "_partial_": True}}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": planted}, path)
    assert load_module(path).optimizer_factory is None
    assert not (tmp_path / "pwned.txt").exists()

    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {**planted, "marker": 7}}, path)
    with pytest.raises(RunError, match=r"model.ckpt: unknown model setting\(s\) \['marker'\]"):
        load_module(path)


# ------------------------------------------------------------------ settings that reach the code
def test_focal_alpha_and_gamma_reach_the_loss():
    module = build_module(train_config("model.loss=focal", "model.focal_alpha=0.6", "model.focal_gamma=1.5"), FOLD)
    assert isinstance(module.criterion, FocalLoss) and (module.criterion.alpha, module.criterion.gamma) == (0.6, 1.5)
    default = build_module(train_config("model.loss=focal", "model.focal_gamma=1.5"), FOLD).criterion
    logits, positives = torch.randn(16), torch.ones(16)
    assert float(module.criterion(logits, positives) / default(logits, positives)) == pytest.approx(0.6 / 0.75)


def test_augmentation_and_fold_seed_settings_reach_the_data(tiny_release, tmp_path):
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["data.augment.erase_log_ratio=[2.0,2.0]", "data.fold_seed_stride=7",
                                          f"data.root={tiny_release}", f"data.cache_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    assert dm.augment.erase_log_ratio == (2.0, 2.0) and dm.fold_seed_stride == 7

    # log aspect 2: every erased box is e^2 (7.4) times as tall as wide
    augment = BatchAugment(flip=False, rotate=False, erase_p=1.0, erase_scale=(0.05, 0.05), erase_log_ratio=(2.0, 2.0),
                           dihedral_gather=True)
    augment.set_fill(torch.ones(1))
    boxes = augment(torch.zeros(8, 1, 64, 64), generator=torch.Generator().manual_seed(0))[:, 0] > 0
    for box in boxes:
        assert box.any(1).sum() > 4 * box.any(0).sum()

    dm = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(num_folds=3, fold_seed_stride=7,
                                                                                progress=False))
    dm.prepare_data()
    dm.setup()
    dm.set_fold(2)
    assert dm.epoch_seed == 42 + 2 * 7


def test_the_configs_hold_the_defaults_and_the_code_none():
    """A setting the configs give has no default in the code that could disagree with them."""
    def config(path: str) -> dict:
        return OmegaConf.to_container(OmegaConf.load(REPO / "configs" / path))

    def defaults(cls, names) -> dict:
        parameters = inspect.signature(cls).parameters
        missing = sorted(set(names) - set(parameters))
        assert not missing, f"{cls.__name__} does not take {missing}"
        return {n: parameters[n].default for n in names if parameters[n].default is not inspect.Parameter.empty}

    model = set(config("model_base.yaml")) - {"_target_", "optimizer", "scheduler", "trusted_networks"}
    assert defaults(LandslideModule, model) == {}
    assert defaults(BatchAugment, config("data/default.yaml")["augment"]) == {}
    assert defaults(LandslideDataModule, ["batch_size", "eval_batch_size", "fold_seed_stride"]) == {}
    assert defaults(NegativeFilter, set(config("filter/xgboost.yaml")) - {"_target_"}) == {}
    energy = set(config("callbacks/default.yaml")["energy"]) - {"_target_"}
    assert defaults(EnergyCallback, energy) == {} and defaults(EnergyTracker, energy) == {}
    assert set(config("train.yaml")["energy"]) == energy | {"gpu_sample_secs"}  # the run's own GPU sampling


# ------------------------------------------------------------------ one-way arrows between the rooms
def _imports(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")) if folder.is_dir() else [folder]:
        names = found.setdefault(str(path.relative_to(SRC)), set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(("room", "forbidden"), [
    ("training", ("landslide.inference",)),
    ("models", ("landslide.data", "landslide.files", "landslide.training", "landslide.inference")),
    ("prediction.py", ("landslide.training", "landslide.inference")),
    ("module.py", ("landslide.training", "landslide.inference", "landslide.files")),
])
def test_rooms_import_one_way(room, forbidden):
    wrong = {f"{path}: {name}" for path, names in _imports(SRC / room).items() for name in names
             if name.startswith(forbidden)}
    assert not wrong
