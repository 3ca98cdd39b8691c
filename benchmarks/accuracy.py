"""Accuracy benchmark over data families: ``python benchmarks/accuracy.py [--size cpu|release|gpu] [--families ...]
[--models ...]``.

For each family (:mod:`landslide.synth.families`: where the evidence of a landslide lies and how much of it there
is; 2% wrong training labels, clean test labels) it generates the release in a work folder, then, on the same
release and the same folds:

- fits a statistics+XGBoost baseline (6 statistics of each of the 12 raw bands; threshold chosen out-of-fold on the
  noisy training labels);
- trains a plain-CNN baseline with a short fixed loop (the ``PlainCNN`` of ``landslide.models.plain`` with batch
  norm, batch 64, Adam 1e-3, 5% warm-up and cosine, random flips and transposes, bf16 where fast, plain BCE; the
  same folds, one network per fold, no filter; all out-of-fold probabilities set one threshold; the fold networks
  are averaged over the 8 dihedral views on the test set);
- trains the pipeline through ``train.py`` for every network asked for (``--models``: model config names, or
  ``default`` for the default pipeline; ``--variant LABEL "OVERRIDES"`` adds a named set of overrides), predicts the
  test set with ``predict.py`` (the fold ensemble with TTA and filter; and its first fold's model alone) and scores
  it. ``--fold K`` screens on fold K alone (the networks and the plain CNN train that fold only).

Everything is scored on the clean test labels, which training never reads. It prints a table family x network (test
F1, AUC, wall) and writes every figure as JSON with ``--json``; the work folder is removed unless ``--keep`` names a
folder to use instead (a family already generated there is reused). Extra arguments after ``--`` go to every
``train.py`` run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xgboost as xgb
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from landslide.audit import filter_against_truth, filter_line
from landslide.bands import CHANNEL_NAMES
from landslide.data.augment import tta_views
from landslide.data.preprocess import channel_stats, to_channels
from landslide.hardware import bf16_supported
from landslide.metrics import f1_optimal_threshold
from landslide.models.plain import PlainCNN
from landslide.synth.families import FAMILY_NAMES, RELEASE_SIZE
from landslide.synth.release import generate_release, truth_dir

REPO = Path(__file__).resolve().parents[1]
SPLIT_SEED = 42  # configs/data/default.yaml's data.split_seed: the plain baseline uses the pipeline's folds
SIZES = {
    # 800 training images per fold: 3 folds x 40 epochs on 1,200 / 600 images (a few minutes a network and family
    # on 2 CPU cores); the default filter rule copes with the 2% wrong labels
    "cpu": {"n_train": 1200, "n_test": 600, "folds": 3, "epochs": 40, "overrides": []},
    # the release's size with the fast recipe (its 10 folds x 100 epochs), on whatever accelerator there is
    "release": {"n_train": RELEASE_SIZE[0], "n_test": RELEASE_SIZE[1], "folds": 10, "epochs": 100,
                "overrides": ["experiment=fast"]},
    # the same on a GPU
    "gpu": {"n_train": RELEASE_SIZE[0], "n_test": RELEASE_SIZE[1], "folds": 10, "epochs": 100,
            "overrides": ["experiment=fast", "trainer=gpu"]},
    # the smoke test's size
    "tiny": {"n_train": 160, "n_test": 60, "folds": 2, "epochs": 1,
             "overrides": ["filter.calibration_folds=3", "filter.params.n_estimators=20"]},
}
QUIET = ["data.progress=false", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "log_figures=false"]


# ---------------------------------------------------------------------------------------------------- baselines
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
    started = time.perf_counter()
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
            "threshold": float(threshold), "seconds": round(time.perf_counter() - started, 1)}


def read_channels(folder: Path, ids: list[str]) -> torch.Tensor:
    """(n, 13, 64, 64) float32 model channels of a split, as the pipeline's cache holds them."""
    return torch.from_numpy(to_channels(np.stack([np.load(folder / f"{i}.npy") for i in ids])))


