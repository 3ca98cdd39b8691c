"""An XGBoost negative filter that loses no real positive, calibrated out-of-fold on its training data only.

Threshold rule: an inner stratified K-fold on the training part gives out-of-fold scores; the threshold lies
``safety_margin`` below the score of a chosen positive, in log-odds (so the margin means the same whether scores
sit near 0.01 or 0.3). Which positive: with clean labels the lowest one. Real releases hold wrong labels, and a
negative labelled positive scores like the negatives: one among the obvious negatives would pull the threshold down
until nothing is removed. So the rule estimates the rate of such wrong positive labels, ``r`` (positives per
negative), where few real positives lie: below the ``noise_quantile`` of the negatives' scores, ``r`` = positives
there / negatives there. Wrong positives follow the negatives' scores, so below a threshold ``t`` about
``r * negatives below t`` positives are expected to be wrong; the threshold is the highest positive score at which
the positives below it are no more than that (plus ``max_positive_loss`` of the positives, 0 by default). An
estimate that calls more than ``max_noise_share`` of the positive labels wrong is not believed (the features then
score many real positives like negatives, and the count mistakes them for wrong labels): every label is trusted
instead. With ``wrong_positive_rate: 0`` (the rule for clean labels) the lowest positive (or the
``max_positive_loss`` share) sets it, as before. The final booster is then fitted on the whole training part.
Images scoring below the threshold are filtered (predicted negative).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.model_selection import StratifiedKFold

from landslide.errors import first_line
from landslide.features import FEATURE_NAMES

MODEL_FILE = "filter.ubj"
META_FILE = "filter.json"


def estimate_wrong_positive_rate(scores: np.ndarray, labels: np.ndarray, quantile: float) -> float:
    """Wrong positive labels per negative, counted where few real positives lie: positives / negatives scoring at
    or below the ``quantile`` of the negatives' (out-of-fold) scores. Negatives labelled positive score like
    negatives, so below any cut their count is about this rate times the negatives there."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    negatives = scores[labels == 0]
    if not len(negatives):
        return 0.0
    cut = np.quantile(negatives, quantile)
    return float((scores[labels == 1] <= cut).sum() / max(int((negatives <= cut).sum()), 1))


def positives_below(positive_scores: np.ndarray, max_positive_loss: float, negative_scores: np.ndarray | None = None,
                    wrong_rate: float = 0.0) -> int:
    """How many of the lowest positives the threshold may leave below it: ``floor(max_positive_loss * n)``, or more
    where wrong labels are expected: the most ``k`` such that the ``k`` positives under the ``k+1``-th lowest
    positive score exceed by at most that share the ``wrong_rate * negatives under it`` expected to be wrong labels,
    none of them scoring above every negative (a wrong label scores like the negatives)."""
    ranked = np.sort(np.asarray(positive_scores, np.float64))
    allowed = int(np.floor(max_positive_loss * len(ranked) + 1e-9))
    k = allowed
    if wrong_rate > 0 and negative_scores is not None and len(negative_scores):
        negatives = np.sort(np.asarray(negative_scores, np.float64))
        excess = np.arange(len(ranked)) - wrong_rate * np.searchsorted(negatives, ranked, side="left")
        ok = excess <= allowed + 1e-9
        above = np.flatnonzero(ranked > negatives[-1])
        if len(above):
            ok[above[0] + 1 :] = False
        k = max(k, int(np.flatnonzero(ok).max()))
    return min(k, len(ranked) - 1)


def positive_threshold(positive_scores: np.ndarray, max_positive_loss: float, safety_margin: float,
                       negative_scores: np.ndarray | None = None, wrong_rate: float = 0.0) -> float:
    """``safety_margin`` (log-odds) below the score of the ``k``-th lowest positive, ``k`` from
    :func:`positives_below` (without ``wrong_rate``: ``floor(max_positive_loss * n)``)."""
    ranked = np.sort(np.asarray(positive_scores, np.float64))
    k = positives_below(ranked, max_positive_loss, negative_scores, wrong_rate)
    score = float(np.clip(ranked[k], 1e-7, 1 - 1e-7))
    return float(1 / (1 + np.exp(-(np.log(score / (1 - score)) - safety_margin))))


