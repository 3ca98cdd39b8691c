"""Compare approaches from a multirun folder: validation F1 per epoch (mean over folds) and a table of final
CV metrics, wall time and energy, also sent to W&B when the sweep's jobs logged there.
``python -m landslide.report <multirun dir> [--out DIR]``.

Each approach is named by its ``name``; jobs that share one (the trials of a search, a sweep over a setting) are
told apart by the overrides in which they differ (``final: lr=0.00123, batch_size=64``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import ListConfig, OmegaConf

from landslide.cv_results import epoch_curve
from landslide.errors import RunError, first_line, user_errors
from landslide.files import check_writable, read_json, write_text
from landslide.plots.curves import approach_curves_figure, save_figure, table_figure

log = logging.getLogger("landslide.report")

COLUMNS = {
    "name": "approach",
    "oof_f1": "OOF F1",
    "oof_threshold": "OOF threshold",
    "f1_mean": "fold F1 mean",
    "f1_std": "fold F1 std",
    "oof_f1_at_0.5": "OOF F1 @0.5",
    "features_oof_f1": "features+XGBoost OOF F1",
    "filtered_fraction": "filtered",
    "positives_lost": "positives lost",
    "wall_seconds": "wall s",
    "energy_wh": "energy Wh",
}


def _summary(path: Path) -> dict | None:
    """A run's CV summary; None (with a warning naming it) when it is damaged."""
    try:
        summary = read_json(path)
    except RunError as err:
        log.warning("%s; left out of the report", err)
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("folds", []), list):
        log.warning("%s: not a CV summary; left out of the report", path)
        return None
    for key in COLUMNS:
        value = summary.get(key)
        if key != "name" and value is not None and not (isinstance(value, int | float) and not isinstance(value, bool)):
            log.warning("%s: %s is %r, not a number; left out of the report", path, key, value)
            return None
    return summary


def _plain_yaml(path: Path) -> Any:
    """A YAML file of a job folder as plain values: nothing in it is resolved or built."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # a YAML or OmegaConf error
        raise RunError(f"{path}: cannot be read ({first_line(err)})") from None


def _plain_value(value: Any) -> Any:
    """A setting read from a job's file, or None where it is an unresolved interpolation (never resolved here)."""
    return None if isinstance(value, str) and "${" in value else value


def collect(folder: Path | str) -> list[dict]:
    """Every ``cv_summary.json`` below ``folder`` that trained a network."""
    summaries = []
    for path in sorted(Path(folder).rglob("cv_summary.json")):
        summary = _summary(path)
        if summary is not None and summary.get("oof_f1") is None:
            log.info("%s: no out-of-fold F1 (no network trained: stage=%s); left out of the report", path,
                     summary.get("stage", "?"))
        elif summary is not None:
            summary["path"] = str(path.parent)
            summaries.append(summary)
    if not summaries:
        raise RunError(f"{folder}: no cv_summary.json of a trained run below it")
    return summaries


def expected_jobs(folder: Path) -> list[list[str]]:
    """The jobs a basic-sweeper multirun was asked to run (their override lists), from its ``multirun.yaml``;
    empty when the folder is not such a multirun (an Optuna search, a plain folder of runs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = folder / "multirun.yaml"
    if not path.is_file():
        return []
    config = _plain_yaml(path)
    hydra = config.get("hydra", {}) if isinstance(config, dict) else {}
    if "basic_sweeper" not in str((hydra.get("sweeper") or {}).get("_target_", "")):
        return []
    task = (hydra.get("overrides") or {}).get("task") or []
    try:
        overrides = OverridesParser.create().parse_overrides([str(o) for o in task])
    except Exception as err:  # Hydra's override grammar
        raise RunError(f"{path}: its overrides cannot be read ({first_line(err)})") from None
    return BasicSweeper.split_arguments(overrides, None)[0]


def missing_jobs(folder: Path | str, summaries: list[dict]) -> list[str]:
    """The expected jobs of a multirun that left no finished ``cv_summary.json`` among ``summaries`` (what
    :func:`collect` found: failed or never started)."""
    finished = []
    for summary in summaries:
        overrides = Path(summary["path"]) / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            finished.append(sorted(str(o) for o in _plain_yaml(overrides) or []))
    return [" ".join(job) for job in expected_jobs(Path(folder)) if sorted(job) not in finished]


def f1_curve(summary: dict, key: str = "val/f1") -> np.ndarray:
    """Validation F1 per epoch, averaged over the folds that reached each epoch."""
    return epoch_curve(summary, key)[0]


def job_overrides(job: Path) -> dict[str, str]:
    """A job's command-line overrides (``.hydra/overrides.yaml``) as ``{key: value}``; a deletion ``~key`` has the
    value ``deleted``."""
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    found = {}
    for override in _plain_yaml(path) or []:
        key, _, value = str(override).partition("=")
        if key.startswith("~"):
            key, value = key[1:], "deleted"
        found[key.lstrip("+")] = value
    return found


def _short_value(value: str) -> str:
    """A sampled float with 3 significant digits; anything else as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return format(number, ".3g") if any(c in value for c in ".eE") else value


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key by its last part, unless two keys share it (then in full)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: short if last.count(short) == 1 else k for k, short in zip(keys, last)}