def train_plain_cnn(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, device: torch.device,
                    batch: int = 64, lr: float = 1e-3, batch_norm: bool = True) -> PlainCNN:
    """The plain baseline's fixed loop on standardised images ``x`` (n, 13, 64, 64) and labels ``y``."""
    torch.manual_seed(seed)
    net = PlainCNN(CHANNEL_NAMES, batch_norm=batch_norm).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(x)
    total = epochs * math.ceil(n / batch)
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    bf16 = bf16_supported(device.type)
    x, y = x.to(device), y.float().to(device)
    for _ in range(epochs):
        for b in torch.randperm(n, device=device).split(batch):
            xb = x[b]
            coin = [(torch.rand(len(b), device=device) < 0.5).view(-1, 1, 1, 1) for _ in range(3)]
            xb = torch.where(coin[0], xb.flip(-1), xb)
            xb = torch.where(coin[1], xb.flip(-2), xb)
            xb = torch.where(coin[2], xb.transpose(-1, -2), xb)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(xb)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()


@torch.inference_mode()
def tta_probability(net: PlainCNN, x: torch.Tensor, device: torch.device, chunk: int = 256) -> np.ndarray:
    """Mean probability over the 8 dihedral views."""
    bf16 = bf16_supported(device.type)
    out = []
    for part in x.split(chunk):
        views = tta_views(part.to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(views.flatten(0, 1)).float()
        out.append(torch.sigmoid(logits).view(views.shape[0], -1).mean(0).cpu())
    return torch.cat(out).numpy()


def plain_cnn_baseline(root: Path, truth: pd.DataFrame, folds: int, epochs: int, seed: int,
                       only_fold: int | None = None) -> dict:
    """The plain CNN trained by :func:`train_plain_cnn` on each fold of the pipeline's split (noisy labels; no
    filter), one threshold from all out-of-fold probabilities, the fold networks averaged on the test set. With
    ``only_fold``, that fold alone: its network, its threshold from its validation part."""
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train, test = pd.read_csv(root / "Train.csv"), pd.read_csv(root / "Test.csv")
    x, x_test = read_channels(root / "train_data", list(train.ID)), read_channels(root / "test_data", list(test.ID))
    y = train.label.to_numpy(copy=True)
    oof, test_prob = np.zeros(len(y)), np.zeros(len(test))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=SPLIT_SEED)
    scored = np.zeros(len(y), bool)
    trained = 1 if only_fold is not None else folds
    for fold, (tr, va) in enumerate(splitter.split(np.zeros(len(y)), y)):
        if only_fold is not None and fold != only_fold:
            continue
        scored[va] = True
        mean, std = channel_stats(x[np.sort(tr)].numpy(), CHANNEL_NAMES)
        mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        net = train_plain_cnn((x[tr] - mean) / std, torch.from_numpy(y[tr]), epochs, seed + fold, device)
        oof[va] = tta_probability(net, (x[va] - mean) / std, device)
        test_prob += tta_probability(net, (x_test - mean) / std, device) / trained
    threshold, oof_f1 = f1_optimal_threshold(oof[scored], y[scored])
    clean = truth.set_index("ID").loc[test.ID, "label"].to_numpy()
    return {"f1": float(f1_score(clean, test_prob >= threshold)), "auc": float(roc_auc_score(clean, test_prob)),
            "oof_f1": round(oof_f1, 4), "threshold": round(threshold, 4),
            "seconds": round(time.perf_counter() - started, 1)}


# ---------------------------------------------------------------------------------------------------- the pipeline
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
    """A run directory holding its first fold only (its network, filter and threshold), for a single model's
    score."""
    out.mkdir(parents=True)
    shutil.copytree(run_dir / ".hydra", out / ".hydra")
    shutil.copy(run_dir / "run.json", out / "run.json")  # the config and prediction settings the run recorded
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    first = min(f["fold"] for f in summary["folds"])
    shutil.copytree(run_dir / "folds" / f"fold_{first}", out / "folds" / f"fold_{first}")
    summary["folds"] = [f for f in summary["folds"] if f["fold"] == first]
    (out / "cv_summary.json").write_text(json.dumps(summary))
    return out


