"""The negative filter's threshold rules on generated releases with wrong labels, scored on their clean labels:
``python benchmarks/filter_rule.py RELEASE [RELEASE ...] [--rule LABEL "OVERRIDES"] [--folds 3] [--filter
"OVERRIDES"]``.

Each release is a folder written by ``python -m landslide.synth`` (or the accuracy benchmark) with its clean labels
beside it (``<release>_truth/``). As ``train.py`` does, the training split is cut into stratified folds
(``data.split_seed`` 42) on the given, noisy labels, each fold's filter (``configs/filter/xgboost.yaml`` with the
rule's overrides) is fitted on its training part, and, as ``predict.py`` does, the test set is filtered by the
majority of the fold filters. It prints one markdown row per release and rule: the clean test negatives removed and
positives lost, each fold's held-out part likewise, each fold's estimated share of wrong positive labels beside the
true one, and an oracle: the negatives a threshold chosen on the clean test labels would remove losing no positive,
or one. Only XGBoost runs (no network): about 1.5 minutes for a 1,200 / 600 release on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.model_selection import StratifiedKFold

from landslide.data.preprocess import to_channels
from landslide.features import compute_features
from landslide.synth.release import truth_dir

REPO = Path(__file__).resolve().parents[1]
SPLIT_SEED = 42  # configs/data/default.yaml's data.split_seed
RULES = {
    "default": [],
    "trust every label": ["wrong_positive_rate=0"],
    "a fixed 5%": ["wrong_positive_rate=0", "max_positive_loss=0.05"],
}


def features(folder: Path, ids: list[str]) -> np.ndarray:
    return compute_features(to_channels(np.stack([np.load(folder / f"{i}.npy") for i in ids])))


def fold_filter(overrides: list[str]):
    """The filter of ``configs/filter/xgboost.yaml`` with ``overrides`` (``seed`` as train.py's default)."""
    cfg = OmegaConf.load(REPO / "configs" / "filter" / "xgboost.yaml")
    cfg.seed = OmegaConf.load(REPO / "configs" / "train.yaml").seed
    return instantiate(OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides)))


def oracle(scores: np.ndarray, labels: np.ndarray, lost: int) -> float:
    """Share of negatives below the ``lost``-th lowest positive score (clean labels)."""
    return float((scores[labels == 0] < np.sort(scores[labels == 1])[lost]).mean())


def score_release(root: Path, rules: dict[str, list[str]], folds: int, common: list[str]) -> list[str]:
    train = pd.read_csv(truth_dir(root) / "train_truth.csv")
    test = pd.read_csv(truth_dir(root) / "test_labels.csv")
    x, x_test = features(root / "train_data", list(train.ID)), features(root / "test_data", list(test.ID))
    given, clean, clean_test = train.label.to_numpy(), train.true_label.to_numpy(), test.label.to_numpy()
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=SPLIT_SEED).split(x, given))
    rows = []
    for label, overrides in rules.items():
        removed, held_out, shares, test_scores = [], [], [], []
        for tr, va in splits:
            filt = fold_filter(common + overrides).fit(x[tr], given[tr], index=tr)
            removed.append(~filt.keep(x_test))
            test_scores.append(filt.scores(x_test))
            out = ~filt.keep(x[va])
            held_out.append(f"{out[clean[va] == 0].mean():.0%} {out[clean[va] == 1].sum()}/{(clean[va] == 1).sum()}")
            cal = filt.calibration
            if "estimated_noise_share" in cal and cal.get("wrong_positive_rate_estimated"):
                true = float((clean[tr][given[tr] == 1] == 0).mean())
                doubt = "" if cal["noise_estimate_used"] else " (not believed)"
                shares.append(f"{cal['estimated_noise_share']:.0%}{doubt} ({true:.0%})")
        rejected = np.mean(removed, axis=0) > 0.5
        median = np.median(test_scores, axis=0)
        rows.append(
            f"| {root.name} | {label} | {rejected[clean_test == 0].mean():.1%} | "
            f"{rejected[clean_test == 1].sum()}/{(clean_test == 1).sum()} | {'; '.join(held_out)} | "
            f"{', '.join(shares) or '-'} | {oracle(median, clean_test, 0):.0%} / {oracle(median, clean_test, 1):.0%} |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("releases", nargs="+", type=Path, help="generated release folders (with <folder>_truth/)")
    parser.add_argument("--rule", nargs=2, action="append", default=[], metavar=("LABEL", "OVERRIDES"),
                        help="another rule: a label and filter overrides (space-separated), e.g. noise_quantile=0.3")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--filter", default="", metavar="OVERRIDES",
                        help="filter overrides for every rule (space-separated), e.g. params.n_estimators=50")
    args = parser.parse_args(argv)
    rules = {**RULES, **{label: overrides.split() for label, overrides in args.rule}}
    print("| release | rule | test negatives removed | test positives lost | held-out folds: negatives removed, "
          "positives lost | wrong positive labels: estimated (true) | oracle: negatives removed losing 0 / 1 test "
          "positive |\n|---|---|---|---|---|---|---|", flush=True)
    return [row for root in args.releases for row in score_release(root, rules, args.folds, args.filter.split())]


if __name__ == "__main__":
    main()
