"""``train``, ``predict`` and ``make_map``: compose, instantiate, run. The thin entry points call these, through
:func:`run_command` (a mistyped option is one line that names the key meant)."""

from __future__ import annotations

import atexit
import difflib
import gc
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from landslide.errors import first_line, print_error_line, user_errors
from landslide.preflight import stub_removed_on_failure
from landslide.resolvers import register_resolvers
from landslide.timing import LAUNCH, PhaseTimer, phase, process_age

STARTUP = "startup"  # a phase (landslide.timing): the imports and set-up before the command's work

log = logging.getLogger(__name__)


register_resolvers()

CONFIG_DIR = os.environ.get("LANDSLIDE_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "configs"))


def _drop_advertisements(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _quiet_third_parties() -> None:
    """Silence, at their source, warnings that do not concern the user."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*", module="lightning")
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*", module="lightning.pytorch.utilities._pytree")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    logging.getLogger("rasterio").setLevel(logging.WARNING)  # GDAL's errors reach the user as our one line
    # Lightning prints through its own handler and through Hydra's: keep Hydra's (it also writes the run's log)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_advertisements)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def _tune_host(cfg: DictConfig) -> None:
    from landslide.hardware import tune_host_allocator

    if cfg.tune_host_allocator and tune_host_allocator():
        log.debug("host allocator tuned: freed memory stays in the process")


def print_config(cfg: DictConfig) -> None:
    """The composed config as a rich tree."""
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config")
    for key in cfg:
        branch = tree.add(str(key))
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml"))
    rprint(tree)


def _trust(cfg: DictConfig) -> None:
    """Register the user's network classes that the config names (``trusted_networks``): the run's checkpoints may
    then be rebuilt with them."""
    from landslide.errors import ConfigError
    from landslide.models import trust_networks

    try:
        trust_networks(list(cfg.get("trusted_networks") or []))
    except ValueError as err:
        raise ConfigError(f"trusted_networks: {err}") from None


#: whether this process may still count a launch: once, for its first command's timer
_launch_pending = True
#: the scripts and modules a process is started with to run one command
_COMMAND_SCRIPTS = frozenset({"train.py", "predict.py", "map.py"})


def _started_for_a_command() -> bool:
    """Whether this interpreter was started to run a command (``python train.py``, ``landslide-train``, ``python -m
    landslide.audit``), not a session that calls commands among other work (a test session, a notebook)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and str(spec.name).startswith("landslide"):
        return True
    name = Path(str(getattr(main, "__file__", "") or "")).name
    return name in _COMMAND_SCRIPTS or name.startswith("landslide-")


def command_timer() -> PhaseTimer:
    """The command's phase timer; the first command of a process started to run it (a multirun's first job) starts
    it with the launch: the interpreter, imports, Hydra and the preflight."""
    global _launch_pending
    timer = PhaseTimer()
    if _launch_pending and _started_for_a_command():
        timer.add_before(LAUNCH, process_age())
    _launch_pending = False
    return timer


def train(cfg: DictConfig) -> float | None:
    """Train the two-stage pipeline over the folds; return the out-of-fold F1 (the value sweepers optimise)."""
    with command_timer().activate() as timer:
        with phase(STARTUP):  # the heavy imports, the config printed, the seeds
            import lightning as L

            from landslide.hardware import cuda_sync
            from landslide.run_record import hydra_files_kept
            from landslide.training.cv import run_cv
            from landslide.training.ranks import is_rank_zero
            from landslide.training.search import warn_without_holdout

            timer.sync = cuda_sync  # the GPU's queued work counts in the phase that queued it
            _quiet_third_parties()
            _tune_host(cfg)
            if cfg.print_config and is_rank_zero():
                print_config(cfg)
            warn_without_holdout(cfg)
            L.seed_everything(int(cfg.seed), workers=True)
        # Hydra wrote this invocation's .hydra/ into the run directory: a failed or refused one puts the run's back
        kept = hydra_files_kept(cfg.paths.output_dir) if is_rank_zero() else nullcontext()
        stub = stub_removed_on_failure(cfg.paths.output_dir) if is_rank_zero() else nullcontext()
        with stub, kept, user_errors():
            summary = run_cv(cfg)
    value = summary.get(cfg.optimized_metric)
    return None if value is None else float(value)


def predict(cfg: DictConfig) -> dict:
    """Predict a test set with a training run's fold ensemble."""
    with command_timer().activate() as timer:
        with phase(STARTUP):
            from landslide.hardware import cuda_sync
            from landslide.inference.ensemble import predict_run
            from landslide.preflight import release_output

            timer.sync = cuda_sync  # the GPU's queued work counts in the phase that queued it
            _quiet_third_parties()
            _tune_host(cfg)
        try:
            with stub_removed_on_failure(cfg.out), user_errors():
                _trust(cfg)
                return predict_run(
                    cfg.run_dir, cfg.out, cfg.data.get("root"), cfg.data.get("cache_dir"), cfg.batch_size,
                    cfg.get("tta"), str(cfg.device), cfg.get("precision"), cfg.data.get("nan_policy"),
                )
        finally:
            release_output(cfg.out)


def make_map(cfg: DictConfig) -> dict:
    """Map a scene with a training run's fold ensemble: probability COG, optional polygons and figure, summary."""
    with command_timer().activate() as timer:
        with phase(STARTUP):
            from landslide.hardware import cuda_sync

            timer.sync = cuda_sync  # the GPU's queued work counts in the phase that queued it
            _quiet_third_parties()
            _tune_host(cfg)
        return _make_map(cfg)


def _make_map(cfg: DictConfig) -> dict:
    from landslide.inference.scene import predict_scene

    with user_errors():
        _trust(cfg)
        bands = cfg.get("bands")
        return predict_scene(
            cfg.run_dir, cfg.scene, cfg.out, mode=cfg.mode, stride=cfg.stride, blend=cfg.blend,
            blend_by_mode=OmegaConf.to_container(cfg.blend_by_mode), dtype=cfg.dtype,
            threshold=cfg.threshold, min_valid=cfg.min_valid, min_area_m2=cfg.min_area_m2, smooth=cfg.smooth,
            resolution_m=float(cfg.resolution_m), resolution_tolerance=float(cfg.resolution_tolerance),
            windows_per_batch=cfg.windows_per_batch, batch_size=cfg.batch_size, tta=cfg.tta, device=str(cfg.device),
            progress=bool(cfg.progress), gdal_cache_mb=int(cfg.gdal_cache_mb), vector=cfg.vector,
            summary=cfg.summary, figure=cfg.get("figure"), truth=cfg.get("truth"),
            band_map=None if bands is None else OmegaConf.to_container(bands),
        )


def audit(cfg: DictConfig) -> dict:
    """Rank a training run's images by how likely their label is wrong (:mod:`landslide.audit`)."""
    from landslide.audit import audit as run_audit

    _quiet_third_parties()
    with stub_removed_on_failure(cfg.out), user_errors():
        return run_audit(cfg.run_dir, cfg.out, source=str(cfg.source), top=cfg.top, filter_by=str(cfg.filter_by),
                         rank_by=str(cfg.rank_by), figure_top=cfg.figure_top, truth=cfg.truth,
                         data_root=cfg.data_root)


# ------------------------------------------------------------------ the commands
_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^'/]+)'")


def _compose(config_name: str, overrides: list[str]) -> DictConfig | None:
    """The config as these overrides compose it (None when they do not)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except Exception:  # the other overrides do not compose either: no suggestion
        return None
    finally:
        GlobalHydra.instance().clear()


def _closest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key_message(key: str, config_name: str, overrides: list[str]) -> str:
    """One line for an override of a key the config lacks, naming the key meant (or the keys there are)."""
    given = next((o for o in overrides if o.split("=", 1)[0].lstrip("~+") == key), key)
    others = [o for o in overrides if o is not given and not o.startswith("-")]
    cfg = _compose(config_name, others)
    node: Any = cfg
    done: list[str] = []
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            break
        if part not in node:
            keys = [str(k) for k in node]
            meant = _closest(part, keys)
            where = ".".join(done) or "the config"
            if meant:
                return f"{given}: {where} has no key {part!r}; did you mean {'.'.join([*done, meant])}?"
            return f"{given}: {where} has no key {part!r} (its keys: {', '.join(keys[:20])})"
        node = node._get_node(part)
        done.append(part)
    return f"{given}: the config has no key {key} (+{key}=... adds a new one)"


def run_command(main: Callable[[], Any], config_name: str) -> None:
    """Run a ``@hydra.main`` function as a command; an override of a key the config lacks, or a choice a config
    group lacks, stops with one line that names what was meant (exit 2) instead of Hydra's report."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    # when the interpreter exits (and only then: a notebook or test session goes on collecting), every object is
    # moved out of the garbage collector's reach first, so the exit does not walk them all (about 1 s after a run on
    # a CPU); what must happen at exit is explicit (files closed, loggers finished, atexit handlers) and still runs
    atexit.unregister(gc.freeze)  # once a process, however many commands it runs
    atexit.register(gc.freeze)
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    if full_error == "1":  # the user asked for Hydra's own report
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach us instead of being printed
    try:
        main()
    except MissingConfigException as err:
        found = _MISSING_OPTION.search(str(err))
        if not found or not err.options:
            raise
        group, choice = found.groups()
        meant = _closest(choice, list(err.options))
        hint = f"did you mean {meant}? " if meant else ""
        print_error_line(f"{group}={choice}: no such choice; {hint}(choices: {', '.join(err.options)})")
        raise SystemExit(2) from None
    except ConfigCompositionException as err:
        found = _OVERRIDE.search(str(err))
        if found:
            print_error_line(unknown_key_message(found.group(1), config_name, sys.argv[1:]))
        else:
            cause = f" ({first_line(err.__cause__)})" if err.__cause__ else ""
            print_error_line(f"{first_line(err)}{cause}")
        raise SystemExit(2) from None
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _train_main(cfg: DictConfig) -> float | None:
    return train(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def _predict_main(cfg: DictConfig) -> dict:
    return predict(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="map")
def _map_main(cfg: DictConfig) -> dict:
    return make_map(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="audit")
def _audit_main(cfg: DictConfig) -> dict:
    return audit(cfg)


def train_entry() -> None:
    """``landslide-train``: as ``python train.py``."""
    run_command(_train_main, "train")


def predict_entry() -> None:
    """``landslide-predict``: as ``python predict.py``."""
    run_command(_predict_main, "predict")


def map_entry() -> None:
    """``landslide-map``: as ``python map.py``."""
    run_command(_map_main, "map")


def audit_entry() -> None:
    """``landslide-audit``: as ``python -m landslide.audit``."""
    run_command(_audit_main, "audit")
