"""The run record, ``run.json``: what defines a run (checked when the same run directory is used again, and by the
aggregate of folds trained as jobs), the config the run was trained with (what prediction, maps and the aggregate
read), what prediction must reuse, and the wall time and energy of every invocation that worked on it.

What defines a run is the whole composed config, resolved, minus :data:`HARMLESS` (settings that do not change what
the run computes: names, printing, logging, tracking, folders, which folds this invocation trains, callbacks that
only observe), plus the fingerprint of the training split (``data.fingerprint``: its CSV, its files' sizes and times
and the preprocessing). Two invocations continue one run only when all of it is equal.

Only an accepted invocation writes ``run.json``. Hydra writes ``.hydra/`` into the run directory before any of our
code runs: :func:`hydra_files_kept` puts the recorded files back when an invocation fails or is refused, and
everything that reads a run reads its config from ``run.json`` (:func:`read_run_config`), never from ``.hydra/``,
so not even a killed invocation changes what a run predicts. The config is stored resolved: a run's data root does
not follow the environment of a later command.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from landslide.errors import ConfigError, RunError
from landslide.files import read_json, write_json, write_text
from landslide.resolvers import register_resolvers
from landslide.timing import OTHER, add_counts, add_phases

log = logging.getLogger(__name__)

MANIFEST = "run.json"
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")
VERSION = 2

#: Settings that do not change what a run computes, as dotted keys (a key names its whole subtree). Every other key
#: of the composed config defines the run.
HARMLESS: tuple[str, ...] = (
    # names, printing, the value returned to sweepers, figures and tracking
    "task_name", "name", "tags", "print_config", "optimized_metric", "log_figures", "logger", "energy",
    # host memory tuning (speed only)
    "tune_host_allocator",
    # folders: where results, logs and the cache go, and where the data is read (what the data is, is the
    # training split's fingerprint, which is recorded)
    "paths", "data.root", "data.cache_dir", "data.synthetic", "trainer.default_root_dir",
    # which folds this invocation trains; how the data is read and shown; how many images are scored at once
    "data.fold", "data.read_workers", "data.progress", "data.eval_batch_size",
    # progress bars, the model summary, how often metrics are logged
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    # callbacks that only observe, or save the state an interrupted fold resumes from
    "callbacks.progress_bar", "callbacks.lr_monitor", "callbacks.energy", "callbacks.last_checkpoint",
    "callbacks.keep_checkpoints", "trainer.plugins",
    # how the same numbers are computed: the augmentation's gather, where statistics are summed, how many filters
    # are fitted at once, how stacked folds are scored
    "data.augment.dihedral_gather", "data.stats_on_device", "cv.parallel_filters", "cv.stacked_scoring",
    # which of the user's network classes may be imported (the network itself is model.net, which defines the run)
    "model.trusted_networks",
)
#: The pseudo-key under which the training split's fingerprint is recorded among the defining settings.
FINGERPRINT = "data.fingerprint"
#: the defining entry of a run trained without some images (data.exclude): the excluded list's own record
EXCLUDE_LIST = "exclude_list"
#: How many differing settings a refusal names.
SHOWN_DIFFERENCES = 8


def harmless(key: str) -> bool:
    """Whether a dotted config key is (or lies under) one of :data:`HARMLESS`."""
    return any(key == h or key.startswith(h + ".") for h in HARMLESS)


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _defining(node: DictConfig, prefix: str, out: dict[str, Any]) -> None:
    for key in node:
        name = f"{prefix}{key}"
        if harmless(name):
            continue  # never resolved: a harmless key may point at what only exists inside a Hydra job
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_none() and len(value):
            _defining(value, f"{name}.", out)
        else:
            out[name] = _plain(node[key])


def defining_settings(cfg: DictConfig, data_fingerprint: str, excluded: dict | None = None) -> dict[str, Any]:
    """The settings whose change makes another run: every key of the resolved config but :data:`HARMLESS`, as a
    flat ``{dotted key: value}``, the training split's fingerprint and, for a run trained without some images
    (``data.exclude``), the excluded list's record (its content defines the run, not only the file's name)."""
    out: dict[str, Any] = {}
    _defining(cfg, "", out)
    out[FINGERPRINT] = data_fingerprint
    if excluded is not None:
        out[EXCLUDE_LIST] = excluded
    return json.loads(json.dumps(out))  # as run.json will hold them (tuples as lists)


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
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def differences(recorded: dict, current: dict, only_recorded: bool = False) -> list[str]:
    """``key recorded -> current`` for every setting that differs (``only_recorded``: among the recorded keys only,
    for records that named a chosen few)."""
    old, new = _flatten(recorded), _flatten(current)
    keys = set(old) if only_recorded else set(old) | set(new)
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)]


def describe(diff: list[str]) -> str:
    """The first differences, and how many more there are."""
    shown = "; ".join(diff[:SHOWN_DIFFERENCES])
    return shown + (f"; and {len(diff) - SHOWN_DIFFERENCES} more" if len(diff) > SHOWN_DIFFERENCES else "")


def compare_records(recorded: dict, current: dict) -> list[str]:
    """The defining settings of two records that differ (a record of version 1 named a chosen few)."""
    old_style = recorded.get("version", 1) < VERSION or current.get("version", 1) < VERSION
    return differences(recorded.get("defining", {}), current.get("defining", {}), only_recorded=old_style)


def _hydra_files(run_dir: Path) -> dict[str, str]:
    hydra_dir = run_dir / ".hydra"
    return {name: (hydra_dir / name).read_text() for name in HYDRA_FILES if (hydra_dir / name).is_file()}


class RunManifest:
    """``run.json`` of one run directory."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST
        self.data: dict[str, Any] = read_json(self.path) if self.path.is_file() else {}
        if not isinstance(self.data, dict):
            raise RunError(f"{self.path}: not a run record (a JSON object)")

    @property
    def invocations(self) -> list[dict]:
        return self.data.get("invocations", [])

    def claim(self, defining: dict, prediction: dict, config: dict) -> None:
        """Record a new run (its defining settings, prediction settings, resolved ``config`` and Hydra files), or
        check that this invocation continues the recorded one: a :class:`ConfigError` names the differences."""
        if not self.data:
            self.data = {"version": VERSION, "defining": defining, "prediction": prediction, "config": config,
                         "hydra_files": _hydra_files(self.run_dir), "invocations": []}
            self.save()
            return
        self.check_continues(defining)

    def check_continues(self, defining: dict) -> None:
        """Stop (:class:`ConfigError`, naming the differences) unless ``defining`` are the recorded settings."""
        diff = compare_records(self.data, {"version": VERSION, "defining": defining})
        if diff:
            raise ConfigError(
                f"{self.path}: this run directory holds a run made with other settings ({describe(diff)}); "
                "start a new run in another directory (leave out hydra.run.dir) or repeat the recorded settings"
            )

    def keep_hydra_files(self) -> None:
        """After an accepted invocation finished: its Hydra files are the ones to put back after a later failure."""
        self.data["hydra_files"] = _hydra_files(self.run_dir)
        self.save()

    def add_invocation(self, started: float, wall_seconds: float, energy_wh: float, folds: list[int],
                       phases: dict[str, float] | None = None, counts: dict[str, int] | None = None) -> None:
        """Record an invocation: when it started, its wall time, energy, the folds it finished, its seconds per
        phase and what it counted (:mod:`landslide.timing`)."""
        entry = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_seconds": round(wall_seconds, 2),
            "energy_wh": round(energy_wh, 6),
            "folds_trained": folds,
        }
        if phases is not None:
            entry["phases"] = phases
        if counts:
            entry["counts"] = counts
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

    def count_totals(self) -> dict[str, int]:
        """What every recorded invocation counted (:meth:`landslide.timing.PhaseTimer.count`), summed."""
        total: dict[str, int] = {}
        for invocation in self.invocations:
            total = add_counts(total, invocation.get("counts") or {})
        return total

    def save(self) -> None:
        write_json(self.path, self.data)


