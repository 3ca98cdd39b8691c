"""The run record, ``run.json``: what defines a run (checked when the same run directory is used again), what
prediction must reuse, and the wall time and energy of every invocation that worked on it.

Two invocations may continue one run only when every defining setting is equal: the data (the training split's
fingerprint, band set, folds, split seed, hold-out), the recipe (model, filter, epochs, precision, batch, seed,
stage, epoch selection, initial weights, TTA). Which folds an invocation trains (``data.fold``), loggers,
callbacks, progress bars and paths may differ.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from landslide.errors import ConfigError
from landslide.files import write_json, write_text
from landslide.timing import OTHER, add_phases

MANIFEST = "run.json"
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def defining_settings(cfg: DictConfig, data_fingerprint: str) -> dict[str, Any]:
    """The settings whose change makes another run."""
    data = cfg.data
    model = {k: v for k, v in _plain(cfg.model).items() if k != "compile"}
    trainer = cfg.trainer
    return {
        "data": {
            "fingerprint": data_fingerprint,
            **{k: _plain(data.get(k)) for k in ("bands", "num_folds", "split_seed", "holdout_fraction", "batch_size",
                                                "stats", "cloud_threshold", "nan_policy")},
            # how the augmentation is computed does not change the images it makes
            "augment": {k: v for k, v in (_plain(data.get("augment")) or {}).items() if k != "dihedral_gather"},
        },
        "model": model,
        "filter": _plain(cfg.filter),
        "trainer": {k: _plain(trainer.get(k)) for k in ("max_epochs", "min_epochs", "precision",
                                                         "accumulate_grad_batches", "gradient_clip_val")},
        **{k: _plain(cfg.get(k)) for k in ("seed", "stage", "epoch_selection", "init_weights", "tta")},
    }


def prediction_settings(cfg: DictConfig, channels: list[str]) -> dict[str, Any]:
    """What prediction must reuse to score as the run's thresholds were fitted."""
    return {
        "tta": bool(cfg.get("tta", True)),
        "precision": str(cfg.trainer.precision),
        "bands": str(cfg.data.bands),
        "channels": list(channels),
        "cloud_threshold": float(cfg.data.cloud_threshold),
        "nan_policy": str(cfg.data.nan_policy),
    }


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def differences(recorded: dict, current: dict) -> list[str]:
    """``key: recorded -> current`` for every defining setting that differs."""
    old, new = _flatten(recorded), _flatten(current)
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


class RunManifest:
    """``run.json`` of one run directory."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @property
    def invocations(self) -> list[dict]:
        return self.data.get("invocations", [])

    def claim(self, defining: dict, prediction: dict) -> None:
        """Record a new run, or check that this invocation continues the recorded one. On a mismatch the Hydra
        files of the recorded run (which Hydra has just overwritten) are put back and a :class:`ConfigError`
        names the differences."""
        hydra_dir = self.run_dir / ".hydra"
        if not self.data:
            hydra = {name: (hydra_dir / name).read_text() for name in HYDRA_FILES if (hydra_dir / name).is_file()}
            self.data = {"version": 1, "defining": defining, "prediction": prediction, "hydra_files": hydra,
                         "invocations": []}
            self.save()
            return
        diff = differences(self.data["defining"], json.loads(json.dumps(defining)))
        if diff:
            for name, text in self.data.get("hydra_files", {}).items():
                write_text(hydra_dir / name, text)
            raise ConfigError(
                f"{self.path}: this run directory holds a run made with other settings ({'; '.join(diff)}); "
                "start a new run in another directory (leave out hydra.run.dir) or repeat the recorded settings"
            )

    def add_invocation(self, started: float, wall_seconds: float, energy_wh: float, folds: list[int],
                       phases: dict[str, float] | None = None) -> None:
        """Record an invocation: when it started, its wall time, energy, the folds it finished and its seconds per
        phase (:mod:`landslide.timing`)."""
        entry = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_seconds": round(wall_seconds, 2),
            "energy_wh": round(energy_wh, 6),
            "folds_trained": folds,
        }
        if phases is not None:
            entry["phases"] = phases
        self.data.setdefault("invocations", []).append(entry)
        self.save()

    def totals(self) -> tuple[float, float]:
        """Wall seconds and Wh summed over every recorded invocation."""
        return (sum(i["wall_seconds"] for i in self.invocations), sum(i["energy_wh"] for i in self.invocations))

    def phase_totals(self) -> dict[str, float]:
        """Seconds per phase summed over every recorded invocation (one recorded without phases counts as
        ``other``): they add up to :meth:`totals`' wall time."""
        total: dict[str, float] = {}
        for invocation in self.invocations:
            total = add_phases(total, invocation.get("phases") or {OTHER: invocation["wall_seconds"]})
        return total

    def save(self) -> None:
        write_json(self.path, self.data)


def read_prediction_settings(run_dir: Path) -> dict[str, Any] | None:
    """The run's recorded prediction settings (None for runs made before the record existed)."""
    path = Path(run_dir) / MANIFEST
    return json.loads(path.read_text()).get("prediction") if path.is_file() else None
