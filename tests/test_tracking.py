"""Loggers, energy and sweeps, run for real (W&B offline, CodeCarbon offline, Optuna on SQLite, TensorBoard event
files), each read back from the files they leave."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import entry
from conftest import REPO
from landslide.callbacks.energy import EnergyTracker
from wandb_records import read_runs

RUN_FIGURES = {"pr_curve", "confusion_matrix", "f1_per_epoch", "loss_per_epoch", "samples"}


def run_train(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return entry.run("train.py", *args, env=env, check=check)


def hparams_session(folder) -> tuple[dict, list[str], EventAccumulator]:
    """The HParams plugin's session in a TensorBoard run folder: its hyperparameters, its metric tags, the events."""
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    params, metrics = {}, []
    for raw in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.WhichOneof("data") == "session_start_info":
            for key, value in data.session_start_info.hparams.items():
                params[key] = value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        elif data.WhichOneof("data") == "experiment":
            metrics = [m.name.tag for m in data.experiment.metric_infos]
    return params, metrics, events


def test_every_logger_leaves_its_files(project_env, tmp_path):
    run_dir = tmp_path / "run"
    # logger=many: CSV, TensorBoard and W&B (offline) side by side in one fast-dev-run-sized job (fast_dev_run itself
    # replaces loggers with a dummy, so limit the batches instead); two epochs, so that curves have two points
    run_train(project_env, "debug=tiny", "logger=many", f"hydra.run.dir={run_dir}", "trainer.max_epochs=2",
              "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "log_figures=true",
              "logger.wandb.log_model=true")
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    metrics = pd.read_csv(run_dir / "csv" / "fold_0" / "metrics.csv")
    assert {"val/f1", "energy/wh", "train/loss"} <= set(metrics.columns)
    # the history keeps each epoch's training loss, as the CSV logger recorded it
    history = summary["folds"][0]["history"]
    logged = metrics.dropna(subset=["train/loss"]).set_index("epoch")["train/loss"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert [h["train/loss"] for h in history] == pytest.approx(list(logged.loc[[0, 1]]), rel=1e-6)

    # figures: each fold's PNGs (also sent to W&B and TensorBoard), the run's own in figures/
    for k in (0, 1):
        figures = {p.name for p in (run_dir / "folds" / f"fold_{k}" / "figures").glob("*.png")}
        assert figures == {"samples_validation_positive.png", "curves_val_f1.png"}
    assert {p.stem for p in (run_dir / "figures").glob("*.png")} == RUN_FIGURES
    assert all(list((run_dir / "tensorboard" / f"fold_{k}").glob("events.out.tfevents.*")) for k in (0, 1))

    # W&B: one run per fold and the run's own (job type cv), in one group
    runs = read_runs(run_dir / "wandb")
    assert len(runs) == 3 and all(r.finished for r in runs)
    (cv,) = [r for r in runs if r.job_type == "cv"]
    folds = sorted((r for r in runs if r.job_type != "cv"), key=lambda r: r.name)
    assert [r.name for r in folds] == ["final-fold0", "final-fold1"]
    assert {r.group for r in runs} == {(run_dir / "wandb_group").read_text()}
    assert (run_dir / "wandb_group").read_text().startswith("final-")
    assert [(run_dir / "folds" / f"fold_{k}" / "wandb_id").read_text() for k in (0, 1)] == [r.id for r in folds]
    assert all(len(list((r.folder / "files" / "media" / "images").rglob("*.png"))) == 2 for r in folds)  # grid, curve
    # the run's summary: the CV result, time, energy, filter figures
    assert cv.name == "final" and cv.id == (run_dir / "wandb_cv_id").read_text() and cv.config["name"] == "final"
    for key in ("oof_f1", "oof_threshold", "f1_mean", "f1_std", "energy_wh", "filtered_fraction", "positives_lost"):
        assert cv.summary[key] == pytest.approx(summary[key]), key
    # the wall time up to the loggers' turn: the summary on disk adds their own seconds afterwards
    assert 0 < cv.summary["wall_seconds"] <= summary["wall_seconds"]
    assert summary["wall_seconds"] - cv.summary["wall_seconds"] <= summary["phases"]["loggers"] + 1
    assert cv.summary["energy_wh"] > 0
    # its history: the mean curves over folds per epoch
    curve = [row for row in cv.history if "cv/val_f1" in row]
    assert [row["epoch"] for row in curve] == [1, 2]
    expected = [np.mean([f["history"][e]["val/f1"] for f in summary["folds"]]) for e in (0, 1)]
    assert [row["cv/val_f1"] for row in curve] == pytest.approx(expected)
    assert all("cv/train_loss" in row for row in curve)
    # tables and figures
    assert cv.summary["oof_predictions/_type"] == "table-file" and cv.summary["oof_predictions/nrows"] == len(oof)
    assert cv.summary["folds/nrows"] == 2
    assert {k.split("/")[1] for k in cv.summary if k.startswith("figures/")} == RUN_FIGURES
    assert len(list((cv.folder / "files" / "media" / "images").rglob("*.png"))) == len(RUN_FIGURES)
    # log_model: every fold's network and filter, with the run record, as one artifact of the run (none per fold)
    (model,) = [a for a in cv.artifacts.values() if a["type"] == "model"]
    assert {f"fold_{k}/{name}" for k in (0, 1) for name in ("model.ckpt", "filter.ubj", "filter.json")} \
        <= set(model["files"])
    assert {"run.json", "cv_summary.json"} <= set(model["files"])
    assert not any(a["type"] == "model" for r in folds for a in r.artifacts.values())

    # TensorBoard: the run as one HParams session, its settings beside its metrics
    params, tags, events = hparams_session(run_dir / "tensorboard" / "cv")
    assert params["name"] == "final" and params["choice.model"] == "fusion_cnn"
    assert params["model.net.head_units"] == 0 and params["data.num_folds"] == 2
    assert {"cv/oof_f1", "cv/energy_wh", "cv/f1_mean", "cv/wall_seconds"} <= set(tags)
    assert events.Scalars("cv/oof_f1")[0].value == pytest.approx(summary["oof_f1"], rel=1e-6)
    assert [s.step for s in events.Scalars("cv/val_f1")] == [1, 2]
    assert {f"figures/{name}" for name in RUN_FIGURES} == set(events.Tags()["images"])


def test_codecarbon_measures_non_zero_energy(tmp_path):
    with EnergyTracker(tmp_path, "test", country_iso_code="USA", measure_power_secs=1, enabled=True) as tracker:
        sum(i * i for i in range(2_000_000))
    assert tracker.wh > 0
    assert (tmp_path / "emissions.csv").is_file()


def studies(db) -> dict[str, list[str]]:
    """Each study of an Optuna storage by name, with the states of its trials."""
    with sqlite3.connect(db) as con:
        rows = con.execute("select s.study_name, t.state from studies s left join trials t using (study_id) "
                           "order by t.trial_id").fetchall()
    found: dict[str, list[str]] = {}
    for name, state in rows:
        found.setdefault(name, []).extend([state] if state else [])
    return found


def test_a_search_names_its_study_after_its_start_by_default():
    def names() -> tuple[str, str]:
        with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=["hparams_search=optuna", "experiment=only_sar"],
                          return_hydra_config=True)
        return cfg.hydra.sweeper.study_name, cfg.hydra.sweep.dir

    (first, sweep_dir), _ = names(), time.sleep(1.1)
    second, _ = names()
    assert re.fullmatch(r"landslide-only_sar-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", first) and first != second
    assert Path(sweep_dir).name.startswith(first.removeprefix("landslide-only_sar-"))  # the sweep folder's time


