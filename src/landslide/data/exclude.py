"""``data.exclude``: a CSV of training IDs (an ``ID`` column, e.g. the audit's ``label_issues.csv``) left out of
every fold, for a retrain without images whose label is likely wrong."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from landslide.errors import ConfigError, first_line


@dataclass(frozen=True)
class Exclusion:
    """The rows of the training split that ``file`` lists, its IDs (sorted) and the file's SHA-256."""

    file: Path
    sha256: str
    ids: list[str]
    rows: np.ndarray

    def record(self) -> dict:
        """What defines a run trained without them (the IDs themselves are recorded beside it)."""
        return {"file": str(self.file), "sha256": self.sha256, "count": len(self.ids)}


def read_exclusion(path: Path | str, train_ids: list[str] | None) -> Exclusion:
    """Read ``path``; stop with one line naming it when it cannot be read, has no ``ID`` column, or lists IDs that
    are not in the training split (never drop an ID silently: a wrong file must not pass as an empty list).
    ``train_ids`` None (a release not generated yet) checks the file alone and gives no rows."""
    path = Path(path)
    option = f"data.exclude={path}"
    if not path.is_file():
        raise ConfigError(f"{option}: file not found")
    try:
        data = path.read_bytes()
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # unreadable, or not a CSV
        raise ConfigError(f"{option}: cannot be read as CSV ({first_line(err)})") from None
    if "ID" not in table.columns:
        raise ConfigError(f"{option}: no ID column (columns: {', '.join(map(str, table.columns)) or 'none'})")
    listed = sorted(set(table["ID"].str.strip()))
    if train_ids is None:
        return Exclusion(path, hashlib.sha256(data).hexdigest(), listed, np.zeros(0, np.int64))
    row_of = {image_id: i for i, image_id in enumerate(train_ids)}
    unknown = [i for i in listed if i not in row_of]
    if unknown:
        raise ConfigError(f"{option}: {len(unknown)} ID(s) not in the training split (Train.csv), e.g. "
                          f"{unknown[:5]}")
    rows = np.sort(np.array([row_of[i] for i in listed], np.int64))
    return Exclusion(path, hashlib.sha256(data).hexdigest(), listed, rows)
