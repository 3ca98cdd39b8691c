"""Nothing lost, nothing mixed: a failed, refused or killed resume leaves what a run predicts as it was; a run
directory holds one run (every setting that changes results defines it, for resume and aggregate alike); nothing
named in a run or job folder is built or run; outputs are written as one set and never over inputs or each other; a
run predicts the release it was trained on; every command gets its own folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import entry
import landslide.cli  # noqa: F401  (registers the resolvers the configs use)
from conftest import REPO, write_release
from entry import one_error_line
from landslide.errors import RunError
from landslide.files import verify_output_set
from landslide.inference.options import check_not_in_run_records
from landslide.run_record import HARMLESS, defining_settings

TINY = ("debug=tiny", "data.fold=0")
HYDRA_FILES = (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml")
DEAD_PID = 999_999_999  # above any pid_max: no such process


def run(*args: str, env: dict, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return entry.run(*args, env=env, check=False, cwd=cwd)


@pytest.fixture()
def trained(tiny_run) -> tuple[Path, dict]:
    """The shared tiny run (fold 0 of 2, one epoch) and the environment it was made in (read only)."""
    return tiny_run


@pytest.fixture()
def run_copy(trained, tmp_path) -> tuple[Path, dict]:
    run_dir, env = trained
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run", env


def files(folder: Path, names=None) -> dict[str, bytes]:
    """The bytes of ``names`` in ``folder`` (default: every file under it)."""
    if names is None:
        names = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    return {name: (folder / name).read_bytes() for name in names}


def predicted(run_dir: Path, env: dict, out: Path, *args: str) -> dict[str, bytes]:
    """What ``predict.py run_dir=<run_dir>`` writes (submission and predictions)."""
    done = run("predict.py", f"run_dir={run_dir}", f"out={out}", *args, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return files(out, ("submission.csv", "predictions.csv"))


def other_release(folder: Path, n_test: int = 4) -> Path:
    write_release(folder, n_train=12, n_test=n_test, seed=5)
    return folder


# ------------------------------------------------------------------ a failed resume leaves the run as it was
def test_a_refused_or_failed_resume_leaves_the_run_and_its_predictions_as_they_were(run_copy, tmp_path):
    run_dir, env = run_copy
    before = predicted(run_dir, env, tmp_path / "before")
    hydra, whole = files(run_dir, HYDRA_FILES), files(run_dir)
    # refused before the job starts, the run folder byte for byte as it was (its log and energy record too): an
    # option out of range, another option, other training data (only the data differs: its fingerprint)
    attempts = {
        "data.fold=5": "data.fold must be null or in [0, 2)",
        "data.nan_policy=fill": "data.nan_policy 'error' -> 'fill'",
        f"data.root={other_release(tmp_path / 'clean')}": "data.fingerprint",
    }
    for override, message in attempts.items():
        line = one_error_line(run("train.py", *TINY, f"hydra.run.dir={run_dir}", override, env=env))
        assert message in line
        assert files(run_dir) == whole
    # the same files by name, size and time, one patch holding a NaN now, read afresh (another cache folder): the job
    # fails reading it after Hydra wrote its files, and puts the run's back
    release = tmp_path / "damaged"
    shutil.copytree(Path(env["LANDSLIDE_ROOT"]) / "data" / "tiny_easy", release)
    patch_file = sorted((release / "train_data").glob("*.npy"))[3]
    stat, patch = patch_file.stat(), np.load(patch_file)
    patch[0, 0, 0] = np.nan
    np.save(patch_file, patch)
    os.utime(patch_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    line = one_error_line(run("train.py", *TINY, f"hydra.run.dir={run_dir}", f"data.root={release}",
                              f"data.cache_dir={tmp_path / 'cache'}", env=env))
    assert "NaN/Inf" in line and files(run_dir, HYDRA_FILES) == hydra
    assert predicted(run_dir, env, tmp_path / "after") == before


def test_a_resume_killed_after_hydra_wrote_its_files_leaves_the_predictions_as_they_were(run_copy, tmp_path):
    run_dir, env = run_copy
    before = predicted(run_dir, env, tmp_path / "before")
    other, cache = tmp_path / "other", tmp_path / "cache"  # the run's own data in another folder (times kept)
    shutil.copytree(Path(env["LANDSLIDE_ROOT"]) / "data" / "tiny_easy", other)
    cache.mkdir()
    command = [sys.executable, str(REPO / "train.py"), *TINY, f"hydra.run.dir={run_dir}", f"data.root={other}",
               f"data.cache_dir={cache}"]
    with FileLock(cache / ".prepare.lock"):  # the resume waits here, after Hydra wrote .hydra/, before its record
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while str(other) not in (run_dir / ".hydra" / "config.yaml").read_text():
                assert process.poll() is None and time.monotonic() < deadline, "the resume never wrote .hydra/"
                time.sleep(0.2)
        finally:
            process.kill()
            process.wait()
    assert str(other) in (run_dir / ".hydra" / "config.yaml").read_text()  # what a kill leaves
    assert predicted(run_dir, env, tmp_path / "after") == before


# ------------------------------------------------------------------ a run directory holds one run
def test_the_defining_settings_are_the_whole_config_but_the_harmless_keys():
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["debug=tiny"])
    defining = defining_settings(cfg, "fingerprint")
    for key in ("data.fold_seed_stride", "model.compile", "trainer.max_epochs", "model.net.head_units",
                "filter.params.n_estimators", "data.augment.erase_p", "cv.parallel_folds",
                "callbacks.model_checkpoint.monitor"):
        assert key in defining
    assert defining["data.fingerprint"] == "fingerprint"
    assert not [k for k in defining if any(k == h or k.startswith(h + ".") for h in HARMLESS)]
    assert "data.fold" not in defining and "logger.csv.save_dir" not in defining and "paths.log_dir" not in defining


@pytest.mark.parametrize("override, key", [
    ("data.fold_seed_stride=7", "data.fold_seed_stride 1000 -> 7"),
    ("+trainer.max_steps=3", "trainer.max_steps None -> 3"),
    ("model.compile=true", "model.compile False -> True"),
    ("+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping", "callbacks.stop._target_"),
])
def test_resuming_with_a_setting_that_changes_results_is_refused(run_copy, override, key):
    run_dir, env = run_copy
    kept = files(run_dir)  # its log and energy record included: the refusal comes before the job starts
    line = one_error_line(run("train.py", *TINY, f"hydra.run.dir={run_dir}", override, env=env))
    assert "this run directory holds a run made with other settings" in line and key in line
    assert files(run_dir) == kept


def test_harmless_settings_may_change_on_resume(run_copy):
    run_dir, env = run_copy
    done = run("train.py", *TINY, f"hydra.run.dir={run_dir}", "logger=tensorboard", "data.eval_batch_size=16",
               "data.read_workers=1", "name=renamed", "~callbacks.lr_monitor", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(json.loads((run_dir / "run.json").read_text())["invocations"]) == 2


@pytest.fixture(scope="module")
def filter_jobs(tiny_run) -> dict[str, Path]:
    """Folds trained as separate jobs (the filter stage only: quick): fold 0, fold 1, and fold 1 with another
    seed stride."""
    _, env = tiny_run
    root = Path(env["LANDSLIDE_ROOT"]) / "jobs"
    jobs = {"fold0": ["data.fold=0"], "fold1": ["data.fold=1"], "stride": ["data.fold=1", "data.fold_seed_stride=7"]}
    for name, extra in jobs.items():
        done = run("train.py", "debug=tiny", "stage=filter", *extra, f"hydra.run.dir={root / name}", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    return {name: root / name for name in jobs}


def test_aggregate_applies_the_same_comparison_as_resume(filter_jobs, trained, tmp_path):
    _, env = trained
    done = run("-m", "landslide.aggregate", str(filter_jobs["fold0"]), str(filter_jobs["fold1"]), "--out",
               str(tmp_path / "merged"), env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    merged = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert merged["config"]["data"]["fold"] is None and merged["config"]["data"]["root"]
    done = run("-m", "landslide.aggregate", str(filter_jobs["fold0"]), str(filter_jobs["stride"]), "--out",
               str(tmp_path / "mixed"), env=env)
    assert "data.fold_seed_stride 1000 -> 7" in one_error_line(done)
    assert not (tmp_path / "mixed" / "run.json").exists()


def test_aggregate_never_writes_into_the_folders_it_merges(filter_jobs, trained, tmp_path):
    run_dir, env = trained
    # the output is checked first: named even where the jobs given cannot be read
    line = one_error_line(run("-m", "landslide.aggregate", str(tmp_path / "nothing"), "--out", str(run_dir), env=env))
    assert f"{run_dir} already holds a run" in line
    sweep = tmp_path / "sweep"  # a sweep folder (Hydra's multirun.yaml) stands for the jobs in it
    for number, name in enumerate(("fold0", "fold1")):
        shutil.copytree(filter_jobs[name], sweep / f"{number}_{name}")
    (sweep / "multirun.yaml").write_text("{}\n")
    before = files(sweep)
    for out, relation in ((sweep, "is"), (sweep / "merged", "lies in or holds"), (tmp_path, "lies in or holds")):
        line = one_error_line(run("-m", "landslide.aggregate", str(sweep), "--out", str(out), env=env))
        assert f"--out {out}: {relation} the folder {sweep} it merges" in line
    assert files(sweep) == before and not (sweep / "run.json").exists()


# ------------------------------------------------------------------ nothing in a run folder is built or run
PAYLOAD = "payload"


def plant(tree, marker: Path, interpolation: bool = False):
    """``tree`` with a ``_target_: os.system`` node (or a side-effecting interpolation) added to every mapping."""
    if isinstance(tree, dict):
        planted = {k: plant(v, marker, interpolation) for k, v in tree.items()}
        planted[PAYLOAD] = (f"${{ensure_dir:{marker}}}" if interpolation else
                            {"_target_": "os.system", "_args_": [f"touch {marker}"]})
        return planted
    if isinstance(tree, list):
        return [plant(v, marker, interpolation) for v in tree]
    return tree


def plant_json(path: Path, marker: Path, interpolation: bool = False) -> None:
    path.write_text(json.dumps(plant(json.loads(path.read_text()), marker, interpolation)))


def plant_yaml(path: Path, marker: Path, interpolation: bool = False) -> None:
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    OmegaConf.save(OmegaConf.create(plant(tree, marker, interpolation)), path)


@pytest.mark.parametrize("interpolation", [False, True], ids=["target", "resolver"])
def test_no_command_runs_what_is_planted_in_the_files_it_reads(run_copy, filter_jobs, tmp_path, interpolation):
    run_dir, env = run_copy
    marker = tmp_path / "pwned"
    jobs = []
    for name in ("fold0", "fold1"):
        shutil.copytree(filter_jobs[name], tmp_path / name)
        jobs.append(tmp_path / name)
    for folder in (run_dir, *jobs):
        for path in (folder / "run.json", folder / "cv_summary.json"):
            if path.is_file():
                plant_json(path, marker, interpolation)
        for path in (folder / ".hydra").glob("*.yaml"):
            plant_yaml(path, marker, interpolation)
    (run_dir.parent / "multirun.yaml").write_text((run_dir / ".hydra" / "hydra.yaml").read_text())
    commands = [
        ("train.py", *TINY, f"hydra.run.dir={run_dir}"),  # a resume reads run.json
        ("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'pred'}"),
        ("-m", "landslide.aggregate", *map(str, jobs), "--out", str(tmp_path / "merged")),
        ("-m", "landslide.report", str(run_dir.parent), "--out", str(tmp_path / "report")),
    ]
    for command in commands:
        done = run(*command, env=env)
        assert done.returncode in (0, 1, 2), done.stdout[-3000:] + done.stderr[-3000:]
        assert "Traceback" not in done.stdout + done.stderr
        assert not marker.exists(), command


def test_map_runs_nothing_planted_in_the_run(run_copy, scene, tmp_path):
    run_dir, env = run_copy
    marker = tmp_path / "pwned"
    plant_json(run_dir / "run.json", marker)
    plant_yaml(run_dir / ".hydra" / "config.yaml", marker)
    done = run("map.py", f"run_dir={run_dir}", f"scene={scene}", f"out={tmp_path / 'map.tif'}", "progress=false",
               env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not marker.exists()


# ------------------------------------------------------------------ prediction output never inside the run
def test_predict_never_writes_into_the_run_or_a_hydra_folder(run_copy):
    run_dir, env = run_copy
    kept = files(run_dir, HYDRA_FILES)
    for out, message in ((run_dir, "the run directory itself"), (run_dir / ".hydra", "inside a .hydra/ folder"),
                         (run_dir / ".hydra" / "sub", "inside a .hydra/ folder")):
        line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={out}", env=env))
        assert f"out={out}: {message}" in line
    assert files(run_dir, HYDRA_FILES) == kept and not (run_dir / ".hydra" / "sub").exists()


def test_no_output_goes_among_a_runs_files(run_copy, scene, tmp_path):
    """A map, an audit or a prediction written into a run folder goes to a new subfolder, never over or among the
    files training wrote."""
    run_dir, env = run_copy
    kept = files(run_dir)
    for command, options, message in [
        ("map.py", [f"out={run_dir / 'cv_summary.tif'}"], f"out={run_dir / 'cv_summary.tif'}: among the files"),
        ("map.py", [f"out={run_dir / 'maps' / 'm.tif'}", f"summary={run_dir / 'run.json'}"],
         f"summary={run_dir / 'run.json'}: among the files"),
        ("map.py", [f"out={tmp_path / 'm.tif'}", f"vector={run_dir / 'folds' / 'fold_0' / 'm.geojson'}"],
         f"vector={run_dir / 'folds' / 'fold_0' / 'm.geojson'}: among the files of the training run {run_dir}"),
        ("-m landslide.audit", [f"out={run_dir}"], f"out={run_dir}: the run directory itself"),
        ("-m landslide.audit", [f"out={run_dir / 'folds' / 'fold_0'}"], "among the files of the training run"),
        ("predict.py", [f"out={run_dir / 'folds'}"], "among the files of the training run"),
    ]:
        extra = [f"scene={scene}", "progress=false"] if command == "map.py" else []
        line = one_error_line(run(*command.split(), f"run_dir={run_dir}", *options, *extra, env=env))
        assert message in line, line
    assert files(run_dir) == kept
    check_not_in_run_records("out", run_dir / "maps" / "m.tif", folder=False)  # a new subfolder is fine


# ------------------------------------------------------------------ outputs as one set
class StopAt:
    """``os.replace`` that stops the process (as a kill would) at its ``n``-th call."""

    def __init__(self, n: int) -> None:
        self.n, self.calls, self.replace = n, 0, os.replace

    def __call__(self, src, dst) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt(f"stopped before moving {dst} in")
        self.replace(src, dst)


def test_a_prediction_stopped_while_moving_its_files_in_leaves_no_complete_set(trained, tmp_path, monkeypatch):
    from landslide.inference.ensemble import predict_run

    run_dir, env = trained
    out = tmp_path / "pred"
    settings = {"data_root": None, "cache_dir": str(Path(env["LANDSLIDE_ROOT"]) / "data" / "cache"),
                "batch_size": 512, "tta": None, "device": "cpu"}
    predict_run(run_dir, out, **settings)
    assert set(verify_output_set(out / "predict_summary.json")["files"]) == {"submission.csv", "predictions.csv"}
    (out / f".submission.tmp-{DEAD_PID}.csv").write_text("left by a killed predict")
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", StopAt(2))  # submission.csv is moved in, predictions.csv is not
        with pytest.raises(KeyboardInterrupt):
            predict_run(run_dir, out, **settings)
    assert not (out / "predict_summary.json").exists()  # the old predictions.csv beside the new submission: no set
    with pytest.raises(RunError, match="not a complete set"):
        verify_output_set(out / "predict_summary.json")
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]  # neither its own nor the killed one's
    predict_run(run_dir, out, **settings)
    verify_output_set(out / "predict_summary.json")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    pytest.importorskip("rasterio")
    from landslide.synth.scene import generate_scene

    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    generate_scene(path, width=96, height=80, seed=4, slides_per_km2=2.0, cloud_cover=0.1, nodata_corner=True)
    return path


def test_a_map_stopped_while_moving_its_files_in_leaves_no_complete_set(trained, scene, tmp_path, monkeypatch):
    from conftest import map_settings
    from landslide.inference.scene import predict_scene

    run_dir, _ = trained
    out, vector = tmp_path / "map.tif", tmp_path / "map.geojson"
    settings = map_settings(progress=False, device="cpu")
    predict_scene(run_dir, scene, out, vector=vector, **settings)
    assert set(verify_output_set(tmp_path / "map.json")["files"]) == {"map.tif", "map.geojson"}
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", StopAt(2))  # the map is moved in, its polygons are not
        with pytest.raises(KeyboardInterrupt):
            predict_scene(run_dir, scene, out, vector=vector, **{**settings, "threshold": 0.9})
    assert not (tmp_path / "map.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_scene_cut_short_is_one_line(trained, scene, tmp_path):
    """A GeoTIFF whose header reads but whose pixels stop part way (an interrupted download)."""
    run_dir, env = trained
    cut = tmp_path / "cut.tif"
    cut.write_bytes(scene.read_bytes()[: scene.stat().st_size // 3])
    line = one_error_line(run("map.py", f"run_dir={run_dir}", f"scene={cut}", f"out={tmp_path / 'm.tif'}", env=env))
    assert f"{cut}: rows " in line and "cannot be read; the file is truncated or damaged" in line
    assert not (tmp_path / "m.tif").exists()


@pytest.mark.parametrize("outputs, message", [
    (["out={scene}"], "out={scene} would overwrite the input scene={scene}"),
    (["out={tmp}/m.tif", "figure={scene}"], "figure={scene} would overwrite the input scene={scene}"),
    (["out={tmp}/m.json"], "summary={tmp}/m.json and out={tmp}/m.json name the same file"),
    (["out={tmp}/m.tif", "vector={tmp}/m.json"], "summary={tmp}/m.json and vector={tmp}/m.json name the same"),
    (["out={tmp}/m.tif", "vector={tmp}/m.tif"], "vector={tmp}/m.tif and out={tmp}/m.tif name the same file"),
    (["out={tmp}/m.tif", "summary={tmp}/s.json", "figure={tmp}/s.json"], "figure={tmp}/s.json and summary="),
    (["out={tmp}/m.tif", "figure={tmp}/m.xyz"], "figure={tmp}/m.xyz: the map's figure is a PNG; name it <name>.png"),
    (["out={tmp}/m.tif", "figure={tmp}/new/fig"], "figure={tmp}/new/fig: the map's figure is a PNG"),
])
def test_map_outputs_never_overwrite_inputs_or_each_other(trained, scene, tmp_path, outputs, message):
    run_dir, env = trained
    before = scene.read_bytes()
    given = [o.format(scene=scene, tmp=tmp_path) for o in outputs]
    line = one_error_line(run("map.py", f"run_dir={run_dir}", f"scene={scene}", *given, env=env))
    assert message.format(scene=scene, tmp=tmp_path) in line
    assert scene.read_bytes() == before and not (tmp_path / "m.tif").exists()


# ------------------------------------------------------------------ the release a run predicts
def test_a_run_predicts_its_own_release_whatever_the_environment_says(run_copy, tmp_path):
    run_dir, env = run_copy
    trained_on = Path(env["LANDSLIDE_ROOT"]) / "data" / "tiny_easy"
    elsewhere = tmp_path / "elsewhere"
    other_release(elsewhere / "data" / "tiny_easy", n_test=5)  # where ${oc.env:LANDSLIDE_ROOT} would now point
    done = run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'pred'}",
               env={**env, "LANDSLIDE_ROOT": str(elsewhere)})
    assert done.returncode == 0, done.stderr[-3000:]
    ids = pd.read_csv(tmp_path / "pred" / "submission.csv")["ID"].tolist()
    assert ids == pd.read_csv(trained_on / "Test.csv")["ID"].tolist()
    assert f"of {trained_on} (the run's training release)" in done.stdout + done.stderr


def test_predict_checks_the_training_release_is_the_one_trained_on(run_copy, tmp_path):
    run_dir, env = run_copy
    release = tmp_path / "release"
    shutil.copytree(Path(env["LANDSLIDE_ROOT"]) / "data" / "tiny_easy", release)  # times kept: the same fingerprint
    record = json.loads((run_dir / "run.json").read_text())
    record["config"]["data"]["root"] = str(release)
    (run_dir / "run.json").write_text(json.dumps(record))
    predicted(run_dir, env, tmp_path / "same")
    table = pd.read_csv(release / "Train.csv")
    table.loc[0, "label"] = 1 - table.loc[0, "label"]
    table.to_csv(release / "Train.csv", index=False)
    line = one_error_line(run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'changed'}", env=env))
    assert f"{release}: its training split is not the one {run_dir} was trained on" in line
    predicted(run_dir, env, tmp_path / "other", f"data.root={release}")  # another release, on purpose


# ------------------------------------------------------------------ one folder per command
PRINT_RUN_DIR = """
import sys
import landslide.cli  # registers the resolvers the configs use
from hydra import compose, initialize_config_dir
with initialize_config_dir(sys.argv[1], version_base="1.3"):
    print(compose("train", return_hydra_config=True).hydra.run.dir)
