"""Merge folds trained as separate jobs into one run directory, as a single ``train.py`` run writes it.

``python train.py -m data.fold=0,1,...,9 hydra/launcher=joblib`` trains each fold in its own job folder;
``python -m landslide.aggregate <job folders or the sweep folder> --out <dir>`` then writes ``<dir>/folds/fold_<k>/``
(copied), ``run.json`` (the jobs' defining settings, which must be equal as a resumed run's must; the first job's
config with ``data.fold`` null, also written to ``.hydra/config.yaml`` for reading; all their invocations: time and
energy add up), ``cv_summary.json`` and ``oof_predictions.csv``. ``predict.py run_dir=<dir>`` reads it like any run.

The jobs' configs are read from their ``run.json`` as plain values: the datamodule that gives the labels and folds is
built by its own constructor from them, no data is generated, and nothing named in them is imported or built but
the W&B and TensorBoard loggers of :data:`RUN_LOGGERS`, which give the merged run its own W&B run and TensorBoard
session as ``train.py`` gives a run (written into ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import OmegaConf

from landslide.data.datamodule import LandslideDataModule
from landslide.errors import RunError, first_line, print_error_line, user_errors
from landslide.files import read_json, remove_stale_temporaries, temporary_path, write_json, write_text
from landslide.run_record import (
    MANIFEST,
    RunManifest,
    compare_records,
    describe,
    differences,
    lookup,
    read_run_config,
    recorded_fingerprint,
)
from landslide.training.run_logging import log_run

log = logging.getLogger("landslide.aggregate")

#: per-fold logger folders of a run directory, copied with the folds
LOGGER_DIRS = ("csv", "tensorboard")
#: the logger classes a merged run's own W&B run and TensorBoard session are made with; other entries of the jobs'
#: ``logger`` config are left out (nothing else named in a job's config is built)
RUN_LOGGERS = frozenset({
    "lightning.pytorch.loggers.WandbLogger", "lightning.pytorch.loggers.wandb.WandbLogger",
    "lightning.pytorch.loggers.TensorBoardLogger", "lightning.pytorch.loggers.tensorboard.TensorBoardLogger",
})


@dataclass
class Job:
    """One job folder: its config (as its ``run.json`` recorded it, plain values), its record and the folds it was
    meant to train."""

    folder: Path
    config: dict
    record: dict
    folds: list[int]


def read_job(folder: Path) -> Job:
    """A job folder's config and record; it trains ``data.fold`` or, when that is null, every fold."""
    record_path = folder / MANIFEST
    if not record_path.is_file():
        raise RunError(f"{record_path}: not found; is {folder} a train.py job folder?")
    record = read_json(record_path)
    if not isinstance(record, dict) or not isinstance(record.get("defining"), dict):
        raise RunError(f"{record_path}: holds no run record (defining settings, folds); was {folder} made by "
                       "train.py?")
    config = read_run_config(folder)
    num_folds = lookup(config, "data.num_folds")
    fold = lookup(config, "data.fold")
    if not isinstance(num_folds, int) or not (fold is None or isinstance(fold, int)):
        raise RunError(f"{record_path}: its config names no folds (data.num_folds, data.fold)")
    folds = [fold] if fold is not None else list(range(num_folds))
    return Job(folder, config, record, folds)


def _job_number(folder: Path) -> tuple[int, str]:
    """Hydra's job folders by job number (``2_...`` before ``10_...``), others after them by name."""
    head = folder.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, folder.name)


def job_folders(paths: list[Path]) -> list[Path]:
    """The given folders; a sweep folder (Hydra's ``multirun.yaml``, no ``run.json``) stands for its job folders."""
    out: list[Path] = []
    for path in paths:
        if not (path / MANIFEST).is_file() and (path / "multirun.yaml").is_file():
            # hidden folders are not Hydra's jobs (a merge interrupted there left its temporary folder)
            jobs = [p for p in path.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith(".")]
            out.extend(sorted(jobs, key=_job_number))
        else:
            out.append(path)
    return out