def pipeline(root: Path, truth: pd.DataFrame, work: Path, overrides: list[str], env: dict) -> dict:
    """Train the pipeline on ``root`` with ``overrides``, predict its test set, score both on the clean labels."""
    run_dir = work / "run"
    for old in (run_dir, work / "pred", work / "single", work / "pred_single"):
        shutil.rmtree(old, ignore_errors=True)
    train_s = run([sys.executable, "train.py", f"data.root={root}", f"hydra.run.dir={run_dir}", *QUIET, *overrides],
                  env)
    cv = json.loads((run_dir / "cv_summary.json").read_text())
    predict_s = run([sys.executable, "predict.py", f"run_dir={run_dir}", f"out={work / 'pred'}"], env)
    single = single_model_run(run_dir, work / "single")
    run([sys.executable, "predict.py", f"run_dir={single}", f"out={work / 'pred_single'}"], env)
    return {
        **score_predictions(work / "pred", truth),
        "overrides": overrides,
        "train_seconds": round(train_s, 1),
        "predict_seconds": round(predict_s, 1),
        "seconds": round(train_s + predict_s, 1),
        "cv": {k: cv.get(k) for k in ("oof_f1", "oof_f1_at_0.5", "f1_mean", "network_oof_f1", "features_oof_f1",
                                      "negatives_filtered", "positives_lost", "positives_total", "epochs",
                                      "wall_seconds", "energy_wh")},
        "single_model": score_predictions(work / "pred_single", truth),
        "filter_by_fold": filter_by_fold(run_dir, root),
    }


# ---------------------------------------------------------------------------------------------------- the table
def networks(models: list[str], variants: list[list[str]]) -> dict[str, list[str]]:
    """Label -> train.py overrides of every network run: model config names (``default``: none) and variants."""
    runs = {name: ([] if name == "default" else [f"model={name}"]) for name in models if name != "none"}
    for label, overrides in variants:
        runs[label] = overrides.split()
    return runs


def benchmark_family(family: str, spec: dict, work: Path, seed: int, runs: dict[str, list[str]],
                     baselines: list[str], extra: list[str], env: dict, only_fold: int | None = None) -> dict:
    """Generate one family (or reuse it in ``work``), then its baselines and every network run (``only_fold``: that
    fold of the networks alone)."""
    root = work / family
    result: dict = {"family": family}
    if not (root / "Train.csv").is_file():
        started = time.perf_counter()
        summary = generate_release(root, spec["n_train"], spec["n_test"], seed, difficulty=family, label_noise=0.02)
        result["generate_seconds"] = round(time.perf_counter() - started, 1)
        result["positives"] = {"train": summary["train"]["positives"], "test": summary["test"]["positives"]}
    truth = pd.read_csv(truth_dir(root) / "test_labels.csv")
    if "stats" in baselines:
        result["stats"] = baseline(root, truth, seed)
        print(f"  {family}: statistics + XGBoost  test F1 {result['stats']['f1']:.3f}", flush=True)
    if "plain" in baselines:
        result["plain"] = plain_cnn_baseline(root, truth, spec["folds"], spec["epochs"], seed, only_fold)
        print(f"  {family}: plain CNN  test F1 {result['plain']['f1']:.3f}", flush=True)
    result["networks"] = {}
    size = [f"data.num_folds={spec['folds']}", f"trainer.max_epochs={spec['epochs']}", *spec["overrides"],
            *([] if only_fold is None else [f"data.fold={only_fold}"])]
    for label, overrides in runs.items():
        out = pipeline(root, truth, work / "runs" / family / label, [*size, *overrides, *extra], env)
        result["networks"][label] = out
        print(f"  {family}: {label}  test F1 {out['f1']:.3f}  ({out['seconds']:.0f} s); "
              f"{filter_line(out['filter_by_fold'])}", flush=True)
    return result


