"""Slide masks of the training patches, for pixel supervision: ``train_masks/<ID>.npy`` in a release, optional.

Each file is a (64, 64) array of 0 and 1 (uint8 or bool; 1 on a slide), in the patch's orientation (row, column
as the patch's first two axes). Generated releases of the ``scenes`` profile carry them (``--masks``,
``data.synthetic.masks``); real releases need none, and nothing reads them unless ``data.masks`` asks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from landslide.bands import PATCH_SIZE
from landslide.errors import ReleaseError, first_line
from landslide.synth.release import MASKS_FOLDER

log = logging.getLogger(__name__)
__all__ = ["MASKS_FOLDER", "load_mask", "read_masks"]

MASK_SHAPE = (PATCH_SIZE, PATCH_SIZE)


def load_mask(path: Path) -> np.ndarray:
    """One (64, 64) uint8 mask of 0 and 1; one line naming the file when it is not one."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # corrupt, truncated, pickled, not .npy
        raise ReleaseError(f"{path}: cannot be read as a mask (.npy: {first_line(err)})") from None
    if arr.shape != MASK_SHAPE:
        raise ReleaseError(f"{path}: mask of shape {arr.shape}, expected {MASK_SHAPE}")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        raise ReleaseError(f"{path}: mask of dtype {arr.dtype}, expected uint8 or bool (0 and 1)")
    if arr.dtype != bool and (arr.min() < 0 or arr.max() > 1):
        raise ReleaseError(f"{path}: mask values {sorted(np.unique(arr).tolist())[:5]}, expected 0 and 1")
    return arr.astype(np.uint8)


def read_masks(root: Path | str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The masks of training images ``ids`` (n, 64, 64) uint8 and which of them have one (n,) bool (the others are
    all 0 and take no pixel loss). A release without ``train_masks/``, or without a mask for any of ``ids``, stops
    with one line."""
    folder = Path(root) / MASKS_FOLDER
    if not folder.is_dir():
        raise ReleaseError(f"{folder}: folder not found; data.masks=true needs the training patches' slide masks "
                           "(a generated release: data.synthetic.masks=true, or python -m landslide.synth --masks)")
    known = set(ids)
    strays = sorted(p.name for p in folder.glob("*.npy") if p.stem not in known)
    if strays:
        raise ReleaseError(f"{folder}: {len(strays)} mask(s) named after no training ID (e.g. {strays[0]}); a mask "
                           "is <ID>.npy of a training image")
    masks = np.zeros((len(ids), *MASK_SHAPE), np.uint8)
    has = np.zeros(len(ids), bool)
    for i, image_id in enumerate(ids):
        path = folder / f"{image_id}.npy"
        if path.is_file():
            masks[i] = load_mask(path)
            has[i] = True
    if not has.any():
        raise ReleaseError(f"{folder}: no mask for any of the {len(ids)} training IDs (<ID>.npy)")
    if not has.all():
        log.warning("%s: %d of %d training images have no mask and take no pixel loss", folder, int((~has).sum()),
                    len(ids))
    return masks, has
