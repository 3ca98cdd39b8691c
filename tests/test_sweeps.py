"""Every experiment preset runs end to end on tiny data, combined with every debug preset (one multirun each, in
the manner of lightning-hydra-template's sweep tests), and the report names every approach."""

from __future__ import annotations

import json

import pytest

import entry
from conftest import REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (REPO / "configs" / "debug").glob("*.yaml"))


@pytest.mark.parametrize("debug", DEBUGS)
def test_every_experiment_runs_with_every_debug_preset(debug, project_env, tmp_path):
    sweep = tmp_path / "sweep"
    entry.run("train.py", "-m", f"experiment={','.join(EXPERIMENTS)}", f"debug={debug}", f"hydra.sweep.dir={sweep}",
              env=project_env)
    names = {json.loads(p.read_text())["name"] for p in sweep.rglob("cv_summary.json")}
    assert names == set(EXPERIMENTS)
    report = entry.run("-m", "landslide.report", str(sweep), env=project_env)
    assert all(name in report.stdout for name in EXPERIMENTS) and "left no result" not in report.stdout


def test_the_report_names_jobs_that_left_no_result(project_env, tmp_path):
    sweep = tmp_path / "sweep"
    done = entry.run("train.py", "-m", "debug=fast", "data.num_folds=2,1", f"hydra.sweep.dir={sweep}",
                     env=project_env, check=False)
    assert done.returncode != 0  # the second job's option is out of range
    report = entry.run("-m", "landslide.report", str(sweep), env=project_env)
    assert "1 job(s) of the multirun left no result: debug=fast data.num_folds=1" in report.stdout
    assert "Missing (failed or not run): debug=fast data.num_folds=1" in (sweep / "report" / "table.md").read_text()
