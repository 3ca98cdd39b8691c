"""Energy measurement with CodeCarbon's offline tracker (no network)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from landslide.timing import phase

log = logging.getLogger(__name__)

ENERGY = "energy"  # a phase (landslide.timing): CodeCarbon's trackers started and stopped


class EnergyTracker:
    """Start/stop wrapper around ``codecarbon.OfflineEmissionsTracker``; ``wh`` holds the last measurement.

    Writes CodeCarbon's ``emissions.csv`` in ``output_dir``. Usable as a context manager; stopping is idempotent.
    ``country_iso_code``, ``measure_power_secs`` and ``enabled`` come from the config (``energy.*``).
    """

    def __init__(self, output_dir: str | Path, project_name: str, *, country_iso_code: str,
                 measure_power_secs: float, enabled: bool) -> None:
        self.output_dir = Path(output_dir)
        self.project_name = project_name
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self.enabled = enabled
        self.wh = 0.0
        self.detail: dict[str, float] = {}
        self._tracker = None

    def start(self) -> None:
        if not self.enabled or self._tracker is not None:
            return
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import OutputMethod

        self.output_dir.mkdir(parents=True, exist_ok=True)
        # CodeCarbon's warnings about unknown CPUs and missing RAPL files are not the user's concern
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker = OfflineEmissionsTracker(
            project_name=self.project_name,
            country_iso_code=self.country_iso_code,
            output_dir=str(self.output_dir),
            measure_power_secs=self.measure_power_secs,
            log_level="error",
            output_methods=[OutputMethod.CSV],
            allow_multiple_runs=True,
        )
        self._tracker.start()

    def stop(self) -> float:
        """Stop and return the energy in Wh (0 when disabled or never started)."""
        if self._tracker is None:
            return self.wh
        tracker, self._tracker = self._tracker, None
        try:
            tracker.stop()
            data = tracker.final_emissions_data
            self.wh = float(data.energy_consumed) * 1000.0
            self.detail = {
                "cpu_wh": float(data.cpu_energy) * 1000.0,
                "gpu_wh": float(data.gpu_energy) * 1000.0,
                "ram_wh": float(data.ram_energy) * 1000.0,
                "emissions_kg": float(data.emissions),
            }
        except Exception as exc:  # energy is a measurement, never a reason to lose a run
            log.warning("CodeCarbon could not stop cleanly: %s", exc)
        return self.wh

    def __enter__(self) -> EnergyTracker:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class EnergyCallback(Callback):
    """Measures each ``fit`` with CodeCarbon and logs ``energy/wh`` (and its CPU/GPU/RAM parts) to every logger.
    ``output_dir``: where ``emissions.csv`` goes (default: the trainer's root folder); the other settings come from
    the config (``callbacks.energy``, which reads ``energy.*``)."""

    def __init__(self, output_dir: str | Path | None = None, *, country_iso_code: str, measure_power_secs: float,
                 enabled: bool) -> None:
        self.output_dir = output_dir
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self.enabled = enabled
        self.tracker: EnergyTracker | None = None
        self.wh = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = self.output_dir or trainer.default_root_dir
        # one tracker per run: with several processes (DDP) rank zero measures the machine, the others nothing
        self.tracker = EnergyTracker(folder, "landslide-fit", country_iso_code=self.country_iso_code,
                                     measure_power_secs=self.measure_power_secs,
                                     enabled=self.enabled and trainer.is_global_zero)
        with phase(ENERGY):
            self.tracker.start()

    def _finish(self, trainer: L.Trainer) -> None:
        if self.tracker is None:
            return
        with phase(ENERGY):
            self.wh = self.tracker.stop()
        metrics = {"energy/wh": self.wh, **{f"energy/{k}": v for k, v in self.tracker.detail.items()}}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self.tracker = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._finish(trainer)
