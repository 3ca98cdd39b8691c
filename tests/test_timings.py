"""Every second of a run accounted for (phase timings), and the overheads cut behind config keys leave the results
as they were: validation every N epochs, statistics on the resident tensor, one augmentation gather, filters fitted
in parallel, checkpoints only where something reads them, the run's logs as wide as its table."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_precision_recall_curve,
    binary_recall,
)

import entry
from conftest import REPO, data_settings, env_for, seed_tiny_data
from landslide import cli
from landslide.callbacks.phases import TRAIN_STEP_IMAGES, FitPhases, batch_images
from landslide.checkpoint import load_module
from landslide.data.augment import BatchAugment
from landslide.data.datamodule import LandslideDataModule
from landslide.data.preprocess import channel_stats, resident_channel_stats, to_channels
from landslide.features import compute_features
from landslide.metrics import binary_scores
from landslide.synth.easy import generate_batch
from landslide.timing import OTHER, PhaseTimer, add_phases, phase, process_age, timed
from landslide.training.fold import build_callbacks, fit_filters
from landslide.training.loggers import EARLIER_METRICS, _restore_metrics

TINY = ("debug=tiny", "print_config=false")


def compose_train(*overrides: str):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


# ------------------------------------------------------------------ the timer
class Clock:
    """A clock that moves only when told: the timer's attribution, free of the machine's load."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_phases_are_exclusive_and_add_up_to_the_wall():
    clock = Clock()
    timer = PhaseTimer(clock=clock)
    with timer.activate():
        clock.sleep(2)  # other
        with phase("outer"):
            clock.sleep(3)
            with phase("inner"):
                clock.sleep(5)
            worker = threading.Thread(target=lambda: timer.start("from a thread"))  # ignored: not the owner
            worker.start()
            worker.join()
            clock.sleep(1)
        for _ in timed("reading", iter([1, 2])):
            clock.sleep(7)  # the loop body is not reading
        with phase("left open"):
            timer.start("inner")  # a phase left open inside another closes with it
            clock.sleep(1)
        timer.count("images", 32)
        timer.count("images", 8)
        worker = threading.Thread(target=lambda: timer.count("images", 1000))  # ignored: not the owner
        worker.start()
        worker.join()
    assert timer.report() == {"wall_seconds": 26.0,
                              "phases": {"outer": 4.0, "inner": 6.0, "reading": 0.0, "left open": 0.0, OTHER: 16.0},
                              "counts": {"images": 40}}
    with phase("nothing active"):  # a library call without a timer records nothing
        pass
    assert add_phases({"a": 1.0, OTHER: 2.0}, {"b": 0.5, "a": 1.0}) == {"a": 2.0, "b": 0.5, OTHER: 2.0}