@contextmanager
def hydra_files_kept(run_dir: Path | str) -> Iterator[None]:
    """Put the Hydra files of the run recorded in ``run_dir`` back if the body fails (an error, a refusal, an
    interrupt): Hydra wrote this invocation's over them before it could be checked."""
    path = Path(run_dir) / MANIFEST
    try:
        recorded = json.loads(path.read_text()).get("hydra_files") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        recorded = None  # a damaged record: the body says so in one line
    try:
        yield
    except BaseException:
        for name, text in (recorded or {}).items():
            if name in HYDRA_FILES and isinstance(text, str):
                write_text(Path(run_dir) / ".hydra" / name, text)
        raise


# ------------------------------------------------------------------ reading a run's config
#: resolvers a config written before run.json held the config may use: they read, they do not act
_READ_ONLY_RESOLVERS = {"oc.env", "oc.select", "now", "best_precision", "on_gpu"}
_RESOLVER = re.compile(r"\$\{\s*([\w.]+)\s*:")
#: keys of an older run's ``.hydra/config.yaml`` left out before resolving it: nothing reads them, and some point
#: at the Hydra job that wrote them
_UNREAD = ("paths.output_dir", "trainer.default_root_dir", "logger", "callbacks")


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _strings(value)
    elif isinstance(tree, str):
        yield tree