def benchmark(size: str, work: Path, seed: int, families: list[str], runs: dict[str, list[str]],
              baselines: list[str], extra: list[str], n_train: int | None = None, n_test: int | None = None,
              only_fold: int | None = None) -> dict:
    spec = {**SIZES[size], **{k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v}}
    env = {**os.environ, "LANDSLIDE_ROOT": str(work), "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}", "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline"}
    result: dict = {"size": size, "n_train": spec["n_train"], "n_test": spec["n_test"], "folds": spec["folds"],
                    "epochs": spec["epochs"], "seed": seed, "extra_overrides": extra,
                    "size_overrides": spec["overrides"], "only_fold": only_fold, "families": {}}
    for family in families:
        result["families"][family] = benchmark_family(family, spec, work, seed, runs, baselines, extra, env,
                                                      only_fold)
    return result


def report(result: dict) -> str:
    """The table: one row per family, test F1 / AUC (wall seconds) of every baseline and network."""
    columns: list[tuple[str, str]] = []
    for fam in result["families"].values():
        for key in ("stats", "plain"):
            if key in fam and (key, key) not in columns:
                columns.append((key, key))
        for label in fam.get("networks", {}):
            if ("net", label) not in columns:
                columns.append(("net", label))
    names = {"stats": "statistics+XGBoost", "plain": "plain CNN (loop)"}
    folds = f"{result['folds']} folds" if result.get("only_fold") is None else \
        f"fold {result['only_fold']} of {result['folds']}"
    head = [f"families at {result['n_train']} / {result['n_test']} images, {folds} x {result['epochs']} epochs "
            f"(seed {result['seed']}); test F1 / AUC (wall s) on the clean test labels"]
    header = "| family | " + " | ".join(names.get(label, label) for _, label in columns) + " |"
    rows = [header, "|" + "---|" * (len(columns) + 1)]
    for family, fam in result["families"].items():
        cells = []
        for kind, label in columns:
            cell = fam.get(label) if kind != "net" else fam.get("networks", {}).get(label)
            cells.append("" if cell is None else f"{cell['f1']:.3f} / {cell['auc']:.3f} ({cell['seconds']:.0f})")
        rows.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join([*head, *rows])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--families", default=",".join(FAMILY_NAMES),
                        help=f"comma-separated, from {','.join(FAMILY_NAMES)} (default: all)")
    parser.add_argument("--models", default="default",
                        help="comma-separated model configs (configs/model), 'default' for the default pipeline, "
                             "'none' for baselines only")
    parser.add_argument("--variant", nargs=2, action="append", default=[], metavar=("LABEL", "OVERRIDES"),
                        help="one more network run: a label and its train.py overrides (space-separated)")
    parser.add_argument("--baselines", default="stats,plain", help="comma-separated from stats,plain (or none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--n-train", type=int, default=None, help="instead of the size's")
    parser.add_argument("--n-test", type=int, default=None, help="instead of the size's")
    parser.add_argument("--fold", type=int, default=None,
                        help="screen on this fold alone: the networks and the plain CNN train it only")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILY_NAMES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILY_NAMES)}")
    baselines = [b for b in args.baselines.split(",") if b and b != "none"]
    if set(baselines) - {"stats", "plain"}:
        parser.error("--baselines takes stats, plain or none")
    runs = networks([m for m in args.models.split(",") if m], args.variant)
    if args.fold is not None and not 0 <= args.fold < SIZES[args.size]["folds"]:
        parser.error(f"--fold {args.fold}: the size {args.size} has folds 0-{SIZES[args.size]['folds'] - 1}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="landslide-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = benchmark(args.size, work, args.seed, families, runs, baselines, args.overrides, args.n_train,
                           args.n_test, args.fold)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
