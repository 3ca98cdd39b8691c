"""Lightning callbacks that Lightning itself lacks: energy measurement, a per-epoch metric history, the random
state in checkpoints, the fit's phase timings and validation of the last epoch."""

from landslide.callbacks.energy import EnergyCallback, EnergyTracker
from landslide.callbacks.history import MetricHistory
from landslide.callbacks.last_epoch import ValidateLastEpoch
from landslide.callbacks.phases import FitPhases
from landslide.callbacks.resume import ResumeState

__all__ = ["EnergyCallback", "EnergyTracker", "FitPhases", "MetricHistory", "ResumeState", "ValidateLastEpoch"]
