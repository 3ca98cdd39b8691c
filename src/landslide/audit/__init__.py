"""The label audit: ``python -m landslide.audit run_dir=<training run>`` (the command lives in :mod:`landslide.cli`)
ranks the run's training images by how likely their label is wrong, from out-of-fold probabilities (every image
judged by models that never trained on it).

Confident learning (``cleanlab``) does the judging: ``cleanlab.filter.find_label_issues`` flags the images whose
given label disagrees confidently with the out-of-fold probabilities (of the network, the filter's features +
XGBoost classifier, or their mean: ``source``), ``cleanlab.rank.get_label_quality_scores`` scores every image (low:
likely wrong). It writes ``label_issues.csv`` (``ID, label, suggested_label, score, rank, fold`` and the
probabilities), a figure of the top candidates' bands (``label_issues.png``) and ``audit_summary.json``. When the
run's data was generated with wrong labels (``<root>_truth/train_truth.csv``), it reports the precision at k of the
ranking against the planted ones (k: how many were planted) and each fold's filter against the clean labels.
``data.exclude=<out>/label_issues.csv`` retrains without the listed images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from landslide.bands import CHANNEL_NAMES
from landslide.data.preprocess import to_channels
from landslide.data.release import load_patch, read_split_index
from landslide.errors import ConfigError, RunError, first_line
from landslide.files import atomic_output, read_json, write_json
from landslide.inference.options import check_prediction_out
from landslide.plots.samples import plot_sample_rows
from landslide.run_record import read_prediction_settings, read_run_config
from landslide.synth.release import truth_dir

log = logging.getLogger("landslide.audit")

#: ``source`` -> the ``oof_predictions.csv`` columns it averages
SOURCES = {"network": ("network_prob",), "features": ("features_score",), "both": ("network_prob", "features_score")}
#: cleanlab's choices: which images ``find_label_issues`` flags, and how ``get_label_quality_scores`` ranks them
FILTER_BY = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
             "low_normalized_margin", "low_self_confidence")
RANK_BY = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
ISSUES_FILE, FIGURE_FILE, SUMMARY_FILE = "label_issues.csv", "label_issues.png", "audit_summary.json"


def check_options(run_dir: Path | str, source: str, top: int | None, figure_top: int, out: Path | str, *,
                  filter_by: str, rank_by: str) -> None:
    """Stop with one line on an option out of range, a run directory without out-of-fold predictions or an ``out``
    among a training run's files (before any output folder is made: the command's preflight calls this too)."""
    if source not in SOURCES:
        raise ConfigError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if filter_by not in FILTER_BY:
        raise ConfigError(f"filter_by must be one of {', '.join(FILTER_BY)}, got {filter_by!r}")
    if rank_by not in RANK_BY:
        raise ConfigError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ConfigError(f"top must be null or an integer >= 1, got {top!r}")
    if isinstance(figure_top, bool) or not isinstance(figure_top, int) or figure_top < 0:
        raise ConfigError(f"figure_top must be an integer >= 0, got {figure_top!r}")
    path = Path(run_dir) / "oof_predictions.csv"
    if not path.is_file():
        raise RunError(f"{path}: not found; is {run_dir} a training run that trained a network?")
    check_prediction_out(run_dir, out, command="the audit", default="audit")


def read_oof(run_dir: Path, source: str) -> pd.DataFrame:
    """The run's out-of-fold predictions with the ``source`` probability as ``p``."""
    path = run_dir / "oof_predictions.csv"
    if not path.is_file():
        raise RunError(f"{path}: not found; is {run_dir} a training run that trained a network?")
    try:
        oof = pd.read_csv(path, dtype={"ID": str})
    except Exception as err:  # empty, binary or not a CSV
        raise RunError(f"{path}: cannot be read as CSV ({first_line(err)})") from None
    absent = [c for c in ("ID", "label", "fold") if c not in oof.columns]
    if absent or oof.empty:
        raise RunError(f"{path}: " + (f"no {', '.join(absent)} column" if absent else "no rows")
                       + "; is it the oof_predictions.csv train.py wrote?")
    if not oof.label.isin([0, 1]).all():
        raise RunError(f"{path}: the label column holds values other than 0 and 1")
    missing = [c for c in SOURCES[source] if c not in oof.columns or oof[c].isna().any()]
    if missing:
        why = ("the run has no features classifier (filter=none); use source=network" if missing == ["features_score"]
               else "the run was made before the audit existed; train it again")
        raise RunError(f"{path}: no {', '.join(missing)} for every image ({why})")
    oof["p"] = oof[list(SOURCES[source])].mean(axis=1).clip(0, 1)
    return oof


