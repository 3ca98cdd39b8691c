"""What each command checks before Hydra makes its output folder (a Hydra callback, ``hydra.callbacks.preflight``):
missing mandatory arguments, a run directory or release that is not there, options out of range, outputs that would
overwrite inputs or each other. A mistake stops with one line (exit 2) and leaves no stub folder behind.

Hydra calls :meth:`Preflight.on_run_start` after composing the config and before it creates the job's folder and
writes ``.hydra/`` there. A multirun's jobs are checked by the commands themselves, inside each job.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from landslide.errors import USER_ERRORS, ConfigError, ReleaseError, SceneError, print_error_line

if TYPE_CHECKING:
    from landslide.data.exclude import Exclusion
    from landslide.data.release import SplitIndex

#: what each mandatory argument is, for the one line that asks for it
MANDATORY = {
    "run_dir": "a training run's folder, e.g. run_dir=logs/train/runs/<date>",
    "scene": "the GeoTIFF to map, e.g. scene=stack.tif",
    "out": "the map to write, e.g. out=map.tif",
}
#: output folders locked by this process (an exclusive lock on the folder itself: no file is left behind)
_LOCKS: dict[str, int] = {}
#: the single run's output folder when the preflight found it absent (Hydra creates it next): this process's own
_NEW_OUTPUT: list[Path] = []
#: what a command's output folder holds before the command writes anything: Hydra's files, the log, CodeCarbon's
#: record of the whole run
_STUB_NAMES = frozenset({".hydra", "emissions.csv"})


def _is_stub(entry: Path) -> bool:
    return entry.name in _STUB_NAMES or (entry.is_file() and entry.suffix == ".log")


def _refused(err: BaseException) -> bool:
    """A user's mistake the command stopped on (one line, exit 2), not a crash or an interrupt."""
    return isinstance(err, USER_ERRORS) or (isinstance(err, SystemExit) and err.code == 2)


