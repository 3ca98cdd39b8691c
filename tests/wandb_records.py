"""Read an offline W&B run back from its ``run-<id>.wandb`` file, as ``wandb sync`` would upload it.

The file is a LevelDB-style log (wandb 0.31 ships no Python reader for it): a 7-byte header (``:W&B``, magic,
version), then 32 KiB blocks of records, each a 7-byte header (CRC-32, length, kind: full, first, middle, last)
and a piece of a serialised ``wandb.proto.wandb_internal_pb2.Record``."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    raw = Path(path).read_bytes()
    ident, magic, _ = HEADER.unpack_from(raw)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    found, pending, pos = [], b"", HEADER.size
    while pos + RECORD.size <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = RECORD.unpack_from(raw, pos)
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        pending += raw[pos + RECORD.size : pos + RECORD.size + length]
        pos += RECORD.size + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What an offline run recorded: its identity, config, summary (last values), history rows and artifacts."""

    folder: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"type", "files"}
    finished: bool = False


def read_run(folder: Path) -> OfflineRun:
    """The offline run in ``folder`` (``wandb/offline-run-*``)."""
    (path,) = Path(folder).glob("run-*.wandb")
    run = OfflineRun(Path(folder))
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.config.update({item.key: json.loads(item.value_json) for item in r.config.update})
        elif kind == "config":
            run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            run.summary.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "artifact":
            a = record.artifact
            run.artifacts[a.name] = {"type": a.type, "files": sorted(c.path for c in a.manifest.contents)}
        elif kind == "exit":
            run.finished = True
    return run


def read_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under a ``wandb`` folder."""
    return [read_run(folder) for folder in sorted(Path(wandb_dir).glob("offline-run-*"))]
