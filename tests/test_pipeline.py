"""End to end through the entry points, as a user runs them (tiny data, 2 folds)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import entry


def run(script: str, *args: str, env: dict, check: bool = True, process: bool = False
        ) -> subprocess.CompletedProcess:
    return entry.run(script, *args, env=env, check=check, process=process)


def train(env: dict, run_dir: Path, *overrides: str, check: bool = True, process: bool = False
          ) -> subprocess.CompletedProcess:
    return run("train.py", "debug=tiny", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}", *overrides, env=env,
               check=check, process=process)


def test_train_then_predict(project_env, tmp_path):
    run_dir = tmp_path / "run"
    train(project_env, run_dir)
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    for key in ("f1_mean", "f1_std", "oof_f1", "oof_threshold", "filtered_fraction", "positives_lost", "folds",
                "wall_seconds", "energy_wh", "epochs"):
        assert key in summary
    assert summary["epochs"] == [2, 2] and len(summary["folds"]) == 2 and summary["energy_wh"] > 0
    assert "fold 2/2" in (run_dir / "train.log").read_text()  # the job's log stays in its run directory
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    train_ids = pd.read_csv(tmp_path / "data" / "tiny_easy" / "Train.csv")["ID"]
    assert sorted(oof["ID"]) == sorted(train_ids) and set(oof["fold"]) == {0, 1}
    for fold in (0, 1):  # each fold's filter was fitted on its training part only
        meta = json.loads((run_dir / "folds" / f"fold_{fold}" / "filter.json").read_text())
        val_ids = set(oof.loc[oof["fold"] == fold, "ID"])
        fitted = {train_ids[i] for i in meta["fitted_on"]}
        assert fitted and not fitted & val_ids and len(fitted) + len(val_ids) == len(train_ids)

    run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'pred'}", env=project_env)
    sub = pd.read_csv(tmp_path / "pred" / "submission.csv")
    test_ids = pd.read_csv(tmp_path / "data" / "tiny_easy" / "Test.csv")["ID"]
    assert sub["ID"].tolist() == test_ids.tolist()
    assert sub["label"].dtype.kind == "i" and set(sub["label"]) <= {0, 1}
    pred = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert {"ID", "prob", "std", "filtered", "fold_0", "fold_1"} <= set(pred.columns)
    assert (sub.loc[pred["filtered"], "label"] == 0).all()

    # the same seed on CPU gives identical predictions
    run("predict.py", f"run_dir={run_dir}", f"out={tmp_path / 'pred2'}", env=project_env)
    assert (tmp_path / "pred" / "predictions.csv").read_text() == (tmp_path / "pred2" / "predictions.csv").read_text()
    again = tmp_path / "again"  # fold 1 trained again: the same probabilities, to the last digit
    train(project_env, again, "data.fold=1")
    fold1 = pd.read_csv(run_dir / "oof_predictions.csv").query("fold == 1").reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_csv(again / "oof_predictions.csv"), fold1, check_exact=True)

    # a run missing a fold's checkpoint gives a clear error
    (run_dir / "folds" / "fold_1" / "model.ckpt").unlink()
    done = run("predict.py", f"run_dir={run_dir}", env=project_env, check=False)
    assert done.returncode == 2 and "fold_1/model.ckpt: missing" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_filter_stage_alone(project_env, tmp_path):
    run_dir = tmp_path / "filter_only"
    run("train.py", "debug=tiny", "stage=filter", f"hydra.run.dir={run_dir}", env=project_env)
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    assert summary["stage"] == "filter" and summary["oof_f1"] is None
    assert not (run_dir / "folds" / "fold_0" / "model.ckpt").exists()
    assert (run_dir / "folds" / "fold_0" / "filter.ubj").is_file()


def test_resume_skips_finished_folds(project_env, tmp_path):
    run_dir = tmp_path / "resumable"
    train(project_env, run_dir, "data.fold=0")
    done0 = run_dir / "folds" / "fold_0" / "result.json"
    stamp = done0.stat().st_mtime_ns
    assert not (run_dir / "folds" / "fold_1").exists()
    out = train(project_env, run_dir)
    assert "fold 0 already finished" in out.stdout + out.stderr
    assert done0.stat().st_mtime_ns == stamp
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    assert summary["folds_run"] == [0, 1]
    # time and energy add up over the two invocations that made the run
    invocations = json.loads((run_dir / "run.json").read_text())["invocations"]
    assert [i["folds_trained"] for i in invocations] == [[0], [1]] and summary["invocations"] == 2
    assert summary["wall_seconds"] == pytest.approx(sum(i["wall_seconds"] for i in invocations), abs=0.02)
    assert summary["wall_seconds"] > invocations[-1]["wall_seconds"]
    assert summary["energy_wh"] == pytest.approx(sum(i["energy_wh"] for i in invocations), abs=1e-5)


def test_bad_release_stops_with_one_line_naming_the_file(bare_env, tmp_path):
    import numpy as np

    from landslide.synth.release import generate_release

    root = tmp_path / "bad"
    generate_release(root, 20, 4, seed=0, workers=1)
    victim = sorted((root / "train_data").glob("*.npy"))[0]
    np.save(victim, np.zeros((64, 64, 11)))
    done = run("train.py", "debug=tiny", f"data.root={root}", env=bare_env, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output
    lines = [line for line in output.splitlines() if str(victim) in line]
    assert len(lines) == 1 and "(64, 64, 11)" in lines[0]


@pytest.mark.slow
def test_default_main_job(project_env, tmp_path):
    """The README's main job on the embedded data (minutes on 2 cores)."""
    run("train.py", f"hydra.run.dir={tmp_path / 'main'}", env=project_env)
    assert json.loads((tmp_path / "main" / "cv_summary.json").read_text())["oof_f1"] > 0.5


def test_submission_refuses_missing_or_duplicated_ids(tmp_path):
    from landslide.inference.ensemble import write_submission

    expected = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"1 missing ID\(s\) \['c'\]"):
        write_submission(tmp_path / "s.csv", ["a", "b"], [0, 1], expected)
    with pytest.raises(ValueError, match=r"1 duplicated \['b'\]"):
        write_submission(tmp_path / "s.csv", ["a", "b", "b", "c"], [0, 1, 1, 0], expected)
    assert not (tmp_path / "s.csv").exists()
    write_submission(tmp_path / "s.csv", expected, [0, 1, 0], expected)
    assert (tmp_path / "s.csv").read_text().splitlines() == ["ID,label", "a,0", "b,1", "c,0"]


def test_fine_tuning_and_best_epoch_selection(project_env, tmp_path):
    first = tmp_path / "first"
    out = train(project_env, first, "data.fold=0", "epoch_selection=best")
    assert "optimistically biased" in out.stdout + out.stderr
    result = json.loads((first / "folds" / "fold_0" / "result.json").read_text())
    assert result["epoch_selection"] == "best"
    weights = first / "folds" / "fold_0" / "model.ckpt"
    out = train(project_env, tmp_path / "tuned", "data.fold=1", f"init_weights={weights}")
    assert "fold 1 starts from the weights of" in out.stdout + out.stderr
    bad = train(project_env, tmp_path / "bad", "data.fold=1", "model=mm_cnn", f"init_weights={weights}", check=False)
    assert bad.returncode != 0 and "does not fit this model" in bad.stdout + bad.stderr
