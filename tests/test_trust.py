"""Trust: no code runs from a model file, a resumed run cannot mix two runs, prediction needs only what it
predicts, and bad options stop with one line before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import entry
from conftest import REPO, write_release
from entry import one_error_line
from landslide.checkpoint import load_module, network_weights
from landslide.data.cache import load_or_build_split
from landslide.data.release import ReleaseError, load_patch, read_split_index
from landslide.errors import ConfigError, RunError
from landslide.files import write_json
from landslide.module import LandslideModule
from landslide.training.cv import check_options

TINY = ("debug=tiny", "data.fold=0")


def run(script: str, *args: str, env: dict, cwd: Path = REPO, process: bool = False) -> subprocess.CompletedProcess:
    return entry.run(script, *args, env=env, check=False, cwd=cwd, process=process)


@pytest.fixture()
def trained(tiny_run) -> tuple[Path, dict]:
    """The shared tiny run (fold 0 of 2, one epoch) and the environment it was made in (read only)."""
    return tiny_run


def module_settings() -> dict:
    """The plain settings a checkpoint carries (the module's optimiser is not among them)."""
    channels = ["red", "green", "blue", "nir", "cloud_mask"]
    return {"net": {"_target_": "landslide.models.fpn.MultiModalCNN", "stage_widths": [8, 8, 8], "branch_width": 8,
                    "fusion_channels": 8, "head_units": 8}, "channels": channels,
            "norm_mean": [0.0] * 5, "norm_std": [1.0] * 5, "loss": "bce", "pos_weight": 2.0, "focal_gamma": 2.0,
            "focal_alpha": 0.75, "channels_last": False, "compile": False, "pixel_weight": 0.0}


# ------------------------------------------------------------------ no code from a model file
def test_a_planted_target_in_a_checkpoint_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = LandslideModule(**module_settings())
    settings = module_settings()
    settings["net"] = {"_target_": "os.system", "_args_": ["touch pwned.txt"]}
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": settings}, path)
    with pytest.raises(RunError, match=r"model.ckpt: refusing to build network 'os.system'"):
        load_module(path)
    assert not (tmp_path / "pwned.txt").exists()

    settings["net"] = {**module_settings()["net"], "head_units": {"_target_": "os.system", "_args_": ["touch x"]}}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": settings}, path)
    with pytest.raises(RunError, match="not plain numbers"):
        load_module(path)

    # the honest checkpoint round-trips
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": module_settings()}, path)
    assert torch.equal(load_module(path).net.head[0].weight, module.net.head[0].weight)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned.txt",))


def test_a_pickle_payload_in_init_weights_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(RunError, match=r"weights.ckpt: cannot be read as a checkpoint of weights"):
        network_weights(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_predict_refuses_a_planted_checkpoint_with_one_line(trained, tmp_path):
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    ckpt_path = copy / "folds" / "fold_0" / "model.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["hyper_parameters"]["net"] = {"_target_": "os.system", "_args_": ["touch pwned.txt"]}
    torch.save(ckpt, ckpt_path)
    line = one_error_line(run("predict.py", f"run_dir={copy}", env=env, cwd=tmp_path))
    assert "model.ckpt: refusing to build network 'os.system'" in line
    assert not (tmp_path / "pwned.txt").exists()

    ckpt_path.write_bytes(ckpt_path.read_bytes()[:1000])  # truncated
    assert "model.ckpt: cannot be read" in one_error_line(run("predict.py", f"run_dir={copy}", env=env))


# ------------------------------------------------------------------ prediction needs only what it predicts
def test_predict_from_a_test_only_folder_reads_nothing_else(trained, tmp_path):
    run_dir, env = trained
    data = Path(env["LANDSLIDE_ROOT"]) / "data" / "tiny_easy"
    only = tmp_path / "only_test"
    only.mkdir()
    shutil.copy(data / "Test.csv", only)
    shutil.copytree(data / "test_data", only / "test_data")
    out = tmp_path / "pred"
    done = run("predict.py", f"run_dir={run_dir}", f"data.root={only}", f"data.cache_dir={tmp_path / 'cache'}",
               f"out={out}", "data.nan_policy=fill", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    submission = pd.read_csv(out / "submission.csv")
    assert submission["ID"].tolist() == pd.read_csv(only / "Test.csv")["ID"].tolist()
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["test"]  # no training split cached
    assert (out / "predict.log").is_file() and (out / ".hydra" / "config.yaml").is_file()  # logs under out=
    assert "nan_policy=fill although" in done.stdout + done.stderr


def test_predict_names_a_missing_filter_file(trained, tmp_path):
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    model = copy / "folds" / "fold_0" / "filter.ubj"
    model.unlink()
    line = one_error_line(run("predict.py", f"run_dir={copy}", env=env))
    assert f"{model}: missing (the fold's filter cannot be loaded)" in line
    model.write_bytes(b"{not xgboost")  # damaged: the model file is named, not filter.json
    line = one_error_line(run("predict.py", f"run_dir={copy}", env=env))
    assert f"{model}: not a saved XGBoost model" in line
    meta = copy / "folds" / "fold_0" / "filter.json"
    meta.write_text("{cut")
    line = one_error_line(run("predict.py", f"run_dir={copy}", env=env))
    assert f"{meta}: " in line and "the fold's filter cannot be loaded" in line


def test_predict_names_a_removed_run_record(trained, tmp_path):
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "run.json").unlink()  # today's .hydra/config.yaml uses Hydra's resolvers: it cannot stand in
    line = one_error_line(run("predict.py", f"run_dir={copy}", f"out={tmp_path / 'p'}", env=env))
    assert f"{copy / 'run.json'}: not found, and {copy / '.hydra' / 'config.yaml'} cannot stand in for it" in line
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------ a run directory holds one run
def test_resuming_with_other_settings_stops_and_keeps_the_run(trained, tmp_path):
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = {p: (copy / p).read_bytes() for p in (".hydra/config.yaml", ".hydra/overrides.yaml", "cv_summary.json",
                                                  "oof_predictions.csv", "run.json")}
    done = run("train.py", *TINY, "data.num_folds=3", "trainer.max_epochs=2", f"hydra.run.dir={copy}", env=env)
    line = one_error_line(done)
    assert "run.json: this run directory holds a run made with other settings" in line
    assert "data.num_folds 2 -> 3" in line and "trainer.max_epochs 1 -> 2" in line
    assert {p: (copy / p).read_bytes() for p in before} == before


def test_a_killed_fold_resumes_as_if_never_interrupted(tmp_path):
    env = {**os.environ, "LANDSLIDE_ROOT": str(tmp_path), "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "helpers"), os.environ.get("PYTHONPATH", "")])}
    common = (*TINY, "data.synthetic.n_train=80", "trainer.max_epochs=2")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run("train.py", *common, f"hydra.run.dir={whole}", env=env).returncode == 0
    # a callback is part of what defines a run: the resumed invocation names the same one (it kills only once)
    killer = ("+callbacks.kill._target_=kill_once.KillOnce", "+callbacks.kill.epoch=1",
              f"+callbacks.kill.folder={tmp_path / 'kill'}")
    killed = run("train.py", *common, f"hydra.run.dir={resumed}", *killer, env=env, process=True)
    assert killed.returncode == -9 and not (resumed / "folds" / "fold_0" / "result.json").exists()
    assert (resumed / "folds" / "fold_0" / "checkpoints" / "last.ckpt").is_file()
    done = run("train.py", *common, f"hydra.run.dir={resumed}", *killer, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    a = pd.read_csv(whole / "oof_predictions.csv")
    b = pd.read_csv(resumed / "oof_predictions.csv")
    assert a["ID"].tolist() == b["ID"].tolist()
    assert np.abs(a["prob"] - b["prob"]).max() < 1e-5
    metrics = pd.read_csv(resumed / "csv" / "fold_0" / "metrics.csv")
    assert sorted(metrics.dropna(subset=["val/f1"])["epoch"]) == [0, 1]  # the row from before the kill is kept


# ------------------------------------------------------------------ IDs, cache, atomic files
def test_ids_must_be_plain_file_stems(tmp_path, caplog):
    write_release(tmp_path)
    table = pd.read_csv(tmp_path / "Train.csv")
    table.loc[3, "ID"] = "T003\nT004"
    table.to_csv(tmp_path / "Train.csv", index=False)
    with pytest.raises(ReleaseError, match=r"Train.csv: 1 ID\(s\) are not plain file names.*line\(s\) \[5\]") as err:
        read_split_index(tmp_path, "train")
    assert "\n" not in str(err.value).replace("\\n", "")

    table.loc[3, "ID"] = "../T003"
    table.to_csv(tmp_path / "Train.csv", index=False)
    with pytest.raises(ReleaseError, match="not plain file names"):
        read_split_index(tmp_path, "train")

    table.loc[3, "ID"] = "  T003 "
    table.to_csv(tmp_path / "Train.csv", index=False)
    index = read_split_index(tmp_path, "train")
    assert index.ids[3] == "T003" and "1 ID(s) had surrounding spaces" in caplog.text


def test_the_cache_keeps_ids_whole_and_cleans_failed_builds(tmp_path):
    write_release(tmp_path / "rel")
    table = pd.read_csv(tmp_path / "rel" / "Train.csv")
    odd = "T 000,\"x\""  # a space, a comma and quotes: legal in a stem, and kept whole
    os.rename(tmp_path / "rel" / "train_data" / "T000.npy", tmp_path / "rel" / "train_data" / f"{odd}.npy")
    table.loc[0, "ID"] = odd
    table.to_csv(tmp_path / "rel" / "Train.csv", index=False)
    cache = tmp_path / "cache"
    stale = cache / "train-0123456789abcdef.tmp-999999999"  # left by a killed build (no such process)
    stale.mkdir(parents=True)
    split = load_or_build_split(read_split_index(tmp_path / "rel", "train"), cache, 3500.0, progress=False)
    assert split.ids == table["ID"].tolist() and not stale.exists()

    np.save(tmp_path / "rel" / "train_data" / "T005.npy", np.zeros((64, 64, 11)))
    with pytest.raises(ReleaseError, match="T005.npy"):
        load_or_build_split(read_split_index(tmp_path / "rel", "train"), cache, 3500.0, progress=False)
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]


def test_result_files_are_replaced_whole(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # fails half-way through
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["result.json"]


# ------------------------------------------------------------------ options in range, before any work
@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1"),
    ("data.num_folds=1", "data.num_folds must be an integer >= 2"),
    ("data.bands=foo", "data.bands must be one of"),
    ("data.fold=5", "data.fold must be null or in [0, 2)"),
    ("stage=everything", "stage must be all or filter"),
])
def test_options_out_of_range_are_refused(override, message):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["debug=tiny", override])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        check_options(cfg)


def test_more_folds_than_positives_is_one_line(trained):
    _, env = trained
    line = one_error_line(run("train.py", "debug=tiny", "data.num_folds=10000", env=env))
    assert "data.num_folds=10000: every fold needs images of each class" in line


def test_float16_patches_are_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((64, 64, 12), np.float16))
    with pytest.raises(ReleaseError, match="dtype float16, expected float64 or float32"):
        load_patch(path)