def test_gpu_samples_are_placed_in_the_phase_that_ran_when_they_were_taken():
    """The timer's timeline (each stretch's end and phase, in order, a phase switched to itself one stretch) places
    the GPU's samples: utilisation, power and energy per phase, printed beside the seconds."""
    from landslide.cv_results import summary_metrics
    from landslide.gpu_monitor import GpuMonitor, by_phase
    from landslide.training.cv import gpu_report
    from landslide.training.summary import render, time_table

    clock = Clock()
    timer = PhaseTimer(clock=clock)
    with timer.activate():
        clock.sleep(2)  # other: 100-102
        with phase("filter"):
            clock.sleep(4)  # 102-106
        with phase("train_steps"):
            clock.sleep(3)  # 106-109
            with phase("validation"):
                clock.sleep(1)  # 109-110
            clock.sleep(2)  # 110-112
        timer.start("train_steps")
        timer.stop("train_steps")  # an empty stretch: nothing to place
        clock.sleep(1)  # other: 112-113
    assert timer.timeline == [(102.0, OTHER), (106.0, "filter"), (109.0, "train_steps"), (110.0, "validation"),
                              (112.0, "train_steps")]
    # a sample every second from 100.5, each the average of the second before it: (time, utilisation %, power W);
    # the GPU busy from 106 to 112 (training steps and validation), idle before
    def busy(t: float) -> bool:
        return 106 < t - 0.5 <= 112

    samples = [(t, 100.0 if busy(t) else 0.0, 500.0 if busy(t) else 100.0) for t in np.arange(100.5, 114.0, 1.0)]
    placed = by_phase(samples, timer.timeline, interval=1.0)  # the last sample (113.5) after the timeline: left out
    assert placed["train_steps"] == {"seconds": 5.0, "gpu_util_mean_pct": 100.0, "gpu_power_mean_w": 500.0,
                                     "gpu_energy_wh": round(5 * 500 / 3600, 4), "samples": 5}
    assert placed["filter"] == {"seconds": 4.0, "gpu_util_mean_pct": 0.0, "gpu_power_mean_w": 100.0,
                                "gpu_energy_wh": round(4 * 100 / 3600, 4), "samples": 4}
    assert placed[OTHER]["samples"] == 3 and placed["validation"]["gpu_util_mean_pct"] == 100.0
    assert sum(p["samples"] for p in placed.values()) == len(samples) - 1
    monitor = GpuMonitor(interval=1.0)
    monitor.samples = samples
    with timer.activate():
        report = gpu_report(monitor, timer)
    assert report["phases"]["train_steps"]["gpu_util_mean_pct"] == 100.0 and report["gpu_samples"] == 14
    table = render(time_table(timer.report()["phases"], 13.0, report["phases"]))
    assert "GPU util" in table and "100%" in table
    # on W&B and TensorBoard (the summary's numbers, flattened)
    assert summary_metrics({"gpu": report})["gpu/phases/train_steps/gpu_util_mean_pct"] == 100.0
    assert gpu_report(GpuMonitor(), timer) == {}  # nothing sampled (no GPU to read): nothing reported


def test_the_launch_before_a_timer_counts_in_its_wall_and_phases(monkeypatch):
    clock = Clock()
    timer = PhaseTimer(clock=clock)
    timer.add_before("launch", 4.5)
    timer.add_before("ignored", None)  # the system could not tell
    with timer.activate(), phase("work"):
        clock.sleep(2)
    assert timer.report()["wall_seconds"] == 6.5 and timer.report()["phases"] == {"launch": 4.5, "work": 2.0,
                                                                                  OTHER: 0.0}
    assert 0 < process_age() < 24 * 3600
    # a command counts the launch only when run as one (run_command), once a process: not in a session that ran
    # other things (this test session is not a command's process), not again in a multirun's later jobs
    assert not cli._started_for_a_command()
    monkeypatch.setattr(cli, "_launch_pending", True)
    assert "launch" not in cli.command_timer().seconds and not cli._launch_pending
    monkeypatch.setattr(cli, "_launch_pending", True)
    monkeypatch.setattr(cli, "_started_for_a_command", lambda: True)  # as in `python train.py`
    assert cli.command_timer().seconds["launch"] == pytest.approx(process_age(), abs=1.0)
    assert "launch" not in cli.command_timer().seconds


def test_a_command_skips_the_exit_collection_only_when_the_interpreter_exits(project_env):
    """A command's objects are moved out of the collector's reach at the interpreter's exit (atexit), so the exit
    does not walk them; a process that goes on (this test session, which runs commands in-process) keeps
    collecting until then."""
    import gc

    frozen = gc.get_freeze_count()
    entry.run("train.py", "--cfg", "job", env=project_env)  # run_command, in this process
    assert gc.get_freeze_count() == frozen
    # a handler registered before the command's runs after its (last in, first out): the objects are frozen by then
    script = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count())); "
              "sys.argv = ['train.py', '--cfg', 'job']; from landslide import cli; cli.train_entry(); "
              "print('before exit', gc.get_freeze_count())")
    done = entry.run("-c", script, env=project_env, process=True)
    assert "before exit 0" in done.stdout
    assert int(done.stdout.split("frozen")[-1]) > 10_000  # torch, Hydra and the config: far more than a few


