"""A smoke test of the throughput benchmark at CI size (figures are printed, never asserted against a time)."""

import importlib.util
import json
import os
import runpy
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO


def load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput", REPO / "benchmarks" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclass looks its module up
    spec.loader.exec_module(bench)
    return bench


@pytest.fixture()
def temp_root(tmp_path, monkeypatch):
    """Python's temporary folder for this test alone, so that what the benchmark leaves there can be seen."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def recording_work(bench, monkeypatch) -> list:
    """Record the work folder the benchmark measures in (and check it exists while it does)."""
    seen, benchmark = [], bench.benchmark

    def wrapper(args, work, allocator):
        seen.append(work)
        assert work.is_dir()
        return benchmark(args, work, allocator)

    monkeypatch.setattr(bench, "benchmark", wrapper)
    return seen


@pytest.mark.slow  # every path of the throughput benchmark, end to end
def test_bench_runs_and_reports_both_paths(tmp_path, capsys, temp_root, monkeypatch):
    bench = load_benchmark()
    seen = recording_work(bench, monkeypatch)
    result = bench.main(["--device", "cpu", "--n-train", "96", "--n-test", "32", "--seconds", "1", "--epochs", "2",
                         "--models", "2", "--compile", "false", "--bounds", "--stacked", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["reference_loop_images_per_s"] > 0 and saved["framework_images_per_s"] > 0
    ratio = saved["framework_images_per_s"] / saved["reference_loop_images_per_s"]
    assert saved["speedup"] == pytest.approx(ratio, rel=0.02)
    assert result["prediction_models"] == 2 and saved["n_train"] == 96 and saved["n_test"] == 32
    assert saved["bare_step_images_per_s"] > 0 and saved["host_allocator"] in ("tuned", "glibc default")
    assert saved["stacked_models"] == 2 and saved["stacked_step_images_per_s"] > 0
    assert saved["stacked_path_images_per_s"] > 0
    assert "framework_images_per_s" in capsys.readouterr().out
    # its data and cache were in a temporary folder, removed at the end
    assert len(seen) == 1 and seen[0].parent == temp_root and seen[0].name.startswith(bench.TEMP_PREFIX)
    assert not seen[0].exists() and not list(temp_root.glob(bench.TEMP_PREFIX + "*"))


def test_the_temporary_folder_is_removed_when_the_run_fails(tmp_path, temp_root, monkeypatch):
    bench = load_benchmark()
    seen = recording_work(bench, monkeypatch)

    def fail(cfg, reference_cfg, dm, *args):
        assert (dm.root / "Train.csv").is_file() and dm.root.parent == seen[0]  # data generated in the folder
        raise RuntimeError("stopped after the data")

    monkeypatch.setattr(bench, "measure_paths", fail)
    with pytest.raises(RuntimeError, match="stopped after the data"):
        bench.main(["--device", "cpu", "--n-train", "96", "--n-test", "8", "--out", str(tmp_path / "out")])
    assert not seen[0].exists() and not list(temp_root.glob(bench.TEMP_PREFIX + "*"))
    assert not (tmp_path / "out" / "bench.json").exists()


def test_runs_from_the_source_checkout(monkeypatch, capsys):
    # as a script, in an interpreter of its own
    done = subprocess.run([sys.executable, "benchmarks/throughput.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--stacked K" in done.stdout and "Throughput and energy benchmark" in done.stdout
    # as a module of the checkout (python -m benchmarks.throughput), run here to spare a second interpreter
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["benchmarks.throughput", "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("benchmarks.throughput", run_name="__main__", alter_sys=True)
    assert stop.value.code == 0 and "--stacked K" in capsys.readouterr().out


def test_gpu_monitor_integrates_power_and_reports_nothing_without_a_gpu():
    import shutil

    from landslide.gpu_monitor import GpuMonitor

    monitor = GpuMonitor(interval=0.01)
    if shutil.which("nvidia-smi") is None:
        assert monitor.start().stop() == {}  # a CPU machine: the fields are absent, not zero
    monitor.samples = [(0.0, 50.0, 100.0), (36.0, 100.0, 300.0)]  # 36 s from 100 W to 300 W: 7,200 J
    summary = monitor.summary()
    assert summary["gpu_energy_wh"] == pytest.approx(2.0) and summary["gpu_util_mean_pct"] == 75.0
    assert summary["gpu_power_max_w"] == 300.0


@pytest.mark.slow
def test_the_full_recipe_says_where_its_seconds_went(tmp_path, tiny_release, capsys):
    """``--only-full``'s record of train.py: its phases, the launch included, and the exit after it add up to the
    command's wall, and the training steps' rate is train.py's own count of their images over their seconds."""
    bench = load_benchmark()
    out = tmp_path / "bench"
    bench.main(["--only-full", "--data-root", str(tiny_release), "--out", str(out), "--full-overrides", "debug=tiny",
                "trainer.max_epochs=3",
                f"data.cache_dir={tmp_path / 'cache'}"])
    result = json.loads((out / "bench.json").read_text())["full_recipe"]
    phases = result["phases"]
    assert phases["launch"] > 0 and {"startup", "filter", "first_step", "train_steps", "scoring"} <= set(phases)
    assert phases["exit"] >= 0  # after the run: Hydra's job end and the interpreter's exit
    assert sum(phases.values()) == pytest.approx(result["wall_s"], rel=0.02)
    assert 0 < result["train_steps_share"] < 1 and result["run_dir_mb"] > 0
    summary = json.loads((out / "full_recipe" / "cv_summary.json").read_text())
    assert result["train_step_images"] == summary["train_step_images"] > 0  # counted by train.py
    assert result["train_steps_images_per_s"] == pytest.approx(result["train_step_images"] / phases["train_steps"],
                                                               rel=1e-2)
    assert "where the" in capsys.readouterr().out


