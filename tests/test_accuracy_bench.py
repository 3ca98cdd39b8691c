"""A smoke test of the accuracy benchmark at its tiny size (figures are printed, never asserted)."""

import importlib.util
import json

import pandas as pd
import pytest

from conftest import REPO


@pytest.mark.slow
def test_accuracy_benchmark_scores_pipeline_and_baseline_on_clean_labels(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("accuracy", REPO / "benchmarks" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    work = tmp_path / "work"
    result = bench.main(["--size", "tiny", "--keep", str(work), "--json", str(tmp_path / "accuracy.json")])
    saved = json.loads((tmp_path / "accuracy.json").read_text())
    assert saved["n_train"] == 160 and 0 <= saved["baseline"]["f1"] <= 1 and 0 <= saved["pipeline"]["f1"] <= 1
    assert saved["pipeline"]["positives"] == result["single_model"]["positives"] > 0
    assert (work / "realistic_truth" / "test_labels.csv").is_file() and (work / "run" / "cv_summary.json").is_file()
    assert "statistics + XGBoost baseline" in capsys.readouterr().out


@pytest.mark.slow
def test_temporary_folder_is_removed_when_the_run_fails(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("accuracy", REPO / "benchmarks" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "work"))
    with pytest.raises(SystemExit):
        bench.main(["--size", "tiny", "trainer.max_epochs=not_a_number"])
    assert not (tmp_path / "work").exists()


def test_filter_figures_per_fold_use_the_clean_labels(tmp_path):
    spec = importlib.util.spec_from_file_location("accuracy", REPO / "benchmarks" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run_dir, root = tmp_path / "run", tmp_path / "realistic"
    run_dir.mkdir()
    truth = bench.truth_dir(root)
    truth.mkdir(parents=True)
    # fold 0: a wrong "positive" label on a filtered negative is no loss; fold 1 loses one true positive
    pd.DataFrame({"ID": list("abcdef"), "label": [1, 1, 0, 1, 0, 0], "prob": 0.5,
                  "filtered": [True, False, True, True, False, False], "fold": [0, 0, 0, 1, 1, 1]}
                 ).to_csv(run_dir / "oof_predictions.csv", index=False)
    pd.DataFrame({"ID": list("abcdef"), "label": [1, 1, 0, 1, 0, 0], "true_label": [0, 1, 0, 1, 0, 0],
                  "kind": "x"}).to_csv(truth / "train_truth.csv", index=False)
    assert bench.filter_by_fold(run_dir, root) == [
        {"fold": 0, "negatives_filtered": 1.0, "positives_lost": 0, "positives": 1},
        {"fold": 1, "negatives_filtered": 0.0, "positives_lost": 1, "positives": 1},
    ]
    # fold 1's filter, fitted on rows a, b, c (two labelled positive, one of them wrong), estimated a quarter wrong
    (run_dir / "folds" / "fold_1").mkdir(parents=True)
    (run_dir / "folds" / "fold_1" / "filter.json").write_text(json.dumps(
        {"fitted_on": [0, 1, 2], "calibration": {"estimated_noise_share": 0.25}}))
    rows = bench.filter_by_fold(run_dir, root)
    assert rows[1]["noise_share_estimated"] == 0.25 and rows[1]["noise_share_true"] == 0.5
    assert "wrong positive labels 25.0% estimated (50.0%)" in bench.filter_line(rows)


def test_filter_rule_benchmark_scores_each_rule_on_the_clean_labels(tmp_path):
    from landslide.synth.release import generate_release

    spec = importlib.util.spec_from_file_location("filter_rule", REPO / "benchmarks" / "filter_rule.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = tmp_path / "noisy"
    generate_release(root, 150, 40, seed=2, workers=1, label_noise=0.04)
    rows = bench.main([str(root), "--folds", "2", "--rule", "lower quantile", "noise_quantile=0.2",
                       "--filter", "params.n_estimators=30 calibration_folds=3"])
    assert [r.split(" | ")[1] for r in rows] == ["default", "trust every label", "a fixed 5%", "lower quantile"]
    positives = int((pd.read_csv(root.with_name("noisy_truth") / "test_labels.csv").label == 1).sum())
    assert all(f"/{positives} |" in r for r in rows)  # lost of the clean test positives
    assert "(" in rows[0].split(" | ")[5] and rows[1].split(" | ")[5] == "-"  # estimated (true) for the default only
