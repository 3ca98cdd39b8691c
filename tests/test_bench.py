"""A smoke test of the benchmark at CI size (figures are printed, never asserted against a time)."""

import json

import pytest

from landslide.bench import main


def test_bench_runs_and_reports_both_paths(tmp_path, capsys):
    result = main(["--device", "cpu", "--n-train", "96", "--n-test", "32", "--seconds", "1", "--epochs", "2",
                   "--models", "2", "--compile", "false", "--bounds", "--stacked", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["reference_loop_images_per_s"] > 0 and saved["framework_images_per_s"] > 0
    ratio = saved["framework_images_per_s"] / saved["reference_loop_images_per_s"]
    assert saved["speedup"] == pytest.approx(ratio, rel=0.02)
    assert result["prediction_models"] == 2
    assert saved["bare_step_images_per_s"] > 0 and saved["host_allocator"] in ("tuned", "glibc default")
    assert saved["stacked_models"] == 2 and saved["stacked_step_images_per_s"] > 0
    assert saved["stacked_path_images_per_s"] > 0
    assert "framework_images_per_s" in capsys.readouterr().out