@pytest.mark.slow
def test_the_overheads_benchmark_times_each_cut(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("overheads", REPO / "benchmarks" / "overheads.py")
    overheads = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overheads)
    result = overheads.main(["--device", "cpu", "--small", "--repeats", "1", "--out", str(tmp_path / "o.json")])
    assert len(result) == 5 and all(row["old_s"] > 0 and row["new_s"] > 0 for row in result.values())
    assert json.loads((tmp_path / "o.json").read_text())["device"] == "cpu" and "old/new" in capsys.readouterr().out


@pytest.mark.slow  # the GPU suite at tiny sizes on the CPU, under a deadline that cuts its last steps
def test_the_gpu_suite_keeps_what_it_measured_before_its_deadline(tmp_path):
    out, deadline = tmp_path / "out", 150
    env = {**os.environ, "N_TRAIN": "160", "N_TEST": "60", "WORK": str(tmp_path / "work"), "RECIPE": "debug=tiny",
           "RECIPE_MIN": "10"}
    started = time.monotonic()
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out), str(deadline)], env=env,
                          capture_output=True, text=True)
    assert time.monotonic() - started < deadline + 30  # each step runs within what is left; none starts after
    log = (out / "suite.log").read_text()
    for name in ("generate", "stats", "full", "full_predict", "full_score"):
        assert f"== {name}: exit 0" in log
    # the loops (minutes on a CPU) do not fit what is left: cut or skipped, and the suite says so in its status
    # (exit 124: stopped by the deadline; 137: killed 5 s later, when it did not stop on SIGTERM)
    assert done.returncode == 1 and any(f"== loops: {end}" in log for end in ("skipped", "exit 124", "exit 137"))
    assert "not every step succeeded" in log
    with tarfile.open(out / "figures.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
        test = json.load(tar.extractfile("./full_test.json"))
    assert {"stats.json", "full.json", "full_cv_summary.json", "full_test.json"} <= names
    assert 0 <= test["f1"] <= 1 and len(test["filter_by_fold"]) == 2
    assert any((tmp_path / "work" / "cache").iterdir())  # caches in WORK, not in the checkout


@pytest.mark.parametrize("runs, said", [
    ("e100 experiment=fast trainer=gpu", "want NAME SCORE OVERRIDES"),  # the SCORE column forgotten
    ("../up 1 debug=tiny", "want NAME SCORE OVERRIDES"),
    ("cache 1 debug=tiny", "RUNS name 'cache' is taken"),  # the suite's own folder
    ("realistic_truth 0 debug=tiny", "RUNS name 'realistic_truth' is taken"),  # the release's clean labels
    ("b 0 debug=tiny\nb_pred 0 debug=tiny", "RUNS name 'b_pred' is taken"),  # b's predictions
    ("a 1 debug=tiny\na 0 debug=tiny", "RUNS name 'a' is taken"),
])
def test_the_gpu_suite_refuses_runs_it_cannot_keep_apart(tmp_path, runs, said):
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "60"],
                          env={**os.environ, "RUNS": runs, "WORK": str(tmp_path / "work")}, capture_output=True,
                          text=True)
    assert done.returncode == 2 and said in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_the_gpu_suite_refuses_a_deadline_that_is_not_a_number(tmp_path):
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "5.5"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "whole number" in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow  # two recipe runs of the user's own at tiny sizes on the CPU
def test_the_gpu_suite_runs_the_recipes_it_is_given(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "N_TRAIN": "160", "N_TEST": "60", "WORK": str(tmp_path / "work"), "RECIPE_MIN": "10",
           "STATS": "0", "LOOPS": "0", "RUNS": "one 1 debug=tiny\n\nplain 0 debug=tiny filter=none"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out), "400"], env=env,
                          capture_output=True, text=True)
    log = (out / "suite.log").read_text()
    assert done.returncode == 0, log
    for name in ("generate", "one", "one_predict", "one_score", "plain"):
        assert f"== {name}: exit 0" in log
    assert "== stats" not in log and "== loops" not in log and "== plain_predict" not in log
    with tarfile.open(out / "figures.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert names == {"", "one.json", "one_cv_summary.json", "one_test.json", "plain.json", "plain_cv_summary.json"}


def test_the_step_profile_times_each_variant(tmp_path, capsys):
    """The stacked training step's variants, uncompiled, at tiny sizes: each gives images/s or its error."""
    result = runpy.run_path(str(REPO / "benchmarks" / "step_profile.py"), run_name="step_profile")["main"](
        ["--device", "cpu", "--networks", "fusion_cnn", "--variants", "stacked_eager,single,unknown", "--folds", "2",
         "--batch", "4", "--seconds", "0.2", "--profile", "--json", str(tmp_path / "p.json")])
    runs = result["runs"]
    assert runs["fusion_cnn/stacked_eager"]["images_per_s"] > 0 and runs["fusion_cnn/single"]["images_per_s"] > 0
    assert runs["fusion_cnn/unknown"]["error"] == "ValueError: unknown variant unknown"
    profile = runs["fusion_cnn/stacked_eager"]["profile"]
    assert profile["wall_per_step_ms"] > 0 and profile["top"]
    assert json.loads((tmp_path / "p.json").read_text())["runs"].keys() == runs.keys()
    assert "fusion_cnn/single" in capsys.readouterr().out