def collect(folders: list[Path]) -> tuple[list[Job], dict[int, Job]]:
    """Read and check the jobs: equal defining settings, every fold finished exactly once."""
    jobs = [read_job(f) for f in folders]
    if not jobs:
        raise RunError("no job folders given")
    first = jobs[0]
    owner: dict[int, Job] = {}
    for job in jobs:
        diff = compare_records(first.record, job.record) + differences(first.record.get("prediction", {}),
                                                                        job.record.get("prediction", {}))
        if diff:
            raise RunError(f"{job.folder}: other settings than {first.folder} ({describe(diff)})")
        for fold in job.folds:
            done = job.folder / "folds" / f"fold_{fold}" / "result.json"
            if not done.is_file():
                raise RunError(f"{done}: missing; fold {fold} of {job.folder} is unfinished")
            if fold in owner:
                raise RunError(f"fold {fold} is in both {owner[fold].folder} and {job.folder}")
            owner[fold] = job
    num_folds = int(lookup(first.config, "data.num_folds"))
    missing = sorted(set(range(num_folds)) - set(owner))
    if missing:
        raise RunError(f"fold(s) {missing} of {num_folds} missing: no job folder among {len(jobs)} holds them")
    return jobs, owner


def _has_target(tree: Any) -> bool:
    if isinstance(tree, dict):
        return "_target_" in tree or any(_has_target(v) for v in tree.values())
    return isinstance(tree, list) and any(_has_target(v) for v in tree)


def datamodule_settings(config: dict, source: Path) -> dict[str, Any]:
    """The :class:`LandslideDataModule` arguments in a job's recorded ``data`` config, as plain values: nothing in
    it is built (a ``_target_`` anywhere below ``data`` is refused), and no data is generated."""
    data = config.get("data")
    if not isinstance(data, dict):
        raise RunError(f"{source}: its config has no data settings")
    for key, value in data.items():
        if _has_target(value):
            raise RunError(f"{source}: data.{key} holds a _target_; a run's config is read as plain values, never "
                           "built")
    accepted = set(inspect.signature(LandslideDataModule).parameters)
    settings = {"masks": False, **{k: v for k, v in data.items() if k in accepted}}  # runs before masks read none
    settings.update(fold=None, synthetic=None)  # the jobs' data exists already: nothing is generated
    return settings


def labelled_data(config: dict, fingerprint: str | None, source: Path) -> LandslideDataModule:
    """The jobs' datamodule (labels, IDs, folds) from the cached training split, which must be the one they trained
    on."""
    from landslide.training.fold import option_errors

    try:
        with option_errors("data"):
            dm = LandslideDataModule(**datamodule_settings(config, source))
    except TypeError as err:  # a setting missing or of the wrong kind
        raise RunError(f"{source}: its data settings cannot be used ({first_line(err)})") from None
    dm.prepare_data()
    if fingerprint is not None and dm.split("train").meta["key"] != fingerprint:
        raise RunError(f"{dm.root}: its training split is not the one the jobs trained on; run the aggregate where "
                       "data.root resolves as it did for the jobs")
    return dm


def run_loggers(config: dict, out: Path, source: Path) -> dict[str, dict]:
    """The jobs' W&B and TensorBoard logger entries (:data:`RUN_LOGGERS`), writing into the merged run ``out``."""
    kept: dict[str, dict] = {}
    for name, entry in (config.get("logger") or {}).items():
        if not isinstance(entry, dict) or entry.get("_target_") not in RUN_LOGGERS:
            continue  # CSV keeps per-fold files only (copied with the folds); other loggers are not built
        if any(_has_target(value) for value in entry.values()):
            raise RunError(f"{source}: logger.{name} holds a nested _target_; a run's config is never built")
        kept[name] = {**entry, "save_dir": str(out)}
    return kept


def _copy_fold(job: Job, fold: int, out: Path) -> None:
    name = f"fold_{fold}"
    shutil.copytree(job.folder / "folds" / name, out / "folds" / name, dirs_exist_ok=True)
    for sub in LOGGER_DIRS:
        if (job.folder / sub / name).is_dir():
            shutil.copytree(job.folder / sub / name, out / sub / name, dirs_exist_ok=True)


