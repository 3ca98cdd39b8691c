"""One contiguous, memory-mappable array per split, keyed by a hash of the split's files and the preprocessing.

Layout: ``<cache_dir>/<split>-<key>/`` holds ``images.npy`` (n, 13, 64, 64) float32, ``ids.json`` (a JSON list,
so no ID can split another), ``labels.npy`` (train only) and ``meta.json`` (written last: a folder without it is
incomplete and rebuilt). Each split is cached on its own, so prediction reads only the test split. A build that
fails removes its temporary folder; one left by a killed process is removed by the next build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landslide.bands import CHANNEL_NAMES, PATCH_SIZE
from landslide.data.preprocess import to_channels
from landslide.data.release import SplitIndex, patch_stat, read_patches, read_release_index
from landslide.files import pid_alive

log = logging.getLogger(__name__)
CACHE_VERSION = 2
_TMP = re.compile(r"\.tmp-(\d+)$")


@dataclass
class CachedSplit:
    """A preprocessed split: images (n, 13, 64, 64) float32 (memory-mapped), IDs and labels (train only)."""

    ids: list[str]
    images: np.ndarray
    labels: np.ndarray | None
    folder: Path
    meta: dict


@dataclass
class CachedRelease:
    train: CachedSplit
    test: CachedSplit


def _fingerprint(index: SplitIndex) -> str:
    digest = hashlib.sha1()
    digest.update(index.csv.read_bytes())
    for image_id in index.ids:
        stat = patch_stat(index.path(image_id))
        digest.update(f"{image_id}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def cache_key(index: SplitIndex, cloud_threshold: float, nan_policy: str) -> str:
    """Hash of the split's CSV, its files' sizes and times, and the preprocessing config."""
    config = json.dumps(
        {"version": CACHE_VERSION, "split": index.name, "cloud_threshold": float(cloud_threshold),
         "nan_policy": nan_policy, "channels": CHANNEL_NAMES},
        sort_keys=True,
    )
    digest = hashlib.sha1(config.encode())
    digest.update(_fingerprint(index).encode())
    return digest.hexdigest()[:16]


def _open(folder: Path) -> CachedSplit:
    meta = json.loads((folder / "meta.json").read_text())
    ids = json.loads((folder / "ids.json").read_text())
    images = np.load(folder / "images.npy", mmap_mode="c")  # copy-on-write: the file is never modified
    labels = np.load(folder / "labels.npy") if (folder / "labels.npy").is_file() else None
    return CachedSplit(ids, images, labels, folder, meta)


def remove_stale_builds(cache_dir: Path) -> list[Path]:
    """Remove temporary build folders whose process is gone (killed mid-build); return what was removed."""
    removed = []
    if not cache_dir.is_dir():
        return removed
    for path in cache_dir.iterdir():
        match = _TMP.search(path.name)
        if match and path.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d unfinished cache build(s) left by stopped processes in %s", len(removed), cache_dir)
    return removed


def _build(index: SplitIndex, folder: Path, key: str, cloud_threshold: float, nan_policy: str, workers: int,
           progress: bool) -> None:
    started = time.perf_counter()
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shape = (len(index.ids), len(CHANNEL_NAMES), PATCH_SIZE, PATCH_SIZE)
        out = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float32, shape=shape)
        filled = read_patches(
            index, lambda raw: to_channels(raw, cloud_threshold), out, nan_policy, workers, progress=progress
        )
        out.flush()
        del out
        (tmp / "ids.json").write_text(json.dumps(index.ids))
        if index.labels is not None:
            np.save(tmp / "labels.npy", index.labels)
        if filled:
            log.warning("%s split: %d NaN/Inf value(s) were filled with band means", index.name, filled)
        meta = {
            "key": key,
            "split": index.name,
            "csv": str(index.csv.resolve()),
            "channels": list(CHANNEL_NAMES),
            "cloud_threshold": float(cloud_threshold),
            "nan_policy": nan_policy,
            "filled_values": filled,
            "n": len(index.ids),
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %s in %.1fs", folder, time.perf_counter() - started)


def load_or_build_split(
    index: SplitIndex,
    cache_dir: Path | str,
    cloud_threshold: float,
    nan_policy: str = "error",
    workers: int = 4,
    progress: bool = True,
) -> CachedSplit:
    """The cached channels of one validated split, building the cache on first use."""
    cache_dir = Path(cache_dir)
    key = cache_key(index, cloud_threshold, nan_policy)
    folder = cache_dir / f"{index.name}-{key}"
    if not (folder / "meta.json").is_file():
        remove_stale_builds(cache_dir)
        _build(index, folder, key, cloud_threshold, nan_policy, workers, progress)
    return _open(folder)


def load_or_build(
    root: Path | str,
    cache_dir: Path | str,
    cloud_threshold: float,
    nan_policy: str = "error",
    workers: int = 4,
    progress: bool = True,
) -> CachedRelease:
    """Validate the whole release, then return both splits' cached channels."""
    train, test = read_release_index(root)
    return CachedRelease(*(load_or_build_split(index, cache_dir, cloud_threshold, nan_policy, workers, progress)
                           for index in (train, test)))
