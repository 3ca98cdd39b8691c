"""Every config group composes, and the entry points answer --help and --cfg job."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import entry
from conftest import REPO
from landslide.cli import register_resolvers

register_resolvers()  # what train.py registers before Hydra composes: the configs' ${best_precision:..}, ${on_gpu:..}

CONFIGS = str(REPO / "configs")
GROUP_CHOICES = [
    [], ["model=mm_cnn"], ["filter=none"], ["trainer=cpu"], ["trainer=gpu"], ["logger=tensorboard"],
    ["logger=wandb"], ["logger=many"], ["callbacks=none"], ["debug=tiny"], ["debug=fast"],
    ["experiment=reference"], ["experiment=final"], ["experiment=fpn"], ["experiment=fast"],
    ["experiment=reference_fast"], ["experiment=no_fpn"], ["experiment=no_filter"], ["experiment=only_sar"],
    ["experiment=only_optical"],
    ["data.bands=sar", "data.fold=3", "seed=7"], ["model=seed_fpn", "experiment=reference"],
    ["data=realistic", "filter.max_positive_loss=0.05"], ["data=scenes"],
]


@pytest.mark.parametrize("overrides", GROUP_CHOICES, ids=lambda o: ",".join(o) or "default")
def test_train_config_composes(overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSLIDE_ROOT", str(tmp_path))
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    assert cfg.data.root and cfg.model.net._target_.startswith("landslide.models")
    dm = instantiate(cfg.data)  # constructing checks the data options without reading anything
    assert dm.num_folds == cfg.data.num_folds
    filt = instantiate(cfg.filter)
    assert filt.kind == ("none" if cfg.filter._target_.endswith("KeepAll") else "xgboost")


def test_experiment_presets_change_what_they_say():
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        ref = compose("train", overrides=["experiment=reference"])
        no_fpn = compose("train", overrides=["experiment=no_fpn"])
        no_filter = compose("train", overrides=["experiment=no_filter"])
        fpn = compose("train", overrides=["experiment=fpn"])
        default = compose("train")
        seed_reference = compose("train", overrides=["experiment=reference", "model=seed_fpn"])
    assert (ref.trainer.max_epochs, ref.data.batch_size, ref.data.num_folds) == (100, 32, 10)
    assert (ref.model.optimizer._target_, ref.model.optimizer.lr, ref.model.optimizer.weight_decay) == (
        "torch.optim.Adam", 1e-3, 1e-4)
    assert ref.model.net._target_.endswith("MultiModalFPN") and ref.data.augment.erase_p == 0.5
    assert seed_reference.model.net._target_.endswith("SeedFPN")  # the command line's network takes the recipe
    # the default: early fusion, lr 1e-3 without weight decay, the plain loss, no random erasing
    assert default.model.net._target_.endswith("FusionCNN") and default.data.augment.erase_p == 0.0
    assert (default.model.optimizer.lr, default.model.optimizer.weight_decay, default.model.pos_weight) == (
        1e-3, 0.0, 1.0)
    assert default.model.net.stages == [[32, 32], [64, 64], [96]]  # the wide fusion the families chose
    # the FPN and its own recipe, and the "no FPN" ablation on the same recipe with the top level pooled alone
    assert fpn.model.net._target_.endswith("MultiModalFPN") and no_fpn.model.net._target_.endswith("MultiModalCNN")
    for preset in (fpn, no_fpn):
        assert (preset.model.optimizer.lr, preset.model.optimizer.weight_decay, preset.model.pos_weight,
                preset.data.augment.erase_p) == (2e-3, 1e-4, 2.0, 0.5)
    assert no_fpn.name == "no_fpn" and fpn.name == "fpn"
    assert no_filter.filter._target_.endswith("KeepAll")


def test_the_fast_recipe_is_the_default_at_release_scale():
    """experiment=fast: the default network and recipe with 100 epochs and the speed settings alone;
    experiment=reference_fast: the seed's network and recipe with the same speed settings."""
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        default = compose("train")
        fast = compose("train", overrides=["experiment=fast"])
        reference = compose("train", overrides=["experiment=reference"])
        reference_fast = compose("train", overrides=["experiment=reference_fast"])
    speed = {"data.batch_size": 128, "model.compile": True, "model.channels_last": True,
             "trainer.check_val_every_n_epoch": 10, "callbacks.last_checkpoint.every_n_epochs": 10}
    for preset in (fast, reference_fast):
        assert {key: OmegaConf.select(preset, key) for key in speed} == speed
        assert (preset.trainer.max_epochs, preset.data.num_folds) == (100, 10)
    assert fast.model.net == default.model.net and fast.model.optimizer == default.model.optimizer
    assert (fast.model.pos_weight, fast.data.augment, fast.filter) == (
        default.model.pos_weight, default.data.augment, default.filter)
    assert reference_fast.model.net == reference.model.net and reference_fast.model.optimizer.lr == 2e-3
    assert (reference_fast.data.augment.erase_p, reference_fast.filter) == (0.5, reference.filter)


