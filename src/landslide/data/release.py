"""Read and validate the challenge release layout.

A release folder holds ``Train.csv`` (ID,label), ``Test.csv`` (ID), ``train_data/<ID>.npy`` and
``test_data/<ID>.npy``; each array is (64, 64, 12) float. Order always follows the CSV.
Every problem stops with a :class:`ReleaseError` naming the file and what is wrong.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from landslide.bands import PATCH_SIZE, RAW_NAMES
from landslide.errors import ReleaseError, first_line

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


def read_csv(csv: Path) -> pd.DataFrame:
    """A release CSV as text columns (UTF-8, with or without a byte-order mark; ``NA`` or ``null`` is an ID like any
    other, not a missing value); one line naming the file when it is not such a CSV."""
    try:
        return pd.read_csv(csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ReleaseError(f"{csv}: the file is empty") from None
    except UnicodeDecodeError as err:
        raise ReleaseError(f"{csv}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                           "save it as UTF-8") from None
    except pd.errors.ParserError as err:
        raise ReleaseError(f"{csv}: not a table of equal rows ({first_line(err)})") from None


def read_split_index(root: Path | str, split: str) -> SplitIndex:
    """Read and check one split's CSV: columns, emptiness, duplicates, labels, missing files."""
    root = Path(root)
    csv_name, folder_name = SPLITS[split]
    csv = root / csv_name
    folder = root / folder_name
    if not csv.is_file():
        raise ReleaseError(f"{csv}: file not found (a release folder needs {' '.join(n for n, _ in SPLITS.values())})")
    table = read_csv(csv)
    if "ID" not in table.columns:
        raise ReleaseError(f"{csv}: no 'ID' column (columns: {list(table.columns)})")
    if table.empty:
        raise ReleaseError(f"{csv}: no rows")
    empty = table["ID"].str.strip() == ""
    if empty.any():
        rows = (table.index[empty] + 2).tolist()[:5]
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


NPY_MAGIC = b"\x93NUMPY"
#: the first bytes of what a patch file is sometimes instead of an .npy array
FOREIGN_FORMATS = {b"PK\x03\x04": "a zip archive (an .npz of several arrays?), not one .npy array",
                   b"\x80": "pickled Python data, which is never loaded"}
FLOAT32_MAX = float(np.finfo(np.float32).max)


def patch_stat(path: Path) -> os.stat_result:
    """The file's status; one line when it is missing (a dangling link) or not a regular file (a folder, a pipe that
    would block the reader)."""
    try:
        status = os.stat(path)
    except OSError as err:
        raise ReleaseError(f"{path}: cannot be read ({err.strerror}; a dangling symbolic link?)") from None
    if not stat.S_ISREG(status.st_mode):
        raise ReleaseError(f"{path}: not a regular file")
    return status


def _check_npy_header(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as err:
        raise ReleaseError(f"{path}: cannot be read ({err.strerror})") from None
    if head == NPY_MAGIC:
        return
    what = next((text for magic, text in FOREIGN_FORMATS.items() if head.startswith(magic)),
                "not an .npy file (no NumPy header: text, or another format)" if head else "an empty file")
    raise ReleaseError(f"{path}: {what}")


def load_patch(path: Path, nan_policy: str = "error") -> tuple[np.ndarray, int]:
    """One (64, 64, 12) patch as float32, with the number of values it had that are not finite floats (NaN, Inf, or
    beyond float32's range).

    ``nan_policy='error'`` stops on them; ``'fill'`` replaces them by the band's finite mean (0 if none).
    """
    patch_stat(path)
    _check_npy_header(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # corrupt, truncated, an object array
        raise ReleaseError(f"{path}: cannot be read as .npy ({first_line(exc)})") from None
    if arr.shape != RAW_SHAPE:
        raise ReleaseError(f"{path}: shape {arr.shape}, expected {RAW_SHAPE} (height, width, bands)")
    if arr.dtype not in (np.float64, np.float32):
        raise ReleaseError(f"{path}: dtype {arr.dtype}, expected float64 or float32")
    finite = np.isfinite(arr)
    nonfinite = int(arr.size - np.count_nonzero(finite))
    overflow, example = 0, None
    if arr.dtype == np.float64:  # values float32 cannot hold would become Inf
        huge = np.abs(np.where(finite, arr, 0)) > FLOAT32_MAX
        overflow = int(np.count_nonzero(huge))
        if overflow:
            example = float(arr[huge][0])
            finite &= ~huge
        with np.errstate(over="ignore"):
            arr = arr.astype(np.float32)
    bad = nonfinite + overflow
    if bad:
        if nan_policy != "fill":
            parts = [f"{nonfinite} NaN/Inf value(s)"] if nonfinite else []
            if overflow:
                parts.append(f"{overflow} value(s) beyond float32's range (e.g. {example:g})")
            raise ReleaseError(
                f"{path}: {' and '.join(parts)}; set data.nan_policy=fill to replace them by the band mean"
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
