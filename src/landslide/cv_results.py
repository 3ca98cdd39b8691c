"""Reading a cross-validation summary (the ``cv_summary.json`` dict): its values flattened, the numbers runs are
compared by, and its curves per epoch as mean and spread over folds. Shared by the run's loggers and the report."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

#: mean curves per epoch: the name logged (``cv/<name>``), the history key averaged over folds
CURVES = {"val_f1": "val/f1", "val_f1_best": "val/f1_best", "val_loss": "val/loss", "train_loss": "train/loss"}


def flat(tree: dict, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts as one level, keys joined by ``sep``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}{sep}", sep))
        else:
            out[f"{prefix}{key}"] = value
    return out


def summary_values(summary: dict) -> dict[str, Any]:
    """Every entry of the summary but the per-fold rows, nested dicts flattened (``a/b``)."""
    return flat({k: v for k, v in summary.items() if k != "folds"})


def summary_metrics(summary: dict) -> dict[str, float]:
    """The summary's finite numbers (not flags, lists or text): what runs are compared by."""
    return {k: float(v) for k, v in summary_values(summary).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)}


def epoch_curve(summary: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over folds of history ``key`` per epoch (over the folds that reached it)."""
    rows = [[h.get(key, np.nan) for h in f.get("history") or []] for f in summary.get("folds", [])]
    longest = max((len(r) for r in rows), default=0)
    padded = np.full((len(rows), longest), np.nan)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    seen = np.isfinite(padded).any(0)
    mean, std = np.full(longest, np.nan), np.full(longest, np.nan)
    mean[seen], std[seen] = np.nanmean(padded[:, seen], 0), np.nanstd(padded[:, seen], 0)
    return mean, std


def epoch_rows(summary: dict) -> Iterator[dict[str, float]]:
    """One row per epoch (counted from 1) of the mean curves of :data:`CURVES` and their spread, as
    ``cv/<name>`` and ``cv/<name>_std``."""
    curves = {name: epoch_curve(summary, key) for name, key in CURVES.items()}
    for e in range(max((len(m) for m, _ in curves.values()), default=0)):
        row: dict[str, float] = {"epoch": e + 1}
        for name, (mean, std) in curves.items():
            if e < len(mean) and np.isfinite(mean[e]):
                row[f"cv/{name}"], row[f"cv/{name}_std"] = float(mean[e]), float(std[e])
        yield row
