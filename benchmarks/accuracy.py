"""Accuracy benchmark on the realistic synthetic set: ``python benchmarks/accuracy.py [--size cpu|gpu]``.

In one run it generates the realistic set (wrong training labels included) in a temporary folder, fits a
statistics+XGBoost baseline (6 statistics of each of the 12 raw bands; threshold chosen out-of-fold on the noisy
training labels), trains the pipeline through ``train.py``, predicts the test set with ``predict.py`` (the
ensemble and, apart, fold 0's model alone) and scores everything against the clean test labels, which training
never reads. It prints the figures (and writes them as JSON with ``--json``); the temporary folder is removed
unless ``--keep`` names a folder to use instead. Extra arguments after ``--`` are passed to ``train.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from landslide.audit import filter_against_truth, filter_line
from landslide.metrics import f1_optimal_threshold
from landslide.synth.release import generate_release, truth_dir

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    # about 10 minutes on 2 CPU cores: the default recipe, 3 folds (the default filter rule copes with the 2% wrong
    # labels)
    "cpu": {"n_train": 1200, "n_test": 600, "overrides": ["data.num_folds=3"]},
    # the GPU target: the fast recipe, 3 folds x 100 epochs
    "gpu": {"n_train": 3000, "n_test": 1000, "overrides": ["data.num_folds=3", "experiment=fast", "trainer=gpu"]},
    # the smoke test's size
    "tiny": {"n_train": 160, "n_test": 60, "overrides": [
        "data.num_folds=2", "trainer.max_epochs=1", "filter.calibration_folds=3", "filter.params.n_estimators=20"]},
}


def band_statistics(folder: Path, ids: list[str]) -> np.ndarray:
    """(n, 72): 6 statistics of each of the 12 raw bands of every patch."""
    rows = []
    for image_id in ids:
        x = np.load(folder / f"{image_id}.npy").reshape(-1, 12)
        q10, q90 = np.quantile(x, [0.1, 0.9], axis=0)
        rows.append(np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), q10, q90]))
    return np.asarray(rows)


def baseline(root: Path, truth: pd.DataFrame, seed: int) -> dict:
    """Statistics + XGBoost fitted on the (noisy) training labels, scored on the clean test labels."""
    train, test = pd.read_csv(root / "Train.csv"), pd.read_csv(root / "Test.csv")
    x_train = band_statistics(root / "train_data", list(train.ID))
    x_test = band_statistics(root / "test_data", list(test.ID))
    model = xgb.XGBClassifier(n_estimators=300, max_depth=4, learning_rate=0.05, n_jobs=2, random_state=seed)
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    oof = cross_val_predict(model, x_train, train.label, cv=folds, method="predict_proba")[:, 1]
    threshold, _ = f1_optimal_threshold(oof, train.label.to_numpy(copy=True))
    prob = model.fit(x_train, train.label).predict_proba(x_test)[:, 1]
    y = truth.set_index("ID").loc[test.ID, "label"].to_numpy()
    return {"f1": float(f1_score(y, prob >= threshold)), "auc": float(roc_auc_score(y, prob)),
            "threshold": float(threshold)}


def run(cmd: list[str], env: dict) -> float:
    """Run a command from the repository root; stop with its last lines if it fails; return its wall time."""
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({done.returncode}):\n{tail}")
    return time.perf_counter() - started


def score_predictions(folder: Path, truth: pd.DataFrame) -> dict:
    """F1 of ``submission.csv``, AUC of the probabilities, and the filter's figures on the clean test labels."""
    sub = pd.read_csv(folder / "submission.csv").merge(truth, on="ID", suffixes=("", "_true"))
    pred = pd.read_csv(folder / "predictions.csv").merge(truth, on="ID")
    positives, negatives = pred.label == 1, pred.label == 0
    return {
        "f1": float(f1_score(sub.label_true, sub.label)),
        "auc": float(roc_auc_score(pred.label, pred.prob)),
        "negatives_filtered": float(pred.filtered[negatives].mean()),
        "positives_filtered": int(pred.filtered[positives].sum()),
        "positives": int(positives.sum()),
    }


def filter_by_fold(run_dir: Path, root: Path) -> list[dict]:
    """Each fold's filter on its held-out part, scored with the clean labels (the run only knew the noisy ones): the
    share of true negatives it removed, the true positives it lost, the share of wrong positive labels its rule
    estimated and the true one (:func:`landslide.audit.filter_against_truth`)."""
    return filter_against_truth(run_dir, pd.read_csv(truth_dir(root) / "train_truth.csv"))