@pytest.mark.parametrize("gpu", [False, True])
def test_inference_batches_follow_the_device(gpu, monkeypatch):
    """Large inference batches on a GPU, small ones on a CPU (activations in cache); an explicit device decides."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: gpu)
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        train = compose("train")
        on_cpu = compose("train", overrides=["trainer.accelerator=cpu"])
        fast = compose("train", overrides=["experiment=fast"])
        predict = compose("predict", overrides=["run_dir=/r"])
        predict_cpu = compose("predict", overrides=["run_dir=/r", "device=cpu"])
        predict_cuda = compose("predict", overrides=["run_dir=/r", "device=cuda:0"])
        scene_map = compose("map", overrides=["run_dir=/r", "scene=/s.tif", "out=/m.tif"])
    assert train.data.eval_batch_size == (512 if gpu else 64) and on_cpu.data.eval_batch_size == 64
    assert fast.data.eval_batch_size == (4096 if gpu else 64)
    assert predict.batch_size == (1024 if gpu else 64) and predict_cpu.batch_size == 64
    assert predict_cuda.batch_size == (1024 if gpu else 64)  # no GPU: cuda:0 fails later, with its own message
    assert scene_map.batch_size == (1024 if gpu else 64)


def test_predict_config_composes():
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        cfg = compose("predict", overrides=["run_dir=/some/run", "data.root=/other"])
    assert cfg.run_dir == "/some/run" and cfg.data.root == "/other" and cfg.out == "/some/run/predictions"
    assert cfg.tta is None and cfg.precision is None  # null: as the run recorded


def test_map_config_composes():
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        cfg = compose("map", overrides=["run_dir=/r", "scene=/s.tif", "out=/m.tif", "bands={red: 3}"])
    assert (cfg.stride, cfg.blend, cfg.dtype, cfg.threshold, cfg.tta) == (32, None, "uint8", 0.5, None)
    assert cfg.bands.red == 3 and cfg.vector is None


@pytest.mark.parametrize("args", [["--cfg", "job"], ["--help"]])
def test_train_py_answers(args, bare_env):
    done = entry.run("train.py", *args, env=bare_env, check=False)
    assert done.returncode == 0, done.stderr
    if "--cfg" in args:
        assert "num_folds: 10" in done.stdout and "FusionCNN" in done.stdout
    else:
        assert "experiment" in done.stdout and "hparams_search" in done.stdout


def test_console_script_is_installed(bare_env):
    script = Path(sys.executable).with_name("landslide-train")
    assert script.is_file(), "pip install -e . should install the landslide-train console script"
    done = subprocess.run([str(script), "--cfg", "job", "data.bands=sar"], cwd=REPO, env=bare_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bands: sar" in done.stdout


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_follows_the_trainer_switch(enabled, tmp_path):
    from lightning.pytorch.callbacks import ProgressBar

    from landslide.training.fold import build_callbacks

    with initialize_config_dir(CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer.enable_progress_bar={enabled}", "trainer.accelerator=cpu"])
    callbacks = build_callbacks(cfg, tmp_path)
    assert any(isinstance(c, ProgressBar) for c in callbacks) == enabled
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False, default_root_dir=str(tmp_path))
    assert trainer.progress_bar_callback is not None if enabled else trainer.progress_bar_callback is None


def test_realistic_preset_generates_the_realistic_set(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSLIDE_ROOT", str(tmp_path))
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["data=realistic"], return_hydra_config=False)
    assert cfg.data.synthetic.difficulty == "realistic" and cfg.data.synthetic.label_noise == 0.02
    assert cfg.data.root == cfg.data.synthetic.root and cfg.data.root.endswith("realistic")
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        own = compose("train", overrides=["data=realistic", "data.root=/my/release"], return_hydra_config=False)
    assert own.data.synthetic.root.endswith("realistic")  # a release of one's own is never generated over
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        default = compose("train", return_hydra_config=False)
    assert default.data.synthetic.difficulty == "easy" and default.data.synthetic.label_noise == 0.0