def _hydra_config(run_dir: Path) -> dict[str, Any]:
    """The config of a run recorded before ``run.json`` held it, from ``.hydra/config.yaml``, resolved now with
    read-only resolvers only (a warning says that environment variables are read now, not at training time)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir / MANIFEST}: not found; is {run_dir} a finished training run?")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # a YAML or OmegaConf error
        raise RunError(f"{path}: cannot be read ({str(err).strip().splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise RunError(f"{path}: not a config (a mapping)")
    acting = sorted({name for text in _strings(raw) for name in _RESOLVER.findall(text)} - _READ_ONLY_RESOLVERS)
    if acting and not (run_dir / MANIFEST).is_file():  # a run of today's kind whose record is gone
        raise RunError(f"{run_dir / MANIFEST}: not found, and {path} cannot stand in for it (it uses resolver(s) "
                       f"{acting}); is {run_dir} a finished training run, or was its run.json removed?")
    if acting:
        raise RunError(f"{path}: uses resolver(s) {acting}; a run's config is read with plain values only")
    register_resolvers()  # also where no command registered them (aggregate, audit)
    cfg = OmegaConf.create(raw)
    for key in _UNREAD:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node:
            del node[leaf]
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:
        raise RunError(f"{path}: cannot be resolved ({str(err).strip().splitlines()[0]})") from None
    log.warning("%s: a run recorded before run.json held its config; its paths are resolved in today's environment",
                run_dir)
    return config


def read_run_config(run_dir: Path | str) -> dict[str, Any]:
    """The config a run was trained with, as plain values (never built, never resolved): ``run.json``'s copy, or
    for older runs ``.hydra/config.yaml``. One :class:`RunError` line when it cannot be used."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    config = _record(run_dir).get("config")
    if config is None:
        config = _hydra_config(run_dir)
    if not isinstance(config, dict):
        raise RunError(f"{path}: its config is not a mapping")
    interpolated = next((text for text in _strings(config) if "${" in text), None)
    if interpolated is not None:
        raise RunError(f"{path}: its config holds an interpolation ({interpolated[:60]!r}); a run's config is "
                       "recorded resolved, as plain values")
    return config


def read_prediction_settings(run_dir: Path) -> dict[str, Any] | None:
    """The run's recorded prediction settings (None for runs made before the record existed)."""
    path = Path(run_dir) / MANIFEST
    settings = _record(run_dir).get("prediction")
    if settings is not None and not isinstance(settings, dict):
        raise RunError(f"{path}: its prediction settings are not a mapping")
    return settings


def lookup(config: dict[str, Any], key: str, default: Any = None) -> Any:
    """A dotted key of a plain config (``default`` where any part is missing)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _record(run_dir: Path | str) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    record = read_json(path) if path.is_file() else {}
    if not isinstance(record, dict):
        raise RunError(f"{path}: not a run record (a JSON object)")
    return record


def recorded_fingerprint(run_dir: Path | str) -> str | None:
    """The fingerprint of the training split the run was trained on (None: no record)."""
    return _flatten(_record(run_dir).get("defining", {})).get(FINGERPRINT)


def recorded_nan_policy(run_dir: Path | str) -> str:
    """The NaN policy the run's training split was read with (part of its fingerprint)."""
    return str((_record(run_dir).get("prediction") or {}).get("nan_policy", "error"))
