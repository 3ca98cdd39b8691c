"""Compare approaches from a multirun folder: validation F1 per epoch (mean over folds) and a table of final
CV metrics, wall time and energy. ``python -m landslide.report <multirun dir> [--out DIR]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from landslide.plots.curves import approach_curves_figure, save_figure, table_figure

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


def collect(folder: Path | str) -> list[dict]:
    """Every ``cv_summary.json`` below ``folder`` that trained a network."""
    summaries = []
    for path in sorted(Path(folder).rglob("cv_summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("oof_f1") is not None:
            summary["path"] = str(path.parent)
            summaries.append(summary)
    if not summaries:
        raise FileNotFoundError(f"{folder}: no cv_summary.json of a trained run below it")
    return summaries


def expected_jobs(folder: Path) -> list[list[str]]:
    """The jobs a basic-sweeper multirun was asked to run (their override lists), from its ``multirun.yaml``;
    empty when the folder is not such a multirun (an Optuna search, a plain folder of runs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = folder / "multirun.yaml"
    if not path.is_file():
        return []
    config = OmegaConf.load(path)
    if "basic_sweeper" not in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")):
        return []
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    return BasicSweeper.split_arguments(overrides, None)[0]


def missing_jobs(folder: Path | str) -> list[str]:
    """The expected jobs of a multirun that left no finished ``cv_summary.json`` (failed or never started)."""
    folder = Path(folder)
    finished = []
    for summary in folder.rglob("cv_summary.json"):
        overrides = summary.parent / ".hydra" / "overrides.yaml"
        if overrides.is_file() and json.loads(summary.read_text()).get("oof_f1") is not None:
            finished.append(sorted(OmegaConf.load(overrides)))
    return [" ".join(job) for job in expected_jobs(folder) if sorted(job) not in finished]


def f1_curve(summary: dict, key: str = "val/f1") -> np.ndarray:
    """Validation F1 per epoch, averaged over the folds that reached each epoch."""
    rows = [[h.get(key, np.nan) for h in f.get("history", [])] for f in summary["folds"]]
    longest = max((len(r) for r in rows), default=0)
    padded = np.full((len(rows), longest), np.nan)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    return np.nanmean(padded, axis=0) if longest else np.zeros(0)


def table(summaries: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([{k: s.get(k) for k in COLUMNS} for s in summaries]).rename(columns=COLUMNS)
    return frame.sort_values("OOF F1", ascending=False).reset_index(drop=True)


def render(folder: Path | str, out: Path | str | None = None) -> dict[str, Path]:
    """Write ``f1_curves.png``, ``table.md`` and ``table.png`` and return their paths."""
    summaries = collect(folder)
    out = Path(out) if out else Path(folder) / "report"
    out.mkdir(parents=True, exist_ok=True)

    curves = out / "f1_curves.png"
    save_figure(approach_curves_figure({s["name"]: f1_curve(s) for s in summaries}), curves)

    frame = table(summaries)
    missing = missing_jobs(folder)
    markdown = out / "table.md"
    note = "".join(f"\n**Missing (failed or not run): {job}**\n" for job in missing)
    markdown.write_text(frame.to_markdown(index=False, floatfmt=".4f") + "\n" + note)
    table_png = out / "table.png"
    save_figure(table_figure(frame), table_png)
    return {"curves": curves, "table_md": markdown, "table_png": table_png, "missing": missing}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a multirun folder (or any folder holding training runs)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <folder>/report)")
    args = parser.parse_args(argv)
    paths = render(args.folder, args.out)
    print(paths["table_md"].read_text())
    for key in ("curves", "table_md", "table_png"):
        print(f"wrote {paths[key]}")
    if paths["missing"]:
        print(f"{len(paths['missing'])} job(s) of the multirun left no result: {'; '.join(paths['missing'])}")


if __name__ == "__main__":
    main()
