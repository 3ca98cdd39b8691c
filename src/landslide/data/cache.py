"""One contiguous, memory-mappable array per split, keyed by a hash of the inputs and the preprocessing config.

Layout: ``<cache_dir>/<key>/{train,test}.npy`` (n, 13, 64, 64) float32, ``{train,test}_ids.txt``,
``train_labels.npy`` and ``meta.json`` (written last: a folder without it is incomplete and rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landslide.bands import CHANNEL_NAMES, PATCH_SIZE
from landslide.data.preprocess import to_channels
from landslide.data.release import SplitIndex, read_patches, read_release_index

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass
class CachedSplit:
    """A preprocessed split: images (n, 13, 64, 64) float32 (memory-mapped), IDs and labels (train only)."""

    ids: list[str]
    images: np.ndarray
    labels: np.ndarray | None


@dataclass
class CachedRelease:
    train: CachedSplit
    test: CachedSplit
    folder: Path
    meta: dict


def _fingerprint(index: SplitIndex) -> str:
    digest = hashlib.sha1()
    digest.update(index.csv.read_bytes())
    for image_id in index.ids:
        stat = os.stat(index.path(image_id))
        digest.update(f"{image_id}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def cache_key(train: SplitIndex, test: SplitIndex, cloud_threshold: float, nan_policy: str) -> str:
    """Hash of the CSVs, the listed files' sizes and times, and the preprocessing config."""
    config = json.dumps(
        {"version": CACHE_VERSION, "cloud_threshold": float(cloud_threshold), "nan_policy": nan_policy,
         "channels": CHANNEL_NAMES},
        sort_keys=True,
    )
    digest = hashlib.sha1(config.encode())
    digest.update(_fingerprint(train).encode())
    digest.update(_fingerprint(test).encode())
    return digest.hexdigest()[:16]


def _open(folder: Path, split: str, labels: bool) -> CachedSplit:
    ids = (folder / f"{split}_ids.txt").read_text().split("\n")
    images = np.load(folder / f"{split}.npy", mmap_mode="c")  # copy-on-write: the file is never modified
    y = np.load(folder / "train_labels.npy") if labels else None
    return CachedSplit(ids, images, y)


def load_or_build(
    root: Path | str,
    cache_dir: Path | str,
    cloud_threshold: float,
    nan_policy: str = "error",
    workers: int = 4,
    progress: bool = True,
) -> CachedRelease:
    """Validate the release, then return its cached channels, building the cache on first use."""
    train_index, test_index = read_release_index(root)
    key = cache_key(train_index, test_index, cloud_threshold, nan_policy)
    folder = Path(cache_dir) / key
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        return CachedRelease(_open(folder, "train", True), _open(folder, "test", False), folder, meta)

    started = time.perf_counter()
    tmp = folder.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    filled = {}
    for index in (train_index, test_index):
        shape = (len(index.ids), len(CHANNEL_NAMES), PATCH_SIZE, PATCH_SIZE)
        out = np.lib.format.open_memmap(tmp / f"{index.name}.npy", mode="w+", dtype=np.float32, shape=shape)
        filled[index.name] = read_patches(
            index, lambda raw: to_channels(raw, cloud_threshold), out, nan_policy, workers, progress=progress
        )
        out.flush()
        del out
        (tmp / f"{index.name}_ids.txt").write_text("\n".join(index.ids))
    np.save(tmp / "train_labels.npy", train_index.labels)
    meta = {
        "root": str(Path(root).resolve()),
        "channels": list(CHANNEL_NAMES),
        "cloud_threshold": float(cloud_threshold),
        "nan_policy": nan_policy,
        "filled_values": filled,
        "n_train": len(train_index.ids),
        "n_test": len(test_index.ids),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    for split, count in filled.items():
        if count:
            log.warning("%s split: %d NaN/Inf value(s) were filled with band means", split, count)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log.info("cached %s in %.1fs", folder, meta["build_seconds"])
    return CachedRelease(_open(folder, "train", True), _open(folder, "test", False), folder, meta)