def test_fit_phases_count_the_images_of_the_training_steps_after_the_first():
    """One fold's batches (n, c, h, w) and stacked folds' (folds, n, c, h, w): the first step's images go with its
    seconds to ``first_step``, the others are counted for ``train_steps``."""
    callback = FitPhases()
    for x, per_step in ((torch.zeros(32, 13, 8, 8), 32), (torch.zeros(10, 128, 13, 8, 8), 1280)):
        timer = PhaseTimer()
        with timer.activate():
            callback.on_train_start(None, None)
            for step in range(4):
                callback.on_train_batch_end(None, None, None, {"x": x, "y": torch.zeros(x.shape[:-3])}, step)
            callback.on_train_end(None, None)
        assert timer.report()["counts"] == {TRAIN_STEP_IMAGES: 3 * per_step}
        assert set(timer.report()["phases"]) >= {"first_step", "train_steps"}
    assert batch_images([torch.zeros(4, 13, 8, 8)]) == 0  # not a batch of images: nothing counted


# ------------------------------------------------------------------ results unchanged
def reference_scores(prob: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    t = target.int()
    precision, recall, thresholds = binary_precision_recall_curve(prob, t)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    best = torch.argmax(f1[:-1])
    return {"f1": binary_f1_score(prob, t), "precision": binary_precision(prob, t), "recall": binary_recall(prob, t),
            "auroc": binary_auroc(prob, t), "ap": binary_average_precision(prob, t), "f1_best": f1[best],
            "best_threshold": thresholds[best]}


def test_validation_scores_of_all_folds_at_once_are_torchmetrics_scores():
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        sizes = torch.randint(6, 50, (3,), generator=g)
        prob = torch.rand(3, int(sizes.max()), generator=g)
        if trial % 2:
            prob = (prob * 4).round() / 4  # ties
        prob[:, :4] *= torch.rand(3, 4, generator=g) > 0.5  # filtered images: 0
        target = (torch.rand(prob.shape, generator=g) < 0.3).float()
        target[:, 0], target[:, 1] = 1, 0
        valid = torch.arange(prob.shape[1])[None] < sizes[:, None]
        got = binary_scores(prob, target, valid)
        for k in range(3):
            expected = reference_scores(prob[k, : sizes[k]], target[k, : sizes[k]])
            for name, value in expected.items():
                assert float(got[name][k]) == pytest.approx(float(value), abs=1e-6), (trial, k, name)


def test_one_gather_augments_as_the_three_copies_did():
    x = torch.randn(40, 13, 64, 64)
    settings = {**data_settings()["augment"], "erase_p": 0.7}
    for fill in (None, torch.randn(40, 13)):
        outs = []
        for gather in (True, False):
            augment = BatchAugment(**{**settings, "dihedral_gather": gather})
            augment.set_fill(torch.arange(13.0))
            outs.append(augment(x, generator=torch.Generator().manual_seed(4), fill=fill))
        assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], x) and torch.equal(x, x.clone())  # the source is left as it was


def test_statistics_on_the_resident_tensor_equal_the_host_ones(tiny_release, tmp_path):
    dm = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(num_folds=3, progress=False))
    dm.prepare_data()
    dm.setup()
    tr, _ = dm.folds()[1]
    dm.set_fold(1, train_keep=np.arange(len(tr)) % 3 > 0)
    index = np.sort(dm.train_index)
    host = channel_stats(dm.gather("train", index).numpy(), dm.channels)
    # the device path (a GPU's resident copy in training), here on the host tensor, in chunks
    resident = resident_channel_stats(lambda rows: dm.gather("train", rows), index, dm.channels, chunk=7)
    np.testing.assert_allclose(resident, host, rtol=1e-12)
    # fitted once, when first needed, with the erasing fill set to the fold's means
    assert dm._stats is None and dm.norm_mean == host[0] and dm.norm_std == host[1]
    assert dm.augment.fill.tolist() == pytest.approx(host[0])


