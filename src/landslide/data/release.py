"""Read and validate the challenge release layout.

A release folder holds ``Train.csv`` (ID,label), ``Test.csv`` (ID), ``train_data/<ID>.npy`` and
``test_data/<ID>.npy``; each array is (64, 64, 12) float. Order always follows the CSV.
Every problem stops with a :class:`ReleaseError` naming the file and what is wrong.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from landslide.bands import PATCH_SIZE, RAW_NAMES
from landslide.errors import ReleaseError

log = logging.getLogger(__name__)

RAW_SHAPE = (PATCH_SIZE, PATCH_SIZE, len(RAW_NAMES))
SPLITS = {"train": ("Train.csv", "train_data"), "test": ("Test.csv", "test_data")}


@dataclass(frozen=True)
class SplitIndex:
    """The IDs (CSV order) and, for the training split, labels of one split."""

    name: str
    csv: Path
    folder: Path
    ids: list[str]
    labels: np.ndarray | None

    def path(self, image_id: str) -> Path:
        return self.folder / f"{image_id}.npy"


def _plain_stem(image_id: str) -> bool:
    """A name usable as a file stem: no path separator, no control character, not empty, '.' or '..'."""
    return (
        image_id not in ("", ".", "..")
        and "/" not in image_id
        and "\\" not in image_id
        and not any(ord(c) < 32 or ord(c) == 127 for c in image_id)
    )


def clean_ids(ids: pd.Series, csv: Path) -> pd.Series:
    """IDs stripped of surrounding spaces (with a note) and checked to be plain file stems."""
    stripped = ids.str.strip()
    changed = int((stripped != ids).sum())
    if changed:
        log.warning("%s: %d ID(s) had surrounding spaces, which were removed (e.g. %r)", csv, changed,
                    ids[stripped != ids].iloc[0])
    bad = ~stripped.map(_plain_stem)
    if bad.any():
        rows = (stripped.index[bad] + 2).tolist()[:5]
        raise ReleaseError(
            f"{csv}: {int(bad.sum())} ID(s) are not plain file names (a path separator, a control character such "
            f"as a newline, or empty), on line(s) {rows}, e.g. {stripped[bad].iloc[0]!r}"
        )
    return stripped


def read_split_index(root: Path | str, split: str) -> SplitIndex:
    """Read and check one split's CSV: columns, emptiness, duplicates, labels, missing files."""
    root = Path(root)
    csv_name, folder_name = SPLITS[split]
    csv = root / csv_name
    folder = root / folder_name
    if not csv.is_file():
        raise ReleaseError(f"{csv}: file not found (a release folder needs {' '.join(n for n, _ in SPLITS.values())})")
    try:
        table = pd.read_csv(csv, dtype={"ID": str})
    except pd.errors.EmptyDataError:
        raise ReleaseError(f"{csv}: the file is empty") from None
    if "ID" not in table.columns:
        raise ReleaseError(f"{csv}: no 'ID' column (columns: {list(table.columns)})")
    if table.empty:
        raise ReleaseError(f"{csv}: no rows")
    if table["ID"].isna().any():
        rows = (table.index[table["ID"].isna()] + 2).tolist()[:5]
        raise ReleaseError(f"{csv}: empty ID on line(s) {rows}")
    table["ID"] = clean_ids(table["ID"], csv)
    dup = table["ID"][table["ID"].duplicated()].unique().tolist()
    if dup:
        raise ReleaseError(f"{csv}: {len(dup)} duplicated ID(s), e.g. {dup[:5]}")
    labels = None
    if split == "train":
        if "label" not in table.columns:
            raise ReleaseError(f"{csv}: no 'label' column (columns: {list(table.columns)})")
        raw = pd.to_numeric(table["label"], errors="coerce")
        bad = ~raw.isin([0, 1])
        if bad.any():
            rows = table.loc[bad, ["ID", "label"]].head(5).to_dict("records")
            raise ReleaseError(f"{csv}: {int(bad.sum())} label(s) not 0/1, e.g. {rows}")
        labels = raw.to_numpy(dtype=np.int64)
    if not folder.is_dir():
        raise ReleaseError(f"{folder}: folder not found (listed by {csv})")
    ids = table["ID"].tolist()
    present = {p.stem for p in folder.glob("*.npy")}
    missing = [i for i in ids if i not in present]
    if missing:
        raise ReleaseError(f"{folder}: {len(missing)} ID(s) listed in {csv.name} have no .npy file, e.g. {missing[:5]}")
    extra = len(present) - len(ids)
    if extra > 0:
        log.warning("%s: %d .npy file(s) are not listed in %s and are ignored", folder, extra, csv.name)
    return SplitIndex(split, csv, folder, ids, labels)


def read_release_index(root: Path | str) -> tuple[SplitIndex, SplitIndex]:
    """Both splits' indices, checked against each other (no ID in both)."""
    train = read_split_index(root, "train")
    test = read_split_index(root, "test")
    both = set(train.ids) & set(test.ids)
    if both:
        raise ReleaseError(f"{train.csv} and {test.csv}: {len(both)} ID(s) in both, e.g. {sorted(both)[:5]}")
    return train, test


def load_patch(path: Path, nan_policy: str = "error") -> tuple[np.ndarray, int]:
    """One (64, 64, 12) patch as float32, with the number of non-finite values it had.

    ``nan_policy='error'`` stops on NaN/Inf; ``'fill'`` replaces them by the band's finite mean (0 if none).
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # corrupt or not an .npy
        raise ReleaseError(f"{path}: cannot be read as .npy ({exc})") from None
    if arr.shape != RAW_SHAPE:
        raise ReleaseError(f"{path}: shape {arr.shape}, expected {RAW_SHAPE} (height, width, bands)")
    if arr.dtype not in (np.float64, np.float32):
        raise ReleaseError(f"{path}: dtype {arr.dtype}, expected float64 or float32")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    bad = int(arr.size - np.count_nonzero(finite))
    if bad:
        if nan_policy != "fill":
            raise ReleaseError(
                f"{path}: {bad} NaN/Inf value(s); set data.nan_policy=fill to replace them by the band mean"
            )
        arr = arr.copy()
        for b in range(arr.shape[-1]):
            ok = finite[..., b]
            fill = float(arr[..., b][ok].mean()) if ok.any() else 0.0
            arr[..., b][~ok] = fill
    return arr, bad


def read_patches(
    index: SplitIndex,
    transform: Callable[[np.ndarray], np.ndarray],
    out: np.ndarray,
    nan_policy: str = "error",
    workers: int = 4,
    chunk: int = 256,
    progress: bool = True,
) -> int:
    """Read every patch of a split in CSV order, apply ``transform`` to chunks of (n, 64, 64, 12) arrays and
    write the result into ``out`` (which may be a memory map). Returns the number of filled values."""
    n = len(index.ids)
    starts = range(0, n, chunk)

    def work(start: int) -> int:
        ids = index.ids[start : start + chunk]
        raw = np.empty((len(ids), *RAW_SHAPE), np.float32)
        filled = 0
        for j, image_id in enumerate(ids):
            raw[j], bad = load_patch(index.path(image_id), nan_policy)
            filled += bad
        out[start : start + len(ids)] = transform(raw)
        return filled

    total = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        bar = tqdm(total=math.ceil(n / chunk), desc=f"reading {index.name} ({n} patches)", disable=not progress)
        for filled in pool.map(work, starts):
            total += filled
            bar.update()
        bar.close()
    return total