"""


def test_two_commands_started_together_get_their_own_run_folders(bare_env):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        first, second = (compose("train", return_hydra_config=True).hydra.run.dir for _ in range(2))
    assert first != second
    processes = [subprocess.Popen([sys.executable, "-c", PRINT_RUN_DIR, str(REPO / "configs")], env=bare_env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    folders = [p.communicate(timeout=300)[0].strip() for p in processes]
    assert all(folders) and folders[0] != folders[1]


# ------------------------------------------------------------------ older runs, read without the command line
READ_OLD_RUN = """
import sys
from pathlib import Path
from landslide.run_record import read_run_config  # landslide.cli never imported: no resolver registered by it
run_dir = Path(sys.argv[1])
(run_dir / ".hydra").mkdir(parents=True)
(run_dir / ".hydra" / "config.yaml").write_text(
    "trainer: {accelerator: cpu, precision: '${best_precision:cpu}'}\\n"
    "data: {eval_batch_size: '${on_gpu:${trainer.accelerator},512,64}'}\\n")
config = read_run_config(run_dir)
print(config["data"]["eval_batch_size"], config["trainer"]["precision"] in ("bf16-mixed", "32-true"))
"""


def test_an_older_run_is_read_with_its_read_only_resolvers_in_a_bare_process(tmp_path, bare_env):
    """aggregate and audit read a run recorded before run.json held its config without importing landslide.cli."""
    done = subprocess.run([sys.executable, "-c", READ_OLD_RUN, str(tmp_path / "run")], env=bare_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["64", "True"]