def test_filters_fitted_in_parallel_are_the_sequential_ones(tmp_path):
    raw, labels, _ = generate_batch(5, 240)
    feats = compute_features(to_channels(raw))
    labels = np.asarray(labels)
    order = np.random.default_rng(0).permutation(len(labels))
    parts = {k: (np.sort(np.setdiff1d(order, order[k::3])), np.sort(order[k::3])) for k in range(3)}
    fitted = {}
    for workers in (1, 3):
        cfg = compose_train(*TINY, f"cv.parallel_filters={workers}")
        fitted[workers] = fit_filters(cfg, feats, labels, parts, tmp_path / str(workers))
    for k in parts:
        one, three = fitted[1][k], fitted[3][k]
        for f in (one, three):
            f.report["calibration"].pop("fit_seconds")
        assert one.report == three.report and one.filt.threshold == three.filt.threshold
        assert np.array_equal(one.keep_val, three.keep_val) and np.array_equal(one.keep_train, three.keep_train)
        assert np.array_equal(one.filt.scores(feats), three.filt.scores(feats))


def test_training_results_are_unchanged_by_the_cheaper_paths(project_env, tmp_path):
    """Validation every 2 epochs (the last always), statistics on the resident tensor, one augmentation gather,
    filters in parallel and checkpoints written by a thread against the old ways: the same out-of-fold
    probabilities."""
    common = (*TINY, "trainer.max_epochs=3")
    new, old = tmp_path / "new", tmp_path / "old"
    entry.run("train.py", *common, "trainer.check_val_every_n_epoch=2", "cv.parallel_filters=2",
              "+trainer.plugins=[{_target_:lightning.pytorch.plugins.io.AsyncCheckpointIO}]",
              f"hydra.run.dir={new}", env=project_env)
    entry.run("train.py", *common, "data.stats_on_device=false", "data.augment.dihedral_gather=false",
              "cv.parallel_filters=1", "callbacks.keep_checkpoints=true", f"hydra.run.dir={old}", env=project_env)
    a, b = (pd.read_csv(d / "oof_predictions.csv") for d in (new, old))
    assert a["ID"].tolist() == b["ID"].tolist() and (a["filtered"] == b["filtered"]).all()
    assert np.abs(a["prob"] - b["prob"]).max() < 1e-4
    for fold in (0, 1):
        r_new, r_old = (json.loads((d / "folds" / f"fold_{fold}" / "result.json").read_text()) for d in (new, old))
        assert [h["epoch"] for h in r_new["history"] if "val/f1" in h] == [1, 2]  # every 2nd epoch and the last
        assert [h["epoch"] for h in r_old["history"] if "val/f1" in h] == [0, 1, 2]
        assert r_new["history"][-1]["val/f1"] == pytest.approx(r_old["history"][-1]["val/f1"], abs=1e-6)
        # checkpoints: only while a fold trains, unless kept; never the unread best epoch
        assert not (new / "folds" / f"fold_{fold}" / "checkpoints").exists()
        assert [p.name for p in (old / "folds" / f"fold_{fold}" / "checkpoints").iterdir()] == ["last.ckpt"]
        assert load_module(new / "folds" / f"fold_{fold}" / "model.ckpt").channels  # written whole by the thread


# ------------------------------------------------------------------ a run says where its time went
@pytest.fixture(scope="module")
def timed_run(tmp_path_factory, tiny_data) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("timed")
    seed_tiny_data(tiny_data, root)
    env = env_for(root)
    run_dir = root / "run"
    # a process of its own: its launch (the interpreter, imports, Hydra, the preflight) is part of its time
    entry.run("train.py", *TINY, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}", env=env, process=True)
    return run_dir, env