def aggregate(folders: list[Path], out: Path) -> dict:
    """Write the merged run directory ``out``; return its CV summary."""
    from landslide.training.summary import check_result, fold_table, print_summary, render

    if (out / MANIFEST).is_file():  # the output first: a wrong --out is named before any job is read
        raise RunError(f"{out / MANIFEST}: {out} already holds a run; choose another --out")
    target = out.resolve()
    for given in folders:
        source = Path(given).resolve()
        if target == source or source in target.parents or target in source.parents:
            raise RunError(f"--out {out}: {'is' if target == source else 'lies in or holds'} the folder {given} it "
                           "merges (a later aggregate or report would take the merged run for a job); choose a "
                           "folder outside it")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise RunError(f"--out {out}: {'is not a folder' if not out.is_dir() else 'is not empty'}; the merged run "
                       "is written into a new or empty folder")
    # the folder itself (a symlink's target, "." by its name): renamed into place, then written to by its full name
    named, out = out, target
    jobs, owner = collect(job_folders([Path(f) for f in folders]))
    first = jobs[0]
    config = copy.deepcopy(first.config)
    config["data"]["fold"] = None
    dm = labelled_data(config, recorded_fingerprint(first.folder), first.folder / MANIFEST)
    results, seen = [], {}  # read and checked in the jobs' folders, before anything is written
    for fold, job in sorted(owner.items()):
        path = job.folder / "folds" / f"fold_{fold}" / "result.json"
        results.append(check_result(read_json(path), fold, len(dm.labels), path))
        for i in (results[-1].get("oof") or {}).get("index", []):
            if seen.setdefault(i, path) != path:
                raise RunError(f"{path}: validates training image {dm.train_ids[i]} that {seen[i]} validates too; "
                               "each image belongs to one fold")

    # written into a temporary folder beside --out and renamed to it whole: a failure leaves no half-merged run
    out.parent.mkdir(parents=True, exist_ok=True)
    building = temporary_path(out)
    remove_stale_temporaries(out.parent, of=out)  # what an interrupted merge into this --out left
    shutil.rmtree(building, ignore_errors=True)
    try:
        try:
            summary = _write_merged(jobs, owner, config, dm, results, building)
            render(fold_table(summary))  # the table printed below: every value it shows is checked before the rename
        except (KeyError, TypeError, ValueError, IndexError) as err:  # a result the checks above let through
            raise RunError(f"the jobs' fold results cannot be merged ({type(err).__name__}: {first_line(err)}); "
                           f"were they all written by train.py?") from None
        inside = Path.cwd().resolve() == out  # --out . : the process moves into the new folder with it
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(building, out)
        if inside:
            os.chdir(out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    loggers = run_loggers(config, out, first.folder / MANIFEST)
    if loggers or config.get("log_figures"):  # figures, the merged run's W&B run and TensorBoard session
        log_run(OmegaConf.create({**config, "logger": loggers}), out, dm)
    print_summary(summary)
    log.info("merged %d fold(s) from %d job(s) into %s", len(owner), len(jobs), named)
    return summary


def _write_merged(jobs: list[Job], owner: dict[int, Job], config: dict, dm: LandslideDataModule,
                  results: list[dict], out: Path) -> dict:
    """The merged run directory's files in ``out``: the folds copied, the config, ``run.json``, the summary and the
    out-of-fold predictions; return the summary."""
    from landslide.training.cv import folder_bytes, training_rate, write_oof
    from landslide.training.summary import summarise

    first = jobs[0]
    for fold, job in sorted(owner.items()):
        _copy_fold(job, fold, out)
    config_text = OmegaConf.to_yaml(config)  # plain values (no interpolation is left in a recorded config)
    write_text(out / ".hydra" / "config.yaml", config_text)

    record = RunManifest(out)
    record.data = {
        **first.record,
        "config": config,
        "hydra_files": {"config.yaml": config_text},
        "invocations": [inv for job in jobs for inv in job.record.get("invocations", [])],
        "merged_from": [str(job.folder) for job in jobs],
    }
    wall, wh = record.totals()
    summary = summarise(OmegaConf.create(config), dm, results, wall, wh)
    summary["invocations"] = len(record.invocations)
    summary["phases"] = record.phase_totals()  # the jobs' seconds per phase, added up like their wall times
    summary.update(training_rate(summary["phases"], record.count_totals()))
    if summary.get("oof_f1") is not None:
        write_oof(out / "oof_predictions.csv", dm, results)
    summary["run_dir_mb"] = round(folder_bytes(out) / 1e6, 1)
    write_json(out / "cv_summary.json", summary)
    record.save()  # last: a folder with run.json is a finished merge
    return summary


class OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes as one error line (exit 2), with the usage in it."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        print_error_line(f"{self.prog}: {message} (usage: {usage})")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m landslide.aggregate",
                           description="Merge folds trained as separate jobs into one run directory.")
    parser.add_argument("runs", nargs="+", type=Path, help="job folders (or a sweep folder holding them)")
    parser.add_argument("--out", required=True, type=Path, help="the run directory to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    with user_errors():
        aggregate(args.runs, args.out)


if __name__ == "__main__":
    main()
