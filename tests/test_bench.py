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


def test_gpu_monitor_integrates_power_and_reports_nothing_without_a_gpu():
    import shutil

    from landslide.gpu_monitor import GpuMonitor

    monitor = GpuMonitor(interval=0.01)
    if shutil.which("nvidia-smi") is None:
        assert monitor.start().stop() == {}  # a CPU machine: the fields are absent, not zero
    monitor.samples = [(0.0, 50.0, 100.0), (36.0, 100.0, 300.0)]  # 36 s from 100 W to 300 W: 7,200 J
    summary = monitor.summary()
    assert summary["gpu_energy_wh"] == pytest.approx(2.0) and summary["gpu_util_mean_pct"] == 75.0
    assert summary["gpu_power_max_w"] == 300.0
