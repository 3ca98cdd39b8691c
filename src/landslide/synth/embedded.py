"""The embedded synthetic release: generated on first use where the configuration places it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from landslide.synth.release import generate_release

log = logging.getLogger(__name__)


def describes(root: Path | str, synthetic: Mapping[str, Any] | None) -> bool:
    """True when the ``synthetic`` settings (the data config's ``synthetic`` group) are those of the release at
    ``root``: they name it as their ``root``, or name no root at all and so apply to ``root`` itself. Empty (or
    null) settings, or a ``root`` of null or of another folder, describe no release at ``root``."""
    if not synthetic:
        return False
    if "root" not in synthetic:
        return True
    target = synthetic["root"]
    return bool(target) and Path(target).resolve() == Path(root).resolve()


def ensure_embedded_release(root: Path | str, synthetic: Mapping[str, Any] | None,
                            lock_file: Path | str | None = None) -> bool:
    """Generate the embedded synthetic release in ``root`` if ``synthetic`` describes it (see :func:`describes`) and
    ``root`` holds no release yet (no ``Train.csv``); True when this call generated it.

    Jobs started together (a multirun) take turns through ``lock_file`` (default: ``.<root name>.lock`` beside
    ``root``): the first one makes the data, the others find it. Anything else at ``root`` is left to the reader.
    """
    root = Path(root)
    if not describes(root, synthetic):
        return False
    lock_file = Path(lock_file) if lock_file is not None else root.parent / f".{root.name}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_file):  # looked at under the lock: another job may be writing it right now
        if (root / "Train.csv").is_file():
            return False
        n_train, n_test = int(synthetic["n_train"]), int(synthetic["n_test"])
        log.info("generating the embedded synthetic release (%d train, %d test) in %s", n_train, n_test, root)
        generate_release(root, n_train, n_test, int(synthetic.get("seed", 0)),
                         difficulty=synthetic.get("difficulty", "easy"),
                         label_noise=float(synthetic.get("label_noise", 0.0)),
                         masks=bool(synthetic.get("masks", False)))
    return True