def single_model_run(run_dir: Path, out: Path) -> Path:
    """A run directory holding fold 0 only (its network, filter and threshold), for a single model's score."""
    out.mkdir(parents=True)
    shutil.copytree(run_dir / ".hydra", out / ".hydra")
    shutil.copy(run_dir / "run.json", out / "run.json")  # the config and prediction settings the run recorded
    shutil.copytree(run_dir / "folds" / "fold_0", out / "folds" / "fold_0")
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    summary["folds"] = [f for f in summary["folds"] if f["fold"] == 0]
    (out / "cv_summary.json").write_text(json.dumps(summary))
    return out


def benchmark(size: str, work: Path, seed: int, extra: list[str], n_train: int | None = None,
              n_test: int | None = None, baseline_only: bool = False) -> dict:
    spec = {**SIZES[size], **{k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v}}
    root, run_dir = work / "realistic", work / "run"
    env = {**os.environ, "LANDSLIDE_ROOT": str(work), "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}", "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline"}
    started = time.perf_counter()
    generate_release(root, spec["n_train"], spec["n_test"], seed=seed, difficulty="realistic", label_noise=0.02)
    truth = pd.read_csv(truth_dir(root) / "test_labels.csv")
    result: dict = {"size": size, "n_train": spec["n_train"], "n_test": spec["n_test"], "seed": seed,
                    "generate_seconds": round(time.perf_counter() - started, 1)}
    started = time.perf_counter()
    result["baseline"] = baseline(root, truth, seed)
    result["baseline"]["seconds"] = round(time.perf_counter() - started, 1)
    if baseline_only:
        return result
    overrides = ["data=realistic", f"data.root={root}", f"hydra.run.dir={run_dir}",  # the release generated above
                 "data.progress=false", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
                 "log_figures=false", *spec["overrides"], *extra]
    result["overrides"] = [overrides[0], *overrides[3:]]
    train_s = run([sys.executable, "train.py", *overrides], env)
    cv = json.loads((run_dir / "cv_summary.json").read_text())
    result["cv"] = {k: cv.get(k) for k in ("oof_f1", "oof_f1_at_0.5", "f1_mean", "network_oof_f1", "features_oof_f1",
                                           "negatives_filtered", "positives_lost", "positives_total", "epochs",
                                           "wall_seconds", "energy_wh")}
    result["train_seconds"] = round(train_s, 1)
    result["filter_by_fold"] = filter_by_fold(run_dir, root)
    predict_s = run([sys.executable, "predict.py", f"run_dir={run_dir}", f"out={work / 'pred'}"], env)
    result["pipeline"] = {**score_predictions(work / "pred", truth), "predict_seconds": round(predict_s, 1)}
    single = single_model_run(run_dir, work / "single")
    run([sys.executable, "predict.py", f"run_dir={single}", f"out={work / 'pred_single'}"], env)
    result["single_model"] = score_predictions(work / "pred_single", truth)
    return result


def report(result: dict) -> str:
    b = result["baseline"]
    head = [f"realistic set {result['n_train']} / {result['n_test']} (seed {result['seed']})",
            f"  statistics + XGBoost baseline   test F1 {b['f1']:.3f}  AUC {b['auc']:.3f}  ({b['seconds']:.0f} s)"]
    if "pipeline" not in result:
        return "\n".join(head)
    p, s, cv = result["pipeline"], result["single_model"], result["cv"]
    return "\n".join([
        *head, f"  train.py {' '.join(result['overrides'])}",
        f"  pipeline (ensemble + TTA)       test F1 {p['f1']:.3f}  AUC {p['auc']:.3f}  "
        f"(train {result['train_seconds']:.0f} s, predict {p['predict_seconds']:.0f} s)",
        f"  fold 0's model alone            test F1 {s['f1']:.3f}  AUC {s['auc']:.3f}",
        f"  out-of-fold F1 {cv['oof_f1']:.3f} (at 0.5: {cv['oof_f1_at_0.5']:.3f}), epochs {cv['epochs']}; training "
        f"energy {cv['energy_wh']:.2f} Wh (CodeCarbon)",
        f"  filter on the test set: {p['negatives_filtered']:.1%} of negatives removed, "
        f"{p['positives_filtered']} of {p['positives']} positives lost",
        "  " + filter_line(result["filter_by_fold"]),
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--n-train", type=int, default=None, help="instead of the size's")
    parser.add_argument("--n-test", type=int, default=None, help="instead of the size's")
    parser.add_argument("--baseline-only", action="store_true", help="generate and score the baseline only")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="landslide-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = benchmark(args.size, work, args.seed, args.overrides, args.n_train, args.n_test, args.baseline_only)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
