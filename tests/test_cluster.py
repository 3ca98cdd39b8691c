"""Beyond one process: folds as separate jobs through Hydra's joblib launcher, merged by ``landslide.aggregate``;
the SLURM launcher config."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import entry
from conftest import seed_tiny_data
from landslide.training.aggregate import aggregate as merge
from wandb_records import read_runs

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

# one thread per process: joblib gives each worker cpu_count // n_jobs threads, and float sums follow the count
TINY = ("debug=tiny", "trainer.max_epochs=1", "cv.parallel_folds=1", "print_config=false")


def run(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return entry.run(*args, env=env, check=check)


def aggregate(*args: str | Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return run("-m", "landslide.aggregate", *map(str, args), env=env, check=check)


def refusal(done: subprocess.CompletedProcess) -> str:
    """The single error line of a refused command."""
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


# Hydra's basic launcher runs the jobs one after another in this process; joblib's run together in processes of
# their own, both starting on no data (one makes it and its cache, the other waits for them): under -m slow
@pytest.mark.parametrize("launcher", ["basic", pytest.param("joblib", marks=pytest.mark.slow)])
def test_folds_as_jobs_equal_the_single_run(launcher, bare_env, tiny_data, tmp_path, monkeypatch):
    env = {**bare_env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if launcher == "basic":
        seed_tiny_data(tiny_data, tmp_path)
    launch = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2") if launcher == "joblib" else ()
    single, sweep, merged = tmp_path / "single", tmp_path / "sweep", tmp_path / "merged"
    run("train.py", "-m", *TINY, "data.fold=0,1", *launch, f"hydra.sweep.dir={sweep}", "logger=many",
        "log_figures=true", env=env)
    run("train.py", *TINY, f"hydra.run.dir={single}", env=env)
    jobs = sorted(p.parent for p in sweep.glob("*/run.json"))
    assert len(jobs) == 2 and all((j / "folds" / f"fold_{k}" / "result.json").is_file() for k, j in enumerate(jobs))
    aggregate(*jobs, "--out", merged, env=env)

    a = pd.read_csv(single / "oof_predictions.csv").sort_values("ID").reset_index(drop=True)
    b = pd.read_csv(merged / "oof_predictions.csv").sort_values("ID").reset_index(drop=True)
    assert a[["ID", "label", "filtered", "fold"]].equals(b[["ID", "label", "filtered", "fold"]])
    assert (a["prob"] - b["prob"]).abs().max() <= 1e-6
    sa, sb = (json.loads((d / "cv_summary.json").read_text()) for d in (single, merged))
    assert sb["oof_f1"] == pytest.approx(sa["oof_f1"], abs=1e-9)
    assert [f["f1_at_threshold"] for f in sb["folds"]] == pytest.approx([f["f1_at_threshold"] for f in sa["folds"]])
    record = json.loads((merged / "run.json").read_text())
    assert record["defining"] == json.loads((single / "run.json").read_text())["defining"]
    assert [i["folds_trained"] for i in record["invocations"]] == [[0], [1]] and sb["invocations"] == 2
    assert sb["wall_seconds"] == pytest.approx(sum(i["wall_seconds"] for i in record["invocations"]), abs=0.02)
    assert sb["energy_wh"] == pytest.approx(sum(i["energy_wh"] for i in record["invocations"]), abs=1e-5)
    # the same summary: the jobs' phases added up to their wall times, the merged folder's size
    assert set(sb) == set(sa) and sum(sb["phases"].values()) == pytest.approx(sb["wall_seconds"], rel=0.02)
    assert "fold: null" in (merged / ".hydra" / "config.yaml").read_text()
    assert (merged / "csv" / "fold_1" / "metrics.csv").is_file()
    # the merged run has its own W&B run (job type cv) and TensorBoard session, and its figures, as a single run has
    (cv,) = [r for r in read_runs(merged / "wandb") if r.job_type == "cv"]
    assert cv.finished and cv.summary["oof_f1"] == pytest.approx(sb["oof_f1"]) and cv.summary["invocations"] == 2
    assert list((merged / "tensorboard" / "cv").glob("events.out.tfevents.*"))
    assert (merged / "figures" / "pr_curve.png").is_file()

    run("predict.py", f"run_dir={merged}", f"out={tmp_path / 'pred'}", env=env)
    assert (tmp_path / "pred" / "submission.csv").is_file()

    # the sweep folder stands for its jobs; an existing run is not overwritten
    assert "already holds a run" in refusal(aggregate(sweep, "--out", merged, env=env, check=False))
    # a missing, a duplicated or an unfinished fold, other settings: one line each, nothing written
    assert "fold(s) [1] of 2 missing" in refusal(aggregate(jobs[0], "--out", tmp_path / "m1", env=env, check=False))
    assert "fold 0 is in both" in refusal(aggregate(jobs[0], single, "--out", tmp_path / "m2", env=env, check=False))
    broken = tmp_path / "broken"
    shutil.copytree(jobs[1], broken)
    (broken / "folds" / "fold_1" / "result.json").unlink()
    line = refusal(aggregate(jobs[0], broken, "--out", tmp_path / "m3", env=env, check=False))
    assert "fold 1" in line and "unfinished" in line
    other = json.loads((jobs[1] / "run.json").read_text())
    other["defining"]["seed"] = 7
    (broken / "run.json").write_text(json.dumps(other))
    (broken / "folds" / "fold_1" / "result.json").write_text("{}")
    line = refusal(aggregate(jobs[0], broken, "--out", tmp_path / "m4", env=env, check=False))
    assert str(broken) in line and "seed 42 -> 7" in line
    # a fold result that lacks what the summary reads, or points outside the training images: the job's own file
    # named, before anything is written
    damaged = tmp_path / "damaged"
    shutil.copytree(jobs[1], damaged)
    result_path = damaged / "folds" / "fold_1" / "result.json"
    result = json.loads(result_path.read_text())
    fold0 = json.loads((jobs[0] / "folds" / "fold_0" / "result.json").read_text())
    for change, expected in ((lambda r: r["filter"]["val"].pop("n"), "filter figures"),
                             (lambda r: r["oof"]["index"].append(10**6), "oof.index"),
                             (lambda r: r["oof"]["prob"].pop(), "oof.prob is not a list of probabilities as long"),
                             (lambda r: r["oof"]["prob"].__setitem__(0, float("nan")), "oof.prob"),
                             (lambda r: r["oof"]["keep"].__setitem__(0, "no"), "oof.keep"),
                             (lambda r: r.__setitem__("epochs", 1.5), "epochs (a whole number)"),
                             (lambda r: r.pop("wall_seconds"), "wall_seconds"),
                             (lambda r: r["oof"].__setitem__("index", fold0["oof"]["index"][:len(r["oof"]["index"])]),
                              "that " + str(jobs[0] / "folds" / "fold_0" / "result.json") + " validates too")):
        broken_result = json.loads(json.dumps(result))
        change(broken_result)
        result_path.write_text(json.dumps(broken_result))
        line = refusal(aggregate(jobs[0], damaged, "--out", tmp_path / "m5", env=env, check=False))
        assert f"] {result_path}: " in line and expected in line, line
    # an --out that holds other files is not written into
    (tmp_path / "m6").mkdir()
    (tmp_path / "m6" / "notes.txt").write_text("mine")
    assert "is not empty" in refusal(aggregate(*jobs, "--out", tmp_path / "m6", env=env, check=False))
    assert [p.name for p in (tmp_path / "m6").iterdir()] == ["notes.txt"]
    assert not any((tmp_path / f"m{i}").exists() for i in range(1, 6))
    assert not list(tmp_path.glob(".m*.tmp-*"))  # no half-merged folder left beside them
    # an --out that is a symlink to an empty folder, or "." in an empty folder: the merged run lands in that folder
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    aggregate(*jobs, "--out", tmp_path / "link", env=env)
    assert (tmp_path / "empty" / "run.json").is_file() and (tmp_path / "link").is_symlink()
    (tmp_path / "here").mkdir()
    entry.run("-m", "landslide.aggregate", *map(str, jobs), "--out", ".", env=env, cwd=tmp_path / "here")
    assert (tmp_path / "here" / "cv_summary.json").is_file()
    # what an interrupted merge left: not taken for a job in a sweep folder, removed beside a new --out
    stale, beside, other = sweep / ".m8.tmp-999999", tmp_path / ".m8.tmp-999999", tmp_path / ".m9.tmp-999999"
    for folder in (stale, beside, other):
        shutil.copytree(jobs[0], folder)
    aggregate(sweep, "--out", tmp_path / "m8", env=env)
    assert (tmp_path / "m8" / "run.json").is_file() and stale.exists() and not beside.exists()
    assert other.exists()  # another output's (perhaps being written from another node): not this merge's to remove

    # a failure while the merged run is written leaves neither --out nor its temporary folder
    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("landslide.training.cv.write_oof", failing)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        merge(jobs, tmp_path / "m7")
    assert not (tmp_path / "m7").exists() and not list(tmp_path.glob(".m7.tmp-*"))


def test_slurm_launcher_composes_with_overrides(bare_env):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    done = run("train.py", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
               "hydra.launcher.timeout_min=30", "--cfg", "hydra", env=bare_env)
    launcher = done.stdout.split("\n  launcher:\n", 1)[1].split("\n  sweeper:", 1)[0]
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in launcher
    for line in ("partition: gpu", "gpus_per_node: 2", "timeout_min: 30", "cpus_per_task: 8", "mem_gb: 32"):
        assert f"    {line}\n" in launcher + "\n", launcher
