"""Smoke tests of the accuracy benchmark at its tiny size (figures are printed, never asserted)."""

import importlib.util
import json

import pandas as pd
import pytest

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("accuracy", REPO / "benchmarks" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow  # the benchmark end to end: a family, both baselines and a 3-fold run
def test_the_tiny_size_runs_a_family_end_to_end(tmp_path, capsys):
    bench = _bench()
    work = tmp_path / "work"
    result = bench.main(["--size", "tiny", "--families", "small", "--n-train", "100", "--n-test", "40", "--keep",
                         str(work), "--json", str(tmp_path / "accuracy.json")])
    saved = json.loads((tmp_path / "accuracy.json").read_text())
    assert saved["n_train"] == 100 and list(saved["families"]) == ["small"]
    family = saved["families"]["small"]
    for figures in (family["stats"], family["plain"], family["networks"]["default"]):
        assert 0 <= figures["f1"] <= 1 and 0 <= figures["auc"] <= 1 and figures["seconds"] > 0
    default = result["families"]["small"]["networks"]["default"]
    truth = pd.read_csv(work / "small_truth" / "test_labels.csv")
    assert default["positives"] == default["single_model"]["positives"] == truth.label.sum() > 0
    assert (work / "runs" / "small" / "default" / "run" / "cv_summary.json").is_file()
    table = capsys.readouterr().out
    assert "| family | statistics+XGBoost | plain CNN (loop) | default |" in table and "| small | " in table


@pytest.mark.slow
def test_accuracy_benchmark_compares_networks_and_variants_on_several_families(tmp_path):
    result = _bench().main(["--size", "tiny", "--families", "realistic,cloud", "--models", "default,fusion_cnn",
                            "--baselines", "stats", "--variant", "low_lr", "model.optimizer.lr=0.0005"])
    for family in ("realistic", "cloud"):
        runs = result["families"][family]["networks"]
        assert set(runs) == {"default", "fusion_cnn", "low_lr"} and "plain" not in result["families"][family]
        assert "model=fusion_cnn" in runs["fusion_cnn"]["overrides"]
        assert "model.optimizer.lr=0.0005" in runs["low_lr"]["overrides"]


def test_unknown_families_are_refused():
    with pytest.raises(SystemExit):
        _bench().main(["--families", "small,nope"])


def test_a_screening_fold_trains_that_fold_alone(tmp_path, capsys):
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--size", "tiny", "--fold", "2"])  # the tiny size has folds 0 and 1
    result = bench.main(["--size", "tiny", "--families", "small", "--n-train", "60", "--n-test", "20", "--models",
                         "none", "--baselines", "plain", "--fold", "1"])
    assert result["only_fold"] == 1 and 0 <= result["families"]["small"]["plain"]["f1"] <= 1
    assert "fold 1 of 2 x 1 epochs" in capsys.readouterr().out


@pytest.mark.slow
def test_temporary_folder_is_removed_when_the_run_fails(tmp_path, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "work"))
    with pytest.raises(SystemExit):
        bench.main(["--size", "tiny", "--families", "small", "--baselines", "none", "trainer.max_epochs=not_a_number"])
    assert not (tmp_path / "work").exists()


def test_filter_figures_per_fold_use_the_clean_labels(tmp_path):
    bench = _bench()
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


@pytest.mark.slow  # the benchmark end to end (the rules themselves are tested in test_filter.py)
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
