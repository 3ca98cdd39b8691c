"""The cross-validation summary: out-of-fold metrics, per-fold metrics, filter figures, time and energy."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from landslide.metrics import f1_at, f1_optimal_threshold, roc_auc
from landslide.timing import phase_table

log = logging.getLogger(__name__)


def _number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _indices(values: Any, n_images: int) -> bool:
    """A non-empty list of distinct training image numbers."""
    return (isinstance(values, list) and bool(values) and len(set(values)) == len(values)
            and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_images for i in values))


def _probabilities(values: Any, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(_number(p) and 0 <= p <= 1 for p in values)


def check_result(result: Any, fold: int, n_images: int, path: Any) -> dict:
    """``result`` (a fold's ``result.json``, read from ``path``) if it holds what :func:`summarise`, the per-fold
    table and the out-of-fold file read: this fold's number, its seconds, the filter's figures and, for a trained
    fold, distinct out-of-fold indices into the ``n_images`` training images with a probability and a keep flag each,
    its scores and epochs; else one :class:`RunError` line naming ``path``."""
    from landslide.errors import RunError

    def bad(what: str) -> RunError:
        return RunError(f"{path}: {what}; is it a fold result written by train.py?")

    if not isinstance(result, dict):
        raise bad("holds no fold result")
    if result.get("fold") != fold or isinstance(result.get("fold"), bool):
        raise bad(f"is the result of fold {result.get('fold')!r}, not of fold {fold}")
    if not _number(result.get("wall_seconds")):
        raise bad("wall_seconds is missing or not a number")
    filt = result.get("filter")
    val = filt.get("val") if isinstance(filt, dict) else None
    train = filt.get("train") if isinstance(filt, dict) else None
    wanted = ("filtered_fraction", "negatives_filtered", "positives_lost", "positive_share_before", "n")
    calibration = filt.get("calibration") if isinstance(filt, dict) else None
    if not (isinstance(filt, dict) and isinstance(filt.get("kind"), str) and isinstance(val, dict)
            and isinstance(train, dict) and all(_number(val.get(k)) for k in wanted)
            and _number(train.get("filtered_fraction"))
            and (calibration is None or (isinstance(calibration, dict) and all(
                _number(calibration[k]) for k in ("oof_positives_lost", "estimated_noise_share", "max_positive_loss")
                if k in calibration)))):
        raise bad("its filter figures (filter.kind, filter.val, filter.train, filter.calibration) are missing or "
                  "not numbers")
    oof = result.get("oof")
    if oof is None:
        return result
    index = oof.get("index") if isinstance(oof, dict) else None
    if not _indices(index, n_images):
        raise bad(f"oof.index is not a list of distinct training image numbers (0 to {n_images - 1})")
    for key in ("prob",) + (("network_prob",) if "network_prob" in oof else ()):
        if not _probabilities(oof.get(key), len(index)):
            raise bad(f"oof.{key} is not a list of probabilities as long as oof.index ({len(index)})")
    keep = oof.get("keep")
    if not (isinstance(keep, list) and len(keep) == len(index) and all(isinstance(k, bool) for k in keep)):
        raise bad(f"oof.keep is not a list of true/false as long as oof.index ({len(index)})")
    if not (all(_number(result.get(k)) for k in ("f1_at_threshold", "f1_at_0.5"))
            and all(result.get(k) is None or _number(result.get(k)) for k in ("threshold", "energy_wh"))
            and isinstance(result.get("epochs"), int) and not isinstance(result.get("epochs"), bool)):
        raise bad("its scores (f1_at_threshold, f1_at_0.5, threshold), epochs (a whole number) or energy_wh are "
                  "missing or not numbers")
    for key, values in (("features_oof", "score"), ("holdout", "prob")):
        part = result.get(key)
        if part is None:
            continue
        if not (isinstance(part, dict) and _indices(part.get("index"), n_images)
                and isinstance(part.get(values), list) and len(part[values]) == len(part["index"])
                and all(_number(v) for v in part[values])):
            raise bad(f"{key} is not training image numbers with a {values} each")
    return result


def summarise(cfg: DictConfig, dm, results: list[dict], wall: float, run_wh: float) -> dict:
    labels = dm.labels
    filt_val = [r["filter"]["val"] for r in results]
    summary: dict = {
        "name": cfg.get("name"),
        "stage": cfg.get("stage", "all"),
        "num_folds": dm.num_folds,
        "folds_run": [r["fold"] for r in results],
        "bands": dm.bands,
        "model": cfg.model.net._target_.rsplit(".", 1)[-1],
        "filter": results[0]["filter"]["kind"] if results else None,
        "filtered_fraction": float(np.mean([f["filtered_fraction"] for f in filt_val])) if filt_val else 0.0,
        "train_filtered_fraction": float(np.mean([r["filter"]["train"]["filtered_fraction"] for r in results]))
        if results else 0.0,
        "negatives_filtered": float(np.mean([f["negatives_filtered"] for f in filt_val])) if filt_val else 0.0,
        "positives_lost": int(sum(f["positives_lost"] for f in filt_val)),
        "positives_total": int(sum(round(f["positive_share_before"] * f["n"]) for f in filt_val)),
        "wall_seconds": round(wall, 2),
        "energy_wh": round(run_wh, 6),
        "folds": [],
    }
    trained = [r for r in results if "oof" in r]
    for r in results:
        row = {k: v for k, v in r.items() if k not in ("oof", "holdout", "features_oof")}
        summary["folds"].append(row)
    summary.update(features_baseline(results, labels))
    if trained:
        index = np.concatenate([r["oof"]["index"] for r in trained])
        prob = np.concatenate([r["oof"]["prob"] for r in trained])
        y = labels[index]
        threshold, best = f1_optimal_threshold(prob, y)
        f1s = [r["f1_at_threshold"] for r in trained]
        network = np.concatenate([r["oof"].get("network_prob", r["oof"]["prob"]) for r in trained])
        network_threshold, network_f1 = f1_optimal_threshold(network, y)
        summary.update({
            "f1_mean": float(np.mean(f1s)),
            "f1_std": float(np.std(f1s)),
            "f1_at_0.5_mean": float(np.mean([r["f1_at_0.5"] for r in trained])),
            "oof_f1": best,
            "oof_threshold": threshold,
            "oof_f1_at_0.5": f1_at(prob, y, 0.5),
            "oof_auc": roc_auc(prob, y),
            "network_oof_f1": network_f1,
            "network_oof_threshold": network_threshold,
            "network_oof_auc": roc_auc(network, y),
            "epochs": [r["epochs"] for r in trained],
            "fold_energy_wh": float(sum(r["energy_wh"] or 0 for r in trained)),
            "notes": "f1_mean/f1_std: per-fold F1 at each fold's own out-of-fold optimal threshold; oof_f1: F1 of "
                     "all out-of-fold predictions at the single threshold oof_threshold; *_at_0.5: at 0.5. All are "
                     "the two-stage pipeline on whole validation folds (filtered images count as negative). "
                     "network_oof_*: the network alone (no filter); features_oof_*: the filter's features + XGBoost "
                     "classifier as a baseline (fitted on each fold's training part, scored on its validation part); "
                     "every *_oof_f1 at the threshold that is F1-optimal on its own out-of-fold predictions.",
        })
        held = [r["holdout"] for r in trained if "holdout" in r]
        if held:
            # the fold ensemble on rows no fold trained or validated on: unbiased even after a search on oof_f1
            hold_prob = np.mean([h["prob"] for h in held], axis=0)
            summary["holdout_n"] = len(held[0]["index"])
            summary["holdout_f1"] = f1_at(hold_prob, labels[held[0]["index"]], 0.5)
    else:
        summary["oof_f1"] = None
    return summary


def features_baseline(results: list[dict], labels: np.ndarray) -> dict:
    """Out-of-fold F1 (at its own F1-optimal threshold) and AUC of the filter's features + XGBoost classifier, pooled
    over the folds; empty when a fold has no such classifier (``filter=none``)."""
    scored = [r.get("features_oof") for r in results]
    if not scored or any(s is None for s in scored):
        return {}
    index = np.concatenate([s["index"] for s in scored])
    score = np.concatenate([s["score"] for s in scored])
    y = labels[index]
    threshold, best = f1_optimal_threshold(score, y)
    return {"features_oof_f1": best, "features_oof_threshold": threshold, "features_oof_auc": roc_auc(score, y)}


def _below(report: dict) -> str:
    """Training positives under the filter's threshold in its inner out-of-fold loop, and the share of the positive
    labels estimated wrong (or, for filters without that estimate, the share allowed)."""
    cal = report.get("calibration") or {}
    if "oof_positives_lost" not in cal:
        return "-"
    if "estimated_noise_share" in cal:
        unused = "" if cal.get("noise_estimate_used", True) else ", not believed"
        return f"{cal['oof_positives_lost']} (wrong ~{cal['estimated_noise_share']:.0%}{unused})"
    return f"{cal['oof_positives_lost']} (≤{cal.get('max_positive_loss', 0.0):.0%})"


#: the per-fold table's columns (docs/training.md, "The summary", explains each)
COLUMNS = ("fold", "val filtered", "val positives lost", "inner positives below (allowed)", "F1 at 0.5",
           "F1 at thr", "thr", "epochs", "seconds", "Wh")


def render(renderable: Any) -> str:
    """A rich table as plain text at its own width (not squeezed to a terminal's or a log file's 80 columns)."""
    width = Console(width=1000).measure(renderable).maximum
    console = Console(file=io.StringIO(), width=max(width, 40), color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue().rstrip()


def fold_table(summary: dict) -> Table:
    table = Table(title=f"cross-validation: {summary.get('name')}")
    for col in COLUMNS:
        table.add_column(col, justify="right")

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for f in summary["folds"]:
        fv = f["filter"]["val"]
        table.add_row(
            str(f["fold"]), f"{fv['filtered_fraction']:.1%}", str(fv["positives_lost"]), _below(f["filter"]),
            fmt(f.get("f1_at_0.5"), ".3f"), fmt(f.get("f1_at_threshold"), ".3f"), fmt(f.get("threshold"), ".3f"),
            fmt(f.get("epochs"), "d"), f"{f['wall_seconds']:.0f}", fmt(f.get("energy_wh"), ".3f"),
        )
    return table


def time_table(phases: dict[str, float], wall: float, gpu: dict[str, dict] | None = None) -> Table:
    """Seconds per phase; with ``gpu`` (this invocation's GPU samples by phase) the GPU's mean utilisation and
    energy in each."""
    table = Table(title=f"where the {wall:.0f} s went")
    columns = ("phase", "seconds", "share") + (("GPU util", "GPU Wh") if gpu else ())
    for col in columns:
        table.add_column(col, justify="left" if col == "phase" else "right")
    for name, seconds, share in phase_table(phases, wall):
        row = [name, f"{seconds:.1f}", f"{share:.1%}"]
        if gpu:
            used = gpu.get(name)
            row += [f"{used['gpu_util_mean_pct']:.0f}%", f"{used['gpu_energy_wh']:.2f}"] if used else ["-", "-"]
        table.add_row(*row)
    return table


def result_line(summary: dict) -> str:
    text = (f"{summary['wall_seconds']:.0f} s, {summary['energy_wh']:.3f} Wh, run folder "
            f"{summary.get('run_dir_mb', 0.0):.1f} MB")
    if summary.get("oof_f1") is None:
        return text
    return (f"out-of-fold F1 {summary['oof_f1']:.4f} at threshold {summary['oof_threshold']:.3f} "
            f"(F1 at 0.5: {summary['oof_f1_at_0.5']:.4f}); per-fold F1 {summary['f1_mean']:.4f} "
            f"± {summary['f1_std']:.4f}; {text}")


def print_summary(summary: dict) -> None:
    """The per-fold table, where the time went, and the result line, through the log: on the terminal and in the
    job's log file (``train.log``) alike."""
    log.info("\n%s", render(fold_table(summary)))
    if summary.get("phases"):
        # the GPU's samples are the last invocation's: beside the seconds only when those are its own too
        gpu = (summary.get("gpu") or {}).get("phases") if summary.get("invocations", 1) == 1 else None
        log.info("\n%s", render(time_table(summary["phases"], summary["wall_seconds"], gpu)))
    log.info("%s", result_line(summary))
    print_baseline(summary)


def baseline_line(summary: dict) -> str | None:
    """Out-of-fold F1 / AUC of the pipeline, the network alone and the features + XGBoost baseline, in one line."""
    def pair(prefix: str) -> str:
        f1, auc = summary.get(f"{prefix}_f1"), summary.get(f"{prefix}_auc")
        return f"{f1:.4f} / " + ("-" if auc is None else f"{auc:.4f}")

    parts = []
    if summary.get("oof_f1") is not None:
        parts += [f"pipeline {pair('oof')}", f"network alone {pair('network_oof')}"]
    if summary.get("features_oof_f1") is not None:
        parts.append(f"features + XGBoost (the filter's model) {pair('features_oof')}")
    return "out-of-fold F1 / AUC: " + ", ".join(parts) if parts else None


def print_baseline(summary: dict) -> None:
    """The baseline line through the log, and a warning when the network (in the pipeline) does not beat it."""
    line = baseline_line(summary)
    if line:
        log.info("%s", line)
    if summary.get("oof_f1") is not None and summary.get("features_oof_f1") is not None \
            and summary["oof_f1"] <= summary["features_oof_f1"]:
        log.warning("the network does not beat the features + XGBoost baseline: out-of-fold F1 %.4f (pipeline; "
                    "network alone %.4f) against %.4f", summary["oof_f1"], summary["network_oof_f1"],
                    summary["features_oof_f1"])