def test_optuna_search_records_its_trials_and_continues_a_named_study(project_env, tmp_path):
    db = tmp_path / "logs" / "optuna.db"
    search = ("-m", "hparams_search=optuna", "debug=tiny", "data.fold=0")
    first = run_train(project_env, *search, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'first'}",
                      "data.holdout_fraction=0.25")
    assert "no hold-out" not in first.stdout + first.stderr
    (name,) = studies(db)
    assert re.fullmatch(r"landslide-final-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", name)  # the sweep's time
    assert studies(db)[name] == ["COMPLETE", "COMPLETE"]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "first").rglob("cv_summary.json")]
    assert len(summaries) == 2 and all(s["holdout_n"] == 40 and "holdout_f1" in s for s in summaries)

    # the report names the trials by the parameters they were given, not both "final"
    report = entry.run("-m", "landslide.report", str(tmp_path / "first"), env=project_env)
    rows = [line for line in report.stdout.splitlines() if line.startswith("| final")]
    assert len(rows) == 2 and all(row.startswith("| final: head_units=") for row in rows)
    assert len(set(rows)) == 2

    # naming the study continues it; without a hold-out the search's first trial warns, in one line
    second = run_train(project_env, *search, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 'second'}",
                       f"hydra.sweeper.study_name={name}")
    assert (second.stdout + second.stderr).count("no hold-out (data.holdout_fraction=0)") == 1
    assert studies(db) == {name: ["COMPLETE"] * 3}
