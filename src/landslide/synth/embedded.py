"""The embedded synthetic release: generated on first use where the configuration places it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from landslide.errors import ConfigError, RunError
from landslide.files import read_json
from landslide.synth.release import check_release_settings, generate_release, settings_file

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
    ``root``): the first one makes the data, the others find it. A release generated there with other settings (its
    recorded ``generated.json``) stops the run with one line; anything else at ``root`` is left to the reader.
    """
    root = Path(root)
    if not describes(root, synthetic):
        return False
    wanted = wanted_release(synthetic)
    lock_file = Path(lock_file) if lock_file is not None else root.parent / f".{root.name}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_file):  # looked at under the lock: another job may be writing it right now
        if (root / "Train.csv").is_file():
            check_generated_with(root, wanted)
            return False
        log.info("generating the embedded synthetic release (%d train, %d test) in %s", wanted["n_train"],
                 wanted["n_test"], root)
        generate_release(root, wanted.pop("n_train"), wanted.pop("n_test"), **wanted)
    return True


def wanted_release(synthetic: Mapping[str, Any]) -> dict[str, Any]:
    """The release settings that ``synthetic`` (the data config's ``synthetic`` group) asks for, checked: a
    :class:`~landslide.errors.ConfigError` names the first one no release can be generated with."""
    def number(key: str, kind: type, default: Any = None) -> Any:
        value = synthetic.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise ConfigError(f"data.synthetic.{key} must be {'an integer' if kind is int else 'a number'}, "
                              f"got {value!r}")
        return kind(value)

    wanted = {"n_train": number("n_train", int), "n_test": number("n_test", int), "seed": number("seed", int, 0),
              "difficulty": synthetic.get("difficulty", "easy"), "label_noise": number("label_noise", float, 0.0),
              "masks": bool(synthetic.get("masks", False))}
    try:
        check_release_settings(wanted["n_train"], wanted["n_test"], wanted["difficulty"], wanted["label_noise"],
                               wanted["masks"])
    except ValueError as err:
        raise ConfigError(f"data.synthetic.{err}") from None
    return wanted


def check_generated_with(root: Path, wanted: dict[str, Any]) -> None:
    """Stop when the release at ``root`` was generated with other settings than ``wanted`` (a release with masks
    serves a run that needs none); a release that recorded no settings is taken as it is."""
    recorded = settings_file(root)
    if not recorded.is_file():
        return
    have = read_json(recorded)
    if not isinstance(have, dict):
        raise RunError(f"{recorded}: not a generated release's settings (a JSON object)")
    differ = [k for k, v in wanted.items() if have.get(k) != v and not (k == "masks" and have.get(k) and not v)]
    if differ:
        said = ", ".join(f"{k}={have.get(k)!r} (asked {wanted[k]!r})" for k in differ)
        raise RunError(f"{root}: generated with other settings: {said}; remove it or set data.synthetic.root to "
                       "another folder")
