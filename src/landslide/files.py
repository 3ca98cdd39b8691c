"""Result files written atomically: a reader sees the old file or the new one, never half of one; files that belong
together are moved in as one set, named by a manifest written last (:class:`OutputSet`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from landslide.errors import ConfigError, RunError, first_line

log = logging.getLogger(__name__)

#: ``.<stem>.tmp-<pid><suffix>``: a file being written by process ``pid`` (:func:`temporary_path`)
TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.tmp-(?P<pid>\d+)(?P<suffix>\.[^.]*)?$")


def temporary_path(path: Path | str) -> Path:
    """A name beside ``path`` to write it under before the rename; it keeps the suffix (writers that choose a
    format by suffix still work) and names this process (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: Path | str, of: Path | None = None) -> list[Path]:
    """Remove the temporaries (:func:`temporary_path`) in ``folder`` whose process is gone (killed while writing),
    only those of the path ``of`` when given; return what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMPORARY.match(path.name)
        if of is not None and not (match and match["stem"] == of.stem and (match["suffix"] or "") == of.suffix):
            continue
        if match and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d unfinished file(s) left by stopped processes in %s", len(removed), folder)
    return removed


@contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, on failure it is
    removed and ``path`` is left as it was. The temporary name keeps the suffix (writers that choose a format by
    suffix still work)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
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


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OutputSet:
    """Files that belong together (a prediction's tables, a map's raster, polygons and figure) and the manifest that
    names them: each file is written under a temporary name beside its destination (:meth:`stage`); :meth:`commit`
    removes the old manifest, moves every file in, and writes the manifest last, with each file's size and SHA-256.
    A folder whose manifest is missing holds no complete set (a command stopped while moving one in); a reader
    trusts the files a manifest names when they match it (:func:`verify_output_set`). Opening a set removes the
    temporaries that stopped processes left beside its files; a set that fails removes its own."""

    def __init__(self, manifest: Path | str) -> None:
        self.manifest = Path(manifest)
        self.staged: dict[Path, Path] = {}
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.manifest.parent)

    def stage(self, path: Path | str) -> Path:
        """The temporary path to write ``path`` under until :meth:`commit`."""
        path = Path(path)
        if path.parent != self.manifest.parent:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent)
        self.staged[path] = temporary_path(path)
        return self.staged[path]

    def staged_path(self, path: Path | str) -> Path:
        """Where a staged file is being written (to read it back before the set is committed)."""
        return self.staged[Path(path)]

    def _name(self, path: Path) -> str:
        return os.path.relpath(path, self.manifest.parent)

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Move the staged files in and write ``manifest`` (with ``files``: name -> bytes, sha256) last; return it."""
        files = {}
        for final, tmp in self.staged.items():
            if not tmp.is_file():
                raise RuntimeError(f"{final}: staged but never written")
            files[self._name(final)] = {"bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}
        record = {**manifest, "files": files}
        self.manifest.unlink(missing_ok=True)  # until the new one is written, no complete set is here
        for final, tmp in self.staged.items():
            os.replace(tmp, final)
        self.staged = {}
        write_json(self.manifest, record)
        return record

    def discard(self) -> None:
        for tmp in self.staged.values():
            tmp.unlink(missing_ok=True)
        self.staged = {}

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def verify_output_set(manifest: Path | str) -> dict[str, Any]:
    """A manifest written by :class:`OutputSet`, after checking that every file it names is there as written; one
    :class:`RunError` line otherwise."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise RunError(f"{manifest}: not found; the outputs beside it are not a complete set")
    record = read_json(manifest)
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict):
        raise RunError(f"{manifest}: names no set of files")
    for name, expected in files.items():
        path = manifest.parent / name
        if not path.is_file() or path.stat().st_size != expected.get("bytes") or \
                file_sha256(path) != expected.get("sha256"):
            raise RunError(f"{path}: not the file {manifest.name} names (missing, or replaced since)")
    return record


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(option: str, path: Path | str, folder: bool) -> None:
    """One :class:`ConfigError` line when ``option``'s path cannot be written: a file where a folder is meant (or
    the reverse), or a place this user may not write to."""
    path = Path(path)
    if path.exists() and folder and not path.is_dir():
        raise ConfigError(f"{option}={path}: a file, not a folder")
    if path.exists() and not folder and path.is_dir():
        raise ConfigError(f"{option}={path}: a folder; name a file")
    base = nearest_existing(path if folder else path.parent)
    if not base.is_dir():
        raise ConfigError(f"{option}={path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}={path}: {base} cannot be written to (permission denied)")
    try:  # what os.access cannot tell: a read-only file system, a pseudo file system, root's "yes" to everything
        os.rmdir(tempfile.mkdtemp(prefix=".landslide-write-check-", dir=base))
    except OSError as err:
        raise ConfigError(f"{option}={path}: {base} cannot be written to ({err.strerror or first_line(err)})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option}={path}: cannot be written to (read-only)")