class KeepAll:
    """The ``filter=none`` choice: keeps every image. It has no settings; those of the XGBoost filter that a preset
    adds (e.g. ``debug=tiny``'s smaller boosters) are accepted and have nothing to act on."""

    kind = "none"
    threshold = 0.0

    def __init__(self, **xgboost_settings: object) -> None:
        self.ignored = sorted(xgboost_settings)

    def fit(self, features: np.ndarray, labels: np.ndarray, index: np.ndarray | None = None) -> KeepAll:
        self.fitted_on = None if index is None else np.asarray(index)
        return self

    def scores(self, features: np.ndarray) -> np.ndarray:
        return np.ones(len(features), np.float32)

    def keep(self, features: np.ndarray) -> np.ndarray:
        return np.ones(len(features), bool)

    def save(self, folder: Path | str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / META_FILE).write_text(json.dumps({"kind": self.kind}))


class NegativeFilter:
    """XGBoost filter with an out-of-fold threshold. ``params`` go to ``xgboost.XGBClassifier`` as they are; every
    setting comes from the config (``configs/filter/xgboost.yaml``)."""

    kind = "xgboost"

    def __init__(self, params: dict, *, calibration_folds: int, safety_margin: float, seed: int,
                 max_positive_loss: float, wrong_positive_rate: float | str, noise_quantile: float,
                 max_noise_share: float) -> None:
        if not 0 <= max_positive_loss < 0.5:
            raise ValueError(f"filter.max_positive_loss must be in [0, 0.5) (a share of positives), got "
                             f"{max_positive_loss}")
        if wrong_positive_rate != "estimate" and not (isinstance(wrong_positive_rate, int | float)
                                                      and 0 <= wrong_positive_rate < 0.5):
            raise ValueError(f"filter.wrong_positive_rate must be estimate or a share of the negatives in [0, 0.5), "
                             f"got {wrong_positive_rate!r}")
        if not 0 < noise_quantile < 1:
            raise ValueError(f"filter.noise_quantile must be in (0, 1), got {noise_quantile}")
        if not 0 <= max_noise_share <= 1:
            raise ValueError(f"filter.max_noise_share must be in [0, 1], got {max_noise_share}")
        if safety_margin < 0:
            raise ValueError(f"filter.safety_margin must be >= 0 (log-odds), got {safety_margin}")
        if calibration_folds < 2:
            raise ValueError(f"filter.calibration_folds must be at least 2, got {calibration_folds}")
        self.params = dict(params)
        self.calibration_folds = calibration_folds
        self.safety_margin = safety_margin
        self.max_positive_loss = max_positive_loss
        self.wrong_positive_rate = wrong_positive_rate
        self.noise_quantile = noise_quantile
        self.max_noise_share = max_noise_share
        self.seed = seed
        self.model: xgb.XGBClassifier | None = None
        self.threshold = 0.0
        self.calibration: dict = {}
        self.fitted_on: np.ndarray | None = None

    def _new_model(self) -> xgb.XGBClassifier:
        return xgb.XGBClassifier(random_state=self.seed, **self.params)

    def fit(self, features: np.ndarray, labels: np.ndarray, index: np.ndarray | None = None) -> NegativeFilter:
        """Fit on a training part only (``index`` records which rows of the release those were)."""
        started = time.perf_counter()
        labels = np.asarray(labels).astype(int)
        if features.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected {len(FEATURE_NAMES)} features, got {features.shape[1]}")
        n_pos = int(labels.sum())
        if n_pos < self.calibration_folds:
            raise ValueError(f"the filter needs at least {self.calibration_folds} positives, got {n_pos}")
        oof = np.zeros(len(labels), np.float32)
        inner = StratifiedKFold(self.calibration_folds, shuffle=True, random_state=self.seed)
        for tr, va in inner.split(features, labels):
            oof[va] = self._new_model().fit(features[tr], labels[tr]).predict_proba(features[va])[:, 1]
        positive, negative = oof[labels == 1], oof[labels == 0]
        estimated = self.wrong_positive_rate == "estimate"
        rate = (estimate_wrong_positive_rate(oof, labels, self.noise_quantile) if estimated
                else float(self.wrong_positive_rate))
        share = rate * len(negative) / len(positive)  # of the positive labels, if flips are uniform
        believed = not estimated or share <= self.max_noise_share
        used = rate if believed else 0.0
        self.threshold = positive_threshold(positive, self.max_positive_loss, self.safety_margin, negative, used)
        self.model = self._new_model().fit(features, labels)
        removed = oof < self.threshold
        self.calibration = {
            "oof_filtered_fraction": float(removed.mean()),
            "oof_negatives_filtered": float(removed[labels == 0].mean()),
            "oof_positives_lost": int(removed[labels == 1].sum()),
            "oof_positives_lost_share": float(removed[labels == 1].mean()),
            "max_positive_loss": self.max_positive_loss,
            "wrong_positive_rate": rate,
            "wrong_positive_rate_estimated": estimated,
            # the share of the positive labels estimated wrong (negatives labelled positive), if flips are uniform
            "estimated_noise_share": float(share),
            # false when the estimate called more than max_noise_share wrong: the threshold trusted every label
            "noise_estimate_used": bool(believed),
            "max_noise_share": self.max_noise_share,
            "positives_below": positives_below(positive, self.max_positive_loss, negative, used),
            "min_positive_oof_score": float(positive.min()),
            "fit_seconds": round(time.perf_counter() - started, 2),
        }
        self.fitted_on = None if index is None else np.asarray(index)
        return self

    def scores(self, features: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("the filter is not fitted")
        return self.model.predict_proba(features)[:, 1].astype(np.float32)

    def keep(self, features: np.ndarray) -> np.ndarray:
        """True for the images the network should see."""
        return self.scores(features) >= self.threshold

    def save(self, folder: Path | str) -> None:
        """XGBoost's UBJ model plus a JSON of threshold, feature names, params and calibration."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_model(folder / MODEL_FILE)
        meta = {
            "kind": self.kind,
            "threshold": self.threshold,
            "safety_margin": self.safety_margin,
            "max_positive_loss": self.max_positive_loss,
            "wrong_positive_rate": self.wrong_positive_rate,
            "noise_quantile": self.noise_quantile,
            "max_noise_share": self.max_noise_share,
            "calibration_folds": self.calibration_folds,
            "params": self.params,
            "seed": self.seed,
            "feature_names": list(FEATURE_NAMES),
            "calibration": self.calibration,
            "fitted_on": None if self.fitted_on is None else self.fitted_on.tolist(),
        }
        (folder / META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path | str) -> NegativeFilter:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta["feature_names"] != list(FEATURE_NAMES):
            raise ValueError(f"{folder / META_FILE}: saved with other features than this version computes")
        # filters saved before these settings existed trusted every positive label
        self = cls(meta["params"], calibration_folds=meta["calibration_folds"], safety_margin=meta["safety_margin"],
                   seed=meta["seed"], max_positive_loss=meta.get("max_positive_loss", 0.0),
                   wrong_positive_rate=meta.get("wrong_positive_rate", 0.0),
                   noise_quantile=meta.get("noise_quantile", 0.5), max_noise_share=meta.get("max_noise_share", 1.0))
        self.model = xgb.XGBClassifier()
        if not (folder / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{folder / MODEL_FILE}: missing")
        try:
            self.model.load_model(folder / MODEL_FILE)
        except Exception as err:  # missing, cut short, or not XGBoost's format
            raise ValueError(f"{folder / MODEL_FILE}: not a saved XGBoost model ({first_line(err)})") from None
        self.threshold = meta["threshold"]
        self.calibration = meta["calibration"]
        self.fitted_on = None if meta["fitted_on"] is None else np.asarray(meta["fitted_on"])
        return self


def load_filter(folder: Path | str) -> NegativeFilter | KeepAll:
    """Load whichever filter was saved in ``folder``."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved filter")
    kind = json.loads(path.read_text())["kind"]
    return KeepAll() if kind == "none" else NegativeFilter.load(folder)


def filter_report(keep: np.ndarray, labels: np.ndarray) -> dict:
    """Fraction filtered, positive share before and after, positives lost."""
    keep = np.asarray(keep, bool)
    labels = np.asarray(labels).astype(int)
    kept = labels[keep]
    return {
        "n": len(labels),
        "filtered_fraction": float(1 - keep.mean()) if len(keep) else 0.0,
        "negatives_filtered": float((~keep)[labels == 0].mean()) if (labels == 0).any() else 0.0,
        "positive_share_before": float(labels.mean()) if len(labels) else 0.0,
        "positive_share_after": float(kept.mean()) if len(kept) else 0.0,
        "positives_lost": int((~keep & (labels == 1)).sum()),
    }