def rank_label_issues(labels: np.ndarray, prob: np.ndarray, *, filter_by: str, rank_by: str,
                      top: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Every image's label quality score (low: likely wrong) and the rows to list, most likely wrong first: those
    ``cleanlab.filter.find_label_issues`` flags, or the ``top`` lowest-scoring ones."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels).astype(int)
    pred_probs = np.stack([1 - prob, prob], axis=1)
    try:
        scores = get_label_quality_scores(labels, pred_probs, method=rank_by)
        if top is not None:
            order = np.argsort(scores, kind="stable")
            return scores, order[: int(top)]
        flagged = find_label_issues(labels, pred_probs, filter_by=filter_by, n_jobs=1)
    except ValueError as err:  # an unknown method, or labels cleanlab refuses (one class only)
        raise ConfigError(f"cleanlab refuses the audit's settings or data: {str(err).splitlines()[0]}") from None
    rows = np.flatnonzero(flagged)
    return scores, rows[np.argsort(scores[rows], kind="stable")]


def read_truth(path: Path, oof: pd.DataFrame) -> pd.Series | None:
    """The clean label of every audited image from ``path`` (``ID, true_label``, and ``label`` as the release
    gave it), or None (with a warning) when it does not describe this run's release."""
    try:
        truth = pd.read_csv(path, dtype={"ID": str})
    except Exception as err:  # empty, binary or not a CSV
        raise ConfigError(f"truth={path}: cannot be read as CSV ({first_line(err)})") from None
    if not {"ID", "true_label"} <= set(truth.columns):
        raise ConfigError(f"truth={path}: needs the columns ID and true_label")
    truth = truth.set_index("ID")
    missing = sorted(set(oof.ID) - set(truth.index))
    if missing:
        log.warning("%s lacks %d audited ID(s) (e.g. %s): the ranking is not scored", path, len(missing), missing[:3])
        return None
    if "label" in truth.columns and (truth.loc[oof.ID, "label"].to_numpy() != oof.label.to_numpy()).any():
        log.warning("%s gives other training labels than the run's: the ranking is not scored", path)
        return None
    return truth.loc[oof.ID, "true_label"].astype(int)


def filter_against_truth(run_dir: Path, truth: pd.DataFrame) -> list[dict]:
    """Each fold's filter on its held-out part, scored with the clean labels (``truth``: ``ID, label, true_label``
    of every training image, in ``Train.csv``'s order, as a generated release's ``train_truth.csv``): the share of
    true negatives it removed and the true positives it lost; and, on its training part, the share of the positive
    labels its rule estimated wrong beside the share that truly was (when its ``filter.json`` says)."""
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    rows = []
    for fold, part in oof.merge(truth[["ID", "true_label"]], on="ID", validate="one_to_one").groupby("fold"):
        positive, negative = part[part.true_label == 1], part[part.true_label == 0]
        row = {"fold": int(fold), "negatives_filtered": round(float(negative.filtered.mean()), 3),
               "positives_lost": int(positive.filtered.sum()), "positives": len(positive)}
        meta_path = run_dir / "folds" / f"fold_{fold}" / "filter.json"
        meta = read_json(meta_path) if meta_path.is_file() else {}
        if "estimated_noise_share" in meta.get("calibration", {}):
            fitted = truth.iloc[meta["fitted_on"]]
            labelled = fitted[fitted.label == 1]
            row["noise_share_estimated"] = round(meta["calibration"]["estimated_noise_share"], 3)
            row["noise_share_true"] = round(float((labelled.true_label == 0).mean()), 3)
        rows.append(row)
    return rows


def filter_line(rows: list[dict]) -> str:
    """The per-fold figures of :func:`filter_against_truth` as one line."""
    def fold(f: dict) -> str:
        text = (f"fold {f['fold']} {f['negatives_filtered']:.1%} of negatives, {f['positives_lost']}/{f['positives']} "
                "positives lost")
        if "noise_share_estimated" in f:
            text += f", wrong positive labels {f['noise_share_estimated']:.1%} estimated ({f['noise_share_true']:.1%})"
        return text

    return "filter on each held-out fold (clean labels): " + "; ".join(fold(f) for f in rows)


def precision_at_k(ranked_wrong: np.ndarray, k: int) -> float | None:
    """Share of wrong labels among the first ``k`` of a ranking (``ranked_wrong``: True where wrong)."""
    return float(np.mean(ranked_wrong[:k])) if k else None


def candidates_figure(root: Path, rows: pd.DataFrame, cloud_threshold: float, path: Path) -> None:
    """The listed images' bands (RGB, NIR, SAR changes), one row each, titled with ID, label and score."""
    index = read_split_index(root, "train")
    raw = np.stack([load_patch(index.path(image_id), "fill")[0] for image_id in rows.ID])
    images = to_channels(raw, cloud_threshold)
    titles = [f"{r.ID}\nlabel {r.label} -> {r.suggested_label}\nscore {r.score:.3f}" for r in rows.itertuples()]
    with atomic_output(path) as tmp:
        plt.close(plot_sample_rows(list(images), CHANNEL_NAMES, titles, tmp))


def run_data(run_dir: Path, data_root: str | None) -> tuple[Path, float]:
    """The run's release folder (``data_root`` if given) and cloud threshold (``run.json``'s prediction settings);
    the run's config is read only for what these do not give."""
    settings = read_prediction_settings(run_dir) or {}
    cloud = settings.get("cloud_threshold")
    if data_root and cloud is not None:
        return Path(data_root), float(cloud)
    try:
        data = read_run_config(run_dir)["data"]
    except RunError as err:
        raise RunError(f"{err}; data_root=<its release folder> audits it without its config") from None
    return Path(data_root or data["root"]), float(data["cloud_threshold"] if cloud is None else cloud)


def audit(run_dir: Path | str, out: Path | str, *, source: str, top: int | None, filter_by: str, rank_by: str,
          figure_top: int, truth: str | None, data_root: str | None) -> dict:
    """Rank the run's training images by label quality; write the list, the figure and a summary; return it."""
    run_dir, out = Path(run_dir), Path(out)
    check_options(run_dir, source, top, figure_top, out, filter_by=filter_by, rank_by=rank_by)
    oof = read_oof(run_dir, source)
    root, cloud = run_data(run_dir, data_root)
    labels = oof.label.to_numpy().astype(int)
    scores, rows = rank_label_issues(labels, oof.p.to_numpy(), filter_by=filter_by, rank_by=rank_by, top=top)

    listed = pd.DataFrame({
        "ID": oof.ID.to_numpy()[rows], "label": labels[rows], "suggested_label": 1 - labels[rows],
        "score": np.round(scores[rows], 6), "rank": np.arange(1, len(rows) + 1), "fold": oof.fold.to_numpy()[rows],
        **{c: oof[c].to_numpy()[rows] for c in ("network_prob", "features_score") if c in oof.columns},
    })
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / ISSUES_FILE) as tmp:
        listed.to_csv(tmp, index=False)
    summary: dict = {
        "run_dir": str(run_dir), "source": source, "filter_by": filter_by, "rank_by": rank_by, "top": top,
        "audited": len(oof), "listed": len(listed),
        "listed_by_label": {str(k): int(v) for k, v in listed.label.value_counts().sort_index().items()},
    }
    truth_path = Path(truth) if truth else truth_dir(root) / "train_truth.csv"
    if truth or truth_path.is_file():
        if not truth_path.is_file():
            raise ConfigError(f"truth={truth_path}: file not found")
        clean = read_truth(truth_path, oof)
        if clean is not None and truth_path == truth_dir(root) / "train_truth.csv":
            # a generated release's truth: every training image, in Train.csv's order (what fitted_on indexes)
            summary["filter_by_fold"] = filter_against_truth(run_dir, pd.read_csv(truth_path))
        if clean is not None:
            wrong = clean.to_numpy() != labels
            planted = int(wrong.sum())
            ranking = np.argsort(scores, kind="stable")
            listed_wrong = wrong[rows]
            summary["truth"] = {
                "file": str(truth_path), "planted": planted, "k": planted,
                "precision_at_k": precision_at_k(wrong[ranking], planted),
                "listed_wrong": int(listed_wrong.sum()),
                "listed_precision": float(listed_wrong.mean()) if len(rows) else None,
                "listed_recall": float(listed_wrong.sum() / planted) if planted else None,
            }
            listed["truly_wrong"] = listed_wrong
            with atomic_output(out / ISSUES_FILE) as tmp:
                listed.to_csv(tmp, index=False)
    if figure_top and len(listed):
        candidates_figure(root, listed.head(int(figure_top)), cloud, out / FIGURE_FILE)
        summary["figure"] = str(out / FIGURE_FILE)
    write_json(out / SUMMARY_FILE, summary)
    report(summary, out)
    return summary


def report(summary: dict, out: Path) -> None:
    log.info("audited %d training images (out-of-fold probabilities of %s): %d listed in %s", summary["audited"],
             summary["source"], summary["listed"], out / ISSUES_FILE)
    truth = summary.get("truth")
    if truth and truth["k"]:
        log.info("against the %d planted wrong labels (%s): precision at k=%d %.3f; the list holds %d of them "
                 "(precision %s, recall %.3f)", truth["planted"], truth["file"], truth["k"], truth["precision_at_k"],
                 truth["listed_wrong"], "-" if truth["listed_precision"] is None else
                 f"{truth['listed_precision']:.3f}", truth["listed_recall"])
    elif truth:
        log.info("the clean labels (%s) hold no wrong training label", truth["file"])
    if summary.get("filter_by_fold"):
        log.info("%s", filter_line(summary["filter_by_fold"]))
