"""Every experiment preset runs end to end on tiny data, combined with every debug preset (one multirun each, in
the manner of lightning-hydra-template's sweep tests), and the report names every approach."""

from __future__ import annotations

import json

import pytest

import entry
from conftest import REPO
from wandb_records import read_runs

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (REPO / "configs" / "debug").glob("*.yaml"))


# every experiment with the tiny preset in the default run; with the other presets under -m slow
@pytest.mark.parametrize("debug", [d if d == "tiny" else pytest.param(d, marks=pytest.mark.slow) for d in DEBUGS])
def test_every_experiment_runs_with_every_debug_preset(debug, project_env, tmp_path):
    sweep = tmp_path / "sweep"
    wandb = debug == "tiny"  # one of the sweeps logs to W&B (offline), to compare its approaches there
    entry.run("train.py", "-m", f"experiment={','.join(EXPERIMENTS)}", f"debug={debug}", "data.fold=0",
              f"hydra.sweep.dir={sweep}",
              *(["logger=wandb"] if wandb else []), env=project_env)
    summaries = {json.loads(p.read_text())["name"]: p.parent for p in sweep.rglob("cv_summary.json")}
    assert set(summaries) == set(EXPERIMENTS)
    report = entry.run("-m", "landslide.report", str(sweep), env=project_env)
    assert all(name in report.stdout for name in EXPERIMENTS) and "left no result" not in report.stdout
    if wandb:
        check_sweep_on_wandb(sweep, summaries)


def check_sweep_on_wandb(sweep, summaries: dict) -> None:
    """Each job's own W&B run (job type cv) is named by its experiment and holds its result; the report's run holds
    the table of every approach: the sweep's approaches are comparable on W&B by name."""
    for name, job in summaries.items():
        summary = json.loads((job / "cv_summary.json").read_text())
        (cv,) = [r for r in read_runs(job / "wandb") if r.job_type == "cv"]
        assert cv.name == name and cv.config["name"] == name
        assert cv.summary["oof_f1"] == pytest.approx(summary["oof_f1"])
        assert cv.summary["energy_wh"] == pytest.approx(summary["energy_wh"]) and cv.summary["energy_wh"] > 0
        assert cv.group == (job / "wandb_group").read_text()  # the group of the job's folds
    assert len({(job / "wandb_group").read_text() for job in summaries.values()}) == len(summaries)
    (report,) = read_runs(sweep / "report" / "wandb")
    assert report.job_type == "report" and report.finished
    table = json.loads((report.folder / "files" / report.summary["table/path"]).read_text())
    approach = table["columns"].index("approach")
    assert sorted(row[approach] for row in table["data"]) == sorted(EXPERIMENTS)
    assert report.summary["f1_curves_table/_type"] == "table-file"


def test_the_report_names_jobs_that_left_no_result(project_env, tmp_path):
    sweep = tmp_path / "sweep"
    done = entry.run("train.py", "-m", "debug=fast", "data.num_folds=2,1", f"hydra.sweep.dir={sweep}",
                     env=project_env, check=False)
    assert done.returncode != 0  # the second job's option is out of range
    report = entry.run("-m", "landslide.report", str(sweep), env=project_env)
    assert "1 job(s) of the multirun left no result: debug=fast data.num_folds=1" in report.stdout
    assert "Missing (failed or not run): debug=fast data.num_folds=1" in (sweep / "report" / "table.md").read_text()