@contextmanager
def stub_removed_on_failure(folder: Path | str) -> Iterator[None]:
    """If the body stops on a user's mistake (bad input found by the job: one line, exit 2) and ``folder`` is the
    output folder this process's single run created, holding nothing but what Hydra and the energy tracker write at
    the start, remove it: a refused new run leaves no stub behind. A crash or an interrupt keeps its log and
    ``.hydra``; a folder that existed before, or that holds anything else (a fold's result or checkpoint, for a
    resume), is kept."""
    try:
        yield
    except BaseException as err:
        folder = Path(folder)
        if _refused(err) and _NEW_OUTPUT and folder.resolve() == _NEW_OUTPUT[0] and folder.is_dir() and all(
                _is_stub(entry) for entry in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        _NEW_OUTPUT.clear()  # one command's: never a later command's in the same process


@contextmanager
def preflight_errors() -> Iterator[None]:
    """A user's mistake found before the job starts: one line, exit 2."""
    try:
        yield
    except USER_ERRORS as err:
        print_error_line(str(err))
        raise SystemExit(2) from None


def missing_arguments(cfg: DictConfig, prefix: str = "") -> list[str]:
    """The keys of the command's config (Hydra's own left out) that are still ``???``; nothing is resolved (some
    keys point at the job Hydra has not started yet)."""
    missing = []
    for key in cfg:
        name = f"{prefix}{key}"
        if name == "hydra":
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            missing.extend(missing_arguments(node, f"{name}."))
        elif node is not None and node._is_missing():
            missing.append(name)
    return sorted(missing)


def check_mandatory(cfg: DictConfig) -> None:
    missing = missing_arguments(cfg)
    if missing:
        wanted = "; ".join(f"{k} ({MANDATORY[k]})" if k in MANDATORY else k for k in missing)
        raise ConfigError(f"{cfg.task_name}: missing mandatory argument{'s' if len(missing) > 1 else ''}: {wanted}")


def check_train(cfg: DictConfig) -> None:
    """The options in range, the release there (or the embedded set to be generated) with a sound training table,
    the run folder writable."""
    from landslide.files import check_writable
    from landslide.synth.embedded import describes, wanted_release
    from landslide.training.cv import check_options

    check_options(cfg)
    root = Path(cfg.data.root)
    synthetic = cfg.data.get("synthetic")
    synthetic = None if synthetic is None else OmegaConf.to_container(synthetic, resolve=True)
    generated = synthetic is not None and describes(root, synthetic)
    if generated:
        wanted_release(synthetic)  # settings no release can be made with
    if not generated and not (root / "Train.csv").is_file():
        where = "no folder" if not root.exists() else "no Train.csv"
        raise ReleaseError(f"data.root={root}: {where} there; data.root must be a release folder with Train.csv, "
                           "Test.csv, train_data/ and test_data/")
    from landslide.data.release import read_split_index

    # the training table and its files (a duplicated ID, no rows, a missing .npy) checked before the run folder exists
    index = read_split_index(root, "train") if (root / "Train.csv").is_file() else None
    exclusion = None
    if cfg.data.get("exclude"):
        from landslide.data.exclude import read_exclusion

        exclusion = read_exclusion(cfg.data.exclude, index.ids if index is not None else None)
    check_resumed_settings(cfg, index, exclusion)
    check_writable("hydra.run.dir", Path(cfg.hydra.run.dir), folder=True)


def check_resumed_settings(cfg: DictConfig, index: SplitIndex | None = None, exclusion: Exclusion | None = None
                           ) -> None:
    """A run folder that holds a run made with other options, other training data (the fingerprint of ``index``,
    the training split as it is now) or another list of excluded IDs is refused here, before the job writes its log
    and energy into it. Where the data is not there yet (a release to be generated), the job compares its
    fingerprint."""
    from landslide.data.cache import cache_key
    from landslide.run_record import FINGERPRINT, MANIFEST, RunManifest, defining_settings

    run_dir = Path(cfg.hydra.run.dir)
    if not (run_dir / MANIFEST).is_file():
        return
    record = RunManifest(run_dir)
    recorded = record.data.get("defining", {})
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        fingerprint = recorded.get(FINGERPRINT) if index is None else \
            cache_key(index, cfg.data.cloud_threshold, str(cfg.data.nan_policy))
        defining = defining_settings(job, fingerprint, None if exclusion is None else exclusion.record())
    except Exception:  # a setting only the job can resolve: its own comparison decides
        return
    record.check_continues(defining)


def check_predict(cfg: DictConfig) -> None:
    from landslide.inference.ensemble import load_run
    from landslide.inference.options import check_predict_options, check_prediction_out

    check_predict_options(tta=cfg.get("tta"), precision=cfg.get("precision"), nan_policy=cfg.data.get("nan_policy"),
                          device=str(cfg.device), batch_size=cfg.batch_size)
    load_run(Path(cfg.run_dir))
    root = cfg.data.get("root")
    if root is not None and not (Path(root) / "Test.csv").is_file():
        where = "no folder" if not Path(root).exists() else "no Test.csv"
        raise ReleaseError(f"data.root={root}: {where} there; it must be a release folder with Test.csv and "
                           "test_data/")
    check_prediction_out(cfg.run_dir, cfg.out)
    lock_output(Path(cfg.out))


def check_map(cfg: DictConfig) -> None:
    from landslide.inference.ensemble import load_run
    from landslide.inference.options import check_map_options, check_map_outputs, map_outputs

    check_map_options(mode=cfg.mode, stride=cfg.stride, blend=cfg.blend, blend_by_mode=cfg.blend_by_mode,
                      dtype=cfg.dtype, threshold=cfg.threshold,
                      min_valid=cfg.min_valid, min_area_m2=cfg.min_area_m2, smooth=cfg.smooth,
                      windows_per_batch=cfg.windows_per_batch, batch_size=cfg.batch_size, tta=cfg.tta,
                      device=str(cfg.device))
    if not Path(cfg.scene).is_file():
        raise SceneError(f"scene={cfg.scene}: not found")
    if cfg.get("truth") and not Path(cfg.truth).is_file():
        raise ConfigError(f"truth={cfg.truth}: not found")
    load_run(Path(cfg.run_dir))
    check_map_outputs(map_outputs(cfg.out, cfg.vector, cfg.summary, cfg.get("figure")),
                      {"scene": cfg.scene, "truth": cfg.get("truth")})


def check_audit(cfg: DictConfig) -> None:
    from landslide.audit import check_options

    check_options(cfg.run_dir, cfg.source, cfg.top, cfg.figure_top, cfg.out, filter_by=cfg.filter_by,
                  rank_by=cfg.rank_by)
    if cfg.get("truth") and not Path(cfg.truth).is_file():
        raise ConfigError(f"truth={cfg.truth}: not found")


CHECKS = {"train": check_train, "predict": check_predict, "map": check_map, "audit": check_audit}


def lock_output(out: Path) -> None:
    """Take ``out`` for this process (one predict per output folder at a time), after every other check."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"out={out}: another command is writing there now; wait for it or choose another "
                          "out=") from None
    _LOCKS[str(out)] = fd


def release_output(out: Path | str) -> None:
    """Release ``out`` if this process holds it."""
    fd = _LOCKS.pop(str(out), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class Preflight(Callback):
    """Checks a single run's inputs before Hydra creates its output folder (see the module's docstring)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with preflight_errors():
            check_mandatory(config)
            output = Path(str(config.hydra.run.dir))  # before the checks: predict's lock makes the folder
            _NEW_OUTPUT[:] = [] if output.exists() else [output.resolve()]
            check = CHECKS.get(str(config.get("task_name")))
            if check is not None:
                check(config)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        out = config.get("out") if config.get("task_name") == "predict" else None
        if out is not None:
            release_output(out)
