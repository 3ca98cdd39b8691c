"""GPU utilisation and power sampled in a background thread (NVML through ``pynvml``, else ``nvidia-smi``)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any


def _nvml_reader(index: int, uuid: str | None = None):
    """A function returning (utilisation %, power W) of GPU ``uuid`` (else NVML's ``index``) through NVML, or None
    without pynvml."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = (pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid is not None
                  else pynvml.nvmlDeviceGetHandleByIndex(index))
    except Exception:
        return None

    def read() -> tuple[float, float]:
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        return float(util), pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0

    return read


def _smi_reader(index: int, uuid: str | None = None):
    """The same through ``nvidia-smi`` (one process a sample), or None without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None

    def read() -> tuple[float, float]:
        out = subprocess.run([smi, f"--id={uuid or index}", "--query-gpu=utilization.gpu,power.draw",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        util, power = out.stdout.strip().splitlines()[0].split(",")
        return float(util), float(power)

    return read


class GpuMonitor:
    """Samples a GPU every ``interval`` seconds between :meth:`start` and :meth:`stop` (or as a context manager):
    ``uuid`` (``GPU-...``, as :func:`cuda_uuid` gives: a process's CUDA index depends on ``CUDA_VISIBLE_DEVICES``)
    or else the driver's ``index``. Sample times are ``time.perf_counter()``'s. ``summary()`` gives mean
    utilisation, mean and peak power and the energy they imply; it is empty where there is no GPU to read (a CPU
    machine), so callers report nothing rather than zeros."""

    def __init__(self, interval: float = 0.5, index: int = 0, uuid: str | None = None) -> None:
        self.interval, self.index, self.uuid = interval, index, uuid
        self.samples: list[tuple[float, float, float]] = []  # (time, utilisation %, power W)
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GpuMonitor:
        read = _nvml_reader(self.index, self.uuid)
        self.source = "nvml" if read else None
        if read is None:
            read = _smi_reader(self.index, self.uuid)
            self.source = "nvidia-smi" if read else None
        if read is None:
            return self

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    util, power = read()
                    self.samples.append((time.perf_counter(), util, power))
                except Exception:  # a failed sample is skipped, never a reason to stop a run
                    pass
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="gpu-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        times = [s[0] for s in self.samples]
        utils = [s[1] for s in self.samples]
        powers = [s[2] for s in self.samples]
        seconds = times[-1] - times[0]
        # trapezoids between samples
        joules = sum((t1 - t0) * (p0 + p1) / 2 for (t0, _, p0), (t1, _, p1) in zip(self.samples, self.samples[1:]))
        return {
            "gpu_util_mean_pct": round(sum(utils) / len(utils), 1),
            "gpu_util_busy_share": round(sum(u > 0 for u in utils) / len(utils), 3),
            "gpu_power_mean_w": round(sum(powers) / len(powers), 1),
            "gpu_power_max_w": round(max(powers), 1),
            "gpu_energy_wh": round(joules / 3600, 4),
            "gpu_samples": len(self.samples),
            "gpu_sampled_s": round(seconds, 1),
            "gpu_monitor": self.source,
        }

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def cuda_uuid(index: int) -> str | None:
    """The UUID (``GPU-...``) of the GPU that CUDA index ``index`` of this process is, as NVML and nvidia-smi name
    it; None where torch does not say."""
    try:
        import torch

        return f"GPU-{torch.cuda.get_device_properties(index).uuid}"
    except Exception:
        return None


def by_phase(samples: Sequence[tuple[float, float, float]], timeline: Sequence[tuple[float, str]],
             interval: float) -> dict[str, dict[str, float]]:
    """GPU samples ``(time, utilisation %, power W)`` grouped by the phase that ran while each was measured
    (``timeline``: the ``(end, phase)`` of each stretch in order, :attr:`landslide.timing.PhaseTimer.timeline`, on
    the samples' clock, ``time.perf_counter``). The driver averages a sample over the time before it is read, so
    each stands for the time since the previous one (the first for ``interval``) and goes to the phase that ran in
    the middle of it. Per phase: the seconds sampled, mean utilisation, mean power and the energy they imply
    (rectangles, so their sum differs slightly from the whole run's trapezoids). Samples after the timeline's end
    are left out."""
    ends = [end for end, _ in timeline]
    sums: dict[str, list[float]] = {}
    for i, (t, util, power) in enumerate(samples):
        dt = t - samples[i - 1][0] if i else interval
        k = bisect_left(ends, t - dt / 2)
        if k == len(ends):
            continue
        acc = sums.setdefault(timeline[k][1], [0.0, 0.0, 0.0, 0.0])  # seconds, util x s, power x s, samples
        acc[0] += dt
        acc[1] += util * dt
        acc[2] += power * dt
        acc[3] += 1
    return {name: {"seconds": round(sec, 2), "gpu_util_mean_pct": round(u / sec, 1) if sec else 0.0,
                   "gpu_power_mean_w": round(p / sec, 1) if sec else 0.0, "gpu_energy_wh": round(p / 3600, 4),
                   "samples": int(n)}
            for name, (sec, u, p, n) in sums.items()}