def test_the_phases_of_a_run_add_up_to_its_wall_time(timed_run):
    run_dir, _ = timed_run
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    phases, wall = summary["phases"], summary["wall_seconds"]
    expected = {"launch", "startup", "energy", "data", "features", "filter", "statistics", "setup", "lightning",
                "first_step", "train_steps", "validation", "checkpoints", "scoring", "loggers", "summary", OTHER}
    assert expected <= set(phases), set(phases) ^ expected
    assert sum(phases.values()) == pytest.approx(wall, rel=0.02)
    assert phases[OTHER] <= max(0.02 * wall, 0.1)  # next to nothing outside a named phase (a tiny run: 0.1 s)
    assert all(v >= 0 for v in phases.values()) and phases["train_steps"] > 0
    assert 1.0 < phases["launch"] < 0.7 * wall  # the interpreter, imports, Hydra and the preflight before the run
    record = json.loads((run_dir / "run.json").read_text())["invocations"][-1]
    assert record["phases"] == phases and record["wall_seconds"] == pytest.approx(wall, abs=0.01)
    # the training steps' images: each fold's epochs of round(kept / batch) batches of min(batch, kept) images (the
    # sampler's rule), its first batch (the first step's) not counted
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    images = 0
    for fold in summary["folds"]:
        train = fold["filter"]["train"]
        kept = round(train["n"] * (1 - train["filtered_fraction"]))
        batch = min(config["data"]["batch_size"], kept)
        images += (fold["epochs"] * max(1, round(kept / batch)) - 1) * batch
    assert summary["train_step_images"] == record["counts"]["train_step_images"] == images > 0
    assert summary["train_steps_images_per_s"] == pytest.approx(images / phases["train_steps"], rel=1e-2)


def test_the_log_holds_the_whole_table_and_the_result_line(timed_run):
    run_dir, _ = timed_run
    log = (run_dir / "train.log").read_text()
    header = next(line for line in log.splitlines() if "val positives lost" in line)
    assert "inner positives below (allowed)" in header and "F1 at 0.5" in header and "…" not in log
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    assert f"out-of-fold F1 {summary['oof_f1']:.4f}" in log and "where the" in log and "first_step" in log
    assert f"run folder {summary['run_dir_mb']:.1f} MB" in log


def test_a_finished_run_keeps_what_prediction_needs(timed_run, tmp_path):
    run_dir, env = timed_run
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.ckpt")) == [
        "folds/fold_0/model.ckpt", "folds/fold_1/model.ckpt"]
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 1e6
    assert json.loads((run_dir / "cv_summary.json").read_text())["run_dir_mb"] == pytest.approx(size, abs=0.2)

    entry.run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'pred'}", env=env)
    report = json.loads((tmp_path / "pred" / "predict_summary.json").read_text())
    assert {"startup", "load_run", "data", "features", "network", "filter", "write"} <= set(report["phases"])
    assert sum(report["phases"].values()) == pytest.approx(report["wall_seconds"], rel=0.02)


def test_the_monitored_checkpoint_is_built_only_for_best_epoch_selection(tmp_path):
    def checkpoints(*overrides: str) -> list[str | None]:
        return [c.monitor for c in build_callbacks(compose_train(*overrides), tmp_path)
                if type(c).__name__ == "ModelCheckpoint"]

    assert checkpoints() == [None]  # last.ckpt only
    assert checkpoints("epoch_selection=best") == ["val/f1_best", None]
    assert checkpoints("callbacks=none") == []


def test_a_resumed_fold_keeps_its_metric_rows_once(tmp_path):
    """The killed invocation logged epochs 0-3, its last checkpoint was after epoch 1: the rows of epochs 2 and 3
    are trained and logged again by the resumed one and kept once."""
    pd.DataFrame({"epoch": [0, 1, 2, 3, np.nan], "val/f1": [0.1, 0.2, 0.3, 0.4, np.nan],
                  "energy/wh": [np.nan] * 4 + [0.5]}).to_csv(tmp_path / EARLIER_METRICS, index=False)
    pd.DataFrame({"epoch": [2, 3, 4], "val/f1": [0.31, 0.41, 0.5]}).to_csv(tmp_path / "metrics.csv", index=False)
    _restore_metrics(tmp_path)
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert rows["epoch"].dropna().tolist() == [0, 1, 2, 3, 4] and rows["val/f1"].dropna().tolist()[2:] == [
        0.31, 0.41, 0.5]
    assert not (tmp_path / EARLIER_METRICS).exists() and rows["energy/wh"].notna().sum() == 1
