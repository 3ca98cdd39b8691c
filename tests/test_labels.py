"""Wrong labels: the run's features + XGBoost baseline, the label audit on generated data with planted flips, and a
retrain without the audited images (``data.exclude``) that resume cannot mix with another list."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import entry
from entry import one_error_line
from landslide.audit import check_options, precision_at_k, rank_label_issues, read_oof, read_truth, run_data
from landslide.data.exclude import read_exclusion
from landslide.errors import ConfigError, RunError
from landslide.metrics import f1_optimal_threshold
from landslide.synth.release import generate_release, truth_dir
from landslide.training.summary import baseline_line, features_baseline, print_baseline

TINY = ("debug=tiny", "trainer.max_epochs=2")


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A generated release with 5% planted wrong training labels, trained (2 folds, 2 epochs) and audited."""
    work = tmp_path_factory.mktemp("labels")
    root = work / "release"
    generate_release(root, 200, 40, seed=5, workers=1, label_noise=0.05)
    env = {**os.environ, "LANDSLIDE_ROOT": str(work), "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    run_dir = work / "run"
    entry.run("train.py", *TINY, f"data.root={root}", f"hydra.run.dir={run_dir}", env=env)
    return root, run_dir, env


def test_every_run_reports_the_features_baseline_beside_the_network(noisy_run):
    _, run_dir, _ = noisy_run
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    assert {"network_prob", "features_score"} <= set(oof.columns)
    # the baseline is the filter's own classifier, scored out of fold: recomputed from the written scores
    _, f1 = f1_optimal_threshold(oof["features_score"].to_numpy(copy=True), oof["label"].to_numpy(copy=True))
    assert summary["features_oof_f1"] == pytest.approx(f1, abs=1e-4)
    network_f1 = f1_optimal_threshold(oof["network_prob"].to_numpy(copy=True), oof["label"].to_numpy(copy=True))[1]
    assert summary["network_oof_f1"] == pytest.approx(network_f1, abs=1e-4)
    for key in ("oof_auc", "network_oof_auc", "features_oof_auc"):
        assert 0 <= summary[key] <= 1
    # the pipeline zeroes what the filter removed; the network alone does not
    filtered = oof["filtered"].to_numpy()
    assert (oof["prob"][filtered] == 0).all()
    assert np.allclose(oof["prob"][~filtered], oof["network_prob"][~filtered], atol=1e-5)
    # each fold's filter estimated the share of wrong positive labels of its training part
    for fold in summary["folds"]:
        assert 0 <= fold["filter"]["calibration"]["estimated_noise_share"] < 1


@pytest.mark.parametrize(("network", "warned"), [(0.70, False), (0.60, True)])
def test_a_network_that_does_not_beat_the_baseline_says_so(network, warned, caplog):
    summary = {"oof_f1": network, "oof_auc": 0.9, "network_oof_f1": network, "network_oof_auc": 0.9,
               "features_oof_f1": 0.65, "features_oof_auc": 0.85}
    with caplog.at_level(logging.INFO, logger="landslide.training.summary"):
        print_baseline(summary)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [f"out-of-fold F1 / AUC: pipeline {network:.4f} / 0.9000, network alone {network:.4f} / 0.9000, "
                     "features + XGBoost (the filter's model) 0.6500 / 0.8500"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned
    if warned:
        assert "does not beat the features + XGBoost baseline" in warnings[0] and "0.6000" in warnings[0]


def test_label_ranking_puts_confidently_contradicted_labels_first():
    rng = np.random.default_rng(0)
    truth = (rng.random(400) < 0.2).astype(int)
    prob = np.clip(np.where(truth == 1, 0.85, 0.08) + rng.normal(0, 0.05, 400), 0.001, 0.999)
    given = truth.copy()
    planted = rng.choice(400, 12, replace=False)
    given[planted] = 1 - given[planted]
    scores, rows = rank_label_issues(given, prob, filter_by="prune_by_noise_rate", rank_by="self_confidence",
                                     top=None)
    assert set(rows) <= set(planted) and len(rows) >= 6  # the confident ones: only planted labels
    assert np.all(np.diff(scores[rows]) >= 0)  # most likely wrong first
    wrong = given != truth
    assert precision_at_k(wrong[np.argsort(scores)], 12) == 1.0
    _, top = rank_label_issues(given, prob, filter_by="prune_by_noise_rate", rank_by="self_confidence", top=5)
    assert len(top) == 5 and set(top) <= set(planted)


def test_audit_ranks_the_planted_wrong_labels(noisy_run):
    root, run_dir, env = noisy_run
    out = run_dir / "audit_features"
    done = entry.run("-m", "landslide.audit", f"run_dir={run_dir}", "source=both", f"out={out}", env=env)
    issues = pd.read_csv(out / "label_issues.csv")
    assert list(issues.columns[:6]) == ["ID", "label", "suggested_label", "score", "rank", "fold"]
    assert (issues["suggested_label"] == 1 - issues["label"]).all() and issues["score"].is_monotonic_increasing
    truth = pd.read_csv(truth_dir(root) / "train_truth.csv").set_index("ID")
    assert (truth.loc[issues.ID, "label"].to_numpy() == issues["label"].to_numpy()).all()
    summary = json.loads((out / "audit_summary.json").read_text())
    planted = int((truth["label"] != truth["true_label"]).sum())
    assert summary["audited"] == 200 and summary["truth"]["planted"] == planted == 10
    # far above chance (10 of 200 images: 0.05) even with a two-epoch network and 100 training images a fold
    assert summary["truth"]["precision_at_k"] >= 0.3
    assert (out / "label_issues.png").stat().st_size > 10_000
    assert "precision at k=10" in done.stdout + done.stderr


def test_retrain_without_listed_images_and_resume_refuses_another_list(noisy_run, tmp_path):
    root, _, env = noisy_run
    ids = pd.read_csv(root / "Train.csv")["ID"]
    listed = tmp_path / "exclude.csv"
    pd.DataFrame({"ID": ids[:7], "note": "x"}).to_csv(listed, index=False)
    run_dir = tmp_path / "retrain"
    args = ("debug=tiny", "trainer.max_epochs=1", "data.fold=0", f"data.root={root}", f"data.exclude={listed}",
            f"hydra.run.dir={run_dir}")
    entry.run("train.py", *args, env=env)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["excluded_ids"] == sorted(ids[:7])
    assert record["defining"]["exclude_list"]["count"] == 7
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    fitted = json.loads((run_dir / "folds" / "fold_0" / "filter.json").read_text())["fitted_on"]
    seen = set(oof["ID"]) | {ids[i] for i in fitted}
    assert not seen & set(ids[:7]) and len(seen) == len(ids) - 7  # in no fold, every other image in one

    # the same file name with another list: the run stops with one line and is left as it was
    before = (run_dir / "run.json").read_bytes()
    pd.DataFrame({"ID": ids[:8]}).to_csv(listed, index=False)
    line = one_error_line(entry.run("train.py", *args, env=env, check=False))
    assert "run.json: this run directory holds a run made with other settings" in line
    assert "exclude_list.count 7 -> 8" in line and "exclude_list.sha256" in line
    assert (run_dir / "run.json").read_bytes() == before


def test_an_exclusion_list_naming_unknown_images_stops_with_one_line(noisy_run, tmp_path):
    root, _, env = noisy_run
    listed = tmp_path / "exclude.csv"
    pd.DataFrame({"ID": ["ID_NOTHERE"]}).to_csv(listed, index=False)
    line = one_error_line(entry.run("train.py", "debug=tiny", "stage=filter", f"data.root={root}",
                                    f"data.exclude={listed}", f"hydra.run.dir={tmp_path / 'run'}", env=env,
                                    check=False))
    assert f"data.exclude={listed}: 1 ID(s) not in the training split" in line
    assert not (tmp_path / "run").exists()  # stopped before Hydra made the run folder


def test_audit_of_a_folder_without_out_of_fold_predictions_stops_before_writing(noisy_run, tmp_path):
    _, run_dir, env = noisy_run
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    line = one_error_line(entry.run("-m", "landslide.audit", f"run_dir={empty}", env=env, check=False))
    assert f"{empty / 'oof_predictions.csv'}: not found" in line and not (empty / "audit").exists()
    line = one_error_line(entry.run("-m", "landslide.audit", f"run_dir={run_dir}", "source=forest",
                                    f"out={tmp_path / 'audit'}", env=env, check=False))
    assert "source must be one of network, features, both, got 'forest'" in line
    assert not (tmp_path / "audit").exists()


def test_exclusion_lists_are_read_strictly(tmp_path):
    ids = ["A", "B", "C"]
    path = tmp_path / "list.csv"
    path.write_text("ID,label\nB,1\nA,0\nB,1\n")
    exclusion = read_exclusion(path, ids)
    assert exclusion.ids == ["A", "B"] and exclusion.rows.tolist() == [0, 1] and len(exclusion.sha256) == 64
    path.write_text("name\nA\n")
    with pytest.raises(ConfigError, match="no ID column"):
        read_exclusion(path, ids)
    with pytest.raises(ConfigError, match="file not found"):
        read_exclusion(tmp_path / "missing.csv", ids)


def test_an_exclusion_list_that_leaves_one_class_names_the_list(noisy_run, tmp_path):
    root, _, env = noisy_run
    train = pd.read_csv(root / "Train.csv")
    listed = tmp_path / "exclude.csv"
    train[train.label == 1][["ID"]].to_csv(listed, index=False)
    line = one_error_line(entry.run("train.py", "debug=tiny", "stage=filter", f"data.root={root}",
                                    f"data.exclude={listed}", f"hydra.run.dir={tmp_path / 'run'}", env=env,
                                    check=False))
    assert f"every label is 0 once data.exclude={listed} is left out" in line


def test_audit_options_and_files_out_of_range_stop_with_one_message(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    oof = run_dir / "oof_predictions.csv"
    oof.write_text("ID,label,prob,filtered,fold,network_prob\nA,1,0.9,False,0,0.9\nB,0,0.1,False,1,0.1\n")
    cleanlab_choices = {"filter_by": "prune_by_noise_rate", "rank_by": "self_confidence"}
    for options, choices, message in [
            ((0, 12), {}, "top must be null or an integer >= 1, got 0"),
            ((True, 12), {}, "top must be null or an integer >= 1, got True"),
            ((None, -1), {}, "figure_top must be an integer >= 0, got -1"),
            ((None, 12), {"rank_by": "x"}, "rank_by must be one of self_confidence, normalized_margin, "),
            ((None, 12), {"filter_by": "x"}, "filter_by must be one of prune_by_noise_rate, prune_by_class, ")]:
        with pytest.raises(ConfigError, match=message):
            check_options(run_dir, "both", *options, run_dir / "audit", **{**cleanlab_choices, **choices})
    assert read_oof(run_dir, "network")["p"].tolist() == [0.9, 0.1]
    with pytest.raises(RunError, match=r"no features_score for every image \(the run has no features classifier"):
        read_oof(run_dir, "both")  # a run trained with filter=none
    for text, message in [("", "cannot be read as CSV"), ("ID,prob\nA,0.3\n", "no label, fold column"),
                          ("ID,label,fold,network_prob\nA,2,0,0.5\n", "values other than 0 and 1")]:
        oof.write_text(text)
        with pytest.raises(RunError, match=message):
            read_oof(run_dir, "network")
    truth = tmp_path / "truth.csv"
    truth.write_text("ID,label\nA,1\n")
    with pytest.raises(ConfigError, match=f"truth={truth}: needs the columns ID and true_label"):
        read_truth(truth, pd.DataFrame({"ID": ["A"], "label": [1]}))


def test_the_baseline_line_without_a_features_classifier_or_a_network():
    # filter=none: no features classifier, so no baseline figures and no warning about it
    assert features_baseline([{"features_oof": None}, {"features_oof": None}], np.array([0, 1])) == {}
    assert baseline_line({"oof_f1": 0.7, "oof_auc": None, "network_oof_f1": 0.7, "network_oof_auc": None}) == \
        "out-of-fold F1 / AUC: pipeline 0.7000 / -, network alone 0.7000 / -"
    # stage=filter: the baseline alone
    scored = features_baseline([{"features_oof": {"index": [0, 1], "score": [0.2, 0.9]}},
                                {"features_oof": {"index": [2, 3], "score": [0.8, 0.1]}}], np.array([0, 1, 1, 0]))
    assert scored["features_oof_f1"] == 1.0 and scored["features_oof_auc"] == 1.0
    assert baseline_line(scored) == "out-of-fold F1 / AUC: features + XGBoost (the filter's model) 1.0000 / 1.0000"
    assert baseline_line({}) is None


def test_a_run_whose_config_cannot_be_read_is_audited_with_data_root(tmp_path):
    run_dir = tmp_path / "old_run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("data:\n  root: /r\npaths:\n  out: ${hydra:runtime.output_dir}\n")
    (run_dir / "run.json").write_text(json.dumps({"prediction": {"cloud_threshold": 0.4}}))
    with pytest.raises(RunError, match=r"uses resolver\(s\) \['hydra'\].*; data_root=<its release folder> audits it"):
        run_data(run_dir, None)
    assert run_data(run_dir, str(tmp_path / "release")) == (tmp_path / "release", 0.4)