def approach_labels(summaries: list[dict]) -> list[str]:
    """The approach's name; where jobs share a name, followed by the overrides in which they differ."""
    names = [str(s.get("name")) for s in summaries]
    overrides = [job_overrides(Path(s["path"])) for s in summaries]
    labels = []
    for i, name in enumerate(names):
        same = [j for j, n in enumerate(names) if n == name]
        if len(same) == 1:
            labels.append(name)
            continue
        keys = list(dict.fromkeys(k for j in same for k in overrides[j]))
        differing = [k for k in keys if len({overrides[j].get(k) for j in same}) > 1]
        short = _short_keys(differing)
        parts = [f"{short[k]}={_short_value(overrides[i].get(k, '-'))}" for k in differing]
        labels.append(f"{name}: {', '.join(parts)}" if parts else f"{name} ({Path(summaries[i]['path']).name})")
    for i, label in enumerate(labels):  # still equal (rounded values): the job folder tells them apart
        if labels.count(label) > 1:
            labels[i] = f"{label} ({Path(summaries[i]['path']).name})"
    return labels


def table(summaries: list[dict], labels: list[str] | None = None) -> pd.DataFrame:
    rows = [{k: s.get(k) for k in COLUMNS} for s in summaries]
    for row, label in zip(rows, labels or []):
        row["name"] = label
    frame = pd.DataFrame(rows).rename(columns=COLUMNS)
    return frame.sort_values("OOF F1", ascending=False).reset_index(drop=True)


def wandb_settings(summaries: list[dict]) -> dict | None:
    """Project, entity, tags and offline mode of the W&B logger the sweep's jobs used, if any (read from their
    ``.hydra/config.yaml``; the logger's class is recognised by name, nothing from the file is imported)."""
    for summary in summaries:
        path = Path(summary["path"]) / ".hydra" / "config.yaml"
        if not path.is_file():
            continue
        config = _plain_yaml(path)
        loggers = config.get("logger") if isinstance(config, dict) else None
        for entry in (loggers or {}).values():
            if isinstance(entry, dict) and str(entry.get("_target_", "")).endswith(".WandbLogger"):
                return {key: _plain_value(entry.get(key)) for key in ("project", "entity", "tags", "offline")}
    return None


def log_to_wandb(settings: dict, folder: Path, out: Path, frame: pd.DataFrame, curves: dict[str, np.ndarray],
                 paths: dict[str, Path]) -> str:
    """The report as a W&B run (job type ``report``): the table, the F1 curves as a chart and the figures."""
    import wandb

    init = {k: settings[k] for k in ("project", "entity") if settings.get(k) is not None}
    tags = settings.get("tags")
    with wandb.init(**init, job_type="report", name=f"report-{folder.resolve().name}", dir=str(out),
                    tags=list(tags) if isinstance(tags, list | ListConfig) else None,
                    mode="offline" if settings.get("offline") else None, reinit="finish_previous",
                    config={"folder": str(folder), "approaches": list(curves)}) as run:
        names = [n for n, c in curves.items() if len(c)]
        run.log({
            "table": wandb.Table(dataframe=frame),
            "f1_curves": wandb.plot.line_series(
                xs=[list(range(1, len(curves[n]) + 1)) for n in names],
                ys=[[None if np.isnan(v) else float(v) for v in curves[n]] for n in names], keys=names,
                title="validation F1 per approach (mean over folds)", xname="epoch"),
            "figures/f1_curves": wandb.Image(str(paths["curves"])),
            "figures/table": wandb.Image(str(paths["table_png"])),
        })
        return run.id


def render(folder: Path | str, out: Path | str | None = None) -> dict[str, Path]:
    """Write ``f1_curves.png``, ``table.md`` and ``table.png`` and return their paths; log them to W&B (the id as
    ``wandb_run``) when the jobs did."""
    out = Path(out) if out else Path(folder) / "report"
    check_writable("--out", out, folder=True)  # named before any work
    summaries = collect(folder)
    out.mkdir(parents=True, exist_ok=True)

    labels = approach_labels(summaries)
    curves = {label: f1_curve(s) for label, s in zip(labels, summaries)}
    curves_png = out / "f1_curves.png"
    save_figure(approach_curves_figure(curves), curves_png)

    frame = table(summaries, labels)
    missing = missing_jobs(folder, summaries)
    markdown = out / "table.md"
    note = "".join(f"\n**Missing (failed or not run): {job}**\n" for job in missing)
    write_text(markdown, frame.to_markdown(index=False, floatfmt=".4f") + "\n" + note)
    table_png = out / "table.png"
    save_figure(table_figure(frame), table_png)
    paths = {"curves": curves_png, "table_md": markdown, "table_png": table_png, "missing": missing}
    settings = wandb_settings(summaries)
    if settings is not None:
        paths["wandb_run"] = log_to_wandb(settings, Path(folder), out, frame, curves, paths)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a multirun folder (or any folder holding training runs)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <folder>/report)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    with user_errors():
        paths = render(args.folder, args.out)
    print(paths["table_md"].read_text())
    for key in ("curves", "table_md", "table_png"):
        print(f"wrote {paths[key]}")
    if "wandb_run" in paths:
        print(f"W&B run {paths['wandb_run']} (job type report) holds the table and curves")
    if paths["missing"]:
        print(f"{len(paths['missing'])} job(s) of the multirun left no result: {'; '.join(paths['missing'])}")


if __name__ == "__main__":
    main()
