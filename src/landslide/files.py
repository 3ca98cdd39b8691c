"""Result files written atomically: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from landslide.errors import RunError, first_line


@contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, on failure it is
    removed and ``path`` is left as it was. The temporary name keeps the suffix (writers that choose a format by
    suffix still work)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path | str) -> Any:
    """A JSON file of a run; one :class:`RunError` line naming it when it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: cannot be read as JSON ({first_line(err)})") from None


def read_config(path: Path | str) -> DictConfig:
    """A run's YAML config; one :class:`RunError` line naming it when it cannot be read."""
    try:
        return OmegaConf.load(path)
    except Exception as err:  # a YAML or OmegaConf error
        raise RunError(f"{path}: cannot be read ({first_line(err)})") from None


def write_json(path: Path | str, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=indent))
