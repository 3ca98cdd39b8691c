"""What a user sees when something is wrong: one line naming the file or option and the problem, exit 2, before any
folder is made; never a traceback, a hang or a misleading message."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import entry
from conftest import REPO, write_release
from entry import one_error_line
from landslide.data.cache import load_or_build_split
from landslide.data.release import ReleaseError, load_patch, read_split_index
from landslide.errors import ConfigError
from landslide.inference.options import check_map_options
from landslide.training.cv import check_options

TINY = ("debug=tiny", "data.fold=0")


def run(*args: str, env: dict, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return entry.run(*args, env=env, check=False, cwd=cwd)


@pytest.fixture()
def trained(tiny_run) -> tuple[Path, dict]:
    """The shared tiny run (fold 0 of 2, one epoch) and the environment it was made in (read only)."""
    return tiny_run


def folders(path: Path) -> set[Path]:
    return set(path.rglob("*")) if path.exists() else set()


# ------------------------------------------------------------------ missing arguments, no stub folders
@pytest.mark.parametrize("command, missing", [
    (("predict.py",), "missing mandatory argument: run_dir (a training run's folder"),
    (("map.py", "scene=s.tif", "out=m.tif"), "missing mandatory argument: run_dir"),
    (("map.py", "run_dir=r", "out=m.tif"), "missing mandatory argument: scene (the GeoTIFF to map"),
    (("map.py", "run_dir=r", "scene=s.tif"), "missing mandatory argument: out (the map to write"),
    (("map.py",), "missing mandatory arguments: out (the map to write, e.g. out=map.tif); run_dir"),
    (("train.py", "data.root=???"), "missing mandatory argument: data.root"),
])
def test_a_missing_argument_is_one_line_and_makes_no_folder(bare_env, tmp_path, command, missing):
    before = folders(tmp_path)
    line = one_error_line(run(*command, env=bare_env, cwd=tmp_path))
    assert missing in line
    assert folders(tmp_path) == before


def test_aggregate_without_arguments_is_one_line(bare_env):
    done = run("-m", "landslide.aggregate", env=bare_env)
    assert "the following arguments are required: runs, --out" in one_error_line(done)


def test_a_wrong_run_or_release_leaves_no_stub_folder(trained, tmp_path):
    run_dir, env = trained
    logs = Path(env["LANDSLIDE_ROOT"]) / "logs"
    before = folders(logs)
    line = one_error_line(run("predict.py", f"run_dir={tmp_path / 'nowhere'}", env=env))
    assert f"{tmp_path / 'nowhere'}: not found; run_dir must be a training run's folder" in line
    assert not (tmp_path / "nowhere").exists()
    line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"data.root={tmp_path / 'norelease'}",
                              f"out={tmp_path / 'pred'}", env=env))
    assert f"data.root={tmp_path / 'norelease'}: no folder there" in line and not (tmp_path / "pred").exists()
    line = one_error_line(run("train.py", f"data.root={tmp_path / 'norelease'}", env=env))
    assert f"data.root={tmp_path / 'norelease'}: no folder there" in line
    line = one_error_line(run("map.py", f"run_dir={run_dir}", f"scene={tmp_path / 'no.tif'}", "out=m.tif", env=env))
    assert f"scene={tmp_path / 'no.tif'}: not found" in line
    assert folders(logs) == before


def test_help_offers_only_the_models_there_are(bare_env):
    done = run("train.py", "--help", env=bare_env)
    line = next(line for line in done.stdout.splitlines() if line.startswith("model:"))
    assert line == "model: fusion_cnn, mm_cnn, mm_fpn, plain_cnn, seed_fpn, segment_unet"
    assert not [line for line in done.stdout.splitlines() if line.startswith("model/")]
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        for name, net in (("mm_fpn", "MultiModalFPN"), ("mm_cnn", "MultiModalCNN"), ("seed_fpn", "SeedFPN")):
            model = compose("train", overrides=[f"model={name}"]).model
            assert model.net._target_.endswith(net) and model.loss == "bce" and model.optimizer.lr > 0


@pytest.mark.parametrize("override, message", [
    ("trainer.max_epoch=3", "trainer.max_epoch=3: trainer has no key 'max_epoch'; did you mean trainer.max_epochs?"),
    ("data.num_fold=3", "data.num_fold=3: data has no key 'num_fold'; did you mean data.num_folds?"),
    ("traner.max_epochs=3", "traner.max_epochs=3: the config has no key 'traner'; did you mean trainer?"),
    ("model=mm_fpnn",
     "model=mm_fpnn: no such choice; did you mean mm_fpn? "
     "(choices: fusion_cnn, mm_cnn, mm_fpn, plain_cnn, seed_fpn, segment_unet)"),
])
def test_a_mistyped_option_names_the_one_meant(bare_env, tmp_path, override, message):
    done = run("train.py", "debug=tiny", override, env=bare_env, cwd=tmp_path)
    assert message in one_error_line(done) and "+trainer" not in done.stderr
    assert not (tmp_path / "logs").exists()


# ------------------------------------------------------------------ release files
def test_release_csvs_that_are_not_utf8_tables_are_one_line(tmp_path):
    write_release(tmp_path)
    csv = tmp_path / "Train.csv"
    text = csv.read_text()
    csv.write_bytes(text.replace("T001", "T\u00e9001").encode("latin-1"))
    with pytest.raises(ReleaseError, match=r"Train.csv: not UTF-8 text \(byte 0xe9 at offset \d+\); save it as UTF-8"):
        read_split_index(tmp_path, "train")
    csv.write_bytes(text.encode("utf-16"))
    with pytest.raises(ReleaseError, match=r"Train.csv: not UTF-8 text \(byte 0xff"):
        read_split_index(tmp_path, "train")
    csv.write_text(text + "T900,1,extra,fields\n")
    with pytest.raises(ReleaseError, match=r"Train.csv: not a table of equal rows \(.*line 14"):
        read_split_index(tmp_path, "train")
    csv.write_bytes(b"\xef\xbb\xbf" + text.encode())  # a byte-order mark is fine
    assert read_split_index(tmp_path, "train").ids[0] == "T000"


def test_an_id_named_na_is_an_id(tmp_path):
    write_release(tmp_path)
    shutil.move(tmp_path / "train_data" / "T000.npy", tmp_path / "train_data" / "NA.npy")
    table = pd.read_csv(tmp_path / "Train.csv")
    table.loc[0, "ID"] = "NA"
    table.to_csv(tmp_path / "Train.csv", index=False)
    assert read_split_index(tmp_path, "train").ids[0] == "NA"
    (tmp_path / "Train.csv").write_text((tmp_path / "Train.csv").read_text().replace("NA,", ",", 1))
    with pytest.raises(ReleaseError, match=r"empty ID on line\(s\) \[2\]"):
        read_split_index(tmp_path, "train")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned.txt",))


@pytest.mark.parametrize("write, message", [
    (lambda p: np.savez(p.with_suffix(""), a=np.zeros((64, 64, 12))) or p.with_suffix(".npz").rename(p),
     "a zip archive (an .npz of several arrays?), not one .npy array"),
    (lambda p: p.write_text("0.1,0.2\n0.3,0.4\n"), "not an .npy file (no NumPy header: text, or another format)"),
    (lambda p: p.write_bytes(pickle.dumps(Payload())), "pickled Python data, which is never loaded"),
    (lambda p: p.write_bytes(b""), "an empty file"),
    (lambda p: p.symlink_to(p.with_name("gone.npy")), "cannot be read (No such file or directory; a dangling"),
    (lambda p: p.mkdir(), "not a regular file"),
])
def test_patch_files_that_are_not_npy_arrays_are_one_line(tmp_path, monkeypatch, write, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "X.npy"
    write(path)
    with pytest.raises(ReleaseError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_patch(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_a_pipe_named_like_a_patch_does_not_hang_the_reader(tmp_path):
    write_release(tmp_path)
    fifo = tmp_path / "train_data" / "T004.npy"
    fifo.unlink()
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            load_or_build_split(read_split_index(tmp_path, "train"), tmp_path / "cache", 3500.0, progress=False)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)
    if reader.is_alive():  # let the reader go before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not reader.is_alive(), "the reader hangs on a pipe"
    assert isinstance(outcome[0], ReleaseError) and "T004.npy: not a regular file" in str(outcome[0])


def test_a_dangling_link_in_the_release_is_one_line(tmp_path):
    write_release(tmp_path)
    patch = tmp_path / "train_data" / "T004.npy"
    patch.unlink()
    patch.symlink_to(tmp_path / "elsewhere.npy")
    with pytest.raises(ReleaseError, match=r"T004.npy: cannot be read \(No such file or directory; a dangling"):
        load_or_build_split(read_split_index(tmp_path, "train"), tmp_path / "cache", 3500.0, progress=False)


def test_values_beyond_float32_are_named_as_such(tmp_path):
    path = tmp_path / "x.npy"
    patch = np.zeros((64, 64, 12))
    patch[1, 2, 3] = 1e300
    np.save(path, patch)
    with pytest.raises(ReleaseError, match=r"1 value\(s\) beyond float32's range \(e.g. 1e\+300\); set data.nan_"):
        load_patch(path)
    filled, bad = load_patch(path, "fill")
    assert bad == 1 and np.isfinite(filled).all() and filled[1, 2, 3] == 0
    patch[0, 0, 0] = np.nan
    np.save(path, patch)
    with pytest.raises(ReleaseError, match=r"1 NaN/Inf value\(s\) and 1 value\(s\) beyond float32's range"):
        load_patch(path)


@pytest.mark.parametrize("table, message", [
    ("ID,label\nT000,0\nT000,1\n", "1 duplicated ID(s), e.g. ['T000']"),
    ("ID,label\n", "no rows"),
    ("ID,label\nT000,0\nT999,1\n", "1 ID(s) listed in Train.csv have no .npy file, e.g. ['T999']"),
])
def test_a_bad_training_table_is_one_line_and_makes_no_run_folder(bare_env, tmp_path, table, message):
    write_release(tmp_path / "release")
    (tmp_path / "release" / "Train.csv").write_text(table)
    line = one_error_line(run("train.py", "debug=tiny", f"data.root={tmp_path / 'release'}",
                              f"hydra.run.dir={tmp_path / 'run'}", env=bare_env))
    assert message in line and "Train.csv" in line + message
    assert not (tmp_path / "run").exists()


def test_one_class_labels_say_so(bare_env, tmp_path):
    write_release(tmp_path / "release")
    table = pd.read_csv(tmp_path / "release" / "Train.csv")
    table["label"] = 0
    table.to_csv(tmp_path / "release" / "Train.csv", index=False)
    line = one_error_line(run("train.py", "debug=tiny", f"data.root={tmp_path / 'release'}",
                              f"hydra.run.dir={tmp_path / 'run'}", env=bare_env))
    assert "Train.csv: every label is 0 (12 images to train on); training needs images of both classes" in line


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("override, message", [
    ({"n_train": 0}, "data.synthetic.n_train must be an integer >= 1 (patches to write), got 0"),
    ({"n_test": -3}, "data.synthetic.n_test must be an integer >= 1 (patches to write), got -3"),
    ({"n_train": "abc"}, "data.synthetic.n_train must be an integer, got 'abc'"),
    ({"n_train": 2.5}, "data.synthetic.n_train must be an integer, got 2.5"),
    ({"label_noise": 0.7}, "data.synthetic.label_noise must be in [0, 0.5) (a share of training labels), got 0.7"),
    ({"difficulty": "nope"}, "data.synthetic.difficulty must be one of easy,"),
])
def test_embedded_settings_no_release_can_be_made_with_are_refused(override, message):
    from landslide.synth.embedded import wanted_release

    with pytest.raises(ConfigError) as err:
        wanted_release({"n_train": 10, "n_test": 4, "seed": 0, **override})
    assert str(err.value).startswith(message)


def test_an_empty_embedded_release_is_one_line_and_no_folder(tmp_path, bare_env):
    line = one_error_line(run("train.py", "debug=tiny", "data.synthetic.n_train=0",
                              f"data.synthetic.root={tmp_path / 'synthetic'}", f"hydra.run.dir={tmp_path / 'run'}",
                              env=bare_env))
    assert "data.synthetic.n_train must be an integer >= 1 (patches to write), got 0" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "synthetic").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_gpu_trainer_where_there_is_no_gpu_is_one_line_and_no_folder(tmp_path, bare_env):
    line = one_error_line(run("train.py", "debug=tiny", "trainer=gpu", f"hydra.run.dir={tmp_path / 'run'}",
                              env=bare_env))
    assert "trainer.accelerator=gpu: no CUDA GPU is available here; use trainer=cpu" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=2.5", "data.batch_size must be an integer >= 1, got 2.5"),
    ("data.eval_batch_size=0", "data.eval_batch_size must be an integer >= 1, got 0"),
    ("data.holdout_fraction=0.9", "data.holdout_fraction must be in [0, 0.5] (the folds need the rest), got 0.9"),
    ("energy.gpu_sample_secs=often", "energy.gpu_sample_secs must be a number of seconds >= 0 (0: off), got 'often'"),
    ("energy.gpu_sample_secs=-1", "energy.gpu_sample_secs must be a number of seconds >= 0 (0: off), got -1"),
])
def test_training_options_out_of_range_are_refused(override, message):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["debug=tiny", override])
    with pytest.raises(ConfigError) as err:
        check_options(cfg)
    assert str(err.value) == message


@pytest.mark.parametrize("override, message", [
    ("tta=maybe", "tta must be null (as the run recorded), true or false, got 'maybe'"),
    ("precision=fp64", "precision must be null (as the run recorded) or one of 32-true, bf16-mixed, got 'fp64'"),
    ("data.nan_policy=ignore", "data.nan_policy must be null (as the run recorded) or one of error, fill"),
    ("device=foo", "device=foo: not a device"),
    ("batch_size=0", "batch_size must be an integer >= 1, got 0"),
])
def test_prediction_options_are_checked_before_any_folder_is_made(trained, tmp_path, override, message):
    run_dir, env = trained
    line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'pred'}", override, env=env))
    assert message in line and not (tmp_path / "pred").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_for_where_there_is_none_is_one_line(trained, tmp_path):
    run_dir, env = trained
    line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'p'}", "device=cuda", env=env))
    assert "device=cuda: no CUDA GPU is available here" in line


MAP_OPTIONS = {"mode": "cam", "stride": 32, "blend": "mean", "dtype": "uint8", "threshold": 0.5, "min_valid": 0.5,
               "blend_by_mode": {"window": "mean", "cam": "mean", "gradient": "mean", "segment": "gaussian"},
               "min_area_m2": 500, "smooth": 2, "windows_per_batch": 256, "batch_size": 1024, "tta": None,
               "device": "auto"}


@pytest.mark.parametrize("option, value, message", [
    ("stride", 0, "stride must be an integer in [1, 64], got 0"),
    ("stride", -1, "stride must be an integer in [1, 64], got -1"),
    ("stride", 1000, "stride must be an integer in [1, 64], got 1000"),
    ("windows_per_batch", 0, "windows_per_batch must be an integer >= 1, got 0"),
    ("dtype", "int16", "dtype must be one of uint8, float32, got 'int16'"),
    ("blend", "max", "blend must be null (by mode) or one of mean, gaussian, got 'max'"),
    ("blend_by_mode", {"window": "mean"}, "blend_by_mode must give each mode (window, cam, gradient, segment) one of "
     "mean, gaussian, got {'window': 'mean'}"),
    ("threshold", 1.5, "threshold must be in [0, 1], got 1.5"),
    ("min_valid", -0.1, "min_valid must be in [0, 1], got -0.1"),
    ("tta", "maybe", "tta must be null (as the run recorded), true or false, got 'maybe'"),
    ("mode", "grad", "mode must be one of window, cam, gradient, segment, got 'grad'"),
    ("min_area_m2", -5, "min_area_m2 must be a number >= 0, got -5"),
    ("smooth", 1.5, "smooth must be an integer in [0, 8], got 1.5"),
])
def test_map_options_out_of_range_are_refused(option, value, message):
    with pytest.raises(ConfigError) as err:
        check_map_options(**{**MAP_OPTIONS, option: value})
    assert str(err.value) == message


def test_map_py_checks_its_options_before_any_folder_is_made(trained, tmp_path):
    run_dir, env = trained
    logs = Path(env["LANDSLIDE_ROOT"]) / "logs"
    before = folders(logs)
    line = one_error_line(run("map.py", f"run_dir={run_dir}", "scene=s.tif", f"out={tmp_path / 'm.tif'}", "stride=0",
                              env=env))
    assert "stride must be an integer in [1, 64], got 0" in line and folders(logs) == before


def test_an_all_nodata_scene_says_so_and_writes_nothing(trained, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    run_dir, env = trained
    scene = tmp_path / "empty.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=80, height=70, count=12, dtype="float32", nodata=-9999.0,
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10)) as dst:
        dst.write(np.full((12, 70, 80), -9999.0, np.float32))
    line = one_error_line(run("map.py", f"run_dir={run_dir}", f"scene={scene}", f"out={tmp_path / 'm.tif'}",
                              "progress=false", env=env))
    assert f"{scene}: no valid pixel (nodata, or not finite, in every band everywhere); nothing to map" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif"]


# ------------------------------------------------------------------ run files
def test_a_damaged_last_checkpoint_on_resume_is_one_line(trained, tmp_path):
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "folds" / "fold_0" / "result.json").unlink()  # fold 0 unfinished: it resumes from last.ckpt
    last = copy / "folds" / "fold_0" / "checkpoints" / "last.ckpt"  # removed when the fold finished: put one back
    last.parent.mkdir(exist_ok=True)
    last.write_bytes((copy / "folds" / "fold_0" / "model.ckpt").read_bytes()[:2000])  # a checkpoint cut short
    line = one_error_line(run("train.py", *TINY, f"hydra.run.dir={copy}", env=env, cwd=tmp_path))
    assert f"{last}: cannot be read as a checkpoint of weights" in line and "delete it to train the fold" in line
    torch.save({"state_dict": {}, "payload": Payload()}, last)
    line = one_error_line(run("train.py", *TINY, f"hydra.run.dir={copy}", env=env, cwd=tmp_path))
    assert f"{last}: cannot be read as a checkpoint of weights" in line
    assert not (tmp_path / "pwned.txt").exists()


def test_a_checkpoint_of_another_network_in_a_run_is_one_line(trained, tmp_path):
    """A fold's model.ckpt copied in from another run (here: the same weights recorded without centring) is not
    mixed into the ensemble."""
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = sorted(copy.glob("folds/fold_*/model.ckpt"))[-1]
    ckpt = torch.load(path, weights_only=True)
    recorded = ckpt["hyper_parameters"]["net"]["centre"]
    ckpt["hyper_parameters"]["net"]["centre"] = not recorded
    torch.save(ckpt, path)
    line = one_error_line(run("predict.py", f"run_dir={copy}", f"out={tmp_path / 'p'}", env=env))
    said = f"centre={not recorded!r} (the run recorded {recorded!r})"
    assert f"{path}: another network than the run recorded: {said}" in line


def test_a_damaged_cv_summary_is_one_line(trained, tmp_path):
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "cv_summary.json").write_text('{"oof_f1": 0.5, "folds": [{"fold": 0}]}')
    line = one_error_line(run("predict.py", f"run_dir={copy}", f"out={tmp_path / 'p'}", env=env))
    assert "cv_summary.json: damaged (its folds do not each name a fold and a threshold)" in line
    (copy / "cv_summary.json").write_text('{"oof_f1": 0.5, "fol')
    line = one_error_line(run("predict.py", f"run_dir={copy}", f"out={tmp_path / 'p'}", env=env))
    assert "cv_summary.json: cannot be read as JSON" in line
    done = run("-m", "landslide.report", str(tmp_path), "--out", str(tmp_path / "report"), env=env)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    assert "cv_summary.json: cannot be read as JSON" in done.stdout + done.stderr


def test_the_report_leaves_out_what_it_cannot_read_and_says_so(trained, tmp_path):
    run_dir, env = trained
    sweep = tmp_path / "sweep"
    for name in ("good", "text", "filter_only"):
        shutil.copytree(run_dir, sweep / name)
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    (sweep / "text" / "cv_summary.json").write_text(json.dumps({**summary, "oof_f1": "high"}))
    (sweep / "filter_only" / "cv_summary.json").write_text(json.dumps({**summary, "oof_f1": None,
                                                                       "stage": "filter"}))
    done = run("-m", "landslide.report", str(sweep), "--out", str(tmp_path / "report"), env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert f"{sweep / 'text' / 'cv_summary.json'}: oof_f1 is 'high', not a number; left out of the report" in output
    assert output.count("oof_f1 is 'high', not a number") == 1  # said once
    said = "no out-of-fold F1 (no network trained: stage=filter)"
    assert f"{sweep / 'filter_only' / 'cv_summary.json'}: {said}" in output
    table = (tmp_path / "report" / "table.md").read_text()
    assert table.count("\n| ") == 1  # one row: the readable run
    (tmp_path / "file").write_text("not a folder")
    line = one_error_line(run("-m", "landslide.report", str(sweep), "--out", str(tmp_path / "file"), env=env))
    assert f"--out={tmp_path / 'file'}: a file, not a folder" in line


def test_outputs_that_cannot_be_written_are_one_line(trained, tmp_path):
    run_dir, env = trained
    (tmp_path / "file").write_text("not a folder")
    line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'file'}", env=env))
    assert f"out={tmp_path / 'file'}: a file, not a folder" in line
    line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'file' / 'sub'}", env=env))
    assert f"{tmp_path / 'file'} is a file, not a folder" in line
    scene = tmp_path / "s.tif"
    scene.write_bytes(b"a scene")
    line = one_error_line(run("map.py", f"run_dir={run_dir}", f"scene={scene}", f"out={tmp_path}", env=env))
    assert f"out={tmp_path}: a folder; name a file" in line
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "locked").mkdir(mode=0o500)
        line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'locked' / 'p'}", env=env))
        assert "cannot be written to (permission denied)" in line
    if Path("/proc/self").is_dir():  # a folder that exists and that even root cannot make folders in
        line = one_error_line(run("predict.py", f"run_dir={run_dir}", "out=/proc/landslide-out", env=env))
        assert line.endswith("out=/proc/landslide-out: /proc cannot be written to (No such file or directory)")
        line = one_error_line(run("train.py", "debug=tiny", "hydra.run.dir=/proc/landslide-run", env=env))
        assert "hydra.run.dir=/proc/landslide-run: /proc cannot be written to" in line


def test_a_failure_after_the_checks_leaves_no_stub_folder(trained, tmp_path):
    """A new run or prediction that fails on something only the job can find (a patch's content, a checkpoint)
    removes the folder it made; a folder that was there before keeps what it held."""
    run_dir, env = trained
    release = tmp_path / "release"
    write_release(release)
    np.save(release / "train_data" / "T000.npy", np.zeros((3, 3)))
    args = (*TINY, f"data.root={release}", f"data.cache_dir={tmp_path / 'cache'}")
    line = one_error_line(run("train.py", *args, f"hydra.run.dir={tmp_path / 'run'}", env=env))
    assert "T000.npy: shape (3, 3)" in line and not (tmp_path / "run").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    one_error_line(run("train.py", *args, f"hydra.run.dir={mine}", env=env))
    assert (mine / "notes.txt").read_text() == "mine" and (mine / ".hydra").is_dir()
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "folds" / "fold_0" / "model.ckpt").write_bytes(b"not a checkpoint")
    line = one_error_line(run("predict.py", f"run_dir={copy}", f"out={tmp_path / 'pred'}", env=env))
    assert "model.ckpt" in line and not (tmp_path / "pred").exists()


def test_a_crash_keeps_its_new_run_folder(trained, tmp_path, monkeypatch):
    """Only a refusal removes a new run's folder: a crash (a bug, out of memory) keeps its log and .hydra."""
    _, env = trained

    def crash(cfg):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("landslide.training.cv.run_cv", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        run("train.py", *TINY, f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file() and (tmp_path / "run" / "train.log").is_file()


def test_a_diverged_network_is_one_line_and_its_fold_is_not_finished(trained, tmp_path):
    """A learning rate that makes the network's outputs NaN: one line saying so, and no result.json (so a rerun
    trains the fold again instead of stopping on the NaN forever)."""
    _, env = trained
    run_dir = tmp_path / "run"
    line = one_error_line(run("train.py", *TINY, "model.optimizer.lr=1e30", f"hydra.run.dir={run_dir}", env=env))
    assert "out-of-fold probabilities are not numbers (NaN): its training diverged; lower model.optimizer.lr" in line
    assert not (run_dir / "folds" / "fold_0" / "result.json").exists()


def test_a_damaged_finished_fold_is_named_on_resume(trained, tmp_path):
    """A finished fold's result.json that the summary cannot use (here a NaN probability, as a diverged network wrote
    before that was refused) is named with what to do, not a traceback at the end of every rerun."""
    run_dir, env = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = copy / "folds" / "fold_0" / "result.json"
    result = json.loads(path.read_text())
    result["oof"]["prob"][0] = float("nan")
    path.write_text(json.dumps(result))
    line = one_error_line(run("train.py", *TINY, f"hydra.run.dir={copy}", env=env))
    assert f"{path}: oof.prob is not a list of probabilities" in line and "Delete it to train fold 0 again." in line


def test_init_weights_of_another_band_set_is_one_line(trained, tmp_path):
    run_dir, env = trained
    weights = run_dir / "folds" / "fold_0" / "model.ckpt"
    line = one_error_line(run("train.py", *TINY, "data.bands=sar", f"init_weights={weights}",
                              f"hydra.run.dir={tmp_path / 'run'}", env=env))
    assert f"init_weights={weights}: trained on channels" in line and "(another data.bands)" in line


def test_two_predictions_into_one_folder_do_not_interleave(trained, tmp_path):
    from landslide.preflight import lock_output, release_output

    run_dir, env = trained
    out = tmp_path / "pred"
    lock_output(out)  # as a predict running now holds it
    try:
        line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={out}", env=env))
        assert f"out={out}: another command is writing there now" in line
        assert not (out / ".hydra").exists() and not (out / "predict.log").exists()
    finally:
        release_output(out)
    done = run("predict.py", f"run_dir={run_dir}", f"out={out}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
