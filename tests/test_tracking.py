"""Loggers, energy and sweeps, run for real (W&B offline, CodeCarbon offline, Optuna on SQLite)."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import entry
from landslide.callbacks.energy import EnergyTracker


def run_train(env: dict, *args: str) -> subprocess.CompletedProcess:
    return entry.run("train.py", *args, env=env)


def test_every_logger_leaves_its_files(project_env, tmp_path):
    run_dir = tmp_path / "run"
    # logger=many: CSV, TensorBoard and W&B (offline) side by side in one fast-dev-run-sized job (fast_dev_run itself
    # replaces loggers with a dummy, so limit the batches instead)
    run_train(project_env, "debug=tiny", "logger=many", f"hydra.run.dir={run_dir}",
              "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "log_figures=true")
    metrics = (run_dir / "csv" / "fold_0" / "metrics.csv").read_text()
    assert "val/f1" in metrics and "energy/wh" in metrics
    figures = {p.name for p in (run_dir / "folds" / "fold_0" / "figures").glob("*.png")}
    assert figures == {"samples_validation_positive.png", "curves_val_f1.png"}  # the CSV logger's PNG files
    assert all(list((run_dir / "tensorboard" / f"fold_{k}").glob("events.out.tfevents.*")) for k in (0, 1))
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one W&B run per fold, each finished
    assert all(list(r.glob("run-*.wandb")) for r in runs)
    assert all(len(list((r / "files" / "media" / "images").rglob("*.png"))) == 2 for r in runs)  # grid, curve
    assert (run_dir / "wandb_group").read_text().startswith("final-")
    ids = {(run_dir / "folds" / f"fold_{k}" / "wandb_id").read_text() for k in (0, 1)}
    assert all(any(i in r.name for r in runs) for i in ids)


def test_codecarbon_measures_non_zero_energy(tmp_path):
    with EnergyTracker(tmp_path, "test", country_iso_code="USA", measure_power_secs=1, enabled=True) as tracker:
        sum(i * i for i in range(2_000_000))
    assert tracker.wh > 0
    assert (tmp_path / "emissions.csv").is_file()


def test_optuna_sweep_records_its_trials(project_env, tmp_path):
    db = tmp_path / "logs" / "optuna.db"
    run_train(project_env, "-m", "hparams_search=optuna", "debug=tiny", "hydra.sweeper.n_trials=2",
              f"hydra.sweep.dir={tmp_path / 'sweep'}", "data.holdout_fraction=0.25")
    with sqlite3.connect(db) as con:
        states = [row[0] for row in con.execute("select state from trials")]
        values = con.execute("select count(*) from trial_values").fetchone()[0]
    assert states == ["COMPLETE", "COMPLETE"] and values == 2
    summaries = list((tmp_path / "sweep").rglob("cv_summary.json"))
    assert len(summaries) == 2
    summary = json.loads(summaries[0].read_text())
    assert summary["holdout_n"] == 40 and "holdout_f1" in summary
